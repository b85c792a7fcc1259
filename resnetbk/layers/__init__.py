"""Layers over the ops: the BK mixer, the MoE, causal attention and the pieces every block shares. Each module takes
its own arguments (not the run config), so a family composes them as it likes."""
