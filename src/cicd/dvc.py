"""DVC steps: pull, repro, push, through DVC's own CLI."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from cicd.errors import CommandError, SuiteError
from cicd.shell import tool

LOCK_FILE = "dvc.lock"  # where DVC records the hashes of what each stage read and wrote

if TYPE_CHECKING:
    from cicd.context import Run


def pull(run: Run, targets: Sequence[str] = ()) -> None:
    """Fetch tracked data and outputs from the DVC remote into the workspace."""
    run.runner.run(
        [tool("dvc"), "pull", *targets],
        cwd=run.settings.root,
        retry_transient=True,
        hint="check the DVC remote (`dvc remote list`) and that it holds this commit's data",
    )


def pull_if_missing(run: Run, path: Path) -> None:
    """Fetch one pipeline output from the DVC remote if the workspace lacks it (fresh CI clone)."""
    if run.settings.path(path).exists():
        return
    run.runner.echo(f"{path} is not in the workspace: pulling it from the DVC remote")
    try:
        pull(run, [str(path)])
    except CommandError as error:
        raise SuiteError(
            f"{path} is neither in the workspace nor in the DVC remote: run `nox -s train` "
            "(or `invoke repro`) to make it, and `invoke push-data` to share it"
        ) from error


# DVC's own advice that the suite contradicts or answers itself: "Use `dvc push`" (the
# push-data step decides that), and `repro --pull`'s warning listing each output the remote
# lacks (why repro runs that stage). Not shown; kept in a failure's output.
NOT_SHOWN = re.compile(r"Use `dvc push` to send|cache files do not exist|^name: \S+, \w+: ")


def repro(run: Run, pull_first: bool = True, force: bool = False) -> None:
    """Run the pipeline; with ``pull_first`` take unchanged stages' outputs from the remote."""
    command = [tool("dvc"), "repro"]
    if pull_first:
        command.append("--pull")
    if force:
        command.append("--force")
    run.runner.run(command, cwd=run.settings.root, drop=NOT_SHOWN)


def push(run: Run, targets: Sequence[str] = (), when_base_branch: bool = False) -> None:
    """Send the pipeline's outputs to the DVC remote so that CI and other clones can pull.

    ``when_base_branch``: only when CI builds the base branch (the train session's rule:
    pull requests and laptops do not share what they trained)."""
    if when_base_branch and not run.builds_base_branch:
        run.runner.echo(
            "outputs not pushed to the DVC remote: only CI on the base branch does "
            "(`invoke push-data` pushes them)"
        )
        return
    run.runner.run(
        [tool("dvc"), "push", *targets],
        cwd=run.settings.root,
        retry_transient=True,
        hint="check the DVC remote (`dvc remote list`) and its credentials",
    )


# -- did a retrain reproduce what the commit records? -----------------------------------------


def unreproduced_outputs(committed: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Outputs of stages that ran on the same code, data and params as ``committed`` records,
    yet came out different: the computation itself did not reproduce (CPU, library versions).

    ``committed`` and ``current`` are parsed ``dvc.lock`` files. A stage whose inputs changed
    (an edited param, new code) is expected to give new outputs and is not listed.
    """
    before = committed.get("stages", {}) or {}
    after = current.get("stages", {}) or {}
    changed = []
    for name, stage in after.items():
        old = before.get(name)
        if not old or _inputs(old) != _inputs(stage):
            continue
        old_outs = {out["path"]: _content(out) for out in old.get("outs", [])}
        for out in stage.get("outs", []):
            if out["path"] in old_outs and old_outs[out["path"]] != _content(out):
                changed.append(out["path"])
    return changed


def _inputs(stage: Mapping[str, Any]) -> tuple[Any, ...]:
    deps = sorted((dep["path"], _content(dep)) for dep in stage.get("deps", []))
    return stage.get("cmd"), deps, repr(stage.get("params"))


def _content(entry: Mapping[str, Any]) -> str | None:
    return entry.get("md5") or entry.get("etag") or entry.get("checksum")


def check_reproduced(run: Run) -> None:
    """Say in plain words when the pipeline did not reproduce the committed ``dvc.lock``.

    Locally that is a warning (the image would get a ``-dirty-`` tag); in CI it stops the
    job here, with the reason, instead of at publish with "uncommitted changes".
    """
    runner, settings = run.runner, run.settings
    committed_lock = runner.query(["git", "show", f"HEAD:{LOCK_FILE}"], cwd=settings.root)
    lock = settings.path(Path(LOCK_FILE))
    if runner.dry or not committed_lock or not lock.is_file():
        return
    changed = unreproduced_outputs(yaml.safe_load(committed_lock), yaml.safe_load(lock.read_text()))
    if not changed:
        return
    record, kernels_line = settings.blas_record, ""
    if record is not None:
        recorded = runner.query(["git", "show", f"HEAD:{record.as_posix()}"], cwd=settings.root)
        used = settings.path(record)
        kernels_line = (
            f"BLAS kernel used: {_kernels(used.read_text() if used.is_file() else None)}; "
            f"recorded in {record}: {_kernels(recorded)}. "
        )
    message = (
        f"this run did not reproduce what the commit records: {', '.join(sorted(set(changed)))} "
        "came out different from dvc.lock although code, data and params are the same. "
        f"{kernels_line}"
        "So the working tree is dirty: locally the image gets a `-dirty-` tag and CI refuses "
        "to publish it. Either take the committed outputs from the shared DVC remote "
        f"(`git checkout HEAD -- {LOCK_FILE}` and the other files `git status` lists as "
        "changed by this run, then `invoke pull`), "
        "or commit the new dvc.lock if this machine's results are the ones to keep"
    )
    if run.in_ci:
        raise SuiteError(message)
    runner.echo(f"warning: {message}")


def _kernels(record_text: str | None) -> str:
    """The BLAS kernels a record names (suite.reproducibility.blas_record): threadpoolctl's
    info, ``{"libraries": [{"kernel": ...}, ...]}``, one kernel per library."""
    if not record_text:
        return "unknown"
    try:
        libraries = json.loads(record_text)["libraries"]
        return ", ".join(sorted({str(library["kernel"]) for library in libraries})) or "none"
    except (ValueError, KeyError, TypeError):
        return "unreadable"
