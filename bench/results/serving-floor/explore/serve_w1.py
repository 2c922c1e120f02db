"""BentoML service `celestial_bodies_classifier`: POST /predict with a multipart field `image`.

Answers {"prediction": label, "probabilities": {label: p}} using ONNX Runtime and the
same preprocessing as training (celestial.preprocess, through celestial.classifier).

Bad input never reaches a 500: the upload is read as raw bytes and decoded by
celestial.images.decode_image, which checks size and dimensions before decoding.
    400  missing `image` field, `image` sent as text, malformed multipart, empty file,
         not an image, corrupt or truncated image
    413  file over 10 MB, or more than 4096x4096 pixels (decompression bombs)
    415  request not multipart/form-data (the type declared for the file part itself is
         ignored: the bytes are sniffed, clients often send application/octet-stream)
Palette, RGBA/LA, 1-bit, 16-bit and CMYK images are converted (alpha over black) and
classified normally (200).

The multipart body is parsed once: `UploadGuard` vets it and, once the service is loaded,
answers POST /predict itself with the bytes it already holds (`answer`), inside BentoML's
metrics, tracing and timeout middlewares. BentoML's own endpoint (`predict`, same `answer`)
would parse the body a second time, spool the file to a temporary file for its `Path` input
and hop to a thread: about half of the worker's time per request (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import InvalidArgument

from celestial import MODEL_NAME, RUNTIME_BASE_IMAGE, SERVICE_NAME
from celestial.classifier import Classifier
from celestial.images import MAX_UPLOAD_BYTES, ImageRejected, decode_image

logger = logging.getLogger(__name__)

# Whole request body limit: the image limit plus room for the multipart envelope.
MAX_BODY_BYTES = MAX_UPLOAD_BYTES + 64 * 1024


class UploadGuard:
    """ASGI middleware that vets POST /predict before BentoML parses it.

    BentoML would answer a non-multipart request with a JSON validation error, and it
    treats a *text* field named `image` as a URL to download (a 500 when that fails,
    and a way to make the server fetch URLs). This guard answers those with clear 4xx
    instead, and caps the body size, then replays the buffered body unchanged.
    """

    def __init__(self, app, path: str = "/predict", max_bytes: int = MAX_BODY_BYTES):
        self.app, self.path, self.max_bytes = app, path, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        from starlette.datastructures import Headers, UploadFile
        from starlette.requests import Request

        headers = Headers(scope=scope)
        content_type = headers.get("content-type", "")
        if not content_type.lower().startswith("multipart/form-data"):
            return await _reply(
                send,
                415,
                "send the image as multipart/form-data with a file "
                f"field 'image' (got content type {content_type or 'none'!r})",
            )
        length = headers.get("content-length", "0")
        if not length.isdigit():
            return await _reply(send, 400, "invalid Content-Length")
        if int(length) > self.max_bytes:
            return await _reply(send, 413, f"request too large: {length} bytes > {self.max_bytes}")
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await _reply(send, 413, f"request too large: > {self.max_bytes} bytes")

        async def once():
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        try:
            form = await Request(scope, once).form(max_files=4, max_fields=16)
        except Exception as e:  # malformed multipart framing
            return await _reply(send, 400, f"malformed multipart body: {e}")
        try:
            images = form.getlist("image")
            if not images:
                return await _reply(send, 400, "missing file field 'image'")
            if len(images) > 1:
                return await _reply(send, 400, "send exactly one file in field 'image'")
            if not isinstance(images[0], UploadFile):
                return await _reply(send, 400, "field 'image' must be a file upload, not text")
            service = _loaded_service()
            if service is not None:  # parse once: answer with the bytes already in hand
                status, payload = await _classify(service.classifier, await images[0].read())
                return await _reply_answer(send, status, payload)
        finally:
            await form.close()

        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


async def _reply(send, status: int, message: str) -> None:
    await _send_json(send, status, {"error": message}, [])


# Uploads up to this size are classified on the event loop: a small image decodes in well
# under a millisecond, less than a hop to a worker thread costs. Bigger ones (up to 10 MB,
# 4096x4096) go to a thread, so that one slow decode does not stall the other connections.
INLINE_MAX_BYTES = 256 * 1024


def answer(classifier: Classifier, data: bytes) -> tuple[int, dict[str, Any]]:
    """The answer to one uploaded file: (HTTP status, JSON body); never raises for bad bytes."""
    try:
        return 200, classifier.predict(decode_image(data))
    except ImageRejected as e:
        return e.status, {"error": e.message}


async def _classify(classifier: Classifier, data: bytes) -> tuple[int, dict[str, Any]]:
    if len(data) <= INLINE_MAX_BYTES:
        return answer(classifier, data)
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(answer, classifier, data)


def _loaded_service():
    """This worker's service instance once BentoML has created it, else None."""
    try:
        service = bentoml.get_current_service()
    except Exception:  # not instantiated yet: BentoML's endpoint answers
        return None
    return service if isinstance(getattr(service, "classifier", None), Classifier) else None


async def _reply_answer(send, status: int, payload: dict[str, Any]) -> None:
    """An answer as BentoML's endpoint gives it: same JSON, Server and request-id headers."""
    headers = [(b"server", f"BentoML Service/{SERVICE_NAME}".encode())]
    try:
        from bentoml._internal.context import trace_context

        if trace_context.request_id is not None:
            request_id = format(trace_context.request_id, "016x").encode()
            headers.append((b"x-bentoml-request-id", request_id))
    except Exception:  # an internal of BentoML: the header is a courtesy, not part of the API
        pass
    await _send_json(send, status, payload, headers)


async def _send_json(send, status: int, obj: dict[str, Any], extra: list) -> None:
    payload = json.dumps(obj).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


# The runtime image: plain Python on the base image, nothing else. BentoML's default Debian
# recipe adds `apt-get install build-essential git` (about 540 MB) to compile packages from
# source; every serving package here is a wheel, so distro="none" (a distro BentoML does not
# manage) skips that layer: about 410 MB instead of 1 GB. Python packages: bentofile.yaml.
# Where Docker Hub is unreachable, scripts/build-base-image makes this base locally.
RUNTIME_IMAGE = bentoml.images.Image(
    base_image=RUNTIME_BASE_IMAGE, distro="none", python_version="3.11"
)


def model_tag() -> str:
    """The exact model this service serves: the bento argument ``model_tag``.

    Never the store's ``latest``: that is the last model saved on this machine, not the
    workspace's (after `dvc checkout` of an older commit, or `dvc pull`, they differ). The
    suite passes the tag of the workspace's .bentomodel to `bentoml build` and `bentoml serve`
    (`--arg model_tag=...`); a built bento records it in its bento.yaml, so the image
    serves the model it was built with, and `bentoml get` shows it under the service's models.
    """
    tag = getattr(bentoml.use_arguments(), "model_tag", None)
    if not tag or not str(tag).startswith(f"{MODEL_NAME}:") or str(tag).endswith(":latest"):
        raise InvalidArgument(
            f"the service needs the exact model: --arg model_tag={MODEL_NAME}:<version> "
            f"(got {tag!r}); `invoke bento` and `invoke serve` pass the workspace's model"
        )
    return str(tag)


# Two workers: one process serves one core, and BentoML's HTTP path costs ~6 ms per request
# against ~0.6 ms for the prediction (bench/run.py: 132 -> 292 requests/s at concurrency 8
# on 2 cores). Per-request access logs cost a measurable share of that path: off.
@bentoml.service(
    name=SERVICE_NAME,
    image=RUNTIME_IMAGE,
    traffic={"timeout": 30},
    workers=1,
    logging={"access": {"enabled": False}},
)
class CelestialBodiesClassifier:
    model = bentoml.models.BentoModel(model_tag())

    def __init__(self) -> None:
        self.classifier = Classifier.from_model_dir(self.model.path)
        logger.info("loaded %s: classes %s", self.model.tag, self.classifier.class_names)

    @bentoml.api(route="/predict")
    def predict(self, image: Path, ctx: bentoml.Context) -> dict[str, Any]:
        """Classify one image sent as multipart/form-data file field `image`.

        Declares the API (OpenAPI, clients); once the service is loaded, UploadGuard answers
        POST /predict with the same `answer` before this runs.
        """
        size = image.stat().st_size
        if size > MAX_UPLOAD_BYTES:
            status, payload = 413, {"error": f"file too large: {size} bytes > {MAX_UPLOAD_BYTES}"}
        else:
            status, payload = answer(self.classifier, image.read_bytes())
        ctx.response.status_code = status
        return payload


CelestialBodiesClassifier.add_asgi_middleware(UploadGuard)
