"""Train the MLP epoch by epoch and export it to ONNX (scikit-learn side of the project).

The model is a scikit-learn pipeline: a StandardScaler, then the MLP. The features
(celestial.preprocess) are on very different scales (a colour mean near 0.5, a texture
step near 0.01): scaled to zero mean and unit variance, the MLP learns in 10 epochs what
it did not learn unscaled (0.99 against 0.85 held-out accuracy). The scaler is part of
the exported ONNX graph, so the service feeds it the same unscaled features.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, log_loss
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from celestial import SERVICE_NAME

ONNX_INPUT = "input"
ONNX_TARGET_OPSET = 17  # pinned so a converter upgrade does not silently change the file


def train_mlp(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    n_classes: int,
    params: dict[str, Any],
) -> tuple[Pipeline, list[dict]]:
    """Fit the scaler on the training rows, then train the MLP with one `partial_fit` call
    per epoch; return the pipeline (scaler, MLP) and the per-epoch history.

    Each history entry: epoch, train_loss, val_loss, val_acc (log loss on the full sets
    after the epoch, so train and validation are directly comparable).
    """
    scaler = StandardScaler().fit(x_train)
    x_train, x_val = scaler.transform(x_train), scaler.transform(x_val)
    clf = MLPClassifier(
        hidden_layer_sizes=tuple(int(h) for h in params["hidden_layer_sizes"]),
        learning_rate_init=float(params["learning_rate"]),
        batch_size=int(params["batch_size"]),
        alpha=float(params["alpha"]),
        random_state=int(params["seed"]),
        solver="adam",
        shuffle=True,
    )
    classes = np.arange(n_classes)
    history = []
    for epoch in range(1, int(params["epochs"]) + 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.partial_fit(x_train, y_train, classes=classes)
        p_train = clf.predict_proba(x_train)
        p_val = clf.predict_proba(x_val)
        history.append(
            {
                "epoch": epoch,
                "train_loss": round(float(log_loss(y_train, p_train, labels=classes)), 6),
                "val_loss": round(float(log_loss(y_val, p_val, labels=classes)), 6),
                "val_acc": round(float(accuracy_score(y_val, p_val.argmax(axis=1))), 6),
            }
        )
        print(
            "epoch {epoch:3d}  train_loss {train_loss:.4f}  val_loss {val_loss:.4f}  "
            "val_acc {val_acc:.4f}".format(**history[-1])
        )
    return Pipeline([("scale", scaler), ("mlp", clf)]), history


def to_onnx(clf: Pipeline, n_features: int) -> bytes:
    """Convert to ONNX: input `input` float32 (N, n_features); outputs label, probabilities."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(
        clf,
        initial_types=[(ONNX_INPUT, FloatTensorType([None, n_features]))],
        options={id(clf): {"zipmap": False}},  # plain probability tensor, not a list of dicts
        target_opset=ONNX_TARGET_OPSET,
    )
    # skl2onnx names the graph with a random uuid: fix it, or every export differs.
    onx.graph.name = SERVICE_NAME
    # It also lists the opsets in the order of a set: seen to differ in 1 of 7 CI runs, with
    # the same weights. Sorted by domain, the file depends on the model only.
    opsets = sorted(onx.opset_import, key=lambda opset: (opset.domain, opset.version))
    del onx.opset_import[:]
    onx.opset_import.extend(opsets)
    return onx.SerializeToString()
