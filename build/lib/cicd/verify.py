"""`invoke verify`: prove the chain from this repository's data to an image in the registry.

One check per line, in order; the first that fails ends the run (exit non-zero):

1. image        the reference resolves to a digest in the registry
2. attached     the SBOM and the provenance are attached to that digest
3. signature    each is signed by the committed public key (or --key FILE)
4. subject      each statement is about that digest
5. model        the image's ``model.digest`` label is the provenance's model
6. commit       the image's revision label (and a SHA tag) is the provenance's commit
7. dvc.lock     in a repository: every stage output hash the provenance records is the one
                this commit's dvc.lock has
8. sbom         the SBOM is a CycloneDX document that lists packages
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from cicd import attestations, image, provenance, signing
from cicd.attestations import PROVENANCE, SBOM
from cicd.errors import CommandError, SuiteError
from cicd.registry import REVISION_LABEL, RegistryClient

if TYPE_CHECKING:
    from cicd.context import Run

SHA_TAG = re.compile(r"[0-9a-f]{40}")


class VerificationFailed(SuiteError):
    """A check failed: the message is its line."""

    def __init__(self, check: str, detail: str):
        super().__init__(f"{check}: {detail}")
        self.check, self.detail = check, detail


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name:<10} {self.detail}"


@dataclass(frozen=True)
class Reference:
    host: str
    repository: str  # the path inside the registry
    tag: str = ""
    digest: str = ""

    def __str__(self) -> str:
        name = f"{self.host}/{self.repository}"
        return f"{name}@{self.digest}" if self.digest else f"{name}:{self.tag}"


def parse_reference(text: str) -> Reference:
    """``host[:port]/path[:tag]`` or ``host[:port]/path@sha256:...`` (the host is required:
    verify reads that registry's API)."""
    name, _, digest = text.partition("@")
    tag = ""
    if not digest and ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    host, _, repository = name.partition("/")
    if not repository or not ("." in host or ":" in host or host == "localhost"):
        raise SuiteError(
            f"{text!r} is not a full image reference: give host/repository:tag "
            "(e.g. 127.0.0.1:5050/celestial-bodies-classifier:latest)"
        )
    if digest and not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise SuiteError(f"{digest!r} is not a sha256 digest")
    return Reference(host, repository, tag or ("" if digest else "latest"), digest)


def verify(
    run: Run,
    reference: str | None = None,
    key_path: Path | None = None,
    allow_unsigned: bool = False,
    as_json: bool = False,
) -> list[Check]:
    """Run the checks and print them (a line each, or JSON with ``as_json``);
    :class:`VerificationFailed` at the first failure, after printing what passed."""
    done: list[Check] = []
    try:
        for check in checks(run, reference, key_path, allow_unsigned):
            done.append(check)
            if not as_json:
                print(run.runner.mask(check.line()), flush=True)
    except VerificationFailed as failure:
        done.append(Check(failure.check, False, failure.detail))
        raise
    finally:
        if as_json:
            print(json.dumps([asdict(check) for check in done], indent=1))
    return done


def checks(
    run: Run, text: str | None, key_path: Path | None, allow_unsigned: bool
) -> Iterator[Check]:
    settings = run.settings
    ref = parse_reference(text) if text else _this_commit(run)
    registry = (
        run.registry
        if ref.host == settings.registry_host
        else RegistryClient(ref.host, runner=run.runner, timeout=settings.network_timeout)
    )
    manifest = registry.manifest(ref.repository, ref.digest or ref.tag)
    if run.dry:
        run.runner.echo("dry run: nothing was checked")
        return
    if manifest is None:
        fail("image", f"{ref} is not in the registry: publish it (`nox -s publish`), or name "
             "a published image with --image")  # fmt: skip
    if ref.digest and manifest.digest != ref.digest:
        fail("image", f"{ref} resolves to {manifest.digest}")
    digest = manifest.digest
    yield Check("image", True, f"{ref} is {digest}")

    envelopes = attestations.fetch(registry, ref.repository, digest)
    for kind in attestations.KINDS:
        if envelopes.get(kind) is None:
            fail(
                "attached",
                f"no {kind.name} attached to {ref} ({digest}; looked for the referrers API and "
                f"the tag {attestations.tag_for(digest, kind)}): publish attaches them "
                "(`invoke attest` in the image's commit, for an image already pushed)",
            )
    yield Check("attached", True, "SBOM and provenance (DSSE envelopes)")

    yield _signatures(run, envelopes, key_path, allow_unsigned)

    statements = {kind: _statement(envelopes[kind], kind) for kind in attestations.KINDS}
    for kind, statement in statements.items():
        subjects = provenance.subject_digests(statement)
        if digest not in subjects:
            fail(
                "subject",
                f"the {kind.name} is about {', '.join(subjects) or 'nothing'}, not about "
                f"{digest}: the image under {ref} is not the one attested",
            )
    yield Check("subject", True, f"both statements are about {digest}")

    predicate = _predicate(statements[PROVENANCE], PROVENANCE)
    labels = registry.labels(ref.repository, manifest)
    model_tag, model_digest = _read(lambda: provenance.model_of(predicate), "model")
    label = labels.get(image.MODEL_DIGEST_LABEL, "")
    if label != model_digest:
        fail(
            "model",
            f"the image's {image.MODEL_DIGEST_LABEL} label is {label or 'missing'}, the "
            f"provenance records {model_digest} ({model_tag})",
        )
    yield Check("model", True, f"{model_tag} ({model_digest[:19]}…) in label and provenance")

    commit = provenance.commit_of(predicate)
    revision = labels.get(REVISION_LABEL, "")
    if revision != commit:
        fail("commit", f"the image's revision label is {revision or 'missing'}, the provenance "
             f"records commit {commit or 'none'}")  # fmt: skip
    if SHA_TAG.fullmatch(ref.tag) and ref.tag != commit:
        fail("commit", f"the tag {ref.tag} holds the image of commit {commit}")
    yield Check("commit", True, commit)

    yield _lock(run, predicate)
    yield _sbom(statements[SBOM])


def fail(name: str, detail: str) -> NoReturn:
    raise VerificationFailed(name, detail)


def _this_commit(run: Run) -> Reference:
    settings = run.settings
    repository = settings.repository_path
    return Reference(settings.registry_host, repository, run.revision.tag)


def _signatures(
    run: Run, envelopes: dict[Any, Any], key_path: Path | None, allow_unsigned: bool
) -> Check:
    unsigned = [kind.name for kind in attestations.KINDS if not signing.signed(envelopes[kind])]
    if unsigned:
        if not allow_unsigned:
            fail(
                "signature",
                f"the {' and '.join(unsigned)} {'is' if len(unsigned) == 1 else 'are'} "
                "unsigned: publish with SIGNING_KEY set, or pass --allow-unsigned",
            )
        if len(unsigned) == len(attestations.KINDS):
            return Check("signature", True, "unsigned (accepted: --allow-unsigned)")
    path = key_path or run.settings.path(run.settings.signing_public_key)
    key = _read(lambda: signing.public_key(path), "signature")
    keyids = set()
    for kind in attestations.KINDS:
        if signing.signed(envelopes[kind]):
            keyids.add(_read(lambda k=kind: signing.check_signature(envelopes[k], key, k.name),
                             "signature"))  # fmt: skip
    return Check("signature", True, f"signed by key {next(iter(keyids))[:16]}… ({path.name})")


def _statement(envelope: dict[str, Any], kind: attestations.Kind) -> dict[str, Any]:
    return _read(lambda: signing.statement_of(envelope, kind.name), "attached")


def _predicate(statement: dict[str, Any], kind: attestations.Kind) -> dict[str, Any]:
    return _read(lambda: provenance.predicate(statement, kind.predicate_type, kind.name), "subject")


def _read(action, name: str):
    """``action()``, its typed errors turned into a failed check ``name``."""
    try:
        return action()
    except SuiteError as error:
        if isinstance(error, VerificationFailed):
            raise
        fail(name, str(error))


def _lock(run: Run, predicate: dict[str, Any]) -> Check:
    committed = _git_show(run, f"HEAD:{provenance.LOCK_FILE}")
    if committed is None:
        return Check("dvc.lock", True, "skipped: not inside the model's repository")
    here = provenance.lock_outputs(committed)
    recorded = provenance.recorded_outputs(predicate)
    for name in sorted(set(here) | set(recorded)):
        if here.get(name) != recorded.get(name):
            fail(
                "dvc.lock",
                f"{name} is {here.get(name) or 'absent'} in this commit's dvc.lock, "
                f"{recorded.get(name) or 'absent'} in the provenance: the image was not built "
                "from this commit's data and model",
            )
    return Check("dvc.lock", True, f"{len(here)} stage outputs match this commit's dvc.lock")


def _git_show(run: Run, what: str) -> str | None:
    """``git show WHAT`` in the settings' root; None outside a repository or when absent."""
    try:
        return run.runner.run(["git", "show", what], cwd=run.settings.root, quiet=True)
    except CommandError:
        return None


def _sbom(statement: dict[str, Any]) -> Check:
    bom = _read(lambda: provenance.predicate(statement, SBOM.predicate_type, "SBOM"), "sbom")
    if bom.get("bomFormat") != "CycloneDX":
        fail("sbom", f"the SBOM is not CycloneDX (bomFormat {bom.get('bomFormat')!r})")
    components = bom.get("components") or []
    kinds: dict[str, int] = {}
    for component in components:
        purl = str(component.get("purl", ""))
        kind = purl.split("/", 1)[0].removeprefix("pkg:") if purl.startswith("pkg:") else "other"
        if component.get("type") == "operating-system":
            kind = "operating system"
        kinds[kind] = kinds.get(kind, 0) + 1
    if not components:
        fail("sbom", "the SBOM lists no packages")
    counts = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
    return Check("sbom", True, f"CycloneDX {bom.get('specVersion', '?')}: {counts}")
