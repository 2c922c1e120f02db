"""`latest` after attest: one PUT, the settle pause, one look again, and nothing read twice.

A registry in memory records each read and PUT of a tag with its time, so that the order
and the pause can be checked without sleeping a full SETTLE_PAUSE per test (it is shortened
here; the rule checked is relative to it). tests/integration/test_faults.py runs the same
steps against a real registry, with two publishes interleaved.
"""

from __future__ import annotations

import io
import time
from types import SimpleNamespace

import pytest

from cicd import image, order, publish
from cicd.image import Image
from cicd.registry import Manifest
from cicd.shell import Runner

REPOSITORY = "org/app"
COMMIT = "c0ffee" * 6 + "c0ff"
OURS = Manifest("sha256:" + "a1" * 32, "sha256:" + "1a" * 32, b"{}", "application/json")
OLDER = Manifest("sha256:" + "b2" * 32, "sha256:" + "2b" * 32, b"{}", "application/json")


class Registry:
    """Tags in memory; ``log``: (method, tag, monotonic time) of every read and PUT."""

    def __init__(self, tags: dict[str, Manifest], overtaken_by: Manifest | None = None):
        self.tags, self.log = dict(tags), []
        self.overtaken_by = overtaken_by  # another job's stale PUT, landing after our first

    def manifest(self, repository: str, reference: str) -> Manifest | None:
        self.log.append(("GET", reference, time.monotonic()))
        return self.tags.get(reference)

    def put_manifest(self, repository: str, tag: str, manifest: Manifest) -> str:
        self.tags[tag] = manifest
        self.log.append(("PUT", tag, time.monotonic()))
        if self.overtaken_by is not None:
            self.tags[tag], self.overtaken_by = self.overtaken_by, None
        return manifest.digest

    def of(self, tag: str) -> list[tuple[str, float]]:
        return [(method, at) for method, name, at in self.log if name == tag]


@pytest.fixture(autouse=True)
def short_pause(monkeypatch):
    monkeypatch.setattr(image, "SETTLE_PAUSE", 0.2)
    monkeypatch.setattr(order, "signed_commit", lambda *_: "")  # no held image proves anything


def run_with(registry: Registry) -> SimpleNamespace:
    return SimpleNamespace(
        registry=registry,
        runner=Runner(out=io.StringIO()),
        dry=False,
        settings=SimpleNamespace(repository_path=REPOSITORY),
    )


def ours() -> Image:
    return Image(OURS.config_digest, f"127.0.0.1:5000/{REPOSITORY}", (COMMIT, "latest"))


def test_latest_is_put_then_read_once_after_the_pause_and_not_again():
    registry = Registry({COMMIT: OURS, "latest": OLDER})
    assert image.move_tags(run_with(registry), ours(), OURS) == OURS.digest
    assert registry.tags["latest"] == OURS
    latest = registry.of("latest")
    # A read before the PUT (is it older?), the PUT, one read after the pause; confirm_pushed
    # takes that read instead of asking a second time. The SHA tag: push's read, not again.
    assert [method for method, _ in latest] == ["GET", "PUT", "GET"], latest
    assert registry.of(COMMIT) == []
    (put_at,), (read_at,) = [a for m, a in latest if m == "PUT"], [a for _, a in latest[2:]]
    # settle's safety: the look again comes at least SETTLE_PAUSE after this job's PUT.
    assert read_at - put_at >= image.SETTLE_PAUSE


def test_an_older_put_landing_after_ours_is_undone_and_confirmed_by_a_fresh_read():
    registry = Registry({COMMIT: OURS, "latest": OLDER}, overtaken_by=OLDER)
    out = run_with(registry)
    assert image.move_tags(out, ours(), OURS) == OURS.digest
    assert registry.tags["latest"] == OURS
    assert "moved forward again" in out.runner.out.getvalue()
    methods = [method for method, _ in registry.of("latest")]
    # settle's look, move_forward's own read and PUT, then confirm_pushed reads what the
    # second PUT left (it was not seen holding this image).
    assert methods == ["GET", "PUT", "GET", "GET", "PUT", "GET"], methods


def test_move_tags_takes_the_image_attest_checked_without_asking_the_engine(monkeypatch):
    goal = SimpleNamespace(
        image=lambda image_id: Image(image_id, "r", (COMMIT, "latest")), references=("r:x",)
    )
    monkeypatch.setattr(publish.image, "target", lambda _: goal)

    def engine_asked(*_):
        raise AssertionError("docker image inspect again: attest checked the local image")

    monkeypatch.setattr(publish.image, "local_image", engine_asked)
    moved: list[Image] = []
    monkeypatch.setattr(publish.image, "move_tags", lambda _, local, __: moved.append(local) or "d")
    out = run_with(Registry({}))
    publish.move_tags(out, OURS)
    assert [local.id for local in moved] == [OURS.config_digest]
