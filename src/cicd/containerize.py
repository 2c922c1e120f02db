"""Build this commit's image: ``bentoml containerize`` of its bento, tagged and labelled, with
the layer cache of :mod:`cicd.layer_cache`, in this process.

The build runs what ``bentoml containerize --backend docker`` runs (BentoML 1.4's
``bentoml_cli/containerize.py`` -> ``bentoml.container.build`` -> the docker backend), without
the command's process: a ``bentoml`` CLI start costs 2-3 s here (it imports most of BentoML),
and the publish has BentoML imported already (the model import). BentoML makes the build
context and its Dockerfile from the stored bento (:func:`build_context`: its
``construct_containerfile``, with the models copied from the store), and its docker backend
turns the options into the ``docker build`` arguments; the suite's runner then runs that
``docker build``, as BentoML would, with the chosen client. So the image is the one the CLI
builds (same Dockerfile, context, tags, labels, build args, ``--cache-from``, ``--iidfile``),
and the build gets the runner's ways: shown as the equivalent ``bentoml containerize``
command (a dry run prints it and runs nothing), quiet unless ``-v``, the deadline and Ctrl-C
stop the whole build, a failure is one line with the build's last lines. Its environment is
given to the ``docker build`` alone (the chosen client's PATH and DOCKER_BUILDKIT, the cache
login's throwaway DOCKER_CONFIG, BENTOML_DO_NOT_TRACK; never a secret of the suite's): this
process's ``os.environ`` is not touched. BentoML's advice after a build (``docker run -p
3000:3000``, which listens on every interface) is its command line's: not printed; the
publish's summary says how to run the image on 127.0.0.1.

Its own module because the layer cache is taken only from an image whose provenance
verifies (:mod:`cicd.verify`), and verify reads :mod:`cicd.image`'s names: image.py cannot
build without an import cycle.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cicd import bento
from cicd.bento import BENTOML_ENV
from cicd.errors import CommandError, ContainerizeError
from cicd.image import Image, Target, labels, read_metrics, stand_in_notice, target
from cicd.labels import CACHE_BASE_LABEL
from cicd.layer_cache import INLINE_CACHE, cache_login, cache_options, cache_source
from cicd.shell import tool

if TYPE_CHECKING:
    from cicd.context import Run

HINT = "see model-cicd's docs/troubleshooting.md"


@dataclass(frozen=True)
class BuildOptions:
    """What ``bentoml containerize`` is given: the bento, the image's tags, and the backend's
    options (its ``--opt KEY=VALUE``), in the order the command gives them."""

    bento_tag: str
    image_tags: tuple[str, ...]
    labels: tuple[str, ...]  # KEY=VALUE
    cache_from: tuple[str, ...]  # references by digest
    iidfile: str

    def command(self) -> list[str]:
        """The equivalent ``bentoml containerize`` command: what is shown, and what a user
        would type to build the same image."""
        words = [tool("bentoml"), "containerize", self.bento_tag, "--backend", "docker"]
        for reference in self.image_tags:
            words += ["--image-tag", reference]
        for label in self.labels:
            words += ["--opt", f"label={label}"]
        words += cache_options(self.cache_from)
        words += ["--opt", f"iidfile={self.iidfile}"]
        return words

    def backend_options(self) -> dict[str, Any]:
        """The keyword arguments BentoML's CLI passes to its docker backend for the command's
        options (``--opt label=K=V`` -> ``label=("K=V", ...)``; an empty one is left out), then
        the image tags, as ``bentoml.container.build`` adds them."""
        options = {
            "label": self.labels,
            "build_arg": (INLINE_CACHE,),
            "cache_from": self.cache_from,
            "iidfile": (self.iidfile,),
        }
        return {**{k: v for k, v in options.items() if v}, "tag": self.image_tags}


def containerize_stored(run: Run) -> Image:
    """`invoke containerize`: the commit's image from the bento in the store, whose model is
    checked first when this process did not build it (:func:`cicd.bento.check_stored_bento`):
    run alone, the step would otherwise ship whatever model the store holds."""
    goal = target(run)
    bento.check_stored_bento(run, bento.bento_tag(run.settings, goal.revision.tag), goal.model)
    return containerize(run, goal)


def containerize(run: Run, goal: Target | None = None) -> Image:
    """``bentoml containerize`` this commit's bento into its image, tagged and labelled.

    The image records its layers' cache keys (BuildKit's inline cache), and the registry's
    ``latest`` is the build's cache, by digest, when its provenance verifies with the trusted
    key (:func:`cicd.layer_cache.cache_source`): on a cold engine the unchanged layers
    (system, Python environment, dependencies) are the registry's blobs again, so a model or
    code change rebuilds and uploads only the last layers. ``goal``: the commit's image when
    the caller has identified it (default: this commit)."""
    goal = goal or target(run)
    notice = stand_in_notice(run)
    if notice:
        run.runner.echo(notice)
    metrics = read_metrics(run.settings.root)
    image_labels = labels(run.settings, goal.revision, goal.model, metrics)
    cache = cache_source(run, goal.repository)
    if cache.base:
        image_labels[CACHE_BASE_LABEL] = cache.base
    with (
        tempfile.TemporaryDirectory(prefix="containerize-") as scratch,
        cache_login(run, cache.sources) as login_env,
    ):
        iidfile = Path(scratch) / "image-id"
        options = BuildOptions(
            bento_tag=bento.bento_tag(run.settings, goal.revision.tag),
            image_tags=goal.references,
            labels=tuple(f"{key}={value}" for key, value in image_labels.items()),
            cache_from=cache.sources,
            iidfile=str(iidfile),
        )
        env = {**BENTOML_ENV, **run.docker.env_for_tools(), **login_env}
        command = options.command()
        run.runner.call(command, lambda: build(run, options, env, command, Path(scratch)))
        image_id = iidfile.read_text().strip() if iidfile.exists() else "sha256:<built image>"
    return goal.image(image_id)


def build(
    run: Run, options: BuildOptions, env: Mapping[str, str], shown: Sequence[str], scratch: Path
) -> None:
    """Build the image as ``bentoml containerize`` does, with the docker client the run chose.

    The ``docker build`` gets what the command's process would have given it: the child
    environment of every command of the suite (no secret), ``env``, and under them the docker
    backend's defaults (DOCKER_BUILDKIT=1, DOCKER_SCAN_SUGGEST=false) where this process has
    no value. A failure is said as the failure of ``shown``, the equivalent command."""
    from bentoml._internal.container import docker as backend

    defaults = {k: v for k, v in backend.ENV.items() if k not in os.environ}
    child = {**defaults, **env}
    buildkit = bool(int(run.runner.child_env(child).get("DOCKER_BUILDKIT", "1")))
    with build_context(run, options.bento_tag, buildkit, scratch) as (context, dockerfile, secrets):
        given = options.backend_options()
        if secrets:
            given["secret"] = secrets
        arguments = backend.construct_build_args(**given, file=dockerfile, context_path=context)
        try:
            run.runner.run(
                [run.docker.path, "build", *arguments], cwd=context, env=child, hint=HINT
            )
        except CommandError as failed:
            # The user knows the build as `bentoml containerize` (the line shown): say it so.
            raise CommandError(
                [run.runner.mask(str(word)) for word in shown],
                failed.exit_code,
                failed.output,
                HINT,
            ) from None


@contextlib.contextmanager
def build_context(
    run: Run, bento_tag: str, buildkit: bool, scratch: Path
) -> Iterator[tuple[str, str, tuple[str, ...]]]:
    """BentoML's build context of the stored bento ``bento_tag``: a directory with the bento,
    its models copied from the store and the Dockerfile ``bentoml containerize`` generates
    (``construct_containerfile``, with or without ``buildkit`` syntax); removed afterwards.

    Also the ``--secret`` specs of the bento's ``stage: build`` environment variables, as
    BentoML makes them: each value (the build's environment first, else bentofile's) in a
    file of ``scratch`` (mode 0600), given to BuildKit by file, never on the command line."""
    import bentoml
    from bentoml._internal.container import construct_containerfile, split_envs_by_stage
    from bentoml.exceptions import BentoMLException

    try:
        stored = bentoml.get(bento_tag)
        _, build_envs = split_envs_by_stage(stored.info.envs)
        if build_envs and not buildkit:
            raise ContainerizeError(
                f"bento {bento_tag} has `stage: build` environment variables, which need "
                "BuildKit: set suite.docker_client to a client that builds with BuildKit"
            )
        secrets = tuple(_secret_file(run, env.name, env.value, scratch) for env in build_envs)
        with construct_containerfile(stored, enable_buildkit=buildkit) as made:
            context, dockerfile = made
            yield context, dockerfile, secrets
    except BentoMLException as error:
        raise ContainerizeError(
            f"BentoML could not make the build context of {bento_tag} ({error}): build the "
            "bento again (`invoke bento containerize`), or see model-cicd's "
            "docs/troubleshooting.md"
        ) from None


def _secret_file(run: Run, name: str, default: str | None, scratch: Path) -> str:
    """One ``stage: build`` variable's ``--secret id=NAME,src=FILE``, as BentoML writes it."""
    value = run.runner.child_env(None).get(name, default)
    if value is None:
        raise ContainerizeError(
            f"the bento's build needs the environment variable {name} (`stage: build` in "
            "bentofile.yaml): set it"
        )
    path = scratch / f"build-secret-{name}"
    path.touch(mode=0o600)
    path.write_text(value)
    return f"id={name},src={path}"
