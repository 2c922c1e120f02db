"""A cold `nox -s publish` of two commits of the suite, side by side (issue 24, goal 2).

    .nox/tests/bin/python bench/publish_overlap.py --base main --runs 3

Measures what a change to the publish session saves: the base commit (``--base``, e.g. main)
against this checkout's HEAD, alternating which goes first, ``--runs`` times each, in one
session on one machine. Each run, for each commit:

* a fresh `git clone` of this repository at that commit, a new BentoML store, no ``.nox``;
* `nox -s train` (untimed here), its DVC remote a scratch directory of this benchmark: the
  first run trains and pushes the outputs there, the others pull them;
* a registry of its own (Debian's ``docker-registry`` on a free port, empty storage), so
  that every layer is uploaded; the run's images are removed from the engine afterwards;
* `nox -s publish`, timed; its steps' seconds as each step's own line says them
  (``✓ push  sha256:… (9.8 s)``), the environment from the start to nox's `invoke` line.

The engine's build cache is kept (``--prune`` empties it before each publish, as
bench/pipeline.py does): on a machine where other sessions build on the same engine, pruning
it would disturb them. With it kept, containerize is warm on both sides; what differs between
the commits (checks, smoke test, push, attestations, tags) is measured the same way.

The machine's load (uptime) is recorded before and after; on a busy machine the absolute
seconds move with the load, and the ratio of the two commits' medians is what counts.
Writes bench/results/publish-overlap-<time>.{json,md} and publish-overlap-latest.*; the
commands' output stays in the scratch directory it prints.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import time
from pathlib import Path

import pipeline
from common import (
    ROOT,
    CommandFailed,
    docker,
    free_port,
    log,
    median,
    result_header,
    run,
    scratch_dir,
    write_partial,
    write_results,
)

REGISTRY_BINARY = "/usr/bin/docker-registry"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def start_registry(scratch: Path) -> tuple[subprocess.Popen, str]:
    """An empty registry on a free port (nothing to mount a layer from): its process, address."""
    port = free_port()
    storage = scratch / f"registry-{port}"
    storage.mkdir(parents=True)
    config = scratch / f"registry-{port}.yml"
    config.write_text(
        "version: 0.1\nlog: {level: error}\n"
        f"storage: {{filesystem: {{rootdirectory: {storage}}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n"
    )
    process = subprocess.Popen(
        [REGISTRY_BINARY, "serve", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"127.0.0.1:{port}"
    for _ in range(100):
        probe = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://{address}/v2/"],
            capture_output=True,
            text=True,
        )
        if probe.stdout == "200":
            return process, address
        time.sleep(0.1)
    process.terminate()
    raise CommandFailed(f"the bench registry at {address} did not start")


def stop_registry(registry: subprocess.Popen, address: str) -> None:
    """Stop a registry of :func:`start_registry` and remove the images pushed to it."""
    registry.terminate()
    registry.wait(timeout=30)
    refs = pipeline.image_refs(f"{address}/", "")
    if refs:
        docker("rmi", *refs, check=False)


def one_publish(
    label: str, commit: str, index: int, scratch: Path, logs: Path, prune: bool
) -> dict:
    """A fresh clone of ``commit``, its train (untimed), then its cold publish (timed)."""
    registry, address = start_registry(scratch)
    try:
        pipeline.REGISTRY = address  # Side and reset read it
        side = pipeline.Side("suite", scratch, f"bench-{label}-{index}", logs)
        run(["git", "clone", "-q", str(ROOT), str(side.clone)], log_file=side.log)
        run(["git", "checkout", "-q", commit], cwd=side.clone, log_file=side.log)
        dvc = str(pipeline.TOOLS / "dvc")
        remote = ["remote", "add", "--local", "--force", "--default", "bench", str(scratch / "dvc")]
        run([dvc, *remote], cwd=side.clone, log_file=side.log)
        extra = {"BENTOML_HOME": str(side.bentoml_home), "CONTAINER_REGISTRY_HOST": side.registry}
        nox = [str(pipeline.TOOLS / "nox"), "--no-color", "-s"]
        run([*nox, "train"], cwd=side.clone, extra_env=extra, log_file=side.log)
        run([dvc, "push", "--quiet"], cwd=side.clone, log_file=side.log)  # the next runs pull
        if prune:
            docker("builder", "prune", "-af")
        load = Path("/proc/loadavg").read_text().split()[0]
        seconds, lines = pipeline.run_stamped(
            [*nox, "publish"], cwd=side.clone, extra_env=extra, log_file=side.log
        )
        output = "\n".join(line for _, line in lines)
        if "already published" in output:
            raise CommandFailed(f"{label} run {index}: the publish was skipped (see {side.log})")
        return {
            "label": label,
            "commit": commit,
            "publish": round(seconds, 2),
            "steps": step_seconds(lines),
            "load_before": float(load),
        }
    finally:
        stop_registry(registry, address)


STEP_LINE = re.compile(r"^✓ (\S+)\s.*\(([\d.]+) s\)$")


def step_seconds(lines: list[tuple[float, str]]) -> dict[str, float]:
    """Seconds of the environment (until nox's `invoke` line) and of each step, as its own
    ``✓ name ... (N s)`` line says."""
    found = {}
    started = next((at for at, line in lines if line.startswith("nox > invoke ")), None)
    if started is not None:
        found["environment"] = round(started, 2)
    for _, line in lines:
        match = STEP_LINE.match(line)
        if match:
            found[match[1]] = float(match[2])
    return found


# The steps the draft overlaps (the SBOM and provenance are made during smoke and push).
TOUCHED = ("smoke", "push", "attest")


def render(data: dict) -> str:
    base, head = data["labels"]
    medians = data["medians"]
    lines = [
        f"## Publish overhead: {base} against this branch, {data['date']}",
        "",
        f"Machine: {data['machine']}. Commits {data['commits'][base][:12]} ({base}) and "
        f"{data['commits'][head][:12]} ({head}); {data['runs']} cold publishes each, "
        f"alternating which goes first; build cache {'pruned' if data['prune'] else 'kept'}. "
        "The machine was NOT idle (other sessions ran tests): "
        f"uptime before `{data['uptime_before']}`, after `{data['uptime_after']}`.",
        "",
        f"| measure | {head} | {base} | {head} / {base} |",
        "|---|---|---|---|",
    ]
    ratio = medians[head] / medians[base]
    lines.append(
        f"| `nox -s publish`, median of {data['runs']} | {medians[head]:.2f} s | "
        f"{medians[base]:.2f} s | {ratio:.2f} |"
    )
    for label in (head, base):
        each = ", ".join(f"{r['publish']:.1f}" for r in data["results"][label])
        lines.append(f"| {label}: each run (s) | {each} | | |")
    touched = {
        label: median(
            [sum(r["steps"].get(n, 0.0) for n in TOUCHED) for r in data["results"][label]]
        )
        for label in (head, base)
    }
    lines.append(
        f"| {' + '.join(TOUCHED)}, median of the runs' sums | {touched[head]:.2f} s | "
        f"{touched[base]:.2f} s | {touched[head] / touched[base]:.2f} |"
    )
    lines += [
        "",
        "Steps (median seconds, as each step's own line says; the environment: until nox's "
        "`invoke` line):",
        "",
    ]
    lines += [f"| step | {head} | {base} |", "|---|---|---|"]
    names = list(dict.fromkeys(n for r in data["results"][base] for n in r["steps"]))
    for name in names:
        values = {
            label: median([r["steps"][name] for r in data["results"][label] if name in r["steps"]])
            for label in (head, base)
        }
        lines.append(f"| {name} | {values[head] or 0:.2f} | {values[base] or 0:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="the commit to compare with")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--prune", action="store_true", help="empty the build cache first")
    args = parser.parse_args()
    head_commit = run(["git", "rev-parse", "HEAD"], cwd=ROOT)[1].strip()
    base_commit = run(["git", "rev-parse", args.base], cwd=ROOT)[1].strip()
    head_label = run(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=ROOT)[1].strip()
    labels = (args.base, head_label)
    commits = {args.base: base_commit, head_label: head_commit}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    scratch, logs = scratch_dir("publish-overlap", stamp)
    data: dict = {
        **result_header(),  # its commit is HEAD's, head_commit
        "labels": labels,
        "commits": commits,
        "runs": args.runs,
        "prune": args.prune,
        "uptime_before": uptime(),
        "results": {label: [] for label in labels},
    }
    log(f"uptime before: {data['uptime_before']}")
    try:
        for index in range(args.runs):
            order = labels if index % 2 == 0 else labels[::-1]
            for label in order:
                log(f"{label} run {index + 1}/{args.runs}")
                result = one_publish(label, commits[label], index + 1, scratch, logs, args.prune)
                log(f"  publish {result['publish']:.1f} s (load {result['load_before']})")
                data["results"][label].append(result)
    except CommandFailed as error:
        partial = write_partial("publish-overlap", stamp, data)
        raise SystemExit(f"{error}\n(logs in {logs}; partial results in {partial})") from None
    data["uptime_after"] = uptime()
    log(f"uptime after: {data['uptime_after']}")
    data["medians"] = {
        label: median([r["publish"] for r in data["results"][label]]) for label in labels
    }
    text = render(data)
    write_results("publish-overlap", stamp, data, text)
    print(text)
    log(f"logs and clones in {scratch} (remove it when done)")


if __name__ == "__main__":
    main()
