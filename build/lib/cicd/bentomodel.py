"""A ``.bentomodel`` archive (a tar.xz of a BentoML model directory), for any model.

The one reader of the archive (its ``model.yaml`` tag, its digest, named members) and the one
in-process importer into the BentoML store: the suite uses them for any model repository,
and a repository's training code may import them too (the example's evaluate stage does).
Code that ships in a service image must not: the image carries no ``cicd``.
Standard library and PyYAML only at import (BentoML lazily): it is cheap to import.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Sequence
from pathlib import Path

import yaml


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


def import_bentomodel(path: str | Path) -> tuple[str, bool]:
    """Import a .bentomodel into the store unless that exact tag is already there.

    Returns the model's tag, and whether it was imported (False: it was already there).
    """
    import bentoml
    from bentoml.exceptions import NotFound

    tag = read_tag(path)
    try:
        bentoml.models.get(tag)
        return tag, False
    except NotFound:
        # BentoML resolves a relative path against the filesystem root: pass it absolute.
        bentoml.models.import_model(str(Path(path).resolve()))
        return tag, True


def _not_an_archive(path: str | Path, reason: object) -> str:
    first_line = str(reason).strip().splitlines()[0].rstrip(":")
    return f"{path} is not a BentoML model archive ({first_line})"
