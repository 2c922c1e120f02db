"""Releases against a real Distribution registry with a password: list, promote, roll back.

Two tiny images (``python:3.11-slim`` plus the labels the suite gives, metrics included) stand
for two published commits, A then B, pushed under their SHA tags as the publish session
does, each with an SBOM and a provenance signed by the tests' key (the project trusts its
public half, as a repository trusts its committed key): promote verifies them first. The
steps run as a user runs them, `invoke releases|promote|rollback` in a clone of the working
tree, and what they did is read back through the registry's API and access log.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess

import pytest

from cicd import image, releases, signing
from cicd.ci import Revision
from cicd.labels import CREATED_LABEL
from cicd.registry import Manifest, content_digest
from tests.integration.test_faults import MODEL, NEWER, OLDER, attest, goal, push, settings
from tests.support.project import (
    SIGNING_PUBLIC_KEY,
    Project,
    Registry,
    docker_client_path,
)

pytestmark = [pytest.mark.slow, pytest.mark.docker]

REPOSITORY = "releases-flow"
METRICS = {OLDER: {"val_acc": 0.71, "val_loss": 0.9}, NEWER: {"val_acc": 0.74, "val_loss": 0.8}}
NEVER = "c" * 40
REFUSALS = "releases-refusals"  # the refusals' own repository: no test sees another's images


def build(registry: Registry, repository: str, revision: Revision, labels=None, tag=None) -> str:
    """An image of ``revision`` with the suite's labels (and metrics), tagged with its SHA tag
    (or ``tag``); returns the reference."""
    config = settings(registry, repository)
    if labels is None:
        labels = image.labels(config, revision, MODEL, METRICS.get(revision, {}))
    reference = goal(config, revision).references[0]
    if tag:
        reference = reference.rsplit(":", 1)[0] + f":{tag}"
    lines = ["FROM python:3.11-slim"]
    if labels:
        lines.append("LABEL " + " ".join(f'"{k}"="{v}"' for k, v in labels.items()))
    subprocess.run(
        [docker_client_path(), "build", "--quiet", "--tag", reference, "-"],
        input="\n".join(lines) + "\n", text=True, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return reference


@pytest.fixture(scope="module")
def published(registry: Registry) -> dict[Revision, str]:
    """A and B under their SHA tags (and latest on B), signed: their manifest digests."""
    for revision in (OLDER, NEWER):
        push(registry, build(registry, REPOSITORY, revision))
    push(registry, goal(settings(registry, REPOSITORY), NEWER).references[0], tag_as="latest")
    client = registry.client()
    digests = {r: client.manifest(REPOSITORY, r.sha).digest for r in (OLDER, NEWER)}
    for revision, digest in digests.items():
        attest(registry, revision, digest, REPOSITORY)
    return digests


@pytest.fixture(scope="module")
def project(new_project, registry: Registry, tmp_path_factory) -> Project:
    key = tmp_path_factory.mktemp("releases-key") / "tests.pub"
    key.write_text(SIGNING_PUBLIC_KEY)
    made = new_project(
        "releases", registry,
        env={"IMAGE_NAME": REPOSITORY, "INVOKE_SUITE_SIGNING_PUBLIC_KEY": str(key)},
    )  # fmt: skip
    made.env["PYTHONPATH"] = str(made.root / "src")  # the clone's suite, whatever is installed
    return made


def uploads(lines: list[str]) -> list[str]:
    return [line for line in lines if "/blobs/uploads/" in line]


def test_promote_then_promote_then_roll_back(registry, published, project):
    client = registry.client()
    mark = len(registry.requests())
    # As `nox -s promote -- --to production --revision A` runs it (noxfile.PROMOTE).
    done = project.session("promote", "--to", "production", "--revision", OLDER.sha)
    assert client.manifest(REPOSITORY, "production").digest == published[OLDER]
    assert f"moved from nothing (new tag) to {OLDER.sha[:12]} ({published[OLDER]})" in done.stdout
    requests = registry.requests()[mark:]
    assert sum(f'"PUT /v2/{REPOSITORY}/manifests/production ' in r for r in requests) == 1
    # The only upload is the tag's history record (its digest), never a layer of the image.
    record = client.manifest(REPOSITORY, "production.history")
    put_uploads = [r for r in uploads(requests) if '"PUT ' in r]
    assert len(put_uploads) == 1 and record.config_digest.split(":")[1] in put_uploads[0]
    layers = json.loads(client.manifest(REPOSITORY, OLDER.sha).raw)["layers"]
    assert not any(layer["digest"] in line for layer in layers for line in requests)

    done = project.invoke("promote", "--to", "production", "--revision", NEWER.sha[:10])
    assert client.manifest(REPOSITORY, "production").digest == published[NEWER]
    assert f"moved from {OLDER.sha[:12]} ({published[OLDER]}) to {NEWER.sha[:12]}" in done.stdout

    done = project.invoke("promote", "--to", "production", "--revision", NEWER.sha, "--json")
    assert json.loads(done.stdout)["moved"] is False  # already there: nothing moves

    done = project.session("rollback", "--tag", "production", "--json")
    moved = json.loads(done.stdout)
    assert client.manifest(REPOSITORY, "production").digest == published[OLDER]
    assert (moved["revision"], moved["previous_digest"]) == (OLDER.sha, published[NEWER])

    project.invoke("rollback", "--tag", "production", "--to", NEWER.sha)
    assert client.manifest(REPOSITORY, "production").digest == published[NEWER]
    project.invoke("promote", "--to", "staging", "--revision", OLDER.sha)

    # releases: both images, newest first, their metrics and the tags pointing at them.
    table = project.invoke("releases").stdout.splitlines()
    rows = [line for line in table if line.startswith((OLDER.sha[:12], NEWER.sha[:12]))]
    assert [row[:12] for row in rows] == [NEWER.sha[:12], OLDER.sha[:12]]
    assert "val_acc=0.74 val_loss=0.8" in rows[0] and rows[0].endswith("latest, production")
    assert "val_acc=0.71 val_loss=0.9" in rows[1] and rows[1].endswith("staging")
    header = next(line for line in table if line.startswith("revision "))
    assert header.split() == [
        "revision", "created", "model", "model", "digest", "metrics", "image", "digest", "size",
        "tags",
    ]  # fmt: skip
    listed = json.loads(project.invoke("releases", "--json").stdout)
    assert [r["revision"] for r in listed] == [NEWER.sha, OLDER.sha]
    assert listed[0]["digest"] == published[NEWER]
    assert listed[0]["tags"] == ["latest", "production", NEWER.sha]
    assert listed[1]["tags"] == ["staging", OLDER.sha]
    assert listed[0]["metrics"] == {"val_acc": "0.74", "val_loss": "0.8"}
    assert listed[0]["model_digest"] == MODEL.digest and listed[0]["size"] > 1_000_000
    history = json.loads(registry.get(
        f"/v2/{REPOSITORY}/blobs/{client.manifest(REPOSITORY, 'production.history').config_digest}"
    ))  # fmt: skip
    entries = signing.statement_of(history, "history")["predicate"]["entries"]
    assert [e["action"] for e in entries] == [
        "promote",
        "promote",
        "rollback",
        "rollback",
    ]


def refused(project: Project, *args: str) -> str:
    # Its own repository: the images pushed for the refusals would otherwise join the
    # releases listed by test_promote_then_promote_then_roll_back (if run after it).
    done = project.invoke(*args, check=False, env={"IMAGE_NAME": REFUSALS})
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    return done.stderr.strip()


def test_what_cannot_be_promoted_is_one_line_and_moves_nothing(registry, published, project):
    # A's image pushed under another commit's tag: the tag and the revision label disagree;
    # an image without the suite's labels did not come through the publish session.
    push(registry, build(registry, REFUSALS, OLDER))
    push(registry, build(registry, REFUSALS, OLDER, tag="d" * 40))
    push(registry, build(registry, REFUSALS, OLDER, labels={}, tag="e" * 40))
    mark = len(registry.requests())  # from here on, every refusal must write nothing
    assert f"revision {NEVER[:12]} was never published" in refused(
        project, "promote", "--to", "production", "--revision", NEVER
    )
    assert "the tag and the image disagree" in refused(
        project, "promote", "--to", "production", "--revision", "d" * 40
    )
    assert "lacks the suite's labels" in refused(
        project, "promote", "--to", "production", "--revision", "e" * 40
    )
    for tag in ("latest", OLDER.sha, "production.history"):
        assert "error: " in refused(project, "promote", "--to", tag, "--revision", OLDER.sha)
    requests = registry.requests()[mark:]
    assert requests, "the refusals asked the registry nothing: the log is not being read"
    assert not any(re.search(r'"(PUT|POST|PATCH|DELETE) ', line) for line in requests)


def test_an_unsigned_image_under_a_revision_tag_is_refused_by_promote(registry, published, project):
    """Finding 5 of issue 23: promote runs verify's checks on the digest before any PUT. An
    image with every label of the suite but no signed provenance moves nothing."""
    unsigned = Revision("f" * 40, timestamp=OLDER.timestamp)
    push(registry, build(registry, REFUSALS, unsigned))
    digest = registry.client().manifest(REFUSALS, unsigned.sha).digest
    mark = len(registry.requests())
    for how in (("--revision", unsigned.sha), ("--digest", digest)):
        line = refused(project, "promote", "--to", "production", *how)
        assert line.startswith(
            f"error: {registry.address}/{REFUSALS}@{digest} ({unsigned.sha[:12]}) fails verify, "
            f"attached: no SBOM attached to {registry.address}/{REFUSALS}@{digest}"
        ), line
        assert line.endswith(
            "nothing moved; publish that commit with SIGNING_KEY set (`nox -s publish`), then "
            "promote the digest it prints"
        ), line
    requests = registry.requests()[mark:]
    assert not any(re.search(r'"(PUT|POST|PATCH|DELETE) ', line) for line in requests)


def test_promote_by_digest_moves_the_tag_to_that_digest(registry, published, project):
    done = project.invoke("promote", "--to", "by-digest", "--digest", published[OLDER], "--json")
    moved = json.loads(done.stdout)
    assert (moved["digest"], moved["revision"]) == (published[OLDER], OLDER.sha)
    assert registry.client().manifest(REPOSITORY, "by-digest").digest == published[OLDER]


def test_a_dry_run_shows_the_manifest_put_and_moves_nothing(registry, published, project):
    before = registry.client().manifest(REPOSITORY, "dry-env")
    mark = len(registry.requests())
    done = project.invoke("--dry", "promote", "--to", "dry-env", "--revision", OLDER.sha)
    shown = [line for line in done.stdout.splitlines() if line.startswith("[dry-run] $ ")]
    address = registry.address
    assert any(f"PUT http://{address}/v2/{REPOSITORY}/manifests/dry-env" in s for s in shown)
    assert any(f"POST http://{address}/v2/{REPOSITORY}/blobs/uploads/" in s for s in shown)
    said = f"dry run: {address}/{REPOSITORY}:dry-env would point at {OLDER.sha[:12]}; nothing"
    assert f"{said} was moved" in done.stdout
    assert before is None and registry.requests()[mark:] == []
    assert registry.client().manifest(REPOSITORY, "dry-env") is None
    assert registry.password not in done.stdout + done.stderr


def test_the_labels_carry_the_metrics(registry):
    config = settings(registry, REPOSITORY)
    labels = image.labels(config, OLDER, MODEL, {"val_acc": 0.733333})
    assert labels["model.metrics.val_acc"] == "0.733333" and labels[CREATED_LABEL]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", labels[CREATED_LABEL])


# --------------------------------------------------------------- rollback and its history

ROLLBACKS = "releases-rollbacks"  # three signed releases, A B C, for the history's tests
THIRD = Revision("0123456789abcdef" * 2 + "01234567", timestamp=NEWER.timestamp + 86_400)


@pytest.fixture(scope="module")
def three(registry: Registry) -> dict[str, str]:
    """A, B and C of ROLLBACKS, each pushed under its SHA tag and signed: their digests."""
    client, digests = registry.client(), {}
    for name, revision in (("A", OLDER), ("B", NEWER), ("C", THIRD)):
        push(registry, build(registry, ROLLBACKS, revision))
        digests[name] = client.manifest(ROLLBACKS, revision.sha).digest
        attest(registry, revision, digests[name], ROLLBACKS)
    return digests


def moves(project: Project, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return project.invoke(*args, check=check, env={"IMAGE_NAME": ROLLBACKS})


def history_of(registry: Registry, tag: str) -> dict:
    """The envelope of ``tag``'s history record as stored in ROLLBACKS."""
    record = registry.client().manifest(ROLLBACKS, f"{tag}.history")
    return json.loads(registry.get(f"/v2/{ROLLBACKS}/blobs/{record.config_digest}"))


def forge_history(registry: Registry, tag: str, body: bytes) -> None:
    """A registry writer's record under ``<tag>.history``: any bytes, as a config blob."""
    client = registry.client()
    digest = client.upload_blob(ROLLBACKS, body)
    raw = releases.history_manifest(digest, len(body))
    record = Manifest(content_digest(raw), digest, raw, releases.OCI_MANIFEST)
    client.put_manifest(ROLLBACKS, f"{tag}.history", record)


def test_a_second_rollback_goes_further_back_never_forward(registry, three, project):
    """Finding 6 of issue 23: history A, B, C; rollback -> B, rollback -> A (it went to C)."""
    client = registry.client()
    for name in ("A", "B", "C"):
        moves(project, "promote", "--to", "production", "--digest", three[name])
    moves(project, "rollback", "--tag", "production")
    assert client.manifest(ROLLBACKS, "production").digest == three["B"]
    moved = json.loads(moves(project, "rollback", "--tag", "production", "--json").stdout)
    assert client.manifest(ROLLBACKS, "production").digest == three["A"]
    assert (moved["digest"], moved["previous_digest"]) == (three["A"], three["B"])
    done = moves(project, "rollback", "--tag", "production", check=False)
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1
    assert "has no earlier promotion in its history (5 recorded moves)" in done.stderr
    assert client.manifest(ROLLBACKS, "production").digest == three["A"]
    # A promotion after rollbacks, then a rollback: back to where the promotion started.
    moves(project, "promote", "--to", "production", "--digest", three["C"])
    moves(project, "rollback", "--tag", "production")
    assert client.manifest(ROLLBACKS, "production").digest == three["A"]


def test_rollback_follows_only_a_history_signed_by_a_trusted_key(registry, three, project):
    """Finding 7 of issue 23: the history is signed with SIGNING_KEY and verified before a
    rollback follows it. History B, C: a plain rollback goes to B. A registry writer who
    rewrites canary.history to send it to A (an older, genuine, signed release: verify alone
    would pass it) gets a one-line refusal, and nothing moves."""
    client = registry.client()
    for name in ("B", "C"):
        moves(project, "promote", "--to", "canary", "--digest", three[name])
    genuine = history_of(registry, "canary")
    assert genuine["signatures"] and genuine["payloadType"] == signing.PAYLOAD_TYPE
    statement = signing.statement_of(genuine, "history")
    entries = statement["predicate"]["entries"]
    assert [e["digest"] for e in entries] == [three["B"], three["C"]]
    # One more move, A, slipped in before the current one (C): what a rollback from C follows.
    attack = {"revision": OLDER.sha, "digest": three["A"], "time": "", "action": "promote"}
    slipped = [*entries[:-1], attack, entries[-1]]

    # Its own statement with that move: plain JSON (the unsigned format of before), signed
    # by the writer's own key, and the genuine signature over an edited payload.
    edited = {**statement, "predicate": {**statement["predicate"], "entries": slipped}}
    payload = json.dumps(edited, sort_keys=True, separators=(",", ":")).encode()
    forged = {
        "plain JSON, not a signed envelope": json.dumps(edited["predicate"]).encode(),
        "signed by another key": json.dumps(
            signing.envelope(edited, signing.signer(signing.generate_private_pem()))
        ).encode(),
        "does not verify: its content was changed after it was signed": json.dumps(
            {**genuine, "payload": base64.b64encode(payload).decode()}
        ).encode(),
    }
    # And the genuine signed history of another tag, copied: it names that tag.
    moves(project, "promote", "--to", "other", "--digest", three["A"])
    other = json.dumps(history_of(registry, "other")).encode()
    forged[f"the signed record is the history of {registry.address}/{ROLLBACKS}:other"] = other

    for reason, body in forged.items():
        forge_history(registry, "canary", body)
        mark = len(registry.requests())
        done = moves(project, "rollback", "--tag", "canary", check=False)
        line = done.stderr.strip()
        assert done.returncode != 0 and len(line.splitlines()) == 1, done.stderr
        assert line.startswith(
            f"error: {registry.address}/{ROLLBACKS}:canary.history is not trusted: "
        ), line
        assert reason in line and "name the revision to go to with --to REV" in line, line
        writes = [r for r in registry.requests()[mark:] if re.search(r'"(PUT|POST|PATCH) ', r)]
        assert writes == [] and client.manifest(ROLLBACKS, "canary").digest == three["C"]

    # What the line says to do: --to B (verified) moves it and starts a new signed history
    # (the forged one is never extended, nor signed), which plain rollbacks then follow.
    done = moves(project, "rollback", "--tag", "canary", "--to", NEWER.sha)
    assert "canary.history is not trusted (" in done.stdout and "starting a new one" in done.stdout
    assert client.manifest(ROLLBACKS, "canary").digest == three["B"]
    entries = signing.statement_of(history_of(registry, "canary"), "h")["predicate"]["entries"]
    assert [e["digest"] for e in entries] == [three["B"]]
    moves(project, "promote", "--to", "canary", "--digest", three["C"])
    moves(project, "rollback", "--tag", "canary")
    assert client.manifest(ROLLBACKS, "canary").digest == three["B"]


def test_promote_without_signing_key_is_one_line_and_moves_nothing(registry, three, project):
    mark = len(registry.requests())
    done = project.invoke(
        "promote", "--to", "keyless", "--digest", three["A"], check=False,
        env={"IMAGE_NAME": ROLLBACKS, "SIGNING_KEY": ""},
    )  # fmt: skip
    assert done.returncode != 0 and len(done.stderr.strip().splitlines()) == 1
    assert "SIGNING_KEY is not set: promote and rollback sign the tag's history" in done.stderr
    assert not any(re.search(r'"(PUT|POST|PATCH) ', r) for r in registry.requests()[mark:])
