"""DVC steps: pull, repro, push, through DVC's own CLI."""

from __future__ import annotations

from collections.abc import Sequence

from cicd.settings import Settings
from cicd.shell import Runner, tool


def pull(runner: Runner, settings: Settings, targets: Sequence[str] = ()) -> None:
    """Fetch tracked data and outputs from the DVC remote into the workspace."""
    runner.run(
        [tool("dvc"), "pull", *targets],
        cwd=settings.root,
        hint="check the DVC remote (`dvc remote list`) and that it holds this commit's data",
    )


def repro(runner: Runner, settings: Settings, pull_first: bool = True, force: bool = False) -> None:
    """Run the pipeline; with ``pull_first`` take unchanged stages' outputs from the remote."""
    command = [tool("dvc"), "repro"]
    if pull_first:
        command.append("--pull")
    if force:
        command.append("--force")
    runner.run(command, cwd=settings.root)


def push(runner: Runner, settings: Settings, targets: Sequence[str] = ()) -> None:
    """Send the pipeline's outputs to the DVC remote so that CI and other clones can pull."""
    runner.run(
        [tool("dvc"), "push", *targets],
        cwd=settings.root,
        hint="check the DVC remote (`dvc remote list`) and its credentials",
    )
