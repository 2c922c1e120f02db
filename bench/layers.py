"""Bytes a registry receives per publish, from a cold engine: the suite beside the guide's lines.

    python bench/layers.py                 # the five scenarios, both sides (about 15 min here)
    python bench/layers.py --quick         # a first publish and one model-only change (~5 min)
    python bench/layers.py --render FILE   # only print the table of an earlier run

Issue 13, goal 1, "only changed layers travel". Four commits are published one after the
other to a registry that holds the previous one's image: a first publish, a model-only change
(`train.seed` + 1, `dvc repro`), a code-only change (one line in src/serve.py), a dependency
change (one more pinned package in bentofile.yaml). Each publish starts from a cold engine:
the build cache emptied (`docker builder prune -af`) and the local images of this bench's own
repositories removed (nothing else is removed; the base image stays, it cannot be pulled here).

- suite: the publish session's steps (noxfile.py's PUBLISH: `invoke check-published
  import-model bento containerize smoke push attest`, in the harness's environment), with a
  signing key as CI has one (attest signs `latest`, and the next build takes its layer cache
  only from a signed `latest`);
- guide: `bentoml models import`, `bentoml build`, `bentoml containerize ... --image-tag
  R/…:latest --image-tag R/…:<sha>`, `docker push --all-tags R/…` (bench/guide_baseline.sh's
  lines, with its documented differences).

Each side has its own registry (Debian's Distribution 2.8 binary, started by this script on
free ports, cicd.local_registry's pieces; 127.0.0.1:5050 is never touched) behind a byte-
counting TCP proxy: "received" is every byte the registry was sent (blobs, manifests,
headers), "sent" every byte it answered (the suite's layer-cache pull included). The
registry's storage is listed before and after: the new blobs, their sizes, and the build step
of each new layer (from the image config's history).

Issue 24, goal 3: after each model-only change, the floor under it, in plain docker and
registry operations on the same cold engine and the suite's registry (no suite code): `docker
pull` of the previous image (the unchanged layers, pulled and unpacked), a thin `docker build`
(`FROM` that image, one `COPY` of the new .bentomodel: the changed layer), the smoke test
(`docker run` to `/readyz` 200, one `POST /predict`), and `docker push` of the thin image (only
the changed layer travels). The table prints the suite, the guide's lines and the floor side by
side with the ratios suite / guide and suite / floor. Writes bench/results/layers-<time>.json
(raw) and .md, and layers-latest.*. Run it with the Python of an environment made from
requirements-freeze.txt plus the project (it provides invoke, dvc, bentoml), from a worktree
whose DVC outputs are checked out (its .dvc/cache is copied into the clone).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import runpy
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import (
    DOCKER,
    RESULTS,
    ROOT,
    TOOLS,
    commit,
    docker,
    image_refs,
    log,
    machine_load,
    result_header,
    run,
    scratch_dir,
    trust_a_new_key,
    write_partial,
    write_results,
)
from serving import Container, multipart, predict

from cicd import local_registry
from cicd.bentomodel import read_tag
from cicd.shell import Runner

HOST = "127.0.0.1"
ARCHIVE = Path("model/celestial_bodies_classifier_model.bentomodel")
SUITE_IMAGE, GUIDE_IMAGE = "celestial-bodies-classifier", "celestial-bodies-classifier-guide"
BENTO = "celestial_bodies_classifier"
SCENARIOS = (
    "first publish",
    "model-only change",
    "code-only change",  # after a build from the cache: moby/buildkit#2274's case
    "dependency change",
    "model-only change, again",
)
# The publish session without its registry check and smoke test (neither sends the registry
# a byte): what bench/sweep.py times. attest included: it moves `latest`, which the next build
# reads its layer cache from.
SUITE_STEPS = ["import-model", "bento", "containerize", "push", "attest"]
SMOKE_JPEG = ROOT / "data" / "raw" / "Mars" / "Mars_1.jpg"  # the floor's smoke request
FLOOR_MODEL_DIR = "/home/bentoml/bento/floor"  # where the thin build copies the new archive


def publish_steps() -> list[str]:
    """The publish session's invoke arguments, read from noxfile.py (one list, not two): the
    cold runner's real job, its smoke test included (the floor has one too)."""
    noxfile = runpy.run_path(str(ROOT / "noxfile.py"))
    return noxfile["invoke_arguments"](noxfile["PUBLISH"], [])


ADDED_PACKAGE = "six==1.17.0"  # in requirements-freeze.txt; small, pure Python


# -- a registry behind a byte-counting proxy ----------------------------------------------------


class CountingProxy:
    """TCP proxy HOST:port -> HOST:upstream counting the bytes each way (all connections)."""

    def __init__(self, upstream: int):
        self.upstream = upstream
        self.received = 0  # client -> registry
        self.sent = 0  # registry -> client
        self.lock = threading.Lock()
        self.server = socket.create_server((HOST, 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return self.received, self.sent

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection((HOST, self.upstream))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, inbound: bool) -> None:
        try:
            while chunk := source.recv(1 << 16):
                sink.sendall(chunk)
                with self.lock:
                    if inbound:
                        self.received += len(chunk)
                    else:
                        self.sent += len(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
            source.close()

    def close(self) -> None:
        self.server.close()


class BenchRegistry:
    """A Distribution binary on a free port with its own storage, reached through a proxy."""

    def __init__(self, state: Path, log_level: str = "warn"):
        self.state, self.data = state, state / "data"
        local_registry.private_dir(state)
        local_registry.private_dir(self.data)
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            self.port = probe.getsockname()[1]
        run_dir = self.run_dir = state / f"run-{self.port}"
        local_registry.private_dir(run_dir)
        config = local_registry.binary_config(HOST, self.port, self.data)
        config["log"] = {"level": log_level}  # info: every request (bench/sweep.py's mounts)
        local_registry.serve(Runner(), run_dir, config)
        local_registry.wait_until_up(f"http://{HOST}:{self.port}")
        self.proxy = CountingProxy(self.port)
        self.host = f"{HOST}:{self.proxy.port}"  # what docker and the suite are given

    def log_text(self) -> str:
        return (self.run_dir / "registry.log").read_text(errors="replace")

    def blobs(self) -> dict[str, int]:
        """digest -> size of every blob stored."""
        root = self.data / "docker" / "registry" / "v2" / "blobs" / "sha256"
        if not root.is_dir():
            return {}
        return {f"sha256:{p.parent.name}": p.stat().st_size for p in root.glob("*/*/data")}

    def blob(self, digest: str) -> bytes:
        hex_digest = digest.split(":", 1)[1]
        path = self.data / "docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"
        return path.read_bytes()

    def manifest(self, repository: str, tag: str) -> dict:
        link = self.data / "docker/registry/v2/repositories" / repository / "_manifests/tags"
        digest = (link / tag / "current" / "link").read_text().strip()
        return json.loads(self.blob(digest))

    def stop(self) -> None:
        self.proxy.close()
        local_registry.stop_port(Runner(), self.port, self.state)


# -- one publish ---------------------------------------------------------------------------------


def cold_engine(hosts: list[str]) -> None:
    """Empty the build cache; remove the local images of this bench's repositories only."""
    docker("builder", "prune", "-af")
    for host in hosts:
        refs = image_refs(f"{host}/")
        if refs:
            docker("rmi", "-f", *refs, check=False)


def layer_steps(registry: BenchRegistry, repository: str, tag: str) -> list[dict]:
    """The image's layers: digest, compressed size, and the build step that made each."""
    manifest = registry.manifest(repository, tag)
    config = json.loads(registry.blob(manifest["config"]["digest"]))
    steps = [h.get("created_by", "") for h in config.get("history", []) if not h.get("empty_layer")]
    steps = [""] * (len(manifest["layers"]) - len(steps)) + steps
    return [
        {"digest": layer["digest"], "size": layer["size"], "step": short_step(step)}
        for layer, step in zip(manifest["layers"], steps, strict=True)
    ]


def short_step(created_by: str) -> str:
    text = re.sub(r"\s+", " ", created_by.replace("/bin/sh -c #(nop) ", "").strip())
    text = re.sub(r"^\|\d+ (\S+=\S+ )*/bin/sh -c ", "RUN ", text)
    text = text.replace(" # buildkit", "")
    if "pip install -r" in text:
        return "RUN uv pip install (dependencies)"
    return text[:40] + ("…" if len(text) > 40 else "")


def publish(
    side: str,
    clone: Path,
    registry: BenchRegistry,
    hosts: list[str],
    logs: Path,
    label: str,
    suite_steps: list[str] = SUITE_STEPS,
    extra_env: dict[str, str] | None = None,
) -> dict:
    """One publish of the clone's commit by ``side`` from a cold engine; what it cost.
    ``extra_env``: more environment for the suite's invoke (bench/model_only.py's PYTHONPATH)."""
    cold_engine(hosts)
    home = Path(tempfile.mkdtemp(prefix=f"bentoml-{side}-", dir=logs))  # a fresh CI runner
    log_file = logs / f"{label}-{side}.log"
    extra = {"BENTOML_HOME": str(home), "PATH": f"{TOOLS}:/usr/bin:{os.environ['PATH']}"}
    sha = commit(clone)
    before_blobs = registry.blobs()
    before = registry.proxy.counts()
    start = time.perf_counter()
    if side == "suite":
        extra["CONTAINER_REGISTRY_HOST"] = registry.host
        extra.update(extra_env or {})
        _, output = run(
            [str(TOOLS / "invoke"), *suite_steps], cwd=clone, extra_env=extra, log_file=log_file
        )
        repository, tag = SUITE_IMAGE, sha
    else:
        archive = str(clone / ARCHIVE)
        reference = f"{registry.host}/{GUIDE_IMAGE}"
        model_tag = read_tag(clone / ARCHIVE)
        output = ""
        for command in (
            [str(TOOLS / "bentoml"), "models", "import", archive],
            [str(TOOLS / "bentoml"), "build", "-f", "bentofile.yaml",
             "--arg", f"model_tag={model_tag}", "src"],
            [str(TOOLS / "bentoml"), "containerize", f"{BENTO}:latest",
             "--image-tag", f"{reference}:latest", "--image-tag", f"{reference}:{sha}"],
            [DOCKER, "push", "--all-tags", reference],
        ):  # fmt: skip
            output += run(command, cwd=clone, extra_env=extra, log_file=log_file)[1]
        repository, tag = GUIDE_IMAGE, sha
    seconds = time.perf_counter() - start
    received, sent = (now - then for now, then in zip(registry.proxy.counts(), before, strict=True))
    new_blobs = {d: s for d, s in registry.blobs().items() if d not in before_blobs}
    layers = layer_steps(registry, repository, tag)
    for layer in layers:
        layer["new"] = layer["digest"] in new_blobs
    shutil.rmtree(home, ignore_errors=True)
    return {
        "seconds": seconds,
        "received_bytes": received,
        "sent_bytes": sent,
        "new_blob_bytes": sum(new_blobs.values()),
        "new_blobs": len(new_blobs),
        "image_bytes": sum(layer["size"] for layer in layers),
        "layers": layers,
        "cached_steps": len(re.findall(r"^#\d+ CACHED", output, re.MULTILINE)),
        "cache_imported": "importing cache manifest" in output,
    }


# -- the floor under a model-only change --------------------------------------------------------


def floor(
    clone: Path, registry: BenchRegistry, hosts: list[str], previous: str, logs: Path
) -> dict:
    """What any publish of a model-only change from a cold engine must do at the least, each
    part a plain docker or registry operation (no suite code), timed on its own:

    pull   `docker pull` of the previous image: its unchanged layers pulled and unpacked (the
           engine must hold them to build on them and to run the smoke test);
    build  a thin build: ``FROM`` the previous image, one ``COPY`` of the new .bentomodel
           (the changed layer, the same bytes the suite's model layer carries);
    smoke  `docker run` of the thin image until ``GET /readyz`` answers 200, one
           ``POST /predict`` of a JPEG, the container removed;
    push   `docker push` of the thin image to the registry holding the previous one: only the
           changed layer, its config and manifest travel.
    """
    cold_engine(hosts)
    log_file = logs / "floor.log"
    context = Path(tempfile.mkdtemp(prefix="floor-context-", dir=logs))
    shutil.copy2(clone / ARCHIVE, context / ARCHIVE.name)
    (context / "Dockerfile").write_text(
        f"FROM {previous}\nCOPY {ARCHIVE.name} {FLOOR_MODEL_DIR}/{ARCHIVE.name}\n"
    )
    thin = f"{registry.host}/{SUITE_IMAGE}:floor-{commit(clone)[:12]}"
    before = registry.proxy.counts()
    parts: dict[str, float] = {}
    parts["pull"], _ = run([DOCKER, "pull", previous], log_file=log_file)
    parts["build"], _ = run(
        [DOCKER, "build", "--tag", thin, str(context)],
        extra_env={"DOCKER_BUILDKIT": "1"},
        log_file=log_file,
    )
    body = multipart("image", SMOKE_JPEG.name, SMOKE_JPEG.read_bytes())
    begin = time.perf_counter()
    with Container(thin) as container:
        container.start()
        answer = predict(container.url, body)
    parts["smoke"] = time.perf_counter() - begin
    parts["push"], _ = run([DOCKER, "push", thin], log_file=log_file)
    received, sent = (now - then for now, then in zip(registry.proxy.counts(), before, strict=True))
    shutil.rmtree(context, ignore_errors=True)
    return {
        "seconds": sum(parts.values()),
        "parts": parts,
        "received_bytes": received,
        "sent_bytes": sent,
        "smoke_answer": answer.get("prediction"),
        "load": machine_load(),
    }


# -- the scenarios -------------------------------------------------------------------------------


def make_clone(scratch: Path) -> Path:
    clone = scratch / "clone"
    run(["git", "clone", "--quiet", str(ROOT), str(clone)])
    shutil.copytree(ROOT / ".dvc" / "cache", clone / ".dvc" / "cache")
    run([str(TOOLS / "dvc"), "checkout", "--quiet"], cwd=clone)
    for name, value in (("user.email", "bench@localhost"), ("user.name", "bench")):
        run(["git", "config", name, value], cwd=clone)
    return clone


def change(clone: Path, scenario: str) -> dict:
    """Make the scenario's commit in the clone; what changed, and its size in bytes."""
    if scenario == "first publish":
        return {"what": "the commit as it is", "bytes": None}
    if scenario.startswith("model-only change"):
        params = clone / "params.yaml"
        text = params.read_text()
        seed = int(re.search(r"^  seed: (\d+)$", text.split("train:", 1)[1], re.M).group(1))
        head, tail = text.split("train:", 1)
        params.write_text(head + "train:" + tail.replace(f"seed: {seed}", f"seed: {seed + 1}", 1))
        run([str(TOOLS / "dvc"), "repro"], cwd=clone)
        what, size = f"train.seed {seed} -> {seed + 1}, dvc repro", (clone / ARCHIVE).stat().st_size
        what += " (a new .bentomodel)"
    elif scenario == "code-only change":
        serve = clone / "src" / "serve.py"
        serve.write_text(serve.read_text() + "\n# bench/layers.py: a code-only change\n")
        what, size = "one comment line appended to src/serve.py", serve.stat().st_size
    else:
        bentofile = clone / "bentofile.yaml"
        text = bentofile.read_text()
        pinned = "    - pillow==13.0.0\n"
        assert pinned in text, "bentofile.yaml's package list changed: update bench/layers.py"
        bentofile.write_text(text.replace(pinned, pinned + f"    - {ADDED_PACKAGE}\n"))
        what, size = f"{ADDED_PACKAGE} added to bentofile.yaml's packages", None
    run(["git", "add", "-A"], cwd=clone)
    run(["git", "commit", "--quiet", "-m", f"bench: {scenario}"], cwd=clone)
    return {"what": what, "bytes": size}


# -- the table -----------------------------------------------------------------------------------


def mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 1e6:,.2f} MB"


def ratio(value: float, base: float | None) -> str:
    return f"{value / base:.2f}" if base else "n/a"


def render(data: dict) -> str:
    lines = [
        f"## Layers that travel, {data['date']}",
        "",
        f"Machine: {data['machine']}. Commit {data['commit'][:12]}. Run time "
        f"{data['run_seconds'] / 60:.1f} min. Each publish from a cold engine (build cache "
        "emptied, this bench's images removed), to a registry holding the previous image.",
        "",
        "| scenario | changed | side | registry received | new blobs stored | received / changed "
        "| new layers: those over 0.1 MB (MB) | build + push |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for item in data["scenarios"]:
        changed = item["change"]["bytes"]
        for side in ("suite", "guide"):
            r = item[side]
            fresh = [layer for layer in r["layers"] if layer["new"]]
            new = f"{len(fresh)}: " + "; ".join(
                f"{layer['step'] or 'base'} {layer['size'] / 1e6:.2f}"
                for layer in fresh
                if layer["size"] > 100_000
            )
            lines.append(
                f"| {item['scenario']} | {item['change']['what']} ({mb(changed)}) | {side} | "
                f"{mb(r['received_bytes'])} | {mb(r['new_blob_bytes'])} ({r['new_blobs']}) | "
                f"{ratio(r['received_bytes'], changed)} | {new if fresh else 'none'} | "
                f"{r['seconds']:.0f} s |"
            )
    lines += floor_lines(data)
    lines += ["", "Layers of the suite's last image (compressed MB, bottom first):", ""]
    last = data["scenarios"][-1]["suite"]["layers"]
    lines += [f"{i}. {layer['step'] or 'base'}: {layer['size'] / 1e6:.2f}" for i, layer in
              enumerate(last, 1)]  # fmt: skip
    return "\n".join(lines) + "\n"


def floor_lines(data: dict) -> list[str]:
    """Goal 3's table: each model-only change, the suite beside the guide's lines and the floor
    (none in results written before the floor was measured)."""
    rows = [item for item in data["scenarios"] if "floor" in item]
    if not rows:
        return []
    steps = " ".join(data.get("suite_steps", SUITE_STEPS))
    lines = [
        "",
        "Model-only change from a cold runner, beside its floor (issue 24, goal 3). suite: "
        f"`invoke {steps}`; guide: its four lines; floor: plain docker on the same cold engine "
        "and the suite's registry: pull of the previous image, a thin build (`FROM` it, `COPY` "
        "the new .bentomodel), smoke (`docker run` to `/readyz` 200, one `POST /predict`), push.",
        "",
        "| scenario | suite | guide | floor: pull + build + smoke + push | suite / guide "
        "| suite / floor | floor: registry received | load (1 min) at the floor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for item in rows:
        suite, guide, low = item["suite"]["seconds"], item["guide"]["seconds"], item["floor"]
        parts = " + ".join(f"{low['parts'][k]:.1f}" for k in ("pull", "build", "smoke", "push"))
        lines.append(
            f"| {item['scenario']} | {suite:.1f} s | {guide:.1f} s | {low['seconds']:.1f} s "
            f"({parts}) | {ratio(suite, guide)} | {ratio(suite, low['seconds'])} | "
            f"{mb(low['received_bytes'])} | {low['load']['load1']:.2f} |"
        )
    if "load_before" in data and "load_after" in data:
        before, after = data["load_before"]["load1"], data["load_after"]["load1"]
        busy = "; ".join(data["load_after"]["busy"]) or "none at 10 % CPU or more"
        lines += [
            "",
            f"1-minute load: {before:.2f} before the run, {after:.2f} after; busy at the end: "
            f"{busy}."
            + (" **A busy machine**: re-run it idle before taking these figures."
               if max(before, after) >= 1.5 else ""),
        ]  # fmt: skip
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a first publish and one model-only")
    parser.add_argument("--keep", action="store_true", help="keep the clone, logs, registries")
    parser.add_argument("--render", metavar="JSON", help="only print the table of a results file")
    args = parser.parse_args()
    if args.render:
        print(render(json.loads(Path(args.render).read_text())))
        return
    begin = time.perf_counter()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    scratch, logs = scratch_dir("layers", stamp)
    log(f"clone, registries and logs in {scratch}")
    steps = publish_steps()
    data: dict = {**result_header(), "suite_steps": steps, "scenarios": []}
    registries = {side: BenchRegistry(scratch / f"registry-{side}") for side in ("suite", "guide")}
    hosts = [r.host for r in registries.values()]
    try:
        clone = make_clone(scratch)
        trust_a_new_key(clone, scratch)
        previous = None  # the suite's image of the commit published before
        for scenario in SCENARIOS[:2] if args.quick else SCENARIOS:
            log(f"{scenario}: making the commit")
            item = {"scenario": scenario, "change": change(clone, scenario)}
            for side in ("suite", "guide"):
                log(f"{scenario}: {side} publishes from a cold engine")
                label = scenario.split()[0]
                item[side] = publish(side, clone, registries[side], hosts, logs, label, steps)
                log(f"  {side}: {item[side]['seconds']:.1f} s, received "
                    f"{mb(item[side]['received_bytes'])}")  # fmt: skip
            if scenario.startswith("model-only change") and previous:
                log(f"{scenario}: the floor (plain docker) from a cold engine")
                item["floor"] = floor(clone, registries["suite"], hosts, previous, logs)
                log(f"  floor: {item['floor']['seconds']:.1f} s {item['floor']['parts']}")
            previous = f"{registries['suite'].host}/{SUITE_IMAGE}:{commit(clone)}"
            data["scenarios"].append(item)
        data["load_after"] = machine_load()
    except BaseException:
        partial = write_partial("layers", stamp, data)
        log(f"failed: what was measured is in {partial}; logs in {logs}")
        raise
    finally:
        for registry in registries.values():
            registry.stop()
        cold_engine(hosts)
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    data["run_seconds"] = time.perf_counter() - begin
    text = render(data)
    print(text)
    name = "layers-quick" if args.quick else "layers"  # a quick run keeps the full run's latest
    write_results(name, stamp, data, text)
    log(f"wrote {RESULTS}/{name}-{stamp}.md and .json in {data['run_seconds'] / 60:.1f} min")


if __name__ == "__main__":
    sys.exit(main())
