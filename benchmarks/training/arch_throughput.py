"""ResNet-BK against the GPT baseline at equal parameter count: training throughput on one GPU per sequence
length, same data, trainer and ZeRO stage. Prints a table and writes JSON.

    python -m benchmarks.training.arch_throughput --presets small --seq-lens 1024,4096,16384 --out arch.json \\
        data.train=... data.val=... data.tokenizer=...

Each (preset, arm, sequence length) is one `deepspeed --num_gpus 1` run of configs/<preset>.yaml or
configs/<preset>-gpt.yaml with the arm's overrides (ARMS; benchmarks/training/ds_strategies.py does the run and the
reading of metrics.jsonl); the first arm, GPT by default, is the one the others are compared with. Every
run trains on the same number of tokens per micro-step (--tokens-per-micro-step / sequence length sequences).
The trainer halves a micro-batch that does not fit, so the table reports the micro-batch actually used.
GPT's learned position table grows with max_seq_len (set to the sequence length when it exceeds the preset's).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from types import SimpleNamespace

from benchmarks.training.ds_strategies import run_one

ARMS = {  # name: (config name from the preset, overrides)
    "gpt": ("{preset}-gpt", []),
    "resnetbk": ("{preset}", []),  # the preset as configured
    "resnetbk-diagonal": ("{preset}", ["model.bk_values=0"]),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="small,base")
    p.add_argument("--arms", default="gpt,resnetbk",
                   help=f"comma-separated, the first is the baseline: {', '.join(ARMS)}")
    p.add_argument("--seq-lens", default="1024,4096,16384")
    p.add_argument("--tokens-per-micro-step", type=int, default=32768)
    p.add_argument("--strategy", default="zero2")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--work-dir", default="/tmp/arch_throughput")
    p.add_argument("--out", required=True)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    a = p.parse_args()
    arms = a.arms.split(",")
    unknown = [arm for arm in arms if arm not in ARMS]
    if unknown:
        p.error(f"--arms: unknown arm '{unknown[0]}' ({', '.join(ARMS)})")

    rows = []
    print(f"{'preset':<8} {'arm':<18} {'seq':>6} {'micro':>5} {'tok/s':>9} {'TFLOP/s':>8} {'MFU':>6} {'GPU GiB':>8} "
          f"{'resv GiB':>8} {'x ' + arms[0]:>9}", flush=True)
    for preset in a.presets.split(","):
        for seq in (int(s) for s in a.seq_lens.split(",")):
            micro = max(1, a.tokens_per_micro_step // seq)
            baseline = None
            for arch in arms:
                name, extra = ARMS[arch]
                args = SimpleNamespace(config=f"configs/{name.format(preset=preset)}.yaml", steps=a.steps,
                                       log_interval=10, work_dir=os.path.join(a.work_dir, f"{preset}-{arch}-{seq}"),
                                       overrides=[*a.overrides, *extra, f"train.seq_len={seq}",
                                                  f"model.max_seq_len={max(seq, 2048)}", f"train.micro_batch={micro}",
                                                  f"train.global_batch={micro}"])
                row = {"preset": preset, "arch": arch, "seq_len": seq, **run_one(args, 1, a.strategy)}
                rows.append(row)
                baseline = baseline or row
                if row is not baseline and row["ok"] and baseline["ok"]:
                    row["speedup_vs_gpt" if baseline["arch"] == "gpt" else "speedup_vs_baseline"] = \
                        row["tokens_per_sec"] / baseline["tokens_per_sec"]
                # Rewritten after every run: a time limit that stops the sweep keeps the rows measured so far.
                with open(a.out, "w") as f:
                    json.dump({"strategy": a.strategy, "steps": a.steps,
                               "tokens_per_micro_step": a.tokens_per_micro_step,
                               "overrides": a.overrides, "rows": rows}, f, indent=2)
                if not row["ok"]:
                    print(f"{preset:<8} {arch:<18} {seq:>6} FAILED: {row['error']}", flush=True)
                    continue
                speedup = row.get("speedup_vs_gpt", row.get("speedup_vs_baseline"))
                ratio = f"{speedup:.2f}x" if speedup else ""
                mfu = f"{row['mfu']:.1%}" if row.get("mfu") is not None else "-"
                print(f"{preset:<8} {arch:<18} {seq:>6} {row['micro_batch']:>5} {row['tokens_per_sec']:>9,.0f} "
                      f"{row['tflops_per_gpu']:>8.1f} {mfu:>6} {row['max_allocated_gib']:>8.1f} "
                      f"{row['max_reserved_gib']:>8.1f} {ratio:>9}", flush=True)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
