"""Size sweep: how the pipeline's cost grows with the model's and the data's size.

    python bench/sweep.py                              # models 1/100/500 MB, data 6,000/60,000
    python bench/sweep.py --models 1,100 --images 6000 # the points that fit the time
    python bench/sweep.py --render FILE                # only print the table of an earlier run

Issue 24, goal 4, "cost grows with what changed, not with what exists". Every other figure of
bench/ is for the example's 1.46 MB model and its small data set; this one varies both, and
measures the suite beside the guide's lines at each point, in the same run:

- model: the trained archive padded to 100 MB / 500 MB with one extra member,
  ``extra-weights.bin``, of random (incompressible) bytes inside the ``.bentomodel`` the
  service's image carries (the service does not read it: it only weighs what a bigger
  model's weights would weigh in the archive, the store, the image layer and the registry).
  The "1 MB" point is the real archive, unpadded. Per size, two publishes from a cold engine
  (layers.py's `publish`: build cache emptied, this bench's images removed, an empty BentoML
  store): a first publish to an empty registry, then a model-only change (``train.seed`` + 1,
  ``dvc repro``, new random padding of the same size) to the registry holding the first image.
  suite: `invoke import-model bento containerize push attest` (attest moves `latest`, the
  next build's layer cache); guide: bench/guide_baseline.sh's
  import, build, containerize, `docker push --all-tags`. Bytes: what the registry was sent
  (a byte-counting proxy in front of it, layers.py's BenchRegistry), and its new blobs.
- data: ``generate.images_per_class`` set to images/10 and ``dvc repro`` (untimed), then the
  train job's DVC transfers to an S3-compatible remote (moto's server, as the tests use it,
  behind the same byte-counting proxy): a push of every output to an empty prefix, and a
  pull into the clone with its DVC cache and outputs removed (a fresh runner).
  suite: `invoke push-data`, `invoke pull` (`dvc push|pull --jobs <suite.dvc_jobs>`); guide:
  `dvc push`, `dvc pull`.

The machine is shared (2 cores, other sessions run tests): each result records the load
before and after and what else was busy, and each suite figure stands beside the guide's
measured at the same point, minutes apart, as a ratio. Results are written after every point
(bench/results/sweep-<time>.{json,md}, sweep-latest.*, and sweep-latest.png, the plot), so
a run cut short keeps what it measured; the points not run are listed in the result.
Run it with the Python of an environment made from requirements-freeze.txt plus the project
(nox's tests environment: invoke, dvc, bentoml, moto, matplotlib), from a committed worktree.
Large files go to a scratch directory under /tmp, deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

from common import (
    RESULTS,
    ROOT,
    TOOLS,
    git_commit,
    log,
    machine_load,
    result_header,
    run,
    scratch_dir,
    trust_a_new_key,
    write_results,
)
from layers import ARCHIVE, BenchRegistry, CountingProxy, cold_engine, publish

MODEL_MB = (1, 100, 500)
IMAGES = (6000, 60000)
PADDING = "extra-weights.bin"  # the archive member that stands for a bigger model's weights
MB = 1_000_000
S3_KEY = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret"}  # moto's


# -- pure helpers (tests/unit/test_bench_results.py) --------------------------------------------


def padding_bytes(archive_bytes: int, target_mb: int) -> int:
    """Random bytes to add so that the archive weighs ``target_mb`` MB; 0 when it already does
    (the real model is the smallest point)."""
    return max(0, target_mb * MB - archive_bytes)


def ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}" if value is not None and base else "n/a"


def set_images_per_class(params: str, per_class: int) -> str:
    """params.yaml's text with ``generate.images_per_class`` set (comments kept)."""
    head, generate, tail = re.split(
        r"^(generate:\n(?:[ \t]+.*\n)+)", params, maxsplit=1, flags=re.M
    )
    changed, count = re.subn(
        r"^(\s+images_per_class:\s*)\d+", rf"\g<1>{per_class}", generate, flags=re.M
    )
    if count != 1:
        raise ValueError("params.yaml has no generate.images_per_class: update bench/sweep.py")
    return head + changed + tail


def interleave(models: list[int], images: list[int]) -> list[tuple[str, int]]:
    """The points in the order run: each sweep's smallest first, the two alternating."""
    plan: list[tuple[str, int]] = []
    for index in range(max(len(models), len(images))):
        plan += [("model", m) for m in sorted(models)[index : index + 1]]
        plan += [("images", n) for n in sorted(images)[index : index + 1]]
    return plan


# -- the model sweep -------------------------------------------------------------------------------


def pad_archive(archive: Path, target_mb: int) -> int:
    """Rewrite the .bentomodel with ``PADDING`` (fresh random bytes) sized so that the archive
    weighs ``target_mb`` MB, in the archive's own compression (BentoML reads it by that);
    an archive already that large is left as it is. Returns its size."""
    with tarfile.open(archive, "r:*") as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar]
    unpadded = [(m, data) for m, data in members if m.name.lstrip("./") != PADDING]
    if len(unpadded) == len(members) and not padding_bytes(archive.stat().st_size, target_mb):
        return archive.stat().st_size  # the real model, as trained
    members = unpadded
    compression = archive_compression(archive.read_bytes()[:6])
    rebuilt = archive.with_suffix(".tmp")
    _write_tar(rebuilt, members, compression, 0)
    extra = padding_bytes(rebuilt.stat().st_size, target_mb)
    if extra:
        _write_tar(rebuilt, members, compression, max(0, extra - 1024))  # the member's header
    rebuilt.replace(archive)
    return archive.stat().st_size


def archive_compression(magic: bytes) -> str:
    """tarfile's name for the compression an archive starts with: xz, gz, bz2, or "" (none)."""
    for prefix, name in ((b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b", "gz"), (b"BZh", "bz2")):
        if magic.startswith(prefix):
            return name
    return ""


def _write_tar(path: Path, members: list, compression: str, padding: int) -> None:
    import io

    # The fastest level: random bytes do not compress anyway, and xz's default would take
    # minutes for 500 MB.
    level = {"xz": {"preset": 0}, "gz": {"compresslevel": 1}, "bz2": {"compresslevel": 1}}
    mode = f"w:{compression}" if compression else "w"
    with tarfile.open(path, mode, **level.get(compression, {})) as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
        if padding:
            info = tarfile.TarInfo(PADDING)
            info.size, info.mtime, info.mode = padding, 0, 0o644
            tar.addfile(info, io.BytesIO(os.urandom(padding)))


def dvc(clone: Path, *args: str, extra: dict | None = None) -> str:
    return run([str(TOOLS / "dvc"), *args], cwd=clone, extra_env=extra, timeout=3600)[1]


def new_clone(scratch: Path, name: str) -> Path:
    clone = scratch / name
    run(["git", "clone", "--quiet", str(ROOT), str(clone)])
    for key, value in (("user.email", "bench@localhost"), ("user.name", "bench")):
        run(["git", "config", key, value], cwd=clone)
    return clone


def sized_model(clone: Path, target_mb: int, seed_step: int) -> dict:
    """Retrain with ``train.seed`` moved by ``seed_step`` (0: as committed), pad the archive,
    record it in dvc.lock (`dvc commit`) and commit: publish refuses an unrecorded model."""
    if seed_step:
        params = clone / "params.yaml"
        text = params.read_text()
        head, tail = text.split("train:", 1)
        seed = int(re.search(r"^  seed: (\d+)$", tail, re.M)[1])
        params.write_text(head + "train:" + tail.replace(f"seed: {seed}", f"seed: {seed + 1}", 1))
    dvc(clone, "repro", "train")
    size = pad_archive(clone / ARCHIVE, target_mb)
    dvc(clone, "commit", "--force", "train")
    git_commit(clone, f"bench: model archive {target_mb} MB (seed step {seed_step})")
    return {"archive_bytes": size}


def model_point(scratch: Path, clone: Path, target_mb: int, logs: Path) -> dict:
    """A cold publish and a model-only change at one archive size, each side its own registry."""
    registries = {side: BenchRegistry(scratch / f"reg-{target_mb}-{side}") for side in SIDES}
    hosts = [r.host for r in registries.values()]
    point: dict = {"target_mb": target_mb}
    try:
        for scenario, seed_step in (("cold", 0), ("model-only", 1)):
            point[scenario] = {"model": sized_model(clone, target_mb, seed_step)}
            for side in SIDES:
                log(f"model {target_mb} MB, {scenario} publish: {side}")
                label = f"m{target_mb}-{scenario}"
                result = publish(side, clone, registries[side], hosts, logs, label)
                result.pop("layers")
                point[scenario][side] = result
                log(f"  {result['seconds']:.1f} s, received {mb(result['received_bytes'])}")
    finally:
        for registry in registries.values():
            registry.stop()
        cold_engine(hosts)
        for side in SIDES:
            shutil.rmtree(scratch / f"reg-{target_mb}-{side}", ignore_errors=True)
    return point


SIDES = ("suite", "guide")


# -- the data sweep ----------------------------------------------------------------------------


class S3Remote:
    """moto's S3 server (the tests' S3-compatible remote) with bucket ``dvc``, behind a
    byte-counting proxy: DVC talks to the proxy."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [str(TOOLS / "moto_server"), "-H", "127.0.0.1", "-p", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        port = None
        for line in self.process.stdout or ():
            found = re.search(r"Running on http://127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found[1])
                break
        if port is None:
            raise RuntimeError("moto_server did not start")
        threading.Thread(target=(self.process.stdout or sys.stdin).read, daemon=True).start()
        self.proxy = CountingProxy(port)
        self.endpoint = f"http://127.0.0.1:{self.proxy.port}"
        import boto3

        boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=S3_KEY["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_KEY["AWS_SECRET_ACCESS_KEY"],
        ).create_bucket(Bucket="dvc")  # fmt: skip

    def stop(self) -> None:
        self.proxy.close()
        self.process.terminate()
        self.process.wait(timeout=10)


def transfer(side: str, verb: str, clone: Path, s3: S3Remote, logs: Path) -> dict:
    """One timed `dvc push` / `dvc pull` of the side, with the bytes the remote received/sent."""
    if side == "suite":
        command = [str(TOOLS / "invoke"), "push-data" if verb == "push" else "pull"]
    else:
        command = [str(TOOLS / "dvc"), verb]
    before = s3.proxy.counts()
    seconds, _ = run(
        command, cwd=clone, extra_env=S3_KEY, log_file=logs / f"dvc-{side}.log", timeout=3600
    )
    received, sent = (now - then for now, then in zip(s3.proxy.counts(), before, strict=True))
    return {"seconds": seconds, "bytes": received if verb == "push" else sent}


def empty_workspace(clone: Path) -> None:
    """A fresh runner: no DVC cache, none of the pipeline's outputs."""
    for path in (".dvc/cache", "data/raw", "data/prepared", "model"):
        shutil.rmtree(clone / path, ignore_errors=True)


def data_point(scratch: Path, images: int, logs: Path) -> dict:
    clone = new_clone(scratch, f"data-{images}")
    params = clone / "params.yaml"
    params.write_text(set_images_per_class(params.read_text(), images // 10))
    log(f"data {images} images: dvc repro (untimed)")
    repro_seconds, _ = run([str(TOOLS / "dvc"), "repro"], cwd=clone, timeout=7200)
    git_commit(clone, f"bench: {images} images")
    files = sum(1 for _ in (clone / "data").rglob("*") if _.is_file())
    point: dict = {"images": images, "files": files, "repro_seconds": repro_seconds}
    s3 = S3Remote()
    try:
        for side in SIDES:
            # each side its own empty prefix: a full upload, as on a new remote
            dvc(clone, "remote", "add", "--local", "-f", "-d", "s3", f"s3://dvc/{side}-{images}")
            dvc(clone, "remote", "modify", "--local", "s3", "endpointurl", s3.endpoint)
            log(f"data {images} images: {side} push")
            push = transfer(side, "push", clone, s3, logs)
            empty_workspace(clone)
            log(f"data {images} images: {side} pull")
            pull = transfer(side, "pull", clone, s3, logs)
            point[side] = {"push": push, "pull": pull}
            log(f"  push {push['seconds']:.1f} s, pull {pull['seconds']:.1f} s")
    finally:
        s3.stop()
        shutil.rmtree(clone, ignore_errors=True)
    return point


# -- the mount check -------------------------------------------------------------------------------


def mount_check(scratch: Path, clone: Path, logs: Path) -> dict:
    """Does docker mount a layer that exists in another repository of the same registry?
    The guide's image is pushed first, then the suite's (same base layers), to one registry
    logging every request; its log shows `POST .../blobs/uploads/?mount=...&from=...`."""
    registry = BenchRegistry(scratch / "reg-mount", log_level="info")
    try:
        sized_model(clone, 1, 1)
        for side in ("guide", "suite"):
            log(f"mount check: {side} publishes")
            publish(side, clone, registry, [registry.host], logs, f"mount-{side}")
        text = registry.log_text()
    finally:
        registry.stop()
        cold_engine([registry.host])
    suite_uploads = [
        line for line in text.splitlines()
        if "response completed" in line and "http.request.method=POST" in line
        and "blobs/uploads/" in line
        and "celestial-bodies-classifier/blobs" in line
    ]  # fmt: skip
    mounted = [line for line in suite_uploads if "mount=" in line]
    return {
        "suite_upload_starts": len(suite_uploads),
        "mount_requests": len(mounted),
        "example": (mounted or suite_uploads or [""])[0][:400],
    }


def combine(data_stamp: str, model_stamps: list[str], mount_stamp: str = "") -> None:
    """One result from runs made side by side when one would not fit the time: the data
    points of the first, the model points of the others (a later run's point replaces an
    earlier one of the same size), the mount check of ``mount_stamp``
    (default: the first of these runs that has one). Each figure's ratio stays within one
    point of one run; every run's load and context are kept."""
    stamps = [data_stamp, *model_stamps]
    runs = {s: json.loads((RESULTS / f"sweep-{s}.json").read_text()) for s in stamps}
    first = runs[data_stamp]
    # A size measured again in a later run (say, on a quieter machine) replaces the earlier.
    by_size = {p["target_mb"]: p for stamp in model_stamps for p in runs[stamp]["models"]}
    models = list(by_size.values())
    mount_runs = [mount_stamp] if mount_stamp else [s for s in stamps if runs[s].get("mount")]
    mount = None
    if mount_runs:
        source = runs.get(mount_runs[0]) or json.loads(
            (RESULTS / f"sweep-{mount_runs[0]}.json").read_text()
        )
        mount = {**source["mount"], "run": mount_runs[0], "date": source["date"]}
    data = {
        **first,
        "mount": mount,
        "models": sorted(models, key=lambda point: point["target_mb"]),
        "runs": {
            stamp: {
                key: run_data.get(key)
                for key in ("date", "commit", "context", "load_before", "load_after", "run_seconds")
            }
            for stamp, run_data in runs.items()
        },
    }
    data["load_after"] = max(
        (r["load_after"] for r in runs.values()), key=lambda load: load["load1"]
    )
    save(f"{model_stamps[-1]}-combined", data)
    print(render(data))


def add_mount_check(stamp: str) -> None:
    """The mount check alone, added to an earlier run's result (a run cut short before it)."""
    data = json.loads((RESULTS / f"sweep-{stamp}.json").read_text())
    scratch, logs = scratch_dir("sweep-mount", stamp)
    try:
        data["mount"] = mount_check(scratch, new_clone(scratch, "model"), logs)
        data["mount"]["date"] = time.strftime("%Y-%m-%d %H:%M %Z")
        data["load_after"] = machine_load()
        save(stamp, data)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(render(data))


# -- the result ----------------------------------------------------------------------------------


def mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value / MB:,.1f} MB"


def not_run(data: dict) -> list[str]:
    """The sweep's points that have no complete figure in ``data``."""
    models = {point["target_mb"] for point in data["models"]}
    images = {point["images"] for point in data["data"]}
    return [f"model {m} MB" for m in MODEL_MB if m not in models] + [
        f"{n:,} images" for n in IMAGES if n not in images
    ]


# What the results of runs before ``--context`` existed say about the machine.
NOT_IDLE = "Not idle (2 cores shared with other sessions' tests)"


def render(data: dict) -> str:
    lines = [
        f"## Cost against size, {data['date']}",
        "",
        f"Machine: {data['machine']}. Commit {data['commit'][:12]}. "
        + (
            ""  # a combined result: each run's context and load follow
            if data.get("runs")
            else f"{data.get('context') or NOT_IDLE}: "
            f"1-minute load {data['load_before']['load1']:.2f} before, "
            f"{(data.get('load_after') or {}).get('load1', float('nan')):.2f} after "
            "(the run's own processes included). "
        )
        + "Each suite figure is beside the guide's at the same point, minutes apart, and "
        "their ratio.",
        "",
    ]
    if data["models"]:
        lines += [
            "Model archive padded with random bytes (`extra-weights.bin` in the `.bentomodel`); "
            "publish from a cold engine: *cold* to an empty registry, *model-only* a retrain "
            "(`train.seed` + 1) with new padding, to the registry holding the first image.",
            "",
            "| archive | publish | suite | guide | suite / guide | registry received: "
            "suite | guide | received / archive: suite | guide |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for point in data["models"]:
            for scenario in ("cold", "model-only"):
                item = point[scenario]
                size = item["model"]["archive_bytes"]
                s, g = item["suite"], item["guide"]
                lines.append(
                    f"| {mb(size)} | {scenario} | {s['seconds']:.1f} s | {g['seconds']:.1f} s | "
                    f"{ratio(s['seconds'], g['seconds'])} | {mb(s['received_bytes'])} | "
                    f"{mb(g['received_bytes'])} | {ratio(s['received_bytes'], size)} | "
                    f"{ratio(g['received_bytes'], size)} |"
                )
        lines.append("")
    if data["data"]:
        lines += [
            "The train job's DVC transfers to an S3-compatible remote (moto): push of every "
            "output to an empty prefix, pull into a clone without cache or outputs. suite: "
            f"`invoke push-data` / `invoke pull` (`--jobs {data['dvc_jobs']}`); guide: "
            "`dvc push` / `dvc pull`.",
            "",
            "| images (files) | transfer | suite | guide | suite / guide | bytes: suite | guide |",
            "|---|---|---|---|---|---|---|",
        ]
        for point in data["data"]:
            for verb in ("push", "pull"):
                s, g = point["suite"][verb], point["guide"][verb]
                lines.append(
                    f"| {point['images']:,} ({point['files']:,}) | {verb} | {s['seconds']:.1f} s "
                    f"| {g['seconds']:.1f} s | {ratio(s['seconds'], g['seconds'])} | "
                    f"{mb(s['bytes'])} | {mb(g['bytes'])} |"
                )
        lines.append("")
    mount = data.get("mount")
    if mount:
        lines += [
            f"Cross-repository mount: the suite's push after the guide's to one registry "
            f"started {mount['suite_upload_starts']} blob uploads, {mount['mount_requests']} "
            "of them as a mount (`POST /v2/<repo>/blobs/uploads/?mount=...&from=...`)"
            + (f" (run {mount['run']}, {mount['date']})." if mount.get("run") else "."),
            "",
        ]
    if data.get("runs"):
        lines[2] += (
            " Runs one after another or side by side ("
            + "; ".join(
                f"{stamp}, commit {(r.get('commit') or '?')[:7]}: "
                f"{r.get('context') or NOT_IDLE}, load {r['load_before']['load1']:.2f} "
                f"before, {r['load_after']['load1']:.2f} after"
                for stamp, r in data["runs"].items()
            )
            + "): the data points from the first, the model points from the others; the "
            "load after in the sentence before is the highest."
        )
    missing = not_run(data)
    if missing:
        lines += [
            f"Not run (or cut short before the point was complete): {', '.join(missing)}.",
            "",
        ]
    return "\n".join(lines)


def plot(data: dict, path: Path) -> None:
    """Time and bytes against size: the model sweep (publish) and the data sweep (DVC)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(11, 8))
    styles = {"suite": "o-", "guide": "s--"}
    models = data["models"]
    for scenario in ("cold", "model-only"):
        x = [p[scenario]["model"]["archive_bytes"] / MB for p in models]
        for side in SIDES:
            label = f"{side}, {scenario}"
            axes[0][0].plot(
                x, [p[scenario][side]["seconds"] for p in models], styles[side], label=label
            )
            axes[0][1].plot(
                x,
                [p[scenario][side]["received_bytes"] / MB for p in models],
                styles[side],
                label=label,
            )
    axes[0][0].set(title="publish: time", xlabel="model archive (MB)", ylabel="seconds")
    axes[0][1].set(
        title="publish: bytes the registry received", xlabel="model archive (MB)", ylabel="MB"
    )
    points = data["data"]
    x = [p["images"] for p in points]
    for verb in ("push", "pull"):
        for side in SIDES:
            label = f"{side}, dvc {verb}"
            axes[1][0].plot(
                x, [p[side][verb]["seconds"] for p in points], styles[side], label=label
            )
            axes[1][1].plot(
                x, [p[side][verb]["bytes"] / MB for p in points], styles[side], label=label
            )
    axes[1][0].set(title="DVC transfers: time", xlabel="images", ylabel="seconds")
    axes[1][1].set(title="DVC transfers: bytes to/from the remote", xlabel="images", ylabel="MB")
    for axis in axes.flat:
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=8)
    figure.suptitle(f"Cost against size ({data['date']}, shared 2-core machine)")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


PLOTS = (RESULTS / "sweep-latest.png", ROOT / "docs" / "images" / "sweep-latest.png")  # the site's


def save(stamp: str, data: dict) -> None:
    """The results so far: JSON, its table, and the plot beside them and in the docs."""
    write_results("sweep", stamp, data, render(data))
    for path in PLOTS:
        path.parent.mkdir(parents=True, exist_ok=True)
        plot(data, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(map(str, MODEL_MB)), help="archive MB")
    parser.add_argument("--images", default=",".join(map(str, IMAGES)), help="data set sizes")
    parser.add_argument("--no-mount-check", action="store_true")
    parser.add_argument(
        "--combine", nargs="+", metavar="STAMP",
        help="one result of two runs: data points and mount check of one, model points of another",
    )  # fmt: skip
    parser.add_argument(
        "--mount-from", metavar="STAMP", default="", help="with --combine: its mount check"
    )
    parser.add_argument(
        "--mount-into", metavar="STAMP", help="run only the mount check, into sweep-STAMP"
    )
    parser.add_argument(
        "--context", default="",
        help="what else ran on the machine, for the result (e.g. 'idle: nothing else ran')",
    )  # fmt: skip
    parser.add_argument("--render", metavar="JSON", help="only print the table of a results file")
    parser.add_argument("--replot", metavar="STAMP", help="rewrite sweep-STAMP's table and plot")
    args = parser.parse_args()
    if args.render:
        print(render(json.loads(Path(args.render).read_text())))
        return
    if args.replot:
        save(args.replot, json.loads((RESULTS / f"sweep-{args.replot}.json").read_text()))
        return
    if args.combine:
        combine(args.combine[0], args.combine[1:], args.mount_from)
        return
    if args.mount_into:
        add_mount_check(args.mount_into)
        return
    models = [int(v) for v in args.models.split(",") if v]
    images = [int(v) for v in args.images.split(",") if v]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    scratch, logs = scratch_dir("sweep", stamp)
    log(f"clones, registries and logs in {scratch}")
    from cicd.settings import load

    data: dict = {
        **result_header(),
        "context": args.context,
        "dvc_jobs": load(ROOT, {}).dvc_jobs,
        "models": [],
        "data": [],
        "mount": None,
    }
    begin = time.perf_counter()
    try:
        clone = new_clone(scratch, "model")  # one clone: each point retrains and re-pads it
        trust_a_new_key(clone, scratch)
        # The smaller points first, alternating between the two sweeps: a run cut short
        # keeps a point of each.
        for kind, size in interleave(models, images):
            if kind == "model":
                data["models"].append(model_point(scratch, clone, size, logs))
                if not args.no_mount_check and data["mount"] is None:  # early: a short run has it
                    data["mount"] = mount_check(scratch, clone, logs)
            else:
                data["data"].append(data_point(scratch, size, logs))
            data["load_after"] = machine_load()
            save(stamp, data)
    finally:
        data["load_after"] = machine_load()
        data["run_seconds"] = time.perf_counter() - begin
        save(stamp, data)
        keep = logs.parent.with_name(f"bench-sweep-logs-{stamp}")
        shutil.copytree(logs, keep, dirs_exist_ok=True)
        shutil.rmtree(scratch, ignore_errors=True)
        log(f"logs kept in {keep}; wrote {RESULTS}/sweep-{stamp}.md, .json and sweep-latest.png")
    print(render(data))


if __name__ == "__main__":
    sys.exit(main())
