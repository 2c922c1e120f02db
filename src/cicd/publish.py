"""The publish session's own steps: ask the registry first, push last.

`nox -s publish` runs these invoke steps in one process, in this order (noxfile.py):
check-published -> import-model -> bento -> containerize -> smoke -> push -> attest. A
failing step ends the run, so push is reached only by an image that passed its smoke test,
and check-published ends it early, successfully, when the registry already holds this
commit's image with this model, proven by a provenance signed by a trusted key (attaching
its SBOM if it is missing). Push records the digest it pushed, and attest signs only that
digest (:func:`attestations.pushed_here`): what is signed is what was built and smoke-tested.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from typing import Any

from cicd import (
    attestation_draft,
    attestations,
    bento,
    ci_outputs,
    image,
    local_registry,
    order,
    verify,
)
from cicd import gates as metric_gates
from cicd.ci_outputs import Result
from cicd.containerize import containerize
from cicd.context import Run
from cicd.image import Image, Target
from cicd.labels import MODEL_DIGEST_LABEL
from cicd.registry import Manifest


def check_published(run: Run, force: bool = False, gates: bool = True) -> Result | None:
    """What the registry holds (:class:`ci_outputs.Result`: digest, tags) when it has this
    commit's image with this model, else None (build, smoke test and push must follow).
    The embedded registry is started first, a configured one must answer. ``force``: None
    whatever the registry holds.

    First of all, the model's absolute metric gates (gates.yaml): a model outside its bounds
    is refused before anything is pulled, asked or built (``gates=False``: skipped, loudly).
    """
    started = time.monotonic()
    check_gates(run, enabled=gates)
    goal = image.target(run)
    if run.settings.uses_local_registry:
        local_registry.ensure_running(run)
    else:
        run.registry.ping()
    manifest = None if force else run.registry.manifest(run.settings.repository_path, goal.tags[0])
    if manifest is None:
        return None
    problem = verify.untrusted(run, goal, manifest)
    if problem:
        run.runner.echo(
            f"{goal.references[0]} holds {manifest.digest} {problem}: not trusted, never signed "
            "as it is; building, smoke-testing and pushing this commit's image over it"
        )
        return None
    digest = already_published(run, goal, manifest)
    if digest is None:
        return None
    run.runner.echo(
        f"{goal.references[0]} is already published with model {goal.model.tag} "
        f"({digest}, its provenance signed): nothing to build or push (use --force to rebuild)"
    )
    lacking = attestations.missing(run, digest)
    if lacking:
        names = " and ".join(kind.name for kind in lacking)
        run.runner.echo(f"its {names} missing: attaching them (no rebuild)")
        attestations.attest(run, goal, digest=digest)
    seconds = [("check-published", round(time.monotonic() - started, 1))]
    return ci_outputs.write_publish(run, goal, digest, seconds, built=False)


def check_gates(run: Run, enabled: bool = True) -> None:
    """The absolute metric gates against the workspace's evaluation/metrics.json (one line
    per bound; :class:`gates.GateFailed` when one fails). ``enabled=False``: a loud warning."""
    if not enabled:
        run.runner.echo(metric_gates.NO_GATES_WARNING)
        return
    metrics = image.read_metrics(run.settings.root)
    metric_gates.check_absolute(run.runner, run.settings.root, metrics)


def already_published(run: Run, goal: Target, manifest: Manifest | None = None) -> str | None:
    """The digest of this commit's image ``manifest`` (default: what its SHA tag holds) when
    it has this model, made to hold both tags: a missing or stale ``latest`` (a push whose
    second half failed) is pointed at it by a manifest PUT, no rebuild. check-published calls
    it only with an image its signed provenance proved (:func:`verify.untrusted`): labels
    alone never move ``latest``."""
    registry, repository = run.registry, run.settings.repository_path
    commit_tag, *others = goal.tags
    manifest = manifest or registry.manifest(repository, commit_tag)
    if manifest is None:
        return None
    labels = registry.labels(repository, manifest)
    if labels.get(MODEL_DIGEST_LABEL) != goal.model.digest:
        return None
    for tag in others:
        if order.move_forward(run, repository, tag, manifest, goal.revision.sha):
            run.runner.echo(
                f"{tag} did not point at {goal.references[0]}: repaired (manifest PUT, no rebuild)"
            )
    return manifest.digest


def build(run: Run) -> Image:
    """import-model -> bento -> containerize: the image of this commit, labelled."""
    goal = image.target(run)
    bento.import_model(run, goal.model)
    bento.build_bento(run, goal.model)
    built = containerize(run, goal)
    run.runner.echo(f"built {', '.join(built.references)} ({built.id})")
    return built


def smoke_test(run: Run, draft_started: dt.datetime | None = None) -> Any:
    """The smoke test of this commit's local image; with ``draft_started`` (the publish
    session's start), its SBOM and provenance are drafted meanwhile in the background
    (:mod:`cicd.attestation_draft`) for attest, which signs them only after the push. A
    smoke test that fails or is interrupted stops the draft and waits for it."""
    from cicd import smoke

    if draft_started is None or run.dry:
        return smoke.smoke_test(run)
    goal = image.target(run)
    local = image.local_image(run, goal)
    draft = attestation_draft.start(run, goal, local.id, draft_started)
    try:
        return smoke.smoke_test(run, goal.references[0])
    except BaseException:
        draft.cancel()
        raise


def push(run: Run, earlier_steps: Sequence[tuple[str, float]] = ()) -> Result | None:
    """Push this commit's local image under its SHA tag (login and logout around it), check
    it in the registry, record the digest for attest, and write the results where CI reads
    them (returned; None in a dry run). ``latest`` moves after attest (:func:`move_tags`).
    ``earlier_steps``: the steps of this run before the push and their seconds, for the
    summaries."""
    started = time.monotonic()
    goal = image.target(run)
    local = image.local_image(run, goal)
    pushed = image.push(run, local)
    if pushed is None:  # a dry run
        run.runner.echo("dry run: nothing was pulled, built, run or pushed")
        return None
    attestations.record_push(run, goal, pushed, local.id)  # what attest signs, only that
    seconds = [*earlier_steps, ("push", round(time.monotonic() - started, 1))]
    return ci_outputs.write_publish(run, goal, pushed.digest, seconds, built=True)


def move_tags(run: Run, pushed: Manifest | None) -> None:
    """After attest: point this commit's moving tags (``latest``) at the image it pushed
    (``pushed``, the manifest attest signed: not fetched again), never back in time
    (:func:`image.move_tags`). Last, so that another publish looking at ``latest``
    meanwhile finds a signed image and its commit. ``pushed`` is None in a dry run.

    The image is the pushed manifest's config: attest has just checked that it is the local
    image under this commit's tag (:func:`attestations.pushed_here`), so the engine is not
    asked again."""
    goal = image.target(run)
    local = goal.image(pushed.config_digest) if pushed else image.local_image(run, goal)
    digest = image.move_tags(run, local, pushed)
    if not run.dry:
        run.runner.echo(f"published {', '.join(goal.references)} ({digest})")
