"""Metric gates: reading gates.yaml, absolute and relative bounds, the report's table."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from cicd import gates
from cicd.gates import GateError, GateFailed, evaluate, failure
from cicd.report import render_gates
from cicd.shell import Runner

ROOT = Path(__file__).resolve().parents[2]
METRICS = {"val_acc": 0.73, "val_loss": 0.83, "f1_score": 0.72}
BASE = {"val_acc": 0.74, "val_loss": 0.80, "f1_score": 0.72}


def statuses(results):
    return [(r.metric, r.rule, r.status) for r in results]


def test_absolute_bounds():
    results = evaluate({"val_acc": {"min": 0.70}, "val_loss": {"max": 0.80}}, METRICS)
    assert statuses(results) == [("val_acc", "min", "pass"), ("val_loss", "max", "fail")]
    assert results[1].line() == "val_loss = 0.83, must be <= 0.8 (max in gates.yaml)"


def test_relative_bounds_use_the_base_values():
    rules = {
        "val_acc": {"max_drop": 0.02, "max_drop_pct": 0.5},
        "val_loss": {"max_rise_pct": 5, "max_rise": 0.01},
    }
    results = evaluate(rules, METRICS, BASE, base_name="main")
    assert statuses(results) == [
        ("val_acc", "max_drop", "pass"),  # 0.73 >= 0.74 - 0.02
        ("val_acc", "max_drop_pct", "fail"),  # 0.73 < 0.74 - 0.5 %
        ("val_loss", "max_rise_pct", "pass"),  # 0.83 <= 0.80 + 5 % = 0.84
        ("val_loss", "max_rise", "fail"),  # 0.83 > 0.81
    ]
    assert results[0].bound == pytest.approx(0.72)
    assert results[2].comparison == "<= 0.84 (main 0.8 + 5%)"
    # Another base, another verdict: the bound is relative to what the base branch has.
    better_base = {**BASE, "val_acc": 0.80}
    assert evaluate({"val_acc": {"max_drop": 0.02}}, METRICS, better_base)[0].status == "fail"


def test_a_bound_met_exactly_passes_despite_float_noise():
    results = evaluate({"val_acc": {"max_drop": 0.02}}, {"val_acc": 0.71}, {"val_acc": 0.73})
    assert results[0].status == "pass"


def test_relative_bounds_without_base_are_skipped_and_absolute_only_leaves_them_out():
    rules = {"val_acc": {"min": 0.7, "max_drop": 0.02}}
    assert statuses(evaluate(rules, METRICS, {})) == [
        ("val_acc", "min", "pass"),
        ("val_acc", "max_drop", "skip"),
    ]
    assert statuses(evaluate(rules, METRICS, BASE, absolute_only=True)) == [
        ("val_acc", "min", "pass")
    ]


def test_a_missing_metric_fails():
    results = evaluate({"accuracy": {"min": 0.5}}, METRICS)
    assert results[0].status == "fail" and "missing" in results[0].line()


def test_failure_is_one_line_naming_every_failed_bound():
    results = evaluate({"val_acc": {"min": 0.9}, "val_loss": {"max": 0.5}}, METRICS)
    message = str(failure(results))
    assert message.startswith("metric gate failed: val_acc = 0.73, must be >= 0.9")
    assert "val_loss = 0.83, must be <= 0.5" in message and "\n" not in message
    assert failure(evaluate({"val_acc": {"min": 0.5}}, METRICS)) is None


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("gates: [", "not valid YAML (line 1)"),
        ("other: 1\n", "no `gates:` mapping"),
        ("gates:\n  val_acc: 0.7\n", "val_acc needs bounds"),
        ("gates:\n  val_acc: {minimum: 0.7}\n", "unknown bound 'minimum'"),
        ("gates:\n  val_acc: {min: high}\n", "must be a number, not 'high'"),
        ("gates:\n  val_acc: {min: true}\n", "must be a number, not True"),
    ],
)
def test_a_bad_gates_file_is_one_clear_line(tmp_path, text, error):
    (tmp_path / "gates.yaml").write_text(text)
    with pytest.raises(GateError, match=error.replace("(", r"\(").replace(")", r"\)")):
        gates.load(tmp_path)


def test_no_file_no_gates(tmp_path):
    assert gates.load(tmp_path) == {}
    out = io.StringIO()
    assert gates.check_absolute(Runner(out=out), tmp_path, METRICS) == []
    assert "no gates.yaml" in out.getvalue()


def test_the_committed_model_passes_the_committed_gates():
    from cicd.image import read_metrics

    metrics = read_metrics(ROOT)
    results = gates.check_absolute(Runner(out=io.StringIO()), ROOT, metrics)
    assert results and all(r.status == "pass" for r in results)


def test_check_absolute_raises_on_a_failing_gate(tmp_path):
    (tmp_path / "gates.yaml").write_text("gates:\n  val_acc: {min: 0.9, max_drop: 0.5}\n")
    out = io.StringIO()
    with pytest.raises(GateFailed, match=r"val_acc = 0\.73, must be >= 0\.9"):
        gates.check_absolute(Runner(out=out), tmp_path, METRICS)
    assert "gate fail: val_acc" in out.getvalue() and "max_drop" not in out.getvalue()


def test_the_report_table():
    results = evaluate({"val_acc": {"min": 0.9}, "f1_score": {"max_drop": 0.1}}, METRICS, BASE)
    heading, body = render_gates(results)
    assert heading == "## Metric gates (`gates.yaml`)"
    assert body.startswith("**1 of 2 failed.**")
    # `>` as an HTML entity (cells are inert Markdown): GitHub and GitLab show ">=".
    assert "| ❌ fail | val_acc | min | 0.73 | &gt;= 0.9 |" in body
    assert "| ✅ pass | f1_score | max_drop | 0.72 | &gt;= 0.62 \\(base 0.72 − 0.1\\) |" in body
    assert render_gates([]) == []
    assert "Not checked" in render_gates(None)[1]
