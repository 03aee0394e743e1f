"""CLIP text encoder (transformers ``CLIPTextModel`` / ``CLIPTextModelWithProjection``) in Flax Linen.

Called plainly it returns what the diffusers Stable Diffusion pipeline feeds the UNet:
``text_encoder(input_ids)[0]``, the final-layer-normed last hidden state under CLIP's causal
attention mask. SD 1.x (OpenAI ViT-L/14, quick_gelu, 12 layers) and SD 2.x (OpenCLIP ViT-H in
diffusers format, gelu, 23 layers) differ only in config. SDXL asks for more
(``output_hidden_states=True``): every layer's hidden state (it feeds the UNet the penultimate
one, not final-layer-normed) and the pooled output -- the final-normed state at the end token,
through the ``text_projection`` head when built ``with_projection`` (OpenCLIP bigG).

Submodules are named after the transformers tensor names without the ``text_model.`` prefix
(``encoder.layers.3.self_attn.q_proj.weight`` -> ``encoder/layers_3/self_attn/q_proj/kernel``),
so :func:`jaxpid.sd.models.convert.convert_state_dict` with :func:`clip_rename` loads a checkpoint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from jaxpid.errors import ConfigError, ShapeError
from jaxpid.sd.models.layers import attention_implementation, layer_norm
from jaxpid.sd.models.shapes import remembered_shapes

Dtype = Any

ACTIVATIONS = ("quick_gelu", "gelu")

# transformers writes config.json as a diff against these class defaults in some versions
# (and CLIPConfig's text_config sub-dict often is one), so a missing key means this value.
_TRANSFORMERS_DEFAULTS: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "eos_token_id": 49407,
}


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
    """The architecture fields of a transformers ``CLIPTextConfig``."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    max_position_embeddings: int
    hidden_act: str
    layer_norm_eps: float
    # diffusers passes the tokenizer's padding mask to the encoder only when this is set.
    use_attention_mask: bool = False
    # Which position is pooled: eos_token_id 2 (configs older than transformers PR #24773, SDXL's
    # among them) takes the largest id (CLIP's end token); otherwise the first eos_token_id.
    eos_token_id: int = 49407
    projection_dim: int | None = None  # width of text_projection (CLIPTextModelWithProjection)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CLIPTextConfig":
        """From ``text_encoder/config.json``: a ``CLIPTextConfig`` dict, or a ``CLIPConfig``
        dict holding one under ``text_config``. ``projection_dim`` and training-only keys are
        ignored.

        Raises:
          ConfigError: an unsupported activation, or sizes that do not fit together.
        """
        if isinstance(d.get("text_config"), Mapping):
            outer_flag = d.get("use_attention_mask")
            d = dict(d["text_config"])
            if outer_flag is not None:
                d.setdefault("use_attention_mask", outer_flag)
        elif d.get("model_type") == "clip":
            raise ConfigError("text encoder config has model_type 'clip' but no 'text_config' entry")
        values = {key: d.get(key, default) for key, default in _TRANSFORMERS_DEFAULTS.items()}
        if values["hidden_act"] not in ACTIVATIONS:
            raise ConfigError(
                f"text encoder config hidden_act={values['hidden_act']!r} is not supported; "
                f"expected one of {ACTIVATIONS}"
            )
        ints = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "max_position_embeddings", "eos_token_id")
        for key in ints:
            if not isinstance(values[key], int) or isinstance(values[key], bool) or values[key] <= 0:
                raise ConfigError(f"text encoder config {key}={values[key]!r}: expected a positive integer")
        if values["hidden_size"] % values["num_attention_heads"]:
            raise ConfigError(
                f"text encoder config hidden_size={values['hidden_size']} does not split into "
                f"num_attention_heads={values['num_attention_heads']} heads"
            )
        values["layer_norm_eps"] = float(values["layer_norm_eps"])
        projection = d.get("projection_dim")
        if projection is not None and (not isinstance(projection, int) or isinstance(projection, bool) or projection <= 0):
            raise ConfigError(f"text encoder config projection_dim={projection!r}: expected a positive integer")
        return cls(**values, use_attention_mask=bool(d.get("use_attention_mask") or False), projection_dim=projection)


def _activation(name: str, x: jax.Array) -> jax.Array:
    if name == "quick_gelu":
        return x * jax.nn.sigmoid(1.702 * x)
    return jax.nn.gelu(x, approximate=False)  # transformers' "gelu" is the exact erf form


class CLIPTextEmbeddings(nn.Module):
    """Token plus learned absolute position embeddings: ``(B, L) int -> (B, L, D)``."""

    config: CLIPTextConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids: jax.Array) -> jax.Array:
        cfg = self.config
        kw = dict(features=cfg.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype)
        tokens = nn.Embed(cfg.vocab_size, name="token_embedding", **kw)(input_ids)
        positions = nn.Embed(cfg.max_position_embeddings, name="position_embedding", **kw)(
            jnp.arange(input_ids.shape[-1])
        )
        return tokens + positions[None]


class CLIPAttention(nn.Module):
    """Causal multi-head self-attention with biased ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``.

    Call: ``(x (B, L, D), lengths (B,) int or None) -> (B, L, D)``; ``lengths`` hides keys at
    positions ``>= lengths`` (right padding).
    """

    config: CLIPTextConfig
    attention: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
        cfg = self.config
        dense = lambda name: nn.Dense(cfg.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype, name=name)  # noqa: E731
        heads = lambda h: h.reshape(*h.shape[:2], cfg.num_attention_heads, cfg.head_dim)  # noqa: E731
        q, k, v = (heads(dense(name)(x)) for name in ("q_proj", "k_proj", "v_proj"))
        impl = attention_implementation(self.attention, self.dtype, cfg.head_dim)
        # Logits and softmax run in float32 inside dot_product_attention (XLA) for bf16 inputs.
        out = jax.nn.dot_product_attention(
            q, k, v, is_causal=True, key_value_seq_lengths=lengths, implementation=impl
        )
        return dense("out_proj")(out.reshape(x.shape[0], x.shape[1], cfg.hidden_size))


class CLIPMLP(nn.Module):
    """``fc1`` -> activation -> ``fc2``: ``(B, L, D) -> (B, L, D)``."""

    config: CLIPTextConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = nn.Dense(cfg.intermediate_size, name="fc1", **kw)(x)
        return nn.Dense(cfg.hidden_size, name="fc2", **kw)(_activation(cfg.hidden_act, h))


class CLIPEncoderLayer(nn.Module):
    """Pre-LayerNorm transformer layer: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

    config: CLIPTextConfig
    attention: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        attn = CLIPAttention(cfg, self.attention, name="self_attn", **kw)
        x = x + attn(layer_norm(cfg.layer_norm_eps, name="layer_norm1", **kw)(x), lengths)
        return x + CLIPMLP(cfg, name="mlp", **kw)(layer_norm(cfg.layer_norm_eps, name="layer_norm2", **kw)(x))


class CLIPEncoder(nn.Module):
    """``num_hidden_layers`` encoder layers named ``layers_0``, ``layers_1``, ...

    Returns every hidden state, as transformers' ``hidden_states``: the embeddings, then each
    layer's output (``num_hidden_layers + 1`` arrays).
    """

    config: CLIPTextConfig
    attention: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, lengths: jax.Array | None = None) -> tuple[jax.Array, ...]:
        hidden = [x]
        for i in range(self.config.num_hidden_layers):
            layer = CLIPEncoderLayer(
                self.config, self.attention, dtype=self.dtype, param_dtype=self.param_dtype, name=f"layers_{i}"
            )
            hidden.append(layer(hidden[-1], lengths))
        return tuple(hidden)


@flax.struct.dataclass
class CLIPTextOutput:
    """``CLIPTextModel(..., output_hidden_states=True)``, all float32."""

    last_hidden_state: jax.Array  # (B, L, D) final-layer-normed
    hidden_states: tuple[jax.Array, ...]  # num_hidden_layers + 1 of (B, L, D), not normed
    pooled: jax.Array  # (B, D), or (B, projection_dim) through text_projection when with_projection


def pooled_positions(input_ids: jax.Array, eos_token_id: int) -> jax.Array:
    """(B,) index of the token transformers pools (see ``CLIPTextConfig.eos_token_id``)."""
    if eos_token_id == 2:
        return jnp.argmax(input_ids, axis=-1)
    return jnp.argmax((input_ids == eos_token_id).astype(jnp.int32), axis=-1)


class CLIPTextModel(nn.Module):
    """CLIP text transformer: ``input_ids (B, L) int32 -> last_hidden_state (B, L, D) float32``,
    or with ``output_hidden_states`` a :class:`CLIPTextOutput`.

    ``attention_mask`` ((B, L), 1 on tokens and 0 on right padding, as the tokenizer builds it)
    is for configs with ``use_attention_mask``; the SD 1.x / 2.x / XL pipelines pass none.
    ``attention`` picks the attention kernel (see :func:`layers.attention_implementation`).
    ``with_projection`` adds transformers' ``CLIPTextModelWithProjection`` head: ``text_projection``
    (no bias, ``projection_dim`` outputs) on the pooled output.
    """

    config: CLIPTextConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attention: str = "auto"
    with_projection: bool = False

    @nn.compact
    def __call__(
        self, input_ids: jax.Array, attention_mask: jax.Array | None = None, output_hidden_states: bool = False
    ) -> jax.Array | CLIPTextOutput:
        cfg = self.config
        if input_ids.ndim != 2 or input_ids.shape[1] > cfg.max_position_embeddings:
            raise ShapeError(
                f"input_ids shape {input_ids.shape}: expected (batch, length) with length <= "
                f"max_position_embeddings {cfg.max_position_embeddings}"
            )
        lengths = None
        if attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise ShapeError(f"attention_mask shape {attention_mask.shape} != input_ids shape {input_ids.shape}")
            # A right-padding mask is a prefix, so its count is the number of visible keys.
            lengths = jnp.sum(attention_mask.astype(jnp.int32), axis=-1)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        input_ids = input_ids.astype(jnp.int32)
        x = CLIPTextEmbeddings(cfg, name="embeddings", **kw)(input_ids)
        hidden = CLIPEncoder(cfg, self.attention, name="encoder", **kw)(x, lengths)
        last = layer_norm(cfg.layer_norm_eps, name="final_layer_norm", **kw)(hidden[-1])
        # Built whether or not it is returned, so the parameter tree does not depend on the call.
        pooled = last[jnp.arange(last.shape[0]), pooled_positions(input_ids, cfg.eos_token_id)]
        if self.with_projection:
            if cfg.projection_dim is None:
                raise ConfigError("text encoder with projection: its config has no projection_dim")
            pooled = nn.Dense(cfg.projection_dim, use_bias=False, name="text_projection", **kw)(pooled)
        if not output_hidden_states:
            return last.astype(jnp.float32)
        return CLIPTextOutput(
            last_hidden_state=last.astype(jnp.float32),
            hidden_states=tuple(h.astype(jnp.float32) for h in hidden),
            pooled=pooled.astype(jnp.float32),
        )


def expected_params(
    config: CLIPTextConfig, param_dtype: Dtype = jnp.float32, with_projection: bool = False
) -> dict[str, Any]:
    """The params pytree of :class:`CLIPTextModel` as ``jax.ShapeDtypeStruct`` leaves (no compute)."""
    return remembered_shapes(f"clip(projection={with_projection})", config, param_dtype, __file__,
                             lambda: _trace_params(config, param_dtype, with_projection))


def _trace_params(config: CLIPTextConfig, param_dtype: Dtype, with_projection: bool) -> dict[str, Any]:
    model = CLIPTextModel(config, param_dtype=param_dtype, with_projection=with_projection)
    ids = jax.ShapeDtypeStruct((1, config.max_position_embeddings), jnp.int32)
    return jax.eval_shape(model.init, jax.random.key(0), ids)["params"]


def clip_rename(name: str) -> str | None:
    """Checkpoint tensor name -> canonical name: strip ``text_model.`` (transformers 4
    checkpoints), drop the ``position_ids`` buffer."""
    if name.startswith("text_model."):
        name = name[len("text_model."):]
    if name == "embeddings.position_ids":
        return None
    return name
