"""What an image was made from, as in-toto statements: SLSA provenance v1, and the SBOM's.

The statements are built with the in-toto attestation framework's own bindings
(``in_toto_attestation``: the ``Statement`` and ``ResourceDescriptor`` types and the SLSA
provenance v1 protobuf), so their shape is the framework's, not a hand-written schema.

The provenance's subject is the image's manifest digest. It records what only this project
knows: the commit, ``params.yaml``, the hash of every stage's outputs in ``dvc.lock``, the
metrics, the ``.bentomodel`` (tag, sha256, and its md5 as ``dvc.lock`` records it: the stage
output that holds it, :class:`ArchiveInLock`), the base image, and the versions of the
suite, BentoML and Docker that built the image. The sha256 (the image's ``model.digest``
label) and the md5 are computed from the same bytes when attesting, so the provenance binds
the image's model to the ``train`` stage's output of the commit, not only copies text.
``verify`` reads it back with the helpers at the end of this module (:func:`dependencies`,
:func:`model_of`, :func:`archive_of`, :func:`commit_of`).
"""

from __future__ import annotations

import configparser
import datetime as dt
import hashlib
import importlib.metadata
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

import cicd
from cicd import filehash
from cicd.dvc import LOCK_FILE
from cicd.errors import ProvenanceError

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
CYCLONEDX_BOM = "https://cyclonedx.org/bom"
# What the build did, named once: `nox -s publish` of this suite (docs/verify.md).
BUILD_TYPE = "https://github.com/celestial-bodies/mlops-suite/publish/v1"
PARAMS_FILE = "params.yaml"
# ``role`` annotation of each resolved dependency: how verify finds them.
SOURCE, PARAMS, LOCK, OUTPUT, MODEL, BASE_IMAGE = (
    "source", "params", "dvc-lock", "dvc-output", "model", "base-image",
)  # fmt: skip


# Annotations of the model dependency: the dvc.lock output that holds the archive.
DVC_STAGE, DVC_OUTPUT, DVC_OUTPUT_MD5 = "dvc.stage", "dvc.output", "dvc.output.md5"


@dataclass(frozen=True)
class BaseImage:
    name: str  # as the Dockerfile names it, e.g. python:3.11-slim
    id: str  # sha256 of its config (the local image id)
    repo_digests: tuple[str, ...] = ()  # registry digests, when it was pulled


@dataclass(frozen=True)
class ArchiveInLock:
    """Where ``dvc.lock`` records the model archive: the stage output that holds it."""

    stage: str  # the stage that outputs it (the train stage)
    output: str  # that output's path: the archive itself, or a directory holding it
    output_md5: str  # the output's hash in dvc.lock (``<md5>.dir`` for a directory)
    md5: str  # the archive's own md5, as DVC records it ("" when its listing is not here)

    @property
    def name(self) -> str:
        return f"{self.stage}:{self.output}"


@dataclass(frozen=True)
class BuildFacts:
    """Everything the provenance records, gathered by :mod:`cicd.attestations`."""

    repository: str  # where the image is: the statement's subject name
    image_digest: str  # sha256:... of its manifest: the subject
    commit: str
    source_url: str
    tags: tuple[str, ...]
    model_tag: str
    model_digest: str  # sha256:... of the .bentomodel
    model_path: str
    base: BaseImage
    versions: Mapping[str, str]  # suite, bentoml, docker, python
    builder_id: str  # the CI run's page, or the machine's local builder
    started: dt.datetime
    finished: dt.datetime
    files: Mapping[str, bytes] = field(repr=False, default_factory=dict)  # dvc.lock, params...
    metrics: Mapping[str, float] = field(default_factory=dict)
    metrics_file: str = "evaluation/metrics.json"
    # The archive in dvc.lock, its md5 that of the bytes whose sha256 is model_digest: attest
    # always gives it (:func:`bind_archive`); None records the sha256 alone, as provenances
    # made before this binding do (verify's archive check then says it did not check).
    model_lock: ArchiveInLock | None = None


def lock_outputs(lock_text: str | bytes) -> dict[str, str]:
    """``"<stage>:<path>" -> md5`` of every stage's outputs in a ``dvc.lock``: the one reader
    of those hashes (provenance and verify)."""
    try:
        document = yaml.safe_load(lock_text) or {}
        stages = document.get("stages") or {}
        return {
            f"{stage}:{out['path']}": str(out.get("md5") or out.get("hash"))
            for stage, body in stages.items()
            for out in (body or {}).get("outs") or []
        }
    except (yaml.YAMLError, AttributeError, TypeError, KeyError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ProvenanceError(f"{LOCK_FILE} cannot be read ({reason}): run `dvc repro`") from None


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _hex(digest: str) -> str:
    return digest.removeprefix("sha256:")


def subject(repository: str, image_digest: str) -> Any:
    from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor

    return ResourceDescriptor(name=repository, digest={"sha256": _hex(image_digest)}).pb


def statement(
    repository: str, image_digest: str, predicate_type: str, predicate: Mapping[str, Any]
) -> dict[str, Any]:
    """An in-toto v1 statement about the image ``repository@image_digest``, validated."""
    from google.protobuf import json_format
    from in_toto_attestation.v1.statement import Statement

    made = Statement([subject(repository, image_digest)], predicate_type, dict(predicate))
    made.validate()
    return json_format.MessageToDict(made.pb)


def sbom_statement(repository: str, image_digest: str, bom: Mapping[str, Any]) -> dict[str, Any]:
    """The CycloneDX SBOM as the predicate of a statement about the image (as `cosign attest
    --type cyclonedx` makes it): signed and checked like the provenance."""
    return statement(repository, image_digest, CYCLONEDX_BOM, bom)


def provenance_statement(facts: BuildFacts) -> dict[str, Any]:
    """The SLSA provenance v1 statement of the image that ``facts`` describe."""
    from google.protobuf import json_format

    predicate = json_format.MessageToDict(_provenance(facts))
    return statement(facts.repository, facts.image_digest, SLSA_PROVENANCE, predicate)


def _provenance(facts: BuildFacts) -> Any:
    from google.protobuf import struct_pb2, timestamp_pb2
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2 as slsa

    def struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
        made = struct_pb2.Struct()
        made.update(values)
        return made

    def when(moment: dt.datetime) -> timestamp_pb2.Timestamp:
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(moment.astimezone(dt.UTC).replace(tzinfo=None))
        return stamp

    files = facts.files
    params = yaml.safe_load(files.get(PARAMS_FILE, b"")) or {}
    return slsa.Provenance(
        build_definition=slsa.BuildDefinition(
            build_type=BUILD_TYPE,
            external_parameters=struct({
                "source": {"uri": facts.source_url, "commit": facts.commit},
                "image": {"repository": facts.repository, "tags": list(facts.tags)},
                "params": params,
                "model": {"tag": facts.model_tag, "digest": facts.model_digest},
            }),
            internal_parameters=struct({"versions": dict(facts.versions)}),
            resolved_dependencies=_dependencies(facts),
        ),
        run_details=slsa.RunDetails(
            builder=slsa.Builder(id=facts.builder_id, version=dict(facts.versions)),
            metadata=slsa.BuildMetadata(
                invocation_id=facts.builder_id,
                started_on=when(facts.started),
                finished_on=when(facts.finished),
            ),
            byproducts=[_metrics(facts)],
        ),
    )  # fmt: skip


def _descriptor(role: str, **fields: Any) -> Any:
    from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor

    annotations = {"role": role, **fields.pop("annotations", {})}
    made = ResourceDescriptor(annotations=annotations, **fields)
    made.validate()
    return made.pb


def _dependencies(facts: BuildFacts) -> list[Any]:
    files = facts.files
    source = f"git+{facts.source_url}" if facts.source_url else "git+local"
    found = [
        _descriptor(SOURCE, uri=f"{source}@{facts.commit}", digest={"gitCommit": facts.commit}),
        _descriptor(PARAMS, name=PARAMS_FILE, digest={"sha256": sha256(files[PARAMS_FILE])}),
        _descriptor(LOCK, name=LOCK_FILE, digest={"sha256": sha256(files[LOCK_FILE])}),
    ]
    for name, md5 in lock_outputs(files[LOCK_FILE]).items():
        found.append(_descriptor(OUTPUT, name=name, digest={"md5": md5}))
    found.append(_model(facts))
    found.append(
        _descriptor(
            BASE_IMAGE,
            name=facts.base.name,
            digest={"sha256": _hex(facts.base.id)},
            annotations={"repoDigests": list(facts.base.repo_digests)},
        )
    )
    return found


def _model(facts: BuildFacts) -> Any:
    digest, annotations = {"sha256": _hex(facts.model_digest)}, {"model.tag": facts.model_tag}
    locked = facts.model_lock
    if locked is not None:
        digest["md5"] = locked.md5
        annotations.update({
            DVC_STAGE: locked.stage,
            DVC_OUTPUT: locked.output,
            DVC_OUTPUT_MD5: locked.output_md5,
        })  # fmt: skip
    return _descriptor(MODEL, name=facts.model_path, digest=digest, annotations=annotations)


def _metrics(facts: BuildFacts) -> Any:
    content = facts.files.get(facts.metrics_file, b"")
    return _descriptor(
        "metrics",
        name=facts.metrics_file,
        digest={"sha256": sha256(content)},
        annotations={"metrics": dict(facts.metrics)},
    )


# --------------------------------------------------------------------------- the model archive
# dvc.lock records the archive's md5: as its own output (a stage that outputs the file), or in
# the listing of the directory output that holds it (``model``: ``<md5>.dir``, a JSON list of
# ``{"md5", "relpath"}`` kept in the DVC cache, whose own md5 is that hash). Both are found by
# content in the cache, so what is read there is checked against dvc.lock, never trusted.


def file_hashes(path: Path) -> tuple[str, str]:
    """(md5, ``sha256:...``) of a file, from one read of the same bytes, once per process
    while the file is unchanged (:mod:`cicd.filehash`)."""
    return filehash.hashes(path)


def dvc_cache_file(root: Path, md5: str) -> Path | None:
    """The DVC cache's file of the content ``md5`` (``<md5>.dir`` for a listing), if here:
    DVC 3's ``files/md5/`` layout, else DVC 2's, in the cache ``.dvc/config`` names."""
    cache = _cache_dir(root)
    for candidate in (cache / "files" / "md5", cache):
        path = candidate / md5[:2] / md5[2:]
        if path.is_file():
            return path
    return None


def _cache_dir(root: Path) -> Path:
    directory = root / ".dvc"
    parser = configparser.ConfigParser(interpolation=None)
    try:  # config.local wins, as in DVC; a relative dir is relative to .dvc/
        parser.read([directory / "config", directory / "config.local"])
        configured = parser.get("cache", "dir", fallback="")
    except configparser.Error:
        configured = ""
    return (directory / configured.strip()).resolve() if configured.strip() else directory / "cache"


def archive_in_lock(root: Path, lock_text: str | bytes, archive: Path) -> ArchiveInLock:
    """Where ``dvc.lock`` records the archive (``archive``: relative to the root, from the
    settings), its md5 read through the DVC cache for a directory output ("" when the
    listing is not in this clone's cache); :class:`ProvenanceError` when no stage outputs it,
    or the cached listing is not the one dvc.lock names."""
    wanted = PurePosixPath(archive.as_posix())
    for name, md5 in lock_outputs(lock_text).items():
        stage, output = name.split(":", 1)
        path = PurePosixPath(output)
        if path == wanted:
            return ArchiveInLock(stage, output, md5, md5)
        if wanted.is_relative_to(path):
            relpath = wanted.relative_to(path).as_posix()
            return ArchiveInLock(stage, output, md5, _listed_md5(root, md5, relpath, name))
    raise ProvenanceError(
        f"no stage of {LOCK_FILE} outputs the model archive {archive} (suite.model.archive): "
        "the train stage must output it (dvc.yaml), then run `dvc repro`"
    )


def _listed_md5(root: Path, output_md5: str, relpath: str, name: str) -> str:
    if not output_md5.endswith(".dir"):
        raise ProvenanceError(f"{LOCK_FILE} records {name} as a file, not a directory")
    cached = dvc_cache_file(root, output_md5)
    if cached is None:
        return ""
    listing = cached.read_bytes()
    if hashlib.md5(listing, usedforsecurity=False).hexdigest() != output_md5.removesuffix(".dir"):
        raise ProvenanceError(
            f"the DVC cache's listing of {name} ({cached}) is not the one {LOCK_FILE} records: "
            "the cache is damaged; delete that file and run `invoke pull`"
        )
    try:
        entries = {str(item["relpath"]): str(item["md5"]) for item in json.loads(listing)}
    except (ValueError, TypeError, KeyError):
        raise ProvenanceError(
            f"the DVC cache's listing of {name} is unreadable: {cached}"
        ) from None
    if relpath not in entries:
        raise ProvenanceError(f"{name} in {LOCK_FILE} holds no {relpath}: run `dvc repro`")
    return entries[relpath]


def bind_archive(root: Path, lock_text: str | bytes, archive: Path, digest: str) -> ArchiveInLock:
    """The archive in ``dvc.lock``, checked against the workspace's archive before it is
    signed: its md5 must be the one dvc.lock records for the train stage's output, and its
    sha256 (from the same bytes) ``digest``, the model the image was built with."""
    locked = archive_in_lock(root, lock_text, archive)
    if not locked.md5:
        raise ProvenanceError(
            f"the listing of {locked.name} ({locked.output_md5}) is not in this clone's DVC "
            f"cache, so {archive} cannot be bound to {LOCK_FILE}: run `invoke pull`"
        )
    md5, sha = file_hashes(root / archive)
    if md5 != locked.md5:
        raise ProvenanceError(
            f"{archive} (md5 {md5}) is not the {locked.name} output that {LOCK_FILE} records "
            f"(md5 {locked.md5}): the commit does not record this model, so nothing is built "
            "from it or signed; take the commit's (`invoke pull`) or commit the new dvc.lock "
            "(`dvc repro`), and publish again"
        )
    if sha != digest:
        raise ProvenanceError(
            f"{archive} is {sha} now, but the image was built with {digest}: it changed since "
            "the build; publish again (`nox -s publish -- --force`)"
        )
    return locked


def versions(docker_version: str) -> dict[str, str]:
    """The versions of what builds the image: the suite (``cicd.__version__``), BentoML,
    Docker, Python."""

    def installed(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"

    return {
        "suite": cicd.__version__,
        "bentoml": installed("bentoml"),
        "docker": docker_version,
        "python": sys.version.split()[0],
    }


def read_files(root: Path, names: list[str]) -> dict[str, bytes]:
    """The workspace files the provenance hashes; a missing one is one line."""
    found = {}
    for name in names:
        path = root / name
        if not path.is_file():
            raise ProvenanceError(f"{name} is missing: run `nox -s train` (or `invoke pull`)")
        found[name] = path.read_bytes()
    return found


# --------------------------------------------------------------------------- reading back


def predicate(document: Mapping[str, Any], predicate_type: str, what: str) -> dict[str, Any]:
    """The predicate of a statement, checked to be the expected kind."""
    if document.get("_type") != STATEMENT_TYPE or document.get("predicateType") != predicate_type:
        raise ProvenanceError(
            f"the {what} is not an in-toto statement of type {predicate_type} "
            f"(got {document.get('predicateType')!r})"
        )
    found = document.get("predicate")
    if not isinstance(found, dict):
        raise ProvenanceError(f"the {what} has no predicate")
    return found


def subject_digests(document: Mapping[str, Any]) -> list[str]:
    """``sha256:...`` of each subject of a statement."""
    return [
        "sha256:" + str((item.get("digest") or {}).get("sha256", ""))
        for item in document.get("subject") or []
        if isinstance(item, dict)
    ]


def subject_names(document: Mapping[str, Any]) -> list[str]:
    """The name (the image's repository, ``host/path``) of each subject of a statement."""
    return [
        str(item.get("name", ""))
        for item in document.get("subject") or []
        if isinstance(item, dict) and item.get("name")
    ]


def dependencies(provenance: Mapping[str, Any], role: str) -> list[dict[str, Any]]:
    """The resolved dependencies of a provenance predicate with this ``role``."""
    definition = provenance.get("buildDefinition") or {}
    return [
        item
        for item in definition.get("resolvedDependencies") or []
        if (item.get("annotations") or {}).get("role") == role
    ]


def recorded_outputs(provenance: Mapping[str, Any]) -> dict[str, str]:
    """``"<stage>:<path>" -> md5`` as the provenance records them (cf. :func:`lock_outputs`)."""
    return {
        item.get("name", ""): (item.get("digest") or {}).get("md5", "")
        for item in dependencies(provenance, OUTPUT)
    }


def model_of(provenance: Mapping[str, Any]) -> tuple[str, str]:
    """(tag, ``sha256:...``) of the model the provenance records."""
    models = dependencies(provenance, MODEL)
    if len(models) != 1:
        raise ProvenanceError(f"the provenance records {len(models)} models, not one")
    model = models[0]
    tag = str((model.get("annotations") or {}).get("model.tag", ""))
    return tag, "sha256:" + str((model.get("digest") or {}).get("sha256", ""))


def archive_of(provenance: Mapping[str, Any]) -> ArchiveInLock | None:
    """The model archive's place in ``dvc.lock`` and md5 as the provenance records them;
    None for a provenance made before the suite bound them (it records the sha256 only)."""
    models = dependencies(provenance, MODEL)
    if len(models) != 1:
        raise ProvenanceError(f"the provenance records {len(models)} models, not one")
    model = models[0]
    annotations, digest = model.get("annotations") or {}, model.get("digest") or {}
    if not digest.get("md5"):
        return None
    return ArchiveInLock(
        stage=str(annotations.get(DVC_STAGE, "")),
        output=str(annotations.get(DVC_OUTPUT, "")),
        output_md5=str(annotations.get(DVC_OUTPUT_MD5, "")),
        md5=str(digest["md5"]),
    )


def commit_of(provenance: Mapping[str, Any]) -> str:
    sources = dependencies(provenance, SOURCE)
    return str((sources[0].get("digest") or {}).get("gitCommit", "")) if sources else ""


def dumps(document: Mapping[str, Any]) -> bytes:
    """The bytes stored for a document: sorted keys, so the same content gives the same blob."""
    return json.dumps(document, sort_keys=True, indent=1).encode()
