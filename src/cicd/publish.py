"""The composed steps: build the image of this commit, and publish it.

publish = target (model pulled if missing) -> registry up -> skip if already published ->
build (import-model -> bento -> containerize) -> smoke -> push (login, push, logout).
Nothing reaches the registry unless it passed its smoke test.
"""

from __future__ import annotations

from cicd import bento, ci_outputs, image, local_registry, smoke
from cicd.context import Run
from cicd.image import Image, Target
from cicd.registry import CREATED_LABEL


def build(run: Run, goal: Target | None = None) -> Image:
    """import-model -> bento -> containerize: the image of this commit, labelled."""
    goal = goal or image.target(run)
    bento.import_model(run, goal.model)
    bento.build_bento(run, goal.model)
    built = image.containerize(run, goal)
    run.runner.echo(f"built {', '.join(built.references)} ({built.id})")
    return built


def publish(run: Run, force: bool = False) -> str:
    """Build, smoke-test and push this commit's image unless the registry already has it."""
    runner = run.runner
    clock = ci_outputs.Clock()
    goal = image.target(run)
    run.require_docker()  # said first, even when the registry has the image already
    if run.settings.uses_local_registry:
        local_registry.ensure_running(run)
    else:
        run.registry.ping()
    digest = None if force else already_published(run, goal)
    if digest:
        runner.echo(
            f"{goal.references[0]} is already published with model {goal.model.tag} "
            f"({digest}): nothing to build or push (use --force to rebuild)"
        )
        ci_outputs.write_publish(run, goal, digest, clock, built=False)
        return digest
    clock.lap("model, registry check")
    built = build(run, goal)
    clock.lap("build")
    smoke.smoke_test(run, built.references[0])
    clock.lap("smoke test")
    digest = image.push(run, built)
    clock.lap("push")
    if run.dry:
        runner.echo("dry run: nothing was pulled, built, run or pushed")
    else:
        runner.echo(f"published {', '.join(built.references)} ({digest})")
        ci_outputs.write_publish(run, goal, digest, clock, built=True)
    return digest


def already_published(run: Run, goal: Target) -> str | None:
    """The digest of this commit's image when the registry holds it, with this model, under
    both tags. A good SHA tag with a missing or stale ``latest`` (a push whose second half
    failed) is completed by pointing ``latest`` at it: a manifest PUT, no rebuild."""
    registry, repository = run.registry, run.settings.repository_path
    commit_tag, *others = goal.tags
    manifest = registry.manifest(repository, commit_tag)
    if manifest is None:
        return None
    labels = registry.labels(repository, manifest)
    if labels.get(image.MODEL_DIGEST_LABEL) != goal.model.digest:
        return None
    for tag in others:
        if registry.promote(repository, tag, manifest, labels.get(CREATED_LABEL, "")):
            run.runner.echo(
                f"{tag} did not point at {goal.references[0]}: repaired (manifest PUT, no rebuild)"
            )
    return manifest.digest
