"""Server-rendered SVG charts for the risk page: no script, no network, any browser.

Two pure functions of plain numbers: :func:`line_chart_svg` (a market's margin over time, with
a dot at each keeper update) and :func:`bar_chart_svg` (the distribution of account health).
Axis ticks are "nice" numbers (1, 2 or 5 times a power of ten); times are UTC.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape


def nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    """About ``count`` round values covering ``[low, high]`` (1, 2 or 5 times a power of ten).

    >>> nice_ticks(0.0, 1.0)
    [0.0, 0.5, 1.0]
    >>> nice_ticks(0.0, 7.3)
    [0.0, 2.0, 4.0, 6.0, 8.0]
    """
    if not math.isfinite(low) or not math.isfinite(high):
        return []
    if high <= low:
        high = low + (abs(low) * 0.1 or 1.0)
    raw = (high - low) / max(count, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks and ticks[-1] < high:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def time_label(t: int, span: int) -> str:
    """``HH:MM`` within two days, ``MM-DD HH:MM`` beyond (UTC)."""
    when = datetime.fromtimestamp(t, UTC)
    return when.strftime("%H:%M" if span <= 2 * 86400 else "%m-%d %H:%M")


def line_chart_svg(
    points: Sequence[tuple[int, float]],
    markers: Sequence[tuple[int, float, str]] = (),
    width: int = 560,
    height: int = 190,
    y_label: str = "% of notional",
    label: str = "",
) -> str:
    """A line through ``(unix time, value)`` points, dots at ``markers`` ``(time, value, title)``.

    The y axis starts at zero (a margin's scale is read from zero) and ends at a round value at
    or above the highest point.
    """
    left, right, top, bottom = 52, 12, 12, 28
    plot_w, plot_h = width - left - right, height - top - bottom
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}"'
        f' width="{width}" height="{height}" role="img" aria-label="{escape(label)}">'
    ]
    if not points:
        out.append(
            f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="muted">'
            "no data yet</text></svg>"
        )
        return "".join(out)
    t0, t1 = points[0][0], points[-1][0]
    if t1 <= t0:
        t1 = t0 + 1
    values = [v for _, v in points] + [v for _, v, _ in markers]
    ticks = nice_ticks(0.0, max(max(values), 1e-9))
    y_max = ticks[-1] if ticks else 1.0

    def x(t: float) -> float:
        return left + (t - t0) / (t1 - t0) * plot_w

    def y(v: float) -> float:
        return top + plot_h - v / y_max * plot_h

    for tick in ticks:
        out.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}"'
            ' class="grid"/>'
            f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" class="tick">'
            f"{tick:g}</text>"
        )
    span = t1 - t0
    for i, anchor in enumerate(("start", "middle", "middle", "end")):
        t = t0 + span * i / 3
        out.append(
            f'<text x="{x(t):.1f}" y="{height - 8}" text-anchor="{anchor}" class="tick">'
            f"{time_label(int(t), span)}</text>"
        )
    out.append(
        f'<text x="12" y="{top + plot_h / 2:.1f}" class="tick" text-anchor="middle"'
        f' transform="rotate(-90 12 {top + plot_h / 2:.1f})">{escape(y_label)}</text>'
    )
    path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)
    out.append(f'<polyline points="{path}" class="line"/>')
    for t, v, title in markers:
        if t0 <= t <= t1:
            out.append(
                f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="3" class="dot">'
                f"<title>{escape(title)}</title></circle>"
            )
    out.append("</svg>")
    return "".join(out)


def bar_chart_svg(rows: Sequence[tuple[str, int]], width: int = 560, bar_h: int = 20) -> str:
    """Horizontal bars, one per ``(label, count)``, the count written at the end of each."""
    left, gap = 150, 6
    height = len(rows) * (bar_h + gap) + gap
    top_count = max([c for _, c in rows] + [1])
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}"'
        f' width="{width}" height="{height}" role="img" aria-label="account health">'
    ]
    for i, (label, count) in enumerate(rows):
        y = gap + i * (bar_h + gap)
        w = (width - left - 60) * count / top_count
        out.append(
            f'<text x="{left - 8}" y="{y + bar_h * 0.7:.1f}" text-anchor="end" class="tick">'
            f"{escape(label)}</text>"
            f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" class="bar b{i}"/>'
            f'<text x="{left + w + 6:.1f}" y="{y + bar_h * 0.7:.1f}" class="tick">{count}</text>'
        )
    out.append("</svg>")
    return "".join(out)


__all__ = ["bar_chart_svg", "line_chart_svg", "nice_ticks", "time_label"]
