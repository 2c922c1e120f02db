"""The guide's whole pipeline on its Keras/TF model beside the suite's, cold and warm.

    python bench/anchor_pipeline.py                  # 2 cold + 2 warm runs per side
    python bench/anchor_pipeline.py --quick          # 1 cold + 1 warm
    python bench/anchor_pipeline.py --render FILE    # only print the table of an earlier run

Issue 24, goal 1, "the anchor users actually have". bench/run.py compares the suite with the
guide's shell lines run on the suite's own small model; a reader of the guide runs them on the
guide's Keras CNN in TensorFlow. This runs, in one session on one machine, alternating:

- guide: bench/anchor/guide_pipeline.sh in a fresh clone of the guide's repository
  (bench/anchor/repo/: its dvc.yaml, params.yaml, src/ and requirements.txt, plus the `dvc`
  its CI installs), on this repository's images (data/raw, tracked with `dvc add`): a new
  venv, `pip install -r requirements.txt` (TensorFlow), `dvc repro --pull`, `bentoml models
  import`, `bentoml build src`, `bentoml containerize` (BentoML's defaults), `docker push`;
- suite: `nox -s train` + `nox -s publish` in a fresh clone of this repository
  (bench/pipeline.py's Side), on the same images.

cold: a fresh clone, a new venv (guide) / no .nox (suite), an empty BentoML store, the engine's
      build cache emptied and this run's images removed, a registry that never saw the image
      (a Distribution binary of its own on a free port, reached directly). The installs are
      from this machine's disk, not from the network: the untimed set-up downloads the guide's
      wheels once into a wheelhouse (TensorFlow from PyPI), which the timed installs read with
      no index (pip's own HTTP cache stays empty here), and warms uv's cache (bench/pipeline.py's
      warm-up); each run records how many wheels pip took from the wheelhouse and how many it
      downloaded. The image builds inside the engine install their packages again
      from PyPI (their cache mounts are part of the emptied build cache), on both sides.
warm: right after that side's cold run, the same clone again with nothing changed (the
      guide's lines get an empty BentoML store: their `models import` fails on a model that
      is already in the store).

Both DVC remotes hold the outputs of the commit run, so `dvc repro --pull` pulls and trains
nothing (the table says whether a stage ran): the guide's repository is made once, untimed, in
/var/tmp/bench-anchor/pipeline-<key>/ (TensorFlow trains it there), and reused while its files
and the images are unchanged. Writes bench/results/anchor-pipeline-<time>.{json,md} and
anchor-pipeline-latest.*. Run it with the Python of an environment made from
requirements-freeze.txt plus the project (nox's tests environment), from a clean commit whose
DVC outputs are in the DVC remote and checked out (data/raw).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import pipeline
from common import (
    BENCH,
    RESULTS,
    ROOT,
    commit,
    docker,
    image_refs,
    image_size,
    log,
    machine_load,
    median,
    result_header,
    run,
    scratch_dir,
    trust_a_new_key,
    write_partial,
    write_results,
)
from layers import BenchRegistry

ANCHOR_REPO = BENCH / "anchor" / "repo"
SCRIPT = BENCH / "anchor" / "guide_pipeline.sh"
CACHE = Path("/var/tmp/bench-anchor")  # as bench/anchor.py: not under a hidden folder
GUIDE_IMAGE = "celestial-bodies-classifier-keras"
SIDES = ("guide", "suite")
PARTS = (("total", "whole pipeline"), ("train", "train part"), ("publish", "publish part"))


# -- the guide's repository, made once ---------------------------------------------------------


def dvc_pin() -> str:
    """The suite's own `dvc` pin: the guide's CI installs dvc beside its model's packages."""
    freeze = (ROOT / "requirements-freeze.txt").read_text().splitlines()
    return next(line.split(";")[0].strip() for line in freeze if line.startswith("dvc=="))


def origin_key(images: Path) -> str:
    """What the guide's repository is made from: its files, the dvc pin and every image."""
    digest = hashlib.sha256(dvc_pin().encode())
    for path in sorted([*ANCHOR_REPO.rglob("*"), *images.rglob("*.jpg")]):
        if path.is_file():
            digest.update(
                f"{path.name}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode()
            )
    return digest.hexdigest()[:16]


def guide_origin(images: Path) -> Path:
    """The guide's repository as its team would have it: committed, trained once, every DVC
    output in its remote (a folder beside it). Made untimed with a venv of its own, which also
    fills pip's cache with the wheels the timed installs then take from it."""
    work = CACHE / f"pipeline-{origin_key(images)}"
    origin, done = work / "origin", work / ".complete"
    if done.exists():
        log(f"guide: reusing its repository {origin} (same files and images)")
        fill_wheelhouse(origin, work)
        return origin
    log(f"guide: making its repository in {origin} (untimed: pip install, TensorFlow training)")
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(ANCHOR_REPO, origin)
    requirements = origin / "requirements.txt"
    requirements.write_text(requirements.read_text() + f"{dvc_pin()}\n")
    shutil.copytree(images, origin / "data" / "raw")
    venv, setup_log = work / "setup-venv", work / "setup.log"
    run([sys.executable, "-m", "venv", str(venv)], log_file=setup_log)
    run([str(venv / "bin" / "pip"), "install", "-r", str(requirements)], log_file=setup_log,
        timeout=3600)  # fmt: skip
    extra = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "BENTOML_HOME": str(work / "bentoml")}
    git = ["git", "-c", "user.name=guide", "-c", "user.email=guide@localhost"]
    for command in (
        ["git", "init", "-q", "-b", "main"],
        ["dvc", "init", "-q"],
        ["dvc", "remote", "add", "-d", "bench", str(work / "dvc-remote")],
        ["dvc", "add", "-q", "data/raw"],
        ["dvc", "repro"],
        ["dvc", "push"],
        [*git, "add", "-A"],
        [*git, "commit", "-q", "-m", "The guide's Keras model, trained"],
    ):
        run(command, cwd=origin, extra_env=extra, log_file=setup_log, timeout=3600)
    done.write_text("")
    fill_wheelhouse(origin, work)
    return origin


def wheelhouse(origin: Path) -> Path:
    return origin.parent / "wheelhouse"


def fill_wheelhouse(origin: Path, work: Path) -> None:
    """Every wheel of the guide's requirements.txt in a folder, downloaded once (untimed): the
    timed installs read them from there with no index (PIP_NO_INDEX, PIP_FIND_LINKS), as a
    runner with a warm pip cache would. pip's own HTTP cache cannot stand in for it here: it
    stays empty (0 files after a TensorFlow install), so pip downloads 570 MB every time."""
    wheels, done = wheelhouse(origin), work / ".wheelhouse-complete"
    if done.exists():
        return
    log(f"guide: downloading its wheels into {wheels} (untimed, once)")
    run([str(work / "setup-venv" / "bin" / "pip"), "download", "--dest", str(wheels),
         "--requirement", str(origin / "requirements.txt")],
        log_file=work / "setup.log", timeout=3600)  # fmt: skip
    done.write_text("")


# -- one side's run ----------------------------------------------------------------------------


class Guide:
    """The guide's workspace: a clone of its repository, its venv, a BentoML store a run."""

    def __init__(self, origin: Path, scratch: Path, registry: str, logs: Path):
        self.dir = scratch / f"guide-{time.monotonic_ns()}"
        self.clone, self.venv = self.dir / "clone", self.dir / "venv"
        self.registry, self.log, self.stores = registry, logs / "guide.log", 0
        self.wheels = wheelhouse(origin)
        run(["git", "clone", "-q", str(origin), str(self.clone)], log_file=self.log)

    def run_once(self) -> dict:
        self.stores += 1  # a fresh CI runner's empty store, every run
        home = self.dir / f"bentoml-{self.stores}"
        home.mkdir(parents=True)
        extra = {"VENV": str(self.venv), "REGISTRY": self.registry, "IMAGE": GUIDE_IMAGE,
                 "BENTOML_HOME": str(home), "PIP_NO_INDEX": "1",
                 "PIP_FIND_LINKS": str(self.wheels)}  # fmt: skip
        total, output = run(
            ["bash", str(SCRIPT)], cwd=self.clone, extra_env=extra, log_file=self.log, timeout=3600
        )
        return {**pipeline.guide_result(total, output), **pip_sources(output)}

    @property
    def image(self) -> str:
        return f"{self.registry}/{GUIDE_IMAGE}:latest"


def pip_sources(output: str) -> dict[str, int]:
    """Where the pip-install step took its wheels: the local wheelhouse ("Processing <file>")
    or the network ("Downloading"). Only that step's lines: the image build's own installer
    prints "Downloading" too."""
    step = output.partition("@step venv")[2].partition("@step pip-install")[0]
    return {"pip_local": step.count("Processing "), "pip_downloaded": step.count("Downloading ")}


def cold_engine(registry: BenchRegistry) -> None:
    """Empty the build cache; remove the local images of this registry (no other image)."""
    docker("builder", "prune", "-af")
    refs = image_refs(f"127.0.0.1:{registry.port}/")
    if refs:
        docker("rmi", "-f", *refs, check=False)


def cold_then_warm(name: str, origin: Path, scratch: Path, logs: Path, warm: int) -> dict:
    """One cold run of a side into a registry of its own, then ``warm`` runs as they are."""
    registry = BenchRegistry(scratch / f"registry-{name}-{time.monotonic_ns()}")
    address = f"127.0.0.1:{registry.port}"  # not through the proxy: its threads cost CPU
    try:
        cold_engine(registry)
        if name == "guide":
            side: Guide | pipeline.Side = Guide(origin, scratch, f"{address}/cold", logs)
        else:
            side = pipeline.Side("suite", scratch, f"cold-{time.monotonic_ns()}", logs)
            side.registry = f"{address}/cold"
            run(["git", "clone", "-q", str(ROOT), str(side.clone)], log_file=side.log)
            # CI has a key: attest signs, and the warm publish's check trusts only a signed image
            trust_a_new_key(side.clone, side.dir)
        runs = {"cold": [], "warm": []}
        for mode, count in (("cold", 1), ("warm", warm)):
            for _ in range(count):
                log(f"{mode} {name}")
                load = machine_load()
                result = {**side.run_once(), "load": load}
                log(f"  {result['total']:.1f} s (train {result['train']:.1f}, publish "
                    f"{result['publish']:.1f}; load {load['load1']:.2f})")  # fmt: skip
                runs[mode].append(result)
        runs["image_bytes"] = image_size(side.image if name == "guide" else f"{side.image}:latest")
        runs["registry_bytes"] = sum(registry.blobs().values())
        return runs
    finally:
        try:
            cold_engine(registry)
        finally:  # even when the engine is gone (another session restarted dockerd)
            registry.stop()


# -- the table ---------------------------------------------------------------------------------


def ratio(suite: float | None, guide: float | None) -> str:
    return f"{suite / guide:.2f}" if suite is not None and guide else "n/a"


def medians(data: dict, mode: str, side: str, part: str) -> float | None:
    return median([r[part] for r in data[mode][side]])


def render(data: dict) -> str:
    cfg, before, after = data["config"], data["load_before"]["load1"], data["load_after"]["load1"]
    flag = "" if max(before, after) < 1.5 else " (**a busy machine**: re-run it idle)"
    lines = [
        f"# The guide's whole pipeline on its Keras/TF model beside the suite's, {data['date']}",
        "",
        f"Machine: {data['machine']}. Commit {data['commit'][:12]}. {cfg['cold']} cold and "
        f"{cfg['warm']} warm runs per side, medians; run time {data['run_seconds'] / 60:.1f} "
        f"min. 1-minute load {before:.2f} before, {after:.2f} after{flag}.",
        "",
        "| measure | suite (`nox -s train` + `nox -s publish`) | guide's lines, Keras/TF model "
        "| suite / guide |",
        "|---|---|---|---|",
    ]
    for mode in ("cold", "warm"):
        count = min(len(data[mode]["guide"]), len(data[mode]["suite"]))
        for part, label in PARTS:
            suite, guide = (medians(data, mode, side, part) for side in ("suite", "guide"))
            lines.append(
                f"| {mode}: {label} (median of {count}) | {suite:.1f} s | {guide:.1f} s | "
                f"{ratio(suite, guide)} |"
            )
    for key, label in (("image_bytes", "image size"), ("registry_bytes", "registry stored")):
        suite, guide = data["suite"][key] / 1e6, data["guide"][key] / 1e6
        lines.append(f"| {label} | {suite:,.0f} MB | {guide:,.0f} MB | {ratio(suite, guide)} |")
    lines += ["", "Where the time goes (seconds, medians):", "", "| step | cold | warm |"]
    lines.append("|---|---|---|")
    for side in SIDES:
        for step in data["cold"][side][0]["steps"]:
            cold, warm = (
                median([r["steps"][step] for r in data[mode][side] if step in r["steps"]])
                for mode in ("cold", "warm")
            )
            warm_text = "n/a" if warm is None else f"{warm:.1f}"
            lines.append(f"| {side}: {step} | {cold:.1f} | {warm_text} |")
    runs = [r for mode in ("cold", "warm") for side in SIDES for r in data[mode][side]]
    cold_guide = data["cold"]["guide"]
    dvc = (
        "RECOMPUTED a stage in some run"
        if any(r["dvc_recomputed"] for r in runs)
        else "pulled every output (no stage ran)"
    )
    busy = "; ".join(data["load_after"]["busy"]) or "none at 10 % CPU or more"
    loads = "; ".join(
        f"{mode} {side} " + ", ".join(f"{r['load']['load1']:.2f}" for r in data[mode][side])
        for mode in ("cold", "warm")
        for side in SIDES
    )
    lines += [
        "",
        "Cold: a fresh clone, a new venv (guide) / no `.nox` (suite), an empty BentoML store, "
        "the build cache emptied and the images removed, a registry that never saw the image. "
        "The installs come from this machine's disk, not the network: the guide's pip took "
        f"{', '.join(str(r['pip_local']) for r in cold_guide)} wheel(s) from a local "
        "wheelhouse (no index; the untimed set-up downloaded them once) and downloaded "
        f"{', '.join(str(r['pip_downloaded']) for r in cold_guide)} in its cold run(s); the "
        "suite's uv reads its warm cache. "
        "Both image builds install their packages from PyPI inside the engine (the build "
        "cache, their cache mounts included, is emptied).",
        "",
        f"DVC: `dvc repro --pull` {dvc}. 1-minute load at each run's start: {loads}. "
        f"Busy at the end: {busy}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 cold + 1 warm run per side")
    parser.add_argument("--cold", type=int, help="cold runs per side (default 2)")
    parser.add_argument("--warm", type=int, help="warm runs after each cold one (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the clones and logs")
    parser.add_argument("--render", metavar="JSON", help="only print the table of a results file")
    args = parser.parse_args()
    if args.render:
        print(render(json.loads(Path(args.render).read_text())), end="")
        return
    images = ROOT / "data" / "raw"
    if not any(images.rglob("*.jpg")):
        raise SystemExit(f"error: no images in {images}: run `dvc pull data/raw` first")
    cold = args.cold or (1 if args.quick else 2)
    warm = args.warm if args.warm is not None else 1
    begin = time.perf_counter()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    scratch, logs = scratch_dir("anchor-pipeline", stamp)
    log(f"clones, registries and logs in {scratch}")
    data: dict = {**result_header(), "config": {"cold": cold, "warm": warm},
                  "cold": {s: [] for s in SIDES}, "warm": {s: [] for s in SIDES}}  # fmt: skip
    try:
        origin = guide_origin(images)
        data["guide_origin"] = {"path": str(origin), "commit": commit(origin)}
        if not pipeline.warmup_marker().exists():
            pipeline.warm_package_caches(scratch, logs)
            pipeline.warmup_marker().touch()
        for index in range(cold):
            for name in SIDES if index % 2 == 0 else SIDES[::-1]:
                # warm runs after the last cold run of each side, as bench/pipeline.py
                runs = cold_then_warm(name, origin, scratch, logs, warm if index == cold - 1 else 0)
                data["cold"][name] += runs["cold"]
                data["warm"][name] += runs["warm"]
                data[name] = {k: runs[k] for k in ("image_bytes", "registry_bytes")}
    except BaseException:
        partial = write_partial("anchor-pipeline", stamp, data)
        log(f"failed: what was measured is in {partial}; clones and logs kept in {scratch}")
        raise
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    data["load_after"] = machine_load()
    data["run_seconds"] = time.perf_counter() - begin
    text = render(data)
    print(text, end="")
    write_results("anchor-pipeline", stamp, data, text)
    minutes = data["run_seconds"] / 60
    log(f"wrote {RESULTS}/anchor-pipeline-{stamp}.md and .json in {minutes:.1f} min")


if __name__ == "__main__":
    main()
