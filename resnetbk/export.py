"""Export a DeepSpeed checkpoint as consolidated fp32 weights: python -m resnetbk.export CHECKPOINT [--out DIR]

CHECKPOINT is a run directory (its newest checkpoint) or a checkpoint tag directory. The export directory holds
`model.safetensors` (fp32, keys of `CausalLM.state_dict()`), `config.yaml` (the model section of the run
config) and `tokenizer.model`: everything `resnetbk.evaluate` and `resnetbk.generate` need, without DeepSpeed.

ZeRO stages 1-3 are consolidated by DeepSpeed's zero_to_fp32 (it gathers the fp32 master partitions of every
rank); stage 0 keeps the full weights in `mp_rank_00_model_states.pt`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from .config import ConfigError, ModelConfig
from .exported import CONFIG, TOKENIZER, WEIGHTS


def find_tag_dir(path: str) -> str:
    """A tag directory from a run directory (newest complete checkpoint) or a tag directory."""
    from .training.checkpoint import is_tag_dir, resolve_resume

    path = os.path.normpath(path)
    if is_tag_dir(path):
        return path
    resume = resolve_resume("auto", path)  # None when the run directory has no checkpoint
    if resume is not None:
        return os.path.join(resume.load_dir, resume.tag)
    raise ConfigError(f"{path}: neither a checkpoint tag directory nor a run directory with a checkpoint")


def consolidated_state_dict(tag_dir: str) -> dict:
    import glob

    import torch

    if glob.glob(os.path.join(tag_dir, "zero_pp_rank_*_optim_states.pt")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        root, tag = os.path.split(tag_dir)
        state = get_fp32_state_dict_from_zero_checkpoint(root, tag=tag)
    else:  # ZeRO stage 0: the full module is in the model states file (DeepSpeed pickles more than tensors)
        state = torch.load(os.path.join(tag_dir, "mp_rank_00_model_states.pt"), map_location="cpu",
                           weights_only=False)["module"]
    return {k: v.float().contiguous() for k, v in state.items()}


def export(tag_dir: str, out: str) -> str:
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    from .models.decoder import CausalLM

    run_dir = os.path.dirname(os.path.dirname(tag_dir))
    run_config = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(run_config):
        raise ConfigError(f"{run_config}: run config not found (the export needs the model section)")
    cfg = OmegaConf.load(run_config)
    model_cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), cfg.model)
    if model_cfg.moe_impl == "deepspeed":
        raise ConfigError(f"{tag_dir}: export of model.moe_impl=deepspeed (expert-parallel files) is not supported; "
                          f"train with model.moe_impl=native to export")
    state = consolidated_state_dict(tag_dir)
    expected = set(CausalLM(model_cfg).state_dict())  # every key, or the export is not loadable
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ConfigError(f"{tag_dir}: checkpoint keys do not match the model "
                          f"(missing {missing[:3]}, extra {extra[:3]})")
    os.makedirs(out, exist_ok=True)
    save_file(state, os.path.join(out, WEIGHTS), metadata={"format": "pt", "source": os.path.abspath(tag_dir)})
    with open(os.path.join(out, CONFIG), "w") as f:
        f.write(OmegaConf.to_yaml(OmegaConf.create({"model": model_cfg, "tokenizer": TOKENIZER})))
    shutil.copyfile(cfg.data.tokenizer, os.path.join(out, TOKENIZER))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resnetbk.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="run directory or checkpoint tag directory")
    parser.add_argument("--out", help="export directory (default: <run_dir>/export/<tag>)")
    args = parser.parse_args(argv)
    try:
        tag_dir = find_tag_dir(args.checkpoint)
        out = args.out or os.path.join(os.path.dirname(os.path.dirname(tag_dir)), "export", os.path.basename(tag_dir))
        export(tag_dir, out)
    except (ConfigError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exported {tag_dir} -> {out} ({WEIGHTS}, {CONFIG}, {TOKENIZER})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
