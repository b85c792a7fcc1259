"""Validation loss against training tokens from benchmarks/quality/compare.py results: one line per arm, at the
arm's best learning rate, the mean over its seeds with the seeds' range shaded. Needs matplotlib
(`pip install -e '.[plot]'`). Prints the points it drew.

    python -m benchmarks.quality.plot docs/results/quality/kjv_d192.json --out docs/quality_kjv_d192.svg

Several results (say the main grid and an ablation run) are drawn together; an arm found in more than one is
taken from the result where its best mean final loss is lowest.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from benchmarks.plotting import pyplot, save

LABELS = {"bk-response": "ResNet-BK (response)", "bk-diagonal": "ResNet-BK (diagonal only)",
          "faithful": "ResNet-BK faithful", "gpt": "GPT", "gpt-moe": "GPT-MoE"}


def arm_curves(result: dict) -> dict:
    """{arm: (best final mean loss, best lr, [(tokens, mean, min, max)])} at each arm's best learning rate."""
    out = {}
    for row in result["summary"]:
        runs = [r for r in result["runs"] if r["arm"] == row["arm"] and r["lr"] == row["best_lr"]]
        by_tokens = {}
        for run in runs:
            for point in run["curve"]:
                by_tokens.setdefault(point["tokens"], []).append(point["val_loss"])
        curve = [(t, statistics.mean(v), min(v), max(v)) for t, v in sorted(by_tokens.items()) if len(v) == len(runs)]
        out[row["arm"]] = (row["final_val_loss_mean"], row["best_lr"], curve)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+")
    p.add_argument("--title", default="Validation loss at equal parameters and tokens (mean of seeds, best lr)")
    p.add_argument("--arms", help="comma-separated arms to draw (default: all)")
    p.add_argument("--out", required=True, help="an image path (.svg, .png, .pdf)")
    a = p.parse_args()
    plt = pyplot("benchmarks.quality.plot")
    best = {}
    for path in a.results:
        try:
            curves = arm_curves(json.load(open(path)))
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"error: {path}: not a quality_compare.py result ({e})", file=sys.stderr)
            return 2
        for arm, entry in curves.items():
            if arm not in best or entry[0] < best[arm][0]:
                best[arm] = entry
    wanted = a.arms.split(",") if a.arms else list(best)
    missing = [arm for arm in wanted if arm not in best]
    if missing or not best:
        print(f"error: no curve for {', '.join(missing) or 'any arm'} in " + ", ".join(a.results), file=sys.stderr)
        return 2
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=100)
    for arm in wanted:
        _, lr, curve = best[arm]
        tokens = [t / 1e6 for t, *_ in curve]
        line, = ax.plot(tokens, [m for _, m, _, _ in curve], label=f"{LABELS.get(arm, arm)} (lr {lr:g})",
                        linestyle="--" if arm.startswith("gpt") else "-")
        ax.fill_between(tokens, [lo for *_, lo, _ in curve], [hi for *_, hi in curve], color=line.get_color(),
                        alpha=0.15)
        print(f"{arm} lr {lr:g}: " + "  ".join(f"{t:,}: {m:.4f}" for t, m, _, _ in curve))
    save(fig, ax, a.out, a.title, "training tokens (millions)", "validation loss (nats)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
