"""Stable Diffusion 3's MMDiT (diffusers ``SD3Transformer2DModel``) in Flax Linen.

A rectified-flow transformer: the latent is cut into p x p patches (``pos_embed``: a strided conv
plus a fixed 2-D sin-cos table, cropped from a ``pos_embed_max_size`` grid around its centre), the
text tokens are projected (``context_embedder``), and both streams run through joint blocks that
attend over the concatenation [image tokens; text tokens] with separate weights per stream. Every
block is modulated by one vector per sample, the timestep embedding plus the pooled text
projection (``time_text_embed``), through AdaLN-Zero shift / scale / gate triples. The last block
is *context pre-only*: its text stream only provides keys and values. SD3.5 adds RMS norms on
queries and keys (``qk_norm="rms_norm"``) and, in ``dual_attention_layers``, a second image-only
self-attention (``attn2``) with its own modulation.

The output has the input's shape; it is the flow velocity v̂ = ε − x₀ at timestep 1000·t (the
model's time input), which :mod:`jaxpid.sd.flow` turns into ε̂ at a log-SNR.

With ``capture_attention=True`` the model also returns text→image attention maps for the studies
(:func:`attention_maps`; docs/sd3.md#attention-maps): in every joint block, the probability
an image query gives each text key in the joint softmax over [image; text] keys, averaged over
heads, then over blocks, each patch's value copied to its p x p latent positions.

Submodules are named after the diffusers tensor names (``transformer_blocks.3.attn.to_out.0.weight``
-> ``transformer_blocks_3/attn/to_out_0/kernel``; the checkpoint's ``pos_embed.pos_embed`` table is
a parameter), so :func:`jaxpid.sd.models.convert.convert_state_dict` loads a checkpoint strictly.
Norm statistics and softmax run in float32 whatever the compute dtype.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxpid.errors import ConfigError, ShapeError
from jaxpid.sd.models.checked import apply_checked
from jaxpid.sd.models.layers import CROSS_ATTENTION, TimestepEmbedding, attention_implementation, conv, \
    multi_head_attention, timestep_embedding

Dtype = Any

QK_NORMS = (None, "rms_norm")
TIME_PROJECTION_DIM = 256  # diffusers' CombinedTimestepTextProjEmbeddings: Timesteps(num_channels=256)
_NORM_EPS = 1e-6  # every LayerNorm / RMSNorm of the SD3 transformer


@dataclasses.dataclass(frozen=True)
class SD3TransformerConfig:
    """The architecture fields of a diffusers ``transformer/config.json`` (SD3Transformer2DModel)."""

    sample_size: int = 128
    patch_size: int = 2
    in_channels: int = 16
    num_layers: int = 18
    attention_head_dim: int = 64
    num_attention_heads: int = 18
    joint_attention_dim: int = 4096
    caption_projection_dim: int = 1152
    pooled_projection_dim: int = 2048
    out_channels: int = 16
    pos_embed_max_size: int = 96
    dual_attention_layers: tuple[int, ...] = ()
    qk_norm: str | None = None

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SD3TransformerConfig:
        """Validate a diffusers ``transformer/config.json`` dict; missing keys take diffusers' defaults.

        Raises:
          ConfigError: naming the key whose value jaxpid does not support or that does not fit.
        """
        ints = ("sample_size", "patch_size", "in_channels", "num_layers", "attention_head_dim",
                "num_attention_heads", "joint_attention_dim", "caption_projection_dim", "pooled_projection_dim",
                "pos_embed_max_size")
        values: dict[str, Any] = {}
        for key in ints:
            value = d.get(key, getattr(cls, key))
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"transformer config {key}={value!r}: expected a positive integer")
            values[key] = value
        out = d.get("out_channels")
        values["out_channels"] = values["in_channels"] if out is None else int(out)
        dual = tuple(int(i) for i in (d.get("dual_attention_layers") or ()))
        bad = [i for i in dual if not 0 <= i < values["num_layers"]]
        if bad:
            raise ConfigError(f"transformer config dual_attention_layers={list(dual)}: layers {bad} do not exist "
                              f"(num_layers {values['num_layers']})")
        values["dual_attention_layers"] = dual
        qk_norm = d.get("qk_norm")
        if qk_norm not in QK_NORMS:
            raise ConfigError(f"transformer config qk_norm={qk_norm!r} is not supported; expected one of {QK_NORMS}")
        values["qk_norm"] = qk_norm
        config = cls(**values)
        if config.caption_projection_dim != config.inner_dim:
            # The text stream is modulated and attended with inner_dim-wide weights.
            raise ConfigError(
                f"transformer config caption_projection_dim={config.caption_projection_dim} must equal "
                f"num_attention_heads x attention_head_dim = {config.inner_dim} (the text stream's width)")
        if config.inner_dim % 2:
            raise ConfigError(f"transformer config: inner dim {config.inner_dim} must be even (2-D sin-cos table)")
        return config


# --------------------------------------------------------------------------- position table


def sincos_position_table(embed_dim: int, grid_size: int, base_size: int) -> np.ndarray:
    """diffusers' ``get_2d_sincos_pos_embed`` for a square grid: (grid_size², embed_dim) float32.

    Positions are scaled to a ``base_size`` grid (in float32, as diffusers computes them); the
    first half of the features encodes the column, the second the row, each as [sin, cos] of
    position x 10000^(-2i/d) in float64.
    """
    positions = (np.arange(grid_size, dtype=np.float32) / np.float32(grid_size / base_size)).astype(np.float64)
    quarter = embed_dim // 4
    omega = 1.0 / 10000.0 ** (np.arange(quarter, dtype=np.float64) / (embed_dim / 4.0))

    def one_axis(coordinate: np.ndarray) -> np.ndarray:
        angles = np.outer(coordinate.reshape(-1), omega)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    rows, cols = np.meshgrid(positions, positions, indexing="ij")
    return np.concatenate([one_axis(cols), one_axis(rows)], axis=1).astype(np.float32)


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, (H/p)(W/p), D): strided p x p conv (``proj``) plus the centre crop of the
    ``pos_embed`` table (a parameter: checkpoints store it)."""

    config: SD3TransformerConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, latent: jax.Array) -> jax.Array:
        cfg = self.config
        p, size, dim = cfg.patch_size, cfg.pos_embed_max_size, cfg.inner_dim
        height, width = latent.shape[2] // p, latent.shape[3] // p
        table = self.param(
            "pos_embed",
            lambda key, shape, dtype: jnp.asarray(
                sincos_position_table(dim, size, cfg.sample_size // p)[None], dtype),
            (1, size * size, dim), self.param_dtype)
        x = jnp.transpose(latent, (0, 2, 3, 1)).astype(self.dtype)
        x = conv(dim, p, self.dtype, self.param_dtype, "proj", stride=p, padding=0)(x)
        x = x.reshape(x.shape[0], height * width, dim)
        top, left = (size - height) // 2, (size - width) // 2
        crop = table.reshape(size, size, dim)[top:top + height, left:left + width].reshape(1, height * width, dim)
        return x + crop.astype(self.dtype)


# --------------------------------------------------------------------------- norms


def _layer_norm(x: jax.Array, dtype: Dtype) -> jax.Array:
    """LayerNorm without affine parameters, float32 statistics."""
    x32 = x.astype(jnp.float32)
    mean = x32.mean(axis=-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(axis=-1, keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + _NORM_EPS)).astype(dtype)


class RMSNorm(nn.Module):
    """diffusers' ``RMSNorm`` (per head on queries / keys): x / rms(x) * scale, rms in float32."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), self.param_dtype)
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + _NORM_EPS)
        return (y * scale.astype(jnp.float32)).astype(self.dtype)


def _modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    return x * (1 + scale[:, None]) + shift[:, None]


class AdaLayerNormZero(nn.Module):
    """``linear(silu(temb))`` split into ``chunks`` modulation vectors (B, D) in diffusers' order:
    shift, scale, gate (attention), shift, scale, gate (MLP)[, shift, scale, gate (attn2)]."""

    chunks: int = 6
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, temb: jax.Array, features: int) -> list[jax.Array]:
        emb = nn.Dense(self.chunks * features, dtype=self.dtype, param_dtype=self.param_dtype, name="linear")(
            nn.silu(temb))
        return jnp.split(emb, self.chunks, axis=-1)


class AdaLayerNormContinuous(nn.Module):
    """LayerNorm(x) * (1 + scale) + shift with (scale, shift) = ``linear(silu(temb))`` (that order)."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array) -> jax.Array:
        emb = nn.Dense(2 * x.shape[-1], dtype=self.dtype, param_dtype=self.param_dtype, name="linear")(nn.silu(temb))
        scale, shift = jnp.split(emb, 2, axis=-1)
        return _modulate(_layer_norm(x, self.dtype), shift, scale)


# --------------------------------------------------------------------------- attention


class JointAttention(nn.Module):
    """diffusers' ``Attention`` with ``JointAttnProcessor2_0``.

    With ``context`` (joint): queries, keys and values of both streams (``to_q/k/v`` for the image,
    ``add_q/k/v_proj`` for the text), optional per-head RMS norms, one softmax over the
    concatenation [image; text]; returns (image out via ``to_out_0``, text out via ``to_add_out``,
    None when ``context_pre_only``). Without (``attn2``): image self-attention, image out only.
    """

    heads: int
    head_dim: int
    qk_norm: str | None = None
    context_pre_only: bool | None = None  # None: no text stream (attn2)
    attention: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        inner = self.heads * self.head_dim
        dense = lambda name: nn.Dense(inner, name=name, **kw)  # noqa: E731

        def project(h, names, norms):
            q, k, v = (dense(name)(h) for name in names)
            if self.qk_norm is not None:
                q, k = (self._per_head_norm(a, name) for a, name in zip((q, k), norms))
            return q, k, v

        q, k, v = project(x, ("to_q", "to_k", "to_v"), ("norm_q", "norm_k"))
        impl = attention_implementation(self.attention, self.dtype, self.head_dim)
        if context is None:
            return nn.Dense(x.shape[-1], name="to_out_0", **kw)(multi_head_attention(q, k, v, self.heads, impl))
        cq, ck, cv = project(context, ("add_q_proj", "add_k_proj", "add_v_proj"), ("norm_added_q", "norm_added_k"))
        if self.is_mutable_collection(CROSS_ATTENTION):  # capture is on (see CROSS_ATTENTION)
            self.sow(CROSS_ATTENTION, "probabilities", text_probabilities(q, k, ck, self.heads))
        k, v = jnp.concatenate([k, ck], axis=1), jnp.concatenate([v, cv], axis=1)
        if self.context_pre_only:
            # The text outputs of the last block are discarded: attend with the image queries only
            # (add_q_proj still exists in the checkpoint; its unused output is compiled away).
            out = multi_head_attention(q, k, v, self.heads, impl)
            return nn.Dense(x.shape[-1], name="to_out_0", **kw)(out), None
        out = multi_head_attention(jnp.concatenate([q, cq], axis=1), k, v, self.heads, impl)
        image, text = out[:, :x.shape[1]], out[:, x.shape[1]:]
        return (nn.Dense(x.shape[-1], name="to_out_0", **kw)(image),
                nn.Dense(context.shape[-1], name="to_add_out", **kw)(text))

    def _per_head_norm(self, h: jax.Array, name: str) -> jax.Array:
        heads = h.reshape(*h.shape[:-1], self.heads, self.head_dim)
        normed = RMSNorm(dtype=self.dtype, param_dtype=self.param_dtype, name=name)(heads)
        return normed.reshape(h.shape)


def text_probabilities(q: jax.Array, k_image: jax.Array, k_text: jax.Array, heads: int) -> jax.Array:
    """Image queries' attention probabilities on the text keys, in the joint softmax over [image;
    text] keys, averaged over heads: (B, N, H·d), (B, N, H·d), (B, L, H·d) -> (B, N, L) float32.

    Each row sums to at most 1 over the L text keys; the rest went to image keys. One head at a
    time (``lax.map``), so the image-key logits held at once are (B, N, N), not (B, H, N, N):
    at SD3's 1024 px (N = 4096) all heads at once would be gigabytes per image.
    """
    batch, n_image, inner = q.shape
    head_dim = inner // heads

    def per_head(x: jax.Array) -> jax.Array:  # (B, S, H·d) -> (H, B, S, d) float32
        return jnp.moveaxis(x.reshape(batch, x.shape[1], heads, head_dim).astype(jnp.float32), 2, 0)

    def one_head(args):
        qh, kih, kth = args
        qh = qh / np.sqrt(head_dim)
        image_logits = jnp.einsum("bnd,bmd->bnm", qh, kih)
        text_logits = jnp.einsum("bnd,bld->bnl", qh, kth)
        total = jnp.logaddexp(jax.nn.logsumexp(image_logits, axis=-1), jax.nn.logsumexp(text_logits, axis=-1))
        return jnp.exp(text_logits - total[..., None])

    return jnp.mean(jax.lax.map(one_head, (per_head(q), per_head(k_image), per_head(k_text))), axis=0)


class FeedForward(nn.Module):
    """``net_0/proj`` to 4x width, tanh-approximate GELU, ``net_2`` back (diffusers "gelu-approximate")."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = _Proj(4 * x.shape[-1], name="net_0", **kw)(x)
        return nn.Dense(x.shape[-1], name="net_2", **kw)(nn.gelu(h, approximate=True))


class _Proj(nn.Module):
    """The ``proj`` Dense inside diffusers' GELU activation module (``net.0.proj``)."""

    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(self.features, dtype=self.dtype, param_dtype=self.param_dtype, name="proj")(x)


class JointTransformerBlock(nn.Module):
    """One MMDiT block: ``(image (B,N,D), text (B,L,D), temb (B,D)) -> (image, text or None)``."""

    heads: int
    head_dim: int
    context_pre_only: bool = False
    qk_norm: str | None = None
    use_dual_attention: bool = False
    attention: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array, temb: jax.Array):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        dim = x.shape[-1]
        mods = AdaLayerNormZero(9 if self.use_dual_attention else 6, name="norm1", **kw)(temb, dim)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods[:6]
        normed = _layer_norm(x, self.dtype)
        if self.context_pre_only:
            normed_context = AdaLayerNormContinuous(name="norm1_context", **kw)(context, temb)
        else:
            c_shift_msa, c_scale_msa, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp = AdaLayerNormZero(
                6, name="norm1_context", **kw)(temb, dim)
            normed_context = _modulate(_layer_norm(context, self.dtype), c_shift_msa, c_scale_msa)
        attn = dict(heads=self.heads, head_dim=self.head_dim, qk_norm=self.qk_norm, attention=self.attention, **kw)
        image_out, text_out = JointAttention(context_pre_only=self.context_pre_only, name="attn", **attn)(
            _modulate(normed, shift_msa, scale_msa), normed_context)
        x = x + gate_msa[:, None] * image_out
        if self.use_dual_attention:
            shift_msa2, scale_msa2, gate_msa2 = mods[6:]
            x = x + gate_msa2[:, None] * JointAttention(name="attn2", **attn)(_modulate(normed, shift_msa2, scale_msa2))
        x = x + gate_mlp[:, None] * FeedForward(name="ff", **kw)(_modulate(_layer_norm(x, self.dtype), shift_mlp,
                                                                           scale_mlp))
        if self.context_pre_only:
            return x, None
        context = context + c_gate_msa[:, None] * text_out
        ff = FeedForward(name="ff_context", **kw)(_modulate(_layer_norm(context, self.dtype), c_shift_mlp, c_scale_mlp))
        return x, context + c_gate_mlp[:, None] * ff


# --------------------------------------------------------------------------- the model


class SD3Transformer2DModel(nn.Module):
    """``(latents (B,C,H,W), timestep (B,), text (B,L,joint_attention_dim), pooled (B,P)) -> (B,C_out,H,W)``.

    ``timestep`` is diffusers' model time input, 1000·t for flow time t ∈ [0, 1] (fractional).
    H and W must be multiples of ``patch_size`` and at most ``pos_embed_max_size`` patches.

    ``capture_attention=True`` (static; apply with ``mutable=[CROSS_ATTENTION]`` or use
    :func:`apply_capturing_attention`) also returns the text→image attention maps (B, L, H, W)
    float32 of :func:`attention_maps`. The velocity is the same either way; with the flag off
    nothing more is computed.
    """

    config: SD3TransformerConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attention: str = "auto"

    @nn.compact
    def __call__(self, latents: jax.Array, timestep: jax.Array, encoder_hidden_states: jax.Array,
                 pooled_projections: jax.Array, capture_attention: bool = False):
        if capture_attention and not self.is_mutable_collection(CROSS_ATTENTION):
            raise ConfigError(f"capture_attention=True needs the {CROSS_ATTENTION!r} collection mutable: "
                              f"apply(..., mutable=[{CROSS_ATTENTION!r}]) or use apply_capturing_attention")
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        batch, _, height, width = latents.shape
        p = cfg.patch_size
        if latents.ndim != 4 or latents.shape[1] != cfg.in_channels or height % p or width % p \
                or max(height, width) // p > cfg.pos_embed_max_size:
            raise ShapeError(
                f"latents {latents.shape}: expected (B, {cfg.in_channels}, H, W) with H and W multiples of patch_size "
                f"{p} and at most {cfg.pos_embed_max_size * p} (pos_embed_max_size {cfg.pos_embed_max_size} patches)")
        if encoder_hidden_states.shape[-1] != cfg.joint_attention_dim:
            raise ShapeError(f"encoder_hidden_states {encoder_hidden_states.shape}: the last axis must be "
                             f"joint_attention_dim {cfg.joint_attention_dim}")
        x = PatchEmbed(cfg, name="pos_embed", **kw)(latents)
        temb = _TimeTextEmbed(cfg.inner_dim, name="time_text_embed", **kw)(
            jnp.broadcast_to(jnp.asarray(timestep, jnp.float32), (batch,)), pooled_projections)
        context = nn.Dense(cfg.caption_projection_dim, name="context_embedder", **kw)(
            encoder_hidden_states.astype(self.dtype))
        for i in range(cfg.num_layers):
            block = JointTransformerBlock(
                cfg.num_attention_heads, cfg.attention_head_dim, context_pre_only=i == cfg.num_layers - 1,
                qk_norm=cfg.qk_norm, use_dual_attention=i in cfg.dual_attention_layers, attention=self.attention,
                name=f"transformer_blocks_{i}", **kw)
            x, context = block(x, context, temb)
        x = AdaLayerNormContinuous(name="norm_out", **kw)(x, temb)
        x = nn.Dense(p * p * cfg.out_channels, name="proj_out", **kw)(x)
        h, w = height // p, width // p
        x = x.reshape(batch, h, w, p, p, cfg.out_channels)
        out = jnp.einsum("nhwpqc->nchpwq", x).reshape(batch, cfg.out_channels, height, width)
        if capture_attention:
            return out, attention_maps(self.variables.get(CROSS_ATTENTION, {}), (h, w), p)
        return out


def attention_maps(captured: Any, grid: tuple[int, int], patch_size: int) -> jax.Array:
    """Captured per-block text probabilities (B, N, L) -> maps (B, L, H, W) float32 on the latent grid.

    Averaged over the blocks (every joint block: the last block's text stream is context pre-only,
    but its image queries still attend to the text keys), so each latent position's mass over the
    L text tokens stays at most 1. A patch covers p x p latent positions, all of which get its
    value (nearest upsampling: no mass is invented between patches).
    """
    layers = jax.tree.leaves(captured)
    if not layers:
        raise ConfigError("no joint-attention probabilities were captured")
    mean = sum(layers) / len(layers)
    batch, _, length = mean.shape
    maps = jnp.transpose(mean.reshape(batch, grid[0], grid[1], length), (0, 3, 1, 2))
    return jnp.repeat(jnp.repeat(maps, patch_size, axis=2), patch_size, axis=3)


def apply_capturing_attention(module: SD3Transformer2DModel, params: Any, latents: jax.Array, timestep: jax.Array,
                              encoder_hidden_states: jax.Array, pooled_projections: jax.Array
                              ) -> tuple[jax.Array, jax.Array]:
    """The velocity and the text→image attention maps (B, L, H, W) (see ``capture_attention``)."""
    (out, maps), _ = apply_checked(module, params, latents, timestep, encoder_hidden_states, pooled_projections,
                                   capture_attention=True, mutable=[CROSS_ATTENTION])
    return out, maps


class _TimeTextEmbed(nn.Module):
    """diffusers' ``CombinedTimestepTextProjEmbeddings``: MLP(sinusoid(timestep)) + MLP(pooled text)."""

    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, timestep: jax.Array, pooled: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        features = timestep_embedding(timestep, TIME_PROJECTION_DIM, flip_sin_to_cos=True, freq_shift=0)
        time = TimestepEmbedding(self.features, name="timestep_embedder", **kw)(features)
        # PixArtAlphaTextProjection(act_fn="silu") has the same linear_1 / silu / linear_2 layout.
        text = TimestepEmbedding(self.features, name="text_embedder", **kw)(pooled)
        return time + text


def expected_params(config: SD3TransformerConfig, param_dtype: Dtype = jnp.float32) -> dict[str, Any]:
    """The params pytree of :class:`SD3Transformer2DModel` as ``jax.ShapeDtypeStruct`` leaves (no compute)."""
    model = SD3Transformer2DModel(config, param_dtype=param_dtype)
    side = config.patch_size
    latents = jax.ShapeDtypeStruct((1, config.in_channels, side, side), jnp.float32)
    text = jax.ShapeDtypeStruct((1, 1, config.joint_attention_dim), jnp.float32)
    pooled = jax.ShapeDtypeStruct((1, config.pooled_projection_dim), jnp.float32)
    timestep = jax.ShapeDtypeStruct((1,), jnp.float32)
    return jax.eval_shape(model.init, jax.random.key(0), latents, timestep, text, pooled)["params"]
