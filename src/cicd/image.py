"""The container image: what it is called and labelled, log in, push it, verify the push.

Building goes through ``bentoml containerize`` (BentoML writes the Dockerfile:
:mod:`cicd.containerize`); pushing and logging in go through python-on-whales with a
throwaway Docker config directory, so that credentials never land in the user's
``~/.docker``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cicd import bento, dvc, order
from cicd.bento import ModelInfo
from cicd.ci import Revision
from cicd.docker import docker_call, whales
from cicd.errors import SuiteError
from cicd.labels import (
    CREATED_LABEL,
    DESCRIPTION_LABEL,
    METRICS_LABEL_PREFIX,
    MODEL_DIGEST_LABEL,
    MODEL_TAG_LABEL,
    REVISION_LABEL,
    SOURCE_LABEL,
    STAND_IN_LABEL,
    TITLE_LABEL,
    VERSION_LABEL,
)
from cicd.registry import Manifest
from cicd.settings import Settings

if TYPE_CHECKING:
    from cicd.context import Run

METRICS_FILE = "evaluation/metrics.json"
# Longer than another job's read-then-PUT of a moving tag (a manifest and a config blob read).
SETTLE_PAUSE = 1.0
DRY_MANIFEST = Manifest("sha256:<pushed digest>", "sha256:<pushed image>")


@dataclass(frozen=True)
class Image:
    """A local image: its id and where it goes, the repository and the tags kept apart."""

    id: str  # sha256:... of the local image (its config digest)
    repository: str  # <registry>[/<namespace>]/<image>
    tags: tuple[str, ...]  # the commit's tag first, then ``latest``

    @property
    def references(self) -> tuple[str, ...]:
        """``repository:tag`` for each tag: what docker is given."""
        return join(self.repository, self.tags)


@dataclass(frozen=True)
class Target:
    """What this commit's image is: its revision, model, repository and tags."""

    revision: Revision
    model: ModelInfo
    repository: str

    @property
    def tags(self) -> tuple[str, ...]:
        return tags(self.revision)

    @property
    def references(self) -> tuple[str, ...]:
        return join(self.repository, self.tags)

    def image(self, image_id: str) -> Image:
        return Image(image_id, self.repository, self.tags)


def target(run: Run) -> Target:
    """Identify this commit's image; pull the model archive first when it is missing."""
    dvc.pull_if_missing(run, run.settings.bentomodel)
    return Target(run.revision, bento.archived_model(run), run.settings.repository)


def tags(revision: Revision) -> tuple[str, ...]:
    """The tags to build and push: the commit's tag first, then ``latest``."""
    return (revision.tag, "latest")


def references(settings: Settings, revision: Revision) -> tuple[str, ...]:
    """The image references of ``revision``: ``<repository>:<tag>`` for each of its tags."""
    return join(settings.repository, tags(revision))


def join(repository: str, image_tags: tuple[str, ...]) -> tuple[str, ...]:
    """``<repository>:<tag>`` for each tag: the one place a reference is put together."""
    return tuple(f"{repository}:{tag}" for tag in image_tags)


def labels(
    settings: Settings,
    revision: Revision,
    model: ModelInfo,
    metrics: Mapping[str, float] | None = None,
) -> dict[str, str]:
    """OCI labels plus the model's tag, digest and metrics (BentoML adds none: we pass them).

    ``metrics``: the flat numeric metrics (:func:`read_metrics`), one ``model.metrics.<name>``
    label each."""
    created = dt.datetime.fromtimestamp(revision.timestamp, dt.UTC)
    labels = {
        TITLE_LABEL: settings.image_name,
        REVISION_LABEL: revision.sha,
        SOURCE_LABEL: revision.source_url,
        # The commit time, not the build time: rebuilding a commit gives the same labels.
        CREATED_LABEL: created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        VERSION_LABEL: revision.tag,
        MODEL_TAG_LABEL: model.tag,
        MODEL_DIGEST_LABEL: model.digest,
        **{f"{METRICS_LABEL_PREFIX}{name}": str(value) for name, value in (metrics or {}).items()},
    }
    return {key: value for key, value in labels.items() if value}  # no remote: no source


def read_metrics(root: Path) -> dict[str, float]:
    """The flat numeric metrics of ``evaluation/metrics.json`` (nested or non-numeric values
    are left out; no file: none). A file that is not JSON is one clear line."""
    path = root / METRICS_FILE
    if not path.exists():
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise SuiteError(f"{METRICS_FILE} is not JSON: run `invoke repro` to rewrite it") from None
    if not isinstance(document, dict):
        return {}
    return {
        name: float(value)
        for name, value in document.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


# Older stand-ins of scripts/build-base-image carry no STAND_IN_LABEL; their description says so.
STAND_IN_DESCRIPTION = "made by scripts/build-base-image"


def stand_in_notice(run: Run) -> str:
    """A warning when this engine's base image (``suite.base_image``) is the local stand-in
    of scripts/build-base-image rather than the registry's image ("" otherwise, in a dry
    run, or when the engine lacks it): the image being built stands on it."""
    from python_on_whales.exceptions import DockerException

    name = run.settings.base_image
    if run.dry:
        return ""
    try:
        found = run.whales.image.inspect(name).config.labels or {}
    except DockerException:
        return ""
    description = str(found.get(DESCRIPTION_LABEL, ""))
    if STAND_IN_LABEL not in found and STAND_IN_DESCRIPTION not in description:
        return ""
    return (
        f"WARNING: base image {name} is this engine's local stand-in (Debian python3.11 + uv, "
        "made by scripts/build-base-image), not the registry's image: see docs/machines.md"
    )


def local_image(run: Run, goal: Target) -> Image:
    """The locally built image of this commit (its SHA tag: the one pushed)."""
    client, docker, reference = run.docker, run.whales, goal.references[0]
    found = docker_call(
        run.runner,
        [client.path, "image", "inspect", "--format", "{{.Id}}", reference],
        lambda: docker.image.inspect(reference).id,
        hint="build it first: `invoke build`",
    )
    return goal.image(found or "sha256:<local image>")


@contextmanager
def logged_in(run: Run) -> Iterator[tuple[object, list[str]]]:
    """A python-on-whales client logged in to the registry in a throwaway config directory.

    The password goes through stdin (python-on-whales uses ``--password-stdin``); the
    directory and the credentials in it are removed on exit, failure included. Yields the
    client and the command line it runs, for the echo.
    """
    runner, client, creds = run.runner, run.docker, run.credentials
    with tempfile.TemporaryDirectory(prefix="docker-config-") as config:
        docker = whales(client, runner, Path(config))
        base = [client.path, "--config", config]
        if creds is None:
            yield docker, base
            return
        host = run.settings.registry_host
        login = [*base, "login", host, "--username", creds.username, "--password-stdin"]
        docker_call(
            runner,
            login,
            lambda: docker.login(host, creds.username, creds.password),
            hint="check CONTAINER_REGISTRY_USERNAME and CONTAINER_REGISTRY_PASSWORD",
        )
        try:
            yield docker, base
        except BaseException:
            # The first error is the one to report: a failing logout must not replace it
            # (the config directory, and the login in it, is deleted anyway).
            with contextlib.suppress(SuiteError):
                docker_call(runner, [*base, "logout", host], lambda: docker.logout(host))
            raise
        docker_call(runner, [*base, "logout", host], lambda: docker.logout(host))


def login(run: Run) -> None:
    """Log in to the registry and out again: checks the credentials, keeps nothing."""
    if run.credentials is None:
        run.runner.echo(
            f"no credentials set for {run.settings.registry_host}: nothing to log in to"
        )
        return
    with logged_in(run):
        run.runner.echo(f"logged in to {run.settings.registry_host}")


def push(run: Run, image: Image) -> Manifest | None:
    """Push the SHA tag of ``image`` (login and logout around it); return what the tag
    resolves to in the registry, checked to be ``image`` (None in a dry run).

    ``image``: the smoke-tested image (:func:`local_image` of this commit's target). The
    moving tags (``latest``) are not touched here: :func:`move_tags` points them at it once
    its provenance is signed, so that a concurrent older publish can tell it is newer.
    """
    reference = image.references[0]
    with logged_in(run) as (docker, base):
        docker_call(
            run.runner,
            [*base, "push", reference],
            lambda: docker.push(reference, quiet=True),  # type: ignore[attr-defined]
            hint="check that the registry is up and that the user may push",
            retry_transient=True,
        )
    pushed = run.registry.manifest(run.settings.repository_path, image.tags[0])
    if run.dry:
        return None
    if pushed is None:
        raise SuiteError(f"after the push, {reference} is not in the registry: run publish again")
    _check_resolves(image, image.tags[0], pushed)
    return pushed


def move_tags(run: Run, image: Image, pushed: Manifest | None) -> str:
    """Point the moving tags of ``image`` (``latest``) at ``pushed``, its SHA tag's manifest,
    and verify every tag resolves to it; return the digest.

    A manifest PUT (the layers are already there), never back from a commit's signed image
    to an older commit's (git ancestry: :mod:`cicd.order`); then :func:`settle`. Called
    after attest, so that the image is signed when another publish looks at ``latest``.
    """
    first, *others = image.tags
    repository = run.settings.repository_path
    commit = first.split("-dirty-")[0]  # the SHA tag is this commit's (ci.Revision.tag)
    for tag in others:
        # In a dry run nothing was pushed: a placeholder shows the PUT that would run.
        order.move_forward(run, repository, tag, pushed or DRY_MANIFEST, commit)
    seen: dict[str, Manifest] = {}
    if pushed is not None and others:
        seen = settle(run, repository, others, pushed, commit)
    return confirm_pushed(run, image, pushed, seen)


def settle(
    run: Run, repository: str, tags: list[str], pushed: Manifest, commit: str
) -> dict[str, Manifest]:
    """Look at the moving tags again after a pause, and move them forward once more if an
    older commit's image took them meanwhile. Returns the tags found holding ``pushed`` and
    what they held, so that :func:`confirm_pushed` need not ask the registry a second time.

    Two jobs publishing at once can interleave so that the older one's PUT, decided on what
    it read before the newer one's PUT, lands after it: the registry API has no conditional
    PUT. The newer job sees it here and puts its image back; the older one, seeing a newer
    commit's signed image, stops (:func:`order.move_forward`).
    """
    time.sleep(SETTLE_PAUSE)
    seen: dict[str, Manifest] = {}
    for tag in tags:
        held = run.registry.manifest(repository, tag)
        if held is not None and held.digest == pushed.digest:
            seen[tag] = held  # still this image: nothing to do
        elif order.move_forward(run, repository, tag, pushed, commit):
            run.runner.echo(
                f"{tag} held an older commit's image after this push (another publish ran at "
                "the same time): moved forward again"
            )
    return seen


def confirm_pushed(
    run: Run, image: Image, pushed: Manifest | None, seen: Mapping[str, Manifest] | None = None
) -> str:
    """Check through the registry's API that every tag resolves to ``image``; return the digest.

    ``pushed``: what the first (SHA) tag resolved to right after the push, read once by
    :func:`push`; ``seen``: what :func:`settle` read of the moving tags after its pause
    (not asked again); any other moving tag (one settle moved again) is read here."""
    registry, repository = run.registry, run.settings.repository_path
    first, *others = image.tags
    seen = seen or {}
    found = [
        (first, pushed),
        *(
            (tag, seen[tag] if tag in seen else registry.manifest(repository, tag))
            for tag in others
        ),
    ]
    if run.dry:
        return "sha256:<pushed digest>"
    for tag, manifest in found:
        _check_resolves(image, tag, manifest)
    digests = {manifest.digest for _, manifest in found if manifest is not None}
    if len(digests) > 1:
        raise SuiteError(f"the tags {', '.join(image.references)} resolve to different digests")
    return digests.pop()


def _check_resolves(image: Image, tag: str, manifest: Manifest | None) -> None:
    """A one-line error unless ``tag``'s ``manifest`` is the image ``image`` (its config)."""
    if manifest is None or manifest.config_digest != image.id:
        held = manifest.config_digest if manifest else "nothing"
        raise SuiteError(
            f"after the push, {image.repository}:{tag} resolves to {held}, not to the "
            f"smoke-tested image {image.id}: another job may have pushed meanwhile; run "
            "publish again"
        )
