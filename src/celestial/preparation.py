"""The `prepare` stage's work: an image folder -> the prepared data set.

Each image goes through the one preprocessing function (`celestial.preprocess`, shared with
training, evaluation and the service), then a stratified split, stored as prepared data
(`celestial.prepared_data`) with a preview of what the model sees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from celestial.image_folder import list_images
from celestial.plots import save_image_grid
from celestial.prepared_data import save_prepared
from celestial.preprocess import image_to_array
from celestial.split import stratified_split


def prepare_dataset(
    raw_dir: str | Path, out_dir: str | Path, image_size, grayscale: bool, split: float, seed: int
) -> dict[str, Any]:
    """Image folder -> stratified split of resized uint8 arrays, labels.json and preview.png."""
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
