"""`invoke verify`: prove the chain from this repository's data to an image in the registry.

One check per line, in order; the first that fails ends the run (exit non-zero):

1. image        the reference resolves to a digest in the registry
2. attached     the SBOM and the provenance are attached to that digest
3. signature    each is signed by a trusted key: any committed public key (every ``*.pub``
                of ``signing/``; or only --key FILE), the line names which; unsigned
                documents only with --allow-unsigned, only where no key was ever
                committed, and then the line says ``skip``: nothing was checked
4. subject      each statement is about that digest, in that repository
5. model        the image's ``model.digest`` label is the provenance's model
6. commit       the image's revision label is the provenance's commit, and so is the commit
                it is checked against: ``--revision``, else a SHA tag, else (in a repository)
                this commit; with none of them it says it did not compare
7. dvc.lock     every stage output hash the provenance records is the one that commit's
                dvc.lock has; when that dvc.lock cannot be read (outside a repository, a
                commit not in this clone) the line says ``skip``: not checked, not passed
8. archive      the model archive is the commit's: the md5 the provenance records for it is
                the one that commit's dvc.lock records for the train stage's output (through
                the output's listing in the DVC cache, for a directory), and the archive's
                bytes with that md5 (from this clone's DVC cache, else the workspace) have the
                provenance's sha256, the image's ``model.digest``; the line says which it
                read, and ``skip`` for what it could not (listing or bytes not here)
9. sbom         the SBOM is a CycloneDX document that lists packages
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

from cicd import attestation_store, ci, dvc, provenance, signed_provenance, signing
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

    envelopes = attestation_store.fetch(registry, ref.repository, digest)
    for kind in attestation_store.KINDS:
        if envelopes.get(kind) is None:
            fail(
                "attached",
                f"no {kind.name} attached to {ref} ({digest}; looked for the referrers API and "
                f"the tag {attestation_store.tag_for(digest, kind)}): only the publish session "
                "attaches them, to the image it built and smoke-tested; an image it did not "
                "build is never signed: publish the commit (`nox -s publish -- --force`)",
            )
    yield Check("attached", True, "SBOM and provenance (DSSE envelopes)")

    yield _signatures(run, envelopes, key_path, allow_unsigned)

    # every kind is attached (checked above)
    statements = {
        kind: _statement(cast("dict[str, Any]", envelopes[kind]), kind)
        for kind in attestation_store.KINDS
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
    yield _archive(run, predicate, commit, model_digest)
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
        asked = f"{revision}^{{commit}}"
        resolved = ci.git(run.runner, run.settings.root, "rev-parse", "--verify", "--quiet", asked)
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


def _signatures(
    run: Run, envelopes: dict[Any, Any], key_path: Path | None, allow_unsigned: bool
) -> Check:
    """Both documents signed by a trusted key (``--key FILE``, else every committed key:
    :func:`signing.committed_keys`); "signed by" is said only then. ``allow_unsigned``:
    a wholly unsigned pair is let through, loudly, only where no public key was ever
    committed (:func:`_unsigned_allowed`)."""
    unsigned = [
        kind.name for kind in attestation_store.KINDS if not signing.signed(envelopes[kind])
    ]
    if unsigned and not allow_unsigned:
        fail(
            "signature",
            f"the {' and '.join(unsigned)} {'is' if len(unsigned) == 1 else 'are'} "
            f"unsigned (published without SIGNING_KEY): {signing.FIRST_KEY_STEPS}",
        )
    if unsigned and len(unsigned) < len(attestation_store.KINDS):
        fail(
            "signature",
            f"the {unsigned[0]} is unsigned but the other document is signed: publish signs "
            "both or neither, so this pair was not attached by publish as it is "
            "(--allow-unsigned accepts only a wholly unsigned pair)",
        )
    if unsigned:
        return _unsigned_allowed(run, key_path)
    keys = _keys(run, key_path)
    signers = {
        kind: _read(lambda k=kind: signing.signer_of(envelopes[k], keys, k.name), "signature")
        for kind in attestation_store.KINDS
    }
    if len({item.key.keyid for item in signers.values()}) == 1:
        return Check("signature", True, f"signed by {signers[PROVENANCE].describe()}")
    each = ", ".join(f"the {kind.name} by {item.describe()}" for kind, item in signers.items())
    return Check("signature", True, f"signed by trusted keys: {each}")


def _keys(run: Run, key_path: Path | None) -> list[signing.TrustedKey]:
    """``--key FILE`` alone, else every committed public key. Not ``SIGNING_KEY``'s public
    half (publish trusts it): verify proves what anyone can check with the repository alone,
    so a CI secret that is not committed makes it fail, not pass."""
    if key_path is not None:
        if not key_path.is_file():
            fail("signature", f"no public key at {key_path}: {signing.FIRST_KEY_STEPS}")
        return [signing.TrustedKey(_read(lambda: signing.public_key(key_path), "signature"),
                                   key_path.name)]  # fmt: skip
    keys = _read(lambda: signing.committed_keys(run.settings), "signature")
    if not keys:
        where = signing.key_directory(run.settings)
        fail("signature", f"no public key in {where}: {signing.FIRST_KEY_STEPS}")
    return keys


UNSIGNED_ACCEPTED = (
    "NOT CHECKED: the SBOM and provenance are UNSIGNED, accepted by --allow-unsigned because "
    "this repository never had a public key: NOTHING WAS SIGNATURE-CHECKED, and anyone who can "
    "push to the registry can make such a pair; {steps}"
)


def _unsigned_allowed(run: Run, key_path: Path | None) -> Check:
    """An unsigned pair with ``--allow-unsigned``: refused where a key exists or ever existed
    (a forger who can push to the registry makes an unsigned pair for any image, so a signed
    repository must never accept one); else a ``skip`` line that says nothing was checked."""
    refused = "--allow-unsigned is refused"
    if key_path is not None:
        fail("signature", f"the SBOM and provenance are unsigned and --key {key_path} is "
             f"given: {refused} with a key; publish them signed")  # fmt: skip
    committed = _read(lambda: signing.committed_keys(run.settings), "signature")
    ever = committed[0].source if committed else _key_in_history(run)
    if ever:
        fail(
            "signature",
            f"the SBOM and provenance are unsigned, and {refused}: this repository has had a "
            f"public key ({ever}), so its images are signed and an unsigned pair is what anyone "
            "who can push to the registry can make; publish the commit with SIGNING_KEY "
            "(`nox -s publish -- --force`)",
        )
    steps = signing.FIRST_KEY_STEPS
    return Check("signature", False, UNSIGNED_ACCEPTED.format(steps=steps), skipped=True)


def _key_in_history(run: Run) -> str:
    """A commit that touched a public key of the key directory ("" when none, or outside a
    repository: then only the files count)."""
    settings = run.settings  # git runs in the root: relative settings are its pathspecs
    directory = settings.signing_public_key.parent
    pathspecs = [str(settings.signing_public_key), str(directory / "*.pub")]
    found = ci.git(run.runner, settings.root, "log", "--all", "-1", "--format=%h", "--", *pathspecs)
    return f"commit {found} has one" if found else ""


def _statement(envelope: dict[str, Any], kind: attestation_store.Kind) -> dict[str, Any]:
    return _read(lambda: signing.statement_of(envelope, kind.name), "attached")


def _predicate(statement: dict[str, Any], kind: attestation_store.Kind) -> dict[str, Any]:
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
            if ci.git(run.runner, run.settings.root, "rev-parse", "--git-dir")
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


def _archive(run: Run, predicate: dict[str, Any], commit: str, model_digest: str) -> Check:
    """The model archive bound to the commit's dvc.lock (docstring of the module, check 8)."""
    settings = run.settings
    archive = settings.bentomodel
    recorded = _read(lambda: provenance.archive_of(predicate), "archive")
    if recorded is None:
        older = "NOT CHECKED: this provenance predates the binding of the archive to dvc.lock"
        return Check("archive", False, older, skipped=True)
    committed = _git_show(run, f"{commit}:{dvc.LOCK_FILE}") if commit else None
    if committed is None:
        what = f"NOT CHECKED: no dvc.lock of {commit[:12] or 'the commit'} here (see dvc.lock)"
        return Check("archive", False, what, skipped=True)
    here = _read(lambda: provenance.archive_in_lock(settings.root, committed, archive), "archive")
    where = f"the dvc.lock of {commit[:12]}"
    if here.name != recorded.name or here.output_md5 != recorded.output_md5:
        fail(
            "archive",
            f"the provenance places {archive} in {recorded.name} ({recorded.output_md5}), "
            f"{where} in {here.name} ({here.output_md5})",
        )
    if not here.md5:
        no_listing = (
            f"NOT CHECKED: the listing of {here.name} ({here.output_md5}) is not in this "
            f"clone's DVC cache: run `dvc fetch {here.output}` at {commit[:12]}"
        )
        return Check("archive", False, no_listing, skipped=True)
    if here.md5 != recorded.md5:
        fail(
            "archive",
            f"{archive} is md5 {here.md5} in {where} ({here.name}), {recorded.md5} in the "
            "provenance: the image's model is not the one that commit trained",
        )
    bytes_from = _archive_bytes(run, here.md5)
    if bytes_from is None:
        no_bytes = (
            f"md5 {here.md5[:12]}… is {here.name}'s in {where} and the provenance's; the "
            "archive's bytes NOT CHECKED: neither this clone's DVC cache nor the workspace has "
            "them (`invoke pull`)"
        )
        return Check("archive", False, no_bytes, skipped=True)
    label, sha = bytes_from
    if sha != model_digest:
        fail(
            "archive",
            f"{archive} with md5 {here.md5} ({where}) has {sha}, but the provenance and the "
            f"image's label record {model_digest}: the image was not built from that model",
        )
    return Check(
        "archive",
        True,
        f"{archive} read from {label}: md5 {here.md5[:12]}… is {here.name}'s in {where}, "
        f"sha256 {sha.removeprefix('sha256:')[:12]}… the provenance's and the label's",
    )


def _archive_bytes(run: Run, md5: str) -> tuple[str, str] | None:
    """(where, sha256) of the archive whose content is ``md5``: the DVC cache's file, else
    the workspace's archive; each checked to have that md5 (the cache is not trusted)."""
    settings = run.settings
    candidates = [
        ("the DVC cache", provenance.dvc_cache_file(settings.root, md5)),
        ("the workspace", settings.path(settings.bentomodel)),
    ]
    for label, path in candidates:
        if path is not None and path.is_file():
            found_md5, sha = provenance.file_hashes(path)
            if found_md5 == md5:
                return label, sha
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
    try:
        signed = signed_provenance.read(run, run.settings.repository_path, manifest.digest)
        model = provenance.model_of(signed.predicate)[1]
    except signed_provenance.Unproven as unproven:
        return unproven.why
    except SuiteError as error:
        return f"whose provenance does not hold ({error})"
    if goal.repository not in provenance.subject_names(signed.statement):
        return "whose signed provenance is about an image of another repository"
    if signed.commit != goal.revision.sha:
        named = signed.commit[:12] or "none"
        return f"whose signed provenance names commit {named}, not this one"
    if model != goal.model.digest:
        return f"whose signed provenance names model {model[:19]}…, not this one"
    return ""
