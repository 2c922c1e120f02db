"""Releases: what the registry holds, and environment tags moved by digest.

* :func:`list_releases` -- the images of the repository, newest first, with their revision,
  model, metrics (the ``model.metrics.*`` labels), size and the tags that point at them; read
  from the registry API alone (tags list, manifests, config blobs): nothing is pulled.
* :func:`promote` -- point an environment tag (``staging``, ``production``) at an image
  named by its digest (or a published revision, resolved once to a digest), after verify's
  checks passed on that digest (:func:`verified`), by a manifest PUT: no pull, no rebuild,
  no layer upload.
* :func:`rollback` -- move it back to the previous promotion still in force (or a named
  revision): never forward again, and only by a history signed by a trusted key.

Only an image the publish session pushed and signed can be promoted: verify's checks pass on
its digest (a provenance signed by the committed key, about that digest, naming the
revision); the labels (revision, model, created) are read for the listing and the lines, and
are never evidence on their own.

A tag's history lives in the registry, so that a rollback works from any clone or runner:
an OCI artifact under the tag ``<TAG>.history`` in the same repository, whose config blob is
a DSSE envelope signed by ``SIGNING_KEY`` (the key of the attestations) of the statement
``{"repository": ..., "tag": ..., "entries": [{revision, digest, time, action}, ...]}``.
Anyone who can push can rewrite that tag, so a rollback follows the record only when its
signature verifies against the trusted keys, it names this repository and tag, and its last
move is where the tag points now. Why an artifact rather than labels or one tag per move:
labels belong to an image and cannot change without a new image (a new digest), while the
history must change without touching the image; ``history-<TAG>-<n>`` tags would be one
manifest per move, cluttering ``tags/list`` and needing a scan to find the last. The artifact
is one tag, one small blob (about a kilobyte: never a layer of the image), readable by any
OCI client (``oras``, ``crane``), and rewritten in place.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from cicd import signing, verify
from cicd.ci import REVISION_TAG
from cicd.errors import (
    BadTag,
    HistoryNotTrusted,
    NoSigningKey,
    NotPromotable,
    NotPublished,
    NotVerified,
    ReleaseError,
    VerificationFailed,
)
from cicd.labels import (
    CREATED_LABEL,
    METRICS_LABEL_PREFIX,
    MODEL_DIGEST_LABEL,
    MODEL_TAG_LABEL,
    REVISION_LABEL,
)
from cicd.registry import OCI_MANIFEST, Manifest, content_digest

if TYPE_CHECKING:
    from cicd.context import Run

HISTORY_SUFFIX = ".history"
# v2: the config is a signed DSSE envelope (v1, unsigned JSON, is refused by rollback)
HISTORY_TYPE = "application/vnd.celestial.tag-history.v2+json"
HISTORY_KEEP = 200  # the newest entries kept in a tag's history
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# What the publish session's images carry (image.labels); without them it was not published
# by the suite, so not smoke-tested.
SUITE_LABELS = (REVISION_LABEL, CREATED_LABEL, MODEL_TAG_LABEL, MODEL_DIGEST_LABEL)


@dataclass(frozen=True)
class Release:
    """One image of the repository, as the registry describes it."""

    revision: str
    created: str
    model_tag: str
    model_digest: str
    metrics: dict[str, str]
    digest: str
    size: int  # bytes: the sum of the layers' sizes in the manifest (compressed)
    tags: tuple[str, ...]  # every tag pointing at it, the revision tag included


@dataclass(frozen=True)
class Entry:
    """One move of a tag, as its history records it."""

    revision: str
    digest: str
    time: str
    action: str = "promote"


@dataclass(frozen=True)
class Move:
    """What a promotion or rollback did (``moved`` False: the tag was already there)."""

    tag: str
    revision: str
    digest: str
    previous_revision: str = ""
    previous_digest: str = ""
    moved: bool = True

    def line(self, repository: str) -> str:
        if not self.moved:
            return (
                f"{repository}:{self.tag} already points at {self.revision[:12]} "
                f"({self.digest}): nothing moved"
            )
        was = (
            f"{self.previous_revision[:12] or '?'} ({self.previous_digest})"
            if self.previous_digest
            else "nothing (new tag)"
        )
        return (
            f"{repository}:{self.tag} moved from {was} to {self.revision[:12]} ({self.digest}) "
            "by a manifest PUT (no pull, no rebuild, no layer upload)"
        )

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- listing


def list_releases(run: Run) -> list[Release]:
    """The repository's images that carry a revision label, newest first."""
    registry, repository = run.registry, run.settings.repository_path
    by_digest: dict[str, tuple[Manifest, list[str]]] = {}
    for tag in sorted(registry.tags(repository)):
        if tag.endswith(HISTORY_SUFFIX):
            continue
        manifest = registry.manifest(repository, tag)
        if manifest is None:  # deleted meanwhile
            continue
        by_digest.setdefault(manifest.digest, (manifest, []))[1].append(tag)
    releases = []
    for digest, (manifest, tags) in by_digest.items():
        labels = registry.labels(repository, manifest)
        if REVISION_LABEL not in labels:
            continue
        metrics = {
            name.removeprefix(METRICS_LABEL_PREFIX): value
            for name, value in sorted(labels.items())
            if name.startswith(METRICS_LABEL_PREFIX)
        }
        releases.append(
            Release(
                revision=labels[REVISION_LABEL],
                created=labels.get(CREATED_LABEL, ""),
                model_tag=labels.get(MODEL_TAG_LABEL, ""),
                model_digest=labels.get(MODEL_DIGEST_LABEL, ""),
                metrics=metrics,
                digest=digest,
                size=layers_size(manifest),
                tags=tuple(sorted(tags, key=_tag_order)),
            )
        )
    return sorted(releases, key=lambda r: (r.created, r.revision), reverse=True)


def show_releases(run: Run, releases: list[Release], as_json: bool = False) -> None:
    """The releases as the table, or as JSON (every field, full digests) on stdout."""
    if as_json:
        print(json.dumps([asdict(release) for release in releases], indent=2))
    else:
        print(run.runner.mask(render_releases(releases)))


def show_move(run: Run, move: Move, as_json: bool = False) -> None:
    """What moved (or, in a dry run, would have), as a line or as JSON on stdout."""
    if run.dry:
        run.runner.echo(
            f"dry run: {run.settings.repository}:{move.tag} would point at "
            f"{move.revision[:12]}; nothing was moved"
        )
    elif as_json:
        print(json.dumps(move.as_json(), indent=2))
    else:
        run.runner.echo(move.line(run.settings.repository))


def layers_size(manifest: Manifest) -> int:
    """The sum of the layer sizes a manifest declares (what a pull downloads, compressed)."""
    try:
        document = json.loads(manifest.raw or b"{}")
    except ValueError:
        return 0
    return sum(int(layer.get("size") or 0) for layer in document.get("layers") or [])


def _tag_order(tag: str) -> tuple[int, str]:
    return (2 if REVISION_TAG.fullmatch(tag) else 0 if tag == "latest" else 1, tag)


def render_releases(releases: list[Release]) -> str:
    """The releases as a plain-text table for a terminal (full values: `--json`)."""
    if not releases:
        return "no published images in the registry"
    header = ["revision", "created", "model", "model digest", "metrics", "image digest", "size",
              "tags"]  # fmt: skip
    rows = [
        [
            release.revision[:12],
            release.created,
            release.model_tag.rsplit(":", 1)[-1],
            _short(release.model_digest),
            " ".join(f"{name}={value}" for name, value in release.metrics.items()) or "—",
            _short(release.digest),
            _size(release.size),
            ", ".join(t for t in release.tags if t != release.revision) or "—",
        ]
        for release in releases
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
             for row in [header, *rows]]  # fmt: skip
    return "\n".join(line.rstrip() for line in lines)


def _short(digest: str) -> str:
    return digest[: len("sha256:") + 12] if digest else "—"


def _size(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


# --------------------------------------------------------------------------- moving tags


def check_tag(tag: str | None) -> str:
    """``tag`` when it is an environment tag this step may move; else :class:`BadTag`."""
    if not tag:
        raise BadTag("name the environment tag to move (--to production, --tag production)")
    if not TAG.fullmatch(tag):
        raise BadTag(f"{tag!r} is not a valid tag: letters, digits, `_`, `.`, `-` (at most 128)")
    if tag == "latest" or REVISION_TAG.fullmatch(tag):
        raise BadTag(
            f"{tag!r} belongs to the publish session (latest and the commits' tags): "
            "promote to an environment tag such as staging or production"
        )
    if tag.endswith(HISTORY_SUFFIX):
        raise BadTag(f"{tag!r} names a tag's history record: choose another tag")
    return tag


def resolve_digest(run: Run, digest: str, revision: str | None = None) -> tuple[str, Manifest]:
    """The revision (its label) and manifest of the image ``digest``; one line when the
    registry does not have it or it is not ``revision``'s."""
    if not digest:
        raise NotPublished(
            "--digest is empty: give the image digest publish printed (sha256:...; in CI the "
            "publish job's output digest, PUBLISH_DIGEST on GitLab)"
        )
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise NotPublished(f"{digest!r} is not a sha256 digest (sha256:<64 hex>)")
    registry, repository = run.registry, run.settings.repository_path
    manifest = registry.manifest(repository, digest)
    if run.dry and manifest is None:
        return revision or "<revision>", Manifest(digest, "sha256:<config>")
    if manifest is None:
        raise NotPublished(f"{run.settings.repository}@{digest} is not in the registry")
    label = registry.labels(repository, manifest).get(REVISION_LABEL, "")
    if revision and not label.startswith(revision):
        raise NotPromotable(
            f"{run.settings.repository}@{digest} is labelled revision {label[:12] or 'none'}, "
            f"not {revision[:12]}: give the digest alone, or the revision's own digest"
        )
    return label, manifest


def verified(run: Run, revision: str, manifest: Manifest) -> None:
    """verify's checks on the image ``manifest`` (by digest), against ``revision``: a
    provenance signed by the committed key, about this digest in this repository, naming
    that commit; :class:`NotVerified` (nothing moves) when one fails."""
    settings = run.settings
    if run.dry:  # nothing was read: there is no digest to check
        run.runner.echo(f"dry run: verify's checks would run on {manifest.digest} first")
        return
    reference = f"{settings.registry_host}/{settings.repository_path}@{manifest.digest}"
    expected = revision if re.fullmatch(r"[0-9a-f]{40}", revision) else None
    try:
        for _ in verify.checks(run, reference, None, False, expected):
            pass
    except VerificationFailed as failure:
        raise NotVerified(
            f"{settings.repository}@{manifest.digest} ({revision[:12]}) fails verify, "
            f"{failure}: nothing moved; publish that commit with SIGNING_KEY set "
            "(`nox -s publish`), then promote the digest it prints"
        ) from None


def resolve(run: Run, revision: str | None) -> tuple[str, Manifest]:
    """The revision tag of ``revision`` (default: this commit) and its manifest, read once:
    what follows (verify, the PUT) uses that manifest's digest, never the tag again; one
    line when it cannot be promoted."""
    registry, repository = run.registry, run.settings.repository_path
    wanted = revision or run.revision.tag
    tag = wanted
    if revision and not REVISION_TAG.fullmatch(revision):
        raise NotPublished(f"{revision!r} is not a commit SHA: give the commit (7 to 40 hex)")
    if revision and len(revision) < 40:
        matches = [t for t in registry.tags(repository) if t.startswith(revision)]
        matches = [t for t in matches if REVISION_TAG.fullmatch(t) and "-dirty-" not in t]
        if len(matches) > 1:
            raise NotPublished(f"{revision!r} names {len(matches)} revisions: give more of it")
        tag = matches[0] if matches else revision
    if "-dirty-" in tag:
        raise NotPromotable(
            f"{tag} is the image of an uncommitted tree: commit, publish, then promote"
        )
    manifest = registry.manifest(repository, tag)
    if run.dry and manifest is None:
        return tag, Manifest(f"sha256:<digest of {tag[:12]}>", "sha256:<config>")
    if manifest is None:
        raise NotPublished(
            f"revision {tag[:12]} was never published to {run.settings.repository}: "
            "run the publish session on that commit first (nox -s publish)"
        )
    labels = registry.labels(repository, manifest)
    missing = [name for name in SUITE_LABELS if not labels.get(name)]
    if missing:
        raise NotPromotable(
            f"{run.settings.repository}:{tag[:12]} lacks the suite's labels ({', '.join(missing)})"
            ": it was not pushed by the publish session, which pushes smoke-tested images only;"
            " publish it with nox -s publish"
        )
    if labels[REVISION_LABEL] != tag:
        raise NotPromotable(
            f"{run.settings.repository}:{tag[:12]} holds the image of revision "
            f"{labels[REVISION_LABEL][:12]}: the tag and the image disagree, so it is not "
            "promoted; publish that commit again (nox -s publish -- --force)"
        )
    return tag, manifest


def promote(
    run: Run,
    to: str | None,
    revision: str | None = None,
    action: str = "promote",
    digest: str | None = None,
) -> Move:
    """Point the environment tag ``to`` at the image ``digest`` (or of ``revision``, resolved
    once to a digest; default: this commit) after verify's checks passed on that digest, by
    a manifest PUT, and record the move in the tag's signed history."""
    to = check_tag(to)
    key = history_signer(run)
    if digest is not None:  # `--digest ""` (an empty CI output) is a mistake, not "this commit"
        tag, manifest = resolve_digest(run, digest, revision)
    else:
        tag, manifest = resolve(run, revision)
    verified(run, tag, manifest)
    return _move(run, to, tag, manifest, action, key)


def rollback(run: Run, tag: str | None, to: str | None = None) -> Move:
    """Move ``tag`` back to the promotion before the current one (or to ``to``), with the
    checks of :func:`promote`, following only a history signed by a trusted key."""
    tag = check_tag(tag)
    if to:
        return promote(run, tag, to, action="rollback")
    key = history_signer(run)
    if run.dry:  # nothing was read: show the requests a rollback would make
        previous = Entry("<previous revision>", "sha256:<previous digest>", "")
        manifest = Manifest(previous.digest, "")
        return _move(run, tag, previous.revision, manifest, "rollback", key, (None, []))
    current = run.registry.manifest(run.settings.repository_path, tag)
    entries = read_history(run, tag)
    previous = rollback_target(run, tag, current, entries)
    # By the digest the signed history recorded: the revision's tag is never read again.
    revision, manifest = resolve_digest(run, previous.digest, previous.revision)
    verified(run, revision, manifest)
    return _move(run, tag, revision, manifest, "rollback", key, (current, entries))


def promotions(entries: list[Entry]) -> list[Entry]:
    """The promotions still in force, oldest first: a rollback to a release in force undoes
    the moves after it (so the next rollback steps further back, never forward again); a
    rollback to any other release (``--to``) counts as a promotion."""
    stack: list[Entry] = []
    for entry in entries:
        if entry.action == "rollback" and any(e.digest == entry.digest for e in stack):
            while stack[-1].digest != entry.digest:
                stack.pop()
        elif not stack or stack[-1].digest != entry.digest:
            stack.append(entry)
    return stack


def rollback_target(run: Run, tag: str, current: Manifest | None, entries: list[Entry]) -> Entry:
    """The promotion before the current one, by the (verified) history ``entries``; one line
    when the tag is not where its history says, or there is no earlier promotion."""
    in_force = promotions(entries)
    name = f"{run.settings.repository}:{tag}"
    if current is not None and in_force and in_force[-1].digest != current.digest:
        raise ReleaseError(
            f"{name} points at {current.digest}, but its signed history's last move is to "
            f"{in_force[-1].digest}: it was moved outside promote and rollback; name the "
            "revision to go to with --to REV"
        )
    if len(in_force) < 2:
        raise ReleaseError(
            f"{name} has no earlier promotion in its history ({len(entries)} recorded moves): "
            "name the revision to go to with --to REV"
        )
    return in_force[-2]


def history_signer(run: Run) -> Any:
    """The signer of the tag's history (``SIGNING_KEY``); :class:`NoSigningKey` without it
    (a dry run signs nothing: None)."""
    key = run.settings.signing_key
    if not key:
        if run.dry:
            return None
        raise NoSigningKey(
            "SIGNING_KEY is not set: promote and rollback sign the tag's history with it "
            "(what a rollback trusts); set it as for publish (the CI secret SIGNING_KEY)"
        )
    return signing.signer(key)


def _move(
    run: Run,
    to: str,
    revision: str,
    manifest: Manifest,
    action: str,
    key: Any,
    state: tuple[Manifest | None, list[Entry]] | None = None,
) -> Move:
    """Point ``to`` at ``manifest`` and record it in the history signed by ``key``;
    ``state``: what ``to`` points at and its verified history, when the caller read them."""
    registry, repository = run.registry, run.settings.repository_path
    current, entries = state or (registry.manifest(repository, to), _history_to_extend(run, to))
    previous_revision = ""
    if current is not None:
        previous_revision = registry.labels(repository, current).get(REVISION_LABEL, "")
    moved = current is None or current.digest != manifest.digest
    if moved:
        registry.put_manifest(repository, to, manifest)
    entry = Entry(revision, manifest.digest, _now(), action)
    # Also when nothing moved but the history missed this state (a write that failed).
    if moved or not entries or entries[-1].digest != manifest.digest:
        entries = [*entries, entry][-HISTORY_KEEP:]
        write_history(run, to, entries, key)
    return Move(
        to,
        revision,
        manifest.digest,
        previous_revision,
        current.digest if current else "",
        moved,
    )


def _history_to_extend(run: Run, tag: str) -> list[Entry]:
    """The history a promotion appends to: the verified one, else a new one (said), since
    signing an unverified record would make its entries trusted."""
    try:
        return read_history(run, tag)
    except HistoryNotTrusted as error:
        run.runner.echo(f"{error.record} is not trusted ({error.reason}): starting a new one")
        return []


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- history


def history_tag(tag: str) -> str:
    return f"{tag}{HISTORY_SUFFIX}"


def read_history(run: Run, tag: str) -> list[Entry]:
    """The recorded moves of ``tag``, oldest first ([] when none were recorded), from a
    record signed by a trusted key about this repository's ``tag``; else
    :class:`HistoryNotTrusted`."""
    registry, repository = run.registry, run.settings.repository_path
    record = registry.manifest(repository, history_tag(tag))
    if record is None:
        return []
    name = f"{run.settings.repository}:{history_tag(tag)}"
    body = registry.blob(repository, record.config_digest, what=f"the history of {tag}")
    what = "tag history"
    try:
        document = json.loads(body or b"{}")
        if not isinstance(document, dict) or "payload" not in document:
            raise HistoryNotTrusted(name, "the record is plain JSON, not a signed envelope")
        signing.signed_by_any(document, signing.trusted_keys(run), what)
        statement = signing.statement_of(document, what)
        history = statement.get("predicate")
        if statement.get("predicateType") != HISTORY_TYPE or not isinstance(history, dict):
            raise HistoryNotTrusted(name, "the signed statement is not a tag history")
        about = f"{history.get('repository')}:{history.get('tag')}"
        if about != f"{run.settings.repository}:{tag}":
            raise HistoryNotTrusted(name, f"the signed record is the history of {about}")
        return [Entry(**entry) for entry in history.get("entries", [])]
    except signing.SigningError as error:
        raise HistoryNotTrusted(name, str(error)) from None
    except (ValueError, TypeError, AttributeError):
        raise HistoryNotTrusted(name, "the record is not a tag history this suite wrote") from None


def history_statement(run: Run, tag: str, entries: list[Entry]) -> dict[str, Any]:
    """The in-toto statement a history record signs: the moves of this repository's
    ``tag``, about the digest it points at last."""
    last = entries[-1].digest if entries else ""
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [
            {
                "name": f"{run.settings.repository}:{tag}",
                "digest": {"sha256": last.removeprefix("sha256:")},
            }
        ],
        "predicateType": HISTORY_TYPE,
        "predicate": {
            "repository": run.settings.repository,
            "tag": tag,
            "entries": [asdict(e) for e in entries],
        },
    }


def write_history(run: Run, tag: str, entries: list[Entry], key: Any) -> None:
    """Store ``entries``, signed by ``key``, as the OCI artifact ``<tag>.history``: a blob
    upload of the DSSE envelope (about a kilobyte) and a manifest PUT."""
    registry, repository = run.registry, run.settings.repository_path
    envelope = signing.envelope(history_statement(run, tag, entries), key)
    record = json.dumps(envelope, indent=1, sort_keys=True).encode()
    digest = registry.upload_blob(repository, record)
    manifest = history_manifest(digest, len(record))
    registry.put_manifest(
        repository,
        history_tag(tag),
        Manifest(content_digest(manifest), digest, manifest, OCI_MANIFEST),
    )


def history_manifest(config_digest: str, size: int) -> bytes:
    """An OCI 1.1 artifact manifest whose config is the history record (no layers)."""
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": HISTORY_TYPE,
        "config": {"mediaType": HISTORY_TYPE, "digest": config_digest, "size": size},
        "layers": [],
    }
    return json.dumps(document, separators=(",", ":")).encode()
