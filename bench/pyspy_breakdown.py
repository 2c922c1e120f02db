"""Where a request's time goes inside the container: py-spy samples of the workers under load.

    python bench/pyspy_breakdown.py IMAGE [--concurrency 1] [--seconds 8] [--out FILE.json]

Starts IMAGE on a free port, loads POST /predict with hey (a real JPEG, field `image`),
and meanwhile `py-spy record --subprocesses` samples every worker of the service at 250 Hz
(py-spy from PyPI, run as root on the host: it reads the container's processes). Each
sample that is not an idle wait is put in the first bucket its stack matches (BUCKETS
order); CPU time per request = samples / rate / requests answered in the window. Kernel
time inside a send() (the loopback TCP stack and docker-proxy's wake-up) counts where it
is called from: the socket write of the HTTP server.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import docker
from serving import BOUNDARY, Container, hey, multipart

ROOT = Path(__file__).resolve().parents[1]
RATE = 250
BUCKETS = [
    ("ONNX Runtime", r"predict_proba|Session\.run"),
    ("preprocess (resize, to float)", r"preprocess \(celestial|image_to_array"),
    ("decode_image (Pillow)", r"decode_image"),
    ("answer dict (format_prediction)", r"format_prediction"),
    ("BentoML endpoint: input parse (form, temp file, pydantic)", r"from_http_request"),
    ("BentoML endpoint: output serialisation", r"to_http_response"),
    ("BentoML endpoint: thread hop", r"run_sync|to_thread|run_in_threadpool"),
    ("BentoML endpoint: rest (context, temp file pool)", r"api_endpoint|in_request"),
    ("serve.predict rest (stat, read_bytes)", r"predict \(serve\.py"),
    ("UploadGuard: multipart parse", r"form \(starlette/requests|_get_form|FormData\.close"),
    ("HTTP: socket write (kernel, docker-proxy)", r"Transport\.write|RequestResponseCycle\.send"),
    ("tracing (OpenTelemetry)", r"opentelemetry|trace/__init__"),
    ("metrics (prometheus)", r"prometheus|Metrics"),
    ("UploadGuard: body buffering, JSON reply", r"serve\.py"),
    ("HTTP: uvicorn parse, routing, middlewares", r"uvicorn|starlette|traffic\.py|h11"),
    ("event loop", r"asyncio|uvloop|anyio"),
]
IDLE = ("Condition.wait", "EpollSelector.select", "select (", "wait (threading", "_worker (")
# uvloop runs its loop in C: a sample whose last Python frame is the loop's entry point is
# either the idle epoll wait or socket I/O done by libuv, which py-spy cannot tell apart.
C_LOOP = "Runner.run (asyncio/runners.py"


def breakdown(raw: Path, requests: int) -> dict:
    counts: Counter = Counter()
    for line in raw.read_text().splitlines():
        stack, n = line.rsplit(" ", 1)
        frames = stack.split(";")
        if frames[-1].startswith(IDLE) or "circus" in stack or "watchfiles" in stack:
            continue
        if frames[-1].startswith(C_LOOP):
            counts[C_LOOP_BUCKET] += int(n)
            continue
        for name, pattern in BUCKETS:
            if re.search(pattern, stack):
                counts[name] += int(n)
                break
        else:
            counts["other"] += int(n)
    return {
        name: round(counts[name] / RATE / requests * 1e6, 1)
        for name in [b for b, _ in BUCKETS] + ["other", C_LOOP_BUCKET]
        if counts[name]
    }


C_LOOP_BUCKET = "(not counted) uvloop's C loop: idle wait or socket I/O"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("image")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--out")
    parser.add_argument("--keep-raw", help="copy py-spy's raw profile here")
    args = parser.parse_args()
    jpeg = ROOT / "data/raw/Mars/Mars_1.jpg"
    scratch = Path(tempfile.mkdtemp(prefix="pyspy-"))
    body = scratch / "body"
    body.write_bytes(multipart("image", jpeg.name, jpeg.read_bytes()))
    pyspy = str(Path(sys.executable).with_name("py-spy"))
    with Container(args.image) as container:
        container.start()
        hey(container.url, body, 2, requests=400)  # warm-up
        serve_pid = docker("inspect", "-f", "{{.State.Pid}}", container.id)
        raw = scratch / "profile.raw"
        hey_args = ["-z", f"{args.seconds + 2}s", "-c", str(args.concurrency), "-m", "POST"]
        hey_args += ["-D", str(body), "-T", f"multipart/form-data; boundary={BOUNDARY}"]
        load = subprocess.Popen(
            ["hey", *hey_args, f"{container.url}/predict"],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(1)
        spy_args = ["--subprocesses", "--nonblocking", "-r", str(RATE), "-d", str(args.seconds)]
        subprocess.run(
            [pyspy, "record", *spy_args, "-f", "raw", "-o", str(raw), "-p", serve_pid],
            check=True,
            capture_output=True,
        )
        out = load.communicate()[0]
    if args.keep_raw:
        Path(args.keep_raw).write_bytes(raw.read_bytes())
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = rps * args.seconds
    result = {
        "image": args.image,
        "concurrency": args.concurrency,
        "rps": rps,
        "load1": float(Path("/proc/loadavg").read_text().split()[0]),
        "worker_cpu_us_per_request": breakdown(raw, int(requests)),
    }
    result["total_us"] = round(
        sum(v for k, v in result["worker_cpu_us_per_request"].items() if k != C_LOOP_BUCKET), 1
    )
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
