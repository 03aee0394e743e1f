"""UNet2DConditionModel of the Stable Diffusion 1.x / 2.x / XL family in Flax Linen.

Built from the diffusers ``unet/config.json``; parameter names follow the diffusers state dict
(see :mod:`jaxpid.sd.models.convert`). Public entry point takes and returns NCHW arrays.

SDXL needs nothing new in the blocks (per-block transformer depths, blocks without attention and
wide cross-attention are config values); it adds ``addition_embed_type="text_time"``: the pooled
text embedding and the Fourier features of the size ids (original size, crop top-left, target
size) go through ``add_embedding`` and are added to the time embedding.

``upcast_attention`` (set by SD 2.x configs) is accepted and needs no action: the attention
logits and softmax are always computed in float32 (see :func:`layers.multi_head_attention`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from jaxpid.errors import ConfigError, ShapeError
from jaxpid.sd.models.checked import apply_checked
from jaxpid.sd.models.layers import (
    CROSS_ATTENTION,
    Downsample2D,
    ResnetBlock2D,
    TimestepEmbedding,
    Transformer2DModel,
    Upsample2D,
    conv,
    group_norm,
    timestep_embedding,
)
from jaxpid.sd.models.shapes import remembered_shapes

Dtype = Any

DOWN_BLOCK_TYPES = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_BLOCK_TYPES = ("CrossAttnUpBlock2D", "UpBlock2D")
MID_BLOCK_TYPES = ("UNetMidBlock2DCrossAttn",)
ADDITION_EMBED_TYPES = (None, "text_time")
SDXL_TIME_IDS = 6  # SDXL base: original (h, w), crop top-left (top, left), target (h, w)

# Keys that change the architecture in ways jaxpid does not implement: they must hold these
# (diffusers default) values. Keys not listed and not read below are ignored: they either only
# affect block types rejected anyway (e.g. `resnet_skip_time_act`) or training (`dropout`).
_MUST_BE_DEFAULT: dict[str, tuple[Any, ...]] = {
    "dual_cross_attention": (False, None),
    "only_cross_attention": (False, None),
    "mid_block_only_cross_attention": (False, None),
    "class_embed_type": (None,),
    "num_class_embeds": (None,),
    "class_embeddings_concat": (False, None),
    "encoder_hid_dim": (None,),
    "encoder_hid_dim_type": (None,),
    "time_cond_proj_dim": (None,),
    "time_embedding_type": ("positional", None),
    "time_embedding_act_fn": (None,),
    "timestep_post_act": (None,),
    "resnet_time_scale_shift": ("default", None),
    "attention_type": ("default", None),
    "reverse_transformer_layers_per_block": (None,),
    "act_fn": ("silu", "swish", None),
}


def _per_block(value: Any, count: int, key: str) -> tuple:
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ConfigError(f"unet config {key}={list(value)}: expected {count} entries, one per block")
        return tuple(value)
    return (value,) * count


def _single_cross_attention_dim(value: Any, count: int) -> int:
    dims = set(_per_block(value, count, "cross_attention_dim"))
    if len(dims) != 1:
        raise ConfigError(f"unet config cross_attention_dim={value!r}: differing per-block values are not supported")
    return int(dims.pop())


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """The UNet architecture, per-block lists resolved (one entry per down block)."""

    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: tuple[int, ...] = (2, 2, 2, 2)
    num_heads: tuple[int, ...] = (8, 8, 8, 8)  # diffusers' attention_head_dim for SD 1.x/2.x
    transformer_layers_per_block: tuple[int, ...] = (1, 1, 1, 1)
    cross_attention_dim: int = 768  # feature size of encoder_hidden_states
    use_linear_projection: bool = False
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: float = 0.0
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
    up_block_types: tuple[str, ...] = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
    mid_block_type: str = "UNetMidBlock2DCrossAttn"
    sample_size: int = 64
    upcast_attention: bool = False  # no effect: attention softmax is always float32
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0
    center_input_sample: bool = False
    conv_in_kernel: int = 3
    conv_out_kernel: int = 3
    time_embedding_dim: int | None = None
    # SDXL: "text_time" adds add_embedding(pooled text ++ Fourier(time ids)) to the time embedding.
    addition_embed_type: str | None = None
    addition_time_embed_dim: int | None = None  # Fourier features per time id
    projection_class_embeddings_input_dim: int | None = None  # add_embedding's input: pooled + ids x features

    @property
    def time_embed_dim(self) -> int:
        return self.time_embedding_dim or 4 * self.block_out_channels[0]

    def pooled_dim(self, n_time_ids: int) -> int:
        """The pooled text width add_embedding expects next to ``n_time_ids`` Fourier-embedded ids."""
        return int(self.projection_class_embeddings_input_dim) - n_time_ids * int(self.addition_time_embed_dim)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "UNetConfig":
        """Validate a diffusers ``unet/config.json`` dict.

        Raises:
          ConfigError: naming the key whose value jaxpid does not support.
        """
        for key, allowed in _MUST_BE_DEFAULT.items():
            value = d.get(key)
            if isinstance(value, (list, tuple)) and key.endswith("cross_attention"):
                value = any(value) or False
            if value not in allowed:
                raise ConfigError(f"unet config {key}={value!r} is not supported (expected {allowed[0]!r})")

        block_out = tuple(int(c) for c in d.get("block_out_channels", cls.block_out_channels))
        n = len(block_out)
        down = tuple(d.get("down_block_types", cls.down_block_types))
        up = tuple(d.get("up_block_types", cls.up_block_types))
        checks = (("down_block_types", down, DOWN_BLOCK_TYPES), ("up_block_types", up, UP_BLOCK_TYPES))
        for key, types, known in checks:
            for block_type in types:
                if block_type not in known:
                    raise ConfigError(
                        f"unet config {key}: block type {block_type!r} is not supported (known: {known})"
                    )
            if len(types) != n:
                raise ConfigError(f"unet config {key} has {len(types)} entries but block_out_channels has {n}")
        mid = d.get("mid_block_type", cls.mid_block_type)
        if mid not in MID_BLOCK_TYPES:
            raise ConfigError(f"unet config mid_block_type={mid!r} is not supported (known: {MID_BLOCK_TYPES})")

        # diffusers' `attention_head_dim` is, for this family, the number of heads; a non-null
        # `num_attention_heads` names that number correctly and wins.
        heads_value = d.get("num_attention_heads")
        heads_key = "num_attention_heads"
        if heads_value is None:
            heads_value, heads_key = d.get("attention_head_dim", 8), "attention_head_dim"
        heads = tuple(int(h) for h in _per_block(heads_value, n, heads_key))
        for channels, h in zip(block_out, heads):
            if channels % h:
                raise ConfigError(f"unet config {heads_key}: {channels} channels do not split into {h} heads")

        transformer_layers = _per_block(d.get("transformer_layers_per_block", 1), n, "transformer_layers_per_block")
        if any(isinstance(t, (list, tuple)) for t in transformer_layers):
            raise ConfigError("unet config transformer_layers_per_block: nested per-layer lists are not supported")
        norm_num_groups = d.get("norm_num_groups", 32)
        if norm_num_groups is None:
            raise ConfigError("unet config norm_num_groups=None is not supported")
        sample_size = d.get("sample_size", cls.sample_size)
        if isinstance(sample_size, (list, tuple)):
            sample_size = int(sample_size[0])
        addition = _addition_embedding(d)

        return cls(
            in_channels=int(d.get("in_channels", 4)),
            out_channels=int(d.get("out_channels", 4)),
            block_out_channels=block_out,
            layers_per_block=tuple(int(x) for x in _per_block(d.get("layers_per_block", 2), n, "layers_per_block")),
            num_heads=heads,
            transformer_layers_per_block=tuple(int(x) for x in transformer_layers),
            cross_attention_dim=_single_cross_attention_dim(d.get("cross_attention_dim", 1280), n),
            use_linear_projection=bool(d.get("use_linear_projection", False)),
            norm_num_groups=int(norm_num_groups),
            norm_eps=float(d.get("norm_eps", 1e-5)),
            flip_sin_to_cos=bool(d.get("flip_sin_to_cos", True)),
            freq_shift=float(d.get("freq_shift", 0)),
            down_block_types=down,
            up_block_types=up,
            mid_block_type=mid,
            sample_size=int(sample_size) if sample_size is not None else cls.sample_size,
            upcast_attention=bool(d.get("upcast_attention", False)),
            downsample_padding=int(d.get("downsample_padding", 1)),
            mid_block_scale_factor=float(d.get("mid_block_scale_factor", 1.0)),
            center_input_sample=bool(d.get("center_input_sample", False)),
            conv_in_kernel=int(d.get("conv_in_kernel", 3)),
            conv_out_kernel=int(d.get("conv_out_kernel", 3)),
            time_embedding_dim=d.get("time_embedding_dim"),
            **addition,
        )


def _addition_embedding(d: Mapping[str, Any]) -> dict[str, Any]:
    """The checked ``addition_embed_type`` keys: none (SD 1.x / 2.x) or SDXL's ``text_time``."""
    kind = d.get("addition_embed_type")
    if kind not in ADDITION_EMBED_TYPES:
        raise ConfigError(
            f"unet config addition_embed_type={kind!r} is not supported: jaxpid implements None (SD 1.x / 2.x) "
            "and 'text_time' (SDXL: pooled text embedding + size/crop time ids)"
        )
    keys = ("addition_time_embed_dim", "projection_class_embeddings_input_dim")
    if kind is None:
        # Without an addition embedding these keys only matter to class embeddings, rejected above.
        return {"addition_embed_type": None}
    values = {key: d.get(key) for key in keys}
    for key, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(
                f"unet config addition_embed_type='text_time' needs a positive integer {key}, got {value!r}"
            )
    return {"addition_embed_type": kind, **values}


class DownBlock(nn.Module):
    """CrossAttnDownBlock2D (``cross_attention=True``) or DownBlock2D.

    Call: ``(x (B,H,W,Cin), temb, context) -> (x (B,H',W',C), skips: tuple of NHWC arrays)``.
    """

    config: UNetConfig
    index: int
    cross_attention: bool
    add_downsample: bool
    attention: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, temb, context):
        cfg, i = self.config, self.index
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        channels = cfg.block_out_channels[i]
        skips = []
        for j in range(cfg.layers_per_block[i]):
            x = ResnetBlock2D(channels, cfg.norm_num_groups, cfg.norm_eps, name=f"resnets_{j}", **kw)(x, temb)
            if self.cross_attention:
                x = _transformer(cfg, i, self.attention, f"attentions_{j}", kw)(x, context)
            skips.append(x)
        if self.add_downsample:
            x = Downsample2D(channels, cfg.downsample_padding, name="downsamplers_0", **kw)(x)
            skips.append(x)
        return x, tuple(skips)


class UpBlock(nn.Module):
    """CrossAttnUpBlock2D (``cross_attention=True``) or UpBlock2D; ``index`` counts up blocks.

    Call: ``(x, skips, temb, context, upsample_size) -> x``; ``skips`` are consumed last first.
    """

    config: UNetConfig
    index: int
    cross_attention: bool
    add_upsample: bool
    attention: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, skips, temb, context, upsample_size=None):
        cfg = self.config
        block = len(cfg.block_out_channels) - 1 - self.index  # the matching down block
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        channels = cfg.block_out_channels[block]
        for j, skip in enumerate(reversed(skips)):
            x = jnp.concatenate([x, skip.astype(x.dtype)], axis=-1)
            x = ResnetBlock2D(channels, cfg.norm_num_groups, cfg.norm_eps, name=f"resnets_{j}", **kw)(x, temb)
            if self.cross_attention:
                x = _transformer(cfg, block, self.attention, f"attentions_{j}", kw)(x, context)
        if self.add_upsample:
            x = Upsample2D(channels, name="upsamplers_0", **kw)(x, upsample_size)
        return x


class MidBlock(nn.Module):
    """UNetMidBlock2DCrossAttn: resnet, transformer, resnet at the lowest resolution."""

    config: UNetConfig
    attention: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, temb, context):
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        channels = cfg.block_out_channels[-1]
        resnet = dict(output_scale_factor=cfg.mid_block_scale_factor, **kw)
        x = ResnetBlock2D(channels, cfg.norm_num_groups, cfg.norm_eps, name="resnets_0", **resnet)(x, temb)
        x = _transformer(cfg, len(cfg.block_out_channels) - 1, self.attention, "attentions_0", kw)(x, context)
        return ResnetBlock2D(channels, cfg.norm_num_groups, cfg.norm_eps, name="resnets_1", **resnet)(x, temb)


def _transformer(cfg: UNetConfig, block: int, attention: str, name: str, kw: dict) -> Transformer2DModel:
    channels, heads = cfg.block_out_channels[block], cfg.num_heads[block]
    return Transformer2DModel(
        heads=heads,
        head_dim=channels // heads,
        norm_num_groups=cfg.norm_num_groups,
        use_linear_projection=cfg.use_linear_projection,
        num_layers=cfg.transformer_layers_per_block[block],
        attention=attention,
        name=name,
        **kw,
    )


class UNet2DConditionModel(nn.Module):
    """Text-conditioned UNet of Stable Diffusion 1.x / 2.x / XL.

    Call: ``(sample (B,C,H,W), timesteps (B,) or scalar, encoder_hidden_states (B,L,D),
    text_embeds=None, time_ids=None) -> (B,out_channels,H,W) float32``. The output is what the
    model was trained to predict (epsilon or v; see the scheduler config). ``text_embeds`` (B, P)
    and ``time_ids`` (B, n) are diffusers' ``added_cond_kwargs``: required with
    ``addition_embed_type="text_time"`` (SDXL), refused otherwise.

    ``capture_attention=True`` (a static flag; apply with ``mutable=[CROSS_ATTENTION]``, or use
    :func:`apply_capturing_attention`) also returns DAAM-style cross-attention maps: every
    cross-attention layer's probabilities averaged over heads, bilinearly upsampled to the input
    grid and summed over layers, ``(B, L, H, W)`` float32. The output is the same either way; with
    the flag off nothing more is computed.
    """

    config: UNetConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attention: str = "auto"

    @nn.compact
    def __call__(
        self,
        sample: jax.Array,
        timesteps: jax.Array,
        encoder_hidden_states: jax.Array,
        text_embeds: jax.Array | None = None,
        time_ids: jax.Array | None = None,
        capture_attention: bool = False,
    ):
        if capture_attention and not self.is_mutable_collection(CROSS_ATTENTION):
            raise ConfigError(f"capture_attention=True needs the {CROSS_ATTENTION!r} collection mutable: "
                              f"apply(..., mutable=[{CROSS_ATTENTION!r}]) or use apply_capturing_attention")
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if sample.ndim != 4 or sample.shape[1] != cfg.in_channels:
            raise ShapeError(f"unet sample: expected (B, {cfg.in_channels}, H, W), got {sample.shape}")
        batch = sample.shape[0]
        timesteps = jnp.broadcast_to(jnp.asarray(timesteps), (batch,))
        context = encoder_hidden_states.astype(self.dtype)

        t_features = timestep_embedding(timesteps, cfg.block_out_channels[0], cfg.flip_sin_to_cos, cfg.freq_shift)
        temb = TimestepEmbedding(cfg.time_embed_dim, name="time_embedding", **kw)(t_features)
        if cfg.addition_embed_type == "text_time":
            added = _text_time_features(cfg, batch, text_embeds, time_ids)
            temb = temb + TimestepEmbedding(cfg.time_embed_dim, name="add_embedding", **kw)(added)
        elif text_embeds is not None or time_ids is not None:
            raise ShapeError("unet: text_embeds / time_ids given, but the unet config has no addition_embed_type")

        x = jnp.transpose(sample, (0, 2, 3, 1))
        if cfg.center_input_sample:
            x = 2 * x - 1.0
        x = conv(cfg.block_out_channels[0], cfg.conv_in_kernel, name="conv_in", **kw)(x.astype(self.dtype))

        skips = [x]
        n_blocks = len(cfg.block_out_channels)
        for i, block_type in enumerate(cfg.down_block_types):
            cross = block_type == "CrossAttnDownBlock2D"
            block = DownBlock(cfg, i, cross, i < n_blocks - 1, self.attention, name=f"down_blocks_{i}", **kw)
            x, block_skips = block(x, temb, context)
            skips.extend(block_skips)

        x = MidBlock(cfg, self.attention, name="mid_block", **kw)(x, temb, context)

        for i, block_type in enumerate(cfg.up_block_types):
            count = cfg.layers_per_block[n_blocks - 1 - i] + 1
            block_skips, skips = skips[-count:], skips[:-count]
            is_last = i == n_blocks - 1
            # Upsample to the next skip's size, so odd latent sizes round-trip as in diffusers.
            size = None if is_last else (skips[-1].shape[1], skips[-1].shape[2])
            cross = block_type == "CrossAttnUpBlock2D"
            block = UpBlock(cfg, i, cross, not is_last, self.attention, name=f"up_blocks_{i}", **kw)
            x = block(x, tuple(block_skips), temb, context, size)

        x = nn.silu(group_norm(cfg.norm_num_groups, cfg.norm_eps, name="conv_norm_out", **kw)(x))
        x = conv(cfg.out_channels, cfg.conv_out_kernel, name="conv_out", **kw)(x)
        out = jnp.transpose(x, (0, 3, 1, 2)).astype(jnp.float32)
        if capture_attention:
            return out, attention_maps(self.variables.get(CROSS_ATTENTION, {}), sample.shape[2:])
        return out


def attention_maps(captured: Any, size: tuple[int, int]) -> jax.Array:
    """Captured cross-attention probabilities -> (B, L, H, W): each layer's (B, h·w, L) map
    reshaped to its grid, bilinearly upsampled to ``size`` (half-pixel centres, as PyTorch's
    ``interpolate(mode="bilinear", align_corners=False)``) and summed over layers."""
    layers = jax.tree.leaves(captured)
    if not layers:
        raise ConfigError("no cross-attention probabilities were captured: this UNet has no cross-attention layer")
    height, width = size
    # The feature grids on the way down: stride-2 convs halve a side, rounding up (padding 1) or
    # down (downsample_padding 0); one grid per token count.
    grids, level = {}, [(height, width)]
    while level:
        for h, w in level:
            grids.setdefault(h * w, (h, w))
        level = sorted({(r(h), r(w)) for h, w in level if (h, w) != (1, 1)
                        for r in (lambda n: (n + 1) // 2, lambda n: max(1, n // 2))}, reverse=True)
    total = 0.0
    for probabilities in layers:
        batch, tokens, length = probabilities.shape
        if tokens not in grids:
            raise ShapeError(f"a cross-attention layer of {tokens} positions fits no feature grid of a "
                             f"{height}x{width} input")
        h, w = grids[tokens]
        grid = probabilities.reshape(batch, h, w, length)
        if (h, w) != (height, width):
            grid = jax.image.resize(grid, (batch, height, width, length), method="linear", antialias=False)
        total = total + grid
    return jnp.transpose(total, (0, 3, 1, 2))


def apply_capturing_attention(module: UNet2DConditionModel, params: Any, sample: jax.Array, timesteps: jax.Array,
                              encoder_hidden_states: jax.Array, text_embeds: jax.Array | None = None,
                              time_ids: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """The UNet's output and its cross-attention maps (B, L, H, W) (see ``capture_attention``);
    ``text_embeds`` and ``time_ids`` as in the call (SDXL)."""
    (out, maps), _ = apply_checked(module, params, sample, timesteps, encoder_hidden_states, text_embeds,
                                   time_ids, capture_attention=True, mutable=[CROSS_ATTENTION])
    return out, maps


def _text_time_features(cfg: UNetConfig, batch: int, text_embeds, time_ids) -> jax.Array:
    """SDXL's add_embedding input (B, projection_class_embeddings_input_dim) float32:
    ``[text_embeds, Fourier(time_ids) flattened]``, as diffusers' ``get_aug_embed``."""
    if text_embeds is None or time_ids is None:
        raise ShapeError("unet: addition_embed_type 'text_time' (SDXL) needs text_embeds (B, P) and time_ids (B, n)")
    if text_embeds.ndim != 2 or time_ids.ndim != 2 or text_embeds.shape[0] != batch or time_ids.shape[0] != batch:
        raise ShapeError(
            f"unet: text_embeds {tuple(text_embeds.shape)} and time_ids {tuple(time_ids.shape)} must be "
            f"(B, P) and (B, n) with B = {batch} (the sample batch)"
        )
    width = text_embeds.shape[1] + time_ids.shape[1] * cfg.addition_time_embed_dim
    if width != cfg.projection_class_embeddings_input_dim:
        raise ShapeError(
            f"unet add_embedding.linear_1 takes {cfg.projection_class_embeddings_input_dim} features "
            f"(projection_class_embeddings_input_dim), but text_embeds {tuple(text_embeds.shape)} and "
            f"{time_ids.shape[1]} time ids x addition_time_embed_dim {cfg.addition_time_embed_dim} give {width}"
        )
    ids = time_ids.astype(jnp.float32).reshape(-1)
    features = timestep_embedding(ids, cfg.addition_time_embed_dim, cfg.flip_sin_to_cos, cfg.freq_shift)
    return jnp.concatenate([text_embeds.astype(jnp.float32), features.reshape(batch, -1)], axis=-1)


def expected_params(config: UNetConfig, dtype: Dtype = jnp.float32) -> dict:
    """The UNet's params pytree as ``jax.ShapeDtypeStruct`` leaves (nothing is allocated).

    Args:
      config: the architecture.
      dtype: the parameter dtype.
    """
    return remembered_shapes("unet", config, dtype, __file__, lambda: _trace_params(config, dtype))


def _trace_params(config: UNetConfig, dtype: Dtype) -> dict:
    model = UNet2DConditionModel(config, param_dtype=dtype)
    size = 2 ** (len(config.block_out_channels) - 1)
    sample = jax.ShapeDtypeStruct((1, config.in_channels, size, size), jnp.float32)
    timesteps = jax.ShapeDtypeStruct((1,), jnp.float32)
    context = jax.ShapeDtypeStruct((1, 1, config.cross_attention_dim), jnp.float32)
    added = {}
    if config.addition_embed_type == "text_time":
        pooled = config.pooled_dim(SDXL_TIME_IDS)
        if pooled <= 0:
            raise ConfigError(
                f"unet config projection_class_embeddings_input_dim={config.projection_class_embeddings_input_dim} "
                f"leaves no room for a pooled text embedding next to {SDXL_TIME_IDS} time ids x "
                f"addition_time_embed_dim {config.addition_time_embed_dim}"
            )
        added = dict(text_embeds=jax.ShapeDtypeStruct((1, pooled), jnp.float32),
                     time_ids=jax.ShapeDtypeStruct((1, SDXL_TIME_IDS), jnp.float32))
    variables = jax.eval_shape(model.init, jax.random.key(0), sample, timesteps, context, **added)
    return variables["params"]
