"""Model families over the layers: a torch-free registry of their specs (registry.py), their parameter and FLOP
counts (counts.py), the decoder skeleton they share (decoder.py), and one package per family."""
