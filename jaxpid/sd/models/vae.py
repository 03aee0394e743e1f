"""AutoencoderKL (the Stable Diffusion VAE) in Flax Linen.

Built from the diffusers ``vae/config.json``; parameter names follow the current diffusers
state dict. Older checkpoints name the mid-block attention ``query/key/value/proj_attn``;
pass :func:`vae_rename` to the converter to read them.

Images are NCHW in [-1, 1]; latents NCHW, *unscaled* (the pipeline multiplies by
``VAEConfig.scaling_factor`` after encoding and divides before decoding).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from jaxpid.errors import ConfigError, ShapeError
from jaxpid.sd.models.layers import (
    Downsample2D,
    ResnetBlock2D,
    Upsample2D,
    attention_implementation,
    conv,
    group_norm,
    multi_head_attention,
)
from jaxpid.sd.models.shapes import remembered_shapes

Dtype = Any

_RESNET_EPS = 1e-6  # fixed in diffusers' Encoder/Decoder, not a config key
_LOGVAR_RANGE = (-30.0, 20.0)  # diffusers' DiagonalGaussianDistribution clamps here

_MUST_BE_DEFAULT: dict[str, tuple[Any, ...]] = {
    "act_fn": ("silu", "swish", None),
    "latents_mean": (None,),
    "latents_std": (None,),
}


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """The AutoencoderKL architecture and its latent scaling."""

    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    norm_num_groups: int = 32
    sample_size: int = 512
    scaling_factor: float = 0.18215
    shift_factor: float | None = None
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True
    force_upcast: bool = True  # no effect: norms and softmax always run in float32

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "VAEConfig":
        """Validate a diffusers ``vae/config.json`` dict.

        Raises:
          ConfigError: naming the key whose value jaxpid does not support.
        """
        for key, allowed in _MUST_BE_DEFAULT.items():
            if d.get(key) not in allowed:
                raise ConfigError(f"vae config {key}={d.get(key)!r} is not supported (expected {allowed[0]!r})")
        block_out = tuple(int(c) for c in d.get("block_out_channels", cls.block_out_channels))
        for key, expected in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
            types = tuple(d.get(key, (expected,) * len(block_out)))
            for block_type in types:
                if block_type != expected:
                    raise ConfigError(
                        f"vae config {key}: block type {block_type!r} is not supported (known: {expected!r})"
                    )
            if len(types) != len(block_out):
                raise ConfigError(
                    f"vae config {key} has {len(types)} entries but block_out_channels has {len(block_out)}"
                )
        sample_size = d.get("sample_size", cls.sample_size)
        if isinstance(sample_size, (list, tuple)):
            sample_size = sample_size[0]
        shift = d.get("shift_factor")
        return cls(
            in_channels=int(d.get("in_channels", 3)),
            out_channels=int(d.get("out_channels", 3)),
            block_out_channels=block_out,
            layers_per_block=int(d.get("layers_per_block", 1)),
            latent_channels=int(d.get("latent_channels", 4)),
            norm_num_groups=int(d.get("norm_num_groups", 32)),
            sample_size=int(sample_size),
            scaling_factor=float(d.get("scaling_factor", 0.18215)),
            shift_factor=None if shift is None else float(shift),
            use_quant_conv=bool(d.get("use_quant_conv", True)),
            use_post_quant_conv=bool(d.get("use_post_quant_conv", True)),
            mid_block_add_attention=bool(d.get("mid_block_add_attention", True)),
            force_upcast=bool(d.get("force_upcast", True)),
        )


_OLD_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_OLD_ATTENTION_PATTERN = re.compile(r"^(.*\.attentions\.\d+\.)(query|key|value|proj_attn)(\.(?:weight|bias))$")


def vae_rename(name: str) -> str | None:
    """Map an old diffusers VAE tensor name to the current one (others pass unchanged).

    ``encoder.mid_block.attentions.0.query.weight`` -> ``encoder.mid_block.attentions.0.to_q.weight``;
    likewise ``key`` -> ``to_k``, ``value`` -> ``to_v``, ``proj_attn`` -> ``to_out.0``.
    """
    match = _OLD_ATTENTION_PATTERN.match(name)
    if match is None:
        return name
    prefix, old, leaf = match.groups()
    return f"{prefix}{_OLD_ATTENTION_NAMES[old]}{leaf}"


class SpatialSelfAttention(nn.Module):
    """The VAE mid-block attention: GroupNorm, single-head self-attention over pixels, residual.

    Call: ``x (B,H,W,C) -> (B,H,W,C)``. Names: ``group_norm``, ``to_q/to_k/to_v``, ``to_out_0``.
    """

    groups: int
    attention: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        batch, height, width, channels = x.shape
        h = group_norm(self.groups, _RESNET_EPS, name="group_norm", **kw)(x).reshape(batch, height * width, channels)
        q = nn.Dense(channels, name="to_q", **kw)(h)
        k = nn.Dense(channels, name="to_k", **kw)(h)
        v = nn.Dense(channels, name="to_v", **kw)(h)
        # diffusers sets the head dim to the channel count here: one head.
        out = multi_head_attention(q, k, v, 1, attention_implementation(self.attention, self.dtype, channels))
        out = nn.Dense(channels, name="to_out_0", **kw)(out)
        return out.reshape(batch, height, width, channels) + x.astype(self.dtype)


class MidBlock(nn.Module):
    """UNetMidBlock2D as the VAE uses it: resnet, (attention), resnet; no time embedding."""

    config: VAEConfig
    attention: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        channels = cfg.block_out_channels[-1]
        resnet = dict(groups=cfg.norm_num_groups, eps=_RESNET_EPS, use_time_embedding=False, **kw)
        x = ResnetBlock2D(channels, name="resnets_0", **resnet)(x)
        if cfg.mid_block_add_attention:
            x = SpatialSelfAttention(cfg.norm_num_groups, self.attention, name="attentions_0", **kw)(x)
        return ResnetBlock2D(channels, name="resnets_1", **resnet)(x)


class DownEncoderBlock2D(nn.Module):
    """``layers_per_block`` resnets, then (except last) a stride-2 conv padded bottom/right."""

    config: VAEConfig
    channels: int
    add_downsample: bool
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        for j in range(cfg.layers_per_block):
            x = ResnetBlock2D(
                self.channels, cfg.norm_num_groups, _RESNET_EPS, use_time_embedding=False, name=f"resnets_{j}", **kw
            )(x)
        if self.add_downsample:
            x = Downsample2D(self.channels, padding=0, name="downsamplers_0", **kw)(x)
        return x


class UpDecoderBlock2D(nn.Module):
    """``layers_per_block + 1`` resnets, then (except last) nearest 2x upsampling and a conv."""

    config: VAEConfig
    channels: int
    add_upsample: bool
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        for j in range(cfg.layers_per_block + 1):
            x = ResnetBlock2D(
                self.channels, cfg.norm_num_groups, _RESNET_EPS, use_time_embedding=False, name=f"resnets_{j}", **kw
            )(x)
        if self.add_upsample:
            x = Upsample2D(self.channels, name="upsamplers_0", **kw)(x)
        return x


class Encoder(nn.Module):
    """Image (B,H,W,Cin) -> posterior moments (B,H/f,W/f,2*latent_channels), NHWC."""

    config: VAEConfig
    attention: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = conv(cfg.block_out_channels[0], 3, name="conv_in", **kw)(x.astype(self.dtype))
        last = len(cfg.block_out_channels) - 1
        for i, channels in enumerate(cfg.block_out_channels):
            x = DownEncoderBlock2D(cfg, channels, i < last, name=f"down_blocks_{i}", **kw)(x)
        x = MidBlock(cfg, self.attention, name="mid_block", **kw)(x)
        x = nn.silu(group_norm(cfg.norm_num_groups, _RESNET_EPS, name="conv_norm_out", **kw)(x))
        return conv(2 * cfg.latent_channels, 3, name="conv_out", **kw)(x)


class Decoder(nn.Module):
    """Latent (B,h,w,latent_channels) -> image (B,h*f,w*f,out_channels), NHWC."""

    config: VAEConfig
    attention: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = conv(cfg.block_out_channels[-1], 3, name="conv_in", **kw)(z.astype(self.dtype))
        x = MidBlock(cfg, self.attention, name="mid_block", **kw)(x)
        last = len(cfg.block_out_channels) - 1
        for i, channels in enumerate(reversed(cfg.block_out_channels)):
            x = UpDecoderBlock2D(cfg, channels, i < last, name=f"up_blocks_{i}", **kw)(x)
        x = nn.silu(group_norm(cfg.norm_num_groups, _RESNET_EPS, name="conv_norm_out", **kw)(x))
        return conv(cfg.out_channels, 3, name="conv_out", **kw)(x)


class AutoencoderKL(nn.Module):
    """The Stable Diffusion VAE. Use ``apply(..., method="encode" | "decode")``.

    ``__call__`` (used by ``init``) encodes and decodes the posterior mean.
    """

    config: VAEConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attention: str = "auto"

    def setup(self) -> None:
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.encoder = Encoder(cfg, self.attention, **kw)
        self.decoder = Decoder(cfg, self.attention, **kw)
        if cfg.use_quant_conv:
            self.quant_conv = conv(2 * cfg.latent_channels, 1, name=None, **kw)
        if cfg.use_post_quant_conv:
            self.post_quant_conv = conv(cfg.latent_channels, 1, name=None, **kw)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Images (B,Cin,H,W) in [-1,1] -> posterior ``(mean, logvar)``, each (B,latent,H/f,W/f) float32."""
        cfg = self.config
        factor = cfg.downsample_factor
        if x.ndim != 4 or x.shape[1] != cfg.in_channels or x.shape[2] % factor or x.shape[3] % factor:
            raise ShapeError(
                f"vae encode: expected (B, {cfg.in_channels}, H, W) with H, W multiples of "
                f"{cfg.downsample_factor}, got {x.shape}"
            )
        moments = self.encoder(jnp.transpose(x, (0, 2, 3, 1)))
        if cfg.use_quant_conv:
            moments = self.quant_conv(moments)
        moments = jnp.transpose(moments, (0, 3, 1, 2)).astype(jnp.float32)
        mean, logvar = jnp.split(moments, 2, axis=1)
        return mean, jnp.clip(logvar, *_LOGVAR_RANGE)

    def decode(self, z: jax.Array) -> jax.Array:
        """Unscaled latents (B,latent,h,w) -> images (B,Cout,h*f,w*f) float32, about [-1,1]."""
        cfg = self.config
        if z.ndim != 4 or z.shape[1] != cfg.latent_channels:
            raise ShapeError(f"vae decode: expected (B, {cfg.latent_channels}, h, w), got {z.shape}")
        z = jnp.transpose(z, (0, 2, 3, 1)).astype(self.dtype)
        if cfg.use_post_quant_conv:
            z = self.post_quant_conv(z)
        return jnp.transpose(self.decoder(z), (0, 3, 1, 2)).astype(jnp.float32)

    def __call__(self, x: jax.Array) -> jax.Array:
        mean, _ = self.encode(x)
        return self.decode(mean)


def posterior_sample(mean: jax.Array, logvar: jax.Array, key: jax.Array) -> jax.Array:
    """One draw from the diagonal Gaussian posterior: ``mean + exp(logvar/2) * N(0, I)``."""
    return mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)


def expected_params(config: VAEConfig, dtype: Dtype = jnp.float32) -> dict:
    """The VAE's params pytree as ``jax.ShapeDtypeStruct`` leaves (nothing is allocated)."""
    return remembered_shapes("vae", config, dtype, __file__, lambda: _trace_params(config, dtype))


def _trace_params(config: VAEConfig, dtype: Dtype) -> dict:
    model = AutoencoderKL(config, param_dtype=dtype)
    size = config.downsample_factor
    image = jax.ShapeDtypeStruct((1, config.in_channels, size, size), jnp.float32)
    return jax.eval_shape(model.init, jax.random.key(0), image)["params"]
