"""The publish's last three steps with and without the SBOM drafted during the smoke test.

    .nox/tests/bin/python bench/publish_overlap_ab.py --clone DIR --bentoml-home DIR --runs 4

The same image, built once in ``--clone`` (a trained clone of a commit that has
`smoke --draft-attestations`, with its `.nox/publish` environment, e.g. one that
bench/publish_overlap.py left behind), then, alternating which goes first, ``--runs`` times:

* plain: `invoke smoke push attest` (attest makes the SBOM and provenance after the push);
* draft: `invoke smoke --draft-attestations push attest` (made during smoke and push).

Each run pushes into an empty registry of its own (the image tagged under its address), so
every layer is uploaded. Only the overlap differs: the build, the checks, the environment
are not in the figure, so the load of a busy machine blurs it less than a whole publish.
Writes bench/results/publish-overlap-ab-<time>.{json,md} and publish-overlap-ab-latest.*.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pipeline
from common import docker, log, machine, median, run, write_results
from publish_overlap import start_registry, step_seconds, stop_registry, uptime

VARIANTS = {
    "plain": ["smoke", "push", "attest"],
    "draft": ["smoke", "--draft-attestations", "push", "attest"],
}
IMAGE = "celestial-bodies-classifier"
HOLDER = "bench-publish-overlap-ab:built"


def one_run(clone: Path, env: dict, built: str, sha: str, steps: list[str], log_file: Path):
    registry, address = start_registry(clone.parent)
    reference = f"{address}/ab/{IMAGE}:{sha}"
    try:
        docker("tag", built, reference)
        invoke = str(clone / ".nox" / "publish" / "bin" / "invoke")
        extra = {**env, "CONTAINER_REGISTRY_HOST": f"{address}/ab"}
        seconds, lines = pipeline.run_stamped(
            [invoke, *steps], cwd=clone, extra_env=extra, log_file=log_file
        )
        return {"seconds": round(seconds, 2), "steps": step_seconds(lines)}
    finally:
        stop_registry(registry, address)


def render(data: dict) -> str:
    medians = data["medians"]
    lines = [
        f"## The last three publish steps with and without the draft, {data['date']}",
        "",
        f"Machine: {data['machine']}. Commit {data['commit'][:12]}; the same image, "
        f"{data['runs']} runs of each, alternating which goes first, each into an empty "
        "registry. The machine was NOT idle (other sessions ran tests): uptime before "
        f"`{data['uptime_before']}`, after `{data['uptime_after']}`.",
        "",
        "| measure | draft | plain | draft / plain |",
        "|---|---|---|---|",
        f"| `invoke smoke [--draft-attestations] push attest`, median | {medians['draft']:.2f} s "
        f"| {medians['plain']:.2f} s | {medians['draft'] / medians['plain']:.2f} |",
    ]
    for label in ("draft", "plain"):
        each = ", ".join(f"{r['seconds']:.1f}" for r in data["results"][label])
        lines.append(f"| {label}: each run (s) | {each} | | |")
    for step in ("smoke", "push", "attest"):
        values = {
            label: median([r["steps"].get(step, 0.0) for r in data["results"][label]])
            for label in ("draft", "plain")
        }
        lines.append(
            f"| {step} (median, its own line) | {values['draft']:.1f} s | "
            f"{values['plain']:.1f} s | |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clone", type=Path, required=True)
    parser.add_argument("--bentoml-home", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=4)
    args = parser.parse_args()
    clone = args.clone.resolve()
    sha = run(["git", "rev-parse", "HEAD"], cwd=clone)[1].strip()
    env = {"BENTOML_HOME": str(args.bentoml_home.resolve())}
    log_file = clone.parent / "ab.log"
    registry, address = start_registry(clone.parent)
    try:  # build once (the build cache is warm): the image every run pushes
        invoke = str(clone / ".nox" / "publish" / "bin" / "invoke")
        extra = {**env, "CONTAINER_REGISTRY_HOST": f"{address}/ab"}
        run([invoke, "import-model", "bento", "containerize"], cwd=clone, extra_env=extra,
            log_file=log_file)  # fmt: skip
        built = docker("image", "inspect", "--format", "{{.Id}}", f"{address}/ab/{IMAGE}:{sha}")
        docker("tag", built, HOLDER)  # keeps the image while the build's tags go
    finally:
        stop_registry(registry, address)
    tag = sha  # the revision tag of a clean checkout: the whole commit
    data: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "commit": sha,
        "runs": args.runs,
        "uptime_before": uptime(),
        "results": {"plain": [], "draft": []},
    }
    log(f"uptime before: {data['uptime_before']}")
    for index in range(args.runs):
        order = ("plain", "draft") if index % 2 == 0 else ("draft", "plain")
        for label in order:
            result = one_run(clone, env, built, tag, VARIANTS[label], log_file)
            log(f"{label} run {index + 1}/{args.runs}: {result['seconds']:.1f} s")
            data["results"][label].append(result)
    docker("rmi", HOLDER, check=False)
    data["uptime_after"] = uptime()
    data["medians"] = {
        label: median([r["seconds"] for r in data["results"][label]]) for label in VARIANTS
    }
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = render(data)
    write_results("publish-overlap-ab", stamp, data, text)
    print(text)


if __name__ == "__main__":
    main()
