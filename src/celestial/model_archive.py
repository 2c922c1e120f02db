"""Read an exported model archive (`.bentomodel`: a tar.xz of BentoML's model directory).

The one reader of the archive, for the pipeline (evaluate), the suite (the model's tag and
digest for the image) and the tests. Standard library and PyYAML only: it is cheap to import.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Sequence
from pathlib import Path

import yaml

# The model's files, in the store's model directory and so in the archive.
MODEL_FILE = "model.onnx"
CONFIG_FILE = "preprocess.json"  # class names and input size: what preprocess() needs


class ArchiveError(ValueError):
    """Not a readable model archive (missing, truncated, not tar.xz, no model.yaml)."""


def read_members(path: str | Path, names: Sequence[str]) -> dict[str, bytes]:
    """Read named regular files from the archive, in memory.

    Only the requested names are read, never extracted, so a hostile archive cannot
    write anywhere. Member names may carry a leading "./" (shutil.make_archive style).
    """
    wanted = set(names)
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for member in tar.getmembers():
                name = member.name.removeprefix("./")
                if name in wanted and member.isfile():
                    extracted = tar.extractfile(member)
                    if extracted is not None:
                        found[name] = extracted.read()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise ArchiveError(_not_an_archive(path, error)) from error
    missing = wanted - set(found)
    if missing:
        raise ArchiveError(_not_an_archive(path, f"no {', '.join(sorted(missing))}"))
    return found


def read_tag(path: str | Path) -> str:
    """The model's ``name:version`` tag recorded in the archive's model.yaml."""
    try:
        info = yaml.safe_load(read_members(path, ["model.yaml"])["model.yaml"])
        return f"{info['name']}:{info['version']}"
    except (yaml.YAMLError, KeyError, TypeError) as error:
        raise ArchiveError(_not_an_archive(path, f"model.yaml: {error}")) from error


def digest(path: str | Path) -> str:
    """``sha256:<hex>`` of the archive's bytes: what the image's ``model.digest`` label says."""
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _not_an_archive(path: str | Path, reason: object) -> str:
    first_line = str(reason).strip().splitlines()[0].rstrip(":")
    return f"{path} is not a BentoML model archive ({first_line})"
