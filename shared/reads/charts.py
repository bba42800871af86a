"""Small server-rendered SVG charts for the status page: pure functions, data in, markup out.

No script library: the page stays one self-contained document. Every chart has a title, a
labelled y axis (its unit and its largest value) and a labelled time axis; text is escaped.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape

WIDTH, HEIGHT = 300, 96
LEFT, RIGHT, TOP, BOTTOM = 34, 6, 16, 16  # plot area margins: y labels left, x labels below
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM


@dataclass(frozen=True)
class Span:
    """The chart's time axis: ``hours`` up to ``end``."""

    end: datetime
    hours: int = 24

    @property
    def start(self) -> datetime:
        return self.end - timedelta(hours=self.hours)

    def x(self, at: datetime) -> float:
        share = (at - self.start).total_seconds() / (self.hours * 3600)
        return LEFT + min(max(share, 0.0), 1.0) * PLOT_W


def nice_ceiling(value: float) -> float:
    """The axis top: 1, 2 or 5 times a power of ten, at least ``value`` (and at least 1)."""
    if value <= 1:
        return 1.0
    power = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def _frame(title: str, unit: str, top: float, span: Span, body: str, css: str) -> str:
    axis_y = HEIGHT - BOTTOM
    ticks = "".join(
        f'<text class="tick" x="{span.x(span.end - timedelta(hours=h)):.1f}" y="{HEIGHT - 4}" '
        f'text-anchor="{"start" if h == span.hours else "end" if h == 0 else "middle"}">'
        f'{"now" if h == 0 else f"−{h} h"}</text>'
        for h in (span.hours, span.hours // 2, 0))
    return (
        f'<svg class="chart {css}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
        f'preserveAspectRatio="xMidYMid meet">'
        f'<title>{escape(title)}</title>'
        f'<text class="chart-title" x="{LEFT}" y="11">{escape(title)}</text>'
        f'<text class="axis-label y" x="{LEFT - 4}" y="{TOP + 4}" text-anchor="end">{_number(top)} {escape(unit)}</text>'
        f'<text class="axis-label y" x="{LEFT - 4}" y="{axis_y}" text-anchor="end">0</text>'
        f'<line class="axis" x1="{LEFT}" y1="{axis_y}" x2="{WIDTH - RIGHT}" y2="{axis_y}"/>'
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{axis_y}"/>'
        f'<g class="axis-label x">{ticks}</g>{body}</svg>')


def _y(value: float, top: float) -> float:
    return TOP + PLOT_H * (1 - min(value, top) / top)


def line_chart(title: str, unit: str, points: Sequence[tuple[datetime, float]], span: Span) -> str:
    """A line through (time, value) points; none: an empty frame that says so."""
    if not points:
        return _frame(title, unit, 1.0, span, _empty(), "line")
    top = nice_ceiling(max(v for _, v in points))
    path = " ".join(f"{'M' if i == 0 else 'L'}{span.x(at):.1f},{_y(v, top):.1f}" for i, (at, v) in enumerate(points))
    return _frame(title, unit, top, span, f'<path class="series" d="{path}"/>', "line")


def bar_chart(title: str, unit: str, bars: Sequence[tuple[datetime, float]], span: Span, width_hours: float = 1) -> str:
    """One bar per (bucket start, value); the buckets are ``width_hours`` wide."""
    if not bars or not any(v for _, v in bars):
        return _frame(title, unit, 1.0, span, _empty(), "bars")
    top = nice_ceiling(max(v for _, v in bars))
    width = PLOT_W * width_hours / span.hours
    rects = "".join(
        f'<rect class="series" x="{span.x(at):.1f}" y="{_y(v, top):.1f}" width="{max(width - 1, 1):.1f}" '
        f'height="{HEIGHT - BOTTOM - _y(v, top):.1f}"><title>{_number(v)} {escape(unit)}</title></rect>'
        for at, v in bars if v)
    return _frame(title, unit, top, span, rects, "bars")


def dot_chart(title: str, unit: str, dots: Sequence[tuple[datetime, float, str]], span: Span) -> str:
    """One dot per (time, value, css class): a run's duration coloured by its status."""
    if not dots:
        return _frame(title, unit, 1.0, span, _empty(), "dots")
    top = nice_ceiling(max(v for _, v, _ in dots))
    circles = "".join(
        f'<circle class="dot {escape(css)}" cx="{span.x(at):.1f}" cy="{_y(v, top):.1f}" r="2.2">'
        f'<title>{_number(v)} {escape(unit)}, {escape(css)}</title></circle>' for at, v, css in dots)
    return _frame(title, unit, top, span, circles, "dots")


def _empty() -> str:
    return (f'<text class="empty" x="{LEFT + PLOT_W / 2}" y="{TOP + PLOT_H / 2 + 3}" text-anchor="middle">'
            "no data in this period</text>")


def lag_series(successes: Sequence[datetime], span: Span) -> list[tuple[datetime, float]]:
    """Freshness lag in minutes across the span: the time since the latest success, rising until
    each success drops it to zero (two points per success: the saw-tooth's peak and its foot).
    Nothing before the first success, which has no lag to show."""
    ordered = sorted(successes)
    before = [s for s in ordered if s <= span.start]
    latest = before[-1] if before else None
    out: list[tuple[datetime, float]] = []
    if latest is not None:
        out.append((span.start, (span.start - latest).total_seconds() / 60))
    for success in (s for s in ordered if span.start < s <= span.end):
        if latest is not None:
            out.append((success, (success - latest).total_seconds() / 60))
        out.append((success, 0.0))
        latest = success
    if latest is not None:
        out.append((span.end, (span.end - latest).total_seconds() / 60))
    return out
