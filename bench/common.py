"""Helpers shared by the benchmark scripts: timed commands, docker calls, medians. Stdlib only."""

from __future__ import annotations

import json
import math
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"  # committed: README's tables are these files (bench/readme.py)
DOCKER = "/usr/bin/docker"  # Debian's 20.10 client: it builds without buildx (the 28 one cannot)
TOOLS = Path(sys.executable).parent  # the environment running the harness (nox, invoke, bentoml)


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def env(**extra: str) -> dict[str, str]:
    """The environment for a benchmarked command: the harness's tools first, no telemetry."""
    base = {**os.environ, "BENTOML_DO_NOT_TRACK": "True"}
    base["PATH"] = f"{TOOLS}{os.pathsep}{base.get('PATH', '')}"
    for noisy in (
        "VIRTUAL_ENV",
        "CI",
        "GITHUB_ACTIONS",
        "GITLAB_CI",
        "GITHUB_SHA",
        "CI_COMMIT_SHA",
    ):
        base.pop(noisy, None)
    return {**base, **extra}


class CommandFailed(RuntimeError):
    pass


def run(
    command: list[str],
    *,
    cwd: Path | None = None,
    extra_env: dict[str, str] | None = None,
    log_file: Path | None = None,
    check: bool = True,
    timeout: float = 1200,
) -> tuple[float, str]:
    """Run a command; return (wall seconds, stdout+stderr). Output also goes to log_file."""
    start = time.perf_counter()
    done = subprocess.run(
        command,
        cwd=cwd,
        env=env(**(extra_env or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    elapsed = time.perf_counter() - start
    _record(command, cwd, elapsed, done.returncode, done.stdout, log_file, check)
    return elapsed, done.stdout


def run_stamped(
    command: list[str],
    *,
    cwd: Path | None = None,
    extra_env: dict[str, str] | None = None,
    log_file: Path | None = None,
) -> tuple[float, list[tuple[float, str]]]:
    """Run a command; return (wall seconds, [(seconds since start, output line)]): where a
    command's time goes, read from when each of its lines appeared."""
    start = time.perf_counter()
    lines: list[tuple[float, str]] = []
    with subprocess.Popen(
        command,
        cwd=cwd,
        env=env(**(extra_env or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        for line in process.stdout or ():
            lines.append((time.perf_counter() - start, line.rstrip("\n")))
    elapsed = time.perf_counter() - start
    output = "".join(f"{at:7.2f} {line}\n" for at, line in lines)
    _record(command, cwd, elapsed, process.returncode, output, log_file, check=True)
    return elapsed, lines


def _record(
    command: list[str],
    cwd: Path | None,
    elapsed: float,
    returncode: int,
    output: str,
    log_file: Path | None,
    check: bool,
) -> None:
    """Append a finished command and its output to log_file; raise if it failed."""
    if log_file:
        with log_file.open("a") as out:
            out.write(f"\n$ {' '.join(command)}  (cwd={cwd}, {elapsed:.2f} s, rc={returncode})\n")
            out.write(output)
    if check and returncode != 0:
        tail = "\n".join(output.splitlines()[-30:])
        raise CommandFailed(f"`{' '.join(command)}` failed ({returncode}):\n{tail}")


def commit(where: Path = ROOT) -> str:
    """The commit checked out at ``where``: every result file records the one it measured."""
    return run(["git", "rev-parse", "HEAD"], cwd=where)[1].strip()


def write_partial(name: str, stamp: str, data: dict) -> Path:
    """What a failed run had measured: bench/results/NAME-STAMP-partial.json."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    partial = RESULTS / f"{name}-{stamp}-partial.json"
    partial.write_text(json.dumps(data, indent=1, default=str) + "\n")
    return partial


def write_results(name: str, stamp: str, data: dict, text: str) -> None:
    """bench/results/NAME-STAMP.{json,md} and NAME-latest.*: the raw figures and the table
    rendered from them (README shows the latest .md through bench/readme.py)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    for version in (stamp, "latest"):
        (RESULTS / f"{name}-{version}.json").write_text(
            json.dumps(data, indent=1, default=str) + "\n"
        )
        (RESULTS / f"{name}-{version}.md").write_text(text)


def docker(*args: str, check: bool = True) -> str:
    done = subprocess.run([DOCKER, *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise CommandFailed(f"docker {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def image_refs(prefix: str, part: str = "") -> list[str]:
    """Local images whose repository starts with prefix: repo:tag, or the id once untagged
    (a rebuild moves the tags to the new image and leaves the old one dangling)."""
    listing = docker("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}")
    refs = []
    for line in listing.splitlines():
        ref, image_id = line.rsplit(" ", 1)
        if ref.startswith(prefix) and part in ref:
            refs.append(image_id if ref.endswith(":<none>") else ref)
    return list(dict.fromkeys(refs))


def image_size(reference: str) -> int:
    return int(docker("image", "inspect", "--format", "{{.Size}}", reference))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def machine() -> str:
    """What each result file records about the machine: CPU, memory, OS, Python, engine."""
    debian = Path("/etc/debian_version")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    engine = docker("version", "--format", "{{.Server.Version}}", check=False)
    return (
        f"{cpu_model()}, {platform.machine()}, {os.cpu_count()} cores, {memory:.0f} GiB, "
        f"Debian {debian.read_text().strip() if debian.exists() else '?'}, "
        f"Python {platform.python_version()}, dockerd {engine}"
    )


def cpu_model() -> str:
    """The CPU's model name and its widest vector unit (numerics differ between them)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = re.search(r"^model name\s*:\s*(.+)$", info, re.MULTILINE)
    flags = set((re.search(r"^flags\s*:\s*(.+)$", info, re.MULTILINE) or [""] * 2)[1].split())
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{name[1].strip() if name else platform.processor() or 'CPU ?'} ({vector})"


def machine_load() -> dict:
    """1-minute load average and the busiest other processes (the load generator, the
    proxy and the service under test excluded): what else ran beside a figure."""
    load1 = float(Path("/proc/loadavg").read_text().split()[0])
    ps = subprocess.run(
        ["ps", "-eo", "pid=,pcpu=,comm=,args=", "--sort=-pcpu"], capture_output=True, text=True
    ).stdout.splitlines()
    busy = []
    for line in ps[:25]:
        pid, pcpu, comm, *args = line.split(None, 3)
        mine = int(pid) == os.getpid()
        if mine or comm in ("hey", "docker-proxy", "ps") or "_bentoml_impl.worker" in line:
            continue
        if float(pcpu) >= 10:
            busy.append(f"{pcpu}% {comm} {(args or [''])[0][:90]}")
    return {"load1": load1, "busy": busy[:6]}


def git_commit(clone: Path, message: str) -> None:
    """Commit everything in ``clone`` as the bench's own identity (a fresh machine has none)."""
    run(["git", "add", "-A"], cwd=clone)
    identity = ["-c", "user.email=bench@localhost", "-c", "user.name=bench"]
    run(["git", *identity, "commit", "--quiet", "--allow-empty", "-m", message], cwd=clone)


def trust_a_new_key(clone: Path, scratch: Path) -> None:
    """A signing key for the suite's publishes, as CI has one (SIGNING_KEY): without it a
    warm publish rebuilds (an unsigned image is never trusted as published) and a build
    reads its layer cache only from a signed `latest`. The public half is committed in the
    clone (`invoke keygen`); the private half goes to this process's environment (the
    commands inherit it; the guide's lines ignore it) and is never printed."""
    private = scratch / "signing-key.pem"
    run([str(TOOLS / "invoke"), "keygen", "--private-key", str(private)], cwd=clone)
    git_commit(clone, "bench: a signing key for the bench's publishes")
    os.environ["SIGNING_KEY"] = private.read_text()
    private.unlink()


def scratch_dir(name: str, stamp: str) -> tuple[Path, Path]:
    """A run's scratch directory under /tmp and its logs/ folder (clones, registries, stores
    and every command's output go there; the script says where, and what it keeps)."""
    scratch = Path(tempfile.mkdtemp(prefix=f"bench-{name}-{stamp}-"))
    logs = scratch / "logs"
    logs.mkdir()
    return scratch, logs


def result_header(where: Path = ROOT) -> dict:
    """What every result file starts with: when (UTC), on what machine, which commit, and the
    load before the run (the machines are shared: a figure without it cannot be judged)."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "commit": commit(where),
        "load_before": machine_load(),
    }
