"""The four stage scripts end to end, in a temp dir with small params (a real run)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, SMALL_GENERATE, SMALL_PREPARE, SMALL_TRAIN

METRIC_KEYS = {"val_loss", "val_acc", "precision", "recall", "f1_score"}


@pytest.mark.slow
def test_stage_scripts_end_to_end(tmp_path):
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    params = {
        "generate": {**SMALL_GENERATE, "images_per_class": 12},
        "prepare": SMALL_PREPARE,
        "train": {**SMALL_TRAIN, "epochs": 3},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml")}
    for cmd in (
        ["src/generate.py", "data/raw"],
        ["src/prepare.py", "data/raw", "data/prepared"],
        ["src/train.py", "data/prepared", "model", "model-blas.json"],
        ["src/evaluate.py", "model", "data/prepared"],
    ):
        run = subprocess.run(
            [sys.executable, *cmd],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, f"{cmd}: {run.stderr[-2000:]}"

    metrics = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    assert set(metrics) == METRIC_KEYS
    assert all(isinstance(v, float) for v in metrics.values())
    assert all(0 <= metrics[k] <= 1 for k in METRIC_KEYS - {"val_loss"}) and metrics["val_loss"] > 0
    for png in ("training_history", "pred_preview", "confusion_matrix"):
        assert (tmp_path / "evaluation" / "plots" / f"{png}.png").stat().st_size > 1000
    history = json.loads((tmp_path / "model" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert (tmp_path / "model" / "celestial_bodies_classifier_model.bentomodel").is_file()
    assert len(list((tmp_path / "data" / "raw").glob("*/*.jpg"))) == 120
