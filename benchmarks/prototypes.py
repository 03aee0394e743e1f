"""Prototypes of proposed speed-ups to jaxpid.models.layers for XLA:CPU, measured, not adopted.

``apply(...)`` monkeypatches them into ``jaxpid.models.layers`` (and the names ``unet`` imported
from it) for the rest of the process; modules built afterwards trace the patched code. Parameter
names and shapes are unchanged, so the same weights load. Used by
``bench_throughput.py --prototypes`` to measure them against the shipped code; nothing in the
package imports this file.

- ``conv``: XLA:CPU (jaxlib 0.10.2) runs a 3x3 convolution on a 2x2 (or 1x1) feature map
  through a slow generic path -- 0.2-0.4 GFLOP/s, 40x slower than the same convolution written
  as im2col + one matmul; such maps occur at the lowest UNet level of SD at 16x16 latents. The
  prototype switches to im2col + dot when the output map is at most 2 wide.
(The attention and GroupNorm rewrites that were measured here first are now the shipped code
in ``jaxpid.models.layers``.)
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxpid.models import layers, unet

_ORIGINAL = {"conv": layers.conv}
SMALL_MAP = 2  # output maps at most this wide take the im2col path


class Conv2D(nn.Module):
    """Square conv, PyTorch-style symmetric padding; params ``kernel`` (k, k, in, out), ``bias``."""

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    dtype: object = jnp.float32
    param_dtype: object = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, s, p = self.kernel_size, self.stride, self.padding
        channels = x.shape[-1]
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, channels, self.features), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        out_h = (x.shape[1] + 2 * p - k) // s + 1
        out_w = (x.shape[2] + 2 * p - k) // s + 1
        if min(out_h, out_w) <= SMALL_MAP:
            padded = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
            columns = [padded[:, i:i + s * (out_h - 1) + 1:s, j:j + s * (out_w - 1) + 1:s, :]
                       for i in range(k) for j in range(k)]
            y = jnp.einsum("bhwk,ko->bhwo", jnp.concatenate(columns, axis=-1), kernel.reshape(k * k * channels, -1))
        else:
            y = jax.lax.conv_general_dilated(x, kernel, (s, s), ((p, p), (p, p)),
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + bias.astype(self.dtype)


def conv(features, kernel, dtype, param_dtype, name, stride=1, padding=None):
    pad = (kernel - 1) // 2 if padding is None else padding
    return Conv2D(features, kernel, stride, pad, dtype=dtype, param_dtype=param_dtype, name=name)


PATCHES = ("conv",)


def apply(enabled=PATCHES) -> None:
    """Patch in the named prototypes (and restore the shipped code for the others)."""
    unknown = set(enabled) - set(PATCHES)
    if unknown:
        raise ValueError(f"unknown prototypes {sorted(unknown)}; known: {PATCHES}")
    layers.conv = unet.conv = conv if "conv" in enabled else _ORIGINAL["conv"]
