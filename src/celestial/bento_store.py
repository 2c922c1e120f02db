"""Put the trained model into the BentoML model store and export it reproducibly.

Importing an archive back into a store is model-agnostic: cicd.bentomodel.import_bentomodel.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import lzma
import os
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from celestial import MODEL_NAME
from celestial.model_archive import CONFIG_FILE, MODEL_FILE


def fixed_creation_time() -> datetime:
    """Creation time written into model.yaml: SOURCE_DATE_EPOCH if set, else the epoch.

    BentoML stamps `datetime.now()` by default, which would make every export differ.
    A constant is honest here: the version already says which model this is (a hash).
    """
    return datetime.fromtimestamp(int(os.environ.get("SOURCE_DATE_EPOCH", "0")), tz=UTC)


def content_version(onnx_bytes: bytes, config: dict[str, Any]) -> str:
    """Model version derived from the content (not random): same model -> same tag."""
    h = hashlib.sha256(onnx_bytes)
    h.update(json.dumps(config, sort_keys=True).encode())
    return h.hexdigest()[:16]


def save_to_store(onnx_bytes: bytes, config: dict[str, Any], metadata: dict[str, Any]) -> str:
    """Create `celestial_bodies_classifier_model:<hash>` in the store; return the tag.

    If that exact version is already there (same content), it is replaced, which keeps
    re-running the stage harmless.
    """
    import bentoml
    from bentoml.exceptions import NotFound

    tag = f"{MODEL_NAME}:{content_version(onnx_bytes, config)}"
    with contextlib.suppress(NotFound):
        bentoml.models.delete(tag)
    with bentoml.models.create(
        tag, labels={"project": "celestial-bodies"}, metadata=metadata
    ) as model:
        # Model.create stamped "now" into its (frozen) ModelInfo, which is written to
        # model.yaml when the block exits; overwrite it with the fixed time.
        object.__setattr__(model.info, "creation_time", fixed_creation_time())
        Path(model.path_of(MODEL_FILE)).write_bytes(onnx_bytes)
        Path(model.path_of(CONFIG_FILE)).write_text(
            json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
    return tag


def export_bentomodel(tag: str, out_path: str | Path) -> Path:
    """Write the store entry `tag` as a .bentomodel archive with byte-stable content.

    `bentoml.models.export_model` uses shutil.make_archive, which records each file's
    mtime, owner and permissions: two identical models exported at different times (or
    by different users) give different bytes, so DVC would see a new output on every
    run. This writes the same layout (tar.xz, members "./<file>", readable by
    `bentoml.models.import_model`) with sorted members, mtime 0, uid/gid 0, no owner
    names and fixed modes; xz itself is deterministic.
    """
    import bentoml

    src = Path(bentoml.models.get(tag).path)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def norm(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mode = 0o755 if info.isdir() else 0o644
        return info

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(norm(tar.gettarinfo(str(src), arcname=".")))
        for path in sorted(src.rglob("*")):
            arcname = "./" + path.relative_to(src).as_posix()
            info = norm(tar.gettarinfo(str(path), arcname=arcname))
            if info.isfile():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            elif info.isdir():
                tar.addfile(info)
    out_path.write_bytes(lzma.compress(buf.getvalue(), format=lzma.FORMAT_XZ, preset=6))
    return out_path
