"""Stage `evaluate`: the exported model (through ONNX Runtime) on the held-out split.

Usage: python src/evaluate.py <model_dir> <prepared_dir>
Imports <model_dir>/celestial_bodies_classifier_model.bentomodel into the BentoML store
(no-op if already there) and evaluates exactly what will be served. Writes
evaluation/metrics.json and evaluation/plots/{training_history,pred_preview,confusion_matrix}.png.
"""

import json
import sys
from pathlib import Path

from celestial.determinism import pin_numerics

pin_numerics()

import bentoml  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    accuracy_score,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
)

from celestial import MODEL_ARCHIVE  # noqa: E402
from celestial.classifier import Classifier  # noqa: E402
from celestial.plots import plot_confusion_matrix, plot_history, plot_predictions  # noqa: E402
from celestial.prepared_data import load_prepared  # noqa: E402
from celestial.preprocess import array_to_features  # noqa: E402
from cicd.bentomodel import import_bentomodel  # noqa: E402

OUT_DIR = Path("evaluation")


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: python src/evaluate.py <model_dir> <prepared_dir>")
    model_dir, prepared_dir = Path(sys.argv[1]), Path(sys.argv[2])
    tag, _ = import_bentomodel(model_dir / MODEL_ARCHIVE)
    classifier = Classifier.from_model_dir(bentoml.models.get(tag).path)

    data = load_prepared(prepared_dir)
    x_test, y_test = data["x_test"], data["y_test"]
    names = data["info"]["class_names"]
    labels = list(range(len(names)))
    probs = classifier.predict_proba(array_to_features(x_test))
    y_pred = probs.argmax(axis=1)

    precision, recall, f1, _ = precision_recall_fscore_support(
        y_test, y_pred, labels=labels, average="macro", zero_division=0
    )
    metrics = {
        "val_loss": round(float(log_loss(y_test, probs, labels=labels)), 6),
        "val_acc": round(float(accuracy_score(y_test, y_pred)), 6),
        "precision": round(float(precision), 6),
        "recall": round(float(recall), 6),
        "f1_score": round(float(f1), 6),
    }
    (OUT_DIR / "plots").mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")

    history = json.loads((model_dir / "history.json").read_text(encoding="utf-8"))
    plot_history(history, OUT_DIR / "plots" / "training_history.png")
    plot_confusion_matrix(
        confusion_matrix(y_test, y_pred, labels=labels),
        names,
        OUT_DIR / "plots" / "confusion_matrix.png",
    )
    plot_predictions(x_test, y_test, y_pred, names, OUT_DIR / "plots" / "pred_preview.png")
    print(f"evaluate: {tag} " + " ".join(f"{k}={v}" for k, v in metrics.items()))


if __name__ == "__main__":
    main()
