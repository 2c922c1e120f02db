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
from dataclasses import dataclass
from pathlib import Path
from typing import IO

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


CHUNK = 1 << 20
NOT_A_FILE = "not a regular file"


@dataclass(frozen=True)
class Imported:
    """What :func:`import_checked` did with the archive's model."""

    tag: str
    imported: bool  # False: the store's entry was the archive's, byte for byte, and is kept
    replaced: str = ""  # why the store's entry under that tag was replaced ("": it was not)


def member_digests(path: str | Path) -> dict[str, str]:
    """``sha256:<hex>`` of each regular file of the archive, by name (read in chunks, never
    extracted). A member that is neither a file nor a directory is recorded as such: the
    store can never match it, so such an archive is always imported afresh."""
    found: dict[str, str] = {}
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if member.isdir() or not name:
                    continue
                extracted = tar.extractfile(member) if member.isfile() else None
                if extracted is None:
                    found[name] = NOT_A_FILE
                    continue
                with extracted:
                    found[name] = _sha256(extracted)
    except (tarfile.TarError, OSError, EOFError) as error:
        raise ArchiveError(_not_an_archive(path, error)) from error
    return found


def directory_digests(root: Path) -> dict[str, str]:
    """``sha256:<hex>`` of each file under ``root``, by relative path; a symbolic link or
    any other non-regular entry is recorded as "not a file" (it never matches an archive)."""
    found: dict[str, str] = {}
    for entry in sorted(root.rglob("*")):
        name = entry.relative_to(root).as_posix()
        if entry.is_symlink() or not (entry.is_dir() or entry.is_file()):
            found[name] = NOT_A_FILE
        elif entry.is_file():
            with entry.open("rb") as stream:
                found[name] = _sha256(stream)
    return found


def difference(archive: dict[str, str], stored: dict[str, str]) -> str:
    """The first way ``stored`` differs from ``archive`` (file name -> digest), in words;
    "" when they are equal."""
    for name in sorted(set(archive) | set(stored)):
        if name not in stored:
            return f"{name} is missing"
        if name not in archive:
            return f"{name} is not in the archive"
        if archive[name] != stored[name]:
            return f"{name} is {stored[name][:19]}…, the archive's is {archive[name][:19]}…"
    return ""


def import_checked(path: str | Path) -> Imported:
    """Import a .bentomodel into the store, or keep the store's entry under its tag when that
    entry holds exactly the archive's files (names and sha256): the store is a cache, and a
    tag names nothing. An entry that differs (a file changed, added or missing) is deleted
    and the model imported again from the archive; :attr:`Imported.replaced` says why."""
    import bentoml
    from bentoml.exceptions import NotFound

    tag = read_tag(path)
    replaced = ""
    try:
        stored = bentoml.models.get(tag)
    except NotFound:
        pass
    else:
        replaced = difference(member_digests(path), directory_digests(Path(stored.path)))
        if not replaced:
            return Imported(tag, False)
        bentoml.models.delete(tag)
    # BentoML resolves a relative path against the filesystem root: pass it absolute.
    bentoml.models.import_model(str(Path(path).resolve()))
    return Imported(tag, True, replaced)


def import_bentomodel(path: str | Path) -> tuple[str, bool]:
    """Import a .bentomodel into the store unless that exact model, checked file by file
    against the archive (:func:`import_checked`), is already there.

    Returns the model's tag, and whether it was imported (False: it was already there).
    """
    done = import_checked(path)
    return done.tag, done.imported


def _sha256(stream: IO[bytes]) -> str:
    hashed = hashlib.sha256()
    while chunk := stream.read(CHUNK):
        hashed.update(chunk)
    return "sha256:" + hashed.hexdigest()


def _not_an_archive(path: str | Path, reason: object) -> str:
    first_line = str(reason).strip().splitlines()[0].rstrip(":")
    return f"{path} is not a BentoML model archive ({first_line})"
