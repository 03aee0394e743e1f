"""Flax modules of the Stable Diffusion family (UNet, CLIP text encoder, VAE) and weight conversion.

Nothing here knows about information or PID; the pipeline wraps these into a denoiser.
"""
