"""Training on a DeepSpeed engine: the loop (trainer.py), the engine's construction (engine.py), what this version of
DeepSpeed and torch's extension builds need worked around (workarounds.py), and the pieces around them: strategies
and profiles, checkpoints, CUDA graphs, optimizer groups and schedule, metrics, throughput."""
