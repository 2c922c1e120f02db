"""The prepare stage splits each class by params.yaml's split, every image in one part."""

import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def test_each_class_is_split_by_the_params(tmp_path, monkeypatch):
    from prepare import main

    monkeypatch.chdir(ROOT)  # params.yaml: split 0.2
    for name in ("Mars", "Venus"):
        (tmp_path / "raw" / name).mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (4, 4)).save(tmp_path / "raw" / name / f"{name}_{i}.jpg")
    main(tmp_path / "raw", tmp_path / "prepared")
    for name in ("Mars", "Venus"):
        val = {p.name for p in (tmp_path / "prepared" / "val" / name).iterdir()}
        train = {p.name for p in (tmp_path / "prepared" / "train" / name).iterdir()}
        assert len(val) == 2 and len(train) == 8 and not val & train
