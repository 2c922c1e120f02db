"""Stage train: the guide's CNN (bench/anchor/train_keras.py), params from params.yaml.

Usage: python src/train.py <prepared-folder> <model-folder> <evaluation-folder>

Saves the model to the BentoML store with its preprocess/postprocess as custom objects and
exports it to <model-folder>/celestial_bodies_classifier_model.bentomodel (the guide's way);
writes <evaluation-folder>/metrics.json (held-out val_loss, val_acc).
"""

import json
import os
import random
import sys
from pathlib import Path

import bentoml
import keras
import numpy as np
import tensorflow as tf
import yaml
from PIL.Image import Image

MODEL_NAME = "celestial_bodies_classifier_model"


def set_seed(seed: int) -> None:
    """The guide's src/utils/seed.py (one TensorFlow thread)."""
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    os.environ["TF_DETERMINISTIC_OPS"] = "1"
    os.environ["TF_CUDNN_DETERMINISTIC"] = "1"
    tf.random.set_seed(seed)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)


def load_images(folder: Path, image_size: list[int], grayscale: bool, seed: int):
    ds = tf.keras.utils.image_dataset_from_directory(
        folder, labels="inferred", label_mode="int", batch_size=32, image_size=image_size,
        color_mode="grayscale" if grayscale else "rgb", shuffle=True, seed=seed,
    )  # fmt: skip
    rescale = keras.layers.Rescaling(1.0 / 255)
    return ds.map(lambda x, y: (rescale(x), y)), ds.class_names


def main(prepared: Path, model_folder: Path, evaluation: Path) -> None:
    params = yaml.safe_load(Path("params.yaml").read_text())
    prepare, train = params["prepare"], params["train"]
    image_size, grayscale = prepare["image_size"], prepare["grayscale"]
    set_seed(train["seed"])
    ds_train, labels = load_images(prepared / "train", image_size, grayscale, prepare["seed"])
    ds_val, _ = load_images(prepared / "val", image_size, grayscale, prepare["seed"])
    ds_train = ds_train.shuffle(ds_train.cardinality(), seed=train["seed"])

    model = keras.models.Sequential(
        [
            keras.layers.Input(shape=(*image_size, 1 if grayscale else 3)),
            keras.layers.Conv2D(train["conv_size"], (3, 3), activation="relu"),
            keras.layers.MaxPooling2D((3, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(train["dense_size"], activation="relu"),
            keras.layers.Dense(len(labels)),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(train["lr"]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
    )
    model.fit(ds_train, epochs=train["epochs"], validation_data=ds_val, verbose=2)

    def preprocess(x: Image):
        x = x.convert("L" if grayscale else "RGB").resize(image_size)
        x = np.array(x, dtype=np.float32) / 255.0
        if x.ndim == 2:
            x = np.expand_dims(x, axis=-1)
        return np.expand_dims(x, axis=0)

    def postprocess(x):
        return {
            "prediction": labels[tf.argmax(x, axis=-1).numpy()[0]],
            "probabilities": {
                labels[i]: p for i, p in enumerate(tf.nn.softmax(x).numpy()[0].tolist())
            },
        }

    bentoml.keras.save_model(
        MODEL_NAME, model, include_optimizer=True,
        custom_objects={"preprocess": preprocess, "postprocess": postprocess},
    )  # fmt: skip
    model_folder.mkdir(parents=True, exist_ok=True)
    bentoml.models.export_model(
        f"{MODEL_NAME}:latest", f"{model_folder.absolute()}/{MODEL_NAME}.bentomodel"
    )
    val_loss, val_acc = model.evaluate(ds_val, verbose=0)
    evaluation.mkdir(parents=True, exist_ok=True)
    metrics = {"val_loss": float(val_loss), "val_acc": float(val_acc)}
    (evaluation / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    print(f"trained: val_acc {val_acc:.4f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
