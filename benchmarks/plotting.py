"""What the plot scripts share: matplotlib (an optional extra), and one way to label and save a line chart."""

from __future__ import annotations

import sys


def pyplot(script: str):
    """matplotlib.pyplot on the non-interactive backend, or exit 2 with one line saying how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"error: {script} needs matplotlib: pip install -e '.[plot]'", file=sys.stderr)
        raise SystemExit(2)
    return plt


def save(fig, ax, out: str, title: str, x_label: str, y_label: str) -> None:
    """Labels, grid and legend, then the image (an SVG without a date, so that a rerun writes the same file)."""
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, metadata={"Date": None} if out.endswith(".svg") else None)
    print(f"wrote {out}")
