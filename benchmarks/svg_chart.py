"""A line chart as SVG text, for the benchmarks' plots: axes, gridlines, one polyline per series, a legend.

Plain SVG, so that plotting needs no library beyond the standard one (docs/ keeps the SVG next to the JSON it
was drawn from).
"""

from __future__ import annotations

import argparse
import math
from typing import Callable, NamedTuple, Sequence

PLOT_WIDTH, HEIGHT, LEFT, TOP, BOTTOM = 410, 400, 80, 30, 50


class Series(NamedTuple):
    label: str
    colour: str
    dash: str  # SVG stroke-dasharray; "" draws a solid line
    points: Sequence[tuple[float, float]]


def plot_arguments(description: str, title: str) -> argparse.Namespace:
    """The command line every plot script takes: result files, --title, --out."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+")
    p.add_argument("--title", default=title)
    p.add_argument("--out", required=True)
    return p.parse_args()


def _tick_step(span: float) -> float:
    """About five gridlines, at 1, 2 or 5 x a power of ten."""
    magnitude = 10 ** math.floor(math.log10(span / 5))
    return magnitude * next(m for m in (1, 2, 5, 10) if m * magnitude >= span / 5)


def line_chart(series: Sequence[Series], *, title: str, x_label: str, y_label: str, log_x: bool = False,
               y_from_zero: bool = True, x_text: Callable[[float], str] = "{:,.0f}".format,
               y_text: Callable[[float], str] = str) -> str:
    """A log2 x axis has a tick at every x that occurs; a linear one starts at 0 and has round ticks."""
    right = 60 + 7 * max(len(s.label) for s in series)  # room for the legend
    width = LEFT + PLOT_WIDTH + right
    xs = sorted({x for s in series for x, _ in s.points})
    ys = [y for s in series for _, y in s.points]
    if y_from_zero:
        y_lo, y_hi = 0.0, max(ys) * 1.1
    else:
        pad = 0.05 * ((max(ys) - min(ys)) or 1.0)
        y_lo, y_hi = min(ys) - pad, max(ys) + pad
    step = _tick_step(y_hi - y_lo)
    y_lo = math.floor(y_lo / step) * step
    if log_x:
        scale, x_lo, x_ticks = math.log2, xs[0], xs
    else:
        x_step = _tick_step(xs[-1])
        scale, x_lo, x_ticks = (lambda v: v), 0.0, [i * x_step for i in range(int(xs[-1] / x_step) + 1)]
    x_span = max(1e-9, scale(xs[-1]) - scale(x_lo))

    def x_of(x):
        return LEFT + PLOT_WIDTH * (scale(x) - scale(x_lo)) / x_span

    def y_of(y):
        return HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * (y - y_lo) / (y_hi - y_lo)

    mid_y = (TOP + HEIGHT - BOTTOM) / 2
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{HEIGHT}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{HEIGHT}" fill="white"/>',
           f'<text x="{LEFT}" y="18" font-size="14">{title}</text>',
           f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{LEFT + PLOT_WIDTH}" y2="{HEIGHT - BOTTOM}" stroke="black"/>',
           f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}" stroke="black"/>',
           f'<text x="{LEFT + PLOT_WIDTH / 2}" y="{HEIGHT - 12}" text-anchor="middle">{x_label}</text>',
           f'<text x="16" y="{mid_y}" transform="rotate(-90 16 {mid_y})" text-anchor="middle">{y_label}</text>']
    for x in x_ticks:
        out.append(f'<text x="{x_of(x):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{x_text(x)}</text>')
    tick = y_lo
    while tick <= y_hi:
        y = y_of(tick)
        out.append(f'<line x1="{LEFT - 4}" y1="{y:.1f}" x2="{LEFT + PLOT_WIDTH}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">{y_text(tick)}</text>')
        tick += step
    for i, s in enumerate(series):
        xy = " ".join(f"{x_of(x):.1f},{y_of(y):.1f}" for x, y in sorted(s.points))
        out.append(f'<polyline points="{xy}" fill="none" stroke="{s.colour}" stroke-width="2" stroke-dasharray="{s.dash}"/>')
        for x, y in s.points:
            out.append(f'<circle cx="{x_of(x):.1f}" cy="{y_of(y):.1f}" r="3" fill="{s.colour}"/>')
        ly = TOP + 20 + 20 * i
        out.append(f'<line x1="{LEFT + PLOT_WIDTH + 10}" y1="{ly}" x2="{LEFT + PLOT_WIDTH + 40}" y2="{ly}" stroke="{s.colour}" '
                   f'stroke-width="2" stroke-dasharray="{s.dash}"/>')
        out.append(f'<text x="{LEFT + PLOT_WIDTH + 46}" y="{ly + 4}">{s.label}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
