"""Sampling a generation's checkpoint: pure PyTorch/diffusers code, nothing here imports Django."""
