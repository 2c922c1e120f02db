"""Keys and DSSE envelopes: sign an in-toto statement, check a signature.

The formats are securesystemslib's (``dsse.Envelope``, ``CryptoSigner``, ``SSlibKey``), the
library in-toto's own tools use: the envelope is what ``cosign attest`` and in-toto write.
The private key comes from the ``SIGNING_KEY`` secret (PEM, or the PEM in base64 on one line
for CI systems that mask only one-line values; ed25519 or ECDSA P-256), read
by :mod:`cicd.settings` only. The public keys are committed files: every ``*.pub`` in the
directory of ``signing_public_key`` (``signing/``) is trusted, so that rotating the key
(`invoke keygen` adds a file) keeps earlier releases verifiable, and deleting a file is how
a key is revoked (docs/supply-chain.md).

Keyless signing (an OIDC identity, a Fulcio certificate, a Rekor entry) needs services these
machines cannot reach: it would be another :class:`securesystemslib.signer.Signer` given to
:func:`envelope`, the rest unchanged (docs/supply-chain.md).
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cicd.errors import SigningError

if TYPE_CHECKING:
    from cicd.context import Run
    from cicd.settings import Settings

PAYLOAD_TYPE = "application/vnd.in-toto+json"
KEYGEN_HINT = "make a pair with `invoke keygen`"
# What a first run needs, said where it fails (verify, attest): the three steps of a key.
FIRST_KEY_STEPS = (
    "run `invoke keygen --private-key ~/signing-key.pem`, commit the public key it writes "
    "(signing/publish.pub), store the private key file's content as the CI secret "
    "SIGNING_KEY (then delete the file), and publish again"
)


@dataclass(frozen=True)
class TrustedKey:
    """A public key trusted to sign this repository's images, and where it comes from."""

    key: Any  # securesystemslib SSlibKey
    source: str  # the committed file's name (publish.pub), or "SIGNING_KEY"

    def describe(self) -> str:
        return f"key {self.key.keyid[:16]}… ({self.source})"


def signer(private_pem: str) -> Any:
    """A securesystemslib signer of the PEM private key ``private_pem`` (ed25519 or ECDSA)."""
    from securesystemslib.signer import CryptoSigner, SSlibKey

    private = _private_key(private_pem)
    return CryptoSigner(private, SSlibKey.from_crypto(private.public_key()))


def _private_key(private_pem: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    text = private_pem.strip()
    if text and not text.startswith("-----BEGIN"):
        # One line, as GitLab can mask it: the PEM in base64 (`base64 -w0 key.pem`).
        try:
            text = base64.b64decode(text, validate=True).decode().strip()
        except ValueError:
            text = ""
    try:
        private = load_pem_private_key(text.encode() + b"\n", password=None)
    except (ValueError, TypeError):
        # The library's message may quote the key: ours says only what to do.
        raise SigningError(
            f"SIGNING_KEY is not an unencrypted PEM private key: {KEYGEN_HINT}"
        ) from None
    if not isinstance(private, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise SigningError(f"SIGNING_KEY must be an ed25519 or ECDSA key: {KEYGEN_HINT}")
    return private


def public_key(path: Path) -> Any:
    """The securesystemslib key of the PEM public key file ``path``."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    from securesystemslib.signer import SSlibKey

    if not path.is_file():
        raise SigningError(f"no public key at {path}: pass --key FILE, or {KEYGEN_HINT}")
    try:
        return SSlibKey.from_crypto(load_pem_public_key(path.read_bytes()))
    except (ValueError, TypeError, Exception) as error:  # unsupported key types raise others
        raise SigningError(f"{path} is not a PEM public key ({error}): {KEYGEN_HINT}") from None


def key_directory(settings: Settings) -> Path:
    """The directory of the committed public keys: that of ``signing_public_key``."""
    return settings.path(settings.signing_public_key).parent


def committed_keys(settings: Settings) -> list[TrustedKey]:
    """Every committed public key: ``signing_public_key`` and every ``*.pub`` beside it,
    sorted by file name, one entry per key id. A file that is not a key is an error (a
    trusted key must not be dropped silently); no file at all is an empty list."""
    configured = settings.path(settings.signing_public_key)
    paths = set(key_directory(settings).glob("*.pub"))
    if configured.is_file():
        paths.add(configured)
    found: dict[str, TrustedKey] = {}
    for path in sorted(paths, key=lambda item: item.name):
        key = public_key(path)
        found.setdefault(key.keyid, TrustedKey(key, path.name))
    return list(found.values())


def trusted(run: Run) -> list[TrustedKey]:
    """The keys whose signature makes an image trusted for a publish: every committed public
    key (:func:`committed_keys`) and the public half of ``SIGNING_KEY`` (when set): a
    provenance signed by the pipeline's own key is the pipeline's."""
    settings = run.settings
    keys = committed_keys(settings)
    if settings.signing_key:
        own = signer(settings.signing_key).public_key
        if all(item.key.keyid != own.keyid for item in keys):
            keys.append(TrustedKey(own, "SIGNING_KEY"))
    return keys


def trusted_keys(run: Run) -> list[Any]:
    """The securesystemslib keys of :func:`trusted` (the name callers of 0.1 used)."""
    return [item.key for item in trusted(run)]


def signed_by_any(document: dict[str, Any], keys: list[Any], what: str) -> str:
    """The key id of the first of ``keys`` whose signature of ``document`` verifies; else
    :class:`SigningError` (the last key's reason, or that there is no trusted key)."""
    return signer_of(document, [TrustedKey(key, "") for key in keys], what).key.keyid


def signer_of(document: dict[str, Any], keys: list[TrustedKey], what: str) -> TrustedKey:
    """Which of ``keys`` signed ``document`` (its signature verifies); else
    :class:`SigningError`: unsigned, signed by none of them, or changed after signing."""
    if not keys:
        raise SigningError(f"no trusted key to check the {what} with: {KEYGEN_HINT}")
    keyids = _signature_keyids(document)
    matching = [item for item in keys if item.key.keyid in keyids]
    if not matching and keyids and len(keys) > 1:
        others = ", ".join(keyid[:16] + "…" for keyid in sorted(keyids))
        trusted_names = ", ".join(item.describe() for item in keys)
        raise SigningError(
            f"the {what} is signed by another key (key id {others}), not by any trusted key "
            f"({trusted_names}): it was not signed by this project's key"
        )
    # Unsigned, or one trusted key: check_signature says why, as it always did.
    reason: SigningError | None = None
    for item in matching or keys[:1]:
        try:  # a copy each time: securesystemslib's Envelope.from_dict consumes its input
            check_signature(json.loads(json.dumps(document)), item.key, what)
            return item
        except SigningError as error:
            reason = error
    assert reason is not None
    raise reason


def _signature_keyids(document: Any) -> set[str]:
    """The key ids an envelope's signatures name (none for a malformed one)."""
    signatures = document.get("signatures") if isinstance(document, dict) else None
    if not isinstance(signatures, list):
        return set()
    return {str(item.get("keyid")) for item in signatures if isinstance(item, dict)}


def public_pem_of(private_pem: str) -> str:
    """The PEM public key (SubjectPublicKeyInfo) of a PEM private key: what is committed."""
    from cryptography.hazmat.primitives import serialization

    private = _private_key(private_pem)
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def generate_private_pem() -> str:
    """A new ed25519 private key, PEM (PKCS#8, unencrypted: CI secrets are the protection)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )


def envelope(statement: dict[str, Any], key_signer: Any | None) -> dict[str, Any]:
    """The DSSE envelope of ``statement``, signed by ``key_signer`` (None: unsigned, no
    signatures)."""
    from securesystemslib.dsse import Envelope

    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    wrapped = Envelope(payload=payload, payload_type=PAYLOAD_TYPE, signatures={})
    if key_signer is not None:
        wrapped.sign(key_signer)
    return wrapped.to_dict()


def statement_of(document: Any, what: str) -> dict[str, Any]:
    """The in-toto statement inside a DSSE envelope, unchecked (one line when malformed)."""
    try:
        if document.get("payloadType") != PAYLOAD_TYPE:
            raise ValueError(f"payloadType {document.get('payloadType')!r}")
        statement = json.loads(base64.b64decode(document["payload"], validate=True))
        if not isinstance(statement, dict):
            raise ValueError("not an object")
        return statement
    except (AttributeError, KeyError, ValueError, TypeError) as error:
        raise SigningError(
            f"the {what} is not a DSSE envelope of an in-toto statement ({error})"
        ) from None


def signed(document: dict[str, Any]) -> bool:
    return bool(document.get("signatures"))


def check_signature(document: dict[str, Any], key: Any, what: str) -> str:
    """Check that ``key`` signed the envelope ``document``; return the key id."""
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError

    try:
        wrapped = Envelope.from_dict(dict(document))
    except (KeyError, ValueError, TypeError) as error:
        raise SigningError(f"the {what} is not a DSSE envelope ({error})") from None
    if not wrapped.signatures:
        raise SigningError(f"the {what} is unsigned")
    if key.keyid not in wrapped.signatures:
        others = ", ".join(keyid[:16] + "…" for keyid in sorted(wrapped.signatures))
        raise SigningError(
            f"the {what} is signed by another key (key id {others}), not by key "
            f"{key.keyid[:16]}…: it was not signed by this project's key"
        )
    try:
        wrapped.verify([key], 1)
    except VerificationError:
        raise SigningError(
            f"the {what}'s signature by key {key.keyid[:16]}… does not verify: its content "
            "was changed after it was signed"
        ) from None
    return str(key.keyid)


def keygen(run: Run, private_path: Path | None) -> None:
    """Write a new ed25519 pair: the private key to ``private_path`` (0600, never printed),
    the public key to ``signing_public_key``, or, when that file exists, to a new file
    beside it (``publish-<key id>.pub``): the keys already there stay trusted, so the images
    they signed still verify (rotation), and a key is revoked by deleting its file."""
    settings = run.settings
    if private_path is None:
        raise SigningError(
            "say where to write the private key: --private-key FILE, outside the repository"
        )
    private_path = private_path.expanduser().resolve()
    if private_path.is_relative_to(settings.root.resolve()):
        raise SigningError(
            f"{private_path} is inside the repository, where it could be committed: "
            "write the private key outside it"
        )
    if private_path.exists():
        raise SigningError(f"{private_path} exists: not overwriting a key; pick another path")
    earlier = [] if run.dry else committed_keys(settings)
    if run.dry:
        run.runner.echo(f"[dry-run] would write a private key to {private_path} (0600)")
        run.runner.echo(
            f"[dry-run] would write its public key to {key_directory(settings)} "
            "(beside the keys already there, which stay trusted)"
        )
        return
    private_pem = generate_private_pem()
    run.runner.add_secret(private_pem)
    keyid = signer(private_pem).public_key.keyid
    public_path = _new_public_path(settings, keyid)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    # Created 0600 before anything is written: no moment where others may read it.
    with os.fdopen(os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(private_pem)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    with public_path.open("x") as f:  # never over an existing key
        f.write(public_pem_of(private_pem))
    run.runner.echo(f"wrote the public key {public_path} (key id {keyid[:16]}…): commit it")
    if earlier:
        run.runner.echo(
            f"the keys already in {key_directory(settings)} stay trusted, so the images they "
            f"signed still verify: {', '.join(item.describe() for item in earlier)}; to revoke "
            "one (a leaked key), delete its file and commit"
        )
    run.runner.echo(
        f"wrote the private key {private_path}: store its content as the CI secret SIGNING_KEY "
        f"(e.g. `gh secret set SIGNING_KEY < {private_path}`), then delete the file"
    )


def _new_public_path(settings: Settings, keyid: str) -> Path:
    """``signing_public_key`` for the first key; a new file beside it for the next ones."""
    configured = settings.path(settings.signing_public_key)
    if not configured.exists():
        return configured
    return configured.with_name(f"{configured.stem}-{keyid[:12]}{configured.suffix or '.pub'}")
