"""Tokens/s against sequence length, one line per (preset, architecture), from benchmarks/arch_throughput.py
results: its JSON, or its printed table saved as text (.log). Writes an SVG (no plotting library needed) and
prints the points it drew.

    python benchmarks/plot_throughput.py docs/results/arch_throughput_small_grouped_moe_h100.json \\
        docs/results/arch_throughput_base_grouped_moe_h100.log --out docs/arch_throughput.svg
"""

from __future__ import annotations

import argparse
import json
import math
import sys

WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 640, 400, 80, 150, 30, 50
STYLE = {"gpt": "6,4", "resnetbk": ""}  # dashed GPT, solid ResNet-BK
COLOURS = {"small": "#1f77b4", "base": "#d62728"}


def read_points(path: str) -> dict:
    """{(preset, arch): {seq_len: tokens/s}}; later files override earlier ones at the same point."""
    points = {}
    if path.endswith(".json"):
        rows = [(r["preset"], r["arch"], r["seq_len"], r["tokens_per_sec"]) for r in json.load(open(path))["rows"] if r["ok"]]
    else:
        rows = []
        for line in open(path):
            f = line.split()
            if len(f) >= 5 and f[1] in STYLE and f[2].isdigit():
                rows.append((f[0], f[1], int(f[2]), float(f[4].replace(",", ""))))
    for preset, arch, seq, tps in rows:
        points.setdefault((preset, arch), {})[seq] = tps
    return points


def svg(points: dict, title: str) -> str:
    seqs = sorted({s for line in points.values() for s in line})
    top = max(t for line in points.values() for t in line.values()) * 1.1
    x_of = {s: LEFT + (WIDTH - LEFT - RIGHT) * (math.log2(s) - math.log2(seqs[0])) / max(1e-9, math.log2(seqs[-1] / seqs[0]))
            for s in seqs}

    def y_of(t):
        return HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * t / top

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">',
           f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
           f'<text x="{LEFT}" y="18" font-size="14">{title}</text>',
           f'<line x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" y2="{HEIGHT - BOTTOM}" stroke="black"/>',
           f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}" stroke="black"/>',
           f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 12}" text-anchor="middle">sequence length (tokens)</text>',
           f'<text x="16" y="{(TOP + HEIGHT - BOTTOM) / 2}" transform="rotate(-90 16 {(TOP + HEIGHT - BOTTOM) / 2})" '
           'text-anchor="middle">training tokens/s</text>']
    for s in seqs:
        out.append(f'<text x="{x_of[s]:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">{s}</text>')
    magnitude = 10 ** math.floor(math.log10(top / 5))  # about five gridlines, at 1, 2 or 5 x a power of ten
    step = magnitude * next(m for m in (1, 2, 5, 10) if m * magnitude >= top / 5)
    tick = 0.0
    while tick <= top:
        y = y_of(tick)
        out.append(f'<line x1="{LEFT - 4}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">{tick / 1e3:,.0f}k</text>')
        tick += step
    for i, ((preset, arch), line) in enumerate(sorted(points.items())):
        colour = COLOURS.get(preset, "black")
        xy = " ".join(f"{x_of[s]:.1f},{y_of(t):.1f}" for s, t in sorted(line.items()))
        out.append(f'<polyline points="{xy}" fill="none" stroke="{colour}" stroke-width="2" stroke-dasharray="{STYLE[arch]}"/>')
        for s, t in line.items():
            out.append(f'<circle cx="{x_of[s]:.1f}" cy="{y_of(t):.1f}" r="3" fill="{colour}"/>')
        ly = TOP + 20 + 20 * i
        out.append(f'<line x1="{WIDTH - RIGHT + 10}" y1="{ly}" x2="{WIDTH - RIGHT + 40}" y2="{ly}" stroke="{colour}" '
                   f'stroke-width="2" stroke-dasharray="{STYLE[arch]}"/>')
        name = "ResNet-BK" if arch == "resnetbk" else "GPT"
        out.append(f'<text x="{WIDTH - RIGHT + 46}" y="{ly + 4}">{preset} {name}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+")
    p.add_argument("--title", default="ResNet-BK vs GPT at equal parameters, one H100 (bf16, ZeRO-2)")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    points = {}
    for path in a.results:
        try:
            for key, line in read_points(path).items():
                points.setdefault(key, {}).update(line)
        except (OSError, ValueError, KeyError) as e:
            print(f"error: {path}: {e}", file=sys.stderr)
            return 2
    if not points:
        print("error: no throughput rows in " + ", ".join(a.results), file=sys.stderr)
        return 2
    with open(a.out, "w") as f:
        f.write(svg(points, a.title))
    for (preset, arch), line in sorted(points.items()):
        print(f"{preset:<6} {arch:<9} " + "  ".join(f"{s}: {t:,.0f}" for s, t in sorted(line.items())))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
