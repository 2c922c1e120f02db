"""Finding 12 of issue 23, against the real Distribution registry: the build takes its layer
cache only from an image whose SBOM and provenance are signed by the trusted key.

A registry writer without the key pushes an image as ``latest`` (a real, pullable image, its
labels those of a genuine build) with unsigned attestations: containerize's ``docker build``
(kept by a recording runner: nothing is built) has no ``--cache-from``, and says why in one
line. The same image attested with the trusted key is the cache, named by its digest."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import pytest

from cicd import attestation_store, image, layer_cache, provenance, signing
from cicd import containerize as containerize_module
from cicd.ci import Revision
from cicd.containerize import containerize as build_image
from cicd.context import Run
from cicd.docker import Client
from cicd.registry import Manifest
from cicd.settings import load
from tests.support.project import IMAGE, SIGNING_PUBLIC_KEY, remove_images
from tests.unit.test_containerize_cache import (
    MODEL,
    SHA,
    Recording,
    docker_build,
    inline_cache,
    options,
    stand_in_context,
)

ROOT = Path(__file__).resolve().parents[2]
MEDIA = "application/vnd.docker.distribution.manifest.v2+json"
LAYER_MEDIA = "application/vnd.docker.image.rootfs.diff.tar.gzip"
CONFIG_MEDIA = "application/vnd.docker.container.image.v1+json"
KEY = signing.generate_private_pem()


def digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def push_image(run: Run, tag: str) -> str:
    """A one-layer image (a valid, pullable one) under ``tag``, whose inline cache records
    carry its layer; returns its digest."""
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w") as tar:
        content = b"a registry writer's layer\n"
        member = tarfile.TarInfo("planted")
        member.size = len(content)
        tar.addfile(member, io.BytesIO(content))
    layer = gzip.compress(plain.getvalue(), mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"org.opencontainers.image.version": "f" * 40}},
            "rootfs": {"type": "layers", "diff_ids": [digest(plain.getvalue())]},
            "history": [{"comment": "buildkit.dockerfile.v0", "created_by": "RUN plant"}],
            layer_cache.INLINE_CACHE_KEY: inline_cache(0),
        }
    ).encode()
    registry, repository = run.registry, run.settings.repository_path
    registry.upload_blob(repository, layer)
    registry.upload_blob(repository, config)
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA,
            "config": {"mediaType": CONFIG_MEDIA, "digest": digest(config), "size": len(config)},
            "layers": [{"mediaType": LAYER_MEDIA, "digest": digest(layer), "size": len(layer)}],
        }
    ).encode()
    pushed = registry.put_manifest(
        repository, tag, Manifest(digest(raw), digest(config), raw, MEDIA)
    )
    assert pushed == digest(raw)
    return digest(raw)


def attest(run: Run, image_digest: str, key: str | None) -> None:
    """Attach an SBOM and a provenance about ``image_digest``, signed by ``key`` (None:
    unsigned, as anyone can make them)."""
    signer = signing.signer(key) if key else None
    predicates = {
        attestation_store.SBOM: {"bomFormat": "CycloneDX"},
        attestation_store.PROVENANCE: {"x": 1},
    }
    envelopes = {
        kind: signing.envelope(
            provenance.statement(
                run.settings.repository, image_digest, kind.predicate_type, predicates[kind]
            ),
            signer,
        )
        for kind in attestation_store.KINDS
    }
    attestation_store.attach_all(run, image_digest, envelopes)


@pytest.fixture
def make_run(registry, tmp_path, monkeypatch):
    monkeypatch.setattr(containerize_module, "build_context", stand_in_context)  # no bento
    trusted = tmp_path / "publish.pub"
    trusted.write_text(signing.public_pem_of(KEY))

    def make() -> Run:
        environ = {
            "CONTAINER_REGISTRY_HOST": registry.address,
            "CONTAINER_REGISTRY_USERNAME": registry.user,
            "CONTAINER_REGISTRY_PASSWORD": registry.password,
        }
        settings = dataclasses.replace(load(ROOT, environ), signing_public_key=trusted)
        run = Run(Recording(verbose=True), settings, environ)
        run.runner.add_secret(registry.password)
        run.__dict__["docker"] = Client("/usr/bin/docker", {})  # nothing is built
        return run

    return make


def cache_from(run: Run) -> list[str]:
    """The ``cache-from=...`` options of the ``docker build`` the runner kept."""
    goal = image.Target(Revision(SHA), MODEL, run.settings.repository)
    build_image(run, goal)
    command, _ = docker_build(run)
    return [option for option in options(command) if option.startswith("cache-from=")]


def test_an_unsigned_latest_is_no_cache_source_and_a_signed_one_is_by_digest(make_run):
    run = make_run()
    planted = push_image(run, "latest")
    attest(run, planted, key=None)  # what a registry writer without the key can attach
    assert cache_from(run) == []
    printed = run.runner.printed
    assert f"cache: none ({run.settings.repository}:latest is {planted}, not verified: " in printed
    assert "unsigned" in printed

    run = make_run()
    attest(run, planted, key=KEY)  # the same image, attested by the pipeline's key
    assert cache_from(run) == [f"cache-from={run.settings.repository}@{planted}"]
    assert f"cache: from {planted} (verified)" in run.runner.printed


@pytest.mark.slow
@pytest.mark.docker
def test_the_next_publish_builds_from_the_last_verified_image(new_project, registry, training):
    """For real: the first publish of a repository has no cache; the next commit's build takes
    the image the first one pushed, signed and attested, as its cache, by digest."""
    project = new_project("layer-cache", registry, trained=training)
    project.path("signing/publish.pub").write_text(SIGNING_PUBLIC_KEY)  # the tests' key
    identity = ("-c", "user.name=tests", "-c", "user.email=tests@localhost")
    project.run("git", *identity, "commit", "-qam", "the tests' signing key is trusted")
    project.session("train")
    first = project.session("publish").stdout
    assert f"cache: none ({registry.address}/{IMAGE}:latest is not in the registry)" in first
    latest = registry.client().manifest(IMAGE, "latest")
    assert latest is not None

    project.run("git", *identity, "commit", "-q", "--allow-empty", "-m", "the next commit")
    remove_images(f"{registry.address}/{IMAGE}")  # a cold runner: the engine lacks the image
    second = project.session("publish").stdout
    assert f"cache: from {latest.digest} (verified)" in second
    cache = f"{registry.address}/{IMAGE}@{latest.digest}"
    assert f"cache-from={cache}" in second
    # BuildKit itself read the cache from the registry, which wants the login: the docker
    # build that containerize runs got the throwaway DOCKER_CONFIG (without it: "#N ERROR:
    # ... 401 Unauthorized", and the build goes on without the cache).
    step = re.search(rf"^(#\d+) importing cache manifest from {re.escape(cache)}$", second, re.M)
    assert step, second
    assert re.search(rf"^{step.group(1)} DONE", second, re.M), second
