"""ResNet-BK (multi-head and the one-head faithful preset) against the GPT baseline at equal parameter count
and equal training tokens, on the same held-out text, several seeds. Prints a table and writes JSON with the
validation curves.

    python benchmarks/quality_compare.py --steps 600 --seeds 2 --out quality_tiny_h100.json deepspeed.profile=auto

Arms (all from configs/tiny*.yaml, d = 192, 4 layers, unless the overrides change them for every arm):
  resnetbk   8 BK heads with learned z, 4 experts of width 512, top-2 (3.97M parameters)
  faithful   the original paper's mixer: one head, z = i, no input-dependent couplings (3.95M)
  gpt        causal attention with the MLP width that makes its parameter count equal to resnetbk's (1663 at
             the defaults, 3.97M); a dense MLP uses all its weights per token, so it computes more FLOPs per token

A larger scale, the same for every arm:

    python benchmarks/quality_compare.py --out quality.json model.d_model=384 model.n_layers=6 model.ffn_hidden=1024
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sampling_experiment import ROOT, read_metrics, run, train_once, write_result  # noqa: E402

ARMS = {
    "resnetbk": ("configs/tiny.yaml", []),
    "faithful": ("configs/tiny.yaml", ["model.n_heads=1", "model.bk_learned_z=false", "model.bk_selective=false"]),
    "gpt": ("configs/tiny-gpt.yaml", []),  # + the MLP width from matching_gpt_width
}


def matching_gpt_width(overrides: list) -> int:
    """The GPT MLP width whose parameter count is nearest the resnetbk arm's under the same overrides (GPT's
    count is linear in the width)."""
    from resnetbk.config import load_config
    from resnetbk.flops import param_count

    def gpt_params(width: int) -> int:
        return param_count(load_config(ARMS["gpt"][0], [*overrides, f"model.ffn_hidden={width}"]).model)

    target = param_count(load_config(ARMS["resnetbk"][0], overrides).model)
    return 1 + round((target - gpt_params(1)) / (gpt_params(2) - gpt_params(1)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data/kjv")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--evals", type=int, default=12)
    p.add_argument("--work-dir", default="runs/quality_compare")
    p.add_argument("--out", required=True)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    a = p.parse_args()
    from resnetbk.config import load_config
    from resnetbk.flops import param_count

    data = [f"data.train={a.data}/train", f"data.val={a.data}/val", f"data.tokenizer={a.data}/tokenizer.model"]
    if not os.path.isfile(os.path.join(ROOT, a.data, "val", "manifest.json")):
        run([sys.executable, "-m", "data_prep", "kjv", "--out", a.data], os.path.join(a.work_dir, "data_prep.log"))
    os.makedirs(a.work_dir, exist_ok=True)
    every = max(1, a.steps // a.evals)
    gpt_width = [f"model.ffn_hidden={matching_gpt_width([*data, *a.overrides])}"]
    runs, rows = [], []
    for arm in a.arms.split(","):
        if arm not in ARMS:
            p.error(f"--arms: unknown arm '{arm}' ({', '.join(ARMS)})")
        config, extra = ARMS[arm]
        options = [*data, *extra, *a.overrides, *(gpt_width if arm == "gpt" else [])]  # the last value of a key wins
        resolved = load_config(config, options)
        params = param_count(resolved.model)
        for seed in range(1, a.seeds + 1):
            run_dir = train_once([sys.executable, "-m", "resnetbk.train", "--config", config, *options,
                                  f"train.seed={seed}", f"train.max_steps={a.steps}", f"train.log_interval={every}",
                                  f"train.eval_interval={every}", "sample.max_new_tokens=0"],
                                 a.work_dir, f"{arm}-seed{seed}")
            records = read_metrics(run_dir)
            curve = [{k: r[k] for k in ("step", "tokens", "val_loss")} for r in records if "val_loss" in r]
            runs.append({"arm": arm, "seed": seed, "params": params, "lr": resolved.optim.lr, "curve": curve,
                         "final_val_loss": curve[-1]["val_loss"], "tokens": records[-1]["tokens"],
                         "flops": records[-1]["flops"],
                         "tokens_per_sec": statistics.median(r["tokens_per_sec"] for r in records[1:] or records)})
            print(f"{arm:<9} seed {seed}: val loss {runs[-1]['final_val_loss']:.4f}", flush=True)
        finals = [r["final_val_loss"] for r in runs if r["arm"] == arm]
        rows.append({"arm": arm, "params": params, "final_val_loss_mean": statistics.mean(finals),
                     "final_val_loss_std": statistics.stdev(finals) if len(finals) > 1 else 0.0,
                     "val_ppl_mean": statistics.mean(math.exp(v) for v in finals),
                     "tokens": runs[-1]["tokens"], "flops": runs[-1]["flops"],
                     "tokens_per_sec": statistics.mean(r["tokens_per_sec"] for r in runs if r["arm"] == arm)})
    gpt = next((r for r in rows if r["arm"] == "gpt"), None)
    print(f"\n{'arm':<9} {'params':>8} {'tokens':>10} {'val loss':>17} {'val ppl':>8} {'ppl / GPT':>9} {'TFLOP':>6} {'tok/s':>8}")
    for r in rows:
        if gpt:
            r["ppl_ratio_vs_gpt"] = r["val_ppl_mean"] / gpt["val_ppl_mean"]
        ratio = f"{r['ppl_ratio_vs_gpt']:.3f}x" if gpt else "-"
        print(f"{r['arm']:<9} {r['params'] / 1e6:>7.2f}M {r['tokens']:>10,} {r['final_val_loss_mean']:>9.4f} ± "
              f"{r['final_val_loss_std']:.4f} {r['val_ppl_mean']:>8.1f} {ratio:>9} {r['flops'] / 1e12:>6.1f} "
              f"{r['tokens_per_sec']:>8,.0f}")
    write_result(a.out, {"summary": rows, "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
