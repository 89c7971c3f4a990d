"""Server-rendered SVG charts: a few kilobytes of markup, no script, nothing to download.

`line_chart` draws one series against time in a fixed 400 x 170 view box that the page scales
to its width (phone or desktop), with three labelled grid lines, the first and last times, and
the latest value marked. Every text goes through markupsafe, so a label cannot inject markup.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH = 400
HEIGHT = 170
LEFT = 44  # room for the value labels
RIGHT = 12
TOP = 12
BOTTOM = 26  # room for the time labels


def nice_range(low: float, high: float) -> tuple[float, float, float]:
    """Round bounds and a step (1, 2 or 5 x 10^k) giving two or three intervals."""
    if high - low < 1e-9:
        pad = abs(high) * 0.1 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / 2
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    return math.floor(low / step) * step, math.ceil(high / step) * step, step


def _label(value: float, decimal: str = ".") -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return ("0" if text == "-0" else text).replace(".", decimal)


def _clock(at: float, seconds: bool) -> str:
    return time.strftime("%H:%M:%S" if seconds else "%H:%M", time.localtime(at))


def line_chart(
    points: Sequence[tuple[float, float]],
    *,
    title: str,
    unit: str = "",
    step: bool = False,
    empty: str = "",
    fixed: tuple[float, float] | None = None,
    decimal: str = ".",
    levels: Sequence[tuple[float, str]] = (),
) -> Markup:
    """`points` are (unix time, value), any order. `step` draws states (0/1) as steps;
    `fixed` pins the value axis; `decimal` is the language's decimal mark; `levels` names
    values (0 "free", 1 "occupied"): their grid lines are labelled inside the plot."""
    title_e = escape(title)
    head = (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{title_e}" xmlns="http://www.w3.org/2000/svg"><title>{title_e}</title>'
    )
    if not points:
        return Markup(
            f'{head}<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" '
            f'class="muted">{escape(empty)}</text></svg>'
        )
    ordered = sorted(points)
    times = [p[0] for p in ordered]
    values = [p[1] for p in ordered]
    if fixed is not None:
        low, high = fixed
        grid = [low, (low + high) / 2, high]
    else:
        low, high, step_v = nice_range(min(values), max(values))
        grid = []
        mark = low
        while mark <= high + step_v / 2:
            grid.append(mark)
            mark += step_v
    names = dict(levels)
    longest = max((len(n) for n in names.values()), default=0)
    left = max(LEFT, int(6.3 * longest) + 10)  # room for the level names, about 6 px a letter
    t0, t1 = times[0], times[-1]
    span = (t1 - t0) or 1.0
    plot_w, plot_h = WIDTH - left - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: float) -> float:
        return left + (t - t0) / span * plot_w if t1 > t0 else left + plot_w

    def y(v: float) -> float:
        return TOP + (high - v) / ((high - low) or 1.0) * plot_h

    parts = [head]
    for mark in [] if names else grid:
        gy = y(mark)
        parts.append(
            f'<line class="grid" x1="{left}" x2="{WIDTH - RIGHT}" y1="{gy:.1f}" y2="{gy:.1f}"/>'
            f'<text class="axis" x="{left - 6}" y="{gy + 4:.1f}" text-anchor="end">'
            f"{escape(_label(mark, decimal))}</text>"
        )
    for mark, name in names.items():
        gy = y(mark)
        parts.append(
            f'<line class="grid" x1="{left}" x2="{WIDTH - RIGHT}" y1="{gy:.1f}" y2="{gy:.1f}"/>'
            f'<text class="axis" x="{left - 6}" y="{gy + 4:.1f}" text-anchor="end">'
            f"{escape(name)}</text>"
        )
    coords: list[str] = []
    for i, (t, v) in enumerate(ordered):
        if step and i:
            coords.append(f"{x(t):.1f},{y(values[i - 1]):.1f}")
        coords.append(f"{x(t):.1f},{y(v):.1f}")
    if len(ordered) == 1:
        coords.insert(0, f"{left},{y(values[0]):.1f}")
    base = TOP + plot_h
    first_x = coords[0].split(",")[0]
    last_x = coords[-1].split(",")[0]
    parts.append(
        f'<path class="area" d="M{first_x},{base} L{" L".join(coords)} L{last_x},{base} Z"/>'
        f'<polyline class="line" points="{" ".join(coords)}"/>'
    )
    lx, ly = x(times[-1]), y(values[-1])
    latest = names.get(values[-1]) or f"{_label(values[-1], decimal)}{' ' + unit if unit else ''}"
    anchor = "end" if lx > WIDTH / 2 else "start"
    label_y = ly - 8 if ly > TOP + 14 else ly + 16
    parts.append(
        f'<circle class="dot" cx="{lx:.1f}" cy="{ly:.1f}" r="3.5"/>'
        f'<text class="value" x="{lx:.1f}" y="{label_y:.1f}" text-anchor="{anchor}">'
        f"{escape(latest)}</text>"
    )
    seconds = t1 - t0 < 600  # a short span: minutes alone would read the same at both ends
    parts.append(
        f'<text class="axis" x="{left}" y="{HEIGHT - 6}">{escape(_clock(t0, seconds))}</text>'
        f'<text class="axis" x="{WIDTH - RIGHT}" y="{HEIGHT - 6}" text-anchor="end">'
        f"{escape(_clock(t1, seconds))}</text></svg>"
    )
    return Markup("".join(parts))
