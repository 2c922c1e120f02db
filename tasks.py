"""Steps of the model's CI/CD pipeline, each runnable alone (`invoke --list`, `invoke STEP --help`).

A failing CI step is debugged by running that one step here. `invoke --dry <step>` prints
every command the step would run (Docker calls through python-on-whales included) and runs
none. Settings: invoke.yaml, overridden by environment variables (README, Settings).
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from pathlib import Path

from invoke import Context, Exit, task

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "src"))  # the suite lives in src/cicd, beside the model's code

from cicd import settings as settings_module  # noqa: E402
from cicd.errors import SuiteError  # noqa: E402
from cicd.settings import Settings  # noqa: E402
from cicd.shell import Runner  # noqa: E402


def step(function=None, **task_options):
    """An invoke task whose user-fixable failures print one line and exit non-zero.

    SIGTERM (a cancelled CI job) is turned into an interruption, like Ctrl-C, so that the
    step cleans up on the way out: its commands are stopped, the smoke test's container is
    removed, the throwaway Docker config (with the registry login) is deleted.
    """

    def decorate(body):
        @functools.wraps(body)
        def wrapper(c: Context, *args, **kwargs):
            signal.signal(signal.SIGTERM, _interrupt)
            try:
                return body(c, *args, **kwargs)
            except SuiteError as error:
                raise Exit(f"error: {error}", code=error.exit_code) from None
            except KeyboardInterrupt:
                raise Exit("error: interrupted: stopped and cleaned up", code=130) from None

        return task(wrapper, **task_options)

    return decorate(function) if function else decorate


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def setup(c: Context) -> tuple[Runner, Settings]:
    """The runner (dry-run from `invoke --dry`) and the settings, read once per task."""
    settings = settings_module.from_config(ROOT, {"suite": _plain(c.config.suite)}, os.environ)
    runner = Runner(dry=bool(c.config.run.dry), command_timeout=settings.command_timeout)
    runner.add_secret(settings.registry_password)
    return runner, settings


def _plain(value):
    """invoke's config proxies -> plain dicts."""
    if hasattr(value, "keys"):
        return {key: _plain(value[key]) for key in value}
    return value


# -- data and model: DVC ---------------------------------------------------------------------


@step(help={"target": "a file or stage to pull (default: everything)"})
def pull(c, target=None):
    """dvc pull: fetch data and pipeline outputs from the DVC remote."""
    from cicd import dvc

    runner, settings = setup(c)
    dvc.pull(runner, settings, [target] if target else [])


@step(help={"no_pull": "do not pull unchanged outputs first", "force": "rerun every stage"})
def repro(c, no_pull=False, force=False):
    """dvc repro --pull: run the pipeline, taking unchanged stages' outputs from the remote."""
    from cicd import dvc

    runner, settings = setup(c)
    dvc.repro(runner, settings, pull_first=not no_pull, force=force)


@step(help={"target": "a file or stage to push (default: everything)"})
def push_data(c, target=None):
    """dvc push: send data and pipeline outputs to the DVC remote."""
    from cicd import dvc

    runner, settings = setup(c)
    dvc.push(runner, settings, [target] if target else [])


@step(
    help={
        "push": "always push outputs to the DVC remote",
        "no_push": "never push them",
        "no_pull": "do not pull from the DVC remote (CI without its credentials: pull requests)",
    }
)
def train(c, push=False, no_push=False, no_pull=False):
    """repro, then push-data when CI builds the base branch: the `nox -s train` session."""
    from cicd import ci, dvc

    runner, settings = setup(c)
    dvc.repro(runner, settings, pull_first=not no_pull)
    dvc.check_reproduced(runner, settings, in_ci=ci.in_ci(os.environ))
    if push or (not no_push and ci.builds_base_branch(runner, settings, os.environ)):
        dvc.push(runner, settings)
    else:
        runner.echo(
            "outputs not pushed to the DVC remote: only CI on the base branch does (--push)"
        )


# -- bento and image: BentoML, Docker --------------------------------------------------------


@step
def import_model(c):
    """bentoml models import of the .bentomodel; a model already in the store is fine."""
    from cicd import bento

    runner, settings = setup(c)
    bento.import_model(runner, settings)


@step
def bento(c):
    """bentoml build from bentofile.yaml serving the workspace's model, versioned by the commit."""
    from cicd import bento as bentos
    from cicd import ci

    runner, settings = setup(c)
    model = bentos.archived_model(runner, settings)
    bentos.build_bento(runner, settings, ci.revision(runner, ROOT, os.environ).tag, model)


@step
def containerize(c):
    """bentoml containerize the commit's bento: <registry>/<image>:<sha> and :latest, labelled."""
    from cicd import bento as bentos
    from cicd import image, publish

    runner, settings = setup(c)
    goal = publish.target(runner, settings, os.environ)
    client = publish.docker_client(runner, settings)
    labels = image.labels(settings, goal.revision, goal.model)
    bento_tag = bentos.bento_tag(settings, goal.revision.tag)
    image.containerize(runner, settings, client, bento_tag, goal.tags, labels)


@step
def build(c):
    """import-model + bento + containerize: the image of this commit, built locally."""
    from cicd import publish

    runner, settings = setup(c)
    goal = publish.target(runner, settings, os.environ)
    built = publish.build(runner, settings, publish.docker_client(runner, settings), goal)
    runner.echo(f"built {', '.join(built.tags)} ({built.id})")


@step(help={"image": "image to test (default: this commit's tag)"})
def smoke(c, image=None):
    """Run the image on 127.0.0.1, POST a sample image, compare with the local model's answer."""
    from cicd import publish
    from cicd import smoke as smoke_test

    runner, settings = setup(c)
    goal = publish.target(runner, settings, os.environ)
    client = publish.docker_client(runner, settings)
    publish.pull_if_missing(runner, settings, settings.smoke_image)
    expected = publish.expected_answer(runner, settings)
    smoke_test.smoke_test(runner, settings, client, image or goal.tags[0], expected)


@step
def login(c):
    """Log in to the registry (password through stdin, throwaway config dir), then log out."""
    from cicd import image, publish
    from cicd.registry import credentials

    runner, settings = setup(c)
    if credentials(settings) is None:
        runner.echo(f"no credentials set for {settings.registry_host}: nothing to log in to")
        return
    with image.logged_in(runner, settings, publish.docker_client(runner, settings)):
        runner.echo(f"logged in to {settings.registry_host}")


@step
def push(c):
    """Push this commit's image (SHA tag, then latest) and verify both tags in the registry."""
    from cicd import image, publish

    runner, settings = setup(c)
    goal = publish.target(runner, settings, os.environ)
    client = publish.docker_client(runner, settings)
    local = image.local_image(runner, client, goal.tags)
    digest = image.push(runner, settings, client, local)
    runner.echo(f"pushed {', '.join(goal.tags)} ({digest})")


@step(help={"force": "rebuild and push even if the registry has this commit's image"})
def publish(c, force=False):
    """Pull the model if missing, build, smoke-test, push: the `nox -s publish` session.

    Skips building and pushing when the registry already holds this commit's image with the
    same model digest.
    """
    from cicd import publish as publishing

    runner, settings = setup(c)
    publishing.publish(runner, settings, os.environ, force=force)


# -- development helpers -----------------------------------------------------------------------


@step(help={"stop": "stop the registry this task started", "status": "only say if it is up"})
def registry(c, stop=False, status=False):
    """Start (or --stop) the embedded local registry, the default publishing target."""
    from cicd import local_registry
    from cicd.context import Run

    runner, settings = setup(c)
    run = Run(runner, settings, os.environ)
    if status:
        up = local_registry.is_up(run)
        runner.echo(f"{settings.local_registry.address}: {'up' if up else 'down'}")
    elif stop:
        local_registry.stop(run)
    else:
        local_registry.ensure_running(run)


@step(help={"port": "port on 127.0.0.1 (default 3000)"})
def serve(c, port=3000):
    """bentoml serve the workspace's model locally with reload, for development."""
    from cicd import bento as bentos

    runner, settings = setup(c)
    model = bentos.import_model(runner, settings)
    bentos.serve(runner, settings, model, int(port))


@step(
    help={
        "base": "branch to compare with (default: main)",
        "publish": "post the report even outside CI",
        "no_publish": "do not post it, even in CI",
    }
)
def report(c, base=None, publish=False, no_publish=False):
    """Params, metrics and plots of the workspace against the base branch -> report.md.

    In CI it is also posted (job summary, one pull-request comment kept up to date).
    """
    from cicd import ci, forge
    from cicd import report as reports

    runner, settings = setup(c)
    sha = ci.ci_sha(os.environ)
    path = reports.write_report(runner, ROOT, base=base or settings.base_branch, sha=sha)
    if publish or (not no_publish and ci.in_ci(os.environ)):
        posted = forge.publish_report(runner, path, os.environ, settings.network_timeout)
        runner.echo(posted)


@step
def freeze(c):
    """Regenerate requirements-freeze.txt from requirements.txt (uv pip compile)."""
    runner, _ = setup(c)
    runner.run(
        [
            "uv",
            "pip",
            "compile",
            "--quiet",
            "--python-version",
            "3.11",
            "--no-header",
            "--no-annotate",
            "requirements.txt",
            "-o",
            "requirements-freeze.txt",
        ],
        cwd=ROOT,
    )
