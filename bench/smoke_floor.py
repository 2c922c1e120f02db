"""The smoke step beside its floor, and the publish's tail, two versions of the suite in one run.

    .nox/tests/bin/python bench/smoke_floor.py --rounds 5          # A: main's src/, B: this tree's
    .nox/tests/bin/python bench/smoke_floor.py --a REF --rounds 5  # A: the suite of git REF
    .nox/tests/bin/python bench/smoke_floor.py --render FILE       # only print a run's table

Issue 24, goals 2 and 3: where the smoke step's seconds go above a plain smoke test of the
same image, and what the publish's last steps (smoke, push, attest) cost. One trained clone
of this tree, one registry (bench/layers.py's BenchRegistry), one first publish (untimed,
signed as CI signs: the image is built once and pushed). Then, per round, on that same image:

* the floor: `docker run` until ``GET /readyz`` answers 200, one ``POST /predict`` of the
  suite's own smoke request, `docker rm -f` (bench/serving.py's Container, as layers.py's);
* each variant's `invoke smoke` alone (no draft);
* each variant's `invoke containerize smoke --draft-attestations push attest`: the publish
  session's tail (containerize finds every layer cached). The push finds every layer in the
  registry (as a model-only push finds all but one), and attest signs, attaches and settles
  `latest` as in a real publish.

A variant is a ``src/`` directory put first on PYTHONPATH (A: ``git archive`` of --a; B: this
tree's ``src/``), as in bench/model_only.py. The variants alternate (AB, then BA) so that a
drift of the machine's load falls on both. Each step's seconds are its own ``✓ step (N.N s)``
line. Writes bench/results/smoke-floor-<time>.{json,md} and smoke-floor-latest.*.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from common import (
    ROOT,
    TOOLS,
    commit,
    log,
    machine_load,
    result_header,
    run,
    scratch_dir,
    trust_a_new_key,
    write_partial,
    write_results,
)
from layers import SUITE_IMAGE, BenchRegistry, publish_steps
from model_only import ab_arguments, load_line, steps_of, variant_sources
from serving import Container, multipart, predict

SMOKE_REQUEST = Path("data/raw/Earth/Earth_1.jpg")  # invoke.yaml's suite.smoke.request.path
# containerize first (every layer cached: a few seconds), as in the publish session: the
# smoke step then finds what that process already has (python-on-whales imported, the engine's
# choice made), not a cold Python.
TAIL = ["containerize", "smoke", "--draft-attestations", "push", "attest"]
KINDS = {"smoke": ["smoke"], "tail": TAIL}


def make_clone(scratch: Path) -> Path:
    """A clone of this tree's commit, its pipeline's outputs pulled (or made) by DVC."""
    clone = scratch / "clone"
    run(["git", "clone", "--quiet", str(ROOT), str(clone)])
    for name, value in (("user.email", "bench@localhost"), ("user.name", "bench")):
        run(["git", "config", name, value], cwd=clone)
    run([str(TOOLS / "invoke"), "repro"], cwd=clone)
    return clone


def floor_smoke(image: str, request: Path) -> dict:
    """The plain smoke test: run, wait for /readyz 200, one POST, remove; its seconds."""
    body = multipart("image", request.name, request.read_bytes())
    begin = time.perf_counter()
    with Container(image) as container:
        ready = container.start()
        answer = predict(container.url, body)
    return {
        "seconds": time.perf_counter() - begin,
        "ready": ready,
        "prediction": answer.get("prediction"),
        "load": machine_load()["load1"],
    }


def suite_run(kind: str, variant: str, src: Path, clone: Path, env: dict, logs: Path) -> dict:
    """One `invoke` of ``kind``'s steps by ``variant``: wall seconds and each step's line."""
    log_file = logs / f"{kind}-{variant}.log"
    mark = log_file.stat().st_size if log_file.exists() else 0
    extra = {**env, "PYTHONPATH": str(src)}
    seconds, _ = run([str(TOOLS / "invoke"), *KINDS[kind]], cwd=clone, extra_env=extra,
                     log_file=log_file)  # fmt: skip
    with log_file.open() as written:
        written.seek(mark)
        steps = steps_of(written.read())
    return {"kind": kind, "variant": variant, "seconds": seconds, "steps": steps}


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def render(data: dict) -> str:
    runs, variants = data["runs"], data["variants"]

    def pick(kind: str, variant: str, what: str) -> list[float]:
        chosen = [r for r in runs if r["kind"] == kind and r["variant"] == variant]
        if what == "wall":
            return [r["seconds"] for r in chosen]
        return [r["steps"].get(what, float("nan")) for r in chosen]

    floors = [f["seconds"] for f in data["floors"]]
    rows = [
        ("`invoke smoke` alone: its line", "smoke", "smoke"),
        ("`invoke smoke` alone: the process", "smoke", "wall"),
        ("tail: smoke (with the draft)", "tail", "smoke"),
        ("tail: push", "tail", "push"),
        ("tail: attest", "tail", "attest"),
        ("tail: the process", "tail", "wall"),
    ]
    names = list(variants)
    lines = [
        f"## The smoke step beside its floor, and the publish's tail, {data['date']}",
        "",
        f"Machine: {data['machine']}. Commit {data['commit'][:12]}; image `{data['image']}`. "
        f"{data['rounds']} rounds, variants alternating (AB, BA); medians. "
        + "; ".join(f"{v}: {d}" for v, d in variants.items())
        + ".",
        "",
        f"Floor (`docker run` to `/readyz` 200, one `POST /predict`, `docker rm -f`): "
        f"{med(floors):.2f} s (each: {', '.join(f'{s:.2f}' for s in floors)}).",
        "",
        "| measure | " + " | ".join(names) + " | " + " / ".join(reversed(names)) + " |",
        "|---|" + "---|" * len(names) + "---|",
    ]
    for label, kind, what in rows:
        cells = [med(pick(kind, v, what)) for v in names]
        ratio = cells[-1] / cells[0] if cells[0] else float("nan")
        lines.append(
            f"| {label} | " + " | ".join(f"{c:.2f} s" for c in cells) + f" | {ratio:.2f} |"
        )
    lines += ["", "Each run (seconds, in the order run):", ""]
    for r in runs:
        detail = ", ".join(f"{n} {s:.1f}" for n, s in r["steps"].items())
        lines.append(
            f"- round {r['round']} {r['kind']} {r['variant']}: {r['seconds']:.2f} ({detail})"
        )
    lines += ["", load_line(data)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = ab_arguments(__doc__.splitlines()[0], 5, "rounds (default: 5)")
    args = parser.parse_args()
    if args.render:
        print(render(json.loads(Path(args.render).read_text())))
        return
    stamp = time.strftime("%Y%m%d-%H%M%S")
    scratch, logs = scratch_dir("smoke-floor", stamp)
    log(f"clone, registry and logs in {scratch}")
    sources = variant_sources(args.a, scratch)
    data: dict = {
        **result_header(),
        "context": args.context,
        "rounds": args.rounds,
        "variants": {"A": f"git {args.a}'s src/", "B": "this tree's src/"},
        "runs": [],
        "floors": [],
    }
    registry = BenchRegistry(scratch / "registry")
    home = scratch / "bentoml"  # the clone's own BentoML store
    env = {
        "BENTOML_HOME": str(home),
        "CONTAINER_REGISTRY_HOST": registry.host,
        "PATH": f"{TOOLS}:/usr/bin:{os.environ['PATH']}",
    }
    image = ""
    try:
        clone = make_clone(scratch)
        trust_a_new_key(clone, scratch)
        image = data["image"] = f"{registry.host}/{SUITE_IMAGE}:{commit(clone)}"
        log("the first publish (B), untimed: the image every run tests")
        first = {**env, "PYTHONPATH": str(sources["B"])}
        run([str(TOOLS / "invoke"), *publish_steps()], cwd=clone, extra_env=first,
            log_file=logs / "first.log")  # fmt: skip
        for number in range(1, args.rounds + 1):
            order = "AB" if number % 2 else "BA"
            floor = floor_smoke(image, clone / SMOKE_REQUEST)
            data["floors"].append({"round": number, **floor})
            log(f"round {number}: floor {floor['seconds']:.2f} s")
            for kind in KINDS:
                for variant in order:
                    done = suite_run(kind, variant, sources[variant], clone, env, logs)
                    data["runs"].append({"round": number, **done})
                    log(f"round {number}: {kind} {variant} {done['seconds']:.2f} s {done['steps']}")
        data["load_after"] = machine_load()
    except BaseException:
        partial = write_partial("smoke-floor", stamp, data)
        log(f"failed: what was measured is in {partial}; logs in {logs}")
        raise
    finally:
        registry.stop()
        if image:
            run(["/usr/bin/docker", "rmi", "-f", image], check=False)
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    text = render(data)
    print(text)
    write_results("smoke-floor", stamp, data, text)
    log(f"wrote bench/results/smoke-floor-{stamp}.md and .json")


if __name__ == "__main__":
    sys.exit(main())
