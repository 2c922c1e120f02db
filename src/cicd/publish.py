"""The composed steps: build the image of this commit, and publish it.

publish = (pull the model if missing) -> skip if already published -> build -> smoke -> push.
Nothing reaches the registry unless it passed its smoke test.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cicd import bento, ci, dvc, image, smoke
from cicd.bento import ModelInfo
from cicd.docker import Client, choose_client, require_engine
from cicd.errors import CommandError, SuiteError
from cicd.registry import CREATED_LABEL, RegistryClient
from cicd.settings import Settings
from cicd.shell import Runner


@dataclass(frozen=True)
class Target:
    """What this commit's image is: its revision, model and references."""

    revision: ci.Revision
    model: ModelInfo
    tags: tuple[str, ...]


def target(runner: Runner, settings: Settings, environ: Mapping[str, str]) -> Target:
    """Identify the image to build; pull the model archive first when it is missing."""
    revision = ci.revision(runner, settings.root, environ)
    pull_if_missing(runner, settings, settings.bentomodel)
    model = bento.archived_model(runner, settings)
    return Target(revision, model, image.references(settings, revision))


def pull_if_missing(runner: Runner, settings: Settings, path: Path) -> None:
    """Fetch one pipeline output from the DVC remote if the workspace lacks it (fresh CI clone)."""
    if settings.path(path).exists():
        return
    runner.echo(f"{path} is not in the workspace: pulling it from the DVC remote")
    try:
        dvc.pull(runner, settings, [str(path)])
    except CommandError as error:
        raise SuiteError(
            f"{path} is neither in the workspace nor in the DVC remote: run `nox -s train` "
            "(or `invoke repro`) to make it, and `invoke push-data` to share it"
        ) from error


def docker_client(runner: Runner, settings: Settings) -> Client:
    client = choose_client(settings.docker_client)
    if not runner.dry:
        require_engine(client)
    return client


def build(runner: Runner, settings: Settings, client: Client, goal: Target) -> image.Image:
    """import-model -> bento -> containerize: the image of this commit, labelled."""
    bento.import_model(runner, settings, goal.model)
    bento_tag = bento.build_bento(runner, settings, goal.revision.tag, goal.model)
    labels = image.labels(settings, goal.revision, goal.model)
    return image.containerize(runner, settings, client, bento_tag, goal.tags, labels)


def already_published(runner: Runner, settings: Settings, goal: Target) -> str | None:
    """The digest of this commit's image when the registry holds it, with this model, under
    both tags. A good SHA tag with a missing or stale ``latest`` (a push whose second half
    failed) is completed by pointing ``latest`` at it: a manifest PUT, no rebuild."""
    registry = RegistryClient.for_settings(runner, settings)
    repository = settings.repository_path
    manifest = registry.manifest(repository, goal.revision.tag)
    if manifest is None:
        return None
    labels = registry.labels(repository, manifest)
    if labels.get(image.MODEL_DIGEST_LABEL) != goal.model.digest:
        return None
    if registry.promote(repository, "latest", manifest, labels.get(CREATED_LABEL, "")):
        runner.echo(f"latest did not point at {goal.tags[0]}: repaired (manifest PUT, no rebuild)")
    return manifest.digest


def publish(
    runner: Runner, settings: Settings, environ: Mapping[str, str], force: bool = False
) -> str:
    """Build, smoke-test and push this commit's image unless the registry already has it."""
    from cicd import ci_outputs, local_registry
    from cicd.context import Run

    clock = ci_outputs.Clock()
    goal = target(runner, settings, environ)
    client = docker_client(runner, settings)
    if settings.uses_local_registry:
        local_registry.ensure_running(Run(runner, settings, environ))
    else:
        RegistryClient.for_settings(runner, settings).ping()
    if not force:
        digest = already_published(runner, settings, goal)
        if digest:
            runner.echo(
                f"{goal.tags[0]} is already published with model {goal.model.tag} "
                f"({digest}): nothing to build or push (use --force to rebuild)"
            )
            ci_outputs.write_publish(runner, settings, environ, goal, digest, clock)
            return digest
    clock.lap("model, registry check")
    built = build(runner, settings, client, goal)
    clock.lap("build")
    pull_if_missing(runner, settings, settings.smoke_image)
    smoke.smoke_test(runner, settings, client, built.tags[0], expected_answer(runner, settings))
    clock.lap("smoke test")
    digest = image.push(runner, settings, client, built)
    clock.lap("push")
    if runner.dry:
        runner.echo("dry run: nothing was pulled, built, run or pushed")
    else:
        runner.echo(f"published {', '.join(built.tags)} ({digest})")
        ci_outputs.write_publish(runner, settings, environ, goal, digest, clock, client)
    return digest


def expected_answer(runner: Runner, settings: Settings) -> dict | None:
    """What the local model answers for the smoke test's sample image."""
    if runner.dry:
        return None
    from celestial.classifier import Classifier

    classifier = Classifier.from_bentomodel(settings.path(settings.bentomodel))
    return classifier.predict_bytes(settings.path(settings.smoke_image).read_bytes())
