"""What an invoke step says as it runs and ends: the step wrapper's side of quiet output.

Per step one line (``✓ name  result (seconds)``, :func:`cicd.console.step_line`), a spinner
on a terminal while it works, the failed command's last lines when they were not shown, and
after the publish's last step the summary (the rows of CI's job summary, one source). Kept
out of ``tasks.py`` so that the task definitions stay a list of steps.

invoke's own options: ``--echo`` is verbose, ``--command-timeout`` the deadline of a command
(:func:`run_options`), ``--hide`` quiets even the step lines; ``--pty`` and ``--warn-only``
do not apply and are refused in one line (:data:`IGNORED_OPTIONS`), never silently ignored.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TextIO

from invoke import Context, Exit

from cicd import ci, console
from cicd.errors import CommandError, SuiteError, display

if TYPE_CHECKING:
    from cicd.ci_outputs import Result
    from cicd.context import Run

RUNS: list[Run] = []  # each step's run context (tasks.setup): the last says how verbose it is
PUBLISHED: list[Result] = []  # what push (or check-published) found in the registry
SUMMARY_AFTER = ("attest",)  # the last step of `nox -s publish` (check-published may end it)
ALREADY_PUBLISHED = "already published"  # check-published's result when it ends the run

IGNORED_OPTIONS = {
    "pty": (
        "--pty",
        "its commands run without a terminal; `invoke -e STEP` shows their output as it comes",
    ),
    "warn": (
        "--warn-only",
        "a step stops at its first failure; run the steps one by one (`invoke STEP`) instead",
    ),
}


def run_options(c: Context) -> dict[str, Any]:
    """The arguments of ``Run.create`` that invoke's own options give."""
    return {
        "verbose": bool(c.config.run.echo),  # invoke -e/--echo
        "command_timeout": c.config.timeouts.command,  # invoke -T/--command-timeout
    }


def refuse_ignored_options(c: Context) -> None:
    """A one-line error for an invoke option the suite does not honour."""
    for key, (option, instead) in IGNORED_OPTIONS.items():
        if c.config.run.get(key):
            raise SuiteError(f"invoke's {option} is not used by the suite: {instead}")


def run_step(c: Context, name: str, body: Callable[[], Any], done: list[tuple[str, float]]) -> Any:
    """Run a step's ``body`` and say how it went; ``done`` gets its name and seconds.

    The body returns its one-line result (any other value: none shown). Errors go on up
    (the wrapper turns them into invoke's Exit), after the failure's lines."""
    hidden = bool(c.config.run.hide)  # invoke --hide: not even the step lines
    started, runs_before = time.monotonic(), len(RUNS)
    try:
        refuse_ignored_options(c)
        # No spinner in CI even on a pseudo-terminal (act's host runner has one): a live
        # display re-wraps every line printed meanwhile at the terminal's width.
        spinner = not (hidden or c.config.run.echo or c.config.run.dry or ci.in_ci(os.environ))
        with console.working(name, enabled=spinner):
            result = body()
    except Exit as stop:  # check-published: the registry has it, the run ends here
        if stop.code == 0:
            _done(name, started, ALREADY_PUBLISHED, hidden, _out(runs_before), done)
        raise
    except SuiteError as error:
        _failed(name, started, error, hidden, _out(runs_before))
        raise
    shown = result if isinstance(result, str) else ""
    _done(name, started, shown, hidden, _out(runs_before), done)
    return result


def _out(runs_before: int) -> TextIO | None:
    """Where a step's lines go: its runner's output (stdout; stderr where stdout is the
    task's data), if the step got as far as making it; else stdout."""
    return RUNS[-1].runner.out if len(RUNS) > runs_before else None


def _done(
    name: str,
    started: float,
    result: str,
    hidden: bool,
    out: TextIO | None,
    done: list[tuple[str, float]],
) -> None:
    seconds = round(time.monotonic() - started, 1)
    done.append((name, seconds))
    if hidden:
        return
    console.say(console.step_line(name, seconds, result), out)
    if PUBLISHED and (name in SUMMARY_AFTER or result == ALREADY_PUBLISHED):
        print_summary(done)


def _failed(name: str, started: float, error: SuiteError, hidden: bool, out: TextIO | None) -> None:
    """The failed step's line, after the failed command's last lines when they were not
    shown (quiet): a failure always comes with what the tool said, as nox does."""
    quiet = not (RUNS and RUNS[-1].runner.shows_commands)
    if isinstance(error, CommandError) and error.output.strip() and quiet:
        console.say(f"$ {display(error.command)}\n{error.output.rstrip()}", out)
    if not hidden:
        console.say(console.step_line(name, time.monotonic() - started, ok=False), out)


def print_summary(done: list[tuple[str, float]]) -> None:
    """The publish's summary: what CI's job summary says (ci_outputs, one source), with
    every step of this run, what was attested, and what to run next."""
    from cicd import ci_outputs

    run = RUNS[-1]
    attested = f"SBOM and provenance, {signed(run)}" if any(n == "attest" for n, _ in done) else ""
    result = replace(PUBLISHED[-1], seconds=tuple(done), attested=attested)
    text = ci_outputs.terminal_summary(result, run.settings.smoke)
    print(text, file=run.runner.out, flush=True)


def signed(run: Run) -> str:
    """How attest attaches: signed with SIGNING_KEY, else unsigned."""
    return "signed" if run.settings.signing_key else "UNSIGNED"
