"""Fixtures of the integration tests that more than one module uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import fake_forge


@pytest.fixture
def report_md(tmp_path: Path) -> Path:
    """The report the report step publishes (tests/support/fake_forge.py's text)."""
    return fake_forge.report_md(tmp_path)
