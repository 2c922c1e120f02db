"""The image's SBOM and provenance: made, signed and attached next to it in the registry.

After the push (`invoke attest`, the publish session's last step), two in-toto statements
about the pushed digest are made: the CycloneDX SBOM of the image (:mod:`cicd.sbom`) and the
SLSA provenance (:mod:`cicd.provenance`). Each goes in a DSSE envelope, signed with
``SIGNING_KEY`` when it is set (:mod:`cicd.signing`; unsigned, and said so, when not), and is
stored as an OCI artifact in the image's repository:

* where the registry has the OCI 1.1 referrers API: a manifest whose ``subject`` is the image,
  found through ``/v2/<name>/referrers/<digest>``;
* where it has not (Distribution 2.8, Debian's registry): the same manifest under the tag
  ``sha256-<hex>.sbom`` / ``sha256-<hex>.att``, the scheme cosign uses.

Either way any OCI client (oras, crane, cosign's tag lookups) can fetch them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cicd import ci, dvc, image, provenance, sbom, signing
from cicd.attestation_store import (
    KINDS,
    PROVENANCE,
    SBOM,
    Kind,
    attach_all,
    fetch,
)
from cicd.docker import docker_call
from cicd.errors import AttestationError, NotBuiltHere
from cicd.provenance import ArchiveInLock, BaseImage, BuildFacts
from cicd.registry import Manifest

if TYPE_CHECKING:
    from cicd.context import Run
    from cicd.image import Target

UNSIGNED_WARNING = (
    "warning: SIGNING_KEY is not set: the SBOM and provenance are attached UNSIGNED "
    "(`invoke verify` refuses them; --allow-unsigned accepts them only in a repository that "
    "never had a public key); model-cicd's docs/verify.md"
)


@dataclass(frozen=True)
class Drafted:
    """The SBOM and provenance facts made ahead for the local image ``image_id``
    (:mod:`cicd.attestation_draft`)."""

    image_id: str
    bom: dict[str, Any]
    facts: BuildFacts  # its digest a placeholder: the push has not happened yet

    def facts_for(self, digest: str, finished: dt.datetime) -> BuildFacts:
        """The provenance's facts of the pushed image ``digest``."""
        return dataclasses.replace(self.facts, image_digest=digest, finished=finished)


class PendingDraft(Protocol):
    """The SBOM and provenance facts being made while the smoke test runs
    (:class:`cicd.attestation_draft.Draft`): attest joins it."""

    def result(self) -> Drafted | None: ...


# --------------------------------------------------------------------------- making


def attest(
    run: Run,
    goal: Target,
    started: dt.datetime | None = None,
    digest: str | None = None,
    draft: PendingDraft | None = None,
) -> Manifest | None:
    """Make, sign and attach the SBOM and provenance of this commit's image ``digest``.

    ``digest``: an image already trusted by its signed provenance (check-published, which
    attaches a missing SBOM). Default: the digest this workspace pushed and recorded
    (:func:`pushed_here`), signed only when the local image built here is that image; the
    SHA tag is never looked up again. The SBOM is read from the local copy when it is that
    image, else from the image pulled by digest. ``draft``: the SBOM and provenance facts
    made while the smoke test ran (:mod:`cicd.attestation_draft`), joined here and used when
    they are of the pushed image. Returns the image's manifest (None in a dry run)."""
    started = started or now()
    if digest is None:
        pushed = pushed_here(run, goal)
    else:
        pushed = (
            run.registry.manifest(run.settings.repository_path, digest) if not run.dry else None
        )
        if pushed is None and not run.dry:
            raise AttestationError(
                f"{goal.repository}@{digest} is not in the registry: publish it (`nox -s publish`)"
            )
    if pushed is not None:
        digest = pushed.digest
    digest = digest or "sha256:<pushed digest>"  # a dry run pushed nothing
    key_signer = _signer(run)
    drafted = _drafted_for(run, draft, pushed)
    bom: dict[str, Any] | None
    if drafted is not None:
        bom, facts = drafted.bom, drafted.facts_for(digest, now())
    else:
        with image_at(run, goal.repository, pushed) as reference:
            bom = sbom.generate(run, reference)
            facts = gather(run, goal, digest, reference, started)
    statements = {
        SBOM: provenance.sbom_statement(goal.repository, digest, bom or {"bomFormat": "dry"}),
        PROVENANCE: provenance.provenance_statement(facts),
    }
    envelopes = {
        kind: signing.envelope(statement, key_signer) for kind, statement in statements.items()
    }
    attach_all(run, digest, envelopes, subject=pushed)  # the manifest read once, by push
    if not run.dry:
        how = "signed" if key_signer else "UNSIGNED"
        run.runner.echo(f"attested {goal.references[0]} ({digest}): SBOM and provenance, {how}")
    return pushed


def _drafted_for(run: Run, draft: PendingDraft | None, pushed: Manifest | None) -> Drafted | None:
    """The draft's documents when they are of the pushed image (the join: a failed draft
    raises here, before anything is signed); None: attest makes them itself."""
    if draft is None:
        return None
    drafted = draft.result()
    if drafted is None or pushed is None:
        return None
    if drafted.image_id != pushed.config_digest:
        run.runner.echo(
            f"the SBOM drafted during the smoke test is of {drafted.image_id}, not of the pushed "
            f"image {pushed.config_digest}: making it again"
        )
        return None
    return drafted


# --------------------------------------------------------------------------- the push record
# What push hands to attest within a run: the digest it pushed and the local image it built
# and smoke-tested, in the clone's git directory (never in the tree: a file there would make
# it dirty), one file per commit tag.


def _record_path(run: Run, tag: str) -> Path:
    found = run.runner.run(
        ["git", "rev-parse", "--absolute-git-dir"], cwd=run.settings.root, quiet=True, always=True
    )
    return Path(found.strip()) / "cicd-pushed" / f"{tag}.json"


# The manifest push just read, for attest in the same process: not fetched a second time.
_PUSHED: dict[Path, Manifest] = {}


def record_push(run: Run, goal: Target, pushed: Manifest, image_id: str) -> None:
    """Remember that this workspace pushed its image ``image_id`` of this commit as
    ``pushed`` (the manifest the registry returned for it)."""
    if run.dry:
        return
    path = _record_path(run, goal.revision.tag)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"repository": goal.repository, "digest": pushed.digest, "image_id": image_id}
    path.write_text(json.dumps(record) + "\n")
    _PUSHED[path] = pushed


def pushed_here(run: Run, goal: Target) -> Manifest | None:
    """The manifest this workspace pushed for this commit (None in a dry run), when the local
    image under its SHA tag is still the one built and pushed (its ID is the pushed
    manifest's config digest); else :class:`NotBuiltHere`, one line saying what to run. The
    manifest is the one push read in this process, else it is read from the registry."""
    reference = goal.references[0]
    if run.dry:
        return None
    rebuild = "run `nox -s publish -- --force`, which builds, smoke-tests, pushes and signs it"
    path = _record_path(run, goal.revision.tag)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = {}
    if not isinstance(record, dict) or record.get("repository") != goal.repository:
        raise NotBuiltHere(
            f"this workspace pushed no image of {reference}: not signing what it did not build "
            f"and smoke-test; {rebuild}"
        )
    digest, image_id = str(record.get("digest")), str(record.get("image_id"))
    pushed = _PUSHED.get(path)
    if pushed is None or pushed.digest != digest:
        pushed = run.registry.manifest(run.settings.repository_path, digest)
    local = _local_id(run, reference)
    if pushed is None or local != image_id or pushed.config_digest != image_id:
        raise NotBuiltHere(
            f"{goal.repository}@{digest} is not the image this workspace built under "
            f"{reference} (local {local or 'none'}, pushed config "
            f"{pushed.config_digest if pushed else 'none'}): not signing it; {rebuild}"
        )
    return pushed


def missing(run: Run, digest: str) -> list[Kind]:
    """The kinds of attestation the registry lacks for the image ``digest``."""
    found = fetch(run.registry, run.settings.repository_path, digest)
    return [kind for kind in KINDS if found.get(kind) is None]


def _signer(run: Run) -> Any:
    key = run.settings.signing_key
    if not key:
        run.runner.echo(UNSIGNED_WARNING)
        return None
    return signing.signer(key)


@contextmanager
def image_at(run: Run, repository: str, pushed: Manifest | None) -> Iterator[str]:
    """A local reference to the pushed image: this commit's local tag when it is that image,
    else the image pulled by digest (and removed afterwards)."""
    local = f"{repository}:{run.revision.tag}"
    if pushed is None or _local_id(run, local) == pushed.config_digest:
        yield local
        return
    reference = f"{repository}@{pushed.digest}"
    with image.logged_in(run) as (docker, base):
        docker_call(
            run.runner,
            [*base, "pull", "--quiet", reference],
            lambda: docker.pull(reference, quiet=True),  # type: ignore[attr-defined]
            hint="check that the registry is up and that the user may pull",
            retry_transient=True,
        )
    client = run.docker
    try:
        yield reference
    finally:
        docker_call(
            run.runner,
            [client.path, "image", "rm", reference],
            lambda: run.whales.image.remove(reference),
        )


def _local_id(run: Run, reference: str) -> str | None:
    from python_on_whales.exceptions import DockerException

    try:
        return run.whales.image.inspect(reference).id
    except DockerException:
        return None


def gather(run: Run, goal: Target, digest: str, reference: str, started: dt.datetime) -> BuildFacts:
    """What the provenance records, from the workspace, the engine and the image."""
    settings = run.settings
    names = [provenance.PARAMS_FILE, dvc.LOCK_FILE, image.METRICS_FILE]
    files = provenance.read_files(settings.root, names)
    return BuildFacts(
        repository=goal.repository,
        image_digest=digest,
        commit=goal.revision.sha,
        source_url=goal.revision.source_url,
        tags=goal.tags,
        model_tag=goal.model.tag,
        model_digest=goal.model.digest,
        model_path=str(settings.bentomodel),
        model_lock=model_lock(run, goal, files[dvc.LOCK_FILE]),
        base=base_image(run, reference),
        versions=provenance.versions(_docker_version(run)),
        builder_id=ci.places(run.environ).run_url or "urn:celestial-bodies:builder:local",
        started=started,
        finished=now(),
        files=files,
        metrics=image.read_metrics(settings.root),
        metrics_file=image.METRICS_FILE,
    )


def model_lock(run: Run, goal: Target, lock: bytes) -> ArchiveInLock:
    """The model archive bound to ``dvc.lock`` (:func:`provenance.bind_archive`): the bytes
    whose sha256 the image's label records have the md5 dvc.lock records for the train
    stage's output, or nothing is signed."""
    settings = run.settings
    placeholder = ArchiveInLock("<stage>", "<output>", "<md5 in dvc.lock>", "<md5>")
    if run.dry and not settings.path(settings.bentomodel).is_file():
        return placeholder  # its pull was only shown
    try:
        return provenance.bind_archive(settings.root, lock, settings.bentomodel, goal.model.digest)
    except (provenance.ProvenanceError, OSError) as error:
        if not run.dry:
            raise
        # A dry run signs nothing: it says what a real run would refuse, and goes on.
        run.runner.echo(f"[dry-run] a real run would not sign: {error}")
        return placeholder


def base_image(run: Run, reference: str) -> BaseImage:
    """The local base image, checked to be the image's base: its layers start the image's.

    Its name is the setting ``suite.base_image``, not the built bento's: attest also attaches
    the documents of an image published without them, on a machine that never built its
    bento. The service declares its base itself (BentoML 1.4: ``bentoml.images.Image``); a
    test keeps the two equal in this repository, and this layer check catches any mismatch."""
    base_name = run.settings.base_image
    client, docker = run.docker, run.whales
    shown = [client.path, "image", "inspect", base_name, reference]
    found = docker_call(
        run.runner,
        shown,
        lambda: (docker.image.inspect(base_name), docker.image.inspect(reference)),
        hint=f"the base image {base_name} must be on this machine: scripts/bootstrap",
    )
    if found is None:  # dry run
        return BaseImage(base_name, "sha256:<base image>")
    base, built = found
    layers, built_layers = list(base.root_fs.layers or []), list(built.root_fs.layers or [])
    if built_layers[: len(layers)] != layers:
        raise AttestationError(
            f"{reference} is not built on this machine's {base_name} ({base.id}): "
            "attest it where it was built, or rebuild it here (`nox -s publish -- --force`)"
        )
    return BaseImage(base_name, base.id, tuple(base.repo_digests or ()))


def _docker_version(run: Run) -> str:
    client = run.docker
    found = docker_call(
        run.runner,
        [client.path, "version", "--format", "{{.Server.Version}}"],
        lambda: run.whales.version().server.version,  # type: ignore[union-attr]
    )
    return str(found or "<docker version>")


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
