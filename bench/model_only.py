"""A model-only publish from a cold runner, step by step, two versions of the suite in one run.

    python bench/model_only.py                       # main's src/ (A) against this tree's (B)
    python bench/model_only.py --a REF --rounds 3    # A: the suite of git REF
    python bench/model_only.py --render FILE         # only print the table of an earlier run

Issue 24, goal 3 (a model-only change from a cold runner near its floor). bench/layers.py
gives the totals beside the guide's lines and the floor; this script says where the suite's
seconds go, and compares two versions of the suite on the same machine at the same time (the
machines are shared: a before/after is only worth anything from one run, in alternation).

One clone of this tree and one registry (bench/layers.py's BenchRegistry) holding a first
publish, signed. Then each round makes one model-only commit per variant (`train.seed` + 1,
`dvc repro`: not timed) and publishes it from a cold engine (layers.py's ``cold_engine``: the
build cache emptied, this bench's images removed, a fresh BentoML home) with the publish
session's steps (noxfile.py). The variants run in ABBA order, so a drift of the machine's load
falls on both. A variant is a ``src/`` directory put first on PYTHONPATH (A: ``git archive``
of --a; B: this tree's ``src/``): everything else (tools, clone, registry) is shared. Per
publish: the wall time, each step's seconds (its ``✓ step (N.N s)`` line), and the time before
the first step (Python start-up and invoke). The floor (layers.py's ``floor``) once per round.

Writes bench/results/model-only-<time>.json and .md, and model-only-latest.*.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from io import BytesIO
from pathlib import Path

from common import (
    ROOT,
    TOOLS,
    commit,
    log,
    machine_load,
    result_header,
    scratch_dir,
    trust_a_new_key,
    write_partial,
    write_results,
)
from layers import (
    SUITE_IMAGE,
    BenchRegistry,
    change,
    cold_engine,
    floor,
    make_clone,
    publish,
    publish_steps,
)

STEP_LINE = re.compile(r"^[✓✗] (\S+)\b.*\((\d+\.\d) s\)$", re.MULTILINE)


def variant_src(ref: str, where: Path) -> Path:
    """``src/`` of git ``ref`` unpacked under ``where`` (A), for PYTHONPATH."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref, "src"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(where, filter="data")
    return where / "src"


def variant_sources(ref: str, scratch: Path) -> dict[str, Path]:
    """The two suites an A/B bench compares, each checked to be what the tools import: A,
    ``src/`` of git ``ref`` (:func:`variant_src`); B, this tree's ``src/``."""
    sources = {"A": variant_src(ref, scratch / "a"), "B": ROOT / "src"}
    for variant, src in sources.items():
        check_variant(variant, src)
    return sources


def check_variant(variant: str, src: Path) -> None:
    """The tools' Python imports the suite from ``src`` when it is first on PYTHONPATH."""
    found = subprocess.run(
        [str(TOOLS / "python"), "-c", "import cicd; print(cicd.__file__)"],
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not found.startswith(str(src)):
        raise RuntimeError(f"variant {variant} imports the suite from {found}, not {src}")


def steps_of(output: str) -> dict[str, float]:
    return {name: float(seconds) for name, seconds in STEP_LINE.findall(output)}


STEPS: list[str] = []  # the publish session's invoke arguments, read once from noxfile.py


def one_publish(
    variant: str, src: Path, clone: Path, registry: BenchRegistry, logs: Path, label: str
) -> dict:
    steps = STEPS or STEPS.extend(publish_steps()) or STEPS
    done = publish(
        "suite",
        clone,
        registry,
        [registry.host],
        logs,
        f"{label}-{variant}",
        steps,
        extra_env={"PYTHONPATH": str(src)},
    )
    timed = steps_of((logs / f"{label}-{variant}-suite.log").read_text())
    return {
        "seconds": done["seconds"],
        "steps": timed,
        "outside_steps": done["seconds"] - sum(timed.values()),
        "received_bytes": done["received_bytes"],
        "cache_imported": done["cache_imported"],
    }


def render(data: dict) -> str:
    variants = data["variants"]
    names: list[str] = []
    for item in data["publishes"]:
        names += [n for n in item["steps"] if n not in names]

    def med(variant: str, pick) -> float:
        values = [pick(p) for p in data["publishes"] if p["variant"] == variant]
        return statistics.median(values) if values else float("nan")

    lines = [
        f"## A model-only publish from a cold runner, step by step, {data['date']}",
        "",
        f"Machine: {data['machine']}. Commit {data['commit'][:12]}. "
        f"{data['rounds']} rounds, ABBA order; medians. "
        + "; ".join(f"{v}: {d}" for v, d in variants.items())
        + ".",
        "",
        "| variant | total | " + " | ".join(names) + " | outside the steps | floor |",
        "|---|---|" + "---|" * len(names) + "---|---|",
    ]
    floors = [f["seconds"] for f in data["floors"]]
    floor_median = statistics.median(floors) if floors else float("nan")
    for v in variants:
        cells = [f"{med(v, lambda p, n=n: p['steps'].get(n, 0.0)):.1f}" for n in names]
        lines.append(
            f"| {v} | {med(v, lambda p: p['seconds']):.1f} s | "
            + " | ".join(cells)
            + f" | {med(v, lambda p: p['outside_steps']):.1f} | {floor_median:.1f} s |"
        )
    lines += ["", "Each publish (seconds, in the order run):", ""]
    for p in data["publishes"]:
        detail = ", ".join(f"{n} {s:.1f}" for n, s in p["steps"].items())
        lines.append(f"- round {p['round']} {p['variant']}: {p['seconds']:.1f} s ({detail})")
    for f in data["floors"]:
        parts = " + ".join(f"{f['parts'][k]:.1f}" for k in ("pull", "build", "smoke", "push"))
        lines.append(f"- floor: {f['seconds']:.1f} s ({parts}), load {f['load']['load1']:.2f}")
    lines += ["", load_line(data)]
    return "\n".join(lines) + "\n"


def load_line(data: dict) -> str:
    """An A/B result's last line: the 1-minute load before and after the run, and what else
    ran when the result says (``context``). The load after includes the run's own builds and
    pushes: only the load before says whether something else was running."""
    before, after = data["load_before"]["load1"], data.get("load_after", {}).get("load1", 0.0)
    line = f"1-minute load: {before:.2f} before the run, {after:.2f} after (its own work included)."
    if data.get("context"):
        return f"{line} {data['context']}"
    if before >= 1.5:
        return f"{line} **A busy machine**: re-run it idle before taking these figures."
    return line


def ab_arguments(description: str, rounds: int, rounds_help: str) -> argparse.ArgumentParser:
    """The options every A/B bench takes: the git ref of A, the rounds, --keep, --render."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--a", default="main", help="git ref of variant A (default: main)")
    parser.add_argument("--rounds", type=int, default=rounds, help=rounds_help)
    parser.add_argument("--keep", action="store_true", help="keep the clone, logs, registry")
    parser.add_argument(
        "--context", default="", help="what else ran on the machine, for the result's last line"
    )
    parser.add_argument("--render", metavar="JSON", help="only print the table of a results file")
    return parser


def main() -> None:
    parser = ab_arguments(__doc__.splitlines()[0], 2, "ABBA rounds (default: 2)")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor")
    args = parser.parse_args()
    if args.render:
        print(render(json.loads(Path(args.render).read_text())))
        return
    stamp = time.strftime("%Y%m%d-%H%M%S")
    scratch, logs = scratch_dir("model-only", stamp)
    log(f"clone, registry and logs in {scratch}")
    sources = variant_sources(args.a, scratch)
    data: dict = {
        **result_header(),
        "context": args.context,
        "rounds": args.rounds,
        "variants": {"A": f"git {args.a}'s src/", "B": "this tree's src/"},
        "publishes": [],
        "floors": [],
    }
    for variant, src in sources.items():
        check_variant(variant, src)
    registry = BenchRegistry(scratch / "registry")
    try:
        clone = make_clone(scratch)
        trust_a_new_key(clone, scratch)
        log("first publish (B), from a cold engine")
        one_publish("B", sources["B"], clone, registry, logs, "first")
        for number in range(1, args.rounds + 1):
            order = "AB" if number % 2 else "BA"
            for variant in order:
                change(clone, "model-only change")
                log(f"round {number}: {variant} publishes a model-only change")
                done = one_publish(variant, sources[variant], clone, registry, logs, f"r{number}")
                data["publishes"].append({"round": number, "variant": variant, **done})
                log(f"  {variant}: {done['seconds']:.1f} s {done['steps']}")
            if not args.no_floor:
                previous = f"{registry.host}/{SUITE_IMAGE}:{commit(clone)}"
                change(clone, "model-only change")  # the floor's new archive
                data["floors"].append(floor(clone, registry, [registry.host], previous, logs))
                log(f"  floor: {data['floors'][-1]['seconds']:.1f} s")
        data["load_after"] = machine_load()
    except BaseException:
        partial = write_partial("model-only", stamp, data)
        log(f"failed: what was measured is in {partial}; logs in {logs}")
        raise
    finally:
        registry.stop()
        cold_engine([registry.host])
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    text = render(data)
    print(text)
    write_results("model-only", stamp, data, text)


if __name__ == "__main__":
    sys.exit(main())
