"""The SBOM and provenance drafted during the smoke test: joined once, stopped on failure,
used only for the image that was pushed; and the model archive hashed once per process.

The draft's parts (sbom.generate, attestations.gather) are replaced by recorders: what is
tested here is the thread's contract (join, errors, stop), not the SBOM, which
tests/unit/test_sbom.py and the publish tests cover on real images.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from types import SimpleNamespace

import pytest

from cicd import attestation_draft, attestations, filehash, publish
from cicd.attestation_draft import NOT_PUSHED_YET
from cicd.errors import DraftFailed, SbomError, SmokeError
from cicd.registry import Manifest
from cicd.sbom import IMAGE_ID_PROPERTY
from cicd.shell import Runner
from tests.unit.test_signing_provenance_verify import facts

IMAGE_ID = "sha256:" + "1d" * 32
DIGEST = "sha256:" + "d1" * 32
STARTED = dt.datetime(2026, 12, 5, 9, 0, tzinfo=dt.UTC)


def bom_of(image_id: str) -> dict:
    component = {
        "type": "container",
        "properties": [{"name": IMAGE_ID_PROPERTY, "value": image_id}],
    }
    return {"bomFormat": "CycloneDX", "metadata": {"component": component}}


class Parts:
    """Recorders for the draft's two parts; ``generate`` waits for ``release`` when asked."""

    def __init__(self, bom: dict | None = None, error: Exception | None = None):
        self.bom, self.error = bom if bom is not None else bom_of(IMAGE_ID), error
        self.entered, self.release = threading.Event(), threading.Event()
        self.release.set()
        self.gathered: list[str] = []

    def generate(self, run, reference):
        self.entered.set()
        assert self.release.wait(10)
        if self.error:
            raise self.error
        return self.bom

    def gather(self, run, goal, digest, reference, started):
        self.gathered.append(digest)
        return facts(image_digest=digest, started=started)


@pytest.fixture
def parts(monkeypatch) -> Parts:
    found = Parts()
    monkeypatch.setattr(attestation_draft.sbom, "generate", found.generate)
    monkeypatch.setattr(attestation_draft.attestations, "gather", found.gather)
    yield found
    attestation_draft.cancel_all()


def run_and_goal():
    run = SimpleNamespace(whales=object(), runner=Runner(), dry=False)
    goal = SimpleNamespace(references=("127.0.0.1:5000/img:abc",))
    return run, goal


def test_the_draft_gives_the_sbom_and_the_facts_of_the_pushed_digest(parts):
    run, goal = run_and_goal()
    draft = attestation_draft.start(run, goal, IMAGE_ID, STARTED)
    assert attestation_draft.take() is draft and attestation_draft.take() is None
    done = draft.result()
    assert done is not None and done.bom == parts.bom
    assert parts.gathered == [NOT_PUSHED_YET]  # the digest is not known before the push
    finished = STARTED + dt.timedelta(seconds=40)
    pushed = done.facts_for(DIGEST, finished)
    assert (pushed.image_digest, pushed.started, pushed.finished) == (DIGEST, STARTED, finished)


def test_a_failed_draft_is_one_line_at_the_join_that_says_what_to_run(parts):
    parts.error = SbomError("cyclonedx-py failed\nTraceback (most recent call last): ...")
    run, goal = run_and_goal()
    draft = attestation_draft.start(run, goal, IMAGE_ID, STARTED)
    with pytest.raises(DraftFailed) as raised:
        draft.result()
    message = str(raised.value)
    assert "\n" not in message and "cyclonedx-py failed" in message
    assert "invoke attest" in message and "nothing was signed" in message


def test_a_cancelled_draft_stops_before_its_next_part_and_is_waited_for(parts):
    parts.release.clear()  # the SBOM is being made...
    run, goal = run_and_goal()
    draft = attestation_draft.start(run, goal, IMAGE_ID, STARTED)
    assert parts.entered.wait(10)
    threading.Timer(0.3, parts.release.set).start()  # ...and ends after the stop is asked
    draft.cancel()  # returns only once the thread has ended
    assert not draft._thread.is_alive()
    assert parts.gathered == [], "the provenance was still gathered after the stop"
    assert draft.result() is None


def test_an_sbom_of_another_image_than_the_one_smoke_tested_is_not_kept(parts):
    parts.bom = bom_of("sha256:" + "0e" * 32)  # the tag moved to another image meanwhile
    run, goal = run_and_goal()
    assert attestation_draft.start(run, goal, IMAGE_ID, STARTED).result() is None


def test_attest_uses_the_draft_only_for_the_image_that_was_pushed(parts):
    run, goal = run_and_goal()
    draft = attestation_draft.start(run, goal, IMAGE_ID, STARTED)
    pushed = Manifest(DIGEST, IMAGE_ID)
    assert attestations._drafted_for(run, draft, pushed) is draft.result()
    other = Manifest(DIGEST, "sha256:" + "0e" * 32)
    assert attestations._drafted_for(run, draft, other) is None
    assert attestations._drafted_for(run, None, pushed) is None  # no draft: attest makes them


def test_a_failing_smoke_test_stops_the_draft_before_the_push(parts, monkeypatch):
    # The order: the smoke step fails, so the invoke run never reaches push or attest; the
    # draft (nothing signed, nothing attached: it only drafts) is stopped and waited for.
    parts.release.clear()
    run, goal = run_and_goal()
    target = SimpleNamespace(references=goal.references)
    monkeypatch.setattr(publish.image, "target", lambda _: target)
    monkeypatch.setattr(publish.image, "local_image", lambda *_: SimpleNamespace(id=IMAGE_ID))

    def failing_smoke_test(run, reference):
        assert parts.entered.wait(10)  # the SBOM is being made while the test runs
        threading.Timer(0.3, parts.release.set).start()
        raise SmokeError("POST /predict answered HTTP 500")

    monkeypatch.setattr("cicd.smoke.smoke_test", failing_smoke_test)
    with pytest.raises(SmokeError):
        publish.smoke_test(run, STARTED)
    draft = attestation_draft.take()
    assert draft is not None and not draft._thread.is_alive()
    assert parts.gathered == [] and draft.result() is None


# --------------------------------------------------------------------------- filehash


def test_a_file_is_hashed_once_while_it_is_unchanged(tmp_path, monkeypatch):
    archive = tmp_path / "model.bentomodel"
    archive.write_bytes(b"model bytes" * 1000)
    opened = []
    real_open = type(archive).open
    monkeypatch.setattr(
        type(archive), "open", lambda self, *a, **k: opened.append(self) or real_open(self, *a, **k)
    )
    filehash.forget()
    first = filehash.hashes(archive)
    assert filehash.hashes(archive) == first and len(opened) == 1
    assert first[1].startswith("sha256:") and len(first[0]) == 32


def test_a_file_rewritten_with_its_size_and_mtime_restored_is_hashed_again(tmp_path):
    archive = tmp_path / "model.bentomodel"
    archive.write_bytes(b"A" * 4096)
    before = os.stat(archive)
    first = filehash.hashes(archive)
    time.sleep(0.05)  # file times tick with the kernel's coarse clock (a few ms)
    with archive.open("r+b") as stream:  # same inode, same size
        stream.write(b"B")
    os.utime(archive, ns=(before.st_atime_ns, before.st_mtime_ns))  # mtime set back
    assert filehash.hashes(archive) != first  # the status-change time moved: read again
