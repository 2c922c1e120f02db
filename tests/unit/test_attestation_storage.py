"""Where attestations go: the referrers API of an OCI 1.1 registry, else the tag scheme.

Distribution 2.8 (the embedded and the tests' registry) has no referrers API, so the
integration tests exercise the tag scheme; this fake registry speaks both, in memory."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import ClassVar

import pytest

from cicd import attestation_store, attestations, signing
from cicd.registry import RegistryClient
from tests.support.fake_http import send

REPOSITORY = "org/app"
IMAGE = json.dumps({"schemaVersion": 2, "config": {"digest": "sha256:" + "0" * 64}}).encode()
IMAGE_DIGEST = "sha256:" + hashlib.sha256(IMAGE).hexdigest()
INDEX = "application/vnd.oci.image.index.v1+json"


class OciRegistry(BaseHTTPRequestHandler):
    """Blobs, manifests by tag or digest and, when ``referrers`` is on, the referrers API."""

    referrers: ClassVar[bool] = True
    blobs: ClassVar[dict] = {}
    manifests: ClassVar[dict] = {}  # reference (tag or digest) -> bytes
    puts: ClassVar[list] = []
    gets: ClassVar[list] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        prefix = f"/v2/{REPOSITORY}/"
        path = self.path.removeprefix(prefix)
        self.gets.append(path)
        if path.startswith("referrers/") and self.referrers:
            subject = path.removeprefix("referrers/")
            found = []
            for digest, raw in self.manifests.items():
                document = json.loads(raw)
                if (
                    digest.startswith("sha256:")
                    and (document.get("subject") or {}).get("digest") == subject
                ):
                    found.append({"digest": digest, "artifactType": document["artifactType"]})
            body = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": found})
            return send(self, 200, body.encode(), {"Content-Type": INDEX})
        if path.startswith("manifests/") and path.removeprefix("manifests/") in self.manifests:
            raw = self.manifests[path.removeprefix("manifests/")]
            return send(self, 200, raw, {"Content-Type": json.loads(raw).get("mediaType", "")})
        if path.startswith("blobs/") and path.removeprefix("blobs/") in self.blobs:
            return send(self, 200, self.blobs[path.removeprefix("blobs/")])
        return send(self, 404, b"{}")

    def do_POST(self):
        send(self, 202, b"", {"Location": f"/v2/{REPOSITORY}/blobs/uploads/1"})

    def do_PUT(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = self.path.removeprefix(f"/v2/{REPOSITORY}/")
        if path.startswith("blobs/uploads/"):
            digest = path.split("digest=", 1)[1].replace("%3A", ":")
            self.blobs[digest] = body
            return send(self, 201, b"")
        reference = path.removeprefix("manifests/")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        self.manifests[reference] = self.manifests[digest] = body
        self.puts.append(reference)
        return send(self, 201, b"", {"Docker-Content-Digest": digest})


@pytest.fixture
def run():
    OciRegistry.blobs, OciRegistry.manifests, OciRegistry.puts = {}, {IMAGE_DIGEST: IMAGE}, []
    OciRegistry.gets = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), OciRegistry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = RegistryClient(f"127.0.0.1:{server.server_port}")
    yield SimpleNamespace(
        registry=client, dry=False, settings=SimpleNamespace(repository_path=REPOSITORY)
    )
    server.shutdown()


def envelopes():
    key = signing.signer(signing.generate_private_pem())
    return {kind: signing.envelope({"kind": kind.name}, key) for kind in attestation_store.KINDS}


@pytest.mark.parametrize("referrers", [True, False])
def test_attestations_are_stored_and_found_with_or_without_the_referrers_api(run, referrers):
    OciRegistry.referrers = referrers
    made = envelopes()
    attestation_store.attach_all(run, IMAGE_DIGEST, made)
    if referrers:  # by digest only: no tag is added to the repository
        assert all(reference.startswith("sha256:") for reference in OciRegistry.puts)
    else:
        assert OciRegistry.puts == [
            attestation_store.tag_for(IMAGE_DIGEST, kind) for kind in attestation_store.KINDS
        ]
    found = attestation_store.fetch(run.registry, REPOSITORY, IMAGE_DIGEST)
    assert found == {kind: json.loads(json.dumps(made[kind])) for kind in attestation_store.KINDS}
    assert attestations.missing(run, IMAGE_DIGEST) == []
    # Each artifact names the image as its subject, whichever way it is found.
    for reference in OciRegistry.puts:
        subject = json.loads(OciRegistry.manifests[reference])["subject"]
        assert subject["digest"] == IMAGE_DIGEST and subject["size"] == len(IMAGE)


def test_an_image_without_attestations_lacks_both(run):
    OciRegistry.referrers = True
    assert attestations.missing(run, IMAGE_DIGEST) == list(attestation_store.KINDS)


def test_the_image_manifest_attest_already_holds_is_not_read_again(run):
    # attest hands over the manifest push read (its digest, type and size make the
    # artifacts' subject): the registry is not asked for it a second time.
    OciRegistry.referrers = False
    subject = run.registry.manifest(REPOSITORY, IMAGE_DIGEST)
    OciRegistry.gets = []
    attestation_store.attach_all(run, IMAGE_DIGEST, envelopes(), subject=subject)
    assert f"manifests/{IMAGE_DIGEST}" not in OciRegistry.gets, OciRegistry.gets
    for reference in OciRegistry.puts:
        written = json.loads(OciRegistry.manifests[reference])["subject"]
        assert written["digest"] == IMAGE_DIGEST and written["size"] == len(IMAGE)
