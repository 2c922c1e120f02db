"""Smoke test of an image: run it, wait until ready, ask one prediction, compare with the model.

The request and the expected answer are settings (invoke.yaml, ``suite.smoke``): a file sent
as a multipart field or a JSON body, and either a function of the repository computing the
model's answer in this process, or a recorded answer. Numbers compare within a tolerance.

The container listens on 127.0.0.1 only, on a host port Docker assigns (and keeps for the
container's life: no probe-then-bind race with other jobs), and is always removed: after a
failure or an interruption before the step ends, after a pass in the background while the
publish goes on (the process waits for it before it exits). An image that fails here is
never pushed.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib
import json
import math
import mimetypes
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cicd.docker import docker_call
from cicd.errors import SmokeError, SuiteError, display
from cicd.labels import container_labels, label_options
from cicd.settings import Settings, SmokeRequest
from cicd.shell import Runner

if TYPE_CHECKING:
    from cicd.context import Run

SERVICE_PORT = 3000
DEFAULT_TOLERANCE = 1e-4  # suite.smoke.expect.tolerance's default


def smoke_test(run: Run, image: str | None = None) -> Any:
    """Run ``image`` (default: this commit's), send the smoke request, and check that the
    answer is the expected one (the local model's, or the recorded one)."""
    from cicd import dvc
    from cicd.image import target

    runner, settings, client = run.runner, run.settings, run.docker
    request = settings.smoke.request
    image = image or target(run).references[0]
    sample = None
    if request.kind == "file":
        assert request.path is not None  # settings: kind file has a path
        dvc.pull_if_missing(run, request.path)
        sample = settings.path(request.path)
        if not sample.is_file() and not runner.dry:
            raise SuiteError(
                f"no file at {sample} for the smoke test: run `invoke repro` (the pipeline "
                "makes it) or `invoke pull`, or set suite.smoke.request.path in invoke.yaml"
            )
    docker = run.whales
    publish = f"127.0.0.1::{SERVICE_PORT}"  # empty host port: Docker assigns one
    # A name of our own: the container can be removed even when the step is interrupted
    # before `docker run` has told us its id.
    name = f"smoke-{uuid.uuid4().hex[:12]}"
    labels = container_labels("smoke", settings.container_labels)
    command = [
        client.path, "run", "--detach", "--name", name, *label_options(labels),
        "--publish", publish, image,
    ]  # fmt: skip
    container, passed = None, False
    try:
        container = docker_call(
            runner,
            command,
            lambda: docker.run(image, detach=True, name=name, labels=labels, publish=[(publish,)]),
            hint="build the image first: `invoke build`",
        )
        url = f"http://127.0.0.1:{_host_port(container) if container is not None else '<port>'}"
        # Computed while the container starts (its service takes a second or two to be
        # ready): the model's own answer costs its imports and the model's load.
        expected = expected_answer(run)
        runner.call(["GET", f"{url}/readyz"], lambda: _wait_ready(url, container, settings))
        shown = f"{request.field}=@{sample}" if sample is not None else "<JSON body>"
        answer = runner.call(
            ["POST", f"{url}{settings.smoke.path}", shown],
            lambda: _post(f"{url}{settings.smoke.path}", request, sample),
        )
        if runner.dry:
            return None
        expect = settings.smoke.expect
        if expect is not None:
            source = "the local model's" if expect.function else "the recorded answer"
            check_answer(answer, expected, expect.tolerance, source)
        runner.detail(
            f"smoke test passed: {image} answers {_short(answer)} for {request.payload_source}"
        )
        passed = True
        return answer
    except SmokeError:
        # The error is one line; what the service said is above it, before the container goes.
        if container is not None:
            runner.echo(f"the container's last lines:\n{_logs_tail(container)}")
        raise
    finally:
        removal = [client.path, "rm", "--force", name]
        if passed:
            runner.call(removal, lambda: _remove_in_background(runner, removal), quiet=True)
        else:
            _remove(runner, docker, removal, name)


def expected_answer(run: Run) -> Any:
    """The answer the image must give: the recorded one, or what the repository's function
    computes in this process from the workspace's model and the request's payload. None:
    nothing to compare with (no ``expect``, or a dry run, where the model may be absent).

    What the function and its imports print (TensorFlow's C++ logs, Keras's progress bars)
    is held back: shown with ``verbose``, or above the error when the function fails."""
    settings = run.settings
    expect = settings.smoke.expect
    if expect is None:
        return None
    if expect.answer is not None:
        return expect.answer
    if run.dry:
        return None
    assert expect.function is not None  # settings: one of answer and function
    request = settings.smoke.request
    payload = settings.path(request.path).read_bytes() if request.path is not None else request.body
    printed: list[str] = []
    try:
        with captured_output(printed):
            try:
                function = load_function(expect.function, settings.path(settings.build_context))
                answer = function(settings.path(settings.bentomodel), payload)
            except SuiteError:
                raise
            except Exception as error:  # the repository's code: say whose and what, in one line
                raise SuiteError(
                    f"suite.smoke.expect.function {expect.function} failed on "
                    f"{request.payload_source}: {type(error).__name__}: {error}"
                ) from error
    except SuiteError:
        _show_printed(run.runner.echo, expect.function, printed, PRINTED_ON_FAILURE)
        raise
    _show_printed(run.runner.detail, expect.function, printed)
    return answer


PRINTED_ON_FAILURE = 30  # the last lines of the function's output shown above its error


def _show_printed(
    show: Callable[[str], None], spec: str, printed: list[str], last: int | None = None
) -> None:
    lines = "".join(printed).rstrip().splitlines()
    if not lines:
        return
    shown = lines[-last:] if last else lines
    cut = f", its last {len(shown)} of {len(lines)} lines" if len(shown) < len(lines) else ""
    show(f"suite.smoke.expect.function {spec} printed{cut}:\n" + "\n".join(shown))


@contextlib.contextmanager
def captured_output(printed: list[str]) -> Iterator[None]:
    """Send stdout and stderr to a temporary file meanwhile, then append its text to
    ``printed``: Python's writes (print, logging, warnings) and also what native code writes
    to file descriptors 1 and 2 itself, which no Python setting silences (TensorFlow logs
    before its logging is set up). C's stdio buffers are flushed before the descriptors go
    back, so that a buffered printf does not come out later."""
    _flush_python_streams()
    # Python's side writes through a second descriptor of the same open file as the native
    # side: they share its offset, so neither overwrites the other.
    with (
        tempfile.TemporaryFile(buffering=0) as sink,
        open(os.dup(sink.fileno()), "w", encoding="utf-8", errors="replace") as python_side,
    ):
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            with contextlib.redirect_stdout(python_side), contextlib.redirect_stderr(python_side):
                yield
        finally:
            python_side.flush()
            _flush_python_streams()  # a reference to the real sys.stdout, kept from before
            _flush_c_stdio()
            for fd, copy in enumerate(saved, start=1):
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            printed.append(sink.read().decode("utf-8", errors="replace"))


def _flush_python_streams() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        if stream is not None:
            stream.flush()


def _flush_c_stdio() -> None:
    """fflush(NULL): C's stdout buffer (full while it is not a terminal) into the sink."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).fflush(None)


def load_function(spec: str, build_context: Path) -> Any:
    """``module:callable`` of the repository, imported from its build context (src/)."""
    module_name, _, attribute = spec.partition(":")
    added = str(build_context) not in sys.path
    if added:
        sys.path.insert(0, str(build_context))
    try:
        found: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as error:
        raise SuiteError(
            f"suite.smoke.expect.function {spec} cannot be imported from {build_context} "
            f"({error}): fix it in invoke.yaml"
        ) from error
    finally:
        if added:
            sys.path.remove(str(build_context))
    if not callable(found):
        raise SuiteError(f"suite.smoke.expect.function {spec} is not callable")
    return found


def _remove(runner: Runner, docker: Any, command: list[str], name: str) -> None:
    """Remove the smoke container, if it was created, and wait: a failed or interrupted test
    (the step ends; this never hides its error)."""
    from python_on_whales.exceptions import DockerException

    def remove() -> None:
        with contextlib.suppress(DockerException):  # never created: nothing to remove
            docker.container.remove(name, force=True)

    runner.call(command, remove, quiet=True)


# The removals of passed tests' containers still running: this process waits for them
# before it exits (wait_removed), so that no container outlives the step's process.
_REMOVING: list[tuple[list[str], subprocess.Popen[bytes]]] = []
REMOVAL_WAIT = 60.0  # seconds the exit waits for a removal before it says so and goes on


def _remove_in_background(runner: Runner, command: list[str]) -> None:
    """Start `docker rm --force` of a passed test's container and go on: its kill, the
    network's teardown and the layer's removal (0.2-1 s here) overlap the push instead of
    delaying it. Its own session: a Ctrl-C of the next step does not stop it half-way."""
    process = subprocess.Popen(
        command,
        env=runner.child_env(None),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    _REMOVING.append((command, process))


def wait_removed() -> None:
    """Wait for the smoke containers being removed (at the latest, at this process's exit);
    one line on stderr for a container that was not, with the command that removes it."""
    while _REMOVING:
        command, process = _REMOVING.pop()
        try:
            _, error = process.communicate(timeout=REMOVAL_WAIT)
        except subprocess.TimeoutExpired:
            error = f"still running after {REMOVAL_WAIT:g} s".encode()
        if process.returncode != 0 and b"No such container" not in error:
            said = (error.decode(errors="replace").strip().splitlines() or ["no message"])[0]
            print(
                f"warning: the smoke container was not removed ({said}): run `{display(command)}`",
                file=sys.stderr,
            )


atexit.register(wait_removed)


def check_answer(
    answer: Any,
    expected: Any,
    tolerance: float = DEFAULT_TOLERANCE,
    source: str = "the local model's",
) -> None:
    """The answer is the expected JSON: same keys, lists and texts; numbers within
    ``tolerance``. ``expected`` None: any JSON answer passes (it came with HTTP 200).
    ``source``: whose answer ``expected`` is, for the message."""
    if expected is None:
        return
    differences = list(_differences(answer, expected, tolerance, "answer"))
    if differences:
        shown = "; ".join(differences[:3]) + ("; ..." if len(differences) > 3 else "")
        raise SmokeError(
            f"the image's answer differs from {source} (tolerance {tolerance:g}): "
            f"{shown}: the image does not serve this model"
        )


def result_line(settings: Settings, answer: Any) -> str:
    """The step's one-line result: what the image answered, and what that was checked against."""
    expect = settings.smoke.expect
    if expect is None:
        return f"answers {_short(answer)} (no expected answer set: suite.smoke.expect)"
    return f"answers {_short(answer)}, as {'the model does' if expect.function else 'recorded'}"


def _short(answer: Any) -> str:
    """An answer as the passing line shows it: its prediction when it has one."""
    if isinstance(answer, dict) and isinstance(answer.get("prediction"), str):
        return repr(answer["prediction"])
    return repr(answer)[:80]


def _differences(answer: Any, expected: Any, tolerance: float, where: str) -> Iterator[str]:
    """Where ``answer`` and ``expected`` differ, as ``answer.key[0]: got X, expected Y``."""
    if _is_number(expected) and _is_number(answer):
        if not math.isclose(answer, expected, rel_tol=0.0, abs_tol=tolerance):
            yield f"{where}: {answer!r} instead of {expected!r}"
    elif isinstance(expected, dict) and isinstance(answer, dict):
        for key in sorted(set(expected) | set(answer), key=str):
            if key not in answer:
                yield f"{where}.{key}: missing"
            elif key not in expected:
                yield f"{where}.{key}: not expected"
            else:
                yield from _differences(answer[key], expected[key], tolerance, f"{where}.{key}")
    elif isinstance(expected, list) and isinstance(answer, list):
        if len(answer) != len(expected):
            yield f"{where}: {len(answer)} items instead of {len(expected)}"
        else:
            for i, (got, want) in enumerate(zip(answer, expected, strict=True)):
                yield from _differences(got, want, tolerance, f"{where}[{i}]")
    elif answer != expected or type(answer) is not type(expected):
        yield f"{where}: {repr(answer)[:100]} instead of {repr(expected)[:100]}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _host_port(container: Any) -> int:
    """The port of 127.0.0.1 that Docker mapped to the service's port."""
    # python-on-whales leaves the mapping as Docker's JSON: {"3000/tcp": [{"HostPort": ...}]}
    for binding in (container.network_settings.ports or {}).get(f"{SERVICE_PORT}/tcp") or []:
        if binding.get("HostPort"):
            return int(binding["HostPort"])
    # No mapping: the container has already stopped (Docker drops the ports of a dead one).
    container.reload()
    raise _exited(container)


def _exited(container: Any) -> SmokeError:
    return SmokeError(
        f"the container exited with code {container.state.exit_code} before it was ready: "
        "its last lines, above, say why"
    )


# How often /readyz is asked while the service starts, and how often Docker is asked whether
# the container still runs: a GET to 127.0.0.1 costs next to nothing, `docker inspect` (a
# client process) about a tenth of a second, so the fine polling only asks /readyz.
READY_POLL = 0.05
RUNNING_POLL = 1.0


def _wait_ready(url: str, container: Any, settings: Settings) -> None:
    now = time.monotonic()
    deadline, next_inspect = now + settings.smoke.timeout, now + RUNNING_POLL
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() >= next_inspect:
            container.reload()
            if not container.state.running:
                raise _exited(container)
            next_inspect = time.monotonic() + RUNNING_POLL
        time.sleep(READY_POLL)
    raise SmokeError(
        f"the container was not ready within {settings.smoke.timeout:g} s: its last lines are "
        "above; if it is only slow, raise suite.smoke.timeout in invoke.yaml"
    )


def _logs_tail(container: Any, lines: int = 15) -> str:
    try:
        text = container.logs()
    except Exception:  # the logs are a courtesy; the real error is raised by the caller
        text = ""
    return "\n".join(str(text).splitlines()[-lines:])


def _post(url: str, request: SmokeRequest, sample: Path | None) -> Any:
    """POST the smoke request: the file as a multipart field, or the JSON body."""
    if request.kind == "file":
        assert sample is not None
        boundary = uuid.uuid4().hex
        content_type = (
            request.content_type
            or mimetypes.guess_type(sample.name)[0]
            or "application/octet-stream"
        )
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{request.field}"; '
                f'filename="{sample.name}"\r\nContent-Type: {content_type}\r\n\r\n'
            ).encode()
            + sample.read_bytes()
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    else:
        body = json.dumps(request.body).encode()
        headers = {"Content-Type": "application/json"}
    path = urllib.parse.urlsplit(url).path
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, data=body, headers=headers), timeout=30
        ) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise SmokeError(
            f"POST {path} answered HTTP {error.code} ({error.read()[:200]!r}): the image's "
            f"service fails on {request.payload_source}; its last lines are above"
        ) from None
    except (urllib.error.URLError, OSError, json.JSONDecodeError) as error:
        raise SmokeError(f"POST {path} failed: {error}") from None
