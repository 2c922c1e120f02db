"""The workflows' actions are pinned by commit SHA, with the version as a comment
(`uses: actions/checkout@<40 hex> # v5.1.0`), the form Dependabot (.github/dependabot.yml)
updates: a moved tag cannot change what CI runs. Checked here and in the template."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted(
    [
        *(ROOT / ".github" / "workflows").glob("*.y*ml"),
        *(ROOT / "template" / ".github" / "workflows").glob("*.y*ml.jinja"),
    ]
)
USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<value>.*)$")
PINNED = re.compile(r"(?P<action>[\w.-]+/[\w./-]+)@(?P<sha>[0-9a-f]{40}) # v\d+(\.\d+){0,2}")


def uses_lines(path: Path) -> list[tuple[int, str]]:
    lines = path.read_text().splitlines()
    found = [(number, USES.match(line)) for number, line in enumerate(lines, 1)]
    return [(number, match["value"]) for number, match in found if match]


def test_there_are_workflows_with_actions():
    assert WORKFLOWS and all(uses_lines(path) for path in WORKFLOWS)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_action_is_pinned_by_commit_sha_with_its_version(path: Path):
    unpinned = [
        f"{path.relative_to(ROOT)}:{number}: {value}"
        for number, value in uses_lines(path)
        if not value.startswith(("./", "docker://")) and not PINNED.fullmatch(value)
    ]
    assert not unpinned, (
        "pin actions by their full commit SHA with the version as a comment, "
        f"`uses: OWNER/REPO@<40 hex> # vX.Y.Z`: {unpinned}"
    )


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_an_action_has_one_pin_per_file(path: Path):
    pins: dict[str, set[str]] = {}
    for _, value in uses_lines(path):
        if match := PINNED.fullmatch(value):
            pins.setdefault(match["action"], set()).add(value)
    assert {action: found for action, found in pins.items() if len(found) > 1} == {}
