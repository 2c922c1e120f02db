"""A file's md5 and sha256, read once per process while the file stays the same.

A publish runs its steps in one process (noxfile.py) and several of them need the model
archive's hashes: its sha256 names the model in the image's label (import-model, bento,
containerize, push and attest each identify the target), its md5 binds it to ``dvc.lock``
(import-model checks it, attest records it). The archive can be hundreds of megabytes, so it
is read once, both hashes from the same bytes, and the next caller gets them from here.

Cached by what changes whenever the file's content does: the resolved path, the inode, the
size, and the modification and status-change times in nanoseconds. The status-change time
cannot be set back by a user (``os.utime`` sets only the access and modification times), so
a file rewritten in place is read again even if its size and mtime were restored.
Not used by cicd.bentomodel, which a model's own code imports (the evaluate stage): a
change here would then be a change of that stage's code.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CHUNK = 1 << 20

_Key = tuple[str, int, int, int, int, int]
_KNOWN: dict[_Key, tuple[str, str]] = {}


def state(path: str | Path) -> _Key:
    """What identifies the content of the file at ``path`` now (the cache's key)."""
    resolved = Path(path).resolve()
    return _key(resolved, os.stat(resolved))


def hashes(path: str | Path) -> tuple[str, str]:
    """(md5 hex, ``sha256:<hex>``) of the file at ``path``, from one read of its bytes."""
    resolved = Path(path).resolve()
    key = _key(resolved, os.stat(resolved))
    known = _KNOWN.get(key)
    if known is not None:
        return known
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with resolved.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            md5.update(chunk)
            sha.update(chunk)
        after = os.fstat(stream.fileno())
    found = (md5.hexdigest(), "sha256:" + sha.hexdigest())
    if _key(resolved, after) == key:  # not cached when it changed while it was read
        _KNOWN[key] = found
    return found


def reads() -> int:
    """How many different file states were hashed in this process (tests count them)."""
    return len(_KNOWN)


def forget() -> None:
    """Drop every cached hash (tests)."""
    _KNOWN.clear()


def _key(path: Path, stat: os.stat_result) -> _Key:
    return (str(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
