"""The BentoML service as a real process: `bentoml serve` on a port the OS assigns."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

from tests.support.hostile import bad_requests
from tests.support.project import listening_ports

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(stored_model, bentoml_home):
    bentoml_cli = Path(sys.executable).with_name("bentoml")
    proc = subprocess.Popen(
        [
            str(bentoml_cli),
            "serve",
            "serve:CelestialBodiesClassifier",
            "--arg",
            f"model_tag={stored_model['tag']}",
            "--host",
            "127.0.0.1",
            "--port",
            "0",  # the OS assigns the port and the server keeps it
        ],
        cwd=ROOT / "src",
        env={**os.environ, "BENTOML_HOME": str(bentoml_home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, "bentoml serve exited"
            url = next(filter(ready, map(_url, listening_ports(proc.pid))), None)
            if url:
                break
            assert time.monotonic() < deadline, "service not ready in 120 s"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _post(url, data: bytes, name="x.jpg", ctype="image/jpeg"):
    return httpx.post(f"{url}/predict", files={"image": (name, data, ctype)}, timeout=60)


def test_predicts_a_real_jpeg_like_the_local_model(server, small_raw, stored_model):
    from celestial.reference import load_classifier

    path = small_raw / "Jupiter" / "Jupiter_3.jpg"
    resp = _post(server, path.read_bytes())
    assert resp.status_code == 200, resp.text
    body = resp.json()
    with Image.open(path) as img:
        expected = load_classifier(stored_model["bentomodel"]).predict(img)
    assert body == expected
    assert set(body) == {"prediction", "probabilities"}


def test_the_smoke_tests_expected_answer_is_the_services(server, small_raw, stored_model, tmp_path):
    """invoke.yaml's suite.smoke (request and expect.function) against the real service."""
    from types import SimpleNamespace

    import yaml

    from cicd.settings import from_config
    from cicd.shell import Runner
    from cicd.smoke import check_answer, expected_answer

    root = Path(__file__).resolve().parents[2]
    config = yaml.safe_load((root / "invoke.yaml").read_text())
    smoke = config["suite"]["smoke"]
    smoke["request"] = {**smoke["request"], "path": str(small_raw / "Jupiter" / "Jupiter_3.jpg")}
    config["suite"]["model"]["archive"] = str(stored_model["bentomodel"])
    settings = from_config(root, config, {})
    expected = expected_answer(SimpleNamespace(settings=settings, dry=False, runner=Runner()))
    answer = _post(server, settings.smoke.request.path.read_bytes()).json()
    check_answer(answer, expected, settings.smoke.expect.tolerance)
    assert expected["prediction"] in expected["probabilities"]


@pytest.mark.parametrize("mode", ["P", "RGBA", "I;16"])
def test_other_modes_are_converted_and_classified(server, small_raw, mode):
    img = Image.open(small_raw / "Moon" / "Moon_1.jpg")
    if mode == "I;16":
        img = Image.fromarray(np.asarray(img.convert("L")).astype(np.uint16) * 257)
    else:
        img = img.convert(mode)
    resp = _post(server, _encode(img, "PNG"), "x.png", "image/png")
    assert resp.status_code == 200, resp.text
    assert resp.json()["prediction"]


def test_bad_inputs_get_4xx_and_service_survives(server, small_raw):
    jpeg = (small_raw / "Mars" / "Mars_1.jpg").read_bytes()
    for name, (kwargs, status) in bad_requests(jpeg).items():
        resp = httpx.post(f"{server}/predict", timeout=60, **kwargs)
        assert resp.status_code == status, f"{name}: {resp.status_code} {resp.text[:200]}"
        assert resp.json().get("error"), name
    ok = _post(server, (small_raw / "Mars" / "Mars_1.jpg").read_bytes())
    assert ok.status_code == 200
    assert httpx.get(f"{server}/readyz", timeout=5).status_code == 200


@pytest.mark.parametrize(
    "argument", [[], ["--arg", "model_tag=celestial_bodies_classifier_model:latest"]]
)
def test_the_service_refuses_to_start_without_an_exact_model(argument, stored_model, bentoml_home):
    # The store's `latest` is the last model saved on this machine, not the workspace's.
    done = subprocess.run(
        [str(Path(sys.executable).with_name("bentoml")), "serve", "serve:CelestialBodiesClassifier",
         *argument, "--port", "1"],
        cwd=ROOT / "src", env={**os.environ, "BENTOML_HOME": str(bentoml_home)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert "the service needs the exact model: --arg model_tag=" in done.stdout + done.stderr
