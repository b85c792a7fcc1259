"""Data-sheet peaks for model FLOPs utilisation (the model FLOPs themselves: resnetbk/models/counts.py)."""

from __future__ import annotations

# Dense bf16 peak per GPU (NVIDIA data sheets, without sparsity), for MFU. Keys match nvidia-smi names.
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "A100": 312.0, "A800": 312.0, "L40S": 362.0,
               "RTX 4090": 165.0, "RTX 3090": 71.0, "V100": 125.0, "T4": 65.0}


def peak_tflops(gpu_name: str):
    """The data-sheet dense peak for a GPU name, or None when unknown (MFU is then not reported)."""
    for key, value in PEAK_TFLOPS.items():
        if key in gpu_name.upper():
            return value
    return None
