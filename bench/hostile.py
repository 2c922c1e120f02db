"""Malformed and hostile requests against POST /predict, over raw sockets to 127.0.0.1 only.

Each kind says what the service must answer (README: 400, 413 or 415, never 5xx). A request
is "lost" when no HTTP status comes back (reset, timeout). Bounded: `count` requests in all.
"""

from __future__ import annotations

import io
import socket
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

BOUNDARY = "hostileBoundary41c2"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
TOO_BIG = 11 * 1024 * 1024  # over the service's 10 MB limit


def part(
    name: str, data: bytes, filename: str | None = "x.jpg", ctype: str = "image/jpeg"
) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
    head += f"Content-Type: {ctype}\r\n\r\n" if filename else "\r\n"
    return head.encode() + data + b"\r\n"


def form(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height and holds no pixel data (a decompression-bomb probe)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )


def png_bomb(side: int = 6000) -> bytes:
    """A complete, valid PNG of side x side black pixels: tiny on the wire, 100 MB decoded."""
    from PIL import Image  # in requirements-freeze.txt

    out = io.BytesIO()
    Image.new("L", (side, side)).save(out, format="PNG", optimize=False, compress_level=9)
    return out.getvalue()


def jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its SOF header rewritten to claim width x height."""
    data = bytearray(jpeg)
    for marker in (b"\xff\xc0", b"\xff\xc2", b"\xff\xc1"):
        at = data.find(marker)
        if at > 0:
            data[at + 5 : at + 9] = struct.pack(">HH", height, width)
            return bytes(data)
    return bytes(data)


def kinds(jpeg: bytes) -> dict[str, dict]:
    """name -> {method, ctype, body, expect (allowed statuses), [declared_length]}"""
    bomb = png_bomb()
    post = lambda body, ctype=MULTIPART, expect=(400,): {  # noqa: E731
        "method": "POST",
        "ctype": ctype,
        "body": body,
        "expect": expect,
    }
    return {
        "text-as-image": post(form(part("image", b"hello, I am not an image\n" * 10))),
        "random-bytes": post(form(part("image", bytes(range(256)) * 16))),
        "truncated-jpeg": post(form(part("image", jpeg[: len(jpeg) // 2]))),
        "jpeg-header-only": post(form(part("image", jpeg[:200]))),
        "png-20000x20000-header": post(
            form(part("image", png_header(20000, 20000), "x.png")), expect=(400, 413)
        ),
        "png-6000x6000-bomb": post(
            form(part("image", bomb, "bomb.png", "image/png")), expect=(413,)
        ),
        "jpeg-claims-60000x60000": post(
            form(part("image", jpeg_with_size(jpeg, 60000, 60000))), expect=(400, 413)
        ),
        "empty-file": post(form(part("image", b""))),
        "empty-body": post(b""),
        "missing-image-field": post(form(part("file", jpeg))),
        "image-as-text-field": post(
            form(part("image", b"http://127.0.0.1:1/x.jpg", filename=None))
        ),
        "two-images": post(form(part("image", jpeg), part("image", jpeg))),
        "broken-multipart": post(
            b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: garbage\r\n\r\n" + jpeg[:100]
        ),
        "wrong-boundary": post(
            form(part("image", jpeg)), ctype="multipart/form-data; boundary=other"
        ),
        "json-body": post(b'{"image": "Mars_1.jpg"}', ctype="application/json", expect=(415,)),
        "raw-jpeg-body": post(jpeg, ctype="image/jpeg", expect=(415,)),
        "no-content-type": post(form(part("image", jpeg)), ctype="", expect=(415,)),
        "declared-11MB-body": {
            "method": "POST",
            "ctype": MULTIPART,
            "body": b"",
            "expect": (413,),
            "declared_length": TOO_BIG,
        },
        "get-predict": {"method": "GET", "ctype": "", "body": b"", "expect": (404, 405)},
    }


def send(host: str, port: int, kind: dict, timeout: float = 30) -> int | None:
    """One HTTP/1.1 request; the status code, or None if the answer was lost."""
    body = kind["body"]
    length = kind.get("declared_length", len(body))
    head = f"{kind['method']} /predict HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
    if kind["ctype"]:
        head += f"Content-Type: {kind['ctype']}\r\n"
    if kind["method"] == "POST":
        head += f"Content-Length: {length}\r\n"
    if "declared_length" in kind:  # announce a huge body, send it only if asked to (never is)
        head += "Expect: 100-continue\r\n"
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(head.encode() + b"\r\n" + body)
            answer = b""
            while b"\r\n" not in answer:
                chunk = sock.recv(4096)
                if not chunk:
                    return None
                answer += chunk
            status = int(answer.split(b" ", 2)[1])
            if status == 100:  # the server wants the 11 MB body: the guard did not stop it
                return 100
            while sock.recv(65536):  # drain until the server closes (Connection: close)
                pass
            return status
    except (OSError, ValueError, IndexError):
        return None


def attack(host: str, port: int, jpeg: bytes, count: int, concurrency: int = 8) -> dict:
    assert host == "127.0.0.1", "hostile requests go to the local container only"
    catalogue = kinds(jpeg)
    names = list(catalogue)
    plan = [names[i % len(names)] for i in range(count)]
    with ThreadPoolExecutor(concurrency) as pool:
        statuses = list(pool.map(lambda name: send(host, port, catalogue[name]), plan))
    by_kind: dict[str, dict[str, int]] = {}
    unexpected = 0
    for name, status in zip(plan, statuses, strict=True):
        key = str(status) if status is not None else "lost"
        by_kind.setdefault(name, {}).setdefault(key, 0)
        by_kind[name][key] += 1
        unexpected += status not in catalogue[name]["expect"]
    totals: dict[str, int] = {}
    for status in statuses:
        key = str(status) if status is not None else "lost"
        totals[key] = totals.get(key, 0) + 1
    return {
        "requests": count,
        "kinds": len(names),
        "statuses": totals,
        "by_kind": by_kind,
        "5xx": sum(1 for s in statuses if s is not None and s >= 500),
        "lost": statuses.count(None),
        "unexpected_status": unexpected,
    }
