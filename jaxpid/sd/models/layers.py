"""Building blocks shared by the Stable Diffusion UNet and VAE (Flax Linen, NHWC inside).

Submodule names follow the diffusers tensor names (``to_out_0`` for ``to_out.0``, ``net_2``
for ``net.2``), so :func:`jaxpid.sd.models.convert.convert_state_dict` maps weights by rule.

Precision: every module computes in ``dtype`` (matmuls and convs) with parameters stored in
``param_dtype``; group/layer-norm statistics and the attention softmax always run in float32.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxpid.errors import ConfigError

Dtype = Any

ATTENTION_SETTINGS = ("auto", "xla", "cudnn")
_HALF_DTYPES = (jnp.bfloat16, jnp.float16)


# --------------------------------------------------------------------------- attention helpers


def _on_gpu() -> bool:
    return jax.default_backend() == "gpu"


def _cudnn_max_head_dim() -> int:
    # cuDNN flash attention takes head dims up to 256 from Hopper (sm_90) on, 128 before.
    capability = getattr(jax.devices()[0], "compute_capability", "0.0")
    try:
        major = int(str(capability).split(".")[0])
    except ValueError:
        major = 0
    return 256 if major >= 9 else 128


def _cudnn_supports(dtype: Dtype, head_dim: int) -> bool:
    return (
        _on_gpu()
        and jnp.dtype(dtype) in [jnp.dtype(d) for d in _HALF_DTYPES]
        and head_dim % 8 == 0
        and head_dim <= _cudnn_max_head_dim()
    )


def attention_implementation(setting: str, dtype: Dtype = jnp.float32, head_dim: int = 64) -> str:
    """Which ``jax.nn.dot_product_attention`` implementation to use.

    Args:
      setting: ``"auto"`` (cuDNN flash attention on a GPU for bf16/fp16 and a supported head
        dim, XLA otherwise), ``"xla"`` or ``"cudnn"``.
      dtype: the compute dtype of queries, keys and values.
      head_dim: channels per attention head.

    Returns:
      ``"xla"`` or ``"cudnn"``.

    Raises:
      ConfigError: unknown setting, or ``"cudnn"`` where cuDNN cannot run it (no GPU, float32,
        or a head dim that is not a multiple of 8 / too large).
    """
    if setting not in ATTENTION_SETTINGS:
        raise ConfigError(f"attention={setting!r}: expected one of {ATTENTION_SETTINGS}")
    if setting == "xla":
        return "xla"
    supported = _cudnn_supports(dtype, head_dim)
    if setting == "cudnn" and not supported:
        raise ConfigError(
            f"attention='cudnn' needs a GPU, bf16/fp16 compute and a head dim that is a multiple "
            f"of 8 and at most {_cudnn_max_head_dim()}; got backend {jax.default_backend()!r}, "
            f"dtype {jnp.dtype(dtype).name}, head dim {head_dim}. Use attention='auto' or 'xla'."
        )
    return "cudnn" if supported else "xla"


def multi_head_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, heads: int, implementation: str
) -> jax.Array:
    """Scaled dot-product attention over ``heads`` heads.

    Args:
      q: (B, T, heads * head_dim) queries.
      k, v: (B, S, heads * head_dim) keys and values.
      heads: number of heads.
      implementation: ``"xla"`` or ``"cudnn"`` (see :func:`attention_implementation`).

    Returns:
      (B, T, heads * head_dim), in the dtype of ``q``.
    """
    batch, q_len, inner = q.shape
    head_dim = inner // heads
    q, k, v = (x.reshape(x.shape[0], x.shape[1], heads, head_dim) for x in (q, k, v))
    if implementation != "xla":
        return jax.nn.dot_product_attention(q, k, v, implementation=implementation).reshape(batch, q_len, inner)
    # Written out rather than jax.nn.dot_product_attention: logits laid out (B, heads, S, T) so
    # the softmax reductions over keys S run with the queries contiguous, and the normalisation
    # applied to the (B, T, heads, d) output instead of the (B, heads, T, S) weights. On XLA:CPU
    # this made the demo UNet ~10 % faster (benchmarks/bench_vs_pytorch.py). Logits, softmax and
    # both contractions accumulate in float32 for bf16 inputs, as diffusers' upcast_attention /
    # upcast_softmax ask.
    dtype = q.dtype
    q = q * jnp.asarray(1.0 / np.sqrt(head_dim), dtype)
    logits = jnp.einsum("bthd,bshd->bhst", q, k, preferred_element_type=jnp.float32)
    weights = jnp.exp(logits - jnp.max(logits, axis=2, keepdims=True))
    denominator = jnp.sum(weights, axis=2)  # (B, heads, T)
    out = jnp.einsum("bhst,bshd->bthd", weights.astype(dtype), v, preferred_element_type=jnp.float32)
    out = out / jnp.transpose(denominator, (0, 2, 1))[..., None]
    return out.astype(dtype).reshape(batch, q_len, inner)


# Cross-attention capture: a cross-attention layer applied with this collection mutable sows its
# probabilities softmax(q·kᵀ/√d) averaged over heads (DAAM-style maps); the collection is mutable
# only when a caller asks for the maps (``UNet2DConditionModel(..., capture_attention=True)``),
# so the normal program computes nothing more.
CROSS_ATTENTION = "cross_attention"


def attention_probabilities(q: jax.Array, k: jax.Array, heads: int) -> jax.Array:
    """softmax(q·kᵀ/√d) over the keys, averaged over heads: (B, T, H·d), (B, S, H·d) -> (B, T, S) float32.

    Computed apart from the attention output (the output's kernels stay untouched); logits and
    softmax in float32, as in :func:`multi_head_attention`.
    """
    batch, q_len, inner = q.shape
    head_dim = inner // heads
    q = q.reshape(batch, q_len, heads, head_dim).astype(jnp.float32) / np.sqrt(head_dim)
    k = k.reshape(batch, k.shape[1], heads, head_dim).astype(jnp.float32)
    logits = jnp.einsum("bthd,bshd->bhts", q, k)
    return jnp.mean(jax.nn.softmax(logits, axis=-1), axis=1)


# --------------------------------------------------------------------------- norms and time


class GroupNorm(nn.Module):
    """GroupNorm over (B, ..., C) with float32 statistics and affine; output cast to ``dtype``.

    Params ``scale`` and ``bias`` (C,), as PyTorch's ``weight`` and ``bias``.
    """

    num_groups: int
    epsilon: float
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        if channels % self.num_groups:
            raise ConfigError(f"GroupNorm: {channels} channels do not split into {self.num_groups} groups")
        scale = self.param("scale", nn.initializers.ones, (channels,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (channels,), self.param_dtype)
        # Per-channel sums over space first (channels contiguous), then per group on a (B, C)
        # array: XLA:CPU reduces a (B, HW, G, C/G) array over axes (1, 3) slowly (the demo UNet
        # ran ~15 % faster this way). Two passes (mean, then centred variance) in float32.
        groups, per_group = self.num_groups, channels // self.num_groups
        x32 = x.astype(jnp.float32).reshape(x.shape[0], -1, channels)  # (B, HW, C)
        count = x32.shape[1] * per_group
        group_sum = lambda a: a.sum(axis=1).reshape(-1, groups, per_group).sum(-1)  # noqa: E731 (B, G)
        to_channels = lambda g: jnp.repeat(g, per_group, axis=-1)[:, None, :]  # noqa: E731 (B, 1, C)
        centred = x32 - to_channels(group_sum(x32) / count)
        inv_std = to_channels(jax.lax.rsqrt(group_sum(jnp.square(centred)) / count + self.epsilon))
        y = centred * (inv_std * scale.astype(jnp.float32)) + bias.astype(jnp.float32)
        return y.reshape(x.shape).astype(self.dtype)


class LayerNorm(nn.Module):
    """LayerNorm over the last axis with float32 statistics; output cast to ``dtype``."""

    epsilon: float = 1e-5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (channels,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (channels,), self.param_dtype)
        x32 = x.astype(jnp.float32)
        mean = x32.mean(axis=-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon)
        return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(self.dtype)


def group_norm(num_groups: int, epsilon: float, dtype: Dtype, param_dtype: Dtype, name: str) -> GroupNorm:
    return GroupNorm(num_groups, epsilon, dtype=dtype, param_dtype=param_dtype, name=name)


def layer_norm(epsilon: float, dtype: Dtype, param_dtype: Dtype, name: str) -> LayerNorm:
    return LayerNorm(epsilon, dtype=dtype, param_dtype=param_dtype, name=name)


def timestep_embedding(
    timesteps: jax.Array,
    dim: int,
    flip_sin_to_cos: bool,
    freq_shift: float,
    max_period: float = 10000.0,
) -> jax.Array:
    """Sinusoidal timestep features, as diffusers' ``get_timestep_embedding``.

    Args:
      timesteps: (B,) timesteps, integer or fractional.
      dim: feature count; odd counts get one zero column at the end.
      flip_sin_to_cos: ``[cos, sin]`` order when True, ``[sin, cos]`` when False.
      freq_shift: diffusers' ``downscale_freq_shift`` (SD: 0 via ``freq_shift``).

    Returns:
      (B, dim) float32.
    """
    half = dim // 2
    # Frequencies are trace-time constants: computed in float64 and rounded once, so they do
    # not depend on how XLA rewrites float32 exp/division. Angles near 1000 rad still carry
    # float32 rounding of ~3e-5, in PyTorch as here.
    frequencies = np.exp(-math.log(max_period) * np.arange(half) / (half - freq_shift)).astype(np.float32)
    angles = timesteps.astype(jnp.float32)[:, None] * jnp.asarray(frequencies)[None, :]
    sin, cos = jnp.sin(angles), jnp.cos(angles)
    emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    if dim % 2 == 1:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class TimestepEmbedding(nn.Module):
    """Two dense layers with SiLU between: sinusoidal features -> time embedding (B, features)."""

    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = nn.Dense(self.features, name="linear_1", **kw)(x.astype(self.dtype))
        return nn.Dense(self.features, name="linear_2", **kw)(nn.silu(x))


# --------------------------------------------------------------------------- convolutional


SMALL_MAP = 2  # output maps at most this wide take the im2col + matmul path (see Conv2D)


class Conv2D(nn.Module):
    """A square convolution with PyTorch-style symmetric padding; params ``kernel`` (k, k, in,
    out) and ``bias`` (out,), as ``flax.linen.Conv``.

    XLA:CPU (jaxlib 0.10.2) runs a 3x3 convolution whose output map is 2x2 or 1x1 through a slow
    generic path (0.2-0.4 GFLOP/s, ~40x slower than the same convolution as im2col + one matmul);
    such maps are the lowest UNet level of SD at 16x16 (or smaller) latents. Those convolutions
    are written as im2col + matmul: the SD 2.1-base UNet at 16x16 latents went from 31.5 s to
    10.4 s for 8 evaluations on a 2-core CPU (benchmarks/bench_vs_pytorch.py). Larger maps use
    XLA's convolution.
    """

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

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


def conv(
    features: int,
    kernel: int,
    dtype: Dtype,
    param_dtype: Dtype,
    name: str | None,
    stride: int = 1,
    padding: int | None = None,
) -> Conv2D:
    """A square conv with PyTorch-style symmetric padding (default: 'same' for odd kernels)."""
    pad = (kernel - 1) // 2 if padding is None else padding
    return Conv2D(features, kernel, stride, pad, dtype=dtype, param_dtype=param_dtype, name=name)


class ResnetBlock2D(nn.Module):
    """GroupNorm-SiLU-conv twice, time embedding added between, 1x1 shortcut when channels change.

    Call: ``(x (B,H,W,Cin), temb (B,T) or None) -> (B,H,W,out_channels)``.
    """

    out_channels: int
    groups: int
    eps: float
    use_time_embedding: bool = True
    output_scale_factor: float = 1.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array | None = None) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = nn.silu(group_norm(self.groups, self.eps, name="norm1", **kw)(x))
        h = conv(self.out_channels, 3, name="conv1", **kw)(h)
        if self.use_time_embedding:
            t = nn.Dense(self.out_channels, name="time_emb_proj", **kw)(nn.silu(temb.astype(self.dtype)))
            h = h + t[:, None, None, :]
        h = nn.silu(group_norm(self.groups, self.eps, name="norm2", **kw)(h))
        h = conv(self.out_channels, 3, name="conv2", **kw)(h)
        if x.shape[-1] != self.out_channels:
            x = conv(self.out_channels, 1, name="conv_shortcut", **kw)(x)
        out = x.astype(self.dtype) + h
        if self.output_scale_factor != 1.0:
            out = out / self.output_scale_factor
        return out


class Downsample2D(nn.Module):
    """Stride-2 3x3 conv named ``conv``. ``padding=0`` pads bottom/right by one first (VAE)."""

    out_channels: int
    padding: int = 1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.padding == 0:
            x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
        return conv(self.out_channels, 3, self.dtype, self.param_dtype, "conv", stride=2, padding=self.padding)(x)


def nearest_resize(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Nearest-neighbour resize of (B,H,W,C) to ``size``, PyTorch's ``mode="nearest"`` indexing."""
    height, width = x.shape[1], x.shape[2]
    out_h, out_w = size
    if (out_h, out_w) == (2 * height, 2 * width):
        return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    rows = (jnp.arange(out_h) * height) // out_h
    cols = (jnp.arange(out_w) * width) // out_w
    return x[:, rows][:, :, cols]


class Upsample2D(nn.Module):
    """Nearest 2x (or to ``size``) upsampling then a 3x3 conv named ``conv``."""

    out_channels: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, size: tuple[int, int] | None = None) -> jax.Array:
        size = (2 * x.shape[1], 2 * x.shape[2]) if size is None else size
        x = nearest_resize(x, size)
        return conv(self.out_channels, 3, self.dtype, self.param_dtype, "conv")(x)


# --------------------------------------------------------------------------- transformer


class Attention(nn.Module):
    """Multi-head self- or cross-attention: ``to_q``, ``to_k``, ``to_v`` and ``to_out_0``.

    Call: ``(x (B,T,C), context (B,S,Cc) or None) -> (B,T,C)``; ``context=None`` is
    self-attention. A cross-attention layer applied with the ``CROSS_ATTENTION`` collection
    mutable also sows its attention probabilities averaged over heads, (B, T, S) float32; otherwise
    (the normal call) nothing extra is computed.
    """

    heads: int
    head_dim: int
    qkv_bias: bool = False
    attention: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        inner = self.heads * self.head_dim
        cross = context is not None
        context = x if context is None else context.astype(self.dtype)
        q = nn.Dense(inner, use_bias=self.qkv_bias, name="to_q", **kw)(x)
        k = nn.Dense(inner, use_bias=self.qkv_bias, name="to_k", **kw)(context)
        v = nn.Dense(inner, use_bias=self.qkv_bias, name="to_v", **kw)(context)
        impl = attention_implementation(self.attention, self.dtype, self.head_dim)
        out = multi_head_attention(q, k, v, self.heads, impl)
        if cross and self.is_mutable_collection(CROSS_ATTENTION):  # capture is on (see CROSS_ATTENTION)
            self.sow(CROSS_ATTENTION, "probabilities", attention_probabilities(q, k, self.heads))
        return nn.Dense(x.shape[-1], name="to_out_0", **kw)(out)


class GEGLU(nn.Module):
    """``proj`` to 2x features, then value * gelu(gate) (exact erf GELU, as diffusers)."""

    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.Dense(2 * self.features, dtype=self.dtype, param_dtype=self.param_dtype, name="proj")(x)
        value, gate = jnp.split(h, 2, axis=-1)
        return value * nn.gelu(gate, approximate=False)


class FeedForward(nn.Module):
    """GEGLU feed-forward with 4x inner width: ``net_0`` (GEGLU) and ``net_2`` (Dense)."""

    mult: int = 4
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = GEGLU(self.mult * x.shape[-1], name="net_0", **kw)(x)
        return nn.Dense(x.shape[-1], name="net_2", **kw)(h)


class BasicTransformerBlock(nn.Module):
    """Pre-LayerNorm self-attention, cross-attention and GEGLU feed-forward, each residual.

    Call: ``(x (B,T,C), context (B,S,Cc)) -> (B,T,C)``.
    """

    heads: int
    head_dim: int
    norm_eps: float = 1e-5
    attention: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        attn = dict(heads=self.heads, head_dim=self.head_dim, attention=self.attention, **kw)
        x = x + Attention(name="attn1", **attn)(layer_norm(self.norm_eps, name="norm1", **kw)(x))
        x = x + Attention(name="attn2", **attn)(layer_norm(self.norm_eps, name="norm2", **kw)(x), context)
        return x + FeedForward(name="ff", **kw)(layer_norm(self.norm_eps, name="norm3", **kw)(x))


class Transformer2DModel(nn.Module):
    """Spatial transformer: GroupNorm, ``proj_in``, transformer blocks, ``proj_out``, residual.

    ``use_linear_projection`` selects Dense projections on (B, H*W, C) tokens (SD 2.x) or 1x1
    convs on the feature map (SD 1.x). Call: ``(x (B,H,W,C), context (B,S,Cc)) -> (B,H,W,C)``.
    """

    heads: int
    head_dim: int
    norm_num_groups: int
    use_linear_projection: bool
    num_layers: int = 1
    attention: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        batch, height, width, channels = x.shape
        inner = self.heads * self.head_dim
        h = group_norm(self.norm_num_groups, 1e-6, name="norm", **kw)(x)
        if self.use_linear_projection:
            h = nn.Dense(inner, name="proj_in", **kw)(h.reshape(batch, height * width, channels))
        else:
            h = conv(inner, 1, name="proj_in", **kw)(h).reshape(batch, height * width, inner)
        for i in range(self.num_layers):
            block = BasicTransformerBlock(
                self.heads, self.head_dim, attention=self.attention, name=f"transformer_blocks_{i}", **kw
            )
            h = block(h, context)
        if self.use_linear_projection:
            h = nn.Dense(channels, name="proj_out", **kw)(h).reshape(batch, height, width, channels)
        else:
            h = conv(channels, 1, name="proj_out", **kw)(h.reshape(batch, height, width, inner))
        return h + x.astype(self.dtype)
