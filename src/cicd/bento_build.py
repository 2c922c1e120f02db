"""`bentoml build` in the suite's process: BentoML's own build, without its command line.

`bentoml build` (``bentoml_cli/bentos.py``, BentoML 1.4) parses its options, sets the
``--arg`` values, turns on quiet mode for ``--output=tag`` and calls
``bentoml.bentos.build_bentofile``. A `bentoml` process first spends 1-3 s importing most of
BentoML; a publish has already imported it (the model import runs in this process), so
:func:`build` calls ``build_bentofile`` itself with what the command line passes: the same
bento (name, version, files, bento.yaml ``args``, the locked ``env/python``).

The build imports the repository's service in this process, and BentoML changes global
state on the way: it puts the build context on ``sys.path`` and changes into it, loads the
service's configuration into its global configuration, sets the ``--arg`` values and the
model aliases in its container, and a service module may set environment variables (the
example's serve.py does). :func:`build` puts each back, as a process that ends would:

* ``sys.path``, the working directory, ``os.environ``;
* BentoML's configuration, arguments and model aliases;
* the modules imported from the build context are forgotten: a later build in this process
  imports the service afresh, as a new `bentoml build` would;
* the ``bentoml`` logger, and Python's warnings and ``sys.stdout``/``sys.stderr``: what
  BentoML says is shown only when the caller asks (``show``: the suite's verbose mode).

The environment during the build is the one a `bentoml build` child would get from the
suite's runner (``env``: no secrets, ``BENTOML_DO_NOT_TRACK``), so the service's import and
the lock's `uv pip compile` see what they saw as a command. Any failure, from BentoML or
from the service's own code, is one line (:class:`cicd.errors.BentoBuildFailed`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from cicd.errors import BentoBuildFailed

Show = Callable[[str], None]


def build(
    *,
    bentofile: Path,
    build_context: Path,
    version: str,
    args: Mapping[str, str],
    cwd: Path,
    env: Mapping[str, str],
    show: Show | None = None,
    hint: str = "",
) -> tuple[str, str]:
    """Build and store the bento as `bentoml build --bentofile BENTOFILE --version VERSION
    --output=tag --arg K=V ... BUILD_CONTEXT` run in ``cwd`` would: its ``(name, version)``.

    ``env``: the whole environment during the build (os.environ is put back after).
    ``show``: where BentoML's log lines, warnings and printed output go (None: nowhere).
    A failure raises :class:`BentoBuildFailed`: one line, ending with ``hint``."""
    from bentoml._internal.configuration import set_quiet_mode
    from bentoml.bentos import build_bentofile

    with (
        process_state_kept(cwd.resolve() / build_context),
        environment(env),
        bentoml_output(show),
    ):
        os.chdir(cwd)  # the command's working directory: relative paths resolve as they did
        set_quiet_mode()  # what `--output=tag` does: uv's lock runs with --quiet, stderr off
        try:
            bento = build_bentofile(
                str(bentofile),
                version=version,
                build_ctx=str(build_context),
                args=dict(args),  # set_arguments(override=True): these and no others
            )
        except Exception as error:  # BentoML's, or anything the service's import raises
            if show:
                for line in traceback.format_exception(error):
                    show(line.rstrip("\n"))
            said = f"bentoml build failed: {reason(error).rstrip('.')}" + (
                f". {hint}" if hint else ""
            )
            raise BentoBuildFailed(said) from error
    return bento.tag.name, str(bento.tag.version)


# BentoML tries a service it cannot import as a bento tag too, and reports both attempts:
# what the module's import said is what the user can act on.
MODULE_ATTEMPT = "If you are importing by python module path: '"


def reason(error: BaseException) -> str:
    """The first line of ``error`` (of its module attempt: :data:`MODULE_ATTEMPT`), with its
    type when it is not BentoML's own (a SyntaxError in the service reads better as such)."""
    from bentoml.exceptions import BentoMLException

    text = str(error)
    if MODULE_ATTEMPT in text:
        text = text.split(MODULE_ATTEMPT, 1)[1].removesuffix("'.")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if isinstance(error, BentoMLException):
        return first or type(error).__name__
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


@contextlib.contextmanager
def process_state_kept(build_context: Path) -> Iterator[None]:
    """Put back what a build changes in this process (see the module's docstring)."""
    from bentoml._internal.configuration.containers import BentoMLContainer
    from simple_di import Provider

    # simple_di's providers pickle their whole state (the value set, the config's dict):
    # load_config, set_arguments and model_aliases.set replace it, they do not edit it.
    providers: list[Provider[Any]] = [
        BentoMLContainer.config,
        BentoMLContainer.bento_arguments,
        BentoMLContainer.model_aliases,
    ]
    saved = [(provider, provider.__getstate__()) for provider in providers]
    path, cwd, modules = list(sys.path), os.getcwd(), set(sys.modules)
    try:
        yield
    finally:
        os.chdir(cwd)
        sys.path[:] = path
        for provider, state in saved:
            provider.__setstate__(state)
        forget_modules(set(sys.modules) - modules, build_context.resolve())


def forget_modules(names: set[str], root: Path) -> None:
    """Drop from ``sys.modules`` those of ``names`` loaded from under ``root``: the
    repository's service code, never the suite's or a library's."""
    for name in names:
        module = sys.modules.get(name)
        places = [getattr(module, "__file__", None), *(getattr(module, "__path__", None) or [])]
        if any(place and Path(place).resolve().is_relative_to(root) for place in places):
            del sys.modules[name]


@contextlib.contextmanager
def environment(env: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` is exactly ``env`` inside the block, and as it was after it."""
    saved = dict(os.environ)
    try:
        replace_environment(env)
        yield
    finally:
        replace_environment(saved)


def replace_environment(env: Mapping[str, str]) -> None:
    for name in set(os.environ) - set(env):
        del os.environ[name]
    for name, value in env.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


class _Lines(logging.Handler):
    """Hands each log record to ``show`` as BentoML's command line prints it."""

    def __init__(self, show: Show) -> None:
        super().__init__()
        self.show = show
        self.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.show(self.format(record))


@contextlib.contextmanager
def bentoml_output(show: Show | None) -> Iterator[None]:
    """Inside the block, what BentoML logs, warns or prints goes to ``show`` (or nowhere),
    never to this process's terminal; the ``bentoml`` logger, the warnings filters and
    ``sys.stdout``/``sys.stderr`` are as they were after it."""
    logger = logging.getLogger("bentoml")
    saved = (logger.level, logger.propagate, logger.disabled, list(logger.handlers))
    logger.handlers = [_Lines(show)] if show else []
    logger.propagate, logger.disabled = False, False
    logger.setLevel(logging.INFO if show else logging.CRITICAL + 1)
    printed = io.StringIO()
    try:
        with (
            warnings.catch_warnings(record=True) as warned,
            contextlib.redirect_stdout(printed),
            contextlib.redirect_stderr(printed),
        ):
            try:
                yield
            finally:
                if show:
                    for line in printed.getvalue().splitlines():
                        show(line)
                    for warning in warned:
                        show(f"warning: {warning.category.__name__}: {warning.message}")
    finally:
        logger.setLevel(saved[0])
        logger.propagate, logger.disabled, logger.handlers = saved[1], saved[2], saved[3]
