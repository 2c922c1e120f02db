"""The floor under a cold publish's push: `docker push` beside what a push of its own would cost.

    python bench/push_floor.py [--image REF] [--reps 3]
    python bench/push_floor.py --render bench/results/push-floor-latest.json

Issue 13, goal 2 asks whether the suite could push faster than the guide's `docker push`, for
instance by uploading the layers itself while the smoke test runs and tagging only after it
passed. A registry that never saw the image must receive every layer compressed; `docker push`
compresses them (gzip) as it uploads. A push of the suite's own would first need the layers
out of the engine (`docker save`, the only way the Docker API gives them) and then compress
them itself. This measures, on one image, in the same run:

- `docker push` of the image to an empty registry (a Distribution binary on a free port with
  its own storage, so no blob can be mounted from an earlier push; `127.0.0.1:5050` is never
  touched), median of --reps;
- `docker save` of the image, read to the end and thrown away;
- `docker save` streamed into gzip on 2 threads (4 MiB chunks, one gzip member each, which
  Docker and containerd read), at level 6 (the size `docker push` gives) and level 1.

Nothing is uploaded by the last two rows: they are lower bounds of a push of the suite's own.
Writes bench/results/push-floor-<time>.{json,md} and push-floor-latest.*.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tarfile
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import (
    DOCKER,
    commit,
    docker,
    log,
    machine,
    machine_load,
    median,
    run,
    write_results,
)
from layers import BenchRegistry

DEFAULT_IMAGE = "127.0.0.1:5050/celestial-bodies-classifier:latest"
CHUNK = 4 << 20


def docker_push(image: str, scratch: Path) -> dict:
    """Tag ``image`` into an empty registry and push it: seconds and bytes stored.

    Straight to the registry's port, not through the byte-counting proxy (whose Python
    threads would take CPU from the push): the bytes are the blobs' sizes on disk."""
    registry = BenchRegistry(scratch / f"registry-{time.monotonic_ns()}")
    target = f"127.0.0.1:{registry.port}/floor/image:cold"
    try:
        docker("tag", image, target)
        seconds, _ = run([DOCKER, "push", target])
        stored = sum(registry.blobs().values())
        return {"seconds": seconds, "received_mb": stored / 1e6, "load": machine_load()}
    finally:
        docker("rmi", target, check=False)
        registry.stop()


def save_and_compress(image: str, level: int | None) -> dict:
    """`docker save` read through; with ``level``, every layer gzipped on 2 threads."""
    begin = time.perf_counter()
    save = subprocess.Popen([DOCKER, "save", image], stdout=subprocess.PIPE)
    raw = compressed = 0
    with ThreadPoolExecutor(2) as pool, tarfile.open(fileobj=save.stdout, mode="r|") as tar:
        pending = []
        for member in tar:
            source = tar.extractfile(member) if member.isfile() else None
            while source and (chunk := source.read(CHUNK)):
                raw += len(chunk)
                if level is not None:
                    pending.append(pool.submit(gzip_member, chunk, level))
                while len(pending) > 4:  # bounded memory: at most a few chunks in flight
                    compressed += len(pending.pop(0).result())
        compressed += sum(len(future.result()) for future in pending)
    if save.wait() != 0:
        raise SystemExit(f"docker save {image} failed")
    seconds = time.perf_counter() - begin
    return {"seconds": seconds, "raw_mb": raw / 1e6, "compressed_mb": compressed / 1e6}


def gzip_member(chunk: bytes, level: int) -> bytes:
    packer = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: a gzip header and trailer
    return packer.compress(chunk) + packer.flush()


def render(data: dict) -> str:
    push = median([r["seconds"] for r in data["docker_push"]])
    lines = [
        f"# The floor under a cold push, {data['date']}",
        "",
        f"Machine: {data['machine']}. Commit {data['commit'][:12]}. Image `{data['image']}`, "
        f"{data['image_mb']:.0f} MB; medians of {data['reps']}.",
        "",
        "| what | seconds | MB | / `docker push` |",
        "|---|---|---|---|",
        f"| `docker push` to an empty registry | {push:.2f} | "
        f"{median([r['received_mb'] for r in data['docker_push']]):.1f} stored | 1.00 |",
    ]
    for name, label in (
        ("save", "`docker save`, read through (no compression, no upload)"),
        ("gzip6", "`docker save` + gzip level 6 on 2 threads (no upload)"),
        ("gzip1", "`docker save` + gzip level 1 on 2 threads (no upload)"),
    ):
        seconds = median([r["seconds"] for r in data[name]])
        size = median([r["compressed_mb"] or r["raw_mb"] for r in data[name]])
        lines.append(f"| {label} | {seconds:.2f} | {size:.1f} | {seconds / push:.2f} |")
    loads = [r["load"]["load1"] for r in data["docker_push"]]
    others = sorted({p for r in data["docker_push"] for p in r["load"]["busy"]})
    lines += [
        "",
        f"1-minute load beside the pushes: {', '.join(f'{v:.2f}' for v in loads)}; other "
        f"processes at 10 % CPU or more: {'; '.join(others) or 'none'}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--render", metavar="JSON", help="only print the table of a results file")
    args = parser.parse_args()
    if args.render:
        print(render(json.loads(Path(args.render).read_text())), end="")
        return
    data: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine(),
        "commit": commit(),
        "image": args.image,
        "image_mb": int(docker("image", "inspect", "--format", "{{.Size}}", args.image)) / 1e6,
        "reps": args.reps,
        "docker_push": [],
        "save": [],
        "gzip6": [],
        "gzip1": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench-push-floor-") as scratch:
        for rep in range(args.reps):  # interleaved, so that a burst of load hits every row
            data["docker_push"].append(docker_push(args.image, Path(scratch)))
            for name, level in (("save", None), ("gzip6", 6), ("gzip1", 1)):
                data[name].append(save_and_compress(args.image, level))
            log(f"rep {rep + 1}: " + ", ".join(f"{k} {v[-1]['seconds']:.1f} s" for k, v in
                                               data.items() if isinstance(v, list)))  # fmt: skip
    text = render(data)
    print(text, end="")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    write_results("push-floor", stamp, data, text)


if __name__ == "__main__":
    main()
