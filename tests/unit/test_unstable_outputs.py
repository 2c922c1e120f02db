"""`invoke check-reproduced` on a guide-style model whose export is not byte-stable
(bentoml.keras stamps a random version and the time): a retrain with the same metrics but
another model hash (docs/adopt-keras.md, friction 4). The message says what to do; an output
listed in suite.reproducibility.unstable_outputs is a warning, naming the metrics that matched."""

from __future__ import annotations

import copy
import io
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from cicd import dvc
from cicd.context import Run
from cicd.errors import SuiteError

ROOT = Path(__file__).resolve().parents[2]
DVC_YAML = {  # bench/anchor/repo/dvc.yaml's train stage: the model and its metrics
    "stages": {
        "train": {
            "cmd": "python src/train.py data/prepared model evaluation",
            "deps": ["src/train.py", "data/prepared"],
            "params": ["train"],
            "outs": ["model"],
            "metrics": [{"evaluation/metrics.json": {"cache": False}}],
        }
    }
}
LOCK = {
    "schema": "2.0",
    "stages": {
        "train": {
            "cmd": "python src/train.py data/prepared model evaluation",
            "deps": [{"path": "data/prepared", "md5": "aaa.dir"}],
            "params": {"params.yaml": {"train": {"epochs": 10}}},
            "outs": [
                {"path": "evaluation/metrics.json", "md5": "e1"},
                {"path": "model", "md5": "m1.dir"},
            ],
        }
    },
}
METRICS = {"val_acc": 0.83, "val_loss": 0.41}


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def committed(root: Path, dvc_yaml: dict, lock: dict) -> Path:
    """A repository with a committed training: dvc.yaml, dvc.lock and the metrics."""
    (root / "evaluation").mkdir(parents=True)
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml))
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    (root / "evaluation" / "metrics.json").write_text(json.dumps(METRICS))
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "trained")
    return root


@pytest.fixture
def retrained(tmp_path):
    """A committed training, then a retrain that gave another model hash."""
    root = committed(tmp_path / "repository", DVC_YAML, LOCK)
    lock = copy.deepcopy(LOCK)
    lock["stages"]["train"]["outs"][1]["md5"] = "m2.dir"
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    return root


def check(root: Path, unstable: list[str], in_ci: bool = True) -> str:
    config = yaml.safe_load((ROOT / "invoke.yaml").read_text())
    config["suite"]["reproducibility"] = {"blas_record": "", "unstable_outputs": unstable}
    run = Run.create(root, config, {"CI": "true"} if in_ci else {})
    run.runner.out = io.StringIO()
    dvc.check_reproduced(run)
    return run.runner.out.getvalue()


def test_an_unstable_output_with_the_same_metrics_is_a_warning_in_ci(retrained):
    shown = check(retrained, ["model"])
    assert shown.startswith(
        "warning: model came out in other bytes than dvc.lock records, as "
        "suite.reproducibility.unstable_outputs says they do, and the metrics reproduced "
        "(val_acc 0.83, val_loss 0.41)."
    ), shown
    assert "`invoke push-data`" in shown


def test_without_the_setting_the_error_says_what_to_do(retrained):
    with pytest.raises(SuiteError) as raised:
        check(retrained, [])
    message = str(raised.value)
    assert message.startswith("this run did not reproduce what the commit records: model came")
    assert message.endswith(
        ". The metrics reproduced (val_acc 0.83, val_loss 0.41): if model cannot come out byte "
        "for byte (an export that stamps a random version or the time, as "
        "bentoml.keras.save_model and bentoml.models.export_model do), make its export "
        "deterministic, or list model in suite.reproducibility.unstable_outputs (invoke.yaml): "
        "a retrain whose metrics reproduce is then a warning"
    ), message
    assert "\n" not in message
    # Locally the same words, as a warning.
    assert check(retrained, [], in_ci=False).startswith("warning: this run did not reproduce")


def test_other_metrics_are_an_error_even_for_an_unstable_output(tmp_path):
    # The metrics of a later stage (the template's evaluate): its input, the model, changed,
    # so its outputs are not drift; its metrics say whether the results reproduced.
    dvc_yaml = copy.deepcopy(DVC_YAML)
    del dvc_yaml["stages"]["train"]["metrics"]
    dvc_yaml["stages"]["evaluate"] = {
        "cmd": "python src/evaluate.py model",
        "deps": ["model"],
        "metrics": [{"evaluation/metrics.json": {"cache": False}}],
    }
    lock = copy.deepcopy(LOCK)
    lock["stages"]["evaluate"] = {
        "cmd": "python src/evaluate.py model",
        "deps": [{"path": "model", "md5": "m1.dir"}],
        "outs": [lock["stages"]["train"]["outs"].pop(0)],
    }
    root = committed(tmp_path / "repository", dvc_yaml, lock)
    lock["stages"]["train"]["outs"][0]["md5"] = "m2.dir"
    lock["stages"]["evaluate"]["deps"][0]["md5"] = "m2.dir"
    lock["stages"]["evaluate"]["outs"][0]["md5"] = "e2"
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert check(root, ["model"]).startswith("warning: model came out in other bytes")
    (root / "evaluation" / "metrics.json").write_text(json.dumps({**METRICS, "val_loss": 0.5}))
    with pytest.raises(SuiteError) as raised:
        check(root, ["model"])
    message = str(raised.value)
    assert "what the commit records: model came out different" in message
    assert message.endswith(". The metrics differ too: val_loss"), message


@pytest.mark.parametrize(
    ("suite", "message"),
    [
        ({"reproducibility": {"unstable_outputs": "model"}}, "give a list of files"),
        ({"unstable_outputs": ["model"]}, "unknown setting(s) unstable_outputs"),
    ],
)
def test_the_setting_is_a_list_under_reproducibility(suite, message):
    from cicd.settings import from_config

    config = yaml.safe_load((ROOT / "invoke.yaml").read_text())
    config["suite"].update(suite)
    with pytest.raises(SuiteError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_config(ROOT, config, {})
