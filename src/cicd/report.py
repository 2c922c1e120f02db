"""The experiment report: params, metrics and plots of the workspace against a base branch.

Replaces the guide's shell "report" job (``dvc params diff`` / ``dvc metrics diff`` /
``dvc plots diff`` piped into ``report.md``). The comparisons are DVC's own: we run
``dvc params diff <base> --json``, ``dvc metrics diff <base> --json`` and
``dvc plots diff <base> --json -o <images>`` and only render their JSON as Markdown; the
Vega plots of ``dvc.yaml``'s ``plots:`` are drawn as SVG line charts (:mod:`cicd.charts`).

A metric's change says whether it is better or worse (:func:`directions`: which way is
better comes from ``gates.yaml``'s ``better:`` mapping, else its bounds, else the name).

Layout: ``report.md`` (default at the repository root) and the images it shows in a folder
named like the report without ``.md`` (``report/``), linked relatively so that the report
renders wherever both are copied together (CI artifact, local preview).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from cicd import charts as vega
from cicd import ci
from cicd import gates as metric_gates
from cicd.errors import GateError, SuiteError
from cicd.shell import Runner, tool

if TYPE_CHECKING:
    from cicd.context import Run

WORKSPACE = "workspace"  # DVC's name for the working tree in diff output
MISSING = "—"


@dataclass(frozen=True)
class PlotImages:
    """One image plot: its DVC id and where its base / workspace image is (relative path)."""

    name: str
    base: str | None
    workspace: str | None


# --------------------------------------------------------------------------- building


def report(run: Run, base: str | None = None, post: bool | None = None, gates: bool = True) -> Path:
    """Write report.md for this commit against ``base`` (default: the base branch); post it
    (job summary, the pull request's comment) when ``post``, or in CI when None. Then fail
    (:class:`cicd.gates.GateFailed`) when a metric gate failed; ``gates=False``: not checked,
    which the report and the output say loudly."""
    from cicd import forge

    base = base or run.settings.base_branch
    if not gates:
        run.runner.echo(metric_gates.NO_GATES_WARNING)
    path, results = build_report(
        run.runner, run.settings.root, base=base, sha=ci.ci_sha(run.environ), gates=gates
    )
    if run.in_ci if post is None else post:
        timeout = run.settings.network_timeout
        run.runner.echo(forge.publish_report(run.runner, path, run.environ, timeout))
    error = metric_gates.failure(results)
    if error:
        raise error
    return path


def write_report(
    runner: Runner,
    repo: Path,
    base: str = "main",
    out: Path | None = None,
    sha: str | None = None,
) -> Path:
    """:func:`build_report` without the gates' results: the report's path."""
    return build_report(runner, repo, base, out, sha)[0]


def build_report(
    runner: Runner,
    repo: Path,
    base: str = "main",
    out: Path | None = None,
    sha: str | None = None,
    gates: bool = True,
) -> tuple[Path, list[metric_gates.Result]]:
    """Compare the workspace of ``repo`` with the branch ``base`` and write the report.

    ``out`` defaults to ``repo/report.md``; images go to ``out`` without suffix
    (``repo/report/``). ``sha`` (the commit the report is about) defaults to ``HEAD``.
    Fetches ``base`` from ``origin`` when the clone lacks it (shallow CI checkout); base's
    plots, being DVC outputs, are fetched by DVC from the remote configured in base's
    commit. In dry-run nothing is fetched or written; the commands are shown.
    With ``gates``, the metric gates of ``repo/gates.yaml`` are checked (the base values
    are those of ``dvc metrics diff``) and shown in the report; without, the report says
    they were not. Returns the report path and the gates' results.

    Images of an earlier run in the folder are not deleted (the folder could be anything the
    caller chose); DVC overwrites same-named files and the report links only this run's.
    """
    repo = repo.resolve()
    out = (out or repo / "report.md").resolve()
    images = out.with_suffix("")
    base_rev = resolve_base(runner, repo, base)
    sha = sha or _git(runner, repo, "rev-parse", "HEAD").strip()
    base_sha = _commit_of(runner, repo, base_rev)

    params = _dvc_json(runner, repo, ["params", "diff", base_rev, "--json"])
    metrics = _dvc_json(runner, repo, ["metrics", "diff", base_rev, "--json"])
    plots = _dvc_json(runner, repo, ["plots", "diff", base_rev, "--json", "-o", str(images)])
    if runner.dry:
        runner.echo(f"[dry-run] would write {out}")
        return out, []

    results = gate_results(repo, metrics, base_rev) if gates else None
    metric_gates.show(runner, results or [])
    pairs, errors = collect_plot_images(plots, base_rev, out.parent)
    drawn = []
    for chart in vega.vega_charts(plots, base_rev):
        images.mkdir(parents=True, exist_ok=True)
        (images / chart.file_name).write_text(vega.svg(chart, base_rev), encoding="utf-8")
        drawn.append((chart.name, _relative(str(images / chart.file_name), out.parent)))
    text = render_report(
        sha=sha,
        base=base_rev,
        base_sha=base_sha,
        params=params,
        metrics=metrics,
        plots=pairs,
        plot_errors=errors,
        gates=results,
        charts=drawn,
        directions=directions(repo, _metric_names(metrics)),
    )
    out.write_text(text, encoding="utf-8")
    runner.echo(f"Report written: {out} (images in {images}/)")
    return out, results or []


def gate_results(
    repo: Path, metrics_diff: Mapping[str, Any], base: str
) -> list[metric_gates.Result]:
    """The gates of ``repo/gates.yaml`` against the workspace's metrics, relative bounds
    against ``base``'s values from ``dvc metrics diff`` (a metric it does not list is
    unchanged: its base value is the workspace's)."""
    from cicd.image import METRICS_FILE, read_metrics

    gates = metric_gates.load(repo)
    if not gates:
        return []
    metrics = read_metrics(repo)
    changes = metrics_diff.get(METRICS_FILE) or {}
    base_values: dict[str, float] = {}
    for name, value in metrics.items():
        change = changes.get(name)
        old = change.get("old") if isinstance(change, dict) else value
        if isinstance(old, int | float) and not isinstance(old, bool):
            base_values[name] = float(old)
    return metric_gates.evaluate(gates, metrics, base_values, base_name=base)


def resolve_base(runner: Runner, repo: Path, base: str) -> str:
    """The revision DVC should compare with: ``base``, else ``origin/base``, else fetch it.

    CI checkouts are shallow and hold only the commit under test, so the base branch is
    usually absent; we fetch just its tip (``--depth=1``), as the guide's job did.
    """
    for candidate in (base, f"origin/{base}"):
        if _has_commit(runner, repo, candidate):
            return candidate
    hint = (
        f"base branch `{base}` is neither local nor on `origin`: "
        f"run `git fetch origin {base}:{base}` or choose another base"
    )
    runner.run(
        ["git", "fetch", "--depth=1", "origin", f"{base}:{base}"],
        cwd=repo,
        check=True,
        hint=hint,
    )
    if not runner.dry and not _has_commit(runner, repo, base):
        raise SuiteError(hint)
    return base


def _commit_of(runner: Runner, repo: Path, rev: str) -> str:
    """The commit SHA of ``rev``, or "" when the repository does not have it."""
    output = runner.query(
        ["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], cwd=repo
    )
    return (output or "").strip()


def _has_commit(runner: Runner, repo: Path, rev: str) -> bool:
    return bool(_commit_of(runner, repo, rev))


def _git(runner: Runner, repo: Path, *args: str) -> str:
    return runner.run(["git", *args], cwd=repo, quiet=True, always=True)


def _dvc_json(runner: Runner, repo: Path, args: Sequence[str]) -> dict[str, Any]:
    """Run a read-only ``dvc ... --json`` command, show it, and parse its JSON output."""
    command = [tool("dvc"), *args]
    if not runner.dry:
        runner.show(command)  # quiet below hides the JSON, not the command
    output = runner.run(command, cwd=repo, quiet=True)
    return parse_dvc_json(output) if not runner.dry else {}


def parse_dvc_json(output: str) -> dict[str, Any]:
    """The JSON object in ``output``.

    The runner merges stderr into stdout, and DVC warns on stderr ("DVC failed to load some
    metrics for following revisions: 'main'") around its one-line JSON document.
    """
    for line in output.splitlines():
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    raise SuiteError(f"DVC printed no JSON, got: {output.strip()[-300:]!r}; run it by hand")


def collect_plot_images(
    plots: Mapping[str, Any], base: str, report_dir: Path
) -> tuple[list[PlotImages], list[str]]:
    """Image plots from ``dvc plots diff --json`` output, with paths relative to the report.

    Vega plots are not images: :mod:`cicd.charts` draws them (:func:`build_report`). DVC does not
    fail when a revision's plot cannot be loaded (not pushed to the remote, not produced):
    it reports ``errors``; we return them as readable lines.
    """
    pairs = []
    for name, entries in plots.get("data", {}).items():
        found: dict[str, str] = {}
        for entry in entries:
            if entry.get("type") != "image" or not entry.get("url"):
                continue
            for rev in entry.get("revisions", []):
                found[rev] = _relative(entry["url"], report_dir)
        if any(e.get("type") == "image" for e in entries):
            pairs.append(PlotImages(name, found.get(base), found.get(WORKSPACE)))
    errors = [
        f"{e.get('rev', '?')}: {e.get('name') or e.get('source') or ''} "
        f"{e.get('type', 'error')}: {e.get('msg', '')}".replace("  ", " ")
        for e in plots.get("errors", [])
    ]
    return pairs, errors


def _relative(url: str, report_dir: Path) -> str:
    path = Path(url)
    if not path.is_absolute():
        return path.as_posix()
    return Path(os.path.relpath(path, report_dir)).as_posix()


# --------------------------------------------------------------------------- rendering


def render_report(
    *,
    sha: str,
    base: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    plots: Sequence[PlotImages],
    plot_errors: Sequence[str] = (),
    base_sha: str = "",
    gates: Sequence[metric_gates.Result] | None = (),
    charts: Sequence[tuple[str, str]] = (),
    directions: Mapping[str, str] | None = None,
) -> str:
    """The whole report as Markdown, from DVC diff JSON (params, metrics) and plot images.

    ``gates``: the metric gates' results (a section when any); None: they were not checked.
    ``charts``: the Vega plots drawn, as (name, relative path of the SVG); ``directions``:
    metric -> "higher" or "lower" (which is better)."""
    against = _code(base) + (f" ({base_sha[:12]})" if base_sha else "")
    parts = [
        f"# Experiment Report ({_text(sha)})",
        f"Workspace compared with {against}.",
        f"## Params: workspace vs. {_code(base)}",
        render_params(params, base),
        f"## Metrics: workspace vs. {_code(base)}",
        render_metrics(metrics, base, directions),
        *render_gates(gates),
        f"## Plots: {_code(base)} vs. workspace",
        render_plots(plots, base, plot_errors, charts),
    ]
    return "\n\n".join(parts) + "\n"


def render_params(diff: Mapping[str, Any], base: str) -> str:
    """``dvc params diff --json`` as a table: param, base value, workspace value."""
    rows = [
        (_param_name(file, name, diff), _value(change.get("old")), _value(change.get("new")))
        for file, params in diff.items()
        for name, change in params.items()
    ]
    if not rows:
        return f"No changes: parameters are the same as on {_code(base)}."
    return _table(["Param", f"{_code(base)}", "workspace"], rows)


def render_metrics(
    diff: Mapping[str, Any], base: str, directions: Mapping[str, str] | None = None
) -> str:
    """``dvc metrics diff --json`` as a table: metric, base value, workspace value, change
    (and whether it is better or worse), which way is better (``directions``: metric ->
    "higher" / "lower"; :func:`directions`; no such column when none is known)."""
    rows: list[tuple[str, ...]] = []
    olds = []
    for file, metrics in diff.items():
        for name, change in metrics.items():
            olds.append(change.get("old"))
            better = (directions or {}).get(name, "")
            rows.append(
                (
                    _param_name(file, name, diff),
                    _value(change.get("old")),
                    _value(change.get("new")),
                    _change(change.get("diff"), better),
                    BETTER_SHOWN.get(better, MISSING),
                )
            )
    if not rows:
        return f"No changes: metrics are the same as on {_code(base)}."
    header = ["Metric", f"{_code(base)}", "workspace", "Change", "Better"]
    if all(row[-1] == MISSING for row in rows):  # no metric's direction known: no column
        header, rows = header[:-1], [row[:-1] for row in rows]
    table = _table(header, rows)
    if all(old is None for old in olds):
        return f"No baseline: {_code(base)} has no metrics yet; workspace values below.\n\n{table}"
    return table


def render_gates(results: Sequence[metric_gates.Result] | None) -> list[str]:
    """The gates section (heading and table), none without gates; a warning when skipped."""
    if results is None:
        return ["## Metric gates", "**Not checked: `--no-gates` was used.**"]
    if not results:
        return []
    failed = sum(result.failed for result in results)
    summary = f"**{failed} of {len(results)} failed.**" if failed else "All pass."
    rows = [
        (
            {"pass": "✅ pass", "fail": "❌ fail", "skip": "skipped"}[result.status],
            _text(result.metric),
            _text(result.rule),
            MISSING if result.value is None else f"{result.value:.5g}",
            _text(result.comparison),
        )
        for result in results
    ]
    table = _table(["Gate", "Metric", "Bound", "Value", "Must be"], rows)
    return [f"## Metric gates ({_code(metric_gates.GATES_FILE)})", f"{summary}\n\n{table}"]


def render_plots(
    plots: Sequence[PlotImages],
    base: str,
    errors: Sequence[str] = (),
    charts: Sequence[tuple[str, str]] = (),
) -> str:
    """Each image plot as a 2-column table: base image | workspace image; then each Vega
    plot's chart (``charts``: name, relative path), both revisions in one."""
    sections = []
    for plot in plots:
        title = Path(plot.name).stem
        cells = [_image(plot.base, f"{title} ({base})"), _image(plot.workspace, title)]
        heading = f"### {_text(title)}\n\n"
        sections.append(heading + _table([_code(base), "workspace"], [cells]))
    for name, path in charts:
        legend = f"Dashed: {_code(base)}; solid: workspace."
        sections.append(f"### {_text(name)}\n\n{_image(path, name)}\n\n{legend}")
    text = "\n\n".join(sections) or "No plots found (`dvc plots diff` returned none)."
    if errors:
        notes = "\n".join(f"- {_cell(_text(e))}" for e in errors)
        text += (
            "\n\nSome plots could not be loaded (was `dvc push` run for that commit?):\n\n" + notes
        )
    return text


def _image(path: str | None, title: str) -> str:
    if path is None:
        return "(not available)"
    label = _attribute(title)
    return f'![{label}]({quote(path, safe="/._-~")} "{label}")'


def _param_name(file: str, name: str, diff: Mapping[str, Any]) -> str:
    # Prefix the file only when several files are compared, as `dvc params diff` does.
    return _text(f"{file}:{name}" if len(diff) > 1 else name)


def _value(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, float):
        return f"{value:.5g}"
    if isinstance(value, str):
        return _text(value)
    return _text(json.dumps(value))


def _change(delta: Any, better: str = "") -> str:
    """``+0.01``, and ``better`` or ``worse`` when it is known which way is better."""
    if delta is None:
        return MISSING
    if isinstance(delta, int | float) and not isinstance(delta, bool):
        verdict = ""
        if better in BETTER_SHOWN and delta:
            verdict = " better" if (delta > 0) == (better == "higher") else " worse"
        return f"{delta:+.5g}{verdict}"
    return _value(delta)


# --------------------------------------------------------------------------- directions

BETTER_SHOWN = {"higher": "↑ higher", "lower": "↓ lower"}
# A metric gates.yaml does not say anything about: its name says which way is better.
LOWER_NAMES = re.compile(r"loss|err|mse|mae|rmse|perplexity|latency|duration|seconds", re.I)
HIGHER_NAMES = re.compile(r"acc|precision|recall|f1|auc|score|iou|map|ndcg|r2", re.I)
HIGHER_BOUNDS = {"min", "max_drop", "max_drop_pct"}  # a floor: higher is better
LOWER_BOUNDS = {"max", "max_rise", "max_rise_pct"}  # a ceiling: lower is better


def directions(repo: Path, names: Sequence[str]) -> dict[str, str]:
    """Which way is better for each metric of ``names``: "higher" or "lower" (none when
    unknown). From ``gates.yaml``'s ``better:`` mapping (``val_loss: lower``), else its
    bounds of that metric (only a floor: higher; only a ceiling: lower), else the name
    (loss, error, mse...: lower; accuracy, precision, recall, f1, auc, score...: higher)."""
    import yaml

    try:
        gates = metric_gates.load(repo)
        document = yaml.safe_load((repo / metric_gates.GATES_FILE).read_text()) or {}
    except (OSError, yaml.YAMLError, GateError):
        gates, document = {}, {}
    explicit = document.get("better") if isinstance(document, dict) else None
    explicit = explicit if isinstance(explicit, dict) else {}
    found = {name: _direction(name, set(gates.get(name, {})), explicit) for name in names}
    return {name: better for name, better in found.items() if better}


def _direction(name: str, rules: set[str], explicit: Mapping[str, Any]) -> str:
    said = str(explicit.get(name, "")).lower()
    if said in BETTER_SHOWN:
        return said
    if rules and rules <= HIGHER_BOUNDS:
        return "higher"
    if rules and rules <= LOWER_BOUNDS:
        return "lower"
    if LOWER_NAMES.search(name):
        return "lower"
    return "higher" if HIGHER_NAMES.search(name) else ""


def _metric_names(diff: Mapping[str, Any]) -> list[str]:
    return [name for metrics in diff.values() for name in metrics]


# -- escaping: params, metrics and plot names come from a branch anyone may push, and the
# report becomes a comment that GitHub/GitLab render: nothing in them may mention people,
# link, embed images or HTML, or forge the hidden marker that identifies our comment.
BREAK = "\u200b"  # zero-width space: "@team" stays readable but mentions nobody


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _defuse(text: str) -> str:
    """No mention (@x), issue reference (#1) or bare autolink (http://, www.) survives."""
    text = re.sub(r"([@#])(?=\w)", rf"\1{BREAK}", text)
    text = re.sub(r"://", f":/{BREAK}/", text)
    return re.sub(r"(?i)\bwww\.", f"www{BREAK}.", text)


def _text(text: str) -> str:
    """Inert Markdown showing ``text`` as written (table cells, headings, list items)."""
    text = _html(text).replace("\\", "\\\\")
    text = re.sub(r"([`()])", r"\\\1", text)  # no code span, no link or image target
    return _defuse(text).replace("\r", " ").replace("\n", " ")


def _attribute(text: str) -> str:
    """Alt text and title of an image: nothing closes the brackets or the quotes."""
    text = _html(_defuse(text)).replace("\\", "&#92;").replace('"', "&quot;")
    return text.replace("[", "&#91;").replace("]", "&#93;").replace("\r", " ").replace("\n", " ")


def _code(text: str) -> str:
    """``text`` as a code span, with a fence longer than any run of backticks in it."""
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text.replace(chr(10), ' ')}{pad}{fence}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(_cell(c) for c in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
