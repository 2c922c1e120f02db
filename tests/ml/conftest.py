"""Shared fixtures for the ML tests: a small data set and model, made once per session.

``bentoml_home`` gives the tests that use a BentoML store their own (a temporary folder),
for the processes they start (BENTOML_HOME) and for BentoML in this process, and undoes both
at the end: nothing is set at import, so no other test of the session sees it and none
touches the shared ~/bentoml store.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
# Small but learnable: 10 classes x 30 images at 64 px, 32x32 RGB input, 15 epochs.
SMALL_GENERATE = {"seed": 5, "images_per_class": 30, "image_size": 64}
SMALL_PREPARE = {"seed": 77, "split": 0.2, "image_size": [32, 32], "grayscale": False}
SMALL_TRAIN = {
    "seed": 1,
    "epochs": 15,
    "hidden_layer_sizes": [64],
    "learning_rate": 0.003,
    "batch_size": 32,
    "alpha": 0.0001,
}


@pytest.fixture(scope="session")
def bentoml_home(tmp_path_factory) -> Iterator[Path]:
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models.model import ModelStore

    home = tmp_path_factory.mktemp("bentoml-home")
    for folder in ("models", "bentos", "envs", "tmp"):
        (home / folder).mkdir()
    container = BentoMLContainer
    with contextlib.ExitStack() as undo, pytest.MonkeyPatch.context() as env:
        env.setenv("BENTOML_HOME", str(home))  # the processes the tests start
        env.setenv("BENTOML_DO_NOT_TRACK", "True")
        # BentoML in this process caches its home and stores at first use: set them too.
        for provider, value in (
            (container.bentoml_home, str(home)),
            (container.model_store_dir, str(home / "models")),
            (container.bento_store_dir, str(home / "bentos")),
            (container.model_store, ModelStore(str(home / "models"))),
        ):
            provider.set(value)
            undo.callback(provider.reset)
        yield home


@pytest.fixture(scope="session")
def small_raw(tmp_path_factory) -> Path:
    from celestial.rendering import generate_dataset

    out = tmp_path_factory.mktemp("raw")
    generate_dataset(
        out,
        SMALL_GENERATE["images_per_class"],
        SMALL_GENERATE["image_size"],
        SMALL_GENERATE["seed"],
        workers=1,
    )
    return out


@pytest.fixture(scope="session")
def small_prepared(small_raw, tmp_path_factory) -> dict:
    from celestial.preparation import prepare_dataset
    from celestial.prepared_data import load_prepared

    out = tmp_path_factory.mktemp("prepared")
    p = SMALL_PREPARE
    prepare_dataset(small_raw, out, p["image_size"], p["grayscale"], p["split"], p["seed"])
    data = load_prepared(out)
    data["dir"] = out
    return data


@pytest.fixture(scope="session")
def trained(small_prepared) -> dict:
    """sklearn model, history, ONNX bytes and preprocessing config of the small model."""
    from celestial.preprocess import array_to_features
    from celestial.training import to_onnx, train_mlp

    x_train = array_to_features(small_prepared["x_train"])
    x_test = array_to_features(small_prepared["x_test"])
    info = small_prepared["info"]
    with contextlib.redirect_stdout(io.StringIO()):
        clf, history = train_mlp(
            x_train,
            small_prepared["y_train"],
            x_test,
            small_prepared["y_test"],
            len(info["class_names"]),
            SMALL_TRAIN,
        )
    config = {k: info[k] for k in ("class_names", "image_size", "grayscale")}
    return {
        "clf": clf,
        "history": history,
        "onnx": to_onnx(clf, x_train.shape[1]),
        "config": config,
        "x_test": x_test,
        "y_test": small_prepared["y_test"],
    }


@pytest.fixture(scope="session")
def stored_model(trained, bentoml_home, tmp_path_factory) -> dict:
    """The small model saved in the temp BentoML store and exported to a .bentomodel."""
    from celestial.bento_store import export_bentomodel, save_to_store

    tag = save_to_store(trained["onnx"], trained["config"], {"test": True})
    path = export_bentomodel(tag, tmp_path_factory.mktemp("export") / "m.bentomodel")
    return {"tag": tag, "bentomodel": path}


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
