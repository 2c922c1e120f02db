"""The signed provenance of an image digest: what a trusted key says that image is.

check-published trusts an image under the commit's SHA tag (:func:`cicd.verify.untrusted`),
and ``latest`` refuses to move back to an older commit (:func:`cicd.order.signed_commit`),
only on this: the image's provenance, signed by a trusted key (:func:`signing.trusted_keys`),
about that very digest. Read here once for both; each then compares what it needs (the
commit, the model, the repository). Labels are never evidence: anyone who can push sets them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cicd import attestation_store, provenance, signing
from cicd.attestation_store import PROVENANCE
from cicd.errors import SuiteError

if TYPE_CHECKING:
    from cicd.context import Run


@dataclass(frozen=True)
class SignedProvenance:
    statement: dict[str, Any]  # the in-toto statement: its subjects name the image
    predicate: dict[str, Any]  # the SLSA provenance: commit, model, dvc.lock outputs

    @property
    def commit(self) -> str:
        return provenance.commit_of(self.predicate)


class Unproven(Exception):
    """The image's provenance proves nothing; ``why`` says so in a few words that follow the
    image's name ("with no provenance"). Callers turn it into their own line or a decision:
    it never reaches the user by itself, so it is no :class:`SuiteError`."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


def read(run: Run, repository: str, digest: str) -> SignedProvenance:
    """The provenance attached to the image ``digest`` in ``repository`` (a registry path),
    signed by a trusted key and about that digest; else :class:`Unproven`. A registry that
    cannot be read proves nothing either."""
    try:
        envelope = attestation_store.fetch(run.registry, repository, digest).get(PROVENANCE)
        if envelope is None:
            raise Unproven("with no provenance")
        if not signing.signed(envelope):
            raise Unproven("with an unsigned provenance")
        signing.signed_by_any(envelope, signing.trusted_keys(run), PROVENANCE.name)
        statement = signing.statement_of(envelope, PROVENANCE.name)
        predicate = provenance.predicate(statement, PROVENANCE.predicate_type, PROVENANCE.name)
    except SuiteError as error:
        raise Unproven(f"whose provenance does not hold ({error})") from None
    if digest not in provenance.subject_digests(statement):
        raise Unproven("whose signed provenance is about another image")
    return SignedProvenance(statement, predicate)
