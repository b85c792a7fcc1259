"""Training tokens/s against sequence length, one line per (preset, arm), from benchmarks/training/arch_throughput.py
results (its JSON). Needs matplotlib (`pip install -e '.[plot]'`). Prints the points it drew.

    python -m benchmarks.training.plot_throughput docs/results/throughput/*.json --out docs/arch_throughput.svg
"""

from __future__ import annotations

import argparse
import json
import sys

from benchmarks.plotting import pyplot, save


def read_points(path: str) -> dict:
    """{(preset, arm): {seq_len: tokens/s}} of the runs that finished."""
    points = {}
    for r in json.load(open(path))["rows"]:
        if r["ok"]:
            points.setdefault((r["preset"], r["arch"]), {})[r["seq_len"]] = r["tokens_per_sec"]
    return points


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+")
    p.add_argument("--title", default="ResNet-BK vs GPT at equal parameters, one GPU (bf16, ZeRO-2)")
    p.add_argument("--out", required=True, help="an image path (.svg, .png, .pdf)")
    a = p.parse_args()
    plt = pyplot("benchmarks.training.plot_throughput")
    points = {}
    for path in a.results:
        try:
            for key, line in read_points(path).items():  # a later file overrides an earlier one at the same point
                points.setdefault(key, {}).update(line)
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"error: {path}: not an arch_throughput.py result ({e})", file=sys.stderr)
            return 2
    if not points:
        print("error: no throughput rows in " + ", ".join(a.results), file=sys.stderr)
        return 2
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=100)
    for (preset, arm), line in sorted(points.items()):
        seqs = sorted(line)
        ax.plot(seqs, [line[s] / 1e3 for s in seqs], marker="o", label=f"{preset} {arm}",
                linestyle="--" if arm.startswith("gpt") else "-")
        print(f"{preset:<6} {arm:<18} " + "  ".join(f"{s}: {line[s]:,.0f}" for s in seqs))
    ax.set_xscale("log", base=2)
    save(fig, ax, a.out, a.title, "sequence length (tokens)", "training tokens/s (thousands)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
