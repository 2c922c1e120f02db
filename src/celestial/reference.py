"""The model's answers computed in this process, straight from its exported `.bentomodel`.

What the published image must answer: the suite's smoke test calls `predict_file` (invoke.yaml,
`suite.smoke.expect.function`), and tests and benchmarks compare the service with it. Not
shipped in the service image (bentofile.yaml's include), so it may use the suite's archive
reader (cicd.bentomodel).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from celestial.classifier import Classifier
from celestial.model_archive import CONFIG_FILE, MODEL_FILE
from cicd.bentomodel import read_members


def load_classifier(archive: str | Path) -> Classifier:
    """The classifier of an exported `.bentomodel` archive (no BentoML, no store)."""
    members = read_members(archive, (MODEL_FILE, CONFIG_FILE))
    return Classifier(members[MODEL_FILE], json.loads(members[CONFIG_FILE]))


def predict_file(archive: str | Path, data: bytes) -> dict[str, Any]:
    """The answer of the model in ``archive`` to one uploaded file: the service's JSON."""
    return load_classifier(archive).predict_bytes(data)
