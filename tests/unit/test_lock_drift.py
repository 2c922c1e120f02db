"""`invoke check-reproduced`: outputs that changed although their stage's inputs did not."""

from __future__ import annotations

import copy

from cicd.dvc import unreproduced_outputs

LOCK = {
    "schema": "2.0",
    "stages": {
        "train": {
            "cmd": "python src/train.py data/prepared model model-blas.json",
            "deps": [{"path": "data/prepared", "md5": "aaa.dir"}],
            "params": {"params.yaml": {"train": {"epochs": 10}}},
            "outs": [
                {"path": "model", "md5": "m1.dir"},
                {"path": "model-blas.json", "md5": "b1"},
            ],
        },
        "evaluate": {
            "cmd": "python src/evaluate.py model data/prepared",
            "deps": [{"path": "model", "md5": "m1.dir"}],
            "outs": [{"path": "evaluation/metrics.json", "md5": "e1"}],
        },
    },
}


def test_identical_locks_reproduce():
    assert unreproduced_outputs(LOCK, copy.deepcopy(LOCK)) == []


def test_same_inputs_other_outputs_is_not_reproduced():
    current = copy.deepcopy(LOCK)
    current["stages"]["train"]["outs"][0]["md5"] = "m2.dir"
    current["stages"]["train"]["outs"][1]["md5"] = "b2"
    # evaluate's input (the model) changed, so its new metrics are expected, not drift
    current["stages"]["evaluate"]["deps"][0]["md5"] = "m2.dir"
    current["stages"]["evaluate"]["outs"][0]["md5"] = "e2"
    assert unreproduced_outputs(LOCK, current) == ["model", "model-blas.json"]


def test_changed_params_or_code_explain_new_outputs():
    current = copy.deepcopy(LOCK)
    current["stages"]["train"]["params"]["params.yaml"]["train"]["epochs"] = 20
    current["stages"]["train"]["outs"][0]["md5"] = "m2.dir"
    assert unreproduced_outputs(LOCK, current) == []
    current = copy.deepcopy(LOCK)
    current["stages"]["train"]["deps"][0]["md5"] = "bbb.dir"
    current["stages"]["train"]["outs"][0]["md5"] = "m2.dir"
    assert unreproduced_outputs(LOCK, current) == []


def test_a_new_stage_is_not_drift():
    current = copy.deepcopy(LOCK)
    current["stages"]["export"] = {"cmd": "x", "outs": [{"path": "out", "md5": "o"}]}
    assert unreproduced_outputs(LOCK, current) == []
