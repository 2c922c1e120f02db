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
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cicd import signing
from cicd.registry import Manifest, content_digest
from tests.integration.test_faults import push as push_image
from tests.integration.test_sbom_image import HOST_ONLY
from tests.support.project import (
    IMAGE,
    SIGNING_KEY,
    SIGNING_PUBLIC_KEY,
    Project,
    Registry,
    docker,
    docker_client_path,
    remove_images,
)

pytestmark = [pytest.mark.slow, pytest.mark.docker]

CHECKS = [
    "image", "attached", "signature", "subject", "model", "commit", "dvc.lock", "archive", "sbom",
]  # fmt: skip
ARCHIVE = "model/celestial_bodies_classifier_model.bentomodel"


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


def with_dependency_digest(statement: dict, role: str, algorithm: str, value: str) -> dict:
    """A copy of the provenance ``statement`` whose dependency of ``role`` (source, model...)
    records ``value`` as its ``algorithm`` digest: a forgery, to be signed again."""
    edited = json.loads(json.dumps(statement))
    for item in edited["predicate"]["buildDefinition"]["resolvedDependencies"]:
        if item["annotations"]["role"] == role:
            item["digest"][algorithm] = value
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
    assert f"8 stage outputs match the dvc.lock of {published.sha[:12]}" in done.stdout
    archive = next(line for line in lines if line.split()[1] == "archive")
    assert archive.startswith(f"ok    archive    {ARCHIVE} read from the DVC cache: md5 "), archive
    assert f"is train:model's in the dvc.lock of {published.sha[:12]}, sha256 " in archive
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
    edited = with_dependency_digest(statement, "model", "sha256", "0" * 64)
    tampered = {**envelope, "payload": base64.b64encode(json.dumps(edited).encode()).decode()}
    with replaced(
        registry, artifact_tag(image, ".att"), with_envelope(registry, manifest, tampered)
    ):
        line = failure(verify(published))
    assert line.startswith("error: signature: the provenance's signature by key"), line
    assert line.endswith("does not verify: its content was changed after it was signed")


def verify_resigned(published, registry, edit, *, key=SIGNING_KEY, suffix=".att") -> str:
    """verify's failure line once the image's provenance (``suffix`` ".sbom": its SBOM) is
    replaced by ``edit(statement)`` signed with ``key``: a forger who holds the key, or who
    signs with their own. The registry gets the original back afterwards."""
    image = digest_of(registry, published.sha).digest
    manifest, _, statement = provenance_parts(registry, image, suffix)
    resigned = signing.envelope(edit(statement), signing.signer(key))
    with replaced(
        registry, artifact_tag(image, suffix), with_envelope(registry, manifest, resigned)
    ):
        return failure(verify(published))


def test_a_provenance_signed_by_another_key_is_refused(published, registry):
    line = verify_resigned(
        published, registry, lambda statement: statement, key=signing.generate_private_pem()
    )
    assert line.startswith("error: signature: the provenance is signed by another key"), line


def test_a_signed_provenance_of_another_model_fails_the_model_check(published, registry):
    """Signed with the right key, but recording another model: the label check catches it."""
    line = verify_resigned(
        published, registry, lambda s: with_dependency_digest(s, "model", "sha256", "0" * 64)
    )
    assert line.startswith("error: model: the image's model.digest label is sha256:"), line
    assert line.endswith(f"the provenance records sha256:{'0' * 64} (" + line.split(" (")[-1])


def test_an_image_the_registry_does_not_have_is_caught(published, registry):
    missing = "sha256:" + "0" * 64
    reference = f"{registry.address}/{IMAGE}@{missing}"
    line = failure(verify(published, "--image", reference))
    assert line.startswith(f"error: image: {reference} is not in the registry"), line


def test_a_signed_provenance_of_another_commit_fails_the_commit_check(published, registry):
    line = verify_resigned(
        published, registry, lambda s: with_dependency_digest(s, "source", "gitCommit", "b" * 40)
    )
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
    line = verify_resigned(published, registry, lambda s: {**s, "predicate": bom}, suffix=".sbom")
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


def with_output_hash(statement: dict, md5: str) -> dict:
    edited = json.loads(json.dumps(statement))
    for item in edited["predicate"]["buildDefinition"]["resolvedDependencies"]:
        if item["annotations"]["role"] == "dvc-output" and item["name"].startswith("train:"):
            item["digest"]["md5"] = md5
    return edited


def test_a_provenance_whose_outputs_differ_from_the_commits_dvc_lock_is_caught(published, registry):
    """The dvc.lock of the image's commit (its SHA tag's), not of whatever is checked out."""
    line = verify_resigned(published, registry, lambda s: with_output_hash(s, "0" * 32))
    assert line.startswith("error: dvc.lock: train:"), line
    assert "in the provenance: the image was not built from the data and model of " in line


def test_unsigned_attestations_are_refused_even_when_allowed_in_a_signed_repository(published):
    """Finding 4 of issue 23: an unsigned pair is what anyone who can push to the registry
    makes. Where a public key is committed, --allow-unsigned refuses it."""
    attest = published.invoke("attest", env={"SIGNING_KEY": ""})
    assert "SIGNING_KEY is not set: the SBOM and provenance are attached UNSIGNED" in attest.stdout
    try:
        line = failure(verify(published))
        assert line.startswith(
            "error: signature: the SBOM and provenance are unsigned (published without "
            "SIGNING_KEY): run `invoke keygen"
        ), line
        allowed = published.invoke("verify", "--allow-unsigned", check=False)
        assert failure(allowed).startswith(
            "error: signature: the SBOM and provenance are unsigned, and --allow-unsigned is "
            "refused: this repository has had a public key (publish.pub)"
        ), allowed.stderr
        assert "accepted" not in allowed.stdout and "signed by" not in allowed.stdout
    finally:
        published.invoke("attest")  # signed again
    verify(published, check=True)


def test_a_half_signed_pair_is_refused_and_never_called_signed(published, registry):
    """Finding 4 of issue 23: the provenance signed, the SBOM's signature stripped."""
    image = digest_of(registry, published.sha).digest
    manifest, envelope, _ = provenance_parts(registry, image, ".sbom")
    stripped = with_envelope(registry, manifest, {**envelope, "signatures": []})
    with replaced(registry, artifact_tag(image, ".sbom"), stripped):
        for args in ((), ("--allow-unsigned",)):
            done = verify(published, *args)
            assert failure(done).startswith("error: signature: the SBOM is unsigned"), done.stderr
            assert "signed by" not in done.stdout, done.stdout


def test_after_keygen_an_image_signed_by_the_earlier_key_still_verifies(
    published, registry, tmp_path
):
    """Finding 14 of issue 23: the image was signed by the tests' key, committed here as an
    earlier key (signing/tests.pub); `invoke keygen` adds a new key beside it, and verify,
    with no --key, still trusts the earlier one and names it. Deleting its file revokes it."""
    # The new files leave the tree dirty: verify names the commit's image, not a -dirty- tag.
    image = ("--image", f"{registry.address}/{IMAGE}:{published.sha}")
    earlier = published.path("signing/tests.pub")
    earlier.write_text(SIGNING_PUBLIC_KEY)
    before = set(published.path("signing").iterdir())
    try:
        made = published.invoke("keygen", "--private-key", str(tmp_path / "new.pem"))
        added = set(published.path("signing").iterdir()) - before
        assert len(added) == 1 and next(iter(added)).name.startswith("publish-"), added
        assert "stay trusted" in made.stdout and "delete its file" in made.stdout
        keyid = signing.public_key(earlier).keyid
        done = published.invoke("verify", *image, check=True)
        assert f"ok    signature  signed by key {keyid[:16]}… (tests.pub)" in done.stdout
        earlier.unlink()  # revoked
        line = failure(published.invoke("verify", *image, check=False))
        assert line.startswith("error: signature: the SBOM is signed by another key"), line
        assert "not by any trusted key" in line, line
    finally:
        for path in set(published.path("signing").iterdir()) - before:
            path.unlink()
        earlier.unlink(missing_ok=True)
        published.run("git", "checkout", "--", "signing")


def test_a_provenance_whose_archive_is_not_the_train_output_is_caught(published, registry):
    """Finding 3 of issue 23: the archive's md5 the provenance records must be the one the
    commit's dvc.lock records for the train stage's output (read through the DVC cache)."""
    line = verify_resigned(
        published, registry, lambda s: with_dependency_digest(s, "model", "md5", "0" * 32)
    )
    assert line.startswith(f"error: archive: {ARCHIVE} is md5 "), line
    assert f"in the dvc.lock of {published.sha[:12]} (train:model), {'0' * 32} in the " in line
    assert line.endswith("the image's model is not the one that commit trained"), line


def test_attest_refuses_to_sign_an_archive_that_is_not_the_commits(published, registry):
    """Finding 3 of issue 23: a workspace archive that is not the train stage's output in
    dvc.lock (one more member, still a model archive with the same tag) is never signed,
    although git sees no change (the archive is DVC's, not git's)."""
    import io
    import tarfile

    path = published.path(ARCHIVE)
    original = path.read_bytes()
    before = {tag for tag in registry.tags() if tag.endswith((".att", ".sbom"))}
    buffer = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(original)) as source,
        tarfile.open(fileobj=buffer, mode="w:gz") as repacked,
    ):
        for member in source.getmembers():
            repacked.addfile(member, source.extractfile(member) if member.isfile() else None)
        extra = tarfile.TarInfo("poisoned.txt")
        extra.size = 5
        repacked.addfile(extra, io.BytesIO(b"owned"))
    try:
        path.write_bytes(buffer.getvalue())
        assert published.run("git", "status", "--porcelain").stdout == ""
        refused = published.invoke("attest", check=False)
        line = failure(refused)
        assert line.startswith(f"error: {ARCHIVE} (md5 "), line
        assert "is not the train:model output that dvc.lock records (md5 " in line, line
    finally:
        path.write_bytes(original)
    assert {tag for tag in registry.tags() if tag.endswith((".att", ".sbom"))} == before
    verify(published, check=True)


# --------------------------------------------------------------------------- trust by digest


def with_subject_name(statement: dict, name: str) -> dict:
    edited = json.loads(json.dumps(statement))
    edited["subject"][0]["name"] = name
    return edited


def test_a_signed_provenance_of_another_repository_fails_the_subject_check(published, registry):
    """A signed image copied from another repository (its provenance names that one)."""
    other = f"{registry.address}/another-model"
    line = verify_resigned(published, registry, lambda s: with_subject_name(s, other))
    assert line.startswith(f"error: subject: the provenance is about an image of {other}, "), line


def test_an_older_release_under_an_environment_tag_is_not_this_commit(published, registry):
    """Downgrade: a genuine, signed release under `latest` (or `production`) is checked
    against the commit verify checks against: this checkout's, or --revision."""
    identity = ("-c", "user.name=tests", "-c", "user.email=tests@localhost")
    published.run("git", *identity, "commit", "-q", "--allow-empty", "-m", "a newer commit")
    newer = published.head()
    try:
        line = failure(verify(published, "--image", f"{registry.address}/{IMAGE}:latest"))
        assert line == (
            f"error: commit: {registry.address}/{IMAGE}:latest holds the image of commit "
            f"{published.sha}, not of {newer} (this checkout's commit): an older or another "
            f"release; pass --revision {published.sha} if it is the one you mean"
        ), line
        line = failure(verify(published, "--image", f"{registry.address}/{IMAGE}:latest",
                              "--revision", "d" * 40))  # fmt: skip
        assert f"not of {'d' * 40} (--revision)" in line, line
        done = verify(published, "--image", f"{registry.address}/{IMAGE}:latest",
                      "--revision", published.sha, check=True)  # fmt: skip
        assert f"ok    commit     {published.sha} (--revision)" in done.stdout
    finally:
        published.run("git", "reset", "-q", "--hard", published.sha)


def test_outside_a_repository_the_dvc_lock_check_is_not_counted_as_passed(
    published, registry, tmp_path
):
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("tasks.py", "invoke.yaml"):
        (outside / name).write_text(published.path(name).read_text())
    reference = f"{registry.address}/{IMAGE}:{published.sha}"
    done = published.invoke("verify", "--key", str(published.key), "--image", reference,
                            cwd=outside)  # fmt: skip
    lock = next(line for line in done.stdout.splitlines() if line.split()[1] == "dvc.lock")
    assert lock.startswith("skip  dvc.lock   NOT CHECKED: not inside the model's repository"), lock
    assert json.loads(
        published.invoke(
            "verify", "--key", str(published.key), "--image", reference, "--json", cwd=outside
        ).stdout
    )[6] == {"name": "dvc.lock", "ok": False, "skipped": True, "detail": lock.split(None, 2)[2]}


def test_verify_says_exactly_what_a_first_run_without_a_key_needs(published, registry):
    """The first pipeline on main, before any key: unsigned documents (no SIGNING_KEY)."""
    image = digest_of(registry, published.sha).digest
    parts = {suffix: provenance_parts(registry, image, suffix) for suffix in (".sbom", ".att")}
    unsigned = {
        suffix: with_envelope(registry, manifest, {**envelope, "signatures": []})
        for suffix, (manifest, envelope, _) in parts.items()
    }
    with (
        replaced(registry, artifact_tag(image, ".sbom"), unsigned[".sbom"]),
        replaced(registry, artifact_tag(image, ".att"), unsigned[".att"]),
    ):
        line = failure(verify(published))
    assert line == (
        "error: signature: the SBOM and provenance are unsigned (published without "
        "SIGNING_KEY): run `invoke keygen --private-key ~/signing-key.pem`, commit the public "
        "key it writes (signing/publish.pub), store the private key file's content as the CI "
        "secret SIGNING_KEY (then delete the file), and publish again"
    ), line


def attacker_image(published: Project, registry: Registry) -> str:
    """The genuine image plus one layer of the attacker's (every label inherited), pushed
    under this commit's SHA tag; its digest."""
    genuine = f"{registry.address}/{IMAGE}@{digest_of(registry, published.sha).digest}"
    attacker = f"{registry.address}/{IMAGE}:attacker"
    subprocess.run(
        [docker_client_path(), "build", "--quiet", "--tag", attacker, "-"],
        input=f"FROM {genuine}\nRUN echo owned > /tmp/owned\n", text=True, check=True,
        capture_output=True, timeout=300,
    )  # fmt: skip
    try:
        push_image(registry, attacker)
    finally:
        remove_images(attacker)
    manifest = digest_of(registry, "attacker")
    registry.client().put_manifest(IMAGE, published.sha, manifest)
    assert digest_of(registry, published.sha).digest == manifest.digest
    return manifest.digest


def test_an_attackers_image_under_the_sha_tag_is_rebuilt_never_signed(
    published, registry, new_project
):
    """Finding 1 of issue 23: an image pushed under the commit's tag before publish (the
    genuine one plus a layer, labels inherited) is neither signed nor made `latest`; publish
    rebuilds, smoke-tests, pushes over it and signs the genuine digest; `invoke attest` alone
    in a workspace that did not build it refuses."""
    evil = attacker_image(published, registry)
    elsewhere = new_project(
        "attest-elsewhere", registry, dvc_remote=published.dvc_remote, source=published.root
    )
    assert elsewhere.head() == published.sha
    refused = elsewhere.invoke("attest", check=False)
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: this workspace pushed no image of {registry.address}/{IMAGE}:{published.sha}: "
        "not signing what it did not build and smoke-test; run `nox -s publish -- --force`, "
        "which builds, smoke-tests, pushes and signs it"
    )
    tags = registry.tags()
    assert artifact_tag(evil, ".att") not in tags and artifact_tag(evil, ".sbom") not in tags

    again = published.session("publish")
    output = again.stdout + again.stderr
    assert (
        f"{registry.address}/{IMAGE}:{published.sha} holds {evil} with no provenance: not "
        "trusted, never signed as it is; building, smoke-testing and pushing this commit's "
        "image over it"
    ) in output, output
    assert "already published" not in output
    tags = registry.tags()
    assert artifact_tag(evil, ".att") not in tags and artifact_tag(evil, ".sbom") not in tags
    assert digest_of(registry, "latest").digest != evil
    rebuilt = digest_of(registry, published.sha)
    assert rebuilt.digest != evil
    assert digest_of(registry, "latest").digest == rebuilt.digest
    assert f"attested {registry.address}/{IMAGE}:{published.sha} ({rebuilt.digest})" in output
    verify(published, check=True)
