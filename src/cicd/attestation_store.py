"""Where an image's attestations live in a registry, and how they are read back.

Each document (SBOM, provenance) is a DSSE envelope in an OCI 1.1 artifact whose ``subject``
is the image: found through the referrers API where the registry has it, else under the tag
``sha256-<hex>.sbom`` / ``.att`` (cosign's scheme). No signing and no trust here: making and
signing is :mod:`cicd.attestations`, checking is :mod:`cicd.verify`; both, and
:mod:`cicd.order`, read through this module (which imports no engine code).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cicd import provenance
from cicd.errors import AttestationError
from cicd.registry import OCI_MANIFEST, Manifest, RegistryClient, content_digest

if TYPE_CHECKING:
    from cicd.context import Run

DSSE_ENVELOPE = "application/vnd.dsse.envelope.v1+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"
PREDICATE_ANNOTATION = "in-toto.io/predicate-type"


@dataclass(frozen=True)
class Kind:
    """One of the two documents attached to an image."""

    name: str  # as the lines say it
    suffix: str  # of the tag scheme: sha256-<hex><suffix>
    artifact_type: str
    predicate_type: str


SBOM = Kind("SBOM", ".sbom", "application/vnd.cyclonedx+json", provenance.CYCLONEDX_BOM)
PROVENANCE = Kind("provenance", ".att", "application/vnd.in-toto+json", provenance.SLSA_PROVENANCE)
KINDS = (SBOM, PROVENANCE)


def tag_for(digest: str, kind: Kind) -> str:
    """``sha256-<hex><suffix>``: where a registry without the referrers API keeps it."""
    return digest.replace(":", "-") + kind.suffix


def artifact_manifest(
    kind: Kind, subject: Manifest | None, envelope_digest: str, size: int
) -> bytes:
    """An OCI 1.1 artifact manifest: the empty config, one layer (the DSSE envelope), and
    the image as its ``subject``."""
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": kind.artifact_type,
        "config": {
            "mediaType": EMPTY_CONFIG,
            "digest": content_digest(EMPTY_JSON),
            "size": len(EMPTY_JSON),
        },
        "layers": [
            {
                "mediaType": DSSE_ENVELOPE,
                "digest": envelope_digest,
                "size": size,
                "annotations": {PREDICATE_ANNOTATION: kind.predicate_type},
            }
        ],
    }
    if subject is not None:
        document["subject"] = {
            "mediaType": subject.media_type or OCI_MANIFEST,
            "digest": subject.digest,
            "size": len(subject.raw),
        }
    return json.dumps(document, separators=(",", ":")).encode()


def attach_all(
    run: Run, digest: str, envelopes: dict[Kind, dict[str, Any]], subject: Manifest | None = None
) -> None:
    """Store each envelope as its kind's artifact about the image ``digest``: under its tag,
    or by digest where the registry indexes referrers (asked once). ``subject``: the image's
    manifest when the caller has read it already (attest: push's read); else it is read."""
    registry, repository = run.registry, run.settings.repository_path
    if subject is None and not run.dry:
        subject = registry.manifest(repository, digest)
    by_referrers = registry.referrers(repository, digest) is not None
    registry.upload_blob(repository, EMPTY_JSON)  # the config every artifact shares
    for kind, envelope in envelopes.items():
        body = provenance.dumps(envelope)
        layer = registry.upload_blob(repository, body)
        raw = artifact_manifest(kind, subject, layer, len(body))
        manifest = Manifest(content_digest(raw), content_digest(EMPTY_JSON), raw, OCI_MANIFEST)
        where = manifest.digest if by_referrers else tag_for(digest, kind)
        registry.put_manifest(repository, where, manifest)


def fetch(
    registry: RegistryClient, repository: str, digest: str
) -> dict[Kind, dict[str, Any] | None]:
    """The envelopes attached to the image ``digest`` (None for a kind not found)."""
    found: dict[Kind, dict[str, Any] | None] = {}
    listed = registry.referrers(repository, digest)
    for kind in KINDS:
        where = tag_for(digest, kind)
        if listed is not None:
            ours = [item for item in listed if item.get("artifactType") == kind.artifact_type]
            where = str(ours[-1].get("digest")) if ours else ""
        manifest = registry.manifest(repository, where) if where else None
        found[kind] = _envelope(registry, repository, manifest, kind) if manifest else None
    return found


def _envelope(
    registry: RegistryClient, repository: str, manifest: Manifest, kind: Kind
) -> dict[str, Any]:
    layers = json.loads(manifest.raw).get("layers") or []
    envelopes = [layer for layer in layers if layer.get("mediaType") == DSSE_ENVELOPE]
    if len(envelopes) != 1:
        raise AttestationError(
            f"the {kind.name} artifact of {repository} holds {len(envelopes)} DSSE envelopes, "
            "not one: it was not attached by this suite"
        )
    body = registry.blob(repository, envelopes[0]["digest"], what=f"the {kind.name}")
    try:
        document = json.loads(body or b"{}")
    except ValueError:
        raise AttestationError(f"the {kind.name} of {repository} is not JSON") from None
    if not isinstance(document, dict):
        raise AttestationError(f"the {kind.name} of {repository} is not a DSSE envelope")
    return document
