"""The container image: build it from the bento, label it, log in, push it, verify the push.

Building goes through ``bentoml containerize`` (BentoML writes the Dockerfile); pushing and
logging in go through python-on-whales with a throwaway Docker config directory, so that
credentials never land in the user's ``~/.docker``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cicd import bento, dvc
from cicd.bento import BENTOML_ENV, ModelInfo
from cicd.ci import Revision
from cicd.docker import docker_call, whales
from cicd.errors import SuiteError
from cicd.http import RetryPolicy
from cicd.registry import CREATED_LABEL, Manifest, RegistryClient
from cicd.settings import Settings
from cicd.shell import tool

if TYPE_CHECKING:
    from cicd.context import Run

MODEL_TAG_LABEL = "model.tag"
MODEL_DIGEST_LABEL = "model.digest"
# ``model.metrics.<name>``: the model's flat numeric metrics (evaluation/metrics.json), so that
# `invoke releases` shows them from the registry alone.
METRICS_LABEL_PREFIX = "model.metrics."
METRICS_FILE = "evaluation/metrics.json"
# Longer than another job's read-then-PUT of a moving tag (a manifest and a config blob read).
SETTLE_PAUSE = 1.0
DRY_MANIFEST = Manifest("sha256:<pushed digest>", "sha256:<pushed image>")
# BuildKit's inline cache, which Docker 20.10's built-in BuildKit can import without buildx:
# every image records the cache keys of its layers in its config (INLINE_CACHE), and a build
# on a cold engine takes the registry's `latest` as its cache (CACHE_TAG). The layers whose
# keys match are the registry's own blobs, so the push uploads only the layers that changed.
INLINE_CACHE = "BUILDKIT_INLINE_CACHE=1"
CACHE_TAG = "latest"
INLINE_CACHE_KEY = "moby.buildkit.cache.v0"  # where the image config carries it
# Docker 20.10's BuildKit records no layer for a step it took from an imported cache
# (moby/buildkit#2274: "fails every second time"), so an image built from the cache cannot
# serve as the next one's. Each image names, in this label, the tag of the newest earlier
# image whose cache records carry its heaviest built layer (the dependencies), and the next
# build takes that image's cache too (:func:`cache_source`).
CACHE_BASE_LABEL = "build.layer-cache"
# The cache is an optimisation: quick questions to the registry, no retries.
CACHE_PROBE_POLICY = RetryPolicy(attempts=1)
CACHE_PROBE_TIMEOUT = 10.0
# BentoML's advice after a build: `docker run -p 3000:3000` would listen on every interface;
# the summary of a publish says how to run the image on 127.0.0.1 instead.
CONTAINERIZE_ADVICE = re.compile(r"To run your newly built Bento container|run --rm -p 3000:3000")


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
        "org.opencontainers.image.title": settings.image_name,
        "org.opencontainers.image.revision": revision.sha,
        "org.opencontainers.image.source": revision.source_url,
        # The commit time, not the build time: rebuilding a commit gives the same labels.
        "org.opencontainers.image.created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "org.opencontainers.image.version": revision.tag,
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


def containerize(run: Run, goal: Target | None = None) -> Image:
    """``bentoml containerize`` this commit's bento into its image, tagged and labelled.

    The image records its layers' cache keys (BuildKit's inline cache), and the registry's
    ``latest`` is the build's cache when the registry holds it (:func:`cache_source`): on a
    cold engine the unchanged layers (system, Python environment, dependencies) are the
    registry's blobs again, so a model or code change rebuilds and uploads only the last
    layers. ``goal``: the commit's image when the caller has identified it (default: this
    commit)."""
    goal = goal or target(run)
    metrics = read_metrics(run.settings.root)
    image_labels = labels(run.settings, goal.revision, goal.model, metrics)
    cache = cache_source(run, goal.repository)
    if cache.base:
        image_labels[CACHE_BASE_LABEL] = cache.base
    with (
        tempfile.TemporaryDirectory(prefix="containerize-") as scratch,
        cache_login(run, cache.sources) as env,
    ):
        iidfile = Path(scratch) / "image-id"
        bento_tag = bento.bento_tag(run.settings, goal.revision.tag)
        command = [tool("bentoml"), "containerize", bento_tag, "--backend", "docker"]
        for reference in goal.references:
            command += ["--image-tag", reference]
        for key, value in image_labels.items():
            command += ["--opt", f"label={key}={value}"]
        command += cache_options(cache.sources)
        command += ["--opt", f"iidfile={iidfile}"]
        run.runner.run(
            command,
            cwd=run.settings.root,
            env={**BENTOML_ENV, **run.docker.env_for_tools(), **env},
            hint="see model-cicd's docs/troubleshooting.md",
            drop=CONTAINERIZE_ADVICE,
        )
        image_id = iidfile.read_text().strip() if iidfile.exists() else "sha256:<built image>"
    return goal.image(image_id)


@dataclass(frozen=True)
class LayerCache:
    """What a build takes as its layer cache, and what its image records for the next one."""

    sources: tuple[str, ...] = ()  # references given as ``--cache-from``
    base: str = ""  # the tag of the newest image whose cache carries its dependencies


def cache_options(sources: tuple[str, ...]) -> list[str]:
    """``bentoml containerize`` options: record the inline cache, and use ``sources``'."""
    options = ["--opt", f"build-arg={INLINE_CACHE}"]
    for source in sources:
        options += ["--opt", f"cache-from={source}"]
    return options


def cache_source(run: Run, repository: str) -> LayerCache:
    """The registry's ``latest`` as layer cache when the registry holds it (else none: a
    first publish), and the image its cache carries the dependencies of.

    That image is ``latest`` itself when its cache records carry its heaviest built layer
    (:func:`carries_its_dependencies`), else the one ``latest`` names in its
    :data:`CACHE_BASE_LABEL` label: both are given as ``--cache-from``. Asked without
    retries: a registry that does not answer only means a build without cache. A dry run
    does not ask (the GET is shown) and shows ``latest`` as the cache."""
    settings = run.settings
    probe = RegistryClient(
        settings.registry_host,
        run.credentials,
        runner=run.runner,
        timeout=CACHE_PROBE_TIMEOUT,
        policy=CACHE_PROBE_POLICY,
    )
    latest = f"{repository}:{CACHE_TAG}"
    try:
        found = probe.manifest(settings.repository_path, CACHE_TAG)
        if run.dry:
            run.runner.detail(
                f"(a dry run does not ask: {latest} is shown as the layer cache, without the "
                f"image its {CACHE_BASE_LABEL} label names)"
            )
            return LayerCache((latest,))
        if found is None:
            run.runner.detail(f"{latest} is not in the registry: building without a layer cache")
            return LayerCache()
        config = _json_object(probe.blob(settings.repository_path, found.config_digest))
    except SuiteError as error:
        run.runner.echo(f"no layer cache from {latest} ({error}): building without it")
        return LayerCache()
    labels = (config.get("config") or {}).get("Labels") or {}
    if carries_its_dependencies(config, found.raw):
        base = str(labels.get("org.opencontainers.image.version", ""))
        sources: tuple[str, ...] = (latest,)
    else:
        base = str(labels.get(CACHE_BASE_LABEL, ""))
        sources = (latest, f"{repository}:{base}") if base else (latest,)
    run.runner.detail(f"layer cache: {', '.join(sources)} (unchanged layers are the registry's)")
    return LayerCache(sources, base)


def carries_its_dependencies(config: dict, manifest: bytes) -> bool:
    """Do the image's inline cache records (its config's ``moby.buildkit.cache.v0``) carry
    its heaviest built layer? Built: a layer whose history entry BuildKit's Dockerfile
    frontend made (not the base image's); the heaviest is the dependencies'."""
    try:
        records = json.loads(base64.b64decode(config.get(INLINE_CACHE_KEY) or ""))
        layers = json.loads(manifest)["layers"]
        history = [h for h in config.get("history") or [] if not h.get("empty_layer")]
        referenced = {
            layer.get("layer")
            for record in records
            if isinstance(record, dict)
            for layer in record.get("layers") or []
        }
    except (ValueError, TypeError, KeyError, AttributeError):
        return False
    if len(history) != len(layers):
        return False
    built = [i for i, entry in enumerate(history) if "buildkit" in str(entry.get("comment", ""))]
    if not built:
        return False
    return max(built, key=lambda i: int(layers[i].get("size", 0))) in referenced


def _json_object(body: bytes | None) -> dict:
    try:
        document = json.loads(body or b"{}")
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


@contextmanager
def cache_login(run: Run, cache: tuple[str, ...]) -> Iterator[dict[str, str]]:
    """The environment the build needs to pull ``cache``: with registry credentials, a
    throwaway Docker config holding them (``DOCKER_CONFIG``, which the ``docker build`` that
    BentoML runs reads; removed after the build); otherwise nothing.

    Written, not made by ``docker login``: the cache is optional, so a refused login must
    not stop the build (BuildKit builds without a cache it cannot pull), and the push's own
    login (:func:`logged_in`) is where refused credentials are reported."""
    creds = run.credentials
    if not cache or creds is None:
        yield {}
        return
    host = run.settings.registry_host
    with tempfile.TemporaryDirectory(prefix="docker-config-") as config:  # mode 0700
        run.runner.detail(
            f"the build pulls the layer cache as {creds.username} (DOCKER_CONFIG={config}, "
            "a throwaway config with the registry credentials, removed after the build)"
        )
        if not run.dry:
            auth = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
            path = Path(config) / "config.json"
            path.touch(mode=0o600)
            path.write_text(json.dumps({"auths": {host: {"auth": auth}}}))
        yield {"DOCKER_CONFIG": config}


def local_image(run: Run, goal: Target) -> Image:
    """The locally built image of this commit (its SHA tag: the one pushed)."""
    client, reference = run.docker, goal.references[0]
    docker = whales(client)
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
        docker = whales(client, Path(config))
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


def push(run: Run, image: Image) -> str:
    """Push the SHA tag; point ``latest`` at it; verify both resolve to this image.

    ``image``: the smoke-tested image (:func:`local_image` of this commit's target).
    ``latest`` moves by a manifest PUT of the SHA tag's manifest (its layers are already
    there), never back to an older commit than the one it holds. Returns the digest.
    """
    first, *others = image.tags
    reference = image.references[0]
    with logged_in(run) as (docker, base):
        docker_call(
            run.runner,
            [*base, "push", reference],
            lambda: docker.push(reference, quiet=True),  # type: ignore[attr-defined]
            hint="check that the registry is up and that the user may push",
            retry_transient=True,
        )
    registry, repository = run.registry, run.settings.repository_path
    pushed = registry.manifest(repository, first)
    if pushed is None and not run.dry:
        raise SuiteError(f"after the push, {reference} is not in the registry: run publish again")
    created = registry.labels(repository, pushed).get(CREATED_LABEL, "") if pushed else ""
    for tag in others:
        # In a dry run nothing was pushed: a placeholder shows the PUT that would run.
        registry.promote(repository, tag, pushed or DRY_MANIFEST, created)
    if pushed is not None and others:
        settle(run, repository, others, pushed, created)
    return verify(run, image)


def settle(run: Run, repository: str, tags: list[str], pushed: Manifest, created: str) -> None:
    """Look at the moving tags again after a pause, and move them forward once more if an
    older commit's image took them meanwhile.

    Two jobs publishing at once can interleave so that the older one's PUT, decided on what
    it read before the newer one's PUT, lands after it: the registry API has no conditional
    PUT. The newer job sees it here and puts its image back; the older one, seeing a newer
    commit's image, stops (:meth:`RegistryClient.promote`).
    """
    time.sleep(SETTLE_PAUSE)
    for tag in tags:
        if run.registry.promote(repository, tag, pushed, created):
            run.runner.echo(
                f"{tag} held an older commit's image after this push (another publish ran at "
                "the same time): moved forward again"
            )


def verify(run: Run, image: Image) -> str:
    """Check through the registry's API that every tag resolves to ``image``; return the digest."""
    registry, repository = run.registry, run.settings.repository_path
    digests = set()
    for tag in image.tags:
        manifest = registry.manifest(repository, tag)
        if run.dry:
            continue
        if manifest is None or manifest.config_digest != image.id:
            found = manifest.config_digest if manifest else "nothing"
            raise SuiteError(
                f"after the push, {image.repository}:{tag} resolves to {found}, not to the "
                f"smoke-tested image {image.id}: another job may have pushed meanwhile; run "
                "publish again"
            )
        digests.add(manifest.digest)
    if len(digests) > 1:
        raise SuiteError(f"the tags {', '.join(image.references)} resolve to different digests")
    return digests.pop() if digests else "sha256:<pushed digest>"
