"""Serving A/B: several images (or variants of one) loaded in turn, in the same run.

    python bench/serving_ab.py --reps 5 --seconds 8 \
        before=IMAGE_A after=IMAGE_B ["name=IMAGE|docker run options"]...

Every variant runs in its own container on a free port of 127.0.0.1 for the whole run.
Each repetition loads every variant in turn (the order rotates between repetitions, so a
burst of load from other processes does not always hit the same one) with `hey`:
GET /readyz at concurrency 8 (the framework's ceiling: its cheapest request), then
POST /predict (a real JPEG, multipart field `image`) at concurrency 1 and 8. Next to each
figure: the 1-minute load average and the busiest processes not belonging to the load
(`ps`), since the machine may be shared. Medians over repetitions; raw numbers in the JSON.
Answers are checked to equal the in-process classifier's before the load starts.
Writes bench/results/serving-ab-<time>.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
import time
import urllib.request
from pathlib import Path

from common import commit, docker, log, machine_load, median
from serving import BOUNDARY, Container, floor, hey, hey_get, multipart, same_answer

ROOT = Path(__file__).resolve().parents[1]


class Variant(Container):
    def __init__(self, name: str, spec: str):
        image, _, options = spec.partition("|")
        super().__init__(image)
        self.name, self.options = name, shlex.split(options)

    def start(self) -> float:
        begin = time.perf_counter()
        self.id = docker(
            "run", "-d", "--rm", "-p", f"127.0.0.1:{self.port}:3000", *self.options, self.image
        )
        while time.perf_counter() < begin + 120:
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as answer:
                    if answer.status == 200:
                        return time.perf_counter() - begin
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready: {docker('logs', self.id)[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("variants", nargs="+", help="name=IMAGE[|docker run options]")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--jpeg", default=str(ROOT / "data/raw/Mars/Mars_1.jpg"))
    parser.add_argument("--out", default=str(ROOT / "bench/results"))
    args = parser.parse_args()

    jpeg = Path(args.jpeg)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    scratch = Path(f"/tmp/serving-ab-{stamp}")
    scratch.mkdir()
    body = scratch / "mars.multipart"
    body.write_bytes(multipart("image", jpeg.name, jpeg.read_bytes()))
    model = ROOT / "model/celestial_bodies_classifier_model.bentomodel"
    base = floor(sys.executable, ROOT / "src", model, jpeg, calls=2000)
    log(f"floor: one in-process prediction {base['p50_ms']:.3f} ms (p50)")

    variants = [Variant(*item.split("=", 1)) for item in args.variants]
    results: dict = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "reps": args.reps,
        "seconds": args.seconds,
        "floor": {k: v for k, v in base.items() if k != "answer"},
        "variants": {
            v.name: {"spec": f"{v.image} {' '.join(v.options)}".strip()} for v in variants
        },
        "runs": [],
    }
    try:
        for v in variants:
            results["variants"][v.name]["cold_start_s"] = v.start()
            request = urllib.request.Request(
                f"{v.url}/predict",
                data=body.read_bytes(),
                method="POST",
                headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            )
            with urllib.request.urlopen(request, timeout=30) as answer:
                got = json.loads(answer.read())
            results["variants"][v.name]["answer_equals_floor"] = same_answer(got, base["answer"])
            hey(v.url, body, 2, requests=400)  # warm-up
        for rep in range(args.reps):
            order = variants[rep % len(variants) :] + variants[: rep % len(variants)]
            for v in order:
                for measure in ("readyz_c8", "predict_c1", "predict_c8"):
                    before = machine_load()
                    if measure == "readyz_c8":
                        run = hey_get(f"{v.url}/readyz", 8, args.seconds)
                    else:
                        c = int(measure[-1])
                        run = hey(v.url, body, c, seconds=args.seconds)
                        run = {k: run[k] for k in ("requests", "rps", "p50_ms", "p99_ms", "errors")}
                    run.update(variant=v.name, rep=rep, measure=measure, load=before)
                    results["runs"].append(run)
                    log(
                        f"rep {rep} {v.name:>8} {measure}: {run['rps']:7.0f} req/s, "
                        f"p99 {run['p99_ms']:6.1f} ms, errors {run['errors']}, "
                        f"load {before['load1']:.2f}"
                    )
    finally:
        for v in variants:
            v.stop()

    summary = {}
    for v in variants:
        row = {}
        for measure in ("readyz_c8", "predict_c1", "predict_c8"):
            runs = [
                r for r in results["runs"] if r["variant"] == v.name and r["measure"] == measure
            ]
            row[measure] = {
                "rps": median([r["rps"] for r in runs]),
                "p50_ms": median([r["p50_ms"] for r in runs]),
                "p99_ms": median([r["p99_ms"] for r in runs]),
                "errors": sum(r["errors"] for r in runs),
                "load1": median([r["load"]["load1"] for r in runs]),
            }
        row["predict_c8_over_readyz_c8"] = row["predict_c8"]["rps"] / row["readyz_c8"]["rps"]
        summary[v.name] = row
    results["summary"] = summary

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"serving-ab-{stamp}.json").write_text(json.dumps(results, indent=1) + "\n")
    md = render(results)
    (out / f"serving-ab-{stamp}.md").write_text(md)
    print(md)


def render(results: dict) -> str:
    lines = [
        f"# Serving A/B, {results['date']}",
        "",
        f"Commit {results['commit']}; {results['machine']['platform']}, "
        f"{results['machine']['cpus']} cores, Python {results['machine']['python']}. "
        f"{results['reps']} repetitions of {results['seconds']} s loads per figure (hey, "
        "same machine as the service), medians. In-process floor (decode + preprocess + "
        f"ONNX Runtime): {results['floor']['p50_ms']:.3f} ms p50.",
        "",
        "| variant | /readyz c=8 | /predict c=1 (p99) | /predict c=8 (p99) | c=8 / ceiling "
        "| errors | load (1 min, median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in results["summary"].items():
        r, p1, p8 = row["readyz_c8"], row["predict_c1"], row["predict_c8"]
        errors = r["errors"] + p1["errors"] + p8["errors"]
        load = median([r["load1"], p1["load1"], p8["load1"]])
        lines.append(
            f"| {name} | {r['rps']:,.0f} /s (p99 {r['p99_ms']:.1f} ms) "
            f"| {p1['rps']:,.0f} /s ({p1['p99_ms']:.1f} ms) "
            f"| {p8['rps']:,.0f} /s ({p8['p99_ms']:.1f} ms) "
            f"| {row['predict_c8_over_readyz_c8']:.0%} | {errors} | {load:.2f} |"
        )
    lines += ["", "Variants:", ""]
    for name, v in results["variants"].items():
        lines.append(
            f"- {name}: `{v['spec']}`; cold start {v['cold_start_s']:.1f} s; answer equals the "
            f"in-process classifier's: {v['answer_equals_floor']}"
        )
    busy = sorted({b.split(" ", 2)[1] for run in results["runs"] for b in run["load"]["busy"]})
    lines += [
        "",
        f"Other busy processes seen during the loads (>= 10 % CPU): {', '.join(busy) or 'none'}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
