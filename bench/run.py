"""Benchmarks of the suite beside the guide's way, in one run on one machine.

    python bench/run.py            # 2 cold + 3 warm pipeline runs per side, full serving runs
    python bench/run.py --quick    # 1 cold + 2 warm, shorter loads
    python bench/run.py --skip-pipeline --image REF   # serving only, on a given image

Prints a Markdown table (date, machine, commit, every figure with its baseline and the ratio
suite / baseline) and writes it to bench/results/pipeline-<time>.md, the raw numbers to
bench/results/pipeline-<time>.json (and pipeline-latest.*, which README shows through
`python bench/readme.py`). docs/benchmarks.md explains it.
Needs: a Docker engine with the base image (scripts/bootstrap), the registry at
127.0.0.1:5050 (`invoke registry`), hey (apt-get install hey), a clean commit whose DVC
outputs are in the DVC remote, and this script run by the Python of an environment made
from requirements-freeze.txt (it provides nox, invoke, dvc, bentoml for the runs).
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pipeline
import serving
from common import (
    RESULTS,
    ROOT,
    TOOLS,
    commit,
    log,
    machine,
    median,
    run,
    write_partial,
    write_results,
)

from cicd import settings

FLOOR = "one in-process prediction"


def startup(clone: Path, runs: int) -> dict:
    """Start-up of the suite's entry points against the guide's cheapest CLI start-up."""
    home = Path(tempfile.mkdtemp(prefix="bench-startup-bentoml-"))
    extra = {"BENTOML_HOME": str(home)}
    noxfile = runpy.run_path(str(ROOT / "noxfile.py"))  # the publish session's steps
    publish_steps = noxfile["invoke_arguments"](noxfile["PUBLISH"], [])
    commands = {
        "invoke --list": [str(TOOLS / "invoke"), "--list"],
        "nox -l": [str(TOOLS / "nox"), "-l"],
        "invoke --dry publish": [str(TOOLS / "invoke"), "--dry", *publish_steps],
        "dvc --version": [str(TOOLS / "dvc"), "--version"],
        "bentoml --version": [str(TOOLS / "bentoml"), "--version"],
        "python -c pass": [sys.executable, "-c", "pass"],
    }
    out = {}
    for name, command in commands.items():
        run(command, cwd=clone, extra_env=extra)  # warm the OS caches
        out[name] = [run(command, cwd=clone, extra_env=extra)[0] for _ in range(runs)]
    shutil.rmtree(home, ignore_errors=True)
    return out


# -- the table ---------------------------------------------------------------------------------


def fmt(value, unit: str = "s", digits: int = 2) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f} {unit}".strip()


def row(
    name: str,
    suite,
    base,
    base_name: str,
    unit: str = "s",
    digits: int = 2,
    competitor: bool = True,
    lower_is_better: bool = True,
) -> str:
    ratio = f"{suite / base:.2f}" if suite is not None and base else "n/a"
    slower = ""
    if suite is not None and base and competitor:
        worse = suite > base * 1.05 if lower_is_better else suite < base / 1.05
        slower = " **(suite worse)**" if worse else ""
    return (
        f"| {name} | {fmt(suite, unit, digits)} | {fmt(base, unit, digits)} ({base_name}) | "
        f"{ratio}{slower} |"
    )


def pipeline_rows(p: dict) -> list[str]:
    lines = []
    for mode in ("cold", "warm"):
        runs = p[mode]
        count = min(len(runs["guide"]), len(runs["suite"]))
        for part, label in (
            ("total", "whole pipeline"),
            ("train", "train part"),
            ("publish", "publish part"),
        ):
            suite = median([r[part] for r in runs["suite"]])
            guide = median([r[part] for r in runs["guide"]])
            lines.append(row(f"{mode}: {label} (median of {count})", suite, guide, "guide"))
    sizes = p["image_bytes"]
    lines.append(
        row("image size", sizes["suite"] / 1e6, sizes["guide"] / 1e6, "guide's way", "MB", 0)
    )
    return lines


def step_table(p: dict) -> list[str]:
    lines = ["| step | cold (median) | warm (median) |", "|---|---|---|"]
    for side in ("guide", "suite"):
        steps = p["cold"][side][0]["steps"].keys() if p["cold"][side] else []
        for step in steps:
            cold = median([r["steps"][step] for r in p["cold"][side] if step in r["steps"]])
            warm = median([r["steps"][step] for r in p["warm"][side] if step in r["steps"]])
            lines.append(f"| {side}: {step} | {fmt(cold)} | {fmt(warm)} |")
    return lines


def startup_rows(s: dict) -> list[str]:
    medians = {name: median(times) for name, times in s.items()}
    base_name = min(("dvc --version", "bentoml --version"), key=lambda n: medians[n])
    base = medians[base_name]
    lines = [
        row(f"start-up: `{name}`", medians[name], base, f"`{base_name}`")
        for name in ("invoke --list", "nox -l", "invoke --dry publish")
    ]
    return lines


def serving_rows(s: dict) -> list[str]:
    """The container against the in-process floor (a bound, not a competitor: no verdict),
    and against the framework's own ceiling (GET /readyz at c=8, same container, same run)."""
    floor, cold = s["floor"], s["cold_start_s"]
    lines = [
        row(
            "cold start to `/readyz` (median)",
            median(cold["suite"]),
            median(cold.get("guide", [])),
            "guide's image",
        )
    ]
    for c in (1, 8):
        load, cores = s[f"load_c{c}"], min(c, os.cpu_count() or 1)
        ceiling = (floor["per_core_rps"] * cores, f"in-process floor x {cores} core(s)")
        lines += [
            row(f"c={c}: requests/s", load["rps"], *ceiling, "/s", 0, competitor=False),
            row(f"c={c}: p50 latency", load["p50_ms"], floor["p50_ms"], FLOOR, "ms", 2, False),
            row(f"c={c}: p99 latency", load["p99_ms"], floor["p99_ms"], FLOOR, "ms", 2, False),
        ]
    if "ceiling_c8" in s:
        ceiling = (s["ceiling_c8"]["rps"], "GET `/readyz`, c=8: the framework's ceiling")
        lines.append(row("c=8: requests/s", s["load_c8"]["rps"], *ceiling, "/s", 0, False))
    memory = (s["load_c8"]["memory_mb"], s["idle_mb"], "same container idle", "MiB", 0, False)
    return [*lines, row("memory under load (c=8, max)", *memory)]


def load_lines(s: dict) -> list[str]:
    """What else ran beside each load: the 1-minute load average and the busiest others."""
    lines = []
    for name in ("ceiling_c8", "load_c1", "load_c8"):
        seen = s.get(name, {}).get("machine_load")
        if seen:
            others = "; ".join(seen["busy"]) or "none at 10 % CPU or more"
            lines.append(f"- {name}: load {seen['load1']:.2f}; other processes: {others}")
    return lines


def second_half_growth(run: dict) -> str:
    """Memory growth over the second half of the samples: ~0 when memory has levelled off."""
    samples = [mb for _, mb in run.get("memory_samples", [])]
    if len(samples) < 4:
        return "too few samples"
    middle = samples[len(samples) // 2]
    return f"{samples[-1] - middle:+.0f} over the second half"


def robustness_lines(s: dict) -> list[str]:
    normal, bad = s["robust_normal"], s["robust_hostile"]
    healthy = bad["normal_after_correct"] == bad["normal_after"] and bad["still_running"]
    return [
        "| run | requests | non-2xx / 5xx | lost | memory (MiB) | verdict |",
        "|---|---|---|---|---|---|",
        f"| normal JPEG, c=8 | {normal['sent']:,} | {normal['errors']} non-2xx | "
        f"{normal['lost']} | {normal['memory_before_mb']:.0f} before, "
        f"{normal['memory_after_mb']:.0f} after, {second_half_growth(normal)} | "
        f"{'pass' if normal['errors'] == 0 and normal['lost'] == 0 else 'FAIL'} |",
        f"| malformed/hostile ({bad['kinds']} kinds), c=8 | {bad['requests']:,} | "
        f"{bad['5xx']} 5xx ({bad['unexpected_status']} not the documented 4xx) | {bad['lost']} | "
        f"{bad['memory_after_mb']:.0f} after | "
        f"{'pass' if bad['5xx'] == 0 and bad['lost'] == 0 else 'FAIL'} |",
        f"| normal JPEG after the attack | {bad['normal_after']} | "
        f"{bad['normal_after'] - bad['normal_after_correct']} wrong answers | 0 | | "
        f"{'pass' if healthy else 'FAIL'} |",
    ]


def by_kind(s: dict) -> str:
    kinds = s["robust_hostile"].get("by_kind", {})
    return "Hostile requests, answers by kind: " + "; ".join(
        f"{name} " + ", ".join(f"{code} x{n}" for code, n in sorted(codes.items()))
        for name, codes in kinds.items()
    )


def render(data: dict) -> str:
    cfg = data["config"]
    parts = [
        f"## Benchmarks, {data['date']}",
        "",
        f"Machine: {data['machine']}. Commit {data['commit'][:12]}. "
        f"Run time {data['run_seconds'] / 60:.1f} min; "
        f"{cfg['cold']} cold and {cfg['warm']} warm pipeline runs per side, medians; "
        f"loads of {cfg['load_seconds']} s.",
        "",
        "| measure | suite | baseline | suite / baseline |",
        "|---|---|---|---|",
    ]
    if "pipeline" in data:
        parts += pipeline_rows(data["pipeline"])
    if "startup" in data:
        parts += startup_rows(data["startup"])
    if "serving" in data:
        parts += serving_rows(data["serving"])
    if "pipeline" in data:
        p = data["pipeline"]
        recomputed = any(
            r["dvc_recomputed"] for m in ("cold", "warm") for side in p[m].values() for r in side
        )
        skipped = [r.get("publish_skipped") for r in p["warm"]["suite"]]
        dvc = "RECOMPUTED some stages" if recomputed else "pulled every output (no stage ran)"
        parts += [
            "",
            "Where the pipeline's time goes (seconds):",
            "",
            *step_table(p),
            "",
            f"DVC: `dvc repro --pull` {dvc} in both. Warm suite publish skipped as already "
            f"published: {sum(map(bool, skipped))}/{len(skipped)}.",
        ]
    if "serving" in data:
        parts += ["", "Robustness (published image):", "", *robustness_lines(data["serving"])]
        parts += ["", by_kind(data["serving"])]
        if load_lines(data["serving"]):
            parts += ["", "Beside the loads (hey runs on the same cores):", ""]
            parts += load_lines(data["serving"])
    return "\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 cold + 2 warm runs, short loads")
    parser.add_argument("--cold", type=int, help="cold pipeline runs per side (default 2)")
    parser.add_argument("--warm", type=int, help="warm pipeline runs per side (default 3)")
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--skip-serving", action="store_true")
    parser.add_argument("--image", help="image to serve with --skip-pipeline")
    parser.add_argument("--keep", action="store_true", help="keep clones, logs and images")
    parser.add_argument("--render", metavar="JSON", help="only print the table of a results file")
    args = parser.parse_args()
    if args.render:
        print(render(json.loads(Path(args.render).read_text())))
        return
    cold = args.cold or (1 if args.quick else 2)
    warm = args.warm or (2 if args.quick else 3)
    config = {
        "cold": cold,
        "warm": warm,
        "load_seconds": 5 if args.quick else 10,
        "cold_starts": 2 if args.quick else 3,
        "robust_requests": 10_000,
        "hostile_requests": 1_000,
        "startup_runs": 5,
    }
    begin = time.perf_counter()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = Path(tempfile.mkdtemp(prefix=f"bench-{stamp}-logs-"))
    log(f"logs in {logs}")
    data: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine(),
        "commit": commit(),
        "config": config,
    }
    made = None
    try:
        clone = ROOT
        images = {"suite": args.image} if args.image else {}
        if not args.skip_pipeline:
            made = pipeline.bench_pipeline(cold, warm, stamp.replace("-", ""), logs)
            data["pipeline"] = made["results"]
            clone = made["sides"]["suite"].clone
            images = made["results"]["images"]
        log("start-up of the entry points")
        data["startup"] = startup(clone, config["startup_runs"])
        if not args.skip_serving:
            if not images:
                raise SystemExit("serving needs an image: run the pipeline part or pass --image")
            jpeg = clone / "data" / "raw" / "Mars" / "Mars_1.jpg"
            model = clone / settings.load(clone, {}).bentomodel
            log("in-process floor: one ONNX Runtime prediction")
            floor = serving.floor(sys.executable, clone / "src", model, jpeg)
            data["serving"] = serving.bench_serving(
                images,
                jpeg,
                floor,
                logs,
                load_seconds=config["load_seconds"],
                cold_starts=config["cold_starts"],
                robust_requests=config["robust_requests"],
                hostile_requests=config["hostile_requests"],
            )
    except BaseException:
        partial = write_partial("pipeline", stamp, data)
        log(f"failed: what was measured is in {partial}")
        raise
    finally:
        if made and not args.keep:
            pipeline.cleanup(made["sides"], made["scratch"])
    data["run_seconds"] = time.perf_counter() - begin
    text = render(data)
    print(text)
    write_results("pipeline", stamp, data, text)
    log(f"wrote {RESULTS}/pipeline-{stamp}.md and .json in {data['run_seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()
