"""Publish results that CI can read: step outputs, a GitLab dotenv report, a job summary.

GitHub: ``digest``, ``tags``, ``image`` (pull reference by digest) and ``skipped`` go to
``$GITHUB_OUTPUT`` (later steps read ``steps.<id>.outputs.digest``), a table to
``$GITHUB_STEP_SUMMARY``. GitLab: the same values as ``PUBLISH_*`` lines in ``publish.env``,
which ``.gitlab-ci.yml`` declares as an ``artifacts:reports:dotenv`` report (later jobs get
them as variables). Only references, digest, size, model tag and timings: never a credential.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cicd import ci
from cicd.docker import Client
from cicd.shell import Runner

if TYPE_CHECKING:
    from cicd.context import Run
    from cicd.image import Target
    from cicd.settings import Smoke

DOTENV_FILE = "publish.env"


@dataclass(frozen=True)
class Result:
    repository: str  # <registry>[/<namespace>]/<image>
    tags: tuple[str, ...]  # SHA tag first
    digest: str  # manifest digest in the registry
    model_tag: str
    skipped: bool  # the registry already had this commit's image with this model
    size: int | None = None  # bytes of the local image; None when it was not built here
    seconds: tuple[tuple[str, float], ...] = ()
    attested: str = ""  # e.g. "SBOM and provenance, signed"; empty until attest ran

    @property
    def references(self) -> tuple[str, ...]:
        return tuple(f"{self.repository}:{tag}" for tag in self.tags)


def outputs(result: Result) -> dict[str, str]:
    """Name -> one-line value, for ``$GITHUB_OUTPUT`` and (prefixed) the dotenv report."""
    values = {
        "digest": result.digest,
        "tags": " ".join(result.references),
        "image": f"{result.repository}@{result.digest}",
        "skipped": "true" if result.skipped else "false",
    }
    for name, value in values.items():
        if "\n" in value or "\r" in value:
            raise ValueError(f"output {name} spans lines: {value!r}")
    return values


def dotenv(result: Result) -> str:
    """GitLab's dotenv report: ``PUBLISH_DIGEST=...`` lines."""
    return "".join(f"PUBLISH_{name.upper()}={value}\n" for name, value in outputs(result).items())


def rows(result: Result) -> list[tuple[str, tuple[str, ...], bool]]:
    """What a summary tells, the CI job's and the terminal's (one source): per row its
    label, its values, and whether they are literals (references, digests: code in Markdown)."""
    size = f"{result.size / 1e6:.1f} MB" if result.size else "not built in this run"
    found = [
        ("tags", result.references, True),
        ("digest", (result.digest,), True),
        ("image size", (size,), False),
        ("model", (result.model_tag,), True),
    ]
    if result.attested:
        found.append(("attested", (result.attested,), False))
    return found


def title(result: Result) -> str:
    return "Already published" if result.skipped else "Published"


def summary(result: Result) -> str:
    """The job summary: what was published, and how long each step took."""
    lines = [f"### {title(result)}: `{result.references[0]}`", "", "| | |", "|---|---|"]
    for label, values, literal in rows(result):
        shown = ", ".join(f"`{value}`" if literal else value for value in values)
        lines.append(f"| {label} | {shown} |")
    if result.seconds:
        lines += ["", "| step | seconds |", "|---|---|"]
        lines += [f"| {step} | {seconds:.1f} |" for step, seconds in result.seconds]
    return "\n".join(lines) + "\n"


def terminal_summary(result: Result, smoke: Smoke, port: int = 3000) -> str:
    """The summary a local run ends with: the job summary's rows as plain text, then what
    to run next (the image on 127.0.0.1 only, and the smoke test's request to it)."""
    found = rows(result)
    if result.seconds:
        steps = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in result.seconds)
        found.append(("steps", (steps,), False))
    width = max(len(label) for label, _, _ in found)
    lines = [f"{title(result)} {result.references[0]}"]
    lines += [f"  {label:<{width}}  {', '.join(values)}" for label, values, _ in found]
    lines += [
        "Next:",
        f"  docker run --rm -p 127.0.0.1:{port}:{port} {result.references[0]}",
        f"  {curl_line(smoke, f'http://127.0.0.1:{port}')}",
    ]
    return "\n".join(lines)


def curl_line(smoke: Smoke, base: str) -> str:
    """The smoke test's request as a `curl` line a user can paste: the file as a multipart
    field, or the JSON body."""
    import json
    import shlex

    request, url = smoke.request, f"{base}{smoke.path}"
    if request.kind == "file":
        return f"curl -F {shlex.quote(f'{request.field}=@{request.path}')} {url}"
    body = shlex.quote(json.dumps(request.body, separators=(",", ":")))
    return f"curl -H 'Content-Type: application/json' -d {body} {url}"


def write(runner: Runner, result: Result, environ: Mapping[str, str], root: Path) -> None:
    """Write the results wherever the CI provider reads them (:func:`cicd.ci.places` says
    where); outside CI, nowhere."""
    places = ci.places(environ)
    if places.step_outputs is not None:
        text = "".join(f"{name}={value}\n" for name, value in outputs(result).items())
        _append(runner, "GITHUB_OUTPUT", places.step_outputs, text)
    if places.step_summary is not None:
        _append(runner, "GITHUB_STEP_SUMMARY", places.step_summary, summary(result))
    if places.dotenv_report:
        path = root / DOTENV_FILE
        runner.call(["sh", "-c", f"cat > {DOTENV_FILE}"], lambda: path.write_text(dotenv(result)))


def write_publish(
    run: Run, goal: Target, digest: str, seconds: Sequence[tuple[str, float]], built: bool
) -> Result:
    """:func:`write` for the publish session; ``seconds``: its steps so far and their
    durations; ``built``: False when it was skipped (the registry had the image). Returns
    what it wrote, for the summary a local run ends with."""
    result = Result(
        repository=goal.repository,
        tags=goal.tags,
        digest=digest,
        model_tag=goal.model.tag,
        skipped=not built,
        size=local_size(run.docker, goal.references[0]) if built else None,
        seconds=tuple(seconds),
    )
    write(run.runner, result, run.environ, run.settings.root)
    return result


def local_size(client: Client, reference: str) -> int | None:
    """Size in bytes of a local image (python-on-whales), None if the engine lacks it."""
    from python_on_whales.exceptions import DockerException

    from cicd.docker import whales

    try:
        return int(whales(client).image.inspect(reference).size)
    except DockerException:
        return None


def _append(runner: Runner, variable: str, path: Path, text: str) -> None:
    def append() -> None:
        with path.open("a", encoding="utf-8") as file:
            file.write(text)

    runner.call(["sh", "-c", f"cat >> ${variable}"], append)
