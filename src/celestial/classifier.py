"""Inference with ONNX Runtime: the one class used by evaluation, the service and smoke tests.

A model directory (the pipeline's `model/`, or a BentoML store entry) holds:
  model.onnx        the MLP exported by skl2onnx (input "input", output "probabilities")
  preprocess.json   class names, input size, grayscale flag
Only numpy, Pillow and onnxruntime are imported (BentoML lazily, for `from_store`):
this module ships in the service image.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

from celestial.images import decode_image
from celestial.model_archive import CONFIG_FILE, MODEL_FILE
from celestial.preprocess import preprocess

PROB_DECIMALS = 6  # probabilities are rounded in answers, so JSON round-trips compare equal


class Classifier:
    """An ONNX model plus the preprocessing parameters it was trained with."""

    def __init__(self, onnx_model: bytes | str | Path, config: dict[str, Any]):
        self.class_names: list[str] = list(config["class_names"])
        self.image_size: list[int] = [int(s) for s in config["image_size"]]
        self.grayscale: bool = bool(config["grayscale"])
        self.config = dict(config)
        options = ort.SessionOptions()
        # One thread: tiny model, and results independent of thread scheduling.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        model = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        outputs = [o.name for o in self.session.get_outputs()]
        self.prob_output = "probabilities" if "probabilities" in outputs else outputs[-1]

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_model_dir(cls, path: str | Path) -> Classifier:
        """Load from a directory holding model.onnx and preprocess.json."""
        path = Path(path)
        config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
        return cls(path / MODEL_FILE, config)

    @classmethod
    def from_store(cls, tag: str) -> Classifier:
        """Load the model ``name:version`` from the BentoML model store ($BENTOML_HOME)."""
        import bentoml

        return cls.from_model_dir(bentoml.models.get(tag).path)

    # ---------------------------------------------------------------- inference

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """float32 features (N, n_features) -> probabilities (N, n_classes)."""
        features = np.ascontiguousarray(features, dtype=np.float32)
        (probs,) = self.session.run([self.prob_output], {self.input_name: features})
        return np.asarray(probs)

    def predict(self, image: Image.Image) -> dict[str, Any]:
        """PIL image (any mode/size) -> {"prediction": label, "probabilities": {label: p}}."""
        features = preprocess(image, self.image_size, self.grayscale)
        probs = self.predict_proba(features)[0]
        return format_prediction(probs, self.class_names)

    def predict_bytes(self, data: bytes) -> dict[str, Any]:
        """Encoded image bytes -> prediction; raises celestial.images.ImageRejected if bad."""
        return self.predict(decode_image(data))


def format_prediction(probs: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """The service's answer: top label and the rounded probability of every label."""
    best = int(np.argmax(probs))
    return {
        "prediction": class_names[best],
        "probabilities": {
            name: round(float(p), PROB_DECIMALS) for name, p in zip(class_names, probs, strict=True)
        },
    }
