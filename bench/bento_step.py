"""The bento step alone, two versions of the suite in one run: `invoke import-model bento`.

    python bench/bento_step.py                     # main's src/ (A) against this tree's (B)
    python bench/bento_step.py --a REF --runs 7    # A: the suite of git REF
    python bench/bento_step.py --render FILE       # only print the table of an earlier run

Issue 24, goals 2 and 3: the bento step ran `bentoml build` as a command (2-3 s of BentoML's
start before it builds); it now builds in the suite's process (src/cicd/bento_build.py).
One clone of this tree with the workspace's model (`dvc pull`, else `dvc repro`); each run
starts from an empty BentoML home, as a cold runner does, and runs the publish session's first
two BentoML steps: import-model (which imports BentoML in the process, as in a publish) and
bento, whose ``✓ bento (N.N s)`` line is the figure. A variant is a ``src/`` put first on
PYTHONPATH (A: ``git archive`` of --a; B: this tree's), alternating A, B, B, A, ... so that a
drift of the machine's load falls on both. No Docker. Writes bench/results/bento-step-<time>.*
and bento-step-latest.*.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

from common import (
    ROOT,
    TOOLS,
    CommandFailed,
    log,
    machine_load,
    result_header,
    run,
    scratch_dir,
    write_results,
)
from model_only import steps_of, variant_sources

ARCHIVE = "model/celestial_bodies_classifier_model.bentomodel"


def trained_clone(scratch: Path) -> Path:
    clone = scratch / "clone"
    run(["git", "clone", "--quiet", str(ROOT), str(clone)])
    try:
        run([str(TOOLS / "dvc"), "pull", "--quiet", ARCHIVE], cwd=clone)
    except CommandFailed:  # the DVC remote lacks this commit's model: make it
        run([str(TOOLS / "dvc"), "repro", "--quiet"], cwd=clone)
    return clone


def one_run(variant: str, src: Path, clone: Path, scratch: Path, logs: Path, label: str) -> dict:
    home = scratch / "bentoml"
    shutil.rmtree(home, ignore_errors=True)  # a cold runner's empty store
    load = machine_load()["load1"]
    seconds, output = run(
        [str(TOOLS / "python"), "-m", "invoke", "import-model", "bento"],
        cwd=clone,
        extra_env={"PYTHONPATH": str(src), "BENTOML_HOME": str(home)},
        log_file=logs / f"{label}-{variant}.log",
    )
    return {"variant": variant, "seconds": seconds, "steps": steps_of(output), "load1": load}


def bytecode() -> str:
    """Whether the tools' BentoML has compiled bytecode: the pipeline sessions' environment,
    made by uv where PYTHONDONTWRITEBYTECODE is set, has none, so every `bentoml` process
    compiles what it imports (a process that imports it once pays that once)."""
    import bentoml

    cached = (Path(bentoml.__file__).parent / "__pycache__").is_dir()
    return "cached" if cached else "none (compiled at each import, as in .nox/pipeline)"


def render(data: dict) -> str:
    def med(variant: str, pick) -> float:
        return statistics.median(pick(r) for r in data["runs"] if r["variant"] == variant)

    lines = [
        f"## The bento step, in a process or as a command, {data['date']}",
        "",
        f"Machine: {data['machine']}. Commit {data['commit'][:12]}. "
        f"`invoke import-model bento` from an empty BentoML home, {data['per_variant']} runs "
        "per variant alternating; medians. "
        + "; ".join(f"{v}: {d}" for v, d in data["variants"].items())
        + f". The tools' BentoML bytecode: {data.get('bytecode', 'cached')}.",
        "",
        "| variant | bento step | import-model step | whole command |",
        "|---|---|---|---|",
    ]
    for variant in data["variants"]:
        lines.append(
            f"| {variant} | {med(variant, lambda r: r['steps']['bento']):.2f} s "
            f"| {med(variant, lambda r: r['steps']['import-model']):.2f} s "
            f"| {med(variant, lambda r: r['seconds']):.2f} s |"
        )
    lines += ["", "Each run (in the order run):", ""]
    for r in data["runs"]:
        lines.append(
            f"- {r['variant']}: bento {r['steps']['bento']:.1f} s, import-model "
            f"{r['steps']['import-model']:.1f} s, whole {r['seconds']:.1f} s "
            f"(load {r['load1']:.2f})"
        )
    before, after = data["load_before"]["load1"], data["load_after"]["load1"]
    lines += ["", f"1-minute load: {before:.2f} before the run, {after:.2f} after."]
    busy = data["load_before"]["busy"] + data["load_after"]["busy"]
    if busy:
        lines.append("Busy beside it: " + "; ".join(busy[:6]) + ".")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", default="main", help="git ref of variant A (default: main)")
    parser.add_argument("--runs", type=int, default=5, help="runs per variant (default: 5)")
    parser.add_argument("--render", metavar="JSON", help="only print the table of a results file")
    args = parser.parse_args()
    if args.render:
        print(render(json.loads(Path(args.render).read_text())))
        return
    stamp = time.strftime("%Y%m%d-%H%M%S")
    scratch, logs = scratch_dir("bento-step", stamp)
    log(f"clone, BentoML home and logs in {scratch}")
    sources = variant_sources(args.a, scratch)
    data: dict = {
        **result_header(),
        "per_variant": args.runs,
        "tools": str(TOOLS),
        "bytecode": bytecode(),
        "variants": {
            "A": f"git {args.a}'s src/ (`bentoml build` as a command)",
            "B": "this tree's src/",
        },
        "runs": [],
    }
    try:
        clone = trained_clone(scratch)
        for number in range(args.runs):
            for variant in "AB" if number % 2 == 0 else "BA":
                done = one_run(variant, sources[variant], clone, scratch, logs, f"r{number}")
                data["runs"].append(done)
                log(f"{variant}: {done['steps']} ({done['seconds']:.1f} s)")
        data["load_after"] = machine_load()
    except BaseException:
        log(f"failed: the logs are in {logs}")
        raise
    shutil.rmtree(scratch, ignore_errors=True)
    text = render(data)
    print(text)
    write_results("bento-step", stamp, data, text)


if __name__ == "__main__":
    sys.exit(main())
