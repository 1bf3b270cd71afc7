"""Training a diffusion UNet on a generation's images, and building the next generation's data mix.

Pure PyTorch/diffusers/numpy code: nothing here imports Django.
"""
