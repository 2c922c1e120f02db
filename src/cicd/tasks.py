"""Steps of the model's CI/CD pipeline, each runnable alone (`invoke --list`, `invoke STEP --help`).

A failing CI step is debugged by running that one step here. `invoke --dry <step>` prints
every command the step would run (Docker calls through python-on-whales included) and runs
none. Settings: invoke.yaml, overridden by environment variables (docs/settings.md).

A model repository's own ``tasks.py`` exposes these steps, the way pyinvoke's
``invocations`` are reused: ``from cicd.tasks import namespace; ns = namespace()`` (then
``ns.add_task(...)`` for its own tasks). The project is the directory of that ``tasks.py``,
where invoke also finds the project's ``invoke.yaml`` (:func:`project_root`).
"""

from __future__ import annotations

import datetime
import functools
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoke import Collection, Context, Exit, task

from cicd.errors import SuiteError

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

    from cicd.context import Run
    from cicd.settings import Settings


def step(function: Callable[..., Any] | None = None, **task_options: Any) -> Any:
    """An invoke task that says in one line how it went, and whose user-fixable failures
    print one line and exit non-zero.

    Quiet by default: per step ``✓ name  result (seconds)`` (the body returns its one-line
    result), warnings and errors; ``invoke -e`` (or suite.verbose) shows the commands and
    the tools' output too (:mod:`cicd.steps`).

    SIGTERM (a cancelled CI job) is turned into an interruption, like Ctrl-C, so that the
    step cleans up on the way out: its commands are stopped, the smoke test's container is
    removed, the throwaway Docker config (with the registry login) is deleted.
    """

    def decorate(body: Callable[..., Any]) -> Any:
        @functools.wraps(body)
        def wrapper(c: Context, *args: Any, **kwargs: Any) -> Any:
            from cicd import steps

            signal.signal(signal.SIGTERM, _interrupt)
            name = body.__name__.replace("_", "-")
            try:
                return steps.run_step(c, name, lambda: body(c, *args, **kwargs), STEPS_DONE)
            except SuiteError as error:
                raise Exit(f"error: {error}", code=error.exit_code) from None
            except KeyboardInterrupt:
                raise Exit("error: interrupted: stopped and cleaned up", code=130) from None

        return task(wrapper, **task_options)

    return decorate(function) if function else decorate


# The steps this invoke run has finished and their seconds: a session runs several in one
# process (noxfile.py), and the summaries of a publish (CI's, the terminal's) list them.
STEPS_DONE: list[tuple[str, float]] = []
PROCESS_STARTED = datetime.datetime.now(datetime.UTC)  # the session's start, for provenance


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def setup(c: Context) -> Run:
    """The run context of a task: dry run from `invoke --dry`, settings, environment.

    Each task imports the suite module it calls inside its body, by the module's name (which
    may be the task's own: `bento` calls `bento.build_bento`): `invoke --list` imports none."""
    from cicd.context import Run  # here: `invoke --list` stays fast without its imports
    from cicd.steps import RUNS, run_options

    config = {"suite": _plain(c.config.suite)}
    run = Run.create(
        project_root(c), config, os.environ, dry=bool(c.config.run.dry), **run_options(c)
    )
    RUNS.append(run)  # the step's lines go where its runner prints
    return run


def project_root(c: Context) -> Path:
    """The model repository: where invoke found the project's tasks.py, the directory whose
    invoke.yaml it loaded (not this package's directory); the current directory when the
    tasks run without invoke's program (a Context made by hand)."""
    prefix = getattr(c.config, "_project_prefix", None)
    return Path(prefix).resolve() if prefix else Path.cwd().resolve()


def _plain(value: Any) -> Any:
    """invoke's config proxies -> plain dicts."""
    if hasattr(value, "keys"):
        return {key: _plain(value[key]) for key in value}
    return value


# -- data and model: DVC ---------------------------------------------------------------------


@step(help={"target": "a file or stage to pull (default: everything)"})
def pull(c: Context, target: str | None = None) -> None:
    """dvc pull: fetch data and pipeline outputs from the DVC remote."""
    from cicd import dvc

    dvc.pull(setup(c), [target] if target else [])


@step(help={"no_pull": "do not pull unchanged outputs first", "force": "rerun every stage"})
def repro(c: Context, no_pull: bool = False, force: bool = False) -> None:
    """dvc repro --pull: run the pipeline, taking unchanged stages' outputs from the remote."""
    from cicd import dvc

    dvc.repro(setup(c), pull_first=not no_pull, force=force)


@step(
    help={
        "target": "a file or stage to push (default: everything)",
        "when_base_branch": "only when CI builds the base branch (the train session's rule)",
    }
)
def push_data(c: Context, target: str | None = None, when_base_branch: bool = False) -> None:
    """dvc push: send data and pipeline outputs to the DVC remote."""
    from cicd import dvc

    dvc.push(setup(c), [target] if target else [], when_base_branch=when_base_branch)


@step
def check_reproduced(c: Context) -> None:
    """Say what did not come out as dvc.lock records (a warning; in CI, an error)."""
    from cicd import dvc

    dvc.check_reproduced(setup(c))


# -- bento and image: BentoML, Docker --------------------------------------------------------


@step
def import_model(c: Context) -> str:
    """bentoml models import of the .bentomodel; a model already in the store is fine."""
    from cicd import bento

    return bento.import_model(setup(c)).tag


@step
def bento(c: Context) -> str:
    """bentoml build from bentofile.yaml serving the workspace's model, versioned by the commit."""
    from cicd import bento
    from cicd.console import short_reference

    return short_reference(bento.build_bento(setup(c)))


@step
def containerize(c: Context) -> str:
    """bentoml containerize the commit's bento: <registry>/<image>:<sha> and :latest, labelled."""
    from cicd import console
    from cicd.containerize import containerize_stored

    return console.short_reference(containerize_stored(setup(c)).references[0])


@step
def build(c: Context) -> str:
    """import-model + bento + containerize: the image of this commit, built locally."""
    from cicd import console, publish

    return console.short_reference(publish.build(setup(c)).references[0])


@step(
    help={
        "image": "image to test (default: this commit's tag)",
        "draft_attestations": "meanwhile make this commit's image's SBOM and provenance, "
        "for attest to sign after the push (the publish session)",
    }
)
def smoke(c: Context, image: str | None = None, draft_attestations: bool = False) -> str:
    """Run the image on 127.0.0.1, send it the smoke request, check its answer (suite.smoke)."""
    from cicd import publish, smoke

    run = setup(c)
    if image is not None:
        answer = smoke.smoke_test(run, image)
    else:
        answer = publish.smoke_test(run, PROCESS_STARTED if draft_attestations else None)
    return smoke.result_line(run.settings, answer) if answer is not None else ""


@step
def login(c: Context) -> None:
    """Log in to the registry (password through stdin, throwaway config dir), then log out."""
    from cicd import image

    image.login(setup(c))


@step
def push(c: Context) -> str:
    """Push this commit's image under its SHA tag (login, push, logout) and check it in the
    registry; attest then signs it and moves latest."""
    from cicd import console, publish, steps

    result = publish.push(setup(c), earlier_steps=STEPS_DONE)
    if result is None:  # a dry run
        return ""
    steps.PUBLISHED.append(result)
    return console.short_digest(result.digest)


@step
def attest(c: Context) -> str:
    """Attach the SBOM and provenance of the image this workspace built and pushed, signed.

    Signs only the digest that push recorded, and only while the local image under this
    commit's tag is that image (built and smoke-tested here); anything else is refused in
    one line. CycloneDX SBOM of the image's packages, and SLSA provenance: commit, params, dvc.lock
    output hashes, metrics, model, base image, tool versions. Each is an in-toto statement
    in a DSSE envelope, stored next to the image (sha256-<digest>.sbom / .att, or the
    referrers API). Without SIGNING_KEY they are attached unsigned, with a warning. Then
    latest moves to the image (never back in time: only a signed image of a later commit
    keeps it), last, so that a concurrent older publish finds this image signed.
    """
    from cicd import attestation_draft, attestations, image, publish, steps

    run = setup(c)
    draft = attestation_draft.take()  # made during the smoke test (smoke --draft-attestations)
    pushed = attestations.attest(run, image.target(run), started=PROCESS_STARTED, draft=draft)
    publish.move_tags(run, pushed)
    return "" if run.dry else steps.signed(run)


@step(
    help={
        "image": "image reference host/repository:tag (default: this commit's image)",
        "key": "PEM public key to check signatures with (default: every signing/*.pub)",
        "allow_unsigned": "accept unsigned attestations, only where no public key was ever "
        "committed (says loudly that nothing was signature-checked)",
        "json": "print the checks as JSON",
        "revision": "the commit the image must be of (default: a SHA tag's, else this one)",
    }
)
def verify(
    c: Context,
    image: str | None = None,
    key: str | None = None,
    allow_unsigned: bool = False,
    json: bool = False,
    revision: str | None = None,
) -> None:
    """Check an image's signed SBOM and provenance against the image, the key and dvc.lock.

    One line per check: image digest, attestations attached, signatures (any committed
    public key; the line names which), statement subjects, the model.digest label, the
    commit, this commit's dvc.lock output hashes, the model archive against them, the SBOM.
    Exits non-zero at the first failure.
    """
    from cicd import verify

    run = setup(c)
    run.runner.out = sys.stderr  # stdout: the checks (lines or JSON); stderr: the requests
    key_path = Path(key) if key else None
    verify.verify(run, image, key_path, allow_unsigned, as_json=json, revision=revision)


@step(help={"private_key": "where to write the new private key (outside the repository)"})
def keygen(c: Context, private_key: str | None = None) -> None:
    """Make an ed25519 signing key pair: the public key goes to signing/ beside the others.

    The first key is signing/publish.pub; a new one (rotation) is signing/publish-<key id>.pub
    and the earlier keys stay trusted, so earlier releases still verify; delete a key's file
    to revoke it. The private key is written (mode 0600) to --private-key FILE, never
    printed: store its content as the CI secret SIGNING_KEY, then delete the file. Commit the
    public key.
    """
    from cicd import signing

    signing.keygen(setup(c), Path(private_key) if private_key else None)


@step(
    help={
        "force": "go on to build and push even if the registry has this commit's image",
        "no_gates": "skip the metric gates (gates.yaml): printed loudly",
    }
)
def check_published(c: Context, force: bool = False, no_gates: bool = False) -> str:
    """End this run here (exit 0) when the registry has this commit's image with this model,
    proven by a provenance signed by a trusted key (labels alone prove nothing).

    The first step of `nox -s publish`: first the model's absolute metric gates (gates.yaml),
    then the registry; the steps after it (build, smoke test, push) run only when the image
    is missing or its model changed. Starts the embedded registry if needed.
    """
    from cicd import publish, steps

    found = publish.check_published(setup(c), force=force, gates=not no_gates)
    if found:
        steps.PUBLISHED.append(found)
        raise Exit(code=0)  # the rest of this invoke run is skipped, successfully
    return "not published yet: building it"


@step(help={"no_gates": "skip them (printed loudly): for symmetry with the sessions"})
def check_gates(c: Context, no_gates: bool = False) -> None:
    """Check the model's metrics (evaluation/metrics.json) against gates.yaml's absolute bounds.

    What `nox -s publish` checks first (check-published); `invoke report` also checks the
    bounds relative to the base branch.
    """
    from cicd import publish

    publish.check_gates(setup(c), enabled=not no_gates)


# -- releases: what runs where, moved by digest --------------------------------------------


@step(help={"json": "print JSON (every field, full digests) instead of the table"})
def releases(c: Context, json: bool = False) -> None:
    """The images in the registry, newest first: revision, model, metrics, digest, size, tags.

    Read from the registry API (tags, manifests, config blobs): nothing is pulled.
    """
    from cicd import releases

    run = setup(c)
    run.runner.out = sys.stderr  # stdout: the table or the JSON; stderr: the requests (-e)
    releases.show_releases(run, releases.list_releases(run), as_json=json)


@step(
    help={
        "to": "the environment tag to move, e.g. staging or production (not latest, not a SHA)",
        "revision": "the published commit to point it at (default: this commit)",
        "digest": "the image digest to point it at (sha256:...: what publish printed)",
        "json": "print what moved as JSON",
    }
)
def promote(
    c: Context,
    to: str | None = None,
    revision: str | None = None,
    digest: str | None = None,
    json: bool = False,
) -> None:
    """Point an environment tag at an image by digest (a manifest PUT), verified first.

    --digest, or a revision resolved once to its digest. verify's checks run on that digest
    first (signed provenance, subject, model, commit); a failure moves nothing. No pull, no
    rebuild, no layer upload; the move is recorded in the registry (<TAG>.history), signed
    with SIGNING_KEY (required), for `invoke rollback`.
    """
    from cicd import releases

    run = _json_run(c, json)
    releases.show_move(run, releases.promote(run, to, revision, digest=digest), as_json=json)


@step(
    help={
        "tag": "the environment tag to move back, e.g. production",
        "to": "the published commit to go to (default: the promotion before the current one)",
        "json": "print what moved as JSON",
    }
)
def rollback(c: Context, tag: str | None = None, to: str | None = None, json: bool = False) -> None:
    """Move an environment tag back to the promotion before the current one (or --to REV).

    A second rollback steps further back, never forward again. The tag's history is read
    from the registry (<TAG>.history), so any clone can roll back, and followed only when it
    is signed by a trusted key; the same checks as promote apply (SIGNING_KEY included), and
    the move is a manifest PUT.
    """
    from cicd import releases

    run = _json_run(c, json)
    releases.show_move(run, releases.rollback(run, tag, to), as_json=json)


def _json_run(c: Context, as_json: bool) -> Run:
    """The run context; with ``--json`` the shown requests go to stderr: stdout is the JSON."""
    run = setup(c)
    if as_json:
        run.runner.out = sys.stderr
    return run


# -- development helpers -----------------------------------------------------------------------


@step(help={"stop": "stop the registry this task started", "status": "only say if it is up"})
def registry(c: Context, stop: bool = False, status: bool = False) -> None:
    """Start (or --stop) the embedded local registry, the default publishing target."""
    from cicd import local_registry

    run = setup(c)
    runner, settings = run.runner, run.settings
    if status:
        runner.out = sys.stderr  # stdout: the answer alone, for scripts
        up = local_registry.is_up(run)
        print(f"{settings.local_registry.address}: {'up' if up else 'down'}")
    elif stop:
        local_registry.stop(run)
    else:
        local_registry.ensure_running(run)


@step(help={"port": "port on 127.0.0.1 (default 3000)"})
def serve(c: Context, port: int = 3000) -> None:
    """bentoml serve the workspace's model locally with reload, for development."""
    from cicd import bento

    bento.serve(setup(c), int(port))


@step(
    help={
        "base": "branch to compare with (default: main)",
        "publish": "post the report even outside CI",
        "no_publish": "do not post it, even in CI",
        "no_gates": "do not check the metric gates (gates.yaml): printed loudly",
    }
)
def report(
    c: Context,
    base: str | None = None,
    publish: bool = False,
    no_publish: bool = False,
    no_gates: bool = False,
) -> None:
    """Params, metrics, metric gates and plots of the workspace against the base branch.

    Writes report.md; in CI it is also posted (job summary, one pull-request comment kept up
    to date). Exits non-zero when a metric gate (gates.yaml) fails, after writing and posting.
    """
    from cicd import report

    report.report(setup(c), base, post=_choice(publish, no_publish), gates=not no_gates)


@step
def freeze(c: Context) -> None:
    """Regenerate requirements-freeze.txt from suite.freeze_inputs (uv pip compile)."""
    run = setup(c)
    run.runner.run(freeze_command(run.settings), cwd=project_root(c))


def freeze_command(settings: Settings) -> list[str]:
    """uv pip compile of the requirements files that list the pipeline (suite.freeze_inputs:
    an existing repository's requirements-cicd.txt holds the suite and includes its own
    requirements.txt), so that the frozen file the sessions install has the suite too."""
    missing = [str(p) for p in settings.freeze_inputs if not settings.path(p).is_file()]
    if missing:
        raise SuiteError(
            f"no {', '.join(missing)} to freeze: set suite.freeze_inputs in invoke.yaml to "
            "the requirements files your nox sessions install (the suite among them)"
        )
    return [
        "uv",
        "pip",
        "compile",
        "--quiet",
        "--python-version",
        "3.11",
        "--no-header",
        "--no-annotate",
        *(str(p) for p in settings.freeze_inputs),
        "-o",
        "requirements-freeze.txt",
    ]


def _choice(yes: bool, no: bool) -> bool | None:
    """``--x`` -> True, ``--no-x`` -> False, neither -> None (the step decides)."""
    return True if yes else (False if no else None)


def namespace() -> Collection:
    """A new collection of every step, for a model repository's tasks.py (``ns = namespace()``;
    ``ns.add_task(...)`` adds the repository's own tasks to it)."""
    return Collection.from_module(sys.modules[__name__])
