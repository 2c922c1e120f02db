"""Benchmarks of the automation suite, each printed beside its baseline from the same run.

    python bench/suite.py [--runs 3] [--skip-default-image]

Rows (medians of --runs; the machines are shared and noisy, so read the ratios):
- environment creation: uv (what nox sessions use) vs pip, both with warm caches;
- `invoke --list` start-up vs importing the heavy libraries eagerly;
- a second `nox -s publish` of an unchanged commit (skip detected) vs a forced rebuild;
- the image size vs BentoML's default Debian build of the same bento.
Writes the table (Markdown) to stdout and bench/results/suite-<time>.{md,json} and
suite-latest.* (README shows the .md through `python bench/readme.py`); the JSON records the
machine, the date, the commit and the load beside the run.
Run it from a clean commit after `nox -s train` on a machine ready per scripts/bootstrap.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, commit, machine, machine_load, write_results

FREEZE = ROOT / "requirements-freeze.txt"
EAGER_IMPORTS = "import bentoml, dvc.repo, python_on_whales, onnxruntime"


def timed(command: list[str], *, cwd: Path = ROOT, env: dict | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(
            f"benchmark command failed: {' '.join(command)}\n{done.stdout}{done.stderr}"
        )
    return elapsed, done.stdout + done.stderr


def median_of(runs: int, command: list[str], **kwargs) -> float:
    return statistics.median(timed(command, **kwargs)[0] for _ in range(runs))


def env_creation(runs: int) -> dict:
    uv = shutil.which("uv") or "uv"

    def with_uv() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            venv = Path(tmp) / "venv"
            start = time.perf_counter()
            subprocess.run([uv, "venv", "-q", "-p", sys.executable, str(venv)], check=True)
            subprocess.run(
                [uv, "pip", "install", "-q", "-p", str(venv / "bin" / "python"), "-r", str(FREEZE)],
                check=True,
            )
            return time.perf_counter() - start

    def with_pip() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            venv = Path(tmp) / "venv"
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run(
                [str(venv / "bin" / "pip"), "install", "-q", "-r", str(FREEZE)], check=True
            )
            return time.perf_counter() - start

    with_uv(), with_pip()  # warm both caches: the comparison is warm against warm
    return {
        "suite": statistics.median(with_uv() for _ in range(runs)),
        "baseline": statistics.median(with_pip() for _ in range(runs)),
    }


def startup(runs: int) -> dict:
    invoke = [sys.executable, "-m", "invoke", "--list"]
    eager = [sys.executable, "-c", EAGER_IMPORTS]
    timed(invoke), timed(eager)
    return {"suite": median_of(runs, invoke), "baseline": median_of(runs, eager)}


def second_publish(runs: int) -> dict:
    nox = [sys.executable, "-m", "nox", "-s", "publish"]
    timed(nox)  # makes sure this commit's image is published
    times = []
    for _ in range(runs):
        elapsed, output = timed(nox)
        if "already published" not in output:
            raise SystemExit("second publish did not detect the published image:\n" + output)
        times.append(elapsed)
    forced, _ = timed([*nox, "--", "--force"])
    return {"suite": statistics.median(times), "baseline": forced}


def image_sizes(skip_default: bool) -> dict:
    from cicd.context import Run

    run = Run.load(ROOT, os.environ)  # the run context a task builds: secrets masked
    tag = f"{run.settings.repository}:{run.revision.tag}"
    suite = _image_size(run.docker.path, tag)
    baseline = None if skip_default else _default_build_size(run.docker, run.settings)
    return {"suite": suite / 1e6, "baseline": baseline / 1e6 if baseline else None}


def _image_size(client: str, reference: str) -> int:
    done = subprocess.run(
        [client, "image", "inspect", "--format", "{{.Size}}", reference],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(done.stdout.strip())


def _default_build_size(client, s) -> int:
    """Build the same bento with BentoML's default Debian template (no base_image)."""
    import yaml

    from cicd.bento import model_argument, model_info

    bentofile = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    bentofile.get("docker", {}).pop("base_image", None)
    bentofile["docker"] = {**bentofile.get("docker", {}), "distro": "debian"}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bentofile.yaml"
        path.write_text(yaml.safe_dump(bentofile))
        bentoml = str(Path(sys.executable).parent / "bentoml")
        model = model_info(s.path(s.bentomodel))
        subprocess.run(
            [bentoml, "build", "-f", str(path), "--version", "bench-default",
             *model_argument(model), "src"],
            cwd=ROOT, check=True, capture_output=True,
        )  # fmt: skip
        tag = "bench-default-image:latest"
        try:
            subprocess.run(
                [bentoml, "containerize", f"{s.bento_name}:bench-default", "-t", tag],
                cwd=ROOT, env={**os.environ, **client.env_for_tools()}, check=True,
                capture_output=True,
            )  # fmt: skip
            return _image_size(client.path, tag)
        finally:
            subprocess.run([client.path, "rmi", "--force", tag], capture_output=True)
            subprocess.run([bentoml, "delete", "-y", f"{s.bento_name}:bench-default"],
                           capture_output=True)  # fmt: skip


def render(data: dict) -> str:
    """The Markdown table of a results file (what README shows)."""
    lines = [
        f"# The suite's own costs, {data['date']}",
        "",
        f"Machine: {data['machine']}. Commit {data['commit'][:12]}. {data['counts'].capitalize()}; "
        f"1-minute load before and after: {data['load_before']['load1']:.2f}, "
        f"{data['load_after']['load1']:.2f}.",
        "",
        "| measure | suite | baseline | suite / baseline |",
        "|---|---|---|---|",
    ]
    for name, row in data["rows"].items():
        suite, base, unit = row["suite"], row["baseline"], row["unit"]
        ratio = f"{suite / base:.2f}" if base else "n/a"
        base_text = (
            f"{base:.2f} {unit} ({row['baseline_name']})"
            if base
            else (f"not run ({row['baseline_name']})")
        )
        lines.append(f"| {name} | {suite:.2f} {unit} | {base_text} | {ratio} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-default-image", action="store_true")
    parser.add_argument("--render", metavar="JSON", help="only print the table of a results file")
    args = parser.parse_args()
    if args.render:
        print(render(json.loads(Path(args.render).read_text())), end="")
        return
    data: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine(),
        "commit": commit(),
        "counts": f"medians of {args.runs} runs ({max(args.runs, 5)} for start-up, "
        f"{max(1, args.runs - 1)} for environment creation)",
        "load_before": machine_load(),
    }
    measures = {
        "`invoke --list` start-up": ("s", "eager imports", lambda: startup(max(args.runs, 5))),
        "second `nox -s publish`, unchanged commit": (
            "s", "`-- --force` rebuild", lambda: second_publish(args.runs),
        ),
        "image size": (
            "MB", "BentoML default Debian build", lambda: image_sizes(args.skip_default_image),
        ),
        "environment creation": ("s", "pip", lambda: env_creation(max(1, args.runs - 1))),
    }  # fmt: skip
    data["rows"] = {
        name: {"unit": unit, "baseline_name": baseline, **measure()}
        for name, (unit, baseline, measure) in measures.items()
    }
    data["load_after"] = machine_load()
    text = render(data)
    print(text, end="")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    write_results("suite", stamp, data, text)


if __name__ == "__main__":
    main()
