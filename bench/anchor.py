"""The guide's own service as a serving anchor, beside the suite's image in the same run.

    python bench/anchor.py [--suite-image REF] [--seconds N] [--reps N]
    python bench/anchor.py --render bench/results/anchor-latest.json   # only print the table

Issue 13, goal 4. The anchor is the guide's model kind served the guide's way (bench/anchor/):
a Keras CNN in TensorFlow trained on this repository's images (train_keras.py), saved with
bentoml.keras and exported as a .bentomodel, then, as the guide's CI does from a fresh BentoML
store: `bentoml models import`, `bentoml build`, `bentoml containerize` (BentoML's default
image settings). That runs in the anchor's own environment (bench/anchor/requirements.txt, made
with uv under /var/tmp/bench-anchor/), and is cached: the image is tagged
bench-anchor-guide:<key>, the key hashing the anchor's files and the images of the split, so a
rerun with nothing changed reuses it (the output says so).

The suite's image is taken as it is (default: the local 127.0.0.1:5050/celestial-bodies-
classifier:latest, only read from the local engine). Both are measured in the same run,
alternating (the order flips every repetition): each repetition starts a fresh container of
each image and measures
- cold start: `docker run` until GET /readyz answers 200 (median over repetitions);
- memory (`docker stats`): right after ready, idle after a 200-request warm-up, max under load;
- POST /predict (a real JPEG, multipart field `image`: the same body for both) with `hey` at
  concurrency 1 and 8 for --seconds each: req/s, p50, p99, non-2xx answers;
- once (first repetition): the prediction for each held-out JPEG of the suite's split
  (params.yaml prepare.seed and split, 300 images), sent one by one: the served accuracy.
Image sizes come from `docker image inspect`. Beside each figure: the 1-minute load average
and the busy processes of the machine (it may be shared). Containers are removed on any exit.
Writes bench/results/anchor-<time>.{json,md} and anchor-latest.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    DOCKER,
    ROOT,
    commit,
    docker,
    image_size,
    log,
    machine,
    machine_load,
    median,
    run,
    write_results,
)
from serving import Container, MemorySampler, hey, multipart, predict

# The example model is not installed (only the suite is): src/ on the path, as DVC's
# `python src/<stage>.py` has it.
sys.path.insert(0, str(ROOT / "src"))

from celestial.image_folder import list_images
from celestial.params import load_params
from celestial.split import stratified_split

ANCHOR = ROOT / "bench" / "anchor"
ANCHOR_FILES = ("train_keras.py", "serve_keras.py", "bentofile.yaml", "requirements.txt")
# Not under a hidden folder such as ~/.cache: `bentoml build` refuses a build context there
# ("Accessing hidden files is not allowed").
CACHE = Path("/var/tmp/bench-anchor")
SUITE_IMAGE = "127.0.0.1:5050/celestial-bodies-classifier:latest"
ANCHOR_REPO = "bench-anchor-guide"
BENTO = "celestial_bodies_classifier"  # the guide's service name (also the suite's)
MODEL_ARCHIVE = "celestial_bodies_classifier_model.bentomodel"
NAMES = ("suite", "guide")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------- the data set
def split_images() -> dict[str, list[tuple[Path, str]]]:
    """The suite's split of data/raw (celestial.split, seeds from params.yaml): the anchor
    trains on its train part and both services are scored on its test part."""
    prepare = load_params(ROOT / "params.yaml", "prepare")
    paths, labels, class_names = list_images(ROOT / "data" / "raw")
    train_idx, test_idx = stratified_split(labels, float(prepare["split"]), int(prepare["seed"]))
    return {
        part: [(paths[i], class_names[labels[i]]) for i in idx]
        for part, idx in (("train", train_idx), ("val", test_idx))
    }


def anchor_key(split: dict[str, list[tuple[Path, str]]]) -> str:
    """What the anchor image is made from: its files and the bytes of every image it trains
    and validates on (10 MB: hashed in well under a second)."""
    digest = hashlib.sha256()
    for name in ANCHOR_FILES:
        digest.update(f"{name}\0{sha256((ANCHOR / name).read_bytes())}\n".encode())
    for part, items in split.items():
        for path, label in items:
            digest.update(f"{part}/{label}/{path.name}\0{sha256(path.read_bytes())}\n".encode())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------- the anchor build
def anchor_venv() -> Path:
    """The anchor's Python environment (TensorFlow, BentoML), made once per requirements file.
    uv, as the suite's own sessions: it resolves from PyPI, several times faster than pip."""
    requirements = ANCHOR / "requirements.txt"
    venv = CACHE / f"venv-{sha256(requirements.read_bytes())[:12]}"
    done = venv / ".complete"  # an interrupted install is redone, never half-used
    if done.exists():
        return venv
    log(f"making the anchor's environment {venv} (TensorFlow: about 1.5 GB, once)")
    shutil.rmtree(venv, ignore_errors=True)
    run(["uv", "venv", "--python", "3.11", str(venv)], timeout=600)
    run(
        ["uv", "pip", "install", "--python", str(venv / "bin" / "python"), "-r", str(requirements)],
        timeout=3600,
    )
    done.write_text("")
    return venv


def build_anchor(split: dict[str, list[tuple[Path, str]]], key: str) -> dict[str, Any]:
    """Train, save, export, import, build and containerize the guide's way; or reuse the image
    already built from the same key."""
    image = f"{ANCHOR_REPO}:{key}"
    work = CACHE / key
    record = work / "anchor.json"
    if record.exists() and docker("image", "inspect", image, check=False):
        log(f"anchor: reusing the cached build {image} (same anchor files and images: {work})")
        return {**json.loads(record.read_text()), "cached": True}

    venv = anchor_venv()
    shutil.rmtree(work, ignore_errors=True)
    (work / "src").mkdir(parents=True)
    for name in ANCHOR_FILES:
        shutil.copy2(ANCHOR / name, work / "src" / name)
    for part, items in split.items():
        for path, label in items:
            target = work / "prepared" / part / label / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    log_file = work / "build.log"
    bentoml = str(venv / "bin" / "bentoml")
    # The anchor's environment first, then Debian's Docker 20.10 client (the one that builds
    # without buildx: bentoml containerize calls the `docker` it finds on PATH).
    path = f"{venv / 'bin'}:/usr/bin:{os.environ['PATH']}"
    seconds: dict[str, float] = {}

    def step(name: str, command: list[str], store: str, timeout: float = 1200) -> str:
        log(f"anchor: {name} (log: {log_file})")
        extra = {"BENTOML_HOME": str(work / store), "PATH": path, "PYTHONDONTWRITEBYTECODE": "1"}
        seconds[name], output = run(
            command, cwd=work, extra_env=extra, log_file=log_file, timeout=timeout
        )
        return output

    # The guide's train stage: saves to a (here private) store and exports the .bentomodel.
    step(
        "train",
        [str(venv / "bin" / "python"), "src/train_keras.py", "prepared", "model"],
        "bentoml-train",
    )
    # The guide's CI from a fresh store: import the archive, build the bento, containerize it.
    archive = work / "model" / MODEL_ARCHIVE
    step("models import", [bentoml, "models", "import", str(archive)], "bentoml-ci")
    step("build", [bentoml, "build", "src"], "bentoml-ci")
    step(
        "containerize",
        [bentoml, "containerize", f"{BENTO}:latest", "--image-tag", image],
        "bentoml-ci",
        timeout=3600,
    )
    built = {
        "image": image,
        "key": key,
        "built": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seconds": seconds,
        "train": json.loads((work / "model" / "metrics.json").read_text()),
        "bentomodel_bytes": archive.stat().st_size,
    }
    record.write_text(json.dumps(built, indent=1) + "\n")
    return {**built, "cached": False}


# ---------------------------------------------------------------------------- measuring
def served_accuracy(url: str, held_out: list[tuple[Path, str]]) -> dict[str, Any]:
    """Each held-out JPEG sent through the service: the accuracy a client sees (decoding,
    resizing and the model as served, not as evaluated in training)."""
    correct = failed = 0
    for jpeg, label in held_out:
        try:
            body = multipart("image", jpeg.name, jpeg.read_bytes())
            correct += predict(url, body).get("prediction") == label
        except (OSError, ValueError):
            failed += 1
    return {"images": len(held_out), "correct": correct, "failed": failed,
            "accuracy": correct / len(held_out)}  # fmt: skip


def measure(image: str, body: Path, seconds: int, held_out: list | None) -> dict[str, Any]:
    """One fresh container of the image: cold start, memory, then the loads."""
    result: dict[str, Any] = {"load_at_start": machine_load()}
    with Container(image) as container:
        result["cold_start_s"] = container.start()
        result["ready_mb"] = container.memory_mb()
        hey(container.url, body, 2, requests=200)  # warm-up: first requests load lazily
        result["idle_mb"] = container.memory_mb()
        if held_out:
            result["accuracy"] = served_accuracy(container.url, held_out)
        for concurrency in (1, 8):
            load = machine_load()
            sampler = MemorySampler(container)
            sampler.start()
            try:
                run_ = hey(container.url, body, concurrency, seconds=seconds)
            finally:
                samples = sampler.stop()
            run_["memory_mb"] = max((m for _, m in samples), default=None)
            run_["load"] = load
            result[f"c{concurrency}"] = run_
    return result


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the repetitions of one image (max for memory under load)."""

    def med(get) -> float | None:
        return median([v for v in (get(r) for r in runs) if v is not None])

    summary: dict[str, Any] = {
        "cold_start_s": med(lambda r: r["cold_start_s"]),
        "cold_start_all_s": [r["cold_start_s"] for r in runs],
        "cold_start_load1": med(lambda r: r["load_at_start"]["load1"]),
        "ready_mb": med(lambda r: r["ready_mb"]),
        "idle_mb": med(lambda r: r["idle_mb"]),
        "load_mb": max((r[f"c{c}"]["memory_mb"] or 0 for r in runs for c in (1, 8)), default=None),
        "accuracy": next((r["accuracy"] for r in runs if "accuracy" in r), None),
    }
    for c in (1, 8):
        summary[f"c{c}"] = {
            key: med(lambda r, key=key, c=c: r[f"c{c}"][key]) for key in ("rps", "p50_ms", "p99_ms")
        }
        summary[f"c{c}"]["errors"] = sum(r[f"c{c}"]["errors"] for r in runs)
        summary[f"c{c}"]["requests"] = sum(r[f"c{c}"]["requests"] for r in runs)
        summary[f"c{c}"]["load1"] = med(lambda r, c=c: r[f"c{c}"]["load"]["load1"])
    return summary


def largest_layers(ref: str, count: int = 3) -> list[dict[str, Any]]:
    """Where an image's bytes are: its biggest layers and the build step of each."""
    history = docker("history", "--no-trunc", "--human=false", "--format", "{{json .}}", ref)
    layers = []
    for line in history.splitlines():
        layer = json.loads(line)
        # A RUN step reads "RUN |4 ARG=... /bin/sh -c COMMAND # buildkit": keep COMMAND.
        step = layer["CreatedBy"].split("/bin/sh -c ", 1)[-1].replace("# buildkit", "").strip()
        layers.append({"bytes": int(layer["Size"]), "step": step[:160] or "(base image)"})
    return sorted(layers, key=lambda layer: -layer["bytes"])[:count]


def layer_kind(step: str) -> str:
    for needle, kind in (("pip install", "Python packages"), ("apt-get", "apt packages")):
        if needle in step:
            return kind
    return "base image" if step == "(base image)" else step[:40]


def image_facts(ref: str) -> dict[str, Any]:
    inspect = json.loads(docker("image", "inspect", ref))[0]
    labels = inspect["Config"].get("Labels") or {}
    return {
        "ref": ref,
        "id": inspect["Id"],
        "created": inspect["Created"],
        "size_bytes": image_size(ref),
        "largest_layers": largest_layers(ref),
        "revision": labels.get("org.opencontainers.image.revision"),
        "model_tag": labels.get("model.tag"),
        "model_val_acc": labels.get("model.metrics.val_acc"),
    }


# ---------------------------------------------------------------------------- the table
def ratio(suite: float | None, guide: float | None) -> str:
    return f"{suite / guide:.2f}x" if suite is not None and guide else "n/a"


def render(results: dict[str, Any]) -> str:
    """The Markdown report of a results dict (what anchor-*.md holds)."""
    s, g = results["summary"]["suite"], results["summary"]["guide"]
    size = {n: results["images"][n]["size_bytes"] / 1e6 for n in NAMES}
    acc = {n: results["summary"][n]["accuracy"] for n in NAMES}

    def loads(key: str) -> str:
        return f"{s[key]:.2f} / {g[key]:.2f}"

    def c_loads(c: int) -> str:
        return f"{s[f'c{c}']['load1']:.2f} / {g[f'c{c}']['load1']:.2f}"

    rows = [
        ("image size (MB)", size["suite"], size["guide"], "{:,.0f}", "-"),
        ("cold start to /readyz 200 (s, median)", s["cold_start_s"], g["cold_start_s"],
         "{:.2f}", loads("cold_start_load1")),
        ("memory when ready (MiB)", s["ready_mb"], g["ready_mb"], "{:.0f}",
         loads("cold_start_load1")),
        ("memory idle, after warm-up (MiB)", s["idle_mb"], g["idle_mb"], "{:.0f}", "-"),
        ("memory under load (MiB, max)", s["load_mb"], g["load_mb"], "{:.0f}", c_loads(8)),
    ]  # fmt: skip
    for c in (1, 8):
        rows += [
            (f"req/s, c={c}", s[f"c{c}"]["rps"], g[f"c{c}"]["rps"], "{:,.0f}", c_loads(c)),
            (f"p50 ms, c={c}", s[f"c{c}"]["p50_ms"], g[f"c{c}"]["p50_ms"], "{:.1f}", c_loads(c)),
            (f"p99 ms, c={c}", s[f"c{c}"]["p99_ms"], g[f"c{c}"]["p99_ms"], "{:.1f}", c_loads(c)),
            (f"non-2xx answers, c={c}", s[f"c{c}"]["errors"], g[f"c{c}"]["errors"], "{:d}", "-"),
        ]
    if acc["suite"] and acc["guide"]:
        rows.append(
            (f"held-out accuracy, served ({acc['suite']['images']} JPEGs)",
             acc["suite"]["accuracy"], acc["guide"]["accuracy"], "{:.3f}", "-")
        )  # fmt: skip
    anchor = results["anchor"]
    train = anchor["train"]
    lines = [
        f"# The guide's Keras/TF service beside the suite's, {results['date']}",
        "",
        f"Commit {results['commit']}; {results['machine']}. {results['reps']} repetitions, "
        "alternating (a fresh container of each image per repetition, the order flipped each "
        f"time); `hey` loads of {results['seconds']} s on the same machine; medians.",
        "",
        "| measure | suite | guide's Keras/TF service | suite / guide "
        "| load 1 min (suite / guide) |",
        "|---|---|---|---|---|",
    ]
    for label, suite, guide, fmt, load in rows:
        cells = [fmt.format(v) if v is not None else "n/a" for v in (suite, guide)]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {ratio(suite, guide)} | {load} |")
    busy = sorted(
        {
            b.split(" ", 2)[1]
            for n in NAMES
            for r in results["runs"][n]
            for m in (r["load_at_start"], r["c1"]["load"], r["c8"]["load"])
            for b in m["busy"]
            if "/home/bentoml/bento" not in b  # a service's own `bentoml serve` process
        }
    )
    suite_image, guide_image = results["images"]["suite"], results["images"]["guide"]
    lines += [
        "",
        f"- suite: `{suite_image['ref']}` ({suite_image['id'][7:19]}, revision "
        f"{suite_image['revision']}, model {suite_image['model_tag']}, val_acc label "
        f"{suite_image['model_val_acc']}): ONNX Runtime MLP, 2 workers (src/serve.py).",
        f"- guide: `{guide_image['ref']}` ({guide_image['id'][7:19]}; bench/anchor/): Keras CNN "
        f"in TensorFlow {train['tensorflow']} (Keras {train['keras']}), {train['epochs']} epochs, "
        f"val_acc in training {train['val_acc']:.3f}; BentoML defaults (1 worker). "
        + ("Reused from the cache, built " if anchor["cached"] else "Built in this run, ")
        + f"{anchor['built']}: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in anchor["seconds"].items())
        + ".",
        *(
            f"- largest layers, {n}: "
            + ", ".join(
                f"{layer['bytes'] / 1e6:,.0f} MB {layer_kind(layer['step'])}"
                for layer in results["images"][n].get("largest_layers", [])
            )
            + "."
            for n in NAMES
            if results["images"][n].get("largest_layers")
        ),
        f"- cold starts (s): suite {', '.join(f'{v:.2f}' for v in s['cold_start_all_s'])}; "
        f"guide {', '.join(f'{v:.2f}' for v in g['cold_start_all_s'])}.",
        f"- requests answered under load: suite {s['c1']['requests'] + s['c8']['requests']:,}, "
        f"guide {g['c1']['requests'] + g['c8']['requests']:,}.",
        f"- other busy processes seen (>= 10 % CPU): {', '.join(busy) or 'none'}.",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite-image", default=SUITE_IMAGE)
    parser.add_argument("--seconds", type=int, default=10, help="each hey load (default 10)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--jpeg", default=str(ROOT / "data/raw/Mars/Mars_1.jpg"))
    parser.add_argument("--render", metavar="JSON", help="only print the table of a results file")
    args = parser.parse_args()
    if args.render:
        sys.stdout.write(render(json.loads(Path(args.render).read_text())))
        return
    # `kill` (SIGTERM) unwinds like Ctrl-C: the `with Container` blocks remove the containers.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    begin = time.perf_counter()

    if not docker("image", "inspect", args.suite_image, check=False):
        sys.exit(f"no local image {args.suite_image}: build it (`invoke build`) or --suite-image")
    split = split_images()
    anchor = build_anchor(split, anchor_key(split))
    images = {"suite": args.suite_image, "guide": anchor["image"]}
    for name, ref in images.items():
        log(f"{name}: {ref}, {image_size(ref) / 1e6:,.0f} MB")

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    body = CACHE / f"body-{stamp}.multipart"
    jpeg = Path(args.jpeg)
    body.write_bytes(multipart("image", jpeg.name, jpeg.read_bytes()))
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": machine(),
        "docker_client": DOCKER,
        "reps": args.reps,
        "seconds": args.seconds,
        "jpeg": str(jpeg.relative_to(ROOT)) if jpeg.is_relative_to(ROOT) else str(jpeg),
        "anchor": anchor,
        "images": {name: image_facts(ref) for name, ref in images.items()},
        "runs": {name: [] for name in NAMES},
    }
    try:
        for rep in range(args.reps):
            for name in NAMES if rep % 2 == 0 else NAMES[::-1]:
                held_out = split["val"] if rep == 0 else None
                r = measure(images[name], body, args.seconds, held_out)
                results["runs"][name].append(r)
                log(
                    f"rep {rep} {name:>5}: cold start {r['cold_start_s']:.2f} s, idle "
                    f"{r['idle_mb']:.0f} MiB; c=1 {r['c1']['rps']:.0f} req/s p99 "
                    f"{r['c1']['p99_ms']:.1f} ms; c=8 {r['c8']['rps']:.0f} req/s p99 "
                    f"{r['c8']['p99_ms']:.1f} ms, {r['c8']['memory_mb']:.0f} MiB"
                    + (f"; accuracy {r['accuracy']['accuracy']:.3f}" if "accuracy" in r else "")
                )
    finally:
        body.unlink(missing_ok=True)

    results["summary"] = {name: summarize(results["runs"][name]) for name in NAMES}
    results["wall_s"] = time.perf_counter() - begin
    md = render(results)
    write_results("anchor", stamp, results, md)
    sys.stdout.write(md)
    log(f"done in {results['wall_s']:.0f} s: bench/results/anchor-{stamp}.{{json,md}}")


if __name__ == "__main__":
    main()
