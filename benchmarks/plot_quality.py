"""Validation loss against training tokens, one line per arm (the mean over its seeds), from
benchmarks/quality_compare.py's JSON. Writes an SVG (no plotting library needed) and prints the points it drew.

    python benchmarks/plot_quality.py docs/results/quality_tiny_h100.json --out docs/quality_tiny.svg
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from svg_chart import Series, line_chart  # noqa: E402

ARMS = {  # arm: (legend, colour, dash)
    "resnetbk": ("ResNet-BK multi-head", "#d62728", ""),
    "faithful": ("ResNet-BK faithful", "#ff7f0e", "2,3"),
    "gpt": ("GPT", "#1f77b4", "6,4"),
}


def mean_curves(result: dict) -> dict:
    """{arm: [(tokens, mean val loss over the seeds that evaluated at that point)]}"""
    losses = {}
    for run in result["runs"]:
        for point in run["curve"]:
            losses.setdefault(run["arm"], {}).setdefault(point["tokens"], []).append(point["val_loss"])
    return {arm: [(t, statistics.mean(v)) for t, v in sorted(by_tokens.items())] for arm, by_tokens in losses.items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("result")
    p.add_argument("--title", default="Validation loss at equal parameters and tokens (mean over seeds)")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    try:
        curves = mean_curves(json.load(open(a.result)))
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"error: {a.result}: not a quality_compare.py result ({e})", file=sys.stderr)
        return 2
    if not curves:
        print(f"error: {a.result}: no validation curves", file=sys.stderr)
        return 2
    series = [Series(*ARMS.get(arm, (arm, "black", "")), curve) for arm, curve in curves.items()]
    with open(a.out, "w") as f:
        f.write(line_chart(series, title=a.title, x_label="training tokens", y_label="validation loss (nats)",
                           y_from_zero=False, x_text=lambda t: f"{t / 1e6:g}M" if t else "0", y_text=lambda v: f"{v:.1f}"))
    for arm, curve in curves.items():
        print(f"{arm:<9} " + "  ".join(f"{t:,}: {v:.3f}" for t, v in curve))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
