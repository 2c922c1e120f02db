"""README's benchmark figures are the committed result files, rendered from their raw JSON."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"


@pytest.fixture(scope="module")
def bench(request):
    sys.path.insert(0, str(ROOT / "bench"))
    request.addfinalizer(lambda: sys.path.remove(str(ROOT / "bench")))
    return importlib


def test_readme_shows_the_committed_results_verbatim(bench):
    readme = bench.import_module("readme")
    text = (ROOT / "README.md").read_text()
    assert readme.BLOCK.search(text), "README.md has no benchmark block"
    assert readme.render(text) == text, "run `python bench/readme.py`"


# result file (without .json/.md) -> the bench script that wrote it and renders its table
RENDERED_BY = {
    "anchor-latest": "anchor",
    "layers-latest": "layers",
    "push-floor-latest": "push_floor",
    "pipeline-latest": "run",
    "serving-floor/ab-idle-main": "serving_ab",
}


def test_every_block_of_the_readme_is_a_file_a_script_renders(bench):
    readme = bench.import_module("readme")
    shown = {m["path"] for m in readme.BLOCK.finditer((ROOT / "README.md").read_text())}
    rendered = {f"bench/results/{name}.md" for name in RENDERED_BY}
    assert shown <= rendered, f"add the new result files to RENDERED_BY: {shown - rendered}"


@pytest.mark.parametrize("name", sorted(RENDERED_BY))
def test_each_result_table_is_rendered_from_its_raw_json(bench, name):
    module = bench.import_module(RENDERED_BY[name])
    data = json.loads((RESULTS / f"{name}.json").read_text())
    assert module.render(data) == (RESULTS / f"{name}.md").read_text()
    # Traceable: the machine, the date and the commit are in the raw file.
    assert data["machine"] and data["date"] and len(data["commit"]) >= 12
