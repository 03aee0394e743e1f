"""T5 encoder (transformers ``T5EncoderModel``) in Flax Linen: Stable Diffusion 3's third text encoder.

Pre-RMS-norm transformer layers without biases: self-attention whose logits are *not* scaled by
1/√d (T5 folds that into its weights) and get a learned bias per head and relative-position
bucket (``relative_attention_bias``, owned by the first layer and shared by all), then a
feed-forward that is gated in T5 v1.1 (``wi_0``: activation, times ``wi_1``, then ``wo``). The
output is the final-RMS-normed last hidden state, what ``T5EncoderModel(ids)[0]`` returns.

Submodules follow the transformers tensor names (``encoder.block.2.layer.1.DenseReluDense.wi_0.weight``
-> ``encoder/block_2/layer_1/DenseReluDense/wi_0/kernel``); :func:`t5_state_dict` resolves the tied
token embedding (``shared`` / ``encoder.embed_tokens``) before
:func:`jaxpid.sd.models.convert.convert_state_dict`. Norm statistics and softmax run in float32.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxpid.errors import ConfigError, ShapeError

Dtype = Any

ACTIVATIONS = ("relu", "gelu", "gelu_new", "gelu_pytorch_tanh")
_TIED_EMBEDDING = "encoder.embed_tokens.weight"


@dataclasses.dataclass(frozen=True)
class T5Config:
    """The architecture fields of a transformers ``T5Config`` (encoder only)."""

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    gated: bool = False  # feed_forward_proj "gated-*" (T5 v1.1: "gated-gelu")
    activation: str = "relu"

    @property
    def inner_dim(self) -> int:
        return self.num_heads * self.d_kv

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> T5Config:
        """From ``text_encoder_3/config.json``; missing keys take transformers' ``T5Config`` defaults.

        Raises:
          ConfigError: an unsupported ``feed_forward_proj`` / activation or a non-positive size.
        """
        values: dict[str, Any] = {}
        for key in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads",
                    "relative_attention_num_buckets", "relative_attention_max_distance"):
            value = d.get(key, getattr(cls, key))
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"text_encoder_3 (T5) config {key}={value!r}: expected a positive integer")
            values[key] = value
        values["layer_norm_epsilon"] = float(d.get("layer_norm_epsilon", cls.layer_norm_epsilon))
        projection = str(d.get("feed_forward_proj", "relu"))
        parts = projection.split("-")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
            raise ConfigError(f"text_encoder_3 (T5) config feed_forward_proj={projection!r}: expected "
                              "'gated-<activation>' or '<activation>'")
        # transformers' rule: "gated-gelu" means the tanh approximation, whatever dense_act_fn says.
        activation = "gelu_new" if projection == "gated-gelu" else parts[-1]
        if activation not in ACTIVATIONS:
            raise ConfigError(f"text_encoder_3 (T5) config activation {activation!r} (feed_forward_proj="
                              f"{projection!r}) is not supported; expected one of {ACTIVATIONS}")
        return cls(**values, gated=len(parts) == 2, activation=activation)


def _activation(name: str, x: jax.Array) -> jax.Array:
    if name == "relu":
        return jax.nn.relu(x)
    return jax.nn.gelu(x, approximate=name != "gelu")


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """(length, length) int32 bucket of key position − query position, bidirectional (encoder).

    Half the buckets per direction: exact offsets below num_buckets/4, then logarithmic bins up to
    ``max_distance`` (beyond it, the last bin). The log is taken in float32 as transformers does,
    so boundary offsets fall in the same bucket.
    """
    relative = np.arange(length)[None, :] - np.arange(length)[:, None]
    half = num_buckets // 2
    buckets = (relative > 0).astype(np.int64) * half
    distance = np.abs(relative)
    max_exact = half // 2
    with np.errstate(divide="ignore"):
        scaled = (np.log(distance.astype(np.float32) / np.float32(max_exact))
                  / np.float32(math.log(max_distance / max_exact)) * np.float32(half - max_exact))
    large = max_exact + np.where(distance < max_exact, 0, scaled).astype(np.int64)
    large = np.minimum(large, half - 1)
    return (buckets + np.where(distance < max_exact, distance, large)).astype(np.int32)


class T5LayerNorm(nn.Module):
    """RMS norm without mean or bias: x / rms(x) * scale, statistics in float32."""

    epsilon: float
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), self.param_dtype)
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.epsilon)
        return (y * scale.astype(jnp.float32)).astype(self.dtype)


class T5Attention(nn.Module):
    """Unscaled multi-head self-attention plus a position bias (1, heads, L, L): ``q, k, v, o`` (no bias).

    ``relative_attention_bias`` (an embedding of buckets -> heads) exists in the first layer only;
    it computes the bias that every layer adds.
    """

    config: T5Config
    has_relative_attention_bias: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, bias: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        cfg = self.config
        kw = dict(use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype)
        batch, length, _ = x.shape
        heads = lambda h: h.reshape(batch, length, cfg.num_heads, cfg.d_kv)  # noqa: E731
        q, k, v = (heads(nn.Dense(cfg.inner_dim, name=name, **kw)(x)) for name in ("q", "k", "v"))
        if self.has_relative_attention_bias:
            buckets = relative_position_buckets(length, cfg.relative_attention_num_buckets,
                                                cfg.relative_attention_max_distance)
            table = nn.Embed(cfg.relative_attention_num_buckets, cfg.num_heads, dtype=jnp.float32,
                             param_dtype=self.param_dtype, name="relative_attention_bias")(jnp.asarray(buckets))
            bias = jnp.transpose(table, (2, 0, 1))[None]  # (1, heads, L, L)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) + bias
        weights = jax.nn.softmax(logits, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(self.dtype), v, preferred_element_type=jnp.float32)
        out = nn.Dense(cfg.d_model, name="o", **kw)(out.astype(self.dtype).reshape(batch, length, cfg.inner_dim))
        return out, bias


class _SelfAttentionLayer(nn.Module):
    config: T5Config
    has_relative_attention_bias: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, bias: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        normed = T5LayerNorm(self.config.layer_norm_epsilon, name="layer_norm", **kw)(x)
        out, bias = T5Attention(self.config, self.has_relative_attention_bias, name="SelfAttention", **kw)(normed, bias)
        return x + out, bias


class _DenseReluDense(nn.Module):
    config: T5Config
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        kw = dict(use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype)
        if cfg.gated:
            h = _activation(cfg.activation, nn.Dense(cfg.d_ff, name="wi_0", **kw)(x)) \
                * nn.Dense(cfg.d_ff, name="wi_1", **kw)(x)
        else:
            h = _activation(cfg.activation, nn.Dense(cfg.d_ff, name="wi", **kw)(x))
        return nn.Dense(cfg.d_model, name="wo", **kw)(h)


class _FeedForwardLayer(nn.Module):
    config: T5Config
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        normed = T5LayerNorm(self.config.layer_norm_epsilon, name="layer_norm", **kw)(x)
        return x + _DenseReluDense(self.config, name="DenseReluDense", **kw)(normed)


def _clamp_half(x: jax.Array) -> jax.Array:
    """transformers' float16 guard: clip to the largest finite value (1000 below it if any is inf)."""
    if x.dtype != jnp.float16:
        return x
    top = jnp.finfo(jnp.float16).max
    limit = jnp.where(jnp.isinf(x).any(), top - 1000, top).astype(x.dtype)
    return jnp.clip(x, -limit, limit)


class _Block(nn.Module):
    config: T5Config
    first: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, bias: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x, bias = _SelfAttentionLayer(self.config, self.first, name="layer_0", **kw)(x, bias)
        x = _clamp_half(x)
        return _clamp_half(_FeedForwardLayer(self.config, name="layer_1", **kw)(x)), bias


class _Encoder(nn.Module):
    config: T5Config
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        bias = None
        for i in range(self.config.num_layers):
            x, bias = _Block(self.config, first=i == 0, name=f"block_{i}", **kw)(x, bias)
        return T5LayerNorm(self.config.layer_norm_epsilon, name="final_layer_norm", **kw)(x)


class T5EncoderModel(nn.Module):
    """``input_ids (B, L) int -> last_hidden_state (B, L, d_model) float32``, no attention mask
    (as Stable Diffusion 3 calls it: padding tokens are attended to)."""

    config: T5Config
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids: jax.Array) -> jax.Array:
        cfg = self.config
        if input_ids.ndim != 2:
            raise ShapeError(f"input_ids shape {input_ids.shape}: expected (batch, length)")
        embed = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=self.dtype, param_dtype=self.param_dtype, name="shared")
        hidden = _Encoder(cfg, dtype=self.dtype, param_dtype=self.param_dtype, name="encoder")(
            embed(input_ids.astype(jnp.int32)))
        return hidden.astype(jnp.float32)


def expected_params(config: T5Config, param_dtype: Dtype = jnp.float32) -> dict[str, Any]:
    """The params pytree of :class:`T5EncoderModel` as ``jax.ShapeDtypeStruct`` leaves (no compute)."""
    ids = jax.ShapeDtypeStruct((1, 2), jnp.int32)
    return jax.eval_shape(T5EncoderModel(config, param_dtype=param_dtype).init, jax.random.key(0), ids)["params"]


def t5_state_dict(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The checkpoint with one token embedding under ``shared.weight``.

    transformers ties ``encoder.embed_tokens.weight`` to ``shared.weight``; a checkpoint may hold
    either or both (then they must agree, or the encoder would read the other one).

    Raises:
      ConfigError: both are present and differ.
    """
    state = dict(state)
    tied = state.pop(_TIED_EMBEDDING, None)
    if tied is None:
        return state
    shared = state.get("shared.weight")
    if shared is None:
        state["shared.weight"] = tied
    elif np.shape(shared) != np.shape(tied) or not np.array_equal(shared, tied):
        raise ConfigError(f"text_encoder_3: {_TIED_EMBEDDING} differs from shared.weight; T5EncoderModel ties "
                          "them, so this checkpoint is not a T5 encoder jaxpid can read unambiguously")
    return state
