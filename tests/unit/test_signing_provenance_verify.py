"""Signing, provenance and verification, without a registry (the real chain:
tests/integration/test_supply_chain.py)."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import os
from pathlib import Path

import pytest

from cicd import attestation_store, provenance, signing, verify
from cicd.provenance import BaseImage, BuildFacts
from cicd.registry import OCI_MANIFEST, Manifest
from cicd.signing import SigningError
from cicd.verify import Reference, parse_reference

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "sha256:" + "ab" * 32
MODEL_DIGEST = "sha256:" + "cd" * 32
LOCK = (ROOT / "dvc.lock").read_text()


@pytest.fixture(scope="module")
def key_pair(tmp_path_factory) -> tuple[str, Path]:
    private = signing.generate_private_pem()
    public = tmp_path_factory.mktemp("keys") / "publish.pub"
    public.write_text(signing.public_pem_of(private))
    return private, public


def facts(**changes) -> BuildFacts:
    moment = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
    values = dict(
        repository="127.0.0.1:5050/celestial-bodies-classifier",
        image_digest=DIGEST,
        commit="a" * 40,
        source_url="https://example.org/celestial.git",
        tags=("a" * 40, "latest"),
        model_tag="celestial_bodies_classifier_model:v1",
        model_digest=MODEL_DIGEST,
        model_path="model/celestial_bodies_classifier_model.bentomodel",
        model_lock=provenance.ArchiveInLock(
            "train", "model", provenance.lock_outputs(LOCK)["train:model"], "12" * 16
        ),
        base=BaseImage("python:3.11-slim", "sha256:" + "ef" * 32),
        versions={"suite": "0", "bentoml": "1.4.40", "docker": "20.10.24", "python": "3.11.7"},
        builder_id="urn:celestial-bodies:builder:local",
        started=moment,
        finished=moment + dt.timedelta(seconds=30),
        files={
            "params.yaml": (ROOT / "params.yaml").read_bytes(),
            "dvc.lock": (ROOT / "dvc.lock").read_bytes(),
            "evaluation/metrics.json": b'{"val_acc": 0.9}',
        },
        metrics={"val_acc": 0.9},
    )
    values.update(changes)
    return BuildFacts(**values)


# --------------------------------------------------------------------------- provenance


def test_the_lock_outputs_are_every_stage_output_of_dvc_lock():
    outputs = provenance.lock_outputs((ROOT / "dvc.lock").read_text())
    assert "generate:data/raw" in outputs and "train:model" in outputs
    assert all(len(md5.removesuffix(".dir")) == 32 for md5 in outputs.values())


def test_an_unreadable_lock_is_one_line():
    with pytest.raises(provenance.ProvenanceError, match=r"dvc.lock cannot be read.*dvc repro"):
        provenance.lock_outputs("stages: [unclosed")
    with pytest.raises(provenance.ProvenanceError) as raised:
        provenance.lock_outputs("stages: [unclosed")
    assert "\n" not in str(raised.value)


def test_the_provenance_is_a_slsa_v1_statement_about_the_image():
    statement = provenance.provenance_statement(facts())
    assert statement["_type"] == "https://in-toto.io/Statement/v1"  # in-toto spec v1
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"  # SLSA v1.0
    assert provenance.subject_digests(statement) == [DIGEST]
    predicate = statement["predicate"]
    assert predicate["buildDefinition"]["buildType"] == (
        "https://github.com/celestial-bodies/mlops-suite/publish/v1"
    )
    external = predicate["buildDefinition"]["externalParameters"]
    assert external["params"]["train"]  # params.yaml, parsed
    assert provenance.model_of(predicate) == ("celestial_bodies_classifier_model:v1", MODEL_DIGEST)
    assert provenance.commit_of(predicate) == "a" * 40
    # Every stage output of dvc.lock, with its hash: what verify compares.
    assert provenance.recorded_outputs(predicate) == provenance.lock_outputs(
        (ROOT / "dvc.lock").read_text()
    )
    versions = predicate["runDetails"]["builder"]["version"]
    assert versions["bentoml"] == "1.4.40" and versions["docker"] == "20.10.24"
    assert predicate["runDetails"]["metadata"]["startedOn"] == "2026-11-27T12:00:00Z"


def test_the_same_facts_give_the_same_bytes():
    first = provenance.dumps(provenance.provenance_statement(facts()))
    assert first == provenance.dumps(provenance.provenance_statement(facts()))


def test_a_statement_of_another_kind_is_refused_when_read_back():
    statement = provenance.sbom_statement("r", DIGEST, {"bomFormat": "CycloneDX"})
    with pytest.raises(provenance.ProvenanceError, match="not an in-toto statement of type"):
        provenance.predicate(statement, provenance.SLSA_PROVENANCE, "provenance")


def test_our_statements_read_back_and_an_older_statement_version_does_not():
    statement = provenance.provenance_statement(facts())
    slsa = "https://slsa.dev/provenance/v1"
    assert provenance.predicate(statement, slsa, "provenance") == statement["predicate"]
    older = {**statement, "_type": "https://in-toto.io/Statement/v0.1"}
    with pytest.raises(provenance.ProvenanceError, match="not an in-toto statement of type"):
        provenance.predicate(older, slsa, "provenance")
    sbom = provenance.sbom_statement("r", DIGEST, {"bomFormat": "CycloneDX"})
    assert provenance.predicate(sbom, "https://cyclonedx.org/bom", "SBOM")["bomFormat"] == (
        "CycloneDX"
    )


# --------------------------------------------------------------------------- signing


def test_a_signed_envelope_verifies_with_its_public_key(key_pair):
    private, public = key_pair
    statement = provenance.provenance_statement(facts())
    envelope = signing.envelope(statement, signing.signer(private))
    assert envelope["payloadType"] == "application/vnd.in-toto+json"  # in-toto's DSSE type
    keyid = signing.check_signature(envelope, signing.public_key(public), "provenance")
    assert len(keyid) == 64
    assert signing.statement_of(envelope, "provenance") == statement


def test_an_edited_payload_fails_its_signature(key_pair):
    private, public = key_pair
    envelope = signing.envelope(provenance.provenance_statement(facts()), signing.signer(private))
    statement = signing.statement_of(envelope, "provenance")
    statement["predicate"]["buildDefinition"]["externalParameters"]["model"]["digest"] = "x"
    edited = {**envelope, "payload": base64.b64encode(json.dumps(statement).encode()).decode()}
    with pytest.raises(SigningError, match="content was changed after it was signed"):
        signing.check_signature(edited, signing.public_key(public), "provenance")


def test_another_keys_signature_is_refused(key_pair):
    _, public = key_pair
    other = signing.signer(signing.generate_private_pem())
    envelope = signing.envelope({"_type": "x"}, other)
    with pytest.raises(SigningError, match="signed by another key"):
        signing.check_signature(envelope, signing.public_key(public), "provenance")


def test_an_unsigned_envelope_is_refused_by_the_signature_check(key_pair):
    envelope = signing.envelope({"_type": "x"}, None)
    assert envelope["signatures"] == [] and not signing.signed(envelope)
    with pytest.raises(SigningError, match="unsigned"):
        signing.check_signature(envelope, signing.public_key(key_pair[1]), "SBOM")


@pytest.mark.parametrize("bad", ["", "not a key", "-----BEGIN PRIVATE KEY-----\nAAAA\n"])
def test_a_bad_signing_key_is_one_line_that_does_not_quote_it(bad):
    with pytest.raises(SigningError) as raised:
        signing.signer(bad)
    assert "invoke keygen" in str(raised.value)
    assert "AAAA" not in str(raised.value) and "\n" not in str(raised.value)


def test_the_key_may_come_as_one_base64_line(key_pair):
    """GitLab masks only one-line variables: `base64 -w0 key.pem` is accepted too."""
    private, public = key_pair
    one_line = base64.b64encode(private.encode()).decode()
    envelope = signing.envelope({"_type": "x"}, signing.signer(one_line))
    signing.check_signature(envelope, signing.public_key(public), "provenance")


def test_an_rsa_key_is_refused():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(SigningError, match="ed25519 or ECDSA"):
        signing.signer(pem.decode())


def test_an_ecdsa_key_signs_too(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = tmp_path / "ec.pub"
    public.write_text(signing.public_pem_of(pem.decode()))
    envelope = signing.envelope({"_type": "x"}, signing.signer(pem.decode()))
    signing.check_signature(envelope, signing.public_key(public), "provenance")


def test_the_committed_public_key_is_a_key():
    assert signing.public_key(ROOT / "signing" / "publish.pub").keyid


# --------------------------------------------------------------------------- keygen


class FakeRun:
    def __init__(self, root: Path, dry: bool = False):
        from cicd.settings import load
        from cicd.shell import Runner

        self.settings = load(root, {})
        self.runner = Runner(dry=dry)
        self.dry = dry


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path, capsys):
    repository = tmp_path / "repo"
    repository.mkdir()
    (repository / "invoke.yaml").write_text((ROOT / "invoke.yaml").read_text())
    private = tmp_path / "secret" / "signing-key.pem"
    signing.keygen(FakeRun(repository), private)
    assert oct(private.stat().st_mode & 0o777) == "0o600"
    public = repository / "signing" / "publish.pub"
    assert public.read_text() == signing.public_pem_of(private.read_text())
    printed = capsys.readouterr().out
    assert max(private.read_text().splitlines(), key=len) not in printed
    assert "SIGNING_KEY" in printed and "commit it" in printed
    with pytest.raises(SigningError, match="exists: not overwriting"):
        signing.keygen(FakeRun(repository), private)


def test_keygen_refuses_a_private_key_inside_the_repository(tmp_path):
    (tmp_path / "invoke.yaml").write_text((ROOT / "invoke.yaml").read_text())
    with pytest.raises(SigningError, match="inside the repository"):
        signing.keygen(FakeRun(tmp_path), tmp_path / "key.pem")
    with pytest.raises(SigningError, match="--private-key FILE"):
        signing.keygen(FakeRun(tmp_path), None)


def test_keygen_dry_run_writes_nothing(tmp_path):
    (tmp_path / "invoke.yaml").write_text((ROOT / "invoke.yaml").read_text())
    private = tmp_path.parent / f"{tmp_path.name}-key.pem"
    signing.keygen(FakeRun(tmp_path, dry=True), private)
    assert not private.exists() and not (tmp_path / "signing").exists()


def test_the_signing_key_is_a_secret_of_the_run_and_not_given_to_children(monkeypatch):
    from cicd.context import Run
    from cicd.settings import read_config

    pem = signing.generate_private_pem()
    run = Run.create(ROOT, read_config(ROOT), {"SIGNING_KEY": pem})
    assert run.settings.signing_key == pem and pem not in repr(run.settings)
    body = max(pem.splitlines(), key=len)
    assert body not in run.runner.mask(f"key: {pem}")
    monkeypatch.setitem(os.environ, "SIGNING_KEY", pem)
    assert "SIGNING_KEY" not in run.runner.child_env(None)


# --------------------------------------------------------------------------- attaching


def test_attestations_go_under_the_cosign_tag_scheme():
    assert attestation_store.tag_for(DIGEST, attestation_store.SBOM) == f"sha256-{'ab' * 32}.sbom"
    assert (
        attestation_store.tag_for(DIGEST, attestation_store.PROVENANCE) == f"sha256-{'ab' * 32}.att"
    )


def test_the_artifact_manifest_names_its_subject_and_its_envelope():
    image = Manifest(DIGEST, "sha256:" + "00" * 32, b"{}" * 10, OCI_MANIFEST)
    raw = attestation_store.artifact_manifest(
        attestation_store.PROVENANCE, image, "sha256:" + "11" * 32, 5
    )
    document = json.loads(raw)
    assert document["artifactType"] == "application/vnd.in-toto+json"
    assert document["subject"] == {
        "mediaType": OCI_MANIFEST,
        "digest": DIGEST,
        "size": 20,
    }
    (layer,) = document["layers"]
    assert layer["mediaType"] == attestation_store.DSSE_ENVELOPE
    assert layer["annotations"]["in-toto.io/predicate-type"] == "https://slsa.dev/provenance/v1"
    # The OCI 1.1 image spec's empty descriptor, for artifacts without a config.
    assert document["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"


# --------------------------------------------------------------------------- verify


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:5050/celestial:abc", Reference("127.0.0.1:5050", "celestial", "abc")),
        ("ghcr.io/org/celestial", Reference("ghcr.io", "org/celestial", "latest")),
        (f"localhost/celestial@{DIGEST}", Reference("localhost", "celestial", "", DIGEST)),
    ],
)
def test_an_image_reference_is_parsed(text, expected):
    assert parse_reference(text) == expected
    assert str(expected) in (text, text + ":latest")


@pytest.mark.parametrize("text", ["celestial:latest", "org/celestial", "ghcr.io/x@sha256:12"])
def test_a_partial_reference_is_one_line(text):
    with pytest.raises(verify.SuiteError, match=r"not a full image reference|not a sha256"):
        parse_reference(text)


def test_a_failed_check_is_its_own_line():
    failure = verify.VerificationFailed("subject", "the SBOM is about sha256:00, not sha256:11")
    assert str(failure) == "subject: the SBOM is about sha256:00, not sha256:11"
    assert verify.Check("image", True, "x is y").line() == "ok    image      x is y"


# --------------------------------------------------------------------------- trust by digest


def test_a_statement_names_the_repository_of_its_subject():
    statement = provenance.provenance_statement(facts())
    assert provenance.subject_names(statement) == ["127.0.0.1:5050/celestial-bodies-classifier"]
    assert provenance.subject_digests(statement) == [DIGEST]


def test_any_trusted_key_verifies_and_none_is_one_line(key_pair):
    private, _ = key_pair
    envelope = signing.envelope(provenance.provenance_statement(facts()), signing.signer(private))
    other = signing.signer(signing.generate_private_pem()).public_key
    mine = signing.signer(private).public_key
    assert signing.signed_by_any(envelope, [other, mine], "provenance") == mine.keyid
    with pytest.raises(SigningError, match="signed by another key"):
        signing.signed_by_any(envelope, [other], "provenance")
    with pytest.raises(SigningError, match="no trusted key to check the provenance with"):
        signing.signed_by_any(envelope, [], "provenance")


def test_a_check_not_made_says_skip_and_is_not_passed():
    check = verify.Check("dvc.lock", False, "NOT CHECKED: not inside the model's repository", True)
    assert check.line() == "skip  dvc.lock   NOT CHECKED: not inside the model's repository"
    assert not check.ok


# --------------------------------------------------------------------------- key rotation
# Finding 14 of issue 23: one trusted key only, so after `invoke keygen` every earlier
# release failed verify. Every committed *.pub is trusted; keygen adds a file.


def repository_with_invoke_yaml(tmp_path: Path) -> Path:
    repository = tmp_path / "repo"
    repository.mkdir()
    (repository / "invoke.yaml").write_text((ROOT / "invoke.yaml").read_text())
    return repository


def signed_pair(private: str | None, sbom_signed: bool = True) -> dict:
    """The two envelopes verify reads, signed by ``private`` (None: unsigned); with
    ``sbom_signed`` False the SBOM alone is unsigned."""
    key_signer = signing.signer(private) if private else None
    return {
        attestation_store.SBOM: signing.envelope(
            {"_type": "sbom"}, key_signer if sbom_signed else None
        ),
        attestation_store.PROVENANCE: signing.envelope({"_type": "provenance"}, key_signer),
    }


def test_keygen_adds_a_key_and_the_releases_of_the_earlier_key_still_verify(tmp_path, capsys):
    repository = repository_with_invoke_yaml(tmp_path)
    signing.keygen(FakeRun(repository), tmp_path / "first.pem")
    first = (tmp_path / "first.pem").read_text()
    first_public = (repository / "signing" / "publish.pub").read_text()
    capsys.readouterr()

    signing.keygen(FakeRun(repository), tmp_path / "second.pem")
    second = (tmp_path / "second.pem").read_text()
    printed = capsys.readouterr().out
    assert (repository / "signing" / "publish.pub").read_text() == first_public  # kept
    second_id = signing.signer(second).public_key.keyid
    added = repository / "signing" / f"publish-{second_id[:12]}.pub"
    assert added.read_text() == signing.public_pem_of(second)
    assert "stay trusted" in printed and "to revoke" in printed and "delete its file" in printed

    run = FakeRun(repository)
    assert [key.source for key in signing.committed_keys(run.settings)] == [
        "publish-" + second_id[:12] + ".pub",
        "publish.pub",
    ]
    first_id = signing.signer(first).public_key.keyid
    old = verify._signatures(run, signed_pair(first), None, False)
    assert old.ok and old.detail == f"signed by key {first_id[:16]}… (publish.pub)"
    new = verify._signatures(run, signed_pair(second), None, False)
    assert new.detail == f"signed by key {second_id[:16]}… ({added.name})"


def test_deleting_a_key_file_revokes_that_key(tmp_path):
    repository = repository_with_invoke_yaml(tmp_path)
    signing.keygen(FakeRun(repository), tmp_path / "first.pem")
    signing.keygen(FakeRun(repository), tmp_path / "second.pem")
    (repository / "signing" / "publish.pub").unlink()  # the first key leaked: revoked
    envelopes = signed_pair((tmp_path / "first.pem").read_text())
    with pytest.raises(verify.VerificationFailed, match="signed by another key") as raised:
        verify._signatures(FakeRun(repository), envelopes, None, False)
    assert "not by any trusted key" not in str(raised.value)  # one key left: named as before


def test_a_signature_by_none_of_the_trusted_keys_names_them_all(tmp_path):
    repository = repository_with_invoke_yaml(tmp_path)
    signing.keygen(FakeRun(repository), tmp_path / "first.pem")
    signing.keygen(FakeRun(repository), tmp_path / "second.pem")
    envelopes = signed_pair(signing.generate_private_pem())
    with pytest.raises(verify.VerificationFailed) as raised:
        verify._signatures(FakeRun(repository), envelopes, None, False)
    message = str(raised.value)
    assert message.startswith("signature: the SBOM is signed by another key (key id "), message
    assert "not by any trusted key (key " in message and "(publish.pub))" in message, message


def test_the_trusted_keys_of_a_publish_are_every_committed_key_and_signing_keys(tmp_path):
    repository = repository_with_invoke_yaml(tmp_path)
    signing.keygen(FakeRun(repository), tmp_path / "first.pem")
    signing.keygen(FakeRun(repository), tmp_path / "second.pem")
    run = FakeRun(repository)
    own = signing.generate_private_pem()
    run.settings = dataclasses.replace(run.settings, signing_key=own)
    assert [key.source for key in signing.trusted(run)][-1] == "SIGNING_KEY"
    assert len(signing.trusted_keys(run)) == 3
    envelope = signing.envelope({"_type": "x"}, signing.signer(own))
    assert signing.signed_by_any(envelope, signing.trusted_keys(run), "provenance")


def test_a_committed_key_file_that_is_not_a_key_is_one_line(tmp_path):
    repository = repository_with_invoke_yaml(tmp_path)
    (repository / "signing").mkdir()
    (repository / "signing" / "old.pub").write_text("not a key")
    with pytest.raises(SigningError, match=r"old.pub is not a PEM public key"):
        signing.committed_keys(FakeRun(repository).settings)


# --------------------------------------------------------------------------- --allow-unsigned
# Finding 4 of issue 23: --allow-unsigned accepted a forged unsigned pair for any image, and
# said "signed by key …" when only one of the two documents was signed.


def test_allow_unsigned_is_refused_where_a_public_key_is_committed(tmp_path):
    repository = repository_with_invoke_yaml(tmp_path)
    signing.keygen(FakeRun(repository), tmp_path / "key.pem")
    with pytest.raises(verify.VerificationFailed) as raised:
        verify._signatures(FakeRun(repository), signed_pair(None), None, True)
    assert str(raised.value).startswith(
        "signature: the SBOM and provenance are unsigned, and --allow-unsigned is refused: "
        "this repository has had a public key (publish.pub)"
    ), raised.value


def test_allow_unsigned_is_refused_where_a_public_key_was_ever_committed(tmp_path):
    import subprocess

    repository = repository_with_invoke_yaml(tmp_path)
    signing.keygen(FakeRun(repository), tmp_path / "key.pem")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]
    subprocess.run(["git", "init", "-q"], cwd=repository, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repository, check=True)
    subprocess.run([*git, "commit", "-qm", "key"], cwd=repository, check=True)
    subprocess.run([*git, "rm", "-q", "signing/publish.pub"], cwd=repository, check=True)
    subprocess.run([*git, "commit", "-qm", "no key"], cwd=repository, check=True)
    with pytest.raises(verify.VerificationFailed, match=r"has had a public key \(commit \w+ has"):
        verify._signatures(FakeRun(repository), signed_pair(None), None, True)


def test_allow_unsigned_with_a_key_given_is_refused(tmp_path, key_pair):
    repository = repository_with_invoke_yaml(tmp_path)
    with pytest.raises(verify.VerificationFailed, match="--allow-unsigned is refused with a key"):
        verify._signatures(FakeRun(repository), signed_pair(None), key_pair[1], True)


def test_allow_unsigned_where_no_key_was_ever_committed_says_nothing_was_checked(tmp_path):
    repository = repository_with_invoke_yaml(tmp_path)
    check = verify._signatures(FakeRun(repository), signed_pair(None), None, True)
    assert check.skipped and not check.ok
    assert check.line().startswith("skip  signature  NOT CHECKED: the SBOM and provenance are ")
    assert "NOTHING WAS SIGNATURE-CHECKED" in check.detail and "signed by" not in check.detail


@pytest.mark.parametrize("allow_unsigned", [False, True])
def test_a_half_signed_pair_is_refused_and_never_called_signed(tmp_path, key_pair, allow_unsigned):
    """The provenance signed by the committed key, the SBOM unsigned: not "signed by"."""
    private, public = key_pair
    repository = repository_with_invoke_yaml(tmp_path)
    (repository / "signing").mkdir()
    (repository / "signing" / "publish.pub").write_text(public.read_text())
    envelopes = signed_pair(private, sbom_signed=False)
    with pytest.raises(verify.VerificationFailed) as raised:
        verify._signatures(FakeRun(repository), envelopes, None, allow_unsigned)
    assert str(raised.value).startswith("signature: the SBOM is unsigned"), raised.value
    assert "signed by key" not in str(raised.value)


# --------------------------------------------------------------------------- the model archive
# Finding 3 of issue 23: "from dvc.lock to the image" was text compared with text; nothing
# tied the archive (the image's model.digest) to the train stage's output in dvc.lock.

ARCHIVE = Path("model/celestial_bodies_classifier_model.bentomodel")
COMMITTER = ["-c", "user.name=t", "-c", "user.email=t@localhost"]


def git(repository: Path, *args: str) -> str:
    import subprocess

    done = subprocess.run(["git", *COMMITTER, *args], cwd=repository, check=True,
                          capture_output=True, text=True)  # fmt: skip
    return done.stdout.strip()


def cache_put(repository: Path, content: bytes, suffix: str = "") -> str:
    """Store ``content`` in the repository's DVC cache (DVC 3 layout); its md5."""
    import hashlib

    md5 = hashlib.md5(content).hexdigest()
    path = repository / ".dvc" / "cache" / "files" / "md5" / md5[:2] / (md5[2:] + suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return md5


def trained_repository(tmp_path: Path, archive: bytes = b"the model archive") -> Path:
    """A committed model repository as `dvc repro` leaves it: the train stage's directory
    output ``model`` (its listing in the DVC cache) holds the archive, in the cache too."""
    repository = repository_with_invoke_yaml(tmp_path)
    (repository / ".dvc").mkdir()
    (repository / ".dvc" / "config").write_text("[core]\n    remote = local\n")
    (repository / "model").mkdir()
    (repository / ARCHIVE).write_bytes(archive)
    archive_md5 = cache_put(repository, archive)
    listing = json.dumps([{"md5": archive_md5, "relpath": ARCHIVE.name}]).encode()
    listing_md5 = cache_put(repository, listing, ".dir")
    (repository / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  train:\n    cmd: python src/train.py\n    outs:\n"
        f"    - path: model\n      hash: md5\n      md5: {listing_md5}.dir\n      size: 1\n"
        "      nfiles: 1\n"
    )
    git(repository, "init", "-q")
    git(repository, "add", "invoke.yaml", "dvc.lock")
    git(repository, "commit", "-qm", "trained")
    return repository


def archive_digest(repository: Path) -> str:
    return provenance.file_hashes(repository / ARCHIVE)[1]


def test_the_provenance_binds_the_archive_to_the_train_stages_output(tmp_path):
    import hashlib

    repository = trained_repository(tmp_path)
    lock = (repository / "dvc.lock").read_text()
    bound = provenance.bind_archive(repository, lock, ARCHIVE, archive_digest(repository))
    content = (repository / ARCHIVE).read_bytes()
    assert bound == provenance.ArchiveInLock(
        "train", "model", provenance.lock_outputs(lock)["train:model"],
        hashlib.md5(content).hexdigest(),
    )  # fmt: skip
    statement = provenance.provenance_statement(
        facts(model_lock=bound, model_digest="sha256:" + hashlib.sha256(content).hexdigest())
    )
    assert provenance.archive_of(statement["predicate"]) == bound
    (model,) = provenance.dependencies(statement["predicate"], provenance.MODEL)
    assert model["digest"] == {
        "sha256": hashlib.sha256(content).hexdigest(),
        "md5": hashlib.md5(content).hexdigest(),
    }


def test_an_archive_that_is_not_the_locked_output_is_not_signed(tmp_path):
    repository = trained_repository(tmp_path)
    lock = (repository / "dvc.lock").read_text()
    (repository / ARCHIVE).write_bytes(b"another model")  # not what dvc.lock records
    with pytest.raises(provenance.ProvenanceError) as raised:
        provenance.bind_archive(repository, lock, ARCHIVE, archive_digest(repository))
    assert f"{ARCHIVE} (md5 " in str(raised.value)
    assert "is not the train:model output that dvc.lock records" in str(raised.value)
    built_with = "sha256:" + "0" * 64  # the archive changed since the image was built
    (repository / ARCHIVE).write_bytes(b"the model archive")
    with pytest.raises(provenance.ProvenanceError, match="it changed since the build"):
        provenance.bind_archive(repository, lock, ARCHIVE, built_with)


def test_a_damaged_listing_in_the_dvc_cache_is_not_trusted(tmp_path):
    repository = trained_repository(tmp_path)
    lock = (repository / "dvc.lock").read_text()
    listing_md5 = provenance.lock_outputs(lock)["train:model"]
    cached = provenance.dvc_cache_file(repository, listing_md5)
    assert cached is not None
    cached.write_text(json.dumps([{"md5": "0" * 32, "relpath": ARCHIVE.name}]))
    with pytest.raises(provenance.ProvenanceError, match="the cache is damaged"):
        provenance.archive_in_lock(repository, lock, ARCHIVE)


def test_a_stage_that_outputs_the_archive_itself_binds_it_without_a_listing(tmp_path):
    """Any model repository: the archive path comes from the settings, the stage from
    dvc.lock (here a stage named `export` whose output is the file)."""
    lock = (
        "schema: '2.0'\nstages:\n  export:\n    cmd: x\n    outs:\n"
        f"    - path: {ARCHIVE}\n      hash: md5\n      md5: {'ef' * 16}\n      size: 1\n"
    )
    assert provenance.archive_in_lock(tmp_path, lock, ARCHIVE) == provenance.ArchiveInLock(
        "export", str(ARCHIVE), "ef" * 16, "ef" * 16
    )
    with pytest.raises(provenance.ProvenanceError, match=r"no stage of dvc\.lock outputs"):
        provenance.archive_in_lock(tmp_path, lock, Path("elsewhere/model.bentomodel"))


def provenance_of(repository: Path, **changes) -> dict:
    """The provenance predicate publish makes in ``repository`` (``changes``: forged)."""
    lock = (repository / "dvc.lock").read_text()
    digest = archive_digest(repository)
    bound = provenance.bind_archive(repository, lock, ARCHIVE, digest)
    values = {"model_lock": bound, "model_digest": digest, **changes}
    return provenance.provenance_statement(facts(**values))["predicate"]


def test_verify_checks_the_archive_against_the_commits_dvc_lock(tmp_path):
    repository = trained_repository(tmp_path)
    run, commit = FakeRun(repository), git(repository, "rev-parse", "HEAD")
    digest = archive_digest(repository)
    check = verify._archive(run, provenance_of(repository), commit, digest)
    assert check.ok and not check.skipped
    assert check.detail.startswith(f"{ARCHIVE} read from the DVC cache: md5 "), check.detail
    assert f"is train:model's in the dvc.lock of {commit[:12]}" in check.detail

    predicate = provenance_of(repository)
    archive_md5 = provenance.file_hashes(repository / ARCHIVE)[0]
    provenance.dvc_cache_file(repository, archive_md5).unlink()  # the workspace's copy then
    check = verify._archive(run, predicate, commit, digest)
    assert check.ok and check.detail.startswith(f"{ARCHIVE} read from the workspace: md5 ")


def test_verify_refuses_a_provenance_whose_archive_md5_is_not_the_lock_output(tmp_path):
    """A provenance (signed: verify checked that before) that records another archive's md5
    than the one the commit's dvc.lock records for the train stage's output."""
    repository = trained_repository(tmp_path)
    run, commit = FakeRun(repository), git(repository, "rev-parse", "HEAD")
    lock = (repository / "dvc.lock").read_text()
    other = dataclasses.replace(provenance.archive_in_lock(repository, lock, ARCHIVE), md5="0" * 32)
    with pytest.raises(verify.VerificationFailed) as raised:
        verify._archive(run, provenance_of(repository, model_lock=other), commit, MODEL_DIGEST)
    assert str(raised.value).startswith(f"archive: {ARCHIVE} is md5 "), raised.value
    assert f"{'0' * 32} in the provenance: the image's model is not the one" in str(raised.value)


def test_verify_refuses_an_image_whose_model_is_not_the_locked_archive(tmp_path):
    """The label and the provenance agree on a sha256 (both made from a workspace archive),
    but the commit's archive (its md5 in dvc.lock, its bytes in the DVC cache) is another."""
    repository = trained_repository(tmp_path)
    run, commit = FakeRun(repository), git(repository, "rev-parse", "HEAD")
    poisoned = "sha256:" + "99" * 32
    predicate = provenance_of(repository, model_digest=poisoned)
    with pytest.raises(verify.VerificationFailed) as raised:
        verify._archive(run, predicate, commit, poisoned)
    assert f"has {archive_digest(repository)}, but the provenance and the image's label " in str(
        raised.value
    )


def test_verify_says_what_it_could_not_read_of_the_archive(tmp_path):
    repository = trained_repository(tmp_path)
    run, commit = FakeRun(repository), git(repository, "rev-parse", "HEAD")
    predicate, digest = provenance_of(repository), archive_digest(repository)
    archive_md5 = provenance.file_hashes(repository / ARCHIVE)[0]
    provenance.dvc_cache_file(repository, archive_md5).unlink()
    (repository / ARCHIVE).write_bytes(b"edited in the workspace")
    check = verify._archive(run, predicate, commit, digest)
    assert check.skipped and not check.ok
    assert "the archive's bytes NOT CHECKED: neither this clone's DVC cache nor" in check.detail
    listing = provenance.lock_outputs((repository / "dvc.lock").read_text())["train:model"]
    provenance.dvc_cache_file(repository, listing).unlink()
    check = verify._archive(run, predicate, commit, digest)
    assert check.skipped and "NOT CHECKED: the listing of train:model" in check.line()
    older = provenance.provenance_statement(facts(model_lock=None))["predicate"]
    (model,) = provenance.dependencies(older, provenance.MODEL)
    assert set(model["digest"]) == {"sha256"}  # what provenances before the binding record
    assert verify._archive(run, older, commit, digest).detail.startswith(
        "NOT CHECKED: this provenance predates"
    )
