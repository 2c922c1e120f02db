"""Training curve, ONNX parity with scikit-learn, store/export round trip, preprocessing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from celestial.classifier import Classifier
from celestial.images import ImageRejected, decode_image
from celestial.preprocess import array_to_features, image_to_array, n_features, preprocess


def test_training_history_improves(trained):
    h = trained["history"]
    assert [e["epoch"] for e in h] == list(range(1, len(h) + 1))
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    assert h[-1]["val_loss"] < h[0]["val_loss"]
    assert h[-1]["val_acc"] > 0.25  # chance is 0.10


def test_onnx_agrees_with_sklearn(trained):
    onnx_clf = Classifier(trained["onnx"], trained["config"])
    p_onnx = onnx_clf.predict_proba(trained["x_test"])
    p_skl = trained["clf"].predict_proba(trained["x_test"])
    assert p_onnx.shape == p_skl.shape
    np.testing.assert_allclose(p_onnx, p_skl, atol=1e-4)
    assert (p_onnx.argmax(1) == p_skl.argmax(1)).mean() >= 0.99


def test_predict_answer_shape(trained, small_raw):
    clf = Classifier(trained["onnx"], trained["config"])
    with Image.open(small_raw / "Mars" / "Mars_1.jpg") as img:
        out = clf.predict(img)
    assert out["prediction"] in trained["config"]["class_names"]
    assert list(out["probabilities"]) == trained["config"]["class_names"]
    assert abs(sum(out["probabilities"].values()) - 1) < 1e-3


def test_store_export_roundtrip_is_reproducible(stored_model, trained, tmp_path):
    from celestial.bento_store import export_bentomodel
    from celestial.reference import load_classifier
    from cicd.bentomodel import import_bentomodel, read_tag

    tag = stored_model["tag"]
    assert tag.startswith("celestial_bodies_classifier_model:")
    again = export_bentomodel(tag, tmp_path / "again.bentomodel")
    assert again.read_bytes() == stored_model["bentomodel"].read_bytes()
    assert read_tag(again) == tag
    assert import_bentomodel(again) == (tag, False)  # already in the store: no error
    x = trained["x_test"][:5]
    ref = Classifier(trained["onnx"], trained["config"]).predict_proba(x)
    for clf in (
        load_classifier(again),
        Classifier.from_store(tag),
    ):
        np.testing.assert_array_equal(clf.predict_proba(x), ref)


@pytest.mark.slow
def test_import_into_empty_store(stored_model, tmp_path):
    """A .bentomodel imports into a fresh store (what evaluate and a deploy do), given by a
    relative path as the DVC stages give it."""
    import subprocess
    import sys

    from conftest import ROOT

    code = (
        "import sys; from cicd.bentomodel import import_bentomodel as i; print(i(sys.argv[1])[0])"
    )
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT / "src")}
    archive = Path(stored_model["bentomodel"])
    for _ in range(2):  # second import of the same model is a no-op, not an error
        out = subprocess.run(
            [sys.executable, "-c", code, archive.name],
            env=env,
            cwd=archive.parent,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == stored_model["tag"]


@pytest.mark.parametrize("mode", ["P", "RGBA", "LA", "L", "1", "CMYK", "I;16", "I", "F"])
def test_preprocess_accepts_any_mode(mode):
    img = Image.new("RGB", (40, 30), (200, 100, 50))
    if mode in ("I;16", "I", "F"):
        img = Image.fromarray(
            np.full(
                (30, 40),
                40000 if mode != "F" else 0.5,
                dtype={"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode],
            )
        )
    else:
        img = img.convert(mode)
    x = preprocess(img, [16, 8], grayscale=False)
    assert x.shape == (1, n_features(3)) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0


def test_features_of_a_batch_are_those_of_each_image(small_prepared):
    """Training computes the features of the whole set at once, the service of one image:
    the same bits, or the served model would not be the evaluated one."""
    images = small_prepared["x_test"]
    batch = array_to_features(images)
    assert batch.shape == (len(images), n_features(3))
    np.testing.assert_array_equal(batch, np.concatenate([array_to_features(i) for i in images]))


def _textured_disc(rng, centre, size=32, radius=8):
    """A bright, noisy disc on black sky: an image (size, size, 3) uint8."""
    yy, xx = np.mgrid[0:size, 0:size]
    disc = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2
    texture = rng.integers(60, 255, (size, size, 3))
    return np.where(disc[..., None], texture, 0).astype(np.uint8)


def test_features_ignore_where_the_body_sits_and_how_it_is_turned(rng):
    """The features describe the body, not its place in the frame: moved, the same numbers;
    turned a quarter, the same but for the steps across and along, which swap."""
    image = _textured_disc(rng, (12, 12))
    here = array_to_features(image)[0]
    moved = array_to_features(np.roll(image, (6, 8), axis=(0, 1)))[0]
    np.testing.assert_allclose(moved, here, rtol=1e-6)
    turned = array_to_features(np.rot90(image))[0]
    across, along = slice(9, 12), slice(12, 15)  # after mean, std, hue (3 channels each)
    np.testing.assert_allclose(turned[across], here[along], rtol=1e-6)
    np.testing.assert_allclose(turned[along], here[across], rtol=1e-6)
    rest = np.r_[0:9, 15:19]
    np.testing.assert_allclose(turned[rest], here[rest], rtol=1e-6)


def test_features_of_an_empty_sky_and_of_grayscale(rng):
    """No pixel brighter than the sky: zeros, not NaN; one channel: fewer features."""
    assert not array_to_features(np.zeros((32, 32, 3), np.uint8)).any()
    gray = _textured_disc(rng, (16, 16))[..., :1]
    x = array_to_features(gray)
    assert x.shape == (1, n_features(1)) and np.isfinite(x).all() and x.any()


def test_sixteen_bit_is_scaled_not_clipped():
    img = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    assert abs(int(image_to_array(img, [4, 4], True).mean()) - 128) <= 1


def test_transparent_pixels_become_black():
    img = Image.new("RGBA", (4, 4), (255, 255, 255, 0))
    assert image_to_array(img, [4, 4], False).max() == 0


def _png(size, mode="RGB"):
    import io

    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"", 400),
        (b"this is not an image", 400),
        (_png((64, 64))[:60], 400),  # truncated
        (_png((5000, 4000), "1"), 413),  # more than 4096x4096 pixels, decoded never
    ],
)
def test_decode_image_rejects(data, status):
    with pytest.raises(ImageRejected) as err:
        decode_image(data)
    assert err.value.status == status and err.value.message


def test_decode_image_accepts_png():
    assert decode_image(_png((10, 12))).size == (10, 12)


def test_the_onnx_export_lists_its_opsets_in_a_fixed_order(trained):
    import onnx

    model = onnx.load_from_string(trained["onnx"])
    domains = [opset.domain for opset in model.opset_import]
    assert domains == sorted(domains) and len(domains) == 2


def test_the_store_check_reads_an_unchanged_model_once_per_process(
    stored_model, tmp_path, monkeypatch
):
    """import-model then bento, in one publish, check the store's model against the archive
    once; a write to a file of the store's entry (even of the same bytes: its ctime moves)
    makes the next check read both again."""
    import bentoml

    from cicd import bento

    archive = tmp_path / "model.bentomodel"
    archive.write_bytes(stored_model["bentomodel"].read_bytes())
    tag = stored_model["tag"]
    checks: list[Path] = []
    real = bento.import_checked
    monkeypatch.setattr(bento, "import_checked", lambda path: checks.append(path) or real(path))
    monkeypatch.setattr(bento, "_STORE_MATCHES", set())

    assert bento.import_once(archive, tag).imported is False  # the fixture stored this model
    assert bento.import_once(archive, tag).imported is False
    assert len(checks) == 1

    stored = next(p for p in sorted(Path(bentoml.models.get(tag).path).rglob("*")) if p.is_file())
    stored.write_bytes(stored.read_bytes())
    assert bento.import_once(archive, tag).imported is False
    assert len(checks) == 2

    archive.write_bytes(archive.read_bytes())  # the archive rewritten: read again too
    bento.import_once(archive, tag)
    assert len(checks) == 3
