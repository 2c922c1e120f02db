"""Errors the user can act on: every one the suite raises, in one place.

Every failure a user can fix is a :class:`SuiteError` whose ``str()`` is one line that says
what went wrong and what to do. The task layer prints that line and exits non-zero; only
bugs produce tracebacks. The subclasses exist for the code (and tests) that catch them::

    SuiteError
    ├── CommandError          a command exited non-zero (cicd.shell)
    ├── NotReplayed           a request that may have taken effect is not sent again (cicd.http)
    ├── RegistryError         the embedded registry cannot start or be adopted (cicd.local_registry)
    ├── GateError, GateFailed gates.yaml unreadable; a metric out of its bounds (cicd.gates)
    ├── SmokeError            the image did not answer as the model does (cicd.smoke)
    ├── SbomError             an image's SBOM cannot be made (cicd.sbom)
    ├── ProvenanceError       a provenance cannot be made or read back (cicd.provenance)
    ├── SigningError          a key cannot be read; a signature does not verify (cicd.signing)
    ├── AttestationError      an attestation cannot be made, stored or found (cicd.attestations)
    ├── NotBuiltHere          attest: an image this workspace did not push (cicd.attestations)
    ├── BentoNotTrusted       containerize: a stored bento's model is not the commit's (cicd.bento)
    ├── BentoBuildFailed      BentoML's build of the bento failed (cicd.bento_build)
    ├── ContainerizeError     containerize: BentoML cannot make the bento's build context
    │                         (cicd.containerize; a failed docker build is a CommandError)
    ├── DraftFailed           the SBOM/provenance drafted during the smoke test failed
    │                         (cicd.attestation_draft; raised at attest's join)
    ├── VerificationFailed    one of verify's checks failed (cicd.verify)
    ├── CommentForbidden      the forge answered 403 to the report's comment (cicd.forge)
    ├── NotMovingBack         latest holds the signed image of a later commit (cicd.order)
    └── ReleaseError          a release cannot be listed, promoted or rolled back (cicd.releases)
        ├── NotPublished, NotPromotable, BadTag
        ├── NotVerified       the target fails verify's checks: nothing moved
        ├── HistoryNotTrusted a tag's history is not signed by a trusted key: rollback refuses
        └── NoSigningKey      a move without SIGNING_KEY, which signs the tag's history
"""

from __future__ import annotations

from collections.abc import Sequence


class SuiteError(Exception):
    """A failure the user can fix; the message says how."""

    exit_code = 1


class CommandError(SuiteError):
    """A command exited non-zero. Carries the command, its exit code and its output tail."""

    def __init__(self, command: Sequence[str], exit_code: int, output: str = "", hint: str = ""):
        self.command = list(command)
        self.exit_code = exit_code
        self.output = output
        self.hint = hint
        super().__init__(self._message())

    def _message(self) -> str:
        last_line = next((ln for ln in reversed(self.output.splitlines()) if ln.strip()), "")
        text = f"`{display(self.command)}` failed with exit code {self.exit_code}"
        if last_line:
            text += f": {last_line.strip()}"
        if self.hint:
            text += f". {self.hint}"
        return text


class NotReplayed(SuiteError):
    """A request that may have taken effect failed after it was sent, and is not sent again
    (a POST; an upload PUT, whose session a first arrival closes). ``reason``: what failed,
    without the URL (an upload's URL carries its session's state)."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class RegistryError(SuiteError):
    """A local-registry problem the user can fix; the message says what to do."""


class GateError(SuiteError):
    """gates.yaml cannot be read, or a metric it names is missing."""


class GateFailed(SuiteError):
    """A metric is outside its bounds."""


class SmokeError(SuiteError):
    """The image did not answer as the model does: it must not be published."""


class SbomError(SuiteError):
    """The SBOM of an image could not be made; the message says what to do."""


class ProvenanceError(SuiteError):
    """A provenance that cannot be made, or read back."""


class SigningError(SuiteError):
    """A key that cannot be read, or a signature that does not verify."""


class AttestationError(SuiteError):
    """An attestation that cannot be made, stored or found."""


class NotBuiltHere(SuiteError):
    """attest was asked to sign an image this workspace did not build, smoke-test and push
    (:func:`cicd.attestations.pushed_here`)."""


class BentoNotTrusted(SuiteError):
    """`invoke containerize` alone found a stored bento whose model is not the one this commit
    records (:func:`cicd.bento.check_stored_bento`): nothing is built from it."""


class BentoBuildFailed(SuiteError):
    """BentoML's build, run in the suite's process (:mod:`cicd.bento_build`), failed: a bad
    bentofile, a service that does not import, a lock that fails; or the bento is named
    otherwise than the suite expects."""


class ContainerizeError(SuiteError):
    """BentoML cannot make the build context of the stored bento (:mod:`cicd.containerize`),
    or the bento's build needs what is not there (BuildKit, a ``stage: build`` variable)."""


class DraftFailed(SuiteError):
    """The SBOM or provenance made while the smoke test ran failed; raised at attest's join."""


class VerificationFailed(SuiteError):
    """A check failed: the message is its line."""

    def __init__(self, check: str, detail: str):
        super().__init__(f"{check}: {detail}")
        self.check, self.detail = check, detail


class CommentForbidden(SuiteError):
    """The forge answered 403 to a comment request."""


class ReleaseError(SuiteError):
    """A release cannot be listed, promoted or rolled back; the message says why."""


class NotPublished(ReleaseError):
    """The revision has no image in the registry."""


class NotPromotable(ReleaseError):
    """The revision's image is not one the publish session pushed, or its tag lies."""


class BadTag(ReleaseError):
    """The tag to move is not an environment tag."""


class NotVerified(ReleaseError):
    """promote or rollback was asked to move a tag to an image that fails verify's checks
    (:func:`cicd.releases.verified`): nothing moved."""


class HistoryNotTrusted(ReleaseError):
    """A tag's history record is not signed by a trusted key, or not about this tag
    (:func:`cicd.releases.read_history`): a plain rollback does not follow it."""

    def __init__(self, record: str, reason: str):
        super().__init__(
            f"{record} is not trusted: {reason}; a plain rollback follows only a history "
            "signed by a trusted key: name the revision to go to with --to REV (verify runs "
            "on it), which writes a signed history"
        )
        self.record, self.reason = record, reason


class NoSigningKey(ReleaseError):
    """promote or rollback without SIGNING_KEY, which signs the tag's history."""


class NotMovingBack(SuiteError):
    """``latest`` holds the signed image of a commit that descends from this one
    (:func:`cicd.order.move_forward`): publish does not move it back."""


def display(command: Sequence[str]) -> str:
    """The command as a user would type it (quoted where needed)."""
    import shlex

    return shlex.join(str(part) for part in command)
