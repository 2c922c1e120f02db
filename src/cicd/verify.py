"""`invoke verify`: prove the chain from this repository's data to an image in the registry.

One check per line, in order; the first that fails ends the run (exit non-zero):

1. image        the reference resolves to a digest in the registry
2. attached     the SBOM and the provenance are attached to that digest
3. signature    each is signed by the committed public key (or --key FILE)
4. subject      each statement is about that digest, in that repository
5. model        the image's ``model.digest`` label is the provenance's model
6. commit       the image's revision label is the provenance's commit, and so is the commit
                it is checked against: ``--revision``, else a SHA tag, else (in a repository)
                this commit; with none of them it says it did not compare
7. dvc.lock     every stage output hash the provenance records is the one that commit's
                dvc.lock has; when that dvc.lock cannot be read (outside a repository, a
                commit not in this clone) the line says ``skip``: not checked, not passed
8. sbom         the SBOM is a CycloneDX document that lists packages
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

from cicd import attestations, ci, dvc, provenance, signing
from cicd.attestations import PROVENANCE, SBOM
from cicd.errors import CommandError, SuiteError, VerificationFailed
from cicd.labels import MODEL_DIGEST_LABEL, REVISION_LABEL
from cicd.registry import Manifest, RegistryClient

if TYPE_CHECKING:
    from cicd.context import Run
    from cicd.image import Target

T = TypeVar("T")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    skipped: bool = False  # not checked (and so not passed): the detail says why

    def line(self) -> str:
        status = "skip" if self.skipped else "ok  " if self.ok else "FAIL"
        return f"{status}  {self.name:<10} {self.detail}"


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
    revision: str | None = None,
) -> list[Check]:
    """Run the checks and print them (a line each, or JSON with ``as_json``);
    :class:`VerificationFailed` at the first failure, after printing what passed.
    ``revision``: the commit the image must be of (default: a SHA tag's, else this one)."""
    done: list[Check] = []
    try:
        for check in checks(run, reference, key_path, allow_unsigned, revision):
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
    run: Run,
    text: str | None,
    key_path: Path | None,
    allow_unsigned: bool,
    revision: str | None = None,
) -> Iterator[Check]:
    settings = run.settings
    ref = parse_reference(text) if text else _this_commit(run)
    expected, against = _expected_commit(run, ref, revision, default=text is None)
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
                f"the tag {attestations.tag_for(digest, kind)}): only the publish session "
                "attaches them, to the image it built and smoke-tested; an image it did not "
                "build is never signed: publish the commit (`nox -s publish -- --force`)",
            )
    yield Check("attached", True, "SBOM and provenance (DSSE envelopes)")

    yield _signatures(run, envelopes, key_path, allow_unsigned)

    # every kind is attached (checked above)
    statements = {
        kind: _statement(cast("dict[str, Any]", envelopes[kind]), kind)
        for kind in attestations.KINDS
    }
    for kind, statement in statements.items():
        subjects = provenance.subject_digests(statement)
        if digest not in subjects:
            fail(
                "subject",
                f"the {kind.name} is about {', '.join(subjects) or 'nothing'}, not about "
                f"{digest}: the image under {ref} is not the one attested",
            )
    name = f"{ref.host}/{ref.repository}"
    for kind, statement in statements.items():
        names = provenance.subject_names(statement)
        if name not in names:
            fail(
                "subject",
                f"the {kind.name} is about an image of {', '.join(names) or 'no repository'}, "
                f"not of {name}: a signed image copied from another repository is not this one",
            )
    yield Check("subject", True, f"both statements are about {digest} in {name}")

    predicate = _predicate(statements[PROVENANCE], PROVENANCE)
    labels = registry.labels(ref.repository, manifest)
    model_tag, model_digest = _read(lambda: provenance.model_of(predicate), "model")
    label = labels.get(MODEL_DIGEST_LABEL, "")
    if label != model_digest:
        fail(
            "model",
            f"the image's {MODEL_DIGEST_LABEL} label is {label or 'missing'}, the "
            f"provenance records {model_digest} ({model_tag})",
        )
    yield Check("model", True, f"{model_tag} ({model_digest[:19]}…) in label and provenance")

    commit = provenance.commit_of(predicate)
    revision = labels.get(REVISION_LABEL, "")
    if revision != commit:
        fail("commit", f"the image's revision label is {revision or 'missing'}, the provenance "
             f"records commit {commit or 'none'}")  # fmt: skip
    if ci.COMMIT_SHA.fullmatch(ref.tag) and ref.tag != commit:
        fail("commit", f"the tag {ref.tag} holds the image of commit {commit}")
    if expected and expected != commit:
        fail(
            "commit",
            f"{ref} holds the image of commit {commit}, not of {expected} ({against}): an "
            f"older or another release; pass --revision {commit} if it is the one you mean",
        )
    if expected:
        yield Check("commit", True, f"{commit} ({against})")
    else:
        yield Check(
            "commit", False, f"{commit}: not compared with any commit (give --revision REV)",
            skipped=True,
        )  # fmt: skip

    yield _lock(run, predicate, commit)
    yield _sbom(statements[SBOM])


def fail(name: str, detail: str) -> NoReturn:
    raise VerificationFailed(name, detail)


def _this_commit(run: Run) -> Reference:
    settings = run.settings
    repository = settings.repository_path
    return Reference(settings.registry_host, repository, run.revision.tag)


def _expected_commit(
    run: Run, ref: Reference, revision: str | None, default: bool
) -> tuple[str, str]:
    """The commit the image must be of, and where that comes from: ``--revision`` (a full
    SHA, or anything git resolves here), a SHA tag, this commit (verify's default image, or
    an environment tag checked inside a repository); ("", "") when there is none."""
    if revision:
        if ci.COMMIT_SHA.fullmatch(revision):
            return revision, "--revision"
        resolved = _git(run, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
        if not resolved:
            raise SuiteError(
                f"--revision {revision!r} is not a commit here: give the full 40-character SHA"
            )
        return resolved, f"--revision {revision}"
    if ci.COMMIT_SHA.fullmatch(ref.tag):
        return ref.tag, "its SHA tag"
    try:
        head = run.revision.sha
    except SuiteError:
        return "", ""
    return head, "this commit" if default else "this checkout's commit"


def _git(run: Run, *args: str) -> str | None:
    try:
        found = run.runner.run(["git", *args], cwd=run.settings.root, quiet=True, always=True)
    except CommandError:
        return None
    return found.strip() or None


def _signatures(
    run: Run, envelopes: dict[Any, Any], key_path: Path | None, allow_unsigned: bool
) -> Check:
    unsigned = [kind.name for kind in attestations.KINDS if not signing.signed(envelopes[kind])]
    if unsigned:
        if not allow_unsigned:
            fail(
                "signature",
                f"the {' and '.join(unsigned)} {'is' if len(unsigned) == 1 else 'are'} "
                f"unsigned (published without SIGNING_KEY): {signing.FIRST_KEY_STEPS}",
            )
        if len(unsigned) == len(attestations.KINDS):
            return Check("signature", True, "unsigned (accepted: --allow-unsigned)")
    path = key_path or run.settings.path(run.settings.signing_public_key)
    if not path.is_file():
        fail("signature", f"no public key at {path}: {signing.FIRST_KEY_STEPS}")
    key = _read(lambda: signing.public_key(path), "signature")
    keyids: set[str] = set()
    for kind in attestations.KINDS:
        if signing.signed(envelopes[kind]):
            keyids.add(_read(lambda k=kind: signing.check_signature(envelopes[k], key, k.name),
                             "signature"))  # fmt: skip
    return Check("signature", True, f"signed by key {next(iter(keyids))[:16]}… ({path.name})")


def _statement(envelope: dict[str, Any], kind: attestations.Kind) -> dict[str, Any]:
    return _read(lambda: signing.statement_of(envelope, kind.name), "attached")


def _predicate(statement: dict[str, Any], kind: attestations.Kind) -> dict[str, Any]:
    return _read(lambda: provenance.predicate(statement, kind.predicate_type, kind.name), "subject")


def _read(action: Callable[..., T], name: str) -> T:
    """``action()``, its typed errors turned into a failed check ``name``."""
    try:
        return action()
    except SuiteError as error:
        if isinstance(error, VerificationFailed):
            raise
        fail(name, str(error))


def _lock(run: Run, predicate: dict[str, Any], commit: str) -> Check:
    committed = _git_show(run, f"{commit}:{dvc.LOCK_FILE}") if commit else None
    if committed is None:
        where = (
            f"commit {commit[:12]} is not in this clone (fetch it)"
            if _git(run, "rev-parse", "--git-dir")
            else "not inside the model's repository"
        )
        return Check(
            "dvc.lock", False, f"NOT CHECKED: {where}; run verify in a clone that has it",
            skipped=True,
        )  # fmt: skip
    here = provenance.lock_outputs(committed)
    recorded = provenance.recorded_outputs(predicate)
    for name in sorted(set(here) | set(recorded)):
        if here.get(name) != recorded.get(name):
            fail(
                "dvc.lock",
                f"{name} is {here.get(name) or 'absent'} in this commit's dvc.lock, "
                f"{recorded.get(name) or 'absent'} in the provenance: the image was not built "
                f"from the data and model of {commit[:12]}",
            )
    return Check("dvc.lock", True, f"{len(here)} stage outputs match the dvc.lock of {commit[:12]}")


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


# --------------------------------------------------------------------------- for publish


def untrusted(run: Run, goal: Target, manifest: Manifest) -> str:
    """Why the image ``manifest`` (under this commit's SHA tag) is not trusted as this
    commit's published image, in a few words; "" when it is.

    Trusted only with a provenance signed by a trusted key (:func:`signing.trusted_keys`)
    that is about this digest in this repository and names this commit and this model (the
    digest of the model archive). Labels are never evidence: anyone who can push sets them."""
    registry, repository = run.registry, run.settings.repository_path
    digest = manifest.digest
    try:
        envelope = attestations.fetch(registry, repository, digest).get(PROVENANCE)
        if envelope is None:
            return "with no provenance"
        if not signing.signed(envelope):
            return "with an unsigned provenance"
        signing.signed_by_any(envelope, signing.trusted_keys(run), "provenance")
        statement = signing.statement_of(envelope, "provenance")
        predicate = provenance.predicate(statement, PROVENANCE.predicate_type, "provenance")
        model = provenance.model_of(predicate)[1]
    except SuiteError as error:
        return f"whose provenance does not hold ({error})"
    if digest not in provenance.subject_digests(statement):
        return "whose signed provenance is about another image"
    if goal.repository not in provenance.subject_names(statement):
        return "whose signed provenance is about an image of another repository"
    commit = provenance.commit_of(predicate)
    if commit != goal.revision.sha:
        return f"whose signed provenance names commit {commit[:12] or 'none'}, not this one"
    if model != goal.model.digest:
        return f"whose signed provenance names model {model[:19]}…, not this one"
    return ""
