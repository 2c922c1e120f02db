"""Pipeline benchmarks: the guide's shell lines against the suite's sessions, cold and warm.

guide: bench/guide_baseline.sh (fresh venv + pip, dvc repro --pull, bentoml models import,
       bentoml build, bentoml containerize with two tags, docker push --all-tags)
suite: nox -s train, then nox -s publish

cold:  a fresh `git clone` of this repository, a new venv (guide) / no .nox (suite), an empty
       BentoML store, the side's images removed and the engine's build cache emptied
       (`docker builder prune -af`), a registry namespace that has never seen the image.
       pip's and uv's package caches stay warm for both (both would download the same
       wheels otherwise); the DVC remote holds this commit's outputs, so `dvc repro --pull`
       pulls them in both instead of recomputing (checked in the output).
warm:  right after that side's cold run, the same clone again with nothing changed: same
       venv / .nox, same build cache, images and registry. The guide's run gets an empty
       BentoML store each time: its `bentoml models import` line fails on a model already in
       the store (a CI runner starts with an empty one).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sys
import tempfile
from pathlib import Path

from common import (
    BENCH,
    ROOT,
    TOOLS,
    CommandFailed,
    commit,
    docker,
    image_refs,
    image_size,
    log,
    run,
    run_stamped,
    trust_a_new_key,
)

REGISTRY = "127.0.0.1:5050"
IMAGES = {"guide": "celestial-bodies-classifier-guide", "suite": "celestial-bodies-classifier"}
FREEZE = ROOT / "requirements-freeze.txt"


class Side:
    """One side's workspace: a clone, its BentoML store, venv and registry namespace."""

    def __init__(self, name: str, scratch: Path, namespace: str, logs: Path):
        self.name = name
        self.dir = scratch / f"{name}-{namespace}"
        self.clone = self.dir / "clone"
        self.venv = self.dir / "venv"  # the guide's environment (the suite's are in .nox)
        self.registry = f"{REGISTRY}/{namespace}"
        self.log = logs / f"pipeline-{name}-{namespace}.log"
        self.store_count = 0
        self.bentoml_home = self.new_store()

    def new_store(self) -> Path:
        self.store_count += 1
        home = self.dir / f"bentoml-{self.store_count}"
        home.mkdir(parents=True)
        return home

    @property
    def image(self) -> str:
        return f"{self.registry}/{IMAGES[self.name]}"

    def run_once(self) -> dict:
        if self.name == "guide":
            return self._guide()
        return self._suite()

    def _guide(self) -> dict:
        extra = {
            "VENV": str(self.venv),
            "REGISTRY": self.registry,
            "IMAGE": IMAGES["guide"],
            "BENTOML_HOME": str(self.bentoml_home),
        }
        total, output = run(
            ["bash", str(BENCH / "guide_baseline.sh")],
            cwd=self.clone,
            extra_env=extra,
            log_file=self.log,
        )
        return guide_result(total, output)

    def _suite(self) -> dict:
        extra = {"BENTOML_HOME": str(self.bentoml_home), "CONTAINER_REGISTRY_HOST": self.registry}
        nox = [str(TOOLS / "nox"), "--no-color", "-s"]
        train, out_train = run([*nox, "train"], cwd=self.clone, extra_env=extra, log_file=self.log)
        publish, lines = run_stamped(
            [*nox, "publish"], cwd=self.clone, extra_env=extra, log_file=self.log
        )
        out_publish = "\n".join(line for _, line in lines)
        return {
            "total": train + publish,
            "train": train,
            "publish": publish,
            "steps": {"nox-train": train, **publish_steps(lines, publish)},
            "dvc_recomputed": "Running stage" in out_train,
            "publish_skipped": "already published" in out_publish,
        }


def shell_steps(output: str) -> dict[str, float]:
    """Seconds per step of a guide's shell script: the "@step NAME SECONDS" lines it prints."""
    return {m[1]: float(m[2]) for m in re.finditer(r"^@step (\S+) ([\d.]+)$", output, re.M)}


def guide_result(total: float, output: str) -> dict:
    """One run of a guide's shell script: its train part (venv, pip, `dvc repro --pull`), its
    publish part (the rest), each step, and whether DVC ran a stage instead of pulling."""
    steps = shell_steps(output)
    train = steps["venv"] + steps["pip-install"] + steps["dvc-repro"]
    return {
        "total": total,
        "train": train,
        "publish": total - train,
        "steps": steps,
        "dvc_recomputed": "Running stage" in output,
    }


# The publish session's steps, each found by the first line it prints (in order): a pattern
# matched at the start of a line (nox's own `invoke check-published ...` line names them all).
PUBLISH_MARKERS = (
    # The pipeline sessions' shared environment (noxfile.py), made by `nox -s train` before:
    # publish prints this line only when it makes it again (the lock file changed, or no train).
    ("publish: environment", r"nox > Creating virtual environment"),
    ("publish: check-published", r"nox > invoke "),
    # Then each step from the line that ends the one before (`✓ NAME ...`, what the quiet
    # session prints; the commands' own lines show only with -v).
    ("publish: import-model", r"✓ check-published "),
    ("publish: bento", r"✓ import-model "),
    ("publish: containerize", r"✓ bento "),
    ("publish: smoke", r"✓ containerize "),
    ("publish: push", r"✓ smoke "),
    ("publish: attest", r"✓ push "),  # `latest` moves at attest's end
)


def publish_steps(lines: list[tuple[float, str]], total: float) -> dict[str, float]:
    """Seconds per step of `nox -s publish`: from a step's first line to the next step's
    (a step whose line is missing, e.g. a reused environment, is left out)."""
    starts = []
    for name, marker in PUBLISH_MARKERS:
        at = next((t for t, line in lines if re.match(marker, line)), None)
        if at is not None:
            starts.append((name, at))
    bounds = [*(at for _, at in starts[1:]), total]
    return {name: round(end - at, 2) for (name, at), end in zip(starts, bounds, strict=True)}


def reset(side: str) -> None:
    """Cold engine for one side: remove its bench images, empty the build cache."""
    suffix = f"/{IMAGES[side]}:"
    refs = image_refs(f"{REGISTRY}/bench-", suffix)
    if refs:
        docker("rmi", *refs, check=False)
    docker("builder", "prune", "-af")


def warm_package_caches(scratch: Path, logs: Path) -> None:
    """Fill pip's and uv's caches (untimed) so that cold runs compare installs, not downloads."""
    log("warming pip's and uv's package caches (untimed)")
    for backend in ("pip", "uv"):
        venv = scratch / f"warmup-{backend}"
        if backend == "pip":
            run([sys.executable, "-m", "venv", str(venv)], log_file=logs / "warmup.log")
            run(
                [str(venv / "bin" / "pip"), "install", "-q", "-r", str(FREEZE)],
                log_file=logs / "warmup.log",
            )
        else:
            run(["uv", "venv", "-q", "-p", "3.11", str(venv)], log_file=logs / "warmup.log")
            run(
                [
                    "uv",
                    "pip",
                    "install",
                    "-q",
                    "-p",
                    str(venv / "bin" / "python"),
                    "-r",
                    str(FREEZE),
                ],
                log_file=logs / "warmup.log",
            )
        shutil.rmtree(venv)


def warmup_marker() -> Path:
    """Set once both caches have installed this requirements-freeze.txt (pip's cache dir stays
    almost empty here: its wheels come from local indexes, so its size tells nothing)."""
    digest = hashlib.sha256(FREEZE.read_bytes()).hexdigest()[:16]
    return Path.home() / ".cache" / "celestial-bodies" / f"bench-caches-warm-{digest}"


def bench_pipeline(cold_runs: int, warm_runs: int, stamp: str, logs: Path) -> dict:
    """Cold runs of both sides (alternating which goes first); warm runs after the last cold
    run of each side. Returns raw runs, image sizes, and the last workspaces for later steps."""
    scratch = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    if not warmup_marker().exists():
        warm_package_caches(scratch, logs)
        warmup_marker().touch()
    results: dict = {"cold": {"guide": [], "suite": []}, "warm": {"guide": [], "suite": []}}
    last: dict[str, Side] = {}
    for index in range(cold_runs):
        order = ("guide", "suite") if index % 2 == 0 else ("suite", "guide")
        for name in order:
            reset(name)
            side = Side(name, scratch, f"bench-{stamp}-c{index + 1}", logs)
            run(["git", "clone", "-q", str(ROOT), str(side.clone)], log_file=side.log)
            if name == "suite":
                trust_a_new_key(side.clone, side.dir)
            checked_out = commit(side.clone)
            log(f"cold {name} run {index + 1}/{cold_runs} ({side.clone})")
            result = side.run_once()
            log(
                f"  {result['total']:.1f} s (train {result['train']:.1f}, "
                f"publish {result['publish']:.1f})"
            )
            results["cold"][name].append({**result, "commit": checked_out})
            if index == cold_runs - 1:
                for number in range(warm_runs):
                    if name == "guide":
                        side.bentoml_home = side.new_store()
                    log(f"warm {name} run {number + 1}/{warm_runs}")
                    warm = side.run_once()
                    log(f"  {warm['total']:.1f} s")
                    results["warm"][name].append(warm)
            last[name] = side
    results["image_bytes"] = {
        name: image_size(f"{side.image}:latest") for name, side in last.items()
    }
    results["images"] = {name: f"{side.image}:latest" for name, side in last.items()}
    results["registry"] = REGISTRY
    return {"results": results, "sides": last, "scratch": scratch}


def cleanup(sides: dict[str, Side], scratch: Path) -> None:
    """Remove what the benchmark made: its images (registry data stays) and scratch dirs."""
    for name in sides:
        refs = image_refs(f"{REGISTRY}/bench-", f"/{IMAGES[name]}:")
        if refs:
            docker("rmi", *refs, check=False)
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":  # python bench/pipeline.py: one cold + one warm run of each side
    import json
    import time

    logs = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    try:
        out = bench_pipeline(1, 1, time.strftime("%Y%m%d%H%M%S"), logs)
    except CommandFailed as error:
        raise SystemExit(f"{error}\n(logs in {logs})") from None
    print(json.dumps(out["results"], indent=2))
