"""The documentation's benchmark figures are the committed result files, rendered from their
raw JSON (the tables live in docs/benchmarks.md; bench/readme.py scans README.md and docs/)."""

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


def test_the_benchmark_page_shows_the_committed_results_verbatim(bench):
    readme = bench.import_module("readme")
    page = ROOT / "docs" / "benchmarks.md"
    assert page in readme.pages(), "bench/readme.py does not scan docs/benchmarks.md"
    assert readme.BLOCK.search(page.read_text()), "docs/benchmarks.md has no benchmark block"
    for path in readme.pages():
        text = path.read_text()
        assert readme.render(text) == text, (
            f"{path.relative_to(ROOT)}: run `python bench/readme.py`"
        )


# result file (without .json/.md) -> the bench script that wrote it and renders its table
RENDERED_BY = {
    "anchor-latest": "anchor",
    "layers-latest": "layers",
    "push-floor-latest": "push_floor",
    "pipeline-latest": "run",
    "publish-overlap-latest": "publish_overlap",
    "publish-overlap-ab-latest": "publish_overlap_ab",
    "serving-floor/ab-idle-main": "serving_ab",
    "suite-latest": "suite",
    "sweep-latest": "sweep",
}


def test_every_block_of_the_pages_is_a_file_a_script_renders(bench):
    readme = bench.import_module("readme")
    shown = {m["path"] for path in readme.pages() for m in readme.BLOCK.finditer(path.read_text())}
    rendered = {f"bench/results/{name}.md" for name in RENDERED_BY}
    assert shown <= rendered, f"add the new result files to RENDERED_BY: {shown - rendered}"


@pytest.mark.parametrize("name", sorted(RENDERED_BY))
def test_each_result_table_is_rendered_from_its_raw_json(bench, name):
    module = bench.import_module(RENDERED_BY[name])
    data = json.loads((RESULTS / f"{name}.json").read_text())
    assert module.render(data) == (RESULTS / f"{name}.md").read_text()
    # Traceable: the machine, the date and the commit are in the raw file.
    assert data["machine"] and data["date"] and len(data["commit"]) >= 12


def test_publish_steps_are_timed_from_the_line_each_step_starts_with(bench):
    # nox's own line names every step ("invoke check-published ... push attest"): a step is
    # found only by a line that starts with its marker, so each duration is positive.
    pipeline = bench.import_module("pipeline")
    lines = [
        (0.3, "nox > Creating virtual environment (uv) using python in .nox/publish"),
        (3.8, "nox > invoke check-published import-model bento containerize smoke push attest"),
        (4.6, "$ bentoml models import /clone/model/m.bentomodel"),
        (6.0, "$ bentoml build --bentofile bentofile.yaml src"),
        (10.0, "$ bentoml containerize celestial_bodies_classifier:abc --backend docker"),
        (20.0, "$ /usr/bin/docker run --detach --name smoke-1 image"),
        (22.0, "smoke test passed: image predicts 'Earth' for Earth_1.jpg"),
        (33.0, "✓ push             sha256:1 (11.0 s)"),
        (35.0, "attested registry/image:abc"),
        (36.0, "published registry/image:abc, registry/image:latest (sha256:1)"),
    ]
    steps = pipeline.publish_steps(lines, 36.5)
    assert list(steps) == [name for name, _ in pipeline.PUBLISH_MARKERS]
    assert steps["publish: environment"] == 3.5
    assert steps["publish: push"] == 11.0
    assert steps["publish: attest"] == 3.5
    assert all(seconds > 0 for seconds in steps.values())
    # A warm run: the environment is reused and publish stops after check-published.
    assert pipeline.publish_steps([(0.5, lines[1][1])], 1.0) == {"publish: check-published": 0.5}


def test_the_sweep_pads_the_archive_to_the_target_and_never_shrinks_it(bench, tmp_path):
    import io
    import tarfile

    sweep = bench.import_module("sweep")
    assert sweep.padding_bytes(1_460_000, 1) == 0  # the real model is the smallest point
    assert sweep.padding_bytes(1_460_000, 100) == 98_540_000
    archive = tmp_path / "m.bentomodel"
    with tarfile.open(archive, "w:xz") as tar:  # as BentoML exports it
        info = tarfile.TarInfo("model.onnx")
        info.size = 1000
        tar.addfile(info, io.BytesIO(b"w" * 1000))
    first = sweep.pad_archive(archive, 2)
    with tarfile.open(archive) as tar:
        padding = tar.extractfile(sweep.PADDING).read()
    again = sweep.pad_archive(archive, 2)  # a model-only change: new padding, same size
    assert sweep.archive_compression(archive.read_bytes()[:6]) == "xz"  # BentoML reads it so
    with tarfile.open(archive) as tar:
        assert tar.getnames() == ["model.onnx", sweep.PADDING]  # one padding member, not two
        assert tar.extractfile("model.onnx").read() == b"w" * 1000
        assert tar.extractfile(sweep.PADDING).read() != padding
    assert abs(first - 2_000_000) < 2048 and abs(again - 2_000_000) < 2048


def test_the_sweep_sets_the_data_set_size_in_params_yaml(bench):
    sweep = bench.import_module("sweep")
    params = (ROOT / "params.yaml").read_text()
    changed = sweep.set_images_per_class(params, 6000)
    import yaml

    assert yaml.safe_load(changed)["generate"]["images_per_class"] == 6000
    assert yaml.safe_load(changed)["train"] == yaml.safe_load(params)["train"]
    with pytest.raises(ValueError, match=r"no generate\.images_per_class"):
        sweep.set_images_per_class("generate:\n  seed: 1\ntrain:\n  seed: 2\n", 6000)


def test_the_sweep_runs_the_smaller_points_of_both_sweeps_first(bench):
    sweep = bench.import_module("sweep")
    assert sweep.interleave([500, 1, 100], [60000, 6000]) == [
        ("model", 1), ("images", 6000), ("model", 100), ("images", 60000), ("model", 500),
    ]  # fmt: skip
    assert sweep.interleave([], [6000]) == [("images", 6000)]
