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


def prepare_dataset(
    raw_dir: str | Path, out_dir: str | Path, image_size, grayscale: bool, split: float, seed: int
) -> dict[str, Any]:
    """Image folder -> stratified split of resized uint8 arrays, labels.json and preview.png."""
    from PIL import Image

    from celestial.dataset import list_images
    from celestial.plots import save_image_grid
    from celestial.preprocess import image_to_array
    from celestial.split import stratified_split

    size = [int(s) for s in image_size]
    paths, labels, class_names = list_images(raw_dir)
    images = []
    for path in paths:
        with Image.open(path) as img:
            images.append(image_to_array(img, size, bool(grayscale)))
    x = np.stack(images)
    y = np.asarray(labels, dtype=np.int64)
    train_idx, test_idx = stratified_split(y, float(split), int(seed))
    info = {
        "class_names": class_names,
        "image_size": size,
        "grayscale": bool(grayscale),
        "n_train": len(train_idx),
        "n_test": len(test_idx),
    }
    save_prepared(out_dir, x[train_idx], y[train_idx], x[test_idx], y[test_idx], info)
    # A look at what the model sees: the first training images of each class.
    save_image_grid(Path(out_dir) / "preview.png", x[train_idx], y[train_idx], class_names)
    return info
