"""Metric gates: bounds the model's metrics must meet, absolute and relative to the base branch.

``gates.yaml`` (at the repository root, tracked by git) declares per metric of
``evaluation/metrics.json`` any of:

* ``min`` / ``max``: absolute bounds (``val_acc: {min: 0.70}``);
* ``max_drop`` / ``max_rise``: how far below / above the base branch's value it may go, in
  the metric's units (``val_acc: {max_drop: 0.02}``);
* ``max_drop_pct`` / ``max_rise_pct``: the same in percent of the base value
  (``val_loss: {max_rise_pct: 10}``).

`invoke report` evaluates them all (the base values are DVC's, from ``dvc metrics diff``),
shows a table and fails after writing and posting the report; the publish session's first
step (`check-published`) evaluates the absolute ones before anything is pulled or built.
``--no-gates`` skips them, and says so loudly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from cicd.errors import GateError, GateFailed

if TYPE_CHECKING:
    from cicd.shell import Runner

GATES_FILE = "gates.yaml"
ABSOLUTE = ("min", "max")
RELATIVE = ("max_drop", "max_rise", "max_drop_pct", "max_rise_pct")
NO_GATES_WARNING = (
    "WARNING: --no-gates: the metric gates of gates.yaml are NOT checked; "
    "this model may be worse than its bounds allow"
)


@dataclass(frozen=True)
class Result:
    """One bound of one metric, checked."""

    metric: str
    rule: str  # min, max, max_drop, ...
    value: float | None
    bound: float | None  # the value the metric is compared with (None: not computable)
    status: str  # pass, fail, skip
    note: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "fail"

    @property
    def comparison(self) -> str:
        """``>= 0.7`` or ``<= 0.9106 (main 0.8278 +10%)``."""
        if self.bound is None:
            return self.note
        sign = ">=" if self.rule in ("min", "max_drop", "max_drop_pct") else "<="
        text = f"{sign} {self.bound:.5g}"
        return f"{text} ({self.note})" if self.note else text

    def line(self) -> str:
        value = "missing" if self.value is None else f"{self.value:.5g}"
        return f"{self.metric} = {value}, must be {self.comparison} ({self.rule} in {GATES_FILE})"


def load(root: Path) -> dict[str, dict[str, float]]:
    """The ``gates`` section of ``gates.yaml`` ({} without the file): metric -> rule -> number."""
    path = root / GATES_FILE
    if not path.exists():
        return {}
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise GateError(f"{GATES_FILE} is not valid YAML{where}: fix it") from None
    section = document.get("gates") if isinstance(document, dict) else None
    if not isinstance(section, dict):
        raise GateError(f"{GATES_FILE} has no `gates:` mapping: see model-cicd's docs/gates.md")
    gates: dict[str, dict[str, float]] = {}
    for metric, rules in section.items():
        if not isinstance(rules, dict) or not rules:
            raise GateError(f"{GATES_FILE}: {metric} needs bounds, e.g. {{min: 0.7}}")
        for rule, bound in rules.items():
            if rule not in ABSOLUTE + RELATIVE:
                known = ", ".join(ABSOLUTE + RELATIVE)
                raise GateError(f"{GATES_FILE}: {metric}: unknown bound {rule!r} (known: {known})")
            if not _number(bound):
                raise GateError(f"{GATES_FILE}: {metric}.{rule} must be a number, not {bound!r}")
        gates[str(metric)] = {rule: float(bound) for rule, bound in rules.items()}
    return gates


def evaluate(
    gates: Mapping[str, Mapping[str, float]],
    metrics: Mapping[str, float],
    base: Mapping[str, float] | None = None,
    base_name: str = "base",
    absolute_only: bool = False,
) -> list[Result]:
    """Every bound of ``gates`` checked against ``metrics``; relative bounds against ``base``
    (skipped when the base has no value for the metric, or with ``absolute_only``)."""
    results = []
    for metric, rules in gates.items():
        value = metrics.get(metric)
        for rule, bound in rules.items():
            if rule in RELATIVE and absolute_only:
                continue
            if value is None:
                results.append(Result(metric, rule, None, None, "fail", "no such metric"))
                continue
            if rule == "min":
                results.append(_check(metric, rule, value, bound, value >= bound))
                continue
            if rule == "max":
                results.append(_check(metric, rule, value, bound, value <= bound))
                continue
            old = (base or {}).get(metric)
            if old is None:
                results.append(
                    Result(metric, rule, value, None, "skip", f"{base_name} has no {metric}")
                )
                continue
            limit, note = _relative_limit(rule, bound, old, base_name)
            ok = value >= limit if "drop" in rule else value <= limit
            results.append(_check(metric, rule, value, limit, ok, note))
    return results


def _relative_limit(rule: str, bound: float, old: float, base_name: str) -> tuple[float, str]:
    if rule == "max_drop":
        return old - bound, f"{base_name} {old:.5g} − {bound:g}"
    if rule == "max_rise":
        return old + bound, f"{base_name} {old:.5g} + {bound:g}"
    if rule == "max_drop_pct":
        return old - abs(old) * bound / 100, f"{base_name} {old:.5g} − {bound:g}%"
    return old + abs(old) * bound / 100, f"{base_name} {old:.5g} + {bound:g}%"


def _check(metric: str, rule: str, value: float, bound: float, ok: bool, note: str = "") -> Result:
    # A tolerance for the float noise of the relative bounds (0.73 - 0.02 vs 0.71).
    ok = ok or math.isclose(value, bound, rel_tol=1e-9, abs_tol=1e-12)
    return Result(metric, rule, value, bound, "pass" if ok else "fail", note)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def failure(results: list[Result]) -> GateFailed | None:
    """One line naming every failing bound, or None when all pass."""
    failed = [result for result in results if result.failed]
    if not failed:
        return None
    what = "; ".join(result.line() for result in failed)
    return GateFailed(
        f"metric gate failed: {what}: improve the model, or change gates.yaml in a reviewed "
        "commit (--no-gates skips the check, loudly)"
    )


def show(runner: Runner, results: list[Result]) -> None:
    """One line per checked bound: ``gate pass: val_acc = 0.73333, must be >= 0.7 (...)``."""
    for result in results:
        # A passing bound is a detail (verbose); a failing one is what the user must see.
        say = runner.echo if result.failed else runner.detail
        say(f"gate {result.status}: {result.line()}")


def check_absolute(runner: Runner, root: Path, metrics: Mapping[str, float]) -> list[Result]:
    """The absolute gates of ``root``'s gates.yaml against ``metrics``: each shown; raises
    :class:`GateFailed` when one fails."""
    gates = load(root)
    if not gates:
        runner.echo(f"no {GATES_FILE}: no metric gates to check")
        return []
    results = evaluate(gates, metrics, absolute_only=True)
    show(runner, results)
    error = failure(results)
    if error:
        raise error
    return results
