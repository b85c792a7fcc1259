"""An export directory, as python -m resnetbk.export writes it and resnetbk.evaluate and resnetbk.generate read it:
`model.safetensors` (fp32, keys of CausalLM.state_dict()), `config.yaml` (the model section of the run config) and
`tokenizer.model`. Reading one needs no DeepSpeed and unpickles nothing."""

from __future__ import annotations

import os

from .config import ConfigError, ModelConfig

WEIGHTS, CONFIG, TOKENIZER = "model.safetensors", "config.yaml", "tokenizer.model"


def load_exported(export_dir: str, device="cpu"):
    """(model in eval mode, ModelConfig, tokenizer path) from an export directory; no DeepSpeed, no pickle."""
    from omegaconf import OmegaConf
    from safetensors.torch import load_file

    from .models.decoder import CausalLM

    for name in (WEIGHTS, CONFIG, TOKENIZER):
        if not os.path.isfile(os.path.join(export_dir, name)):
            raise ConfigError(f"{export_dir}: not an export directory "
                              f"(no {name}; make one with python -m resnetbk.export)")
    cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(os.path.join(export_dir, CONFIG)).model)
    model = CausalLM(cfg)
    model.load_state_dict(load_file(os.path.join(export_dir, WEIGHTS), device="cpu"))
    return model.to(device).eval(), cfg, os.path.join(export_dir, TOKENIZER)
