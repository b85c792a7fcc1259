"""Validation loss against training tokens, one line per arm (the mean over its seeds), from
benchmarks/quality_compare.py's JSON. Writes an SVG (no plotting library needed) and prints the points it drew.

    python benchmarks/plot_quality.py docs/results/quality_tiny_h100.json --out docs/quality_tiny.svg

Given several results (say one per learning rate), each arm is drawn from the result where its mean final
validation loss is lowest, and the legend names the learning rate it ran at.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from svg_chart import Series, line_chart, plot_arguments  # noqa: E402

STYLES = {  # arm: (legend, colour, dash)
    "resnetbk": ("ResNet-BK multi-head", "#d62728", ""),
    "faithful": ("ResNet-BK faithful", "#ff7f0e", "2,3"),
    "gpt": ("GPT", "#1f77b4", "6,4"),
}


def learning_rate(result: dict, arm: str) -> float:
    """The arm's learning rate: recorded per run, or (older results) the command's override or the arm's config."""
    recorded = [run["lr"] for run in result["runs"] if run["arm"] == arm and "lr" in run]
    if recorded:
        return recorded[0]
    found = re.search(r"optim\.lr=(\S+)", result.get("command", ""))
    if found:
        return float(found.group(1))
    from quality_compare import ARMS
    from resnetbk.config import load_config

    return load_config(*ARMS[arm]).optim.lr


def short(value: float) -> str:
    """3e-3 rather than 0.003."""
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa.removesuffix('.0')}e{int(exponent)}"


def mean_curves(result: dict) -> dict:
    """{arm: [(tokens, mean val loss over the seeds that evaluated at that point)]}"""
    losses = {}
    for run in result["runs"]:
        for point in run["curve"]:
            losses.setdefault(run["arm"], {}).setdefault(point["tokens"], []).append(point["val_loss"])
    return {arm: [(t, statistics.mean(v)) for t, v in sorted(by_tokens.items())] for arm, by_tokens in losses.items()}


def main() -> int:
    a = plot_arguments(__doc__, "Validation loss at equal parameters and tokens (mean over seeds)")
    best = {}  # arm: (final loss, curve, label)
    for path in a.results:
        try:
            result = json.load(open(path))
            curves = mean_curves(result)
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"error: {path}: not a quality_compare.py result ({e})", file=sys.stderr)
            return 2
        for arm, curve in curves.items():
            legend = STYLES.get(arm, (arm,))[0]
            if len(a.results) > 1:
                legend += f" (lr {short(learning_rate(result, arm))})"
            if curve and (arm not in best or curve[-1][1] < best[arm][0]):
                best[arm] = (curve[-1][1], curve, legend)
    if not best:
        print("error: no validation curves in " + ", ".join(a.results), file=sys.stderr)
        return 2
    series = [Series(legend, *STYLES.get(arm, (arm, "black", ""))[1:], curve) for arm, (_, curve, legend) in best.items()]
    with open(a.out, "w") as f:
        f.write(line_chart(series, title=a.title, x_label="training tokens", y_label="validation loss (nats)",
                           y_from_zero=False, x_text=lambda t: f"{t / 1e6:g}M" if t else "0", y_text=lambda v: f"{v:.1f}"))
    for arm, (_, curve, legend) in best.items():
        print(f"{legend}: " + "  ".join(f"{t:,}: {v:.3f}" for t, v in curve))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
