"""Stable Diffusion XL's conditioning: two text encoders, a pooled embedding and size ids.

SDXL's UNet is conditioned on more than a token sequence. For each prompt,
:func:`encode_prompt` builds what diffusers' ``StableDiffusionXLPipeline`` feeds it:

- ``hidden`` (B, 77, D1 + D2): the *penultimate* hidden states of both CLIP text encoders (ViT-L
  and OpenCLIP bigG), not final-layer-normed, concatenated along features;
- ``pooled`` (B, P): the second encoder's projected pooled output (``text_embeds``);
- ``time_ids`` (B, 6): original size (h, w), crop top-left (top, left) and target size (h, w),
  Fourier-embedded inside the UNet (see :class:`SizeConditioning`).

They travel together as one pytree, :class:`SDXLConditioning`, whose leaves all lead with the
batch (conditioning) axis, so the estimator, the sampler and the sweeps stack, slice and
broadcast it like the single array of SD 1.x / 2.x.

The unconditional conditioning -- the empty prompt "" (or one of whitespace only) -- is what the
SDXL pipeline feeds for an empty negative prompt: zero ``hidden`` and ``pooled`` when the folder's
``force_zeros_for_empty_prompt`` is set (SDXL base), the encoding of "" otherwise; the time ids
stay. That is the unconditional model SDXL was trained with (text dropped to zeros) and is guided
with (docs/method.md#stable-diffusion-xl).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxpid.errors import ConfigError
from jaxpid.sd.models.checked import apply_checked
from jaxpid.sd.models.clip import CLIPTextConfig
from jaxpid.sd.models.unet import SDXL_TIME_IDS, UNetConfig
from jaxpid.sd.tokenizer import PromptTokenizer

UNCONDITIONAL_RULES = ("zeros", "empty_prompt")  # force_zeros_for_empty_prompt true / false


@flax.struct.dataclass
class SDXLConditioning:
    """What SDXL's UNet is conditioned on, per prompt; a pytree (every leaf leads with the batch)."""

    hidden: jax.Array  # (B, 77, D1 + D2) float32: both encoders' penultimate hidden states
    pooled: jax.Array  # (B, P) float32: text_encoder_2's projected pooled output
    time_ids: jax.Array  # (B, 6) float32: original (h, w), crop (top, left), target (h, w)


@dataclasses.dataclass(frozen=True)
class SizeConditioning:
    """SDXL's micro-conditioning on image size and crop, in pixels.

    Default (diffusers, when no size is given): original = target = the generated image size
    (the UNet's sample size x the VAE scale factor, 1024 x 1024 for SDXL base), crop (0, 0).
    """

    original_size: tuple[int, int]  # (height, width)
    crop_top_left: tuple[int, int] = (0, 0)  # (top, left)
    target_size: tuple[int, int] | None = None  # (height, width); None: the original size

    def __post_init__(self):
        target = self.original_size if self.target_size is None else self.target_size
        for name, value in (("original_size", self.original_size), ("crop_top_left", self.crop_top_left),
                            ("target_size", target)):
            pair = tuple(value) if isinstance(value, (tuple, list)) else ()
            if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair):
                raise ConfigError(f"SDXL size conditioning {name}={value!r}: expected two integers (pixels)")
            minimum = 0 if name == "crop_top_left" else 1
            if min(pair) < minimum:
                raise ConfigError(f"SDXL size conditioning {name}={value!r}: values must be >= {minimum}")
            object.__setattr__(self, name, tuple(int(v) for v in pair))

    @property
    def time_ids(self) -> tuple[int, ...]:
        """The 6 time ids, in diffusers' ``_get_add_time_ids`` order."""
        return self.original_size + self.crop_top_left + self.target_size

    @classmethod
    def from_time_ids(cls, time_ids: Sequence[int]) -> SizeConditioning:
        values = list(time_ids)
        if len(values) != SDXL_TIME_IDS:
            raise ConfigError(f"SDXL time ids {values!r}: expected {SDXL_TIME_IDS} integers "
                              "(original h, w, crop top, left, target h, w)")
        return cls(tuple(values[0:2]), tuple(values[2:4]), tuple(values[4:6]))


@dataclasses.dataclass(frozen=True, eq=False)  # holds arrays
class SDXLText:
    """The SDXL-only parts of a pipeline: the second encoder and tokenizer, and the rules."""

    text_encoder_2: Any  # BoundModel of CLIPTextModel(with_projection=True)
    tokenizer_2: PromptTokenizer
    force_zeros: bool  # the folder's force_zeros_for_empty_prompt
    size: SizeConditioning

    @property
    def unconditional(self) -> str:
        """One of ``UNCONDITIONAL_RULES``: how the empty prompt is conditioned."""
        return unconditional_rule(self.force_zeros)


def unconditional_rule(force_zeros_for_empty_prompt: bool) -> str:
    """``"zeros"`` or ``"empty_prompt"`` (see ``UNCONDITIONAL_RULES``)."""
    return UNCONDITIONAL_RULES[0] if force_zeros_for_empty_prompt else UNCONDITIONAL_RULES[1]


def encode_prompt(
    text_encoder: Any, tokenizer: PromptTokenizer, sdxl: SDXLText, prompts: Sequence[str]
) -> SDXLConditioning:
    """Prompts -> :class:`SDXLConditioning`, as ``StableDiffusionXLPipeline.encode_prompt`` (and
    ``_get_add_time_ids``) build them; empty prompts get the unconditional rule (module docstring).

    Raises:
      PromptError: a prompt longer than either tokenizer takes.
    """
    ids_1 = jnp.asarray(tokenizer.encode(prompts))  # a bare string is refused here
    ids_2 = jnp.asarray(sdxl.tokenizer_2.encode(prompts))
    prompts = [str(p) for p in prompts]
    hidden, pooled = _encode(text_encoder, sdxl.text_encoder_2, ids_1, ids_2)
    if sdxl.force_zeros:
        empty = jnp.asarray([not p.strip() for p in prompts])
        hidden = jnp.where(empty[:, None, None], 0.0, hidden)
        pooled = jnp.where(empty[:, None], 0.0, pooled)
    time_ids = jnp.broadcast_to(jnp.asarray(sdxl.size.time_ids, jnp.float32), (len(prompts), SDXL_TIME_IDS))
    return SDXLConditioning(hidden=hidden, pooled=pooled, time_ids=time_ids)


@jax.jit
def _encode(text_encoder, text_encoder_2, ids_1: jax.Array, ids_2: jax.Array) -> tuple[jax.Array, jax.Array]:
    first = text_encoder.apply(ids_1, None, True)
    second = text_encoder_2.apply(ids_2, None, True)
    # "2" because SDXL always indexes from the penultimate layer (diffusers' clip_skip=None).
    hidden = jnp.concatenate([first.hidden_states[-2], second.hidden_states[-2]], axis=-1)
    return hidden.astype(jnp.float32), second.pooled.astype(jnp.float32)


def unet_conditioning(cond: Any) -> tuple:
    """The UNet's conditioning arguments after (sample, timesteps): ``(hidden,)`` for an (B, L, D)
    array (SD 1.x / 2.x), ``(hidden, text_embeds, time_ids)`` for an SDXLConditioning."""
    if isinstance(cond, SDXLConditioning):
        return cond.hidden, cond.pooled, cond.time_ids
    return (cond,)


def apply_unet(module: Any, params: Any, sample: jax.Array, timesteps: jax.Array, cond: Any) -> jax.Array:
    """The UNet on one conditioning: an (B, L, D) array (SD 1.x / 2.x) or an SDXLConditioning."""
    return apply_checked(module, params, sample, timesteps, *unet_conditioning(cond))


def check_compatible(folder: Any, text_1: CLIPTextConfig, text_2: CLIPTextConfig, unet: UNetConfig) -> None:
    """The two encoders fit the UNet: widths of hidden states, pooled embedding and time ids.

    Raises:
      ConfigError: naming the component and tensor whose sizes disagree.
    """
    if unet.addition_embed_type != "text_time":
        raise ConfigError(
            f"{folder}: an SDXL pipeline needs a unet with addition_embed_type 'text_time' (its add_embedding "
            f"takes the pooled text and time ids); this unet has {unet.addition_embed_type!r}"
        )
    width = text_1.hidden_size + text_2.hidden_size
    if unet.cross_attention_dim != width:
        raise ConfigError(
            f"{folder}: text_encoder hidden_size {text_1.hidden_size} + text_encoder_2 hidden_size "
            f"{text_2.hidden_size} = {width} does not match the unet's cross_attention_dim "
            f"{unet.cross_attention_dim} (attn2.to_k.weight input size)"
        )
    if text_2.projection_dim is None:
        raise ConfigError(f"{folder}: text_encoder_2 config has no projection_dim: SDXL needs "
                          "CLIPTextModelWithProjection (text_projection.weight) for the pooled embedding")
    expected = unet.pooled_dim(SDXL_TIME_IDS)
    if text_2.projection_dim != expected:
        raise ConfigError(
            f"{folder}: pooled-projection size mismatch: text_encoder_2 text_projection.weight gives "
            f"projection_dim {text_2.projection_dim} features, but the unet's add_embedding.linear_1.weight takes "
            f"{unet.projection_class_embeddings_input_dim} = pooled {expected} + {SDXL_TIME_IDS} time ids x "
            f"addition_time_embed_dim {unet.addition_time_embed_dim}"
        )


def force_zeros(index: Mapping[str, Any]) -> bool:
    """The folder's ``force_zeros_for_empty_prompt`` (diffusers' default for SDXL: true)."""
    value = index.get("force_zeros_for_empty_prompt", True)
    if not isinstance(value, bool):
        raise ConfigError(f"model_index.json force_zeros_for_empty_prompt={value!r}: expected true or false")
    return value


def identity_fields(unconditional: str, size: SizeConditioning) -> dict:
    """What an SDXL model identity adds: the family, the unconditional rule, the time ids and the
    VAE's compute dtype (always float32: SDXL's VAE overflows in float16)."""
    return {"family": "sdxl", "unconditional": unconditional, "time_ids": list(size.time_ids), "vae_dtype": "float32"}
