"""Hostile inputs to ``POST /predict`` and the 4xx each must get: one table for every server.

Used against ``bentoml serve`` from ``src/`` (tests/ml/test_service.py) and against the image
pulled back from the registry (tests/integration/test_publish.py).
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image


def _png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def bad_requests(jpeg: bytes) -> dict[str, tuple[dict[str, Any], int]]:
    """``{case: (httpx.post keyword arguments, expected status)}``; ``jpeg``: a valid image."""
    bomb = _png(Image.new("1", (20000, 20000)))
    return {
        "not an image": (dict(files={"image": ("a.jpg", b"hello world", "image/jpeg")}), 400),
        "truncated": (dict(files={"image": ("a.jpg", jpeg[: len(jpeg) // 3], "image/jpeg")}), 400),
        "empty file": (dict(files={"image": ("a.jpg", b"", "image/jpeg")}), 400),
        "empty body": (dict(content=b""), 415),
        "json body": (dict(json={"image": "/etc/passwd"}), 415),
        "raw jpeg body": (dict(content=jpeg, headers={"content-type": "image/jpeg"}), 415),
        "no image field": (dict(files={"other": ("a.jpg", jpeg, "image/jpeg")}), 400),
        "image as text": (
            dict(data={"image": "http://127.0.0.1:1/x.jpg"}, files={"dummy": ("d", b"d")}),
            400,
        ),
        "decompression bomb": (dict(files={"image": ("b.png", bomb, "image/png")}), 413),
        "too many bytes": (
            dict(files={"image": ("a.jpg", b"\xff" * (11 * 1024 * 1024), "image/jpeg")}),
            413,
        ),
    }
