"""Fixtures of the integration tests that more than one module uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import fake_forge
from tests.support.template import RenderedTemplate, render_and_train_once


@pytest.fixture
def report_md(tmp_path: Path) -> Path:
    """The report the report step publishes (tests/support/fake_forge.py's text)."""
    return fake_forge.report_md(tmp_path)


@pytest.fixture(scope="session")
def rendered_template(tmp_path_factory, worker_id) -> RenderedTemplate:
    """The run's one repository rendered from template/ and trained
    (tests/support/template.py), shared by pytest-xdist's workers through a file lock."""
    pytest.importorskip("copier")
    base = tmp_path_factory.getbasetemp()
    return render_and_train_once(base if worker_id == "master" else base.parent)
