"""Inference: slab-wise and cascade inferers, low-resolution slice inference, post-processing."""
