"""Serving benchmarks of the published image: load (hey), cold start, memory, robustness.

- floor: one in-process prediction, celestial.reference.load_classifier(path).predict_bytes(jpeg)
  (decode + preprocess + ONNX Runtime), what no HTTP service can beat;
- cold start: `docker run` until GET /readyz answers 200;
- load: `hey` POSTs a real JPEG (multipart field `image`) at concurrency 1 and 8; every
  request's latency and status are read from hey's CSV output; `docker stats` samples the
  container's memory meanwhile;
- robustness: 10,000 normal requests (no error, no lost request, memory before/after), then
  1,000 malformed or hostile ones (bench/hostile.py: no 5xx, none lost), then normal ones
  again, whose answers must equal the floor's.
Only 127.0.0.1 is ever contacted, and every loop is bounded.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import hostile
from common import DOCKER, docker, free_port, log, machine_load, median, percentile

BOUNDARY = "benchBoundary7d3f9a"
HEY = "hey"


def multipart(field: str, filename: str, data: bytes, content_type: str = "image/jpeg") -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; '
        f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def floor(python: str, src: Path, bentomodel: Path, jpeg: Path, calls: int = 2000) -> dict:
    """Per-call time of the in-process prediction, in a fresh interpreter (PYTHONPATH=src)."""
    code = f"""
import json, time
from celestial.reference import load_classifier
c = load_classifier({str(bentomodel)!r})
data = open({str(jpeg)!r}, "rb").read()
for _ in range(100): answer = c.predict_bytes(data)
times = []
for _ in range({calls}):
    t = time.perf_counter(); c.predict_bytes(data); times.append(time.perf_counter() - t)
print(json.dumps({{"times": times, "answer": answer}}))
"""
    done = subprocess.run(
        [python, "-c", code],
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    times = result["times"]
    return {
        "calls": calls,
        "p50_ms": percentile(times, 50) * 1e3,
        "p99_ms": percentile(times, 99) * 1e3,
        "per_core_rps": 1 / median(times),
        "answer": result["answer"],
    }


class Container:
    """The image running on a free port of 127.0.0.1; always removed on exit."""

    def __init__(self, image: str):
        self.image, self.port, self.id = image, free_port(), ""

    def start(self) -> float:
        """Start it; return seconds until /readyz answers 200 (`docker run` included)."""
        begin = time.perf_counter()
        self.id = docker("run", "-d", "--rm", "-p", f"127.0.0.1:{self.port}:3000", self.image)
        deadline = begin + 120
        while time.perf_counter() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        return time.perf_counter() - begin
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.image} not ready in 120 s: {docker('logs', self.id)[-2000:]}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def memory_mb(self) -> float:
        """Memory use as `docker stats` reports it (MiB)."""
        usage = docker("stats", "--no-stream", "--format", "{{.MemUsage}}", self.id).split("/")[0]
        number, unit = re.match(r"([\d.]+)\s*([KMG]i?B|B)", usage.strip()).groups()
        scale = {
            "B": 1 / 2**20,
            "KiB": 1 / 1024,
            "MiB": 1,
            "GiB": 1024,
            "kB": 1e3 / 2**20,
            "KB": 1e3 / 2**20,
            "MB": 1e6 / 2**20,
            "GB": 1e9 / 2**20,
        }[unit]
        return float(number) * scale

    def stop(self) -> None:
        if self.id:
            docker("rm", "-f", self.id, check=False)
            self.id = ""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class MemorySampler(threading.Thread):
    """docker stats of the container every ~interval while a load runs (bounded by stop())."""

    def __init__(self, container: Container, interval: float = 1.0):
        super().__init__(daemon=True)
        self.container, self.interval = container, interval
        self.samples: list[tuple[float, float]] = []
        self._done = threading.Event()

    def run(self) -> None:
        start = time.perf_counter()
        while not self._done.is_set():
            with contextlib.suppress(Exception):  # a sample lost is not a failure
                self.samples.append((time.perf_counter() - start, self.container.memory_mb()))
            self._done.wait(self.interval)

    def stop(self) -> list[tuple[float, float]]:
        self._done.set()
        self.join(timeout=30)
        return self.samples


def hey(url: str, body: Path, concurrency: int, *, seconds: int = 0, requests: int = 0) -> dict:
    """One hey run; latencies and statuses from its CSV (hey leaves failed requests out)."""
    command = [
        HEY,
        "-c",
        str(concurrency),
        "-m",
        "POST",
        "-D",
        str(body),
        "-t",
        "30",
        "-T",
        f"multipart/form-data; boundary={BOUNDARY}",
        "-o",
        "csv",
    ]
    command += ["-z", f"{seconds}s"] if seconds else ["-n", str(requests)]
    begin = time.perf_counter()
    done = subprocess.run([*command, f"{url}/predict"], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - begin
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    latencies = [float(row["response-time"]) for row in rows]
    statuses: dict[str, int] = {}
    for row in rows:
        statuses[row["status-code"]] = statuses.get(row["status-code"], 0) + 1
    sent = requests // concurrency * concurrency  # hey gives each worker n / c requests
    span = max(float(r["offset"]) + float(r["response-time"]) for r in rows) if rows else wall
    return {
        "concurrency": concurrency,
        "requests": len(rows),
        "sent": sent or None,
        "rps": len(rows) / span if span else 0.0,
        "p50_ms": percentile(latencies, 50) * 1e3 if latencies else None,
        "p99_ms": percentile(latencies, 99) * 1e3 if latencies else None,
        "statuses": statuses,
        "errors": sum(n for code, n in statuses.items() if not code.startswith("2")),
        "lost": (sent - len(rows)) if requests else 0,
        "wall_s": wall,
    }


def hey_get(url: str, concurrency: int, seconds: int) -> dict:
    """GET ``url`` for ``seconds`` (the framework's ceiling when ``url`` is /readyz)."""
    out = subprocess.run(
        [HEY, "-z", f"{seconds}s", "-c", str(concurrency), "-o", "csv", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()[1:]
    rows = [line.split(",") for line in out if line]
    # hey csv: response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,
    # status-code,offset
    latencies = [float(r[0]) for r in rows]
    span = max(float(r[7]) + float(r[0]) for r in rows)
    return {
        "concurrency": concurrency,
        "requests": len(rows),
        "rps": len(rows) / span,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "errors": sum(1 for r in rows if not r[6].startswith("2")),
    }


def predict(url: str, body: bytes) -> dict:
    """One POST /predict of a multipart body (see :func:`multipart`); its JSON answer."""
    request = urllib.request.Request(
        f"{url}/predict",
        data=body,
        method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def normal_answers(url: str, body: bytes, count: int) -> list[dict]:
    return [predict(url, body) for _ in range(count)]


def same_answer(a: dict, b: dict, tolerance: float = 1e-4) -> bool:
    return a.get("prediction") == b.get("prediction") and all(
        abs(a["probabilities"][k] - b["probabilities"][k]) <= tolerance for k in b["probabilities"]
    )


def bench_serving(
    images: dict[str, str],
    jpeg: Path,
    floor_result: dict,
    scratch: Path,
    *,
    load_seconds: int,
    cold_starts: int,
    robust_requests: int,
    hostile_requests: int,
) -> dict:
    """images: {"suite": ref, "guide": ref}; the suite's image takes the load."""
    body = scratch / "mars.multipart"
    body.write_bytes(multipart("image", jpeg.name, jpeg.read_bytes()))
    results: dict = {"floor": floor_result, "cold_start_s": {}}
    for name, image in images.items():
        starts = []
        for _ in range(cold_starts):
            with Container(image) as container:
                starts.append(container.start())
        results["cold_start_s"][name] = starts
        log(f"cold start {name}: {', '.join(f'{s:.2f}' for s in starts)} s")

    with Container(images["suite"]) as container:
        container.start()
        hey(container.url, body, 2, requests=200)  # warm-up: first requests load lazily
        results["idle_mb"] = container.memory_mb()
        # The framework's own ceiling on this machine, in the same run: its cheapest request.
        results["ceiling_c8"] = hey_get(f"{container.url}/readyz", 8, load_seconds)
        results["ceiling_c8"]["machine_load"] = machine_load()
        log(f"ceiling: GET /readyz at c=8, {results['ceiling_c8']['rps']:.0f} req/s")
        for concurrency in (1, 8):
            sampler = MemorySampler(container)
            sampler.start()
            run = hey(container.url, body, concurrency, seconds=load_seconds)
            run["memory_mb"] = max((m for _, m in sampler.stop()), default=None)
            run["machine_load"] = machine_load()
            results[f"load_c{concurrency}"] = run
            log(
                f"load c={concurrency}: {run['rps']:.0f} req/s, p50 {run['p50_ms']:.1f} ms, "
                f"p99 {run['p99_ms']:.1f} ms, {run['memory_mb']} MiB"
            )

        log(f"robustness: {robust_requests} normal requests at c=8")
        before = container.memory_mb()
        sampler = MemorySampler(container, interval=2.0)
        sampler.start()
        run = hey(container.url, body, 8, requests=robust_requests)
        samples = sampler.stop()
        after = container.memory_mb()
        run.update(memory_before_mb=before, memory_after_mb=after, memory_samples=samples)
        results["robust_normal"] = run
        log(
            f"  {run['requests']} answered, {run['errors']} errors, {run['lost']} lost, "
            f"memory {before:.0f} -> {after:.0f} MiB"
        )

        log(f"robustness: {hostile_requests} malformed or hostile requests at c=8")
        attack = hostile.attack("127.0.0.1", container.port, jpeg.read_bytes(), hostile_requests)
        attack["memory_after_mb"] = container.memory_mb()
        expected = floor_result["answer"]
        answers = normal_answers(container.url, body.read_bytes(), 100)
        attack["normal_after"] = len(answers)
        attack["normal_after_correct"] = sum(same_answer(a, expected) for a in answers)
        attack["still_running"] = bool(docker("ps", "-q", "--filter", f"id={container.id}"))
        results["robust_hostile"] = attack
        log(
            f"  statuses {attack['statuses']}, 5xx {attack['5xx']}, lost {attack['lost']}; "
            f"then {attack['normal_after_correct']}/100 normal answers correct"
        )
    return results


if __name__ == "__main__":  # python bench/serving.py IMAGE [JPEG]: a quick check
    root = Path(__file__).resolve().parents[1]
    jpeg_path = Path(sys.argv[2]) if len(sys.argv) > 2 else root / "data/raw/Mars/Mars_1.jpg"
    from cicd import settings

    model = root / settings.load(root, {}).bentomodel
    base = floor(sys.executable, root / "src", model, jpeg_path, calls=200)
    out = bench_serving(
        {"suite": sys.argv[1]},
        jpeg_path,
        base,
        Path("/tmp"),
        load_seconds=2,
        cold_starts=1,
        robust_requests=200,
        hostile_requests=60,
    )
    print(json.dumps(out, indent=1, default=str)[:4000])
    print(DOCKER)
