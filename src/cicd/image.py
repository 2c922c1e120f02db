"""The container image: build it from the bento, label it, log in, push it, verify the push.

Building goes through ``bentoml containerize`` (BentoML writes the Dockerfile); pushing and
logging in go through python-on-whales with a throwaway Docker config directory, so that
credentials never land in the user's ``~/.docker``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cicd.bento import BENTOML_ENV, ModelInfo
from cicd.ci import Revision
from cicd.docker import Client, docker_call, whales
from cicd.errors import SuiteError
from cicd.registry import CREATED_LABEL, Manifest, RegistryClient
from cicd.registry import credentials as registry_credentials
from cicd.settings import Settings
from cicd.shell import Runner, tool

MODEL_TAG_LABEL = "model.tag"
MODEL_DIGEST_LABEL = "model.digest"
DRY_MANIFEST = Manifest("sha256:<pushed digest>", "sha256:<pushed image>")


@dataclass(frozen=True)
class Image:
    id: str  # sha256:... of the local image (its config digest)
    tags: tuple[str, ...]  # full references, SHA tag first


def references(settings: Settings, revision: Revision) -> tuple[str, ...]:
    """The image references to build and push: the commit's tag first, then ``latest``."""
    return (f"{settings.repository}:{revision.tag}", f"{settings.repository}:latest")


def labels(settings: Settings, revision: Revision, model: ModelInfo) -> dict[str, str]:
    """OCI labels plus the model's tag and digest (BentoML adds none: we pass them)."""
    created = dt.datetime.fromtimestamp(revision.timestamp, dt.UTC)
    labels = {
        "org.opencontainers.image.title": settings.image_name,
        "org.opencontainers.image.revision": revision.sha,
        "org.opencontainers.image.source": revision.source_url,
        # The commit time, not the build time: rebuilding a commit gives the same labels.
        "org.opencontainers.image.created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "org.opencontainers.image.version": revision.tag,
        MODEL_TAG_LABEL: model.tag,
        MODEL_DIGEST_LABEL: model.digest,
    }
    return {key: value for key, value in labels.items() if value}  # no remote: no source


def containerize(
    runner: Runner,
    settings: Settings,
    client: Client,
    bento: str,
    tags: tuple[str, ...],
    image_labels: dict[str, str],
) -> Image:
    """``bentoml containerize`` the bento into an image with ``tags`` and ``image_labels``."""
    with tempfile.TemporaryDirectory(prefix="containerize-") as scratch:
        iidfile = Path(scratch) / "image-id"
        command = [tool("bentoml"), "containerize", bento, "--backend", "docker"]
        for reference in tags:
            command += ["--image-tag", reference]
        for key, value in image_labels.items():
            command += ["--opt", f"label={key}={value}"]
        command += ["--opt", f"iidfile={iidfile}"]
        runner.run(
            command,
            cwd=settings.root,
            env={**BENTOML_ENV, **client.env_for_tools()},
            hint="see README, Troubleshooting: image build",
        )
        image_id = iidfile.read_text().strip() if iidfile.exists() else "sha256:<built image>"
    return Image(id=image_id, tags=tags)


def local_image(runner: Runner, client: Client, tags: tuple[str, ...]) -> Image:
    """The locally built image of these tags (all must be the same image)."""
    docker = whales(client)
    ids = set()
    for reference in tags:
        found = docker_call(
            runner,
            [client.path, "image", "inspect", "--format", "{{.Id}}", reference],
            lambda ref=reference: docker.image.inspect(ref).id,
            hint="build it first: `invoke build`",
        )
        ids.add(found or "sha256:<local image>")
    if len(ids) != 1:
        raise SuiteError(f"{' and '.join(tags)} are different images: run `invoke build` again")
    return Image(id=ids.pop(), tags=tags)


@contextmanager
def logged_in(
    runner: Runner, settings: Settings, client: Client
) -> Iterator[tuple[object, list[str]]]:
    """A python-on-whales client logged in to the registry in a throwaway config directory.

    The password goes through stdin (python-on-whales uses ``--password-stdin``); the
    directory and the credentials in it are removed on exit, failure included. Yields the
    client and the command line it runs, for the echo.
    """
    creds = registry_credentials(settings)
    with tempfile.TemporaryDirectory(prefix="docker-config-") as config:
        docker = whales(client, Path(config))
        base = [client.path, "--config", config]
        if creds is None:
            yield docker, base
            return
        host = settings.registry_host
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


def push(runner: Runner, settings: Settings, client: Client, image: Image) -> str:
    """Push the SHA tag; point ``latest`` at it; verify both resolve to this image.

    ``latest`` moves by a manifest PUT of the SHA tag's manifest (its layers are already
    there), never back to an older commit than the one it holds. Returns the digest.
    """
    first, *others = image.tags
    with logged_in(runner, settings, client) as (docker, base):
        docker_call(
            runner,
            [*base, "push", first],
            lambda: docker.push(first, quiet=True),  # type: ignore[attr-defined]
            hint="check that the registry is up and that the user may push",
            retry_transient=True,
        )
    registry = RegistryClient.for_settings(runner, settings)
    repository = settings.repository_path
    pushed = registry.manifest(repository, first.rsplit(":", 1)[1])
    if pushed is None and not runner.dry:
        raise SuiteError(f"after the push, {first} is not in the registry: run publish again")
    created = registry.labels(repository, pushed).get(CREATED_LABEL, "") if pushed else ""
    for reference in others:
        # In a dry run nothing was pushed: a placeholder shows the PUT that would run.
        registry.promote(repository, reference.rsplit(":", 1)[1], pushed or DRY_MANIFEST, created)
    return verify(runner, settings, image)


def verify(runner: Runner, settings: Settings, image: Image) -> str:
    """Check through the registry's API that every tag resolves to ``image``; return the digest."""
    registry = RegistryClient.for_settings(runner, settings)
    repository = settings.repository_path
    digests = set()
    for reference in image.tags:
        manifest = registry.manifest(repository, reference.rsplit(":", 1)[1])
        if runner.dry:
            continue
        if manifest is None or manifest.config_digest != image.id:
            found = manifest.config_digest if manifest else "nothing"
            raise SuiteError(
                f"after the push, {reference} resolves to {found}, not to the smoke-tested "
                f"image {image.id}: another job may have pushed meanwhile; run publish again"
            )
        digests.add(manifest.digest)
    if len(digests) > 1:
        raise SuiteError(f"the tags {', '.join(image.tags)} resolve to different digests")
    return digests.pop() if digests else "sha256:<pushed digest>"
