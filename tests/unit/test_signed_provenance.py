"""The signed provenance of a digest, read in one place (cicd.signed_provenance) for both
check-published's skip (verify.untrusted) and `latest`'s order (order.signed_commit): a
provenance proves something only when a trusted key signed it about that very digest.

Against the small fake registry of test_containerize_cache (images and their attestations
under cosign's tag scheme, as on Distribution 2.8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cicd import attestation_store, image, order, signed_provenance, signing, verify
from cicd.ci import Revision
from tests.unit.test_containerize_cache import (
    KEY,
    MODEL,
    OTHER_KEY,
    REPOSITORY,
    SHA,
    FakeRegistry,
    image_config,
    make_run,
    put_image,
    serve_fake_registry,
)

registry = pytest.fixture(serve_fake_registry)


@pytest.fixture
def trusted_key(tmp_path) -> Path:
    path = tmp_path / "publish.pub"
    path.write_text(signing.public_pem_of(KEY))
    return path


def provenance_of_another_image(tag: str) -> str:
    """An image under ``tag`` carrying the genuine, signed attestations of another image
    (copied under its own digest's tags): signed by the trusted key, but not about it."""
    genuine = put_image("genuine", image_config(1))
    copy = put_image(tag, image_config(2), key=None)
    for kind in attestation_store.KINDS:
        artifact = FakeRegistry.manifests[attestation_store.tag_for(genuine, kind)]
        FakeRegistry.manifests[attestation_store.tag_for(copy, kind)] = artifact
    return copy


UNPROVEN = {
    "nothing attached": (lambda: put_image("x", image_config(1), key=None), "with no provenance"),
    "unsigned": (
        lambda: put_image("x", image_config(1), unsigned=True),
        "with an unsigned provenance",
    ),
    "another key": (
        lambda: put_image("x", image_config(1), key=OTHER_KEY),
        "whose provenance does not hold (the provenance is signed by another key",
    ),
    "about another image": (
        lambda: provenance_of_another_image("x"),
        "whose signed provenance is about another image",
    ),
}


def test_a_provenance_signed_by_a_trusted_key_about_the_digest_is_read(registry, trusted_key):
    digest = put_image("x", image_config(1))
    run = make_run(registry, key=trusted_key)
    signed = signed_provenance.read(run, REPOSITORY, digest)
    assert signed.statement["subject"][0]["digest"] == {"sha256": digest.removeprefix("sha256:")}
    assert signed.commit == ""  # this fake's provenance names no source


@pytest.mark.parametrize("case", UNPROVEN, ids=list(UNPROVEN))
def test_what_proves_nothing_is_said_alike_by_check_published_and_latests_order(
    registry, trusted_key, case
):
    put, why = UNPROVEN[case]
    digest = put()
    run = make_run(registry, key=trusted_key)
    with pytest.raises(signed_provenance.Unproven) as unproven:
        signed_provenance.read(run, REPOSITORY, digest)
    assert unproven.value.why.startswith(why), unproven.value.why

    manifest = run.registry.manifest(REPOSITORY, "x")
    assert manifest is not None and manifest.digest == digest
    goal = image.Target(Revision(SHA), MODEL, run.settings.repository)
    assert verify.untrusted(run, goal, manifest) == unproven.value.why
    assert order.signed_commit(run, REPOSITORY, manifest) == ""
