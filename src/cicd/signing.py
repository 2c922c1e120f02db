"""Keys and DSSE envelopes: sign an in-toto statement, check a signature.

The formats are securesystemslib's (``dsse.Envelope``, ``CryptoSigner``, ``SSlibKey``), the
library in-toto's own tools use: the envelope is what ``cosign attest`` and in-toto write.
The private key comes from the ``SIGNING_KEY`` secret (PEM, or the PEM in base64 on one line
for CI systems that mask only one-line values; ed25519 or ECDSA P-256), read
by :mod:`cicd.settings` only; the public key is a committed file (``signing_public_key``).

Keyless signing (an OIDC identity, a Fulcio certificate, a Rekor entry) needs services these
machines cannot reach: it would be another :class:`securesystemslib.signer.Signer` given to
:func:`envelope`, the rest unchanged (docs/supply-chain.md).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cicd.errors import SigningError

if TYPE_CHECKING:
    from cicd.context import Run

PAYLOAD_TYPE = "application/vnd.in-toto+json"
KEYGEN_HINT = "make a pair with `invoke keygen`"
# What a first run needs, said where it fails (verify, attest): the three steps of a key.
FIRST_KEY_STEPS = (
    "run `invoke keygen --private-key ~/signing-key.pem`, commit the public key it writes "
    "(signing/publish.pub), store the private key file's content as the CI secret "
    "SIGNING_KEY (then delete the file), and publish again"
)


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


def trusted_keys(run: Run) -> list[Any]:
    """The keys whose signature makes an image trusted for a publish: the committed public
    key (when readable) and the public half of ``SIGNING_KEY`` (when set): a provenance
    signed by the pipeline's own key is the pipeline's."""
    settings = run.settings
    keys = []
    with contextlib.suppress(SigningError):  # no committed key yet: only SIGNING_KEY's
        keys.append(public_key(settings.path(settings.signing_public_key)))
    if settings.signing_key:
        keys.append(signer(settings.signing_key).public_key)
    return keys


def signed_by_any(document: dict[str, Any], keys: list[Any], what: str) -> str:
    """The key id of the first of ``keys`` whose signature of ``document`` verifies; else
    :class:`SigningError` (the last key's reason, or that there is no trusted key)."""
    if not keys:
        raise SigningError(f"no trusted key to check the {what} with: {KEYGEN_HINT}")
    reason: SigningError | None = None
    for key in keys:
        try:  # a copy each time: securesystemslib's Envelope.from_dict consumes its input
            return check_signature(json.loads(json.dumps(document)), key, what)
        except SigningError as error:
            reason = error
    assert reason is not None
    raise reason


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
    the public key to the committed ``signing_public_key``."""
    settings = run.settings
    if private_path is None:
        raise SigningError(
            "say where to write the private key: --private-key FILE, outside the repository"
        )
    private_path = private_path.expanduser().resolve()
    public_path = settings.path(settings.signing_public_key)
    if private_path.is_relative_to(settings.root.resolve()):
        raise SigningError(
            f"{private_path} is inside the repository, where it could be committed: "
            "write the private key outside it"
        )
    if private_path.exists():
        raise SigningError(f"{private_path} exists: not overwriting a key; pick another path")
    if run.dry:
        run.runner.echo(f"[dry-run] would write a private key to {private_path} (0600)")
        run.runner.echo(f"[dry-run] would write its public key to {public_path}")
        return
    private_pem = generate_private_pem()
    run.runner.add_secret(private_pem)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    # Created 0600 before anything is written: no moment where others may read it.
    with os.fdopen(os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(private_pem)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.write_text(public_pem_of(private_pem))
    keyid = signer(private_pem).public_key.keyid
    run.runner.echo(f"wrote the public key {public_path} (key id {keyid[:16]}…): commit it")
    run.runner.echo(
        f"wrote the private key {private_path}: store its content as the CI secret SIGNING_KEY "
        f"(e.g. `gh secret set SIGNING_KEY < {private_path}`), then delete the file"
    )
