"""Rendering the report from data shaped like DVC's ``--json`` diff output (no DVC runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cicd.charts import svg, vega_charts
from cicd.errors import SuiteError
from cicd.report import (
    PlotImages,
    collect_plot_images,
    directions,
    parse_dvc_json,
    render_metrics,
    render_params,
    render_plots,
    render_report,
)

# As printed by `dvc params diff main --json` / `dvc metrics diff main --json` (DVC 3.x).
PARAMS = {"params.yaml": {"train.lr": {"old": 0.1, "new": 0.3, "diff": 0.19999999999999998}}}
METRICS = {
    "evaluation/metrics.json": {
        "val_loss": {"old": 0.9, "new": 0.7, "diff": -0.20000000000000007},
        "val_acc": {"old": 0.2, "new": 0.6, "diff": 0.39999999999999997},
    }
}
NO_BASELINE = {
    "evaluation/metrics.json": {
        "val_acc": {"old": None, "new": 0.2},
        "f1_score": {"old": None, "new": 0.5},
    }
}


def _rows(table: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in table.splitlines()
        if line.startswith("|") and "---" not in line
    ]


def test_params_table_has_param_base_and_workspace_values():
    rows = _rows(render_params(PARAMS, "main"))
    assert rows == [["Param", "`main`", "workspace"], ["train.lr", "0.1", "0.3"]]


def test_params_from_several_files_are_prefixed_and_odd_values_are_readable():
    diff = {
        "params.yaml": {"train.layers": {"old": [1, 2], "new": [1, 2, 3]}},
        "extra.yaml": {"name": {"old": None, "new": "a|b"}},
    }
    rows = _rows(render_params(diff, "main"))
    assert ["params.yaml:train.layers", "[1, 2]", "[1, 2, 3]"] in rows
    # A missing value shows as a dash; a pipe is escaped so it does not split the cell.
    assert any(r[0] == "extra.yaml:name" and r[1] == "—" for r in rows)
    assert "a\\|b" in render_params(diff, "main")


def test_metrics_table_has_old_new_and_signed_change():
    rows = _rows(render_metrics(METRICS, "main"))
    assert rows[0] == ["Metric", "`main`", "workspace", "Change"]  # no direction known
    assert ["val_loss", "0.9", "0.7", "-0.2"] in rows
    assert ["val_acc", "0.2", "0.6", "+0.4"] in rows


def test_a_metric_change_says_better_or_worse():
    directions = {"val_loss": "lower", "val_acc": "lower"}
    rows = _rows(render_metrics(METRICS, "main", directions))
    assert ["val_loss", "0.9", "0.7", "-0.2 better", "↓ lower"] in rows
    assert ["val_acc", "0.2", "0.6", "+0.4 worse", "↓ lower"] in rows
    rows = _rows(render_metrics(METRICS, "main", {"val_acc": "higher"}))
    assert rows[0][-1] == "Better"
    assert ["val_loss", "0.9", "0.7", "-0.2", "—"] in rows  # unknown: no verdict
    assert ["val_acc", "0.2", "0.6", "+0.4 better", "↑ higher"] in rows


def test_which_way_is_better_comes_from_gates_yaml_then_the_name(tmp_path: Path):
    names = ["val_loss", "val_acc", "precision", "f1_score", "throughput", "margin"]
    assert directions(tmp_path, names) == {  # no gates.yaml: the names
        "val_loss": "lower",
        "val_acc": "higher",
        "precision": "higher",
        "f1_score": "higher",
    }
    (tmp_path / "gates.yaml").write_text(
        "gates:\n"
        "  margin: {min: 0.1}\n"  # a floor: higher is better
        "  val_acc: {min: 0.5, max: 0.99}\n"  # a range says nothing: the name does
        "better:\n"
        "  throughput: higher\n"
        "  precision: lower\n"  # what gates.yaml says wins over the name
    )
    assert directions(tmp_path, names) == {
        "val_loss": "lower",
        "val_acc": "higher",
        "precision": "lower",
        "f1_score": "higher",
        "throughput": "higher",
        "margin": "higher",
    }


def test_metrics_without_baseline_say_so_and_show_workspace_values():
    text = render_metrics(NO_BASELINE, "main")
    assert text.startswith("No baseline: `main` has no metrics yet")
    assert ["val_acc", "—", "0.2", "—"] in _rows(text)


def test_one_new_metric_is_not_a_missing_baseline():
    diff = {"m.json": {"a": {"old": 1, "new": 2, "diff": 1}, "b": {"old": None, "new": 3}}}
    text = render_metrics(diff, "main")
    assert "No baseline" not in text
    assert ["b", "—", "3", "—"] in _rows(text)


def test_nothing_changed_says_no_changes():
    assert render_params({}, "main").startswith("No changes")
    assert render_metrics({}, "main").startswith("No changes")


def test_plots_side_by_side_with_relative_links(tmp_path: Path):
    out = tmp_path / "report"
    plots_json = {
        "data": {
            "evaluation/plots/training_history.png": [
                {"type": "image", "revisions": ["workspace"], "url": f"{out}/workspace_t.png"},
                {"type": "image", "revisions": ["main"], "url": f"{out}/main_t.png"},
            ],
            "evaluation/plots/loss.csv": [{"type": "vega", "revisions": ["main"]}],
        }
    }
    pairs, errors = collect_plot_images(plots_json, "main", tmp_path)
    assert pairs == [
        PlotImages(
            "evaluation/plots/training_history.png", "report/main_t.png", "report/workspace_t.png"
        )
    ]
    assert errors == []
    rows = _rows(render_plots(pairs, "main"))
    assert rows[0] == ["`main`", "workspace"]
    assert rows[1][0].startswith("![training_history (main)](report/main_t.png")
    assert rows[1][1].startswith("![training_history](report/workspace_t.png")


def test_plot_that_base_cannot_load_is_marked_and_the_error_listed(tmp_path: Path):
    plots_json = {
        "errors": [{"rev": "main", "type": "DataIndexDirError", "msg": "failed to load"}],
        "data": {
            "p.png": [{"type": "image", "revisions": ["workspace"], "url": f"{tmp_path}/w.png"}]
        },
    }
    pairs, errors = collect_plot_images(plots_json, "main", tmp_path)
    text = render_plots(pairs, "main", errors)
    assert _rows(text)[1][0] == "(not available)"
    assert "main: DataIndexDirError: failed to load" in text
    assert "dvc push" in text


def test_whole_report_has_title_with_sha_and_all_sections():
    text = render_report(
        sha="abc123", base="main", params=PARAMS, metrics=METRICS, plots=[], base_sha="f" * 40
    )
    assert text.splitlines()[0] == "# Experiment Report (abc123)"
    assert "`main` (ffffffffffff)" in text
    for heading in ("## Params", "## Metrics", "## Plots"):
        assert heading in text
    assert "No plots found" in text


def test_parse_dvc_json_ignores_warnings_merged_from_stderr():
    output = (
        "DVC failed to load some metrics for following revisions: 'main'.\n"
        '{"m.json": {"a": {"old": null, "new": 1}}}\n'
    )
    assert parse_dvc_json(output) == {"m.json": {"a": {"old": None, "new": 1}}}
    with pytest.raises(SuiteError, match="no JSON"):
        parse_dvc_json("ERROR: something broke\n")


def _vega(name: str, y: list[str], rows: list[tuple[str, int, dict[str, float]]]) -> dict:
    """A Vega plot of `dvc plots diff --json` (DVC 3.x, linear template), data inlined."""
    several = len(y) > 1
    values = [
        {"epoch": epoch, **row, "rev": rev}
        | ({"field": field, "dvc_inferred_y_value": row[field]} if several else {})
        for rev, epoch, row in rows
        for field in (y if several else y[:1])
    ]
    y_field = "dvc_inferred_y_value" if several else y[0]
    return {
        "type": "vega",
        "revisions": sorted({rev for rev, _, _ in rows}),
        "content": {
            "data": {"values": values},
            "encoding": {"x": {"field": "epoch"}},
            "layer": [{"encoding": {"y": {"field": y_field}}}],
        },
    }


LOSS_ROWS = [
    (rev, epoch, {"train_loss": 1.0 / epoch + shift, "val_loss": 1.2 / epoch + shift})
    for rev, shift in (("main", 0.1), ("workspace", 0.0))
    for epoch in (1, 2, 3)
]


def test_the_vega_plots_of_dvc_yaml_are_drawn_with_both_revisions(tmp_path: Path):
    plots_json = {
        "data": {
            "Loss": [_vega("Loss", ["train_loss", "val_loss"], LOSS_ROWS)],
            "Validation accuracy": [
                _vega("Validation accuracy", ["val_acc"], [("workspace", 1, {"val_acc": 0.6})])
            ],
            "p.png": [{"type": "image", "revisions": ["main"], "url": f"{tmp_path}/m.png"}],
        }
    }
    loss, accuracy = vega_charts(plots_json, "main")
    assert [(s.revision, s.field) for s in loss.series] == [
        ("main", "train_loss"),
        ("main", "val_loss"),
        ("workspace", "train_loss"),
        ("workspace", "val_loss"),
    ]
    assert loss.series[0].points == ((1.0, 1.1), (2.0, 0.6), (3.0, 1.0 / 3 + 0.1))
    assert (loss.file_name, accuracy.file_name) == ("vega_loss.svg", "vega_validation_accuracy.svg")
    assert accuracy.y_title == "val_acc"

    import xml.etree.ElementTree as ET

    drawing = ET.fromstring(svg(loss, "main"))
    lines = drawing.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 4
    assert [line.get("stroke-dasharray") for line in lines] == ["6 4", "6 4", None, None]
    assert all(len(line.get("points").split()) == 3 for line in lines)

    text = render_plots([], "main", charts=[("Loss", "report/vega_loss.svg")])
    assert text.startswith('### Loss\n\n![Loss](report/vega_loss.svg "Loss")')
    assert "Dashed: `main`; solid: workspace." in text
