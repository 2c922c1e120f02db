"""DVC steps: pull, repro, push, through DVC's own CLI."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from cicd.errors import CommandError, SuiteError
from cicd.shell import tool, tool_path

LOCK_FILE = "dvc.lock"  # where DVC records the hashes of what each stage read and wrote

if TYPE_CHECKING:
    from cicd.context import Run


def pull(run: Run, targets: Sequence[str] = ()) -> None:
    """Fetch tracked data and outputs from the DVC remote into the workspace."""
    run.runner.run(
        [tool("dvc"), "pull", *targets, *_jobs(run)],
        cwd=run.settings.root,
        retry_transient=True,
        hint="check the DVC remote (`dvc remote list`) and that it holds this commit's data",
    )


def _jobs(run: Run) -> list[str]:
    """``--jobs N`` (suite.dvc_jobs): the files of a data set travel N at a time. After the
    targets, so that the logged command still begins `dvc pull <target>`."""
    return ["--jobs", str(run.settings.dvc_jobs)]


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
    run.runner.run(command, cwd=run.settings.root, env=tool_path(), drop=NOT_SHOWN)


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
        [tool("dvc"), "push", *targets, *_jobs(run)],
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
    job here, with the reason, instead of at publish with "uncommitted changes". Outputs the
    repository marks as not byte-reproducible (suite.reproducibility.unstable_outputs) are a
    warning in CI too, when the pipeline's metrics came out as the commit records them.
    """
    runner, settings = run.runner, run.settings
    committed_lock = runner.query(["git", "show", f"HEAD:{LOCK_FILE}"], cwd=settings.root)
    lock = settings.path(Path(LOCK_FILE))
    if runner.dry or not committed_lock or not lock.is_file():
        return
    changed = sorted(
        set(unreproduced_outputs(yaml.safe_load(committed_lock), yaml.safe_load(lock.read_text())))
    )
    if not changed:
        return
    matched, differing = compare_metrics(run)
    unmarked = [path for path in changed if path not in settings.unstable_outputs]
    if not unmarked and matched and not differing:
        runner.echo(f"warning: {_unstable_message(changed, matched)}")
        return
    message = _unreproduced_message(run, changed) + _unstable_hint(unmarked, matched, differing)
    if run.in_ci:
        raise SuiteError(message)
    runner.echo(f"warning: {message}")


def _unreproduced_message(run: Run, changed: list[str]) -> str:
    runner, settings = run.runner, run.settings
    record, kernels_line = settings.blas_record, ""
    if record is not None:
        recorded = runner.query(["git", "show", f"HEAD:{record.as_posix()}"], cwd=settings.root)
        used = settings.path(record)
        kernels_line = (
            f"BLAS kernel used: {_kernels(used.read_text() if used.is_file() else None)}; "
            f"recorded in {record}: {_kernels(recorded)}. "
        )
    return (
        f"this run did not reproduce what the commit records: {', '.join(changed)} "
        "came out different from dvc.lock although code, data and params are the same. "
        f"{kernels_line}"
        "So the working tree is dirty: locally the image gets a `-dirty-` tag and CI refuses "
        "to publish it. Either take the committed outputs from the shared DVC remote "
        f"(`git checkout HEAD -- {LOCK_FILE}` and the other files `git status` lists as "
        "changed by this run, then `invoke pull`), "
        "or commit the new dvc.lock if this machine's results are the ones to keep"
    )


def _unstable_hint(unmarked: list[str], matched: list[str], differing: list[str]) -> str:
    """What the metrics say about a retrain that did not reproduce: the same results in
    other bytes (an export that is not byte-stable), or other results."""
    if differing:
        return f". The metrics differ too: {', '.join(differing)}"
    if not matched:
        return ""
    outputs = ", ".join(unmarked)
    return (
        f". The metrics reproduced ({', '.join(matched)}): if {outputs} cannot come out byte for "
        "byte (an export that stamps a random version or the time, as bentoml.keras.save_model "
        "and bentoml.models.export_model do), make its export deterministic, or list "
        f"{outputs} in suite.reproducibility.unstable_outputs (invoke.yaml): a retrain whose "
        "metrics reproduce is then a warning"
    )


def _unstable_message(changed: list[str], matched: list[str]) -> str:
    return (
        f"{', '.join(changed)} came out in other bytes than dvc.lock records, as "
        "suite.reproducibility.unstable_outputs says they do, and the metrics reproduced "
        f"({', '.join(matched)}). The working tree still differs from the commit (CI refuses "
        "to publish it; locally the image gets a `-dirty-` tag): to publish this commit, push "
        "the outputs it records from the machine that trained them (`invoke push-data`), so "
        "that CI pulls them instead of retraining"
    )


def compare_metrics(run: Run) -> tuple[list[str], list[str]]:
    """The pipeline's metrics (dvc.yaml's ``metrics`` files) as this run gave them, against the
    commit's: those that are equal (``"val_acc 0.83"``), and those that are not (their names;
    a file that is not in git or not readable is not compared and listed as such)."""
    runner, settings = run.runner, run.settings
    matched: list[str] = []
    differing: list[str] = []
    for path in metrics_files(settings.path(Path("dvc.yaml"))):
        committed = runner.query(["git", "show", f"HEAD:{path}"], cwd=settings.root)
        current = settings.path(Path(path))
        before = _flat_metrics(committed)
        after = _flat_metrics(current.read_text() if current.is_file() else None)
        if before is None or after is None:
            differing.append(f"{path} (not comparable: not in git, or not JSON/YAML)")
            continue
        for key in sorted(set(before) | set(after)):
            if key in before and key in after and before[key] == after[key]:
                matched.append(f"{key} {before[key]}")
            else:
                differing.append(key)
    return matched, differing


def metrics_files(dvc_yaml: Path) -> list[str]:
    """The ``metrics`` files of dvc.yaml's stages (a path, or ``{path: options}``)."""
    try:
        stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages") or {}
    except (OSError, yaml.YAMLError):
        return []
    files: list[str] = []
    for stage in stages.values():
        for entry in (stage or {}).get("metrics") or []:
            files.extend([entry] if isinstance(entry, str) else list(entry))
    return files


def _flat_metrics(text: str | None) -> dict[str, Any] | None:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``, from a metrics file's JSON or YAML text."""
    if text is None:
        return None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return _flatten(data) if isinstance(data, dict) else None


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


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
