"""Make numeric code give the same bits on every run and on every x86-64 machine.

Two things change the last bits of a matrix product, and so the trained weights:
- threads: BLAS/OpenMP reductions summed by several threads depend on scheduling, so the
  stages run one compute thread;
- the CPU: numpy's OpenBLAS picks its kernel per CPU at load time (SkylakeX on AVX-512,
  Haswell on AVX2), and the kernels round differently. Like MKL's conditional numerical
  reproducibility (MKL_CBWR), one kernel that every x86-64 CPU with AVX2 and FMA runs is
  pinned instead: the Haswell kernel (Intel since 2013, every AMD Zen). A kernel already
  set in the environment (OPENBLAS_CORETYPE) is left as it is.

Call `pin_numerics()` first thing in a stage script, before numpy is imported: OpenBLAS
reads OPENBLAS_CORETYPE once, when it is loaded.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

# The kernel the committed results (dvc.lock) were computed with.
REFERENCE_KERNEL = "Haswell"
KERNEL_VARIABLE = "OPENBLAS_CORETYPE"

_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def pin_numerics() -> None:
    """One compute thread and the reference BLAS kernel, for libraries not loaded yet."""
    for var in _THREAD_VARS:
        os.environ[var] = "1"
    pin_blas_kernel(os.environ, cpu_flags())
    # No telemetry calls from BentoML during the pipeline (offline, and no side effects).
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        return
    threadpool_limits(limits=1)


def pin_blas_kernel(environ: MutableMapping[str, str], flags: frozenset[str] | None) -> bool:
    """Set the reference kernel unless the environment chose one or the CPU cannot run it.

    ``flags``: the CPU's feature flags, None where they cannot be read (not Linux, not
    x86-64). Returns True when the reference kernel was pinned here.
    """
    if environ.get(KERNEL_VARIABLE):
        return False
    if flags is None or not {"avx2", "fma"} <= flags:
        return False
    environ[KERNEL_VARIABLE] = REFERENCE_KERNEL
    return True


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """The x86-64 CPU's feature flags (Linux), or None elsewhere (ARM, macOS, Windows)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return None


def blas_record() -> dict[str, Any]:
    """The BLAS libraries loaded in this process and the kernel each uses (threadpoolctl).

    Only what is the same on every machine that computes the same bits (no file paths,
    no thread counts), so that the record itself is reproducible.
    """
    from threadpoolctl import threadpool_info

    libraries = sorted(
        (
            {
                "library": info.get("internal_api"),
                "prefix": info.get("prefix"),
                "version": info.get("version"),
                "kernel": info.get("architecture"),
            }
            for info in threadpool_info()
            if info.get("user_api") == "blas"
        ),
        key=lambda entry: (str(entry["prefix"]), str(entry["version"])),
    )
    return {"reference_kernel": REFERENCE_KERNEL, "libraries": libraries}


def kernels(record: Mapping[str, Any]) -> list[str]:
    """The kernels named in a `blas_record()` (one per library, usually all the same)."""
    return sorted({str(library["kernel"]) for library in record["libraries"]})


def differs_from_reference(record: Mapping[str, Any]) -> str | None:
    """A one-line warning when the record's kernels are not the reference kernel."""
    used = kernels(record)
    if used == [REFERENCE_KERNEL]:
        return None
    return (
        f"BLAS kernel {', '.join(used) or 'unknown'} instead of {REFERENCE_KERNEL} "
        f"(this CPU cannot run it, or {KERNEL_VARIABLE} chose another): the trained model "
        "will differ in its last bits from one trained on an x86-64 machine with AVX2, "
        "so dvc.lock will not match the committed one"
    )
