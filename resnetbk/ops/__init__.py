"""Kernels and their PyTorch references: the BK resolvent's diagonal and response, the MoE's routing glue, the fused
norm and the training loss. Each Triton module has a plain PyTorch counterpart that it is tested against; nothing
here imports from the layers, models or training above it."""
