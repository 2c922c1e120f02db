"""Make numeric code single-threaded so results do not depend on thread scheduling.

BLAS/OpenMP reductions summed by several threads can differ in the last bit from run
to run; one thread makes training and the exported weights bit-for-bit reproducible.
Call `pin_threads()` before importing numpy (the stage scripts do it first thing).
"""

from __future__ import annotations

import os

_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def pin_threads() -> None:
    """One compute thread: env vars for libraries not loaded yet, threadpoolctl for loaded ones."""
    for var in _THREAD_VARS:
        os.environ[var] = "1"
    # No telemetry calls from BentoML during the pipeline (offline, and no side effects).
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        return
    threadpool_limits(limits=1)
