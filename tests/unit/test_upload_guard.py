"""serve.UploadGuard: the checks before BentoML, and the one-parse answer of POST /predict.

The guard parses the multipart body once; when the worker's service is loaded it answers
with the bytes in hand (BentoML's endpoint would parse the body again and spool the file to
disk), else it replays the body unchanged to BentoML. Driven as a bare ASGI app, no server.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys

import pytest
from PIL import Image

from tests.support.project import ROOT

BOUNDARY = "guardTestBoundary"


@pytest.fixture(scope="module")
def serve(tmp_path_factory, monkeypatch_module):
    from bentoml._internal.utils.args import set_arguments

    monkeypatch_module.setenv("BENTOML_HOME", str(tmp_path_factory.mktemp("bentoml")))
    monkeypatch_module.syspath_prepend(str(ROOT / "src"))
    set_arguments({"model_tag": "celestial_bodies_classifier_model:guardtest"})
    sys.modules.pop("serve", None)
    import serve

    yield serve
    sys.modules.pop("serve", None)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


class FakeClassifier:
    def __init__(self):
        self.seen: list[tuple[int, int]] = []

    def predict(self, image):
        self.seen.append(image.size)
        return {"prediction": "Mars", "probabilities": {"Mars": 1.0}}


class FakeService:
    def __init__(self):
        self.classifier = FakeClassifier()


def _png(size=(8, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def _part(name: str, data: bytes, filename: str | None = "x.png") -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"


def _body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def call(serve, body: bytes, content_type: str | None = None, method: str = "POST"):
    """Run one request through UploadGuard(app); return (status, headers, json, app_body)."""
    received: list[bytes] = []

    async def app(scope, receive, send):  # stands for BentoML: records what it gets
        message = await receive()
        received.append(message["body"])
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    content_type = content_type or f"multipart/form-data; boundary={BOUNDARY}"
    scope = {
        "type": "http",
        "method": method,
        "path": "/predict",
        "headers": [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict] = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(serve.UploadGuard(app)(scope, receive, send))
    start, payload = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    headers = dict(start["headers"])
    return start["status"], headers, json.loads(payload), received


@pytest.fixture
def loaded(serve, monkeypatch):
    service = FakeService()
    monkeypatch.setattr(serve.bentoml, "get_current_service", lambda: service)
    return service


def test_loaded_service_answers_from_the_one_parse(serve, loaded):
    status, headers, answer, app_got = call(serve, _body(_part("image", _png((9, 7)))))
    assert status == 200
    assert answer == {"prediction": "Mars", "probabilities": {"Mars": 1.0}}
    assert loaded.classifier.seen == [(9, 7)]
    assert app_got == []  # BentoML's endpoint never ran: no second parse, no temporary file
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"server"].startswith(b"BentoML Service/")


def test_a_big_upload_is_classified_off_the_event_loop_with_the_same_answer(serve, loaded):
    noise = Image.effect_noise((400, 400), 80).convert("RGB")  # PNG well over 256 KiB
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG")
    assert len(buffer.getvalue()) > serve.INLINE_MAX_BYTES
    status, _, answer, app_got = call(serve, _body(_part("image", buffer.getvalue())))
    assert (status, answer["prediction"], app_got) == (200, "Mars", [])


@pytest.mark.parametrize(
    ("data", "status"),
    [(b"hello world", 400), (b"", 400), (_png()[:40], 400)],
    ids=["not-an-image", "empty-file", "truncated"],
)
def test_bad_bytes_get_the_documented_4xx_from_the_fast_path(serve, loaded, data, status):
    got, _, answer, app_got = call(serve, _body(_part("image", data)))
    assert got == status and answer["error"] and app_got == []
    assert loaded.classifier.seen == []


def test_a_bomb_gets_413_before_decoding(serve, loaded):
    buffer = io.BytesIO()
    Image.new("1", (5000, 5000)).save(buffer, format="PNG")
    status, _, answer, _ = call(serve, _body(_part("image", buffer.getvalue())))
    assert status == 413 and "too large" in answer["error"]


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"{}", "application/json", 415),
        (_body(_part("other", b"x")), None, 400),
        (_body(_part("image", b"http://127.0.0.1:1/x.jpg", filename=None)), None, 400),
        (_body(_part("image", b"a"), _part("image", b"b")), None, 400),
        (b"--nope\r\nbroken", None, 400),
    ],
    ids=["json", "missing-field", "image-as-text", "two-images", "broken-multipart"],
)
def test_requests_refused_before_any_classification(serve, loaded, body, content_type, status):
    got, _, answer, app_got = call(serve, body, content_type)
    assert got == status and answer["error"] and app_got == []
    assert loaded.classifier.seen == []


def test_without_a_loaded_service_the_body_goes_to_bentoml_unchanged(serve, monkeypatch):
    def not_yet():
        raise RuntimeError("service isn't instantiated yet")

    monkeypatch.setattr(serve.bentoml, "get_current_service", not_yet)
    body = _body(_part("image", _png()))
    status, _, _, app_got = call(serve, body)
    assert status == 299 and app_got == [body]
