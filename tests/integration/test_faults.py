"""``latest`` against a real Distribution registry: repaired by a manifest PUT, never moved back.

Two tiny images (``python:3.11-slim`` plus labels) stand for two commits: A, committed first,
and B, committed later. Their SHA tags are pushed with the docker client; what the suite does
with ``latest`` is then read back through the registry's API and its access log.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import subprocess
import tempfile

import pytest

from cicd import image
from cicd.bento import ModelInfo
from cicd.ci import Revision
from cicd.docker import choose_client
from cicd.errors import SuiteError
from cicd.publish import Target, already_published
from cicd.registry import CREATED_LABEL, REVISION_LABEL
from cicd.settings import Settings, load
from cicd.shell import Runner
from tests.support.project import ROOT, Registry, docker_client_path

pytestmark = [pytest.mark.slow, pytest.mark.docker]

MODEL = ModelInfo("celestial_bodies_classifier_model:faults", "sha256:" + "ab" * 32)
OLDER = Revision("a" * 40, timestamp=int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()))
NEWER = Revision("b" * 40, timestamp=int(dt.datetime(2026, 2, 1, tzinfo=dt.UTC).timestamp()))


def settings(registry: Registry, repository: str) -> Settings:
    """The repository's settings, aimed at the test registry with its credentials."""
    return dataclasses.replace(
        load(ROOT, {}),
        registry=registry.address,
        registry_username=registry.user,
        registry_password=registry.password,
        image_name=repository,
        network_timeout=30.0,
    )


def goal(config: Settings, revision: Revision) -> Target:
    return Target(revision, MODEL, image.references(config, revision))


def build(config: Settings, revision: Revision) -> str:
    """An image of ``revision`` with the labels the suite gives it; returns its ID."""
    labels = image.labels(config, revision, MODEL)
    assert labels[CREATED_LABEL] and labels[REVISION_LABEL] == revision.sha
    lines = [
        "FROM python:3.11-slim",
        "LABEL " + " ".join(f'"{k}"="{v}"' for k, v in labels.items()),
    ]
    reference = goal(config, revision).tags[0]
    subprocess.run(
        [docker_client_path(), "build", "--quiet", "--tag", reference, "-"],
        input="\n".join(lines) + "\n", text=True, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    inspect = [docker_client_path(), "image", "inspect", "--format", "{{.Id}}", reference]
    return subprocess.run(inspect, capture_output=True, text=True, check=True).stdout.strip()


def push(registry: Registry, *references: str, tag_as: str | None = None) -> None:
    """``docker push`` with a throwaway login (as another job, outside the suite, would)."""
    client = docker_client_path()
    with tempfile.TemporaryDirectory() as config:
        login = [client, "--config", config, "login", registry.address, "--username"]
        subprocess.run(
            [*login, registry.user, "--password-stdin"],
            input=registry.password, text=True, check=True, capture_output=True,
        )  # fmt: skip
        for reference in references:
            target = reference
            if tag_as:
                target = reference.rsplit(":", 1)[0] + f":{tag_as}"
                subprocess.run([client, "tag", reference, target], check=True)
            subprocess.run(
                [client, "--config", config, "push", target], check=True, capture_output=True
            )
        subprocess.run([client, "--config", config, "logout", registry.address], check=False)


def log_since(registry: Registry, mark: int) -> list[str]:
    return registry.requests()[mark:]


def test_a_missing_then_stale_latest_is_repaired_without_a_rebuild(registry: Registry):
    config = settings(registry, "faults-repair")
    client = registry.client()
    older, newer = goal(config, OLDER), goal(config, NEWER)
    build(config, OLDER), build(config, NEWER)
    push(registry, newer.tags[0])  # a publish whose `latest` step failed
    assert client.manifest("faults-repair", "latest") is None

    out = io.StringIO()
    mark = len(registry.requests())
    digest = already_published(Runner(out=out), config, newer)
    assert digest and client.manifest("faults-repair", "latest").digest == digest
    assert "repaired (manifest PUT, no rebuild)" in out.getvalue()
    requests = log_since(registry, mark)
    assert sum('"PUT /v2/faults-repair/manifests/latest' in line for line in requests) == 1
    assert not any("/blobs/uploads/" in line for line in requests), "a layer was pushed"

    mark = len(registry.requests())
    assert already_published(Runner(out=io.StringIO()), config, newer) == digest
    assert not any('"PUT ' in line for line in log_since(registry, mark))  # nothing to repair

    push(registry, older.tags[0], tag_as="latest")  # another job moved latest back, by hand
    assert client.manifest("faults-repair", "latest").digest != digest
    out = io.StringIO()
    assert already_published(Runner(out=out), config, newer) == digest
    assert client.manifest("faults-repair", "latest").digest == digest
    assert "repaired" in out.getvalue()


def test_latest_never_moves_to_an_older_commit(registry: Registry):
    config = settings(registry, "faults-older")
    client = registry.client()
    older, newer = goal(config, OLDER), goal(config, NEWER)
    older_id = build(config, OLDER)
    build(config, NEWER)
    push(registry, newer.tags[0])
    push(registry, newer.tags[0], tag_as="latest")
    push(registry, older.tags[0])
    latest = client.manifest("faults-older", "latest")

    mark = len(registry.requests())
    with pytest.raises(SuiteError) as refused:
        already_published(Runner(out=io.StringIO()), config, older)
    message = str(refused.value)
    assert "newer commit (bbbbbbbbbbbb, 2026-02-01T00:00:00Z)" in message
    assert "not moving it back" in message and "\n" not in message

    # The push path of an older commit stops the same way, after pushing only its SHA tag.
    with pytest.raises(SuiteError, match="not moving it back"):
        image.push(
            Runner(out=io.StringIO()), config, choose_client(), image.Image(older_id, older.tags)
        )
    assert client.manifest("faults-older", "latest") == latest
    assert not any(
        "/manifests/latest" in line and '"PUT ' in line for line in log_since(registry, mark)
    )
