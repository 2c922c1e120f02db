"""Generator determinism and layout; user-supplied image folders; the stratified split."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from celestial.image_folder import list_images
from celestial.preparation import prepare_dataset
from celestial.prepared_data import load_prepared
from celestial.rendering import CLASSES, generate_dataset
from celestial.split import stratified_split


def _bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.jpg"))}


def test_generator_is_byte_identical_for_same_seed(tmp_path):
    a = _bytes_of(tmp_path / "a", seed=11)
    b = _bytes_of(tmp_path / "b", seed=11)
    c = _bytes_of(tmp_path / "c", seed=12)
    assert a == b
    assert a.keys() == c.keys() and a != c


def _bytes_of(root, seed, n=2, workers=1):
    generate_dataset(root, n, 128, seed, workers=workers)
    return _bytes(root)


def test_generator_parallel_and_prefix_stable(tmp_path):
    serial = _bytes_of(tmp_path / "s", seed=3, n=6, workers=1)
    parallel = _bytes_of(tmp_path / "p", seed=3, n=6, workers=2)
    fewer = _bytes_of(tmp_path / "f", seed=3, n=2, workers=1)
    assert serial == parallel
    assert all(serial[k] == v for k, v in fewer.items())


def test_generator_layout(small_raw):
    classes = sorted(d.name for d in small_raw.iterdir())
    assert classes == sorted(CLASSES) and len(classes) == 10
    for name in classes:
        files = sorted(p.name for p in (small_raw / name).iterdir())
        assert files == sorted(f"{name}_{n}.jpg" for n in range(1, 31))
    with Image.open(small_raw / "Saturn" / "Saturn_1.jpg") as img:
        assert img.format == "JPEG" and img.mode == "RGB" and img.size == (64, 64)


def test_classes_not_separable_by_mean_colour(small_raw):
    """Per-image mean colour alone must not identify the class (the task has to be real)."""
    paths, labels, _ = list_images(small_raw)
    means = np.array([np.asarray(Image.open(p), dtype=np.float64).mean(axis=(0, 1)) for p in paths])
    labels = np.asarray(labels)
    # nearest class-centroid classifier on mean colour, leave-in (optimistic) accuracy
    centroids = np.stack([means[labels == k].mean(axis=0) for k in range(10)])
    pred = np.argmin(((means[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (pred == labels).mean() < 0.8


def _user_folder(root):
    """3 classes, unsorted creation order, PNG and JPEG, mixed sizes and modes."""
    rng = np.random.default_rng(0)
    specs = {
        "gamma": ((50, 70), "PNG", "RGBA"),
        "Alpha": ((200, 100), "JPEG", "RGB"),
        "beta": ((33, 33), "PNG", "P"),
    }
    for cls, (size, fmt, mode) in specs.items():
        (root / cls).mkdir(parents=True)
        for i in range(5):
            arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            img = Image.fromarray(arr).convert(mode)
            ext = "png" if fmt == "PNG" else "jpeg"
            img.save(root / cls / f"img{i}.{ext.upper() if i == 0 else ext}", format=fmt)
    (root / "notes.txt").write_text("ignored")
    (root / "Alpha" / "readme.md").write_text("ignored")
    return root


def test_user_image_folder(tmp_path):
    raw = _user_folder(tmp_path / "raw")
    paths, labels, names = list_images(raw)
    assert names == ["Alpha", "beta", "gamma"]  # folder names, sorted
    assert len(paths) == 15 and sorted(set(labels)) == [0, 1, 2]
    info = prepare_dataset(raw, tmp_path / "prep", [20, 10], True, 0.4, 1)
    data = load_prepared(tmp_path / "prep")
    assert info["class_names"] == names
    assert data["x_train"].shape == (9, 10, 20, 1) and data["x_test"].shape == (6, 10, 20, 1)
    assert data["x_train"].dtype == np.uint8
    assert (tmp_path / "prep" / "preview.png").is_file()


def test_stratified_split_is_stratified_disjoint_and_seeded():
    labels = np.repeat(np.arange(4), [10, 20, 5, 2])
    train, test = stratified_split(labels, 0.2, seed=7)
    assert set(train).isdisjoint(test) and len(train) + len(test) == len(labels)
    assert [int((labels[test] == k).sum()) for k in range(4)] == [2, 4, 1, 1]
    assert all((labels[train] == k).any() for k in range(4))
    again = stratified_split(labels, 0.2, seed=7)
    other = stratified_split(labels, 0.2, seed=8)
    assert np.array_equal(test, again[1]) and not np.array_equal(test, other[1])


def test_split_rejects_bad_fraction():
    with pytest.raises(ValueError):
        stratified_split([0, 1], 1.5, 0)
