"""Stage `train`: scaler + MLP trained epoch by epoch -> ONNX -> BentoML store -> .bentomodel.

Usage: python src/train.py <prepared_dir> <model_dir> <blas_record>
Writes <model_dir>/model.onnx, preprocess.json, history.json and
<model_dir>/celestial_bodies_classifier_model.bentomodel (and the model in $BENTOML_HOME),
and <blas_record>: the BLAS library and kernel that computed the weights (kept in git, so
that a retrain that does not reproduce dvc.lock can say which kernel made the difference).
"""

import json
import sys
from pathlib import Path

from celestial.determinism import blas_record, differs_from_reference, pin_numerics

pin_numerics()

from celestial import MODEL_ARCHIVE  # noqa: E402
from celestial.bento_store import export_bentomodel, save_to_store  # noqa: E402
from celestial.model_archive import CONFIG_FILE, MODEL_FILE  # noqa: E402
from celestial.params import load_params  # noqa: E402
from celestial.prepared_data import load_prepared  # noqa: E402
from celestial.preprocess import array_to_features  # noqa: E402
from celestial.training import to_onnx, train_mlp  # noqa: E402


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit("usage: python src/train.py <prepared_dir> <model_dir> <blas_record>")
    prepared_dir, model_dir, blas_path = (Path(arg) for arg in sys.argv[1:])
    params = load_params(section="train")
    data = load_prepared(prepared_dir)
    info = data["info"]
    x_train, x_test = array_to_features(data["x_train"]), array_to_features(data["x_test"])

    clf, history = train_mlp(
        x_train, data["y_train"], x_test, data["y_test"], len(info["class_names"]), params
    )
    onnx_bytes = to_onnx(clf, x_train.shape[1])
    config = {
        "class_names": info["class_names"],
        "image_size": info["image_size"],
        "grayscale": info["grayscale"],
        "preprocessing": "celestial.preprocess.preprocess: RGB (alpha over black), "
        "optional grayscale, bilinear resize, then the body's colour, coverage and texture "
        "(array_to_features); the model's first step standardises them",
    }

    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / MODEL_FILE).write_bytes(onnx_bytes)
    (model_dir / CONFIG_FILE).write_text(
        json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    (model_dir / "history.json").write_text(json.dumps(history, indent=2) + "\n", encoding="utf-8")

    blas = blas_record()
    blas_path.write_text(json.dumps(blas, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    warning = differs_from_reference(blas)
    if warning:
        print(f"train: warning: {warning}", file=sys.stderr)

    metadata = {
        **config,
        "train_params": params,
        "final_val_acc": history[-1]["val_acc"],
        "blas": blas,
    }
    tag = save_to_store(onnx_bytes, config, metadata)
    out = export_bentomodel(tag, model_dir / MODEL_ARCHIVE)
    print(f"train: saved {tag} and exported {out}")


if __name__ == "__main__":
    main()
