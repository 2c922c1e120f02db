"""DVC's Vega plots (``dvc.yaml``'s top-level ``plots:``) as static SVG line charts.

``dvc plots diff --json`` gives each such plot as a Vega-Lite spec with its data inlined
(``content.data.values``: one row per point, with ``rev`` and, when the plot has several y
fields, ``field``). A pull-request comment renders no Vega, so the report draws the lines
itself: one chart per plot with every revision's lines overlaid (the base's dashed, the
workspace's solid, one colour per y field), as ``dvc plots diff``'s HTML page overlays them.
No plotting library: the suite does not depend on one, and the SVG is the same bytes for
the same data.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

INFERRED_Y = "dvc_inferred_y_value"  # DVC's y column when a plot has several y fields
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
WIDTH, HEIGHT = 560, 320
LEFT, RIGHT, TOP, BOTTOM = 60, 170, 36, 44  # margins: the legend is on the right


@dataclass(frozen=True)
class Series:
    revision: str
    field: str
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Chart:
    name: str  # the plot's id in dvc.yaml ("Loss")
    x_title: str
    y_title: str
    series: tuple[Series, ...]

    @property
    def file_name(self) -> str:
        """``vega_<name>.svg``, the name made of letters, digits and underscores."""
        slug = re.sub(r"[^a-z0-9]+", "_", self.name.lower()).strip("_") or "plot"
        return f"vega_{slug}.svg"


def vega_charts(plots: Mapping[str, Any], base: str) -> list[Chart]:
    """The Vega plots of ``dvc plots diff --json`` output, the base's series first."""
    charts = []
    for name, entries in plots.get("data", {}).items():
        for entry in entries:
            content = entry.get("content")
            if entry.get("type") == "vega" and isinstance(content, dict):
                chart = chart_of(str(name), content, base)
                if chart.series:
                    charts.append(chart)
    return charts


def chart_of(name: str, spec: Mapping[str, Any], base: str) -> Chart:
    """One chart from a Vega-Lite spec of DVC's linear (or similar) templates."""
    x = str(((spec.get("encoding") or {}).get("x") or {}).get("field") or "")
    y = _y_field(spec)
    values = (spec.get("data") or {}).get("values") or []
    found: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for row in values if isinstance(values, list) else []:
        if not isinstance(row, dict) or not (_number(row.get(x)) and _number(row.get(y))):
            continue
        key = (str(row.get("rev", "")), str(row.get("field") or y))
        found.setdefault(key, []).append((float(row[x]), float(row[y])))
    order = sorted(found, key=lambda key: (key[0] != base, key[0], key[1]))
    series = tuple(Series(rev, field, tuple(sorted(found[(rev, field)]))) for rev, field in order)
    return Chart(name, x, "" if y == INFERRED_Y else y, series)


def _y_field(spec: Mapping[str, Any]) -> str:
    """The first ``encoding.y.field`` in the spec or its layers."""
    y = ((spec.get("encoding") or {}).get("y") or {}).get("field")
    if y:
        return str(y)
    for layer in spec.get("layer") or []:
        if isinstance(layer, dict) and _y_field(layer):
            return _y_field(layer)
    return ""


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def svg(chart: Chart, base: str) -> str:
    """The chart as an SVG document: axes with round ticks, a line per series, a legend."""
    x_ticks = _ticks([x for s in chart.series for x, _ in s.points])
    y_ticks = _ticks([y for s in chart.series for _, y in s.points])
    (x0, x1), (y0, y1) = (x_ticks[0], x_ticks[-1]), (y_ticks[0], y_ticks[-1])
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return TOP + plot_h - (y - y0) / (y1 - y0) * plot_h

    text = 'font-family="sans-serif" font-size="11"'
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT + plot_w / 2:.1f}" y="20" text-anchor="middle" '
        f'font-family="sans-serif" font-size="13">{escape(chart.name)}</text>',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" '
        'stroke="#999"/>',
    ]
    for xv in x_ticks:
        parts.append(
            f'<text x="{px(xv):.1f}" y="{TOP + plot_h + 14}" text-anchor="middle" {text}>'
            f"{xv:.4g}</text>"
        )
    for yv in y_ticks:
        parts.append(
            f'<text x="{LEFT - 4}" y="{py(yv) + 4:.1f}" text-anchor="end" {text}>{yv:.4g}</text>'
        )
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{py(yv):.1f}" y2="{py(yv):.1f}" '
            'stroke="#eee"/>'
        )
    parts.append(
        f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle" {text}>'
        f"{escape(chart.x_title)}</text>"
    )
    if chart.y_title:
        parts.append(
            f'<text x="14" y="{TOP + plot_h / 2:.1f}" text-anchor="middle" {text} '
            f'transform="rotate(-90 14 {TOP + plot_h / 2:.1f})">{escape(chart.y_title)}</text>'
        )
    fields = sorted({s.field for s in chart.series})
    for n, series in enumerate(chart.series):
        colour = COLOURS[fields.index(series.field) % len(COLOURS)]
        dash = ' stroke-dasharray="6 4"' if series.revision == base else ""
        points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in series.points)
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>'
        )
        ly = TOP + 8 + 18 * n
        lx = LEFT + plot_w + 12
        label = series.revision if len(fields) == 1 else f"{series.revision}: {series.field}"
        parts.append(
            f'<line x1="{lx}" x2="{lx + 24}" y1="{ly}" y2="{ly}" stroke="{colour}" '
            f'stroke-width="2"{dash}/>'
        )
        parts.append(f'<text x="{lx + 30}" y="{ly + 4}" {text}>{escape(label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _ticks(values: list[float]) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) covering ``values``: the
    first and last are the axis' ends."""
    low, high = min(values), max(values)
    if high == low:
        low, high = low - 1, high + 1
    raw = (high - low) / 5
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first, last = math.floor(low / step), math.ceil(high / step)
    return [round(k * step, 12) for k in range(first, last + 1)]
