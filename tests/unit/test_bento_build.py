"""cicd.bento_build: BentoML's build in the suite's process, as `bentoml build` would make it,
leaving the process as it found it.

A tiny service in a temporary build context (no model, no package lock: no network), built
into a temporary BentoML store. The service does at import what a real one may: it sets an
environment variable, logs through BentoML's logger, prints and warns. After a build, good or
failed, ``sys.path``, the working directory, ``os.environ``, ``sys.modules``, the ``bentoml``
logger, the warnings filters and BentoML's configuration and arguments are as they were, and
nothing reached this process's stdout or stderr; with ``show`` BentoML's output goes there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cicd.bento import check_bento_name
from cicd.bento_build import build
from cicd.errors import BentoBuildFailed, SuiteError

MODULE = "tiny_service_under_test"
HINT = "Check bentofile.yaml"
BENTOFILE = {
    "service": f"{MODULE}:Echo",
    "include": [f"{MODULE}.py"],
    # No lock: `uv pip compile` would ask the package index (the lock is the real
    # project's integration test's business).
    "python": {"packages": [], "lock_packages": False},
}
SERVICE = """
import json, logging, os, warnings
from pathlib import Path
import bentoml

# What a service may do at import: each must stay inside the build.
os.environ["TINY_SERVICE_IMPORTED"] = "1"
logging.getLogger("bentoml").warning("tiny service imported")
print("printed at import")
warnings.warn("a warning at import")
Path(os.environ["TINY_REPORT"]).write_text(json.dumps({
    "environ": dict(os.environ), "cwd": os.getcwd(), "args": vars(bentoml.use_arguments()),
}))

@bentoml.service(name=NAME)
class Echo:
    @bentoml.api
    def echo(self, text: str) -> str:
        return text
"""


@pytest.fixture()
def store(tmp_path) -> Iterator[Path]:
    """A BentoML store of its own, for BentoML in this process (it caches its home and stores
    at first use: the providers are set, and reset after)."""
    from bentoml._internal.bento import BentoStore
    from bentoml._internal.configuration.containers import BentoMLContainer

    home = tmp_path / "bentoml"
    for folder in ("models", "bentos", "envs", "tmp"):
        (home / folder).mkdir(parents=True)
    container = BentoMLContainer
    with contextlib.ExitStack() as undo:
        for provider, value in (
            (container.bentoml_home, str(home)),
            (container.bento_store_dir, str(home / "bentos")),
            (container.tmp_bento_store_dir, str(home / "tmp")),
            (container.bento_store, BentoStore(str(home / "bentos"))),
        ):
            provider.set(value)
            undo.callback(provider.reset)
        yield home


def project(root: Path, service: str = SERVICE, name: str = "echo_service") -> Path:
    """A repository: bentofile.yaml at ``root``, the service in ``root/src``."""
    (root / "src").mkdir(parents=True, exist_ok=True)
    (root / "bentofile.yaml").write_text(yaml.safe_dump(BENTOFILE))
    (root / "src" / f"{MODULE}.py").write_text(f"NAME = {name!r}\n" + service)
    return root


def built(root: Path, report: Path, show=None, version: str = "v1") -> tuple[str, str]:
    return build(
        bentofile=Path("bentofile.yaml"),
        build_context=Path("src"),
        version=version,
        args={"model_tag": "tiny_model:v1"},
        cwd=root,
        # the environment a `bentoml build` child gets: the caller's, less its secrets
        env={
            **{k: v for k, v in os.environ.items() if k != "CONTAINER_REGISTRY_PASSWORD"},
            "BENTOML_DO_NOT_TRACK": "True",
            "TINY_REPORT": str(report),
        },
        show=show,
        hint=HINT,
    )


def process_state() -> dict:
    from bentoml._internal.configuration.containers import BentoMLContainer

    logger = logging.getLogger("bentoml")
    return {
        "sys.path": list(sys.path),
        "cwd": os.getcwd(),
        "environ": dict(os.environ),
        "modules": sorted(name for name in sys.modules if name.startswith(MODULE)),
        "logger": (logger.level, logger.propagate, logger.disabled, list(logger.handlers)),
        "warnings": list(warnings.filters),
        "stdout": (sys.stdout, sys.stderr),
        "config": id(BentoMLContainer.config.get()),
        "arguments": dict(BentoMLContainer.bento_arguments.get()),
        "aliases": dict(BentoMLContainer.model_aliases.get()),
    }


@pytest.fixture()
def secret(monkeypatch):
    monkeypatch.setenv("CONTAINER_REGISTRY_PASSWORD", "not-for-the-service")


def test_the_bento_is_built_and_the_process_is_left_as_it_was(store, tmp_path, capfd, secret):
    root = project(tmp_path / "repo")
    report = tmp_path / "report.json"
    before = process_state()

    assert built(root, report) == ("echo_service", "v1")

    assert process_state() == before
    assert capfd.readouterr() == ("", "")  # quiet: BentoML's log, prints and warnings
    info = yaml.safe_load((store / "bentos" / "echo_service" / "v1" / "bento.yaml").read_text())
    assert info["args"] == {"model_tag": "tiny_model:v1"}  # what `--arg` records
    assert (store / "bentos" / "echo_service" / "v1" / "src" / f"{MODULE}.py").is_file()
    seen = json.loads(report.read_text())
    # The service saw the command's environment and working directory, not the suite's.
    assert seen["environ"]["BENTOML_DO_NOT_TRACK"] == "True"
    assert "CONTAINER_REGISTRY_PASSWORD" not in seen["environ"]
    assert seen["cwd"] == str((root / "src").resolve())
    assert seen["args"] == {"model_tag": "tiny_model:v1"}


def test_show_gets_what_bentoml_and_the_service_say(store, tmp_path, capfd):
    root = project(tmp_path / "repo")
    lines: list[str] = []

    built(root, tmp_path / "report.json", show=lines.append)

    assert "WARNING: tiny service imported" in lines
    assert "printed at import" in lines
    assert "warning: UserWarning: a warning at import" in lines
    assert capfd.readouterr() == ("", "")


def test_a_second_build_imports_the_service_afresh(store, tmp_path):
    # As a new `bentoml build` process would: the first build's module is not reused.
    root = project(tmp_path / "repo")
    assert built(root, tmp_path / "report.json", version="v1")[0] == "echo_service"
    project(root, name="renamed_service")
    assert built(root, tmp_path / "report.json", version="v2")[0] == "renamed_service"


@pytest.mark.parametrize(
    ("service", "bentofile", "says"),
    [
        ("raise RuntimeError('no model here')\n" + SERVICE, None, "RuntimeError: no model here"),
        ("def broken(:\n" + SERVICE, None, "SyntaxError: "),
        ("import not_a_module_anywhere\n" + SERVICE, None, "not_a_module_anywhere"),
        (SERVICE, "service: [unclosed", "bentoml build failed: "),
        (SERVICE, "service: 'tiny_service_under_test:Nothing'\n", "Nothing"),
    ],
    ids=["raises", "syntax", "missing-import", "bad-yaml", "no-such-service"],
)
def test_a_failed_build_is_one_line_and_leaves_the_process_as_it_was(
    store, tmp_path, capfd, service, bentofile, says
):
    root = project(tmp_path / "repo", service=service)
    if bentofile is not None:
        (root / "bentofile.yaml").write_text(bentofile)
    before = process_state()

    with pytest.raises(BentoBuildFailed) as failed:
        built(root, tmp_path / "report.json")

    message = str(failed.value)
    assert says in message and message.endswith(HINT) and "\n" not in message
    assert isinstance(failed.value, SuiteError)
    assert process_state() == before
    assert capfd.readouterr() == ("", "")


def test_a_service_that_names_itself_is_one_line_saying_what_to_add(store, tmp_path):
    # `@bentoml.service(name=...)` names the bento; the suite expected the class's name.
    root = project(tmp_path / "repo", name="its_own_name")
    name, version = built(root, tmp_path / "report.json")
    with pytest.raises(BentoBuildFailed, match=r"add `name: its_own_name` to bentofile.yaml"):
        check_bento_name(name, f"echo:{version}", "bentofile.yaml")
    check_bento_name(name, f"its_own_name:{version}", "bentofile.yaml")  # as expected
