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
    "anchor-pipeline-latest": "anchor_pipeline",
    "layers-latest": "layers",
    "layers-quick-latest": "layers",
    "model-only-latest": "model_only",
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
    # found only by a line that starts with its marker (the step before it ends with `✓ NAME`),
    # so each duration is positive.
    pipeline = bench.import_module("pipeline")
    lines = [
        (0.3, "nox > Creating virtual environment (uv) using python in .nox/publish"),
        (3.8, "nox > invoke check-published import-model bento containerize smoke push attest"),
        (4.6, "✓ check-published  not published yet: building it (0.8 s)"),
        (6.0, "✓ import-model     celestial_bodies_classifier_model:1 (1.4 s)"),
        (10.0, "✓ bento            celestial_bodies_classifier:abc (4.0 s)"),
        (20.0, "✓ containerize     registry/image:abc (10.0 s)"),
        (22.0, "✓ smoke            answers 'Earth', as the model does (2.0 s)"),
        (33.0, "✓ push             sha256:1 (11.0 s)"),
        (35.0, "attested registry/image:abc"),
        (36.0, "✓ attest           signed (3.0 s)"),
    ]
    steps = pipeline.publish_steps(lines, 36.5)
    assert list(steps) == [name for name, _ in pipeline.PUBLISH_MARKERS]
    assert steps["publish: environment"] == 3.5
    assert steps["publish: push"] == 11.0
    assert steps["publish: containerize"] == 10.0
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


def test_a_guide_scripts_steps_are_read_from_its_step_lines(bench):
    pipeline = bench.import_module("pipeline")
    output = "Collecting x\n@step venv 4.180\nUsing cached x.whl\n@step pip-install 95.950\n"
    assert pipeline.shell_steps(output) == {"venv": 4.18, "pip-install": 95.95}


def test_the_layers_table_puts_a_model_only_change_beside_its_floor(bench):
    layers = bench.import_module("layers")
    load = {"load1": 0.5, "busy": []}
    side = {"seconds": 0.0, "received_bytes": 1, "new_blob_bytes": 1, "new_blobs": 1,
            "layers": []}  # fmt: skip
    data = {
        "date": "d", "machine": "m", "commit": "c" * 40, "run_seconds": 60,
        "suite_steps": ["check-published", "smoke"], "load_before": load, "load_after": load,
        "scenarios": [
            {"scenario": "first publish", "change": {"what": "as it is", "bytes": None},
             "suite": side, "guide": side},
            {"scenario": "model-only change", "change": {"what": "seed", "bytes": 1_460_000},
             "suite": {**side, "seconds": 18.0}, "guide": {**side, "seconds": 40.0},
             "floor": {"seconds": 12.0, "received_bytes": 1_500_000, "load": load,
                       "parts": {"pull": 5.0, "build": 1.0, "smoke": 3.0, "push": 3.0}}},
        ],
    }  # fmt: skip
    table = layers.render(data)
    row = next(line for line in table.splitlines() if line.startswith("| model-only change | 18"))
    assert "| 12.0 s (5.0 + 1.0 + 3.0 + 3.0) | 0.45 | 1.50 | 1.50 MB | 0.50 |" in row
    assert "`invoke check-published smoke`" in table
    # A result written before the floor was measured renders as it did.
    del data["scenarios"][1]["floor"]
    assert "beside its floor" not in layers.render(data)


def test_the_anchor_pipeline_table_gives_suite_over_guide_and_says_where_installs_came_from(
    bench,
):
    anchor_pipeline = bench.import_module("anchor_pipeline")
    load = {"load1": 3.0, "busy": ["90.0% python x"]}

    def side_run(total: float, train: float, steps: dict) -> dict:
        return {"total": total, "train": train, "publish": total - train, "steps": steps,
                "dvc_recomputed": False, "pip_local": 120, "pip_downloaded": 0,
                "load": load}  # fmt: skip

    data = {
        "date": "d", "machine": "m", "commit": "c" * 40, "run_seconds": 600,
        "config": {"cold": 1, "warm": 1}, "load_before": load, "load_after": load,
        "cold": {"guide": [side_run(400.0, 150.0, {"venv": 4.0})],
                 "suite": [side_run(60.0, 10.0, {"nox-train": 10.0})]},
        "warm": {"guide": [side_run(40.0, 10.0, {"venv": 0.0})],
                 "suite": [side_run(8.0, 4.0, {"nox-train": 4.0})]},
        "guide": {"image_bytes": 3_000_000_000, "registry_bytes": 1_000_000_000},
        "suite": {"image_bytes": 430_000_000, "registry_bytes": 150_000_000},
    }  # fmt: skip
    table = anchor_pipeline.render(data)
    assert "| cold: whole pipeline (median of 1) | 60.0 s | 400.0 s | 0.15 |" in table
    assert "| warm: publish part (median of 1) | 4.0 s | 30.0 s | 0.13 |" in table
    assert "| image size | 430 MB | 3,000 MB | 0.14 |" in table
    assert "took 120 wheel(s) from a local wheelhouse" in table
    assert "and downloaded 0 in its cold run(s)" in table
    assert "a busy machine" in table  # a figure from a loaded machine says so


def test_the_guide_install_counts_only_the_pip_step_wheels(bench):
    anchor_pipeline = bench.import_module("anchor_pipeline")
    output = (
        "@step venv 4.0\nProcessing /w/tensorflow.whl\nProcessing /w/dvc.whl\n"
        "@step pip-install 90.0\n#9 Downloading tensorflow (572 MiB)\n@step containerize 9.0\n"
    )  # the image build's installer downloads inside the engine: not pip's
    assert anchor_pipeline.pip_sources(output) == {"pip_local": 2, "pip_downloaded": 0}
