"""``latest`` never moves back in time, decided by what is signed: never by a label.

Two publishes can interleave (two pushes to main, a re-run of an older pipeline): the older
commit's job must not take ``latest`` from the newer one. Which is newer comes from git, not
from the image: the commit the held image's *signed* provenance names (a trusted key, about
that digest) and this commit, and whether this commit descends from it. The image's labels
(``org.opencontainers.image.created``, the revision) are set by whoever pushes, so a label
with a date in 2099 would pin ``latest`` forever and refuse every real publish.

The tag is kept only when the held image is proven later: signed, and its commit a
descendant of this one. An image without such a provenance proves nothing and is replaced.
When git cannot tell (the held commit is not in this clone, or the two commits are on
branches that diverged) the tag moves and the line says why it could not tell: refusing
there would pin the tag again, this time to a commit nobody can reach.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cicd import ci, signed_provenance
from cicd.errors import NotMovingBack

if TYPE_CHECKING:
    from cicd.context import Run
    from cicd.registry import Manifest


def move_forward(run: Run, repository: str, tag: str, manifest: Manifest, commit: str) -> bool:
    """Point ``tag`` at ``manifest`` (the image of ``commit``) unless it already is, or holds
    the signed image of a later commit (:class:`NotMovingBack`). Returns whether it moved."""
    registry = run.registry
    current = registry.manifest(repository, tag)
    if current is not None and current.digest == manifest.digest:
        return False
    if current is not None:
        check_not_back(run, repository, tag, current, commit)
    registry.put_manifest(repository, tag, manifest)
    return True


def check_not_back(run: Run, repository: str, tag: str, held: Manifest, commit: str) -> None:
    """:class:`NotMovingBack` when ``held`` is the signed image of a descendant of
    ``commit``; a line when git cannot tell (the move goes on)."""
    later = signed_commit(run, repository, held)
    if not later or later == commit:
        return
    relation, why = ancestry(run, commit, later)
    if relation == "older":
        raise NotMovingBack(
            f"{repository}:{tag} holds the signed image of commit {later[:12]}, which "
            f"descends from this one ({commit[:12]}): not moving it back; publish the newest "
            "commit instead"
        )
    if relation == "unknown":
        run.runner.echo(
            f"{tag} held the signed image of commit {later[:12]}; whether {commit[:12]} is "
            f"later cannot be decided here ({why}): moving it"
        )


def signed_commit(run: Run, repository: str, manifest: Manifest) -> str:
    """The commit named by the provenance of the image ``manifest`` when a trusted key signed
    it about that digest; "" otherwise (no provenance, unsigned, forged: it proves nothing)."""
    try:
        return signed_provenance.read(run, repository, manifest.digest).commit
    except signed_provenance.Unproven:
        return ""


def ancestry(run: Run, commit: str, other: str) -> tuple[str, str]:
    """Whether ``commit`` is "older" than ``other`` (its ancestor), "newer" (a descendant),
    or "unknown" (with why): by git in the repository's root."""
    root = run.settings.root
    for sha in (commit, other):
        if ci.git(run.runner, root, "cat-file", "-e", f"{sha}^{{commit}}") is None:
            return "unknown", f"commit {sha[:12]} is not in this clone: fetch its full history"
    base = ci.git(run.runner, root, "merge-base", commit, other)
    if base == commit:
        return "older", ""
    if base == other:
        return "newer", ""
    return "unknown", f"{commit[:12]} and {other[:12]} are on branches that diverged"
