"""The supply chain for real: publish attaches a signed SBOM and provenance, verify proves it.

A clone of the working tree trains and publishes (the sessions' own steps) to a registry
with a password, signing with the per-run key of the tests (``SIGNING_KEY`` of every project
with a registry: tests/support/project.py). Then `invoke verify` passes, and each tampering
is caught by one clear line: another image under this commit's tag, an edited provenance,
another key's signature, a missing attestation, a commit whose dvc.lock differs, unsigned
documents. Every tampering is undone before the next test. The session's secret scan checks
that the signing key appears in no output, file or image.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cicd import signing
from cicd.registry import Manifest, content_digest
from tests.integration.test_sbom_image import HOST_ONLY
from tests.support.project import (
    IMAGE,
    SIGNING_KEY,
    SIGNING_PUBLIC_KEY,
    Project,
    Registry,
    docker,
)

pytestmark = [pytest.mark.slow, pytest.mark.docker]

CHECKS = ["image", "attached", "signature", "subject", "model", "commit", "dvc.lock", "sbom"]


@pytest.fixture(scope="module")
def published(new_project, registry, training, tmp_path_factory) -> Project:
    # A clone of the run's trained project: train pulls its outputs (tests/conftest.py).
    project = new_project("supply-chain", registry, trained=training)
    project.session("train")
    project.publish_output = project.session("publish").stdout
    project.sha = project.head()
    key = tmp_path_factory.mktemp("keys") / "tests.pub"
    key.write_text(SIGNING_PUBLIC_KEY)
    project.key = key
    return project


def verify(project: Project, *args: str, key: Path | None = None, check: bool = False):
    key_args = ["--key", str(key or project.key)]
    return project.invoke("verify", *key_args, *args, check=check)


def failure(done) -> str:
    """The one error line of a failed verify (stderr's last line)."""
    assert done.returncode != 0, f"verify passed:\n{done.stdout}"
    return done.stderr.strip().splitlines()[-1]


def digest_of(registry: Registry, tag: str) -> Manifest:
    manifest = registry.client().manifest(IMAGE, tag)
    assert manifest is not None, f"{IMAGE}:{tag} is not in the registry"
    return manifest


def artifact_tag(digest: str, suffix: str) -> str:
    return digest.replace(":", "-") + suffix


@contextlib.contextmanager
def replaced(registry: Registry, tag: str, raw: bytes) -> Iterator[None]:
    """``tag`` points at the manifest ``raw`` while the block runs, then at what it held.

    A tag that did not exist stays (the registry cannot untag: deleting the manifest would
    delete it under every tag, the genuine ones included); it names an image no test uses."""
    client = registry.client()
    before = client.manifest(IMAGE, tag)
    put(registry, tag, raw)
    try:
        yield
    finally:
        if before is not None:
            put(registry, tag, before.raw)


def put(registry: Registry, tag: str, raw: bytes) -> None:
    media_type = json.loads(raw).get("mediaType", "application/vnd.oci.image.manifest.v1+json")
    registry.client().put_manifest(IMAGE, tag, Manifest(content_digest(raw), "", raw, media_type))


def delete(registry: Registry, digest: str) -> None:
    status, _, body = registry.request("DELETE", f"/v2/{IMAGE}/manifests/{digest}")
    assert status == 202, f"DELETE {digest}: HTTP {status} {body[:200]!r}"


def provenance_parts(
    registry: Registry, image_digest: str, suffix: str = ".att"
) -> tuple[dict, dict, dict]:
    """The provenance artifact's (or with ``suffix`` ".sbom", the SBOM's) manifest, its DSSE
    envelope and the statement inside."""
    client = registry.client()
    manifest = json.loads(digest_of(registry, artifact_tag(image_digest, suffix)).raw)
    envelope = json.loads(client.blob(IMAGE, manifest["layers"][0]["digest"]))
    statement = json.loads(base64.b64decode(envelope["payload"]))
    return manifest, envelope, statement


def with_envelope(registry: Registry, manifest: dict, envelope: dict) -> bytes:
    """``manifest`` with its layer replaced by ``envelope`` (uploaded)."""
    body = json.dumps(envelope).encode()
    layer = registry.client().upload_blob(IMAGE, body)
    edited = json.loads(json.dumps(manifest))
    edited["layers"][0].update(digest=layer, size=len(body))
    return json.dumps(edited, separators=(",", ":")).encode()


def with_commit(statement: dict, commit: str) -> dict:
    edited = json.loads(json.dumps(statement))
    for item in edited["predicate"]["buildDefinition"]["resolvedDependencies"]:
        if item["annotations"]["role"] == "source":
            item["digest"]["gitCommit"] = commit
    return edited


def with_model_digest(statement: dict, digest: str) -> dict:
    edited = json.loads(json.dumps(statement))
    for item in edited["predicate"]["buildDefinition"]["resolvedDependencies"]:
        if item["annotations"]["role"] == "model":
            item["digest"]["sha256"] = digest
    return edited


# --------------------------------------------------------------------------- the chain


def test_publish_attaches_a_signed_sbom_and_provenance_next_to_the_image(published, registry):
    assert "SBOM and provenance, signed" in published.publish_output
    image = digest_of(registry, published.sha).digest
    tags = registry.tags()
    assert artifact_tag(image, ".sbom") in tags and artifact_tag(image, ".att") in tags
    # The signing key's public half is all a reader needs; the private key is in no artifact
    # (the session's secret scan reads every blob and every output).
    _, envelope, statement = provenance_parts(registry, image)
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    assert len(envelope["signatures"]) == 1
    assert statement["subject"][0]["digest"]["sha256"] == image.removeprefix("sha256:")


IN_IMAGE_VERSIONS = """\
import importlib.metadata as m, json, subprocess, sys
python = {n: m.version(n) for n in sys.argv[1:]}
libc = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "libc6"],
                      capture_output=True, text=True, check=True).stdout
print(json.dumps({**python, "libc6": libc}))
"""


def test_the_attached_sbom_lists_what_is_in_the_image(published, registry):
    """The SBOM that publish attached names the versions the image really holds: asked inside
    the pushed image itself (its venv's metadata, dpkg), never from the suite's own code."""
    image = digest_of(registry, published.sha).digest
    bom = provenance_parts(registry, image, ".sbom")[2]["predicate"]
    listed = {item["name"]: item.get("version") for item in bom["components"]}
    python_packages = ["bentoml", "onnxruntime", "numpy", "pillow"]
    reference = f"{registry.address}/{IMAGE}@{image}"
    inside = docker(
        "run", "--rm", "--network", "none", "--entrypoint", "/app/.venv/bin/python", reference,
        "-c", IN_IMAGE_VERSIONS, *python_packages,
    )  # fmt: skip
    for name, version in json.loads(inside.stdout).items():
        assert listed.get(name) == version, f"{name}: SBOM {listed.get(name)}, image {version}"
    assert not set(HOST_ONLY) & set(listed), set(HOST_ONLY) & set(listed)


def test_verify_proves_the_chain_from_dvc_lock_to_the_image(published):
    done = verify(published, check=True)
    lines = done.stdout.strip().splitlines()
    assert [line.split()[1] for line in lines] == CHECKS
    assert all(line.startswith("ok ") for line in lines)
    assert "8 stage outputs match this commit's dvc.lock" in done.stdout
    sbom_line = lines[-1]
    assert " deb" in sbom_line and " pypi" in sbom_line
    as_json = json.loads(verify(published, "--json", check=True).stdout)
    assert [check["name"] for check in as_json] == CHECKS and all(c["ok"] for c in as_json)


def test_the_nox_session_runs_the_same_verify_in_a_dry_run(published):
    done = published.session("verify", "--key", str(published.key), dry=True)
    assert "GET" in done.stderr and "dry run: nothing was checked" in done.stderr
    assert done.stdout.strip() == ""


def test_the_committed_public_key_refuses_another_keys_signature(published):
    """The tests sign with their own key, not the one whose public half is committed."""
    line = failure(published.invoke("verify", check=False))
    assert line.startswith("error: signature: the SBOM is signed by another key"), line


# --------------------------------------------------------------------------- tampering


def test_another_image_under_this_commits_tag_is_caught(published, registry):
    """An image that is not the attested one, under the commit's tag: without attestations,
    then with the real ones copied next to it."""
    original = digest_of(registry, published.sha)
    client = registry.client()
    document = json.loads(original.raw)
    config = json.loads(client.blob(IMAGE, original.config_digest))
    config["config"]["Labels"]["purpose"] = "impostor"
    config_body = json.dumps(config).encode()
    document["config"].update(digest=client.upload_blob(IMAGE, config_body), size=len(config_body))
    impostor = json.dumps(document).encode()
    other = content_digest(impostor)
    with replaced(registry, published.sha, impostor):
        line = failure(verify(published))
        assert line.startswith(f"error: attached: no SBOM attached to {registry.address}/"), line
        assert artifact_tag(other, ".sbom") in line
        copies = [
            replaced(registry, artifact_tag(other, suffix),
                     digest_of(registry, artifact_tag(original.digest, suffix)).raw)
            for suffix in (".sbom", ".att")
        ]  # fmt: skip
        with copies[0], copies[1]:
            line = failure(verify(published))
            assert line == (
                f"error: subject: the SBOM is about {original.digest}, not about {other}: "
                f"the image under {registry.address}/{IMAGE}:{published.sha} is not the one "
                "attested"
            ), line
    verify(published, check=True)


def test_an_edited_provenance_fails_its_signature(published, registry):
    image = digest_of(registry, published.sha).digest
    manifest, envelope, statement = provenance_parts(registry, image)
    edited = with_model_digest(statement, "0" * 64)
    tampered = {**envelope, "payload": base64.b64encode(json.dumps(edited).encode()).decode()}
    with replaced(
        registry, artifact_tag(image, ".att"), with_envelope(registry, manifest, tampered)
    ):
        line = failure(verify(published))
    assert line.startswith("error: signature: the provenance's signature by key"), line
    assert line.endswith("does not verify: its content was changed after it was signed")


def test_a_provenance_signed_by_another_key_is_refused(published, registry):
    image = digest_of(registry, published.sha).digest
    manifest, _, statement = provenance_parts(registry, image)
    other_key = signing.signer(signing.generate_private_pem())
    resigned = signing.envelope(statement, other_key)
    with replaced(
        registry, artifact_tag(image, ".att"), with_envelope(registry, manifest, resigned)
    ):
        line = failure(verify(published))
    assert line.startswith("error: signature: the provenance is signed by another key"), line


def test_a_signed_provenance_of_another_model_fails_the_model_check(published, registry):
    """Signed with the right key, but recording another model: the label check catches it."""
    image = digest_of(registry, published.sha).digest
    manifest, _, statement = provenance_parts(registry, image)
    resigned = signing.envelope(with_model_digest(statement, "0" * 64), signing.signer(SIGNING_KEY))
    with replaced(
        registry, artifact_tag(image, ".att"), with_envelope(registry, manifest, resigned)
    ):
        line = failure(verify(published))
    assert line.startswith("error: model: the image's model.digest label is sha256:"), line
    assert line.endswith(f"the provenance records sha256:{'0' * 64} (" + line.split(" (")[-1])


def test_an_image_the_registry_does_not_have_is_caught(published, registry):
    missing = "sha256:" + "0" * 64
    reference = f"{registry.address}/{IMAGE}@{missing}"
    line = failure(verify(published, "--image", reference))
    assert line.startswith(f"error: image: {reference} is not in the registry"), line


def test_a_signed_provenance_of_another_commit_fails_the_commit_check(published, registry):
    image = digest_of(registry, published.sha).digest
    manifest, _, statement = provenance_parts(registry, image)
    resigned = signing.envelope(with_commit(statement, "b" * 40), signing.signer(SIGNING_KEY))
    with replaced(
        registry, artifact_tag(image, ".att"), with_envelope(registry, manifest, resigned)
    ):
        line = failure(verify(published))
    assert line == (
        f"error: commit: the image's revision label is {published.sha}, the provenance records "
        f"commit {'b' * 40}"
    ), line


def test_the_image_of_this_commit_under_another_commits_tag_is_caught(published, registry):
    """The genuine, signed image pushed under another commit's SHA tag (say, to pass it off
    as that commit's build): every signature holds, the commit check does not."""
    other = "c" * 40
    with replaced(registry, other, digest_of(registry, published.sha).raw):
        line = failure(verify(published, "--image", f"{registry.address}/{IMAGE}:{other}"))
    assert line == f"error: commit: the tag {other} holds the image of commit {published.sha}"


@pytest.mark.parametrize(
    "bom, message",
    [
        ({"bomFormat": "SPDX", "components": [{"name": "x"}]}, "the SBOM is not CycloneDX"),
        ({"bomFormat": "CycloneDX", "specVersion": "1.6", "components": []}, "lists no packages"),
    ],
    ids=["not CycloneDX", "no packages"],
)
def test_a_signed_sbom_that_is_not_one_fails_the_sbom_check(published, registry, bom, message):
    image = digest_of(registry, published.sha).digest
    manifest, _, statement = provenance_parts(registry, image, ".sbom")
    resigned = signing.envelope({**statement, "predicate": bom}, signing.signer(SIGNING_KEY))
    with replaced(
        registry, artifact_tag(image, ".sbom"), with_envelope(registry, manifest, resigned)
    ):
        line = failure(verify(published))
    assert line.startswith("error: sbom: ") and message in line, line


def test_a_missing_attestation_is_caught_and_publish_attaches_it_again(published, registry):
    image = digest_of(registry, published.sha).digest
    sbom = digest_of(registry, artifact_tag(image, ".sbom"))
    delete(registry, sbom.digest)
    line = failure(verify(published))
    assert line.startswith("error: attached: no SBOM attached to"), line
    again = published.session("publish")
    assert "is already published" in again.stdout
    assert "its SBOM missing: attaching them (no rebuild)" in again.stdout
    assert "containerize" not in again.stdout  # nothing was built
    verify(published, check=True)


def test_a_commit_whose_dvc_lock_differs_from_the_provenance_is_caught(published):
    lock = published.path("dvc.lock")
    text = lock.read_text()
    model_hash = next(line for line in text.splitlines() if ".dir" in line and "md5:" in line)
    lock.write_text(text.replace(model_hash, model_hash.replace("md5: ", "md5: 0"), 1))
    identity = ("-c", "user.name=tests", "-c", "user.email=tests@localhost")
    published.run("git", *identity, "commit", "-qam", "a dvc.lock the image was not built from")
    try:
        reference = f"{published.registry.address}/{IMAGE}:{published.sha}"
        line = failure(verify(published, "--image", reference))
    finally:
        published.run("git", "reset", "-q", "--hard", published.sha)
    assert line.startswith("error: dvc.lock: "), line
    assert "in this commit's dvc.lock" in line and "the image was not built from" in line


def test_unsigned_attestations_are_refused_unless_allowed(published):
    attest = published.invoke("attest", env={"SIGNING_KEY": ""})
    assert "SIGNING_KEY is not set: the SBOM and provenance are attached UNSIGNED" in attest.stdout
    try:
        line = failure(verify(published))
        assert line == (
            "error: signature: the SBOM and provenance are unsigned: publish with SIGNING_KEY "
            "set, or pass --allow-unsigned"
        ), line
        allowed = verify(published, "--allow-unsigned", check=True)
        assert "unsigned (accepted: --allow-unsigned)" in allowed.stdout
    finally:
        published.invoke("attest")  # signed again
    verify(published, check=True)
