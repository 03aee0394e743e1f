"""Stable Diffusion 3 (and 3.5): three text encoders, the joint conditioning, the flow denoiser.

For each prompt, :func:`encode_prompt` builds what diffusers' ``StableDiffusion3Pipeline.encode_prompt``
feeds the MMDiT (``clip_skip=None``):

- ``hidden`` (B, 77 + L3, D): the *penultimate* hidden states of CLIP-L and CLIP-G concatenated
  along features, zero-padded to the T5 width D (the transformer's ``joint_attention_dim``), then
  T5's last hidden state (L3 = ``max_sequence_length`` tokens, 256 by default) appended along the
  sequence -- or L3 zero tokens when the folder has no ``text_encoder_3`` or it is dropped (as
  diffusers does);
- ``pooled`` (B, P1 + P2): both CLIP encoders' projected pooled outputs (``text_embeds``).

:class:`SD3Conditioning` carries them as one pytree whose leaves lead with the batch axis. The
unconditional conditioning is the encoding of the empty prompt "" (SD3's negative prompt; no
zeroing rule as SDXL has).

The denoiser is the transformer's velocity mapped to ε̂ at a log-SNR (:mod:`jaxpid.sd.flow`); its
``with_aux`` adds the text→image attention maps of the 77 CLIP token positions, the positions the
studies index words by (docs/sd3.md#attention-maps). ``load_parts(..., use_t5=False)`` (the pipeline's
``t5=False``) drops T5 as diffusers allows (docs/sd3.md#dropping-t5).
:func:`load_parts` reads every component of a ``StableDiffusion3Pipeline`` folder strictly; the
pipeline module binds them into a ``Pipeline``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from jaxpid.errors import ConfigError
from jaxpid.sd.flow import FlowDenoiser, FlowMatchSchedule
from jaxpid.sd.models import clip, mmdit, t5, vae
from jaxpid.sd.models.checked import apply_checked
from jaxpid.sd.models.convert import convert_state_dict
from jaxpid.sd.t5_tokenizer import T5PromptTokenizer, load_t5_tokenizer
from jaxpid.sd.tokenizer import PromptTokenizer, load_tokenizer
from jaxpid.sd.weights import has_component, load_component_weights, read_json_config

Dtype = Any

MAX_SEQUENCE_LENGTH = 256  # diffusers' StableDiffusion3Pipeline default T5 length
MAX_SEQUENCE_LIMIT = 512  # diffusers' StableDiffusion3Pipeline refuses longer T5 sequences


@flax.struct.dataclass
class SD3Conditioning:
    """What the SD3 transformer is conditioned on, per prompt; a pytree (every leaf leads with B)."""

    hidden: jax.Array  # (B, 77 + L3, joint_attention_dim) float32: CLIP-L | CLIP-G (zero-padded), then T5
    pooled: jax.Array  # (B, P1 + P2) float32: both CLIP projections


@dataclasses.dataclass(frozen=True, eq=False)  # holds arrays
class SD3Text:
    """The SD3-only parts of a pipeline: CLIP-G, the optional T5 and their tokenizers."""

    text_encoder_2: Any  # BoundModel of CLIPTextModel(with_projection=True): CLIP-G
    tokenizer_2: PromptTokenizer
    text_encoder_3: Any | None  # BoundModel of T5EncoderModel, or None (diffusers then feeds zeros)
    tokenizer_3: T5PromptTokenizer | None
    joint_attention_dim: int  # the transformer's text width (= T5's d_model)
    max_sequence_length: int = MAX_SEQUENCE_LENGTH
    t5_dtype: str = "float32"  # T5's compute dtype (never float16: T5 v1.1 overflows in it)


def encode_prompt(text_encoder: Any, tokenizer: PromptTokenizer, sd3: SD3Text,
                  prompts: Sequence[str]) -> SD3Conditioning:
    """Prompts -> :class:`SD3Conditioning`, as ``StableDiffusion3Pipeline.encode_prompt`` builds them.

    Raises:
      PromptError: a prompt longer than a tokenizer takes (77 CLIP tokens, ``max_sequence_length`` T5).
    """
    ids_1 = jnp.asarray(tokenizer.encode(prompts))  # a bare string is refused here
    ids_2 = jnp.asarray(sd3.tokenizer_2.encode(prompts))
    clip_hidden, pooled = _encode_clip(text_encoder, sd3.text_encoder_2, ids_1, ids_2)
    if sd3.text_encoder_3 is None:
        t5_hidden = jnp.zeros((len(prompts), sd3.max_sequence_length, sd3.joint_attention_dim), jnp.float32)
    else:
        t5_hidden = _encode_t5(sd3.text_encoder_3, jnp.asarray(sd3.tokenizer_3.encode(prompts)))
    clip_hidden = jnp.pad(clip_hidden, ((0, 0), (0, 0), (0, sd3.joint_attention_dim - clip_hidden.shape[-1])))
    return SD3Conditioning(hidden=jnp.concatenate([clip_hidden, t5_hidden], axis=1), pooled=pooled)


@jax.jit
def _encode_clip(text_encoder, text_encoder_2, ids_1: jax.Array, ids_2: jax.Array) -> tuple[jax.Array, jax.Array]:
    first = text_encoder.apply(ids_1, None, True)
    second = text_encoder_2.apply(ids_2, None, True)
    hidden = jnp.concatenate([first.hidden_states[-2], second.hidden_states[-2]], axis=-1)
    return hidden.astype(jnp.float32), jnp.concatenate([first.pooled, second.pooled], axis=-1).astype(jnp.float32)


@jax.jit
def _encode_t5(text_encoder_3, ids: jax.Array) -> jax.Array:
    return text_encoder_3.apply(ids).astype(jnp.float32)


# ---------------------------------------------------------------------------------- denoiser


@flax.struct.dataclass
class SD3Velocity:
    """The transformer as a velocity model ``(x_t, timesteps = 1000·t, SD3Conditioning) -> v̂``;
    a pytree whose leaves are the transformer's parameters."""

    params: Any
    module: nn.Module = flax.struct.field(pytree_node=False)
    # Text positions the attention maps keep: the CLIP tokens (the studies' word positions).
    clip_tokens: int = flax.struct.field(pytree_node=False, default=77)

    def __call__(self, x_t: jax.Array, timesteps: jax.Array, cond: SD3Conditioning) -> jax.Array:
        return apply_transformer(self.module, self.params, x_t, timesteps, cond)

    def with_aux(self, x_t: jax.Array, timesteps: jax.Array, cond: SD3Conditioning) -> tuple[jax.Array, jax.Array]:
        """v̂ as the call, and the text→image attention maps (B, clip_tokens, H, W) float32 of the
        CLIP token positions (docs/sd3.md#attention-maps)."""
        velocity, maps = mmdit.apply_capturing_attention(self.module, self.params, x_t, timesteps, cond.hidden,
                                                         cond.pooled)
        return velocity, maps[:, :self.clip_tokens]


def apply_transformer(module: nn.Module, params: Any, x_t: jax.Array, timesteps: jax.Array,
                      cond: SD3Conditioning) -> jax.Array:
    """The MMDiT on one conditioning: v̂ (B, C, H, W) in the module's dtype."""
    return apply_checked(module, params, x_t, timesteps, cond.hidden, cond.pooled)


def denoiser(transformer: Any, schedule: FlowMatchSchedule, clip_tokens: int = 77) -> FlowDenoiser:
    """The estimator's ε̂(z, λ, SD3Conditioning) of a bound transformer (jaxpid.sd.flow); its
    ``with_aux`` gives the attention maps of the first ``clip_tokens`` text positions."""
    velocity = SD3Velocity(params=transformer.params, module=transformer.module, clip_tokens=clip_tokens)
    return FlowDenoiser(velocity=velocity, num_train_timesteps=schedule.num_train_timesteps)


# ---------------------------------------------------------------------------------- loading


@dataclasses.dataclass(frozen=True, eq=False)
class SD3Parts:
    """Every component of an SD3 folder, bound (``bind(module, params)``) and checked to fit."""

    transformer: Any
    text_encoder: Any
    tokenizer: PromptTokenizer
    vae: Any | None
    schedule: FlowMatchSchedule
    text: SD3Text


def load_parts(folder: Path, index: dict, *, bind: Callable[[nn.Module, Any], Any], dtype: Dtype = jnp.float32,
               param_dtype: Dtype = jnp.float32, attention: str = "auto", variant: str | None = None,
               use_t5: bool = True, max_sequence_length: int = MAX_SEQUENCE_LENGTH) -> SD3Parts:
    """Read a ``StableDiffusion3Pipeline`` folder: configs first (all checked to fit together before
    any weights are read), then each component's safetensors, strictly.

    T5 computes in float32 when ``dtype`` is float16 (T5 v1.1 overflows in float16). ``use_t5=False``
    reads nothing of ``text_encoder_3`` / ``tokenizer_3`` (its config and weights are neither
    checked nor loaded) and feeds zeros in its place, as diffusers does with ``text_encoder_3=None``.

    Raises:
      ConfigError: a config jaxpid does not support, or components whose sizes disagree (named).
      WeightsError, WeightsMismatchError: the weights.
    """
    transformer_config = mmdit.SD3TransformerConfig.from_dict(read_json_config(folder / "transformer"))
    text_config = clip.CLIPTextConfig.from_dict(read_json_config(folder / "text_encoder"))
    text_config_2 = clip.CLIPTextConfig.from_dict(read_json_config(folder / "text_encoder_2"))
    check_max_sequence_length(max_sequence_length)
    with_t5 = uses_t5(index, use_t5)
    t5_config = t5.T5Config.from_dict(read_json_config(folder / "text_encoder_3")) if with_t5 else None
    vae_config = vae.VAEConfig.from_dict(read_json_config(folder / "vae")) if has_component(index, "vae") else None
    check_compatible(folder, text_config, text_config_2, t5_config, transformer_config, vae_config)
    schedule = FlowMatchSchedule.from_folder(folder / "scheduler")

    def load(component, module, expected, rename=None, prepare=None):
        state = load_component_weights(folder / component, variant)
        state = prepare(state) if prepare is not None else state
        tree = convert_state_dict(state, expected, what=component, rename=rename)
        return bind(module, jax.tree.map(lambda array: jnp.asarray(array, dtype=param_dtype), tree))

    kw = dict(dtype=dtype, param_dtype=param_dtype, attention=attention)
    encoders = []
    for name, config in (("text_encoder", text_config), ("text_encoder_2", text_config_2)):
        module = clip.CLIPTextModel(config, with_projection=True, **kw)
        encoders.append(load(name, module, clip.expected_params(config, with_projection=True), clip.clip_rename))
    tokenizer = load_tokenizer(folder / "tokenizer", model_max_positions=text_config.max_position_embeddings)
    tokenizer_2 = load_tokenizer(folder / "tokenizer_2", model_max_positions=text_config_2.max_position_embeddings)
    if tokenizer_2.max_length != tokenizer.max_length:
        raise ConfigError(f"{folder}: tokenizer pads to {tokenizer.max_length} tokens but tokenizer_2 to "
                          f"{tokenizer_2.max_length}; SD3 concatenates both CLIP encoders' hidden states per token")
    t5_dtype = jnp.float32 if jnp.dtype(dtype) == jnp.dtype(jnp.float16) else dtype
    encoder_3 = tokenizer_3 = None
    if t5_config is not None:
        module = t5.T5EncoderModel(t5_config, dtype=t5_dtype, param_dtype=param_dtype)
        encoder_3 = load("text_encoder_3", module, t5.expected_params(t5_config), prepare=t5.t5_state_dict)
        tokenizer_3 = load_t5_tokenizer(folder / "tokenizer_3", max_sequence_length)
    transformer = load("transformer", mmdit.SD3Transformer2DModel(transformer_config, **kw),
                       mmdit.expected_params(transformer_config))
    autoencoder = None
    if vae_config is not None:
        module = vae.AutoencoderKL(vae_config, **kw)
        autoencoder = load("vae", module, vae.expected_params(vae_config), vae.vae_rename)
    text = SD3Text(encoders[1], tokenizer_2, encoder_3, tokenizer_3, transformer_config.joint_attention_dim,
                   max_sequence_length, jnp.dtype(t5_dtype).name)
    return SD3Parts(transformer, encoders[0], tokenizer, autoencoder, schedule, text)


def check_compatible(folder: Any, text_1: clip.CLIPTextConfig, text_2: clip.CLIPTextConfig,
                     t5_config: t5.T5Config | None, transformer: mmdit.SD3TransformerConfig,
                     vae_config: vae.VAEConfig | None) -> None:
    """The encoders and the VAE fit the transformer: text width, pooled width, latent channels.

    Raises:
      ConfigError: naming the components and tensors whose sizes disagree.
    """
    for name, config in (("text_encoder", text_1), ("text_encoder_2", text_2)):
        if config.projection_dim is None:
            raise ConfigError(f"{folder}: {name} config has no projection_dim: SD3 needs "
                              "CLIPTextModelWithProjection (text_projection.weight) for the pooled embedding")
    pooled = text_1.projection_dim + text_2.projection_dim
    if pooled != transformer.pooled_projection_dim:
        raise ConfigError(
            f"{folder}: pooled-projection size mismatch: text_encoder projection_dim {text_1.projection_dim} + "
            f"text_encoder_2 projection_dim {text_2.projection_dim} = {pooled}, but the transformer's "
            f"time_text_embed.text_embedder.linear_1.weight takes pooled_projection_dim "
            f"{transformer.pooled_projection_dim}")
    clip_width = text_1.hidden_size + text_2.hidden_size
    if clip_width > transformer.joint_attention_dim:
        raise ConfigError(
            f"{folder}: text_encoder hidden_size {text_1.hidden_size} + text_encoder_2 hidden_size "
            f"{text_2.hidden_size} = {clip_width} is wider than the transformer's joint_attention_dim "
            f"{transformer.joint_attention_dim} (context_embedder.weight input size) they are zero-padded to")
    if t5_config is not None and t5_config.d_model != transformer.joint_attention_dim:
        raise ConfigError(
            f"{folder}: text_encoder_3 d_model {t5_config.d_model} does not match the transformer's "
            f"joint_attention_dim {transformer.joint_attention_dim} (context_embedder.weight input size)")
    if vae_config is not None and vae_config.latent_channels != transformer.in_channels:
        raise ConfigError(f"{folder}: vae latent_channels {vae_config.latent_channels} does not match the "
                          f"transformer's in_channels {transformer.in_channels}")
    if vae_config is None and transformer.in_channels != 3:
        raise ConfigError(f"{folder}: without a vae the transformer works on RGB pixels, but its in_channels is "
                          f"{transformer.in_channels}")


def latent_shape(folder: Path) -> tuple[int, int, int]:
    """(C, H, W) of the transformer's input at its configured sample size, from its config alone."""
    config = mmdit.SD3TransformerConfig.from_dict(read_json_config(folder / "transformer"))
    return config.in_channels, config.sample_size, config.sample_size


def identity_fields(has_t5: bool, max_sequence_length: int, t5_dtype: str) -> dict:
    """What an SD3 model identity adds: the family, whether T5 is used (``text_encoder_3``: False when
    the folder has none or it was dropped, ``t5=False``), its length and dtype."""
    return {"family": "sd3", "text_encoder_3": bool(has_t5), "max_sequence_length": int(max_sequence_length),
            "t5_dtype": t5_dtype}


def folder_identity_fields(index: dict, dtype: Dtype, use_t5: bool = True,
                           max_sequence_length: int = MAX_SEQUENCE_LENGTH) -> dict:
    """``identity_fields`` from a folder's index, the compute dtype and the text options (no weights read)."""
    check_max_sequence_length(max_sequence_length)
    t5_dtype = jnp.float32 if jnp.dtype(dtype) == jnp.dtype(jnp.float16) else dtype
    return identity_fields(uses_t5(index, use_t5), max_sequence_length, jnp.dtype(t5_dtype).name)


def uses_t5(index: dict, use_t5: bool) -> bool:
    """Whether a folder's prompts go through T5: it has ``text_encoder_3`` and it was not dropped."""
    return bool(use_t5) and has_component(index, "text_encoder_3")


def check_max_sequence_length(length: Any) -> int:
    """diffusers' ``max_sequence_length`` rule: a positive integer, at most 512.

    Raises:
      ConfigError: otherwise.
    """
    if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= MAX_SEQUENCE_LIMIT:
        raise ConfigError(f"T5 max_sequence_length={length!r}: expected an integer from 1 to {MAX_SEQUENCE_LIMIT} "
                          "(diffusers' StableDiffusion3Pipeline limit)")
    return length


def check_text_options(name: Any, family: str, use_t5: bool, max_sequence_length: int) -> None:
    """Dropping T5 or setting its length means something for SD3 folders only.

    Raises:
      ConfigError: ``t5=False`` or a non-default ``max_sequence_length`` for another family.
    """
    if family == "sd3":
        check_max_sequence_length(max_sequence_length)
        return
    if not use_t5:
        raise ConfigError(f"{name}: dropping T5 (t5=False, --no-t5) applies to Stable Diffusion 3 folders only; "
                          f"this is a {family!r} folder, which has no T5 text encoder")
    if max_sequence_length != MAX_SEQUENCE_LENGTH:
        raise ConfigError(f"{name}: a T5 max_sequence_length applies to Stable Diffusion 3 folders only; this is a "
                          f"{family!r} folder")
