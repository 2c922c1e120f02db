"""Read and write the prepared data set (`data/prepared/`).

Files: x_train.npy / x_test.npy (uint8 N x H x W x C), y_train.npy / y_test.npy (int64),
labels.json (class names and preprocessing), preview.png. Plain .npy, not .npz: numpy
writes .npz as a zip with the current time in it, which would break reproducibility.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def save_prepared(
    out_dir: str | Path, x_train, y_train, x_test, y_test, info: dict[str, Any]
) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, arr in (
        ("x_train", x_train),
        ("y_train", y_train),
        ("x_test", x_test),
        ("y_test", y_test),
    ):
        np.save(out / f"{name}.npy", arr, allow_pickle=False)
    (out / "labels.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def load_prepared(prepared_dir: str | Path) -> dict[str, Any]:
    """Return dict with x_train, y_train, x_test, y_test and `info` (labels.json)."""
    d = Path(prepared_dir)
    data: dict[str, Any] = {
        name: np.load(d / f"{name}.npy", allow_pickle=False)
        for name in ("x_train", "y_train", "x_test", "y_test")
    }
    data["info"] = json.loads((d / "labels.json").read_text(encoding="utf-8"))
    return data
