"""The one place that runs things.

Every external action of the suite, a command line or a library call (python-on-whales,
an HTTP request to a registry), goes through a :class:`Runner`. The runner echoes what it
does as a command line, honours dry-run (``invoke --dry``: print, run nothing), masks
secrets in everything it prints, and turns failures into :class:`CommandError`.

Quiet by default, as nox, uv and dvc are: the commands, the requests and the tools' own
output are shown only with ``verbose`` (``invoke -e``, ``suite.verbose``); a dry run shows
the commands it would run. What a command printed is kept all the same: a failure's
:class:`CommandError` carries its last lines. :meth:`Runner.echo` is for what a user needs
(results, warnings), :meth:`Runner.detail` for what only ``verbose`` shows.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO, TypeVar

from cicd import retry as retries
from cicd.errors import CommandError, SuiteError, display

T = TypeVar("T")
MASK = "*****"
OUTPUT_TAIL_LINES = 40
# Never handed to child processes (dvc, bentoml, git) unless a call passes them explicitly:
# none of them needs the registry password or a forge token, and a child may log its env.
SECRET_VARIABLES = frozenset(
    {
        "CONTAINER_REGISTRY_PASSWORD",
        "GOOGLE_SERVICE_ACCOUNT_KEY",
        "GITHUB_TOKEN",
        "GITLAB_TOKEN",
        "REPO_TOKEN",
        "SIGNING_KEY",
    }
)
MIN_MASKED_PART = 6  # shorter lines of a multi-line secret ("{", "}") would mask everything
# What a network tool prints when the failure may pass (dvc pull/push, docker push): retried.
TRANSIENT = re.compile(
    r"connection (reset|refused|aborted)|broken pipe|timed? ?out|temporar(y|ily)|"
    r"too many requests|unexpected EOF|TLS handshake|no route to host|"
    r"\b(429|500|502|503|504)\b|bad gateway|service unavailable",
    re.IGNORECASE,
)
NETWORK_ERRORS = "network errors"  # what the retry note says commands are retried on
KILL_GRACE = 10.0  # seconds between SIGTERM and SIGKILL for a command past its deadline
# Set in each command's environment, with a value of its own: its descendants inherit it,
# so a deadline finds them in /proc even when they left its process group (setsid, a
# daemon) or were orphaned, which killpg alone misses.
COMMAND_MARK = "CICD_COMMAND_ID"
HELD = (signal.SIGINT, signal.SIGTERM)  # what interruptions_deferred holds back


@dataclass
class Runner:
    """Runs commands and calls, or only shows them when ``dry`` is set."""

    dry: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    secrets: set[str] = field(default_factory=set)
    # Deadline of one command (seconds, None: none); settings.command_timeout in the tasks.
    command_timeout: float | None = None
    # Show the commands, requests and tools' output (invoke -e, suite.verbose), not only
    # results and warnings.
    verbose: bool = False
    # How a retry waits (a test passes a recorder: it counts the waits, it does not wait).
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def add_secret(self, value: str | None, username: str | None = None) -> None:
        """Never print ``value``: it is masked in echoes, output and error messages.

        Also masked: each line of a multi-line value (a child prints a JSON key line by
        line), its JSON-escaped form, its base64 forms, and with ``username`` the base64 of
        ``username:value`` (HTTP basic auth, Docker's config.json).
        """
        if not value:
            return
        forms = {value, json.dumps(value)[1:-1], *_base64_forms(value)}
        # Lines as printed, and as they sit in a JSON string (a PEM key inside a JSON key).
        forms |= {line.strip() for line in re.split(r"\r?\n|\\n", value)}
        if username:
            forms.add(base64.b64encode(f"{username}:{value}".encode()).decode())
        self.secrets |= {form for form in forms if len(form) >= MIN_MASKED_PART or form == value}

    def mask(self, text: str) -> str:
        # Longest first: a secret that contains another is masked whole.
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, MASK)
        return text

    def child_env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        """The environment of a child: ours without secrets, plus what the call passes."""
        inherited = {
            name: value
            for name, value in os.environ.items()
            if name not in SECRET_VARIABLES and value not in self.secrets
        }
        return {**inherited, **(env or {})}

    def echo(self, line: str) -> None:
        """Print what a user needs whatever the verbosity: a result, a warning."""
        print(self.mask(line), file=self.out, flush=True)

    def detail(self, line: str) -> None:
        """Print what only ``verbose`` shows (how a step went about it); a dry run too."""
        if self.shows_commands:
            self.echo(line)

    @property
    def shows_commands(self) -> bool:
        """A dry run shows the commands it would run: that is all it does."""
        return self.verbose or self.dry

    def show(self, command: Sequence[str], note: str = "") -> None:
        """Print a command the way it is (or would be) run, if ``verbose`` or dry run."""
        if not self.shows_commands:
            return
        prefix = "[dry-run] $ " if self.dry else "$ "
        # Masked before quoting: quoting would change a secret with a quote in it.
        shown = display([self.mask(str(part)) for part in command])
        self.echo(prefix + shown + (f"   # {note}" if note else ""))

    def run(
        self,
        command: Sequence[str],
        *,
        cwd: Path | str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: str | None = None,
        quiet: bool = False,
        check: bool = True,
        hint: str = "",
        always: bool = False,
        retry_transient: bool = False,
        drop: re.Pattern[str] | None = None,
    ) -> str:
        """Run ``command``; stream its output (with ``verbose``, unless ``quiet``), return it.

        ``stdin`` is how secrets are passed: never on the command line. ``always`` marks
        read-only queries (``git rev-parse``, ``docker version``) that run in dry-run too,
        because what the dry run prints depends on them. ``retry_transient``: a failure
        whose output says the network hiccuped (:data:`TRANSIENT`) is retried, as
        :data:`cicd.retry.COMMANDS` says.
        Every command has the runner's deadline; past it, it is stopped (its whole process
        group) and the failure says so. ``drop``: lines of the tool's own that are not
        shown (advice the suite contradicts); they stay in the output and the failure's tail.
        """
        policy = retries.COMMANDS if retry_transient else retries.ONCE
        if not quiet or (self.dry and not always):
            self.show(command, policy.note(NETWORK_ERRORS) if self.dry else "")
        if self.dry and not always:
            return ""
        masked = [self.mask(str(part)) for part in command]

        def once() -> str:
            code, output = self._run_once(command, cwd, env, stdin, quiet, hint, drop)
            if code == 0 or not check:
                return output
            tail = "".join(output.splitlines(keepends=True)[-OUTPUT_TAIL_LINES:])
            failed = CommandError(masked, code, self.mask(tail), hint)
            reason = network_hiccup(tail)
            if reason:
                raise retries.Transient(reason, failed)
            raise failed

        return self.retry(once, policy=policy, what=display(masked))

    def retry(
        self,
        attempt: Callable[[], T],
        *,
        policy: retries.RetryPolicy,
        what: str,
        give_up: Callable[[retries.GiveUp], BaseException] | None = None,
        deadline: float | None = None,
    ) -> T:
        """:func:`cicd.retry.call` with this runner's hook and sleep: each retry is printed
        here, and only here (masked, on one line), whether of a command, a docker call or a
        request."""
        return retries.call(
            attempt,
            policy=policy,
            what=_one_line(self.mask(what)),
            on_retry=lambda retrying: self.echo(str(retrying)),
            give_up=give_up,
            deadline=deadline,
            sleep=self.sleep,
        )

    def _run_once(
        self,
        command: Sequence[str],
        cwd: Path | str | None,
        env: Mapping[str, str] | None,
        stdin: str | None,
        quiet: bool,
        hint: str,
        drop: re.Pattern[str] | None,
    ) -> tuple[int, str]:
        process: subprocess.Popen[str] | None = None
        mark = uuid.uuid4().hex
        try:
            # An interruption that lands while Popen starts the child would leave the child
            # running unseen (Popen has not returned it yet): hold it until `process` is set.
            with interruptions_deferred():
                process = self._start(command, cwd, {**(env or {}), COMMAND_MARK: mark}, stdin)
            return self._finish(process, command, stdin, quiet, hint, drop, mark)
        except BaseException:  # interrupted (Ctrl-C, SIGTERM): leave nothing running
            if process is not None:
                stop_process_group(process, mark=mark)
            raise

    def _start(
        self,
        command: Sequence[str],
        cwd: Path | str | None,
        env: Mapping[str, str] | None,
        stdin: str | None,
    ) -> subprocess.Popen[str]:
        try:
            return subprocess.Popen(
                [str(part) for part in command],
                cwd=cwd,
                env=self.child_env(env),
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                # Its own process group: a deadline or an interruption stops the command's
                # children too (dvc's workers, containerize's docker build).
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise SuiteError(
                f"`{command[0]}` is not installed or not on PATH: install it "
                f"(model-cicd's docs/troubleshooting.md) or run `scripts/bootstrap`"
            ) from exc

    def _finish(
        self,
        process: subprocess.Popen[str],
        command: Sequence[str],
        stdin: str | None,
        quiet: bool,
        hint: str,
        drop: re.Pattern[str] | None,
        mark: str | None = None,
    ) -> tuple[int, str]:
        expired = threading.Event()

        def stop_at_deadline() -> None:
            expired.set()
            stop_process_group(process, mark=mark)

        timer = None
        if self.command_timeout:
            timer = threading.Timer(self.command_timeout, stop_at_deadline)
            timer.daemon = True
            timer.start()
        try:
            if stdin is not None:
                assert process.stdin is not None
                process.stdin.write(stdin)
                process.stdin.close()
            output = self._stream(process.stdout, echo=self.verbose and not quiet, drop=drop)
            code = process.wait()
        finally:
            if timer:
                timer.cancel()
        if expired.is_set():
            shown = display([self.mask(str(part)) for part in command])
            raise SuiteError(
                f"`{shown}` did not finish within {self.command_timeout:.0f} s and was stopped "
                "(suite.command_timeout in invoke.yaml, or `invoke --command-timeout SECONDS`)"
                + (f". {hint}" if hint else "")
            )
        return code, output

    def query(self, command: Sequence[str], *, cwd: Path | str | None = None) -> str | None:
        """Output of a read-only command, or None if it fails; runs in dry-run too, silently."""
        try:
            return self.run(command, cwd=cwd, quiet=True, always=True, check=True)
        except (CommandError, SuiteError):
            return None

    def call(
        self,
        command: Sequence[str],
        action: Callable[[], T],
        *,
        quiet: bool = False,
        note: str = "",
    ) -> T | None:
        """Run a library call that is equivalent to ``command`` (shown with ``verbose``); in
        dry-run only show it."""
        if not quiet or self.dry:
            self.show(command, note)
        if self.dry:
            return None
        return action()

    def spawn(self, command: Sequence[str], *, log: Path, cwd: Path | str | None = None) -> int:
        """Start a server that outlives the step (the embedded registry) in the background:
        its pid (0 in a dry run, which only shows it). Its output is appended to ``log``.

        Unlike :meth:`run`: no deadline, and its own session, so that the step's Ctrl-C or
        end does not stop it; :mod:`cicd.local_registry` stops it by its pid file.
        """
        self.show(command)
        if self.dry:
            return 0
        with log.open("ab") as out:
            try:
                process = subprocess.Popen(
                    [str(part) for part in command],
                    cwd=cwd,
                    env=self.child_env(None),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except FileNotFoundError as exc:
                raise SuiteError(
                    f"`{command[0]}` is not installed or not on PATH: install it "
                    "(model-cicd's docs/troubleshooting.md) or run `scripts/bootstrap`"
                ) from exc
        return process.pid

    def _stream(
        self, stream: Iterable[str] | None, echo: bool, drop: re.Pattern[str] | None = None
    ) -> str:
        lines: list[str] = []
        for line in stream or ():
            lines.append(line)
            if echo and not (drop and drop.search(line)):
                self.out.write(self.mask(line))
                self.out.flush()
        return "".join(lines)


def _one_line(text: str) -> str:
    """The first line of ``text``, marked as cut when there are more (a script for sh -c)."""
    first, *more = text.splitlines() or [""]
    return first + " …" if more else first


def network_hiccup(output: str) -> str | None:
    """What in a tool's output says the network hiccuped (:data:`TRANSIENT`), else None: such
    a failure of ``dvc pull/push`` or ``docker push`` may pass on another attempt."""
    found = TRANSIENT.search(output)
    return f"network error: {found.group(0)}" if found else None


@contextlib.contextmanager
def interruptions_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then deliver them.

    Only the main thread receives signals; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _: held.append(signum)) for sig in HELD}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        for signum in held[:1]:
            signal.raise_signal(signum)  # runs the handler restored above


def stop_process_group(
    process: subprocess.Popen[str], grace: float = KILL_GRACE, mark: str | None = None
) -> None:
    """SIGTERM the process's group, SIGKILL it if it is still there after ``grace``.

    With ``mark`` (the value of :data:`COMMAND_MARK` in the command's environment), its
    descendants that left the group (``setsid``) or were orphaned get the same signals."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, None)):
        strays = marked(mark) if mark else []
        try:
            os.killpg(process.pid, sig)
            group = True
        except (ProcessLookupError, PermissionError):
            group = False
        for pid in strays:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        if wait is None or not (group or strays):
            return
        end = time.monotonic() + wait
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        while mark and marked(mark) and time.monotonic() < end:
            time.sleep(0.05)
        if not (mark and marked(mark)):
            return


def marked(mark: str) -> list[int]:
    """The processes whose environment holds ``COMMAND_MARK=mark`` (Linux's /proc; none
    elsewhere): a command's descendants, wherever they went. Zombies have no environment."""
    needle = f"{COMMAND_MARK}={mark}".encode()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _base64_forms(value: str) -> set[str]:
    """The parts of base64 text that encode ``value`` wherever it sits in the encoded data.

    base64 works on 3-byte groups, so a value at offset 0, 1 or 2 of a group encodes in
    three ways; the characters that mix in neighbouring bytes are left out.
    """
    raw = value.encode()
    forms = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode()
        start = 0 if offset == 0 else 4  # the first group holds the padding bytes
        end = ((offset + len(raw)) // 3) * 4  # the last full group holds only our bytes
        if end - start >= MIN_MASKED_PART:
            forms.add(encoded[start:end])
    return forms


def tool(name: str) -> str:
    """The command for a Python tool (dvc, bentoml) of the environment running the suite.

    Running ``.venv/bin/invoke`` without activating the venv must still use that venv's
    dvc and bentoml, not whatever else is on PATH.
    """

    sibling = Path(sys.executable).parent / name
    if not sibling.exists():
        return name
    found = shutil.which(name)
    return name if found and Path(found).resolve() == sibling.resolve() else str(sibling)


def tool_path() -> dict[str, str]:
    """PATH for a tool that runs programs by name (dvc runs a stage's `python src/train.py`):
    the suite's environment first, so that an unactivated ``.venv/bin/invoke repro`` trains
    with that venv's Python, as :func:`tool` runs its dvc. Empty when it already is first."""
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] == bin_dir:
        return {}
    return {"PATH": os.pathsep.join([bin_dir, path]) if path else bin_dir}
