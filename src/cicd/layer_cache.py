"""The build's layer cache: taken from the registry only from an image whose provenance verifies.

BuildKit's inline cache, which Docker 20.10's built-in BuildKit can import without buildx:
every image records the cache keys of its layers in its config (:data:`INLINE_CACHE`), and a
build on a cold engine takes an earlier image of the registry as its cache (``--cache-from``).
The layers whose keys match are the registry's own blobs, so the push uploads only the layers
that changed.

A cache source is trusted input: BuildKit reuses a layer whose key its records claim, so
whoever can write a tag of the registry could put their layers into this build (BuildKit's
maintainers: "you need to trust your cache sources"). So the cache is an image named by its
digest, never by a tag, and only one whose SBOM and provenance are signed by a trusted key
and are about that digest (`invoke verify`'s first checks, :func:`verified`); otherwise the
build takes no cache from the registry. One line says which: ``cache: from <digest>
(verified)`` or ``cache: none (<why>)``.
"""

from __future__ import annotations

import base64
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cicd.errors import SuiteError
from cicd.labels import CACHE_BASE_LABEL, VERSION_LABEL
from cicd.registry import RegistryClient
from cicd.retry import RetryPolicy

if TYPE_CHECKING:
    from cicd.context import Run

INLINE_CACHE = "BUILDKIT_INLINE_CACHE=1"
CACHE_TAG = "latest"  # the image a build looks at first: the newest publish
INLINE_CACHE_KEY = "moby.buildkit.cache.v0"  # where the image config carries it
# The cache is an optimisation: quick questions to the registry, no retries.
CACHE_PROBE_POLICY = RetryPolicy(attempts=1)
CACHE_PROBE_TIMEOUT = 10.0
# `invoke verify`'s checks that make an image a cache source: it is the digest asked for, its
# SBOM and provenance are attached, signed by a trusted key, and about that digest. The later
# checks (model, commit, dvc.lock) are about this commit's image, not an earlier one's.
TRUSTED = ("image", "attached", "signature", "subject")


@dataclass(frozen=True)
class LayerCache:
    """What a build takes as its layer cache, and what its image records for the next one."""

    sources: tuple[str, ...] = ()  # references given as ``--cache-from``, by digest
    base: str = ""  # the tag of the newest image whose cache carries its dependencies


def cache_options(sources: tuple[str, ...]) -> list[str]:
    """``bentoml containerize`` options: record the inline cache, and use ``sources``'."""
    options = ["--opt", f"build-arg={INLINE_CACHE}"]
    for source in sources:
        options += ["--opt", f"cache-from={source}"]
    return options


def verified(run: Run, digest: str) -> str:
    """Why the image ``digest`` of this repository is not a trusted cache source ("" when it
    is): `invoke verify`'s checks :data:`TRUSTED` (:func:`cicd.verify.checks`), with the
    trusted key and no unsigned documents accepted."""
    from cicd import verify

    settings = run.settings
    reference = f"{settings.registry_host}/{settings.repository_path}@{digest}"
    passed: set[str] = set()
    try:
        for check in verify.checks(run, reference, None, False):
            passed.add(check.name)
            if passed.issuperset(TRUSTED):
                return ""
    except SuiteError as error:
        return str(error)
    return f"verify stopped before its {', '.join(c for c in TRUSTED if c not in passed)} check"


def cache_source(run: Run, repository: str) -> LayerCache:
    """The registry's ``latest``, by digest, as the layer cache when its provenance verifies
    (:func:`verified`); else none (a first publish, an unsigned or foreign ``latest``, a
    registry that does not answer).

    Also the image its cache carries the dependencies of: ``latest`` itself when its cache
    records carry its heaviest built layer (:func:`carries_its_dependencies`), else the one
    ``latest`` names in its :data:`CACHE_BASE_LABEL` label, resolved to a digest and
    verified in turn. Asked without retries: a registry that does not answer only means a
    build without cache. A dry run asks nothing (the GET is shown) and shows the cache as
    ``latest``'s digest, which a real run uses only once it verifies."""
    settings, runner = run.settings, run.runner
    probe = RegistryClient(
        settings.registry_host,
        run.credentials,
        runner=runner,
        timeout=CACHE_PROBE_TIMEOUT,
        policy=CACHE_PROBE_POLICY,
    )
    latest, path = f"{repository}:{CACHE_TAG}", settings.repository_path
    try:
        found = probe.manifest(path, CACHE_TAG)
        if run.dry:
            runner.detail(
                f"(a dry run asks nothing: the cache would be {latest} by its digest, once its "
                "provenance verifies with the trusted key)"
            )
            return LayerCache((f"{repository}@sha256:<verified-{CACHE_TAG}>",))
        if found is None:
            runner.echo(f"cache: none ({latest} is not in the registry)")
            return LayerCache()
        why = verified(run, found.digest)
        if why:
            # verify's advice (`run invoke keygen ...`) is for a publish, not for this build's
            # cache: the line keeps the reason, -v shows it whole.
            runner.echo(
                f"cache: none ({latest} is {found.digest}, not verified: "
                f"{why.split(': run `', 1)[0]})"
            )
            runner.detail(f"cache: {latest} not verified: {why}")
            return LayerCache()
        config = _json_object(probe.blob(path, found.config_digest))
    except SuiteError as error:
        runner.echo(f"cache: none ({latest} could not be read: {error})")
        return LayerCache()
    sources = [f"{repository}@{found.digest}"]
    labels = (config.get("config") or {}).get("Labels") or {}
    said = f"cache: from {found.digest} (verified)"
    if carries_its_dependencies(config, found.raw):
        base = str(labels.get(VERSION_LABEL, ""))
    else:
        base = str(labels.get(CACHE_BASE_LABEL, ""))
        extra = _verified_base(run, probe, repository, base) if base else ""
        if extra:
            sources.append(f"{repository}@{extra}")
            said += f" and {extra} (verified: {base}, the image its {CACHE_BASE_LABEL} names)"
    runner.echo(said)
    return LayerCache(tuple(sources), base)


def _verified_base(run: Run, probe: RegistryClient, repository: str, tag: str) -> str:
    """The digest of ``repository:tag`` when it verifies ("" otherwise, said with -v)."""
    try:
        found = probe.manifest(run.settings.repository_path, tag)
    except SuiteError as error:
        run.runner.detail(f"no cache from {repository}:{tag} ({error})")
        return ""
    why = verified(run, found.digest) if found else f"{repository}:{tag} is not in the registry"
    if why:
        run.runner.detail(f"no cache from {repository}:{tag}: {why}")
        return ""
    return found.digest if found else ""


def carries_its_dependencies(config: dict[str, Any], manifest: bytes) -> bool:
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


def _json_object(body: bytes | None) -> dict[str, Any]:
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
    login (:func:`cicd.image.logged_in`) is where refused credentials are reported."""
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
