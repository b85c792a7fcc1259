"""Tokens/s against sequence length, one line per (preset, architecture), from benchmarks/arch_throughput.py
results: its JSON, or its printed table saved as text (.log). Writes an SVG (no plotting library needed) and
prints the points it drew.

    python benchmarks/plot_throughput.py docs/results/arch_throughput_small_grouped_moe_h100.json \\
        docs/results/arch_throughput_base_grouped_moe_h100.log --out docs/arch_throughput.svg
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from svg_chart import Series, line_chart, plot_arguments  # noqa: E402

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
    series = [Series(f"{preset} {'ResNet-BK' if arch == 'resnetbk' else 'GPT'}", COLOURS.get(preset, "black"), STYLE[arch],
                     sorted(line.items())) for (preset, arch), line in sorted(points.items())]
    return line_chart(series, title=title, x_label="sequence length (tokens)", y_label="training tokens/s", log_x=True,
                      y_text=lambda t: f"{t / 1e3:,.0f}k")


def main() -> int:
    a = plot_arguments(__doc__, "ResNet-BK vs GPT at equal parameters, one H100 (bf16, ZeRO-2)")
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
