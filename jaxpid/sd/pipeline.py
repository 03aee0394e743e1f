"""A Stable Diffusion pipeline folder as JAX functions: prompts -> conditionings, a denoiser, VAE.

``load_pipeline`` reads a diffusers pipeline folder (or hub id) of SD 1.x / 2.x, SDXL base or SD3 / 3.5:
each component's config and safetensors weights, converted strictly onto the Flax modules. The
``Pipeline`` it returns offers what the estimator and the sampler need:

- ``encode_prompt``: prompts -> conditionings, as diffusers feeds the UNet: a (B, 77, D) array
  (SD 1.x / 2.x), or for SDXL an ``SDXLConditioning`` pytree (both encoders' hidden states, the
  pooled embedding, the size ids; see :mod:`jaxpid.sd.sdxl`) whose leaves lead with B; for SD3 an
  ``SD3Conditioning`` (three encoders' tokens and the pooled CLIP projections; :mod:`jaxpid.sd.sd3`);
- ``denoiser``: a pytree-registered ε̂(z, α, cond), mapping log-SNR α to the model's nearest
  discrete timestep, with ``snap_logsnr`` so the caller builds z with that step's ᾱ (SD3: the
  flow velocity at continuous time t = σ(−α/2), turned into ε̂; :mod:`jaxpid.sd.flow`);
- ``encode_images`` / ``decode_latents``: pixels <-> scaled latents (identity-like for a
  pixel-space model without a VAE).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxpid.errors import ConfigError, ImageReadError, ShapeError
from jaxpid.sd import sd3, sdxl
from jaxpid.sd.flow import FLOW_SCHEDULERS, FlowDenoiser, FlowMatchSchedule
from jaxpid.sd.models import clip, unet, vae
from jaxpid.sd.models.checked import apply_checked
from jaxpid.sd.models.convert import convert_state_dict
from jaxpid.sd.models.layers import ATTENTION_SETTINGS
from jaxpid.sd.schedule import NoiseSchedule, prediction_to_epsilon
from jaxpid.sd.sdxl import SDXLConditioning, SDXLText, SizeConditioning, apply_unet
from jaxpid.sd.tokenizer import PromptTokenizer, load_tokenizer
from jaxpid.sd.weights import (
    fingerprint,
    has_component,
    load_component_weights,
    pipeline_family,
    read_json_config,
    read_model_index,
    resolve_model_path,
)

Dtype = Any


@flax.struct.dataclass
class BoundModel:
    """A Flax module with its parameters; a pytree whose leaves are the parameters."""

    module: nn.Module = flax.struct.field(pytree_node=False)
    params: Any = None  # nested dict of arrays, the module's "params" collection

    def apply(self, *args, method: str | None = None, **kwargs):
        return apply_checked(self.module, self.params, *args, method=method, **kwargs)


@flax.struct.dataclass
class DiscreteTimeDenoiser:
    """ε̂(z, α, cond) of a discrete-time UNet; a pytree whose leaves are the UNet parameters.

    Pass it to jitted functions as an argument (never close over it): the parameters are then
    traced, and the module and schedule -- static, hashable fields -- key the compilation.
    """

    params: Any  # the UNet's params pytree
    unet: nn.Module = flax.struct.field(pytree_node=False)
    schedule: NoiseSchedule = flax.struct.field(pytree_node=False)

    def __call__(self, z: jax.Array, logsnr: jax.Array, cond: Any) -> jax.Array:
        """z (B,C,H,W), log-SNR (B,) or scalar, cond (B,L,D) or an SDXLConditioning of B
        -> ε̂ (B,C,H,W) float32.

        The model runs at the timestep t nearest to α and its output is converted to ε with
        α_t = logit(ᾱ_t), the log-SNR z should have been built with (see ``snap_logsnr``).
        """
        z = jnp.asarray(z, jnp.float32)
        logsnr = jnp.broadcast_to(jnp.asarray(logsnr, jnp.float32), z.shape[:1])
        timesteps = self.schedule.nearest_timestep(logsnr)
        prediction = apply_unet(self.unet, self.params, z, timesteps, cond).astype(jnp.float32)
        logsnr_t = self.schedule.timestep_logsnr(timesteps)[:, None, None, None]
        return prediction_to_epsilon(prediction, z, logsnr_t, self.schedule.prediction_type)

    def with_aux(self, z: jax.Array, logsnr: jax.Array, cond: Any) -> tuple[jax.Array, jax.Array]:
        """ε̂ as ``__call__``, and the UNet's cross-attention maps (B, L, H, W) float32 at this
        (z, timestep): per token, the probabilities averaged over heads, upsampled to the latent
        grid and summed over layers (``unet.attention_maps``). ``FusedPass(collect_aux=True)``
        averages them over an image's sampled log-SNRs inside the fused pass. ``cond`` as in
        ``__call__`` (an SDXLConditioning's hidden states are what the maps attend to)."""
        z = jnp.asarray(z, jnp.float32)
        logsnr = jnp.broadcast_to(jnp.asarray(logsnr, jnp.float32), z.shape[:1])
        timesteps = self.schedule.nearest_timestep(logsnr)
        prediction, maps = unet.apply_capturing_attention(self.unet, self.params, z, timesteps,
                                                          *sdxl.unet_conditioning(cond))
        logsnr_t = self.schedule.timestep_logsnr(timesteps)[:, None, None, None]
        eps = prediction_to_epsilon(prediction.astype(jnp.float32), z, logsnr_t, self.schedule.prediction_type)
        return eps, maps

    def snap_logsnr(self, logsnr: jax.Array) -> jax.Array:
        """The log-SNR logit(ᾱ_t) of the timestep the model will use for ``logsnr``, float32."""
        return self.schedule.snap_logsnr(logsnr)

    def timestep(self, logsnr: jax.Array) -> jax.Array:
        """The discrete timestep (int32) queried for ``logsnr``."""
        return self.schedule.nearest_timestep(logsnr)


@dataclasses.dataclass(frozen=True, eq=False)  # identity equality: it holds arrays
class Pipeline:
    """A loaded text-to-image diffusion pipeline. ``vae`` is None for a pixel-space model."""

    name: str  # the path or hub id it was loaded from
    path: Path
    fingerprint: str  # jaxpid.sd.weights.fingerprint of the folder and variant
    dtype: Dtype  # compute dtype of all modules
    unet: BoundModel
    text_encoder: BoundModel
    vae: BoundModel | None
    tokenizer: PromptTokenizer
    schedule: NoiseSchedule | FlowMatchSchedule  # FlowMatchSchedule for SD3
    param_dtype: Dtype = jnp.float32  # dtype the parameters are stored in
    attention: str = "auto"  # attention implementation setting (jaxpid.sd.models.layers)
    variant: str | None = None  # weights variant loaded, e.g. "fp16"
    sdxl: SDXLText | None = None  # SDXL only: second encoder, unconditional rule, size conditioning
    # SD3 only: CLIP-G and T5 with their tokenizers; ``unet`` then holds the MMDiT transformer
    sd3: sd3.SD3Text | None = None

    @property
    def family(self) -> str:
        """``"sd"`` (SD 1.x / 2.x: one text encoder), ``"sdxl"`` (SDXL base) or ``"sd3"`` (SD3 / 3.5)."""
        if self.sd3 is not None:
            return "sd3"
        return "sd" if self.sdxl is None else "sdxl"

    def identity(self) -> dict:
        """What decides this model's numbers (recorded with every result; keys sweep fingerprints)."""
        extra = None if self.sdxl is None else sdxl.identity_fields(self.sdxl.unconditional, self.sdxl.size)
        if self.sd3 is not None:
            extra = sd3.identity_fields(self.sd3.text_encoder_3 is not None, self.sd3.max_sequence_length,
                                        self.sd3.t5_dtype)
        return model_identity(self.name, self.fingerprint, variant=self.variant, dtype=self.dtype,
                              param_dtype=self.param_dtype, attention=self.attention,
                              prediction_type=self.schedule.prediction_type, latent_shape=self.latent_shape,
                              extra=extra)

    def with_size_conditioning(
        self,
        original_size: tuple[int, int] | None = None,
        crop_top_left: tuple[int, int] = (0, 0),
        target_size: tuple[int, int] | None = None,
    ) -> Pipeline:
        """SDXL: this pipeline with other size / crop time ids (pixels; sizes default to ``image_size``).

        Raises:
          ConfigError: not an SDXL pipeline, or sizes that are not pairs of integers.
        """
        if self.sdxl is None:
            raise ConfigError(f"{self.name}: size conditioning (time ids) exists for SDXL pipelines only")
        size = SizeConditioning(original_size or self.image_size, crop_top_left, target_size or self.image_size)
        return dataclasses.replace(self, sdxl=dataclasses.replace(self.sdxl, size=size))

    # ------------------------------------------------------------------ prompts

    def encode_prompt(self, prompts: Sequence[str]) -> jax.Array | SDXLConditioning:
        """Prompts -> what the UNet is conditioned on, one entry per prompt along axis 0.

        SD 1.x / 2.x: (B, max_length, D) float32, CLIP's final-layer-normed last hidden state, as
        diffusers' ``StableDiffusionPipeline.encode_prompt``: padded to the tokenizer's max
        length with the folder's pad token; the padding mask goes to the encoder only when its
        config sets ``use_attention_mask``.

        SDXL: an ``SDXLConditioning`` pytree (hidden (B, 77, D1 + D2), pooled (B, P), time_ids
        (B, 6)), as ``StableDiffusionXLPipeline.encode_prompt``; the empty prompt is SDXL's
        unconditional conditioning (zeros under ``force_zeros_for_empty_prompt``; see
        :mod:`jaxpid.sd.sdxl`).

        SD3: an ``SD3Conditioning`` (hidden (B, 77 + 256, D), pooled (B, P1 + P2)), as
        ``StableDiffusion3Pipeline.encode_prompt``; "" is encoded as any prompt (SD3's negative).

        Over-long prompts raise ``PromptError``.
        """
        if self.sdxl is not None:
            return sdxl.encode_prompt(self.text_encoder, self.tokenizer, self.sdxl, prompts)
        if self.sd3 is not None:
            return sd3.encode_prompt(self.text_encoder, self.tokenizer, self.sd3, prompts)
        ids = jnp.asarray(self.tokenizer.encode(prompts))
        mask = None
        if self.text_encoder.module.config.use_attention_mask:
            mask = jnp.asarray(self.tokenizer.padding_mask(prompts), jnp.int32)
        return _apply_text_encoder(self.text_encoder, ids, mask)

    # ------------------------------------------------------------------ denoiser

    @property
    def denoiser(self) -> DiscreteTimeDenoiser | FlowDenoiser:
        if self.sd3 is not None:
            return sd3.denoiser(self.unet, self.schedule, self.tokenizer.max_length)
        return DiscreteTimeDenoiser(params=self.unet.params, unet=self.unet.module, schedule=self.schedule)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the UNet's input at its configured sample size."""
        config = self.unet.module.config
        return (config.in_channels, config.sample_size, config.sample_size)

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent position along each side (1 without a VAE)."""
        return 1 if self.vae is None else self.vae.module.config.downsample_factor

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) in pixels of the images the model generates and encodes."""
        _, height, width = self.latent_shape
        return height * self.vae_scale_factor, width * self.vae_scale_factor

    # ------------------------------------------------------------------ images

    def encode_images(self, images: np.ndarray | jax.Array) -> jax.Array:
        """Images -> latents (B, C, h, w) float32, as the model was trained on them.

        Args:
          images: (B, H, W, 3) or (H, W, 3); uint8 in [0, 255] or float in [0, 1]. Any size:
            centre-cropped to the model's aspect ratio, then resized (antialiased linear).

        With a VAE: its posterior mean, shifted and scaled by the config's factors. Without
        one: the pixels in [-1, 1], NCHW.
        """
        return self.encode_pixels(self.preprocess_images(images))

    def encode_pixels(self, pixels: jax.Array) -> jax.Array:
        """Preprocessed pixels (B, 3, H, W) in [-1, 1] at ``image_size`` (``preprocess_images``) ->
        latents (B, C, h, w) float32: images of different sizes are preprocessed one by one, then
        encoded together."""
        pixels = jnp.asarray(pixels, jnp.float32)
        if pixels.ndim != 4 or pixels.shape[1] != 3 or tuple(pixels.shape[2:]) != self.image_size:
            raise ShapeError(f"pixels: expected (B, 3, {self.image_size[0]}, {self.image_size[1]}), got {pixels.shape}")
        if self.vae is None:
            return pixels
        return _encode_latents(self.vae, pixels)

    def preprocess_images(self, images: np.ndarray | jax.Array) -> jax.Array:
        """Images (see ``encode_images``) -> (B, 3, H, W) float32 in [-1, 1] at ``image_size``."""
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ShapeError(f"images: expected (B, H, W, 3) or (H, W, 3), got {images.shape}")
        scale = 255.0 if images.dtype == np.uint8 else 1.0
        pixels = jnp.asarray(images, jnp.float32) / scale
        pixels = _center_crop_resize(pixels, self.image_size)
        return jnp.transpose(2.0 * pixels - 1.0, (0, 3, 1, 2))

    def decode_latents(self, latents: jax.Array) -> np.ndarray:
        """Latents (B, C, h, w) -> uint8 images (B, H, W, 3), as diffusers post-processes them."""
        latents = jnp.asarray(latents, jnp.float32)
        if latents.ndim != 4 or latents.shape[1] != self.latent_shape[0]:
            raise ShapeError(f"latents: expected (B, {self.latent_shape[0]}, h, w), got {latents.shape}")
        pixels = latents if self.vae is None else _decode_latents(self.vae, latents)
        images = jnp.clip(pixels / 2 + 0.5, 0.0, 1.0)
        images = np.asarray(jnp.transpose(images, (0, 2, 3, 1)))
        return np.round(images * 255).astype(np.uint8)


# ---------------------------------------------------------------------- jitted module calls
# Module-level jits taking BoundModel pytrees: parameters are traced arguments, modules static.


@jax.jit
def _apply_text_encoder(text_encoder: BoundModel, ids: jax.Array, mask: jax.Array | None) -> jax.Array:
    return text_encoder.apply(ids, mask).astype(jnp.float32)


@jax.jit
def _encode_latents(autoencoder: BoundModel, pixels: jax.Array) -> jax.Array:
    mean, _ = autoencoder.apply(pixels, method="encode")
    config = autoencoder.module.config
    return (mean - (config.shift_factor or 0.0)) * config.scaling_factor


@jax.jit
def _decode_latents(autoencoder: BoundModel, latents: jax.Array) -> jax.Array:
    config = autoencoder.module.config
    return autoencoder.apply(latents / config.scaling_factor + (config.shift_factor or 0.0), method="decode")


def center_crop_box(height: int, width: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, crop height, crop width) of the centre crop of a height x width image to the
    aspect ratio of ``size`` (H, W): the part of an image the model sees (``preprocess_images``);
    masks and maps of that image are cropped with the same box."""
    target_h, target_w = size
    if height * target_w > width * target_h:  # too tall
        crop = round(width * target_h / target_w)
        return (height - crop) // 2, 0, crop, width
    if height * target_w < width * target_h:  # too wide
        crop = round(height * target_w / target_h)
        return 0, (width - crop) // 2, height, crop
    return 0, 0, height, width


def _center_crop_resize(images: jax.Array, size: tuple[int, int]) -> jax.Array:
    """(B, H, W, 3) -> (B, size[0], size[1], 3): crop the centre to the target aspect, resize."""
    _, height, width, _ = images.shape
    target_h, target_w = size
    top, left, crop_h, crop_w = center_crop_box(height, width, size)
    images = images[:, top:top + crop_h, left:left + crop_w]
    if images.shape[1:3] == (target_h, target_w):
        return images
    return jax.image.resize(images, (images.shape[0], target_h, target_w, 3), method="linear", antialias=True)


def load_image(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB.

    Raises:
      ImageReadError: the file is missing or not a readable image.
    """
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise ImageReadError(f"{path}: cannot read as an image ({error})") from error


# ---------------------------------------------------------------------- loading


def load_pipeline(
    path_or_hub_id: str | Path,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    attention: str = "auto",
    variant: str | None = None,
    time_ids: Sequence[int] | None = None,
    t5: bool = True,
    max_sequence_length: int = sd3.MAX_SEQUENCE_LENGTH,
) -> Pipeline:
    """Load a diffusers Stable Diffusion (1.x, 2.x, XL base or 3 / 3.5) pipeline folder (or hub id) into Flax.

    Args:
      path_or_hub_id: a local pipeline folder, ``"org/name"`` on the Hugging Face hub, or
        ``"demo"`` (the small demo model shipped with jaxpid).
      dtype: compute dtype of every module (float32, bfloat16, float16).
      param_dtype: dtype the parameters are stored in.
      attention: ``"auto"``, ``"xla"`` or ``"cudnn"`` (see ``layers.attention_implementation``).
      variant: weight file variant such as ``"fp16"``.
      time_ids: SDXL only: the 6 size / crop time ids (default: diffusers' for the model's image
        size; see ``Pipeline.with_size_conditioning``).
      t5: SD3 only: False leaves ``text_encoder_3`` unread and feeds zeros in its place, as
        diffusers does with ``text_encoder_3=None`` (docs/sd3.md#dropping-t5).
      max_sequence_length: SD3 only: T5's token count (diffusers' default 256, at most 512).

    SDXL's VAE computes in float32 whatever ``dtype`` is (it overflows in float16).

    Raises:
      ModelNotFoundError, NotAPipelineError, ConfigError: the folder, its index or a config
        (an SDXL folder missing text_encoder_2, mismatched pooled-projection or hidden sizes, an
        unsupported addition embedding or a refiner-only folder among them).
      WeightsError, PickleRefusedError, MissingShardError, WeightsMismatchError: the weights.
    """
    if attention not in ATTENTION_SETTINGS:
        raise ConfigError(f"attention={attention!r}: expected one of {ATTENTION_SETTINGS}")
    folder = resolve_model_path(path_or_hub_id, variant=variant)
    index = read_model_index(folder)
    family = pipeline_family(folder, index)
    size = _given_size(path_or_hub_id, family, time_ids)
    sd3.check_text_options(path_or_hub_id, family, t5, max_sequence_length)
    if family == "sd3":
        return _load_sd3(path_or_hub_id, folder, index, dtype, param_dtype, attention, variant,
                         dict(use_t5=t5, max_sequence_length=max_sequence_length))
    force_zeros = sdxl.force_zeros(index) if family == "sdxl" else False
    schedule = NoiseSchedule.from_folder(folder / "scheduler")
    unet_config = unet.UNetConfig.from_dict(read_json_config(folder / "unet"))
    text_config = clip.CLIPTextConfig.from_dict(read_json_config(folder / "text_encoder"))
    if family == "sdxl":
        text_config_2 = clip.CLIPTextConfig.from_dict(read_json_config(folder / "text_encoder_2"))
        sdxl.check_compatible(folder, text_config, text_config_2, unet_config)  # before any weights are read

    text_module = clip.CLIPTextModel(text_config, dtype=dtype, param_dtype=param_dtype, attention=attention)
    text_encoder = _load_component(
        folder / "text_encoder", text_module, clip.expected_params(text_config), clip.clip_rename, variant, param_dtype
    )
    tokenizer = load_tokenizer(folder / "tokenizer", model_max_positions=text_config.max_position_embeddings)
    second = None
    if family == "sdxl":
        second = _load_second_encoder(folder, text_config_2, tokenizer, dtype, param_dtype, attention, variant)
    unet_module = unet.UNet2DConditionModel(unet_config, dtype=dtype, param_dtype=param_dtype, attention=attention)
    unet_bound = _load_component(
        folder / "unet", unet_module, unet.expected_params(unet_config), None, variant, param_dtype
    )

    autoencoder = None
    if has_component(index, "vae"):
        vae_config = vae.VAEConfig.from_dict(read_json_config(folder / "vae"))
        vae_dtype = jnp.float32 if family == "sdxl" else dtype
        vae_module = vae.AutoencoderKL(vae_config, dtype=vae_dtype, param_dtype=param_dtype, attention=attention)
        autoencoder = _load_component(
            folder / "vae", vae_module, vae.expected_params(vae_config), vae.vae_rename, variant, param_dtype
        )

    vae_config = None if autoencoder is None else autoencoder.module.config
    _check_compatible(folder, None if family == "sdxl" else text_config, unet_config, vae_config)
    sdxl_text = None
    if second is not None:
        size = size or _default_size(unet_config, vae_config)
        sdxl_text = SDXLText(*second, force_zeros=force_zeros, size=size)
    return Pipeline(
        name=str(path_or_hub_id),
        path=folder,
        fingerprint=fingerprint(folder, variant),
        dtype=dtype,
        unet=unet_bound,
        text_encoder=text_encoder,
        vae=autoencoder,
        tokenizer=tokenizer,
        schedule=schedule,
        param_dtype=param_dtype,
        attention=attention,
        variant=variant,
        sdxl=sdxl_text,
    )


def _load_sd3(name: Any, folder: Path, index: dict, dtype: Dtype, param_dtype: Dtype, attention: str,
              variant: str | None, text: dict) -> Pipeline:
    """A StableDiffusion3Pipeline folder: its parts are read by :mod:`jaxpid.sd.sd3`, bound here."""
    parts = sd3.load_parts(folder, index, bind=lambda module, params: BoundModel(module=module, params=params),
                           dtype=dtype, param_dtype=param_dtype, attention=attention, variant=variant, **text)
    return Pipeline(name=str(name), path=folder, fingerprint=fingerprint(folder, variant), dtype=dtype,
                    unet=parts.transformer, text_encoder=parts.text_encoder, vae=parts.vae, tokenizer=parts.tokenizer,
                    schedule=parts.schedule, param_dtype=param_dtype, attention=attention, variant=variant,
                    sd3=parts.text)


def _given_size(name: Any, family: str, time_ids: Sequence[int] | None) -> SizeConditioning | None:
    if time_ids is None:
        return None
    if family != "sdxl":
        raise ConfigError(f"{name}: time_ids are SDXL's size conditioning; this is not an SDXL folder")
    return SizeConditioning.from_time_ids(time_ids)


def _default_size(unet_config: unet.UNetConfig, vae_config: vae.VAEConfig | None) -> SizeConditioning:
    """diffusers' time ids when no size is given: original = target = the generated image size
    (the UNet's sample size x the VAE scale factor), crop (0, 0)."""
    side = unet_config.sample_size * (1 if vae_config is None else vae_config.downsample_factor)
    return SizeConditioning((side, side))


def _load_second_encoder(folder: Path, config: clip.CLIPTextConfig, tokenizer: PromptTokenizer, dtype: Dtype,
                         param_dtype: Dtype, attention: str, variant: str | None) -> tuple[BoundModel, PromptTokenizer]:
    """SDXL's text_encoder_2 (with its projection head) and tokenizer_2."""
    module = clip.CLIPTextModel(config, dtype=dtype, param_dtype=param_dtype, attention=attention, with_projection=True)
    encoder = _load_component(folder / "text_encoder_2", module, clip.expected_params(config, with_projection=True),
                              clip.clip_rename, variant, param_dtype)
    tokenizer_2 = load_tokenizer(folder / "tokenizer_2", model_max_positions=config.max_position_embeddings)
    if tokenizer_2.max_length != tokenizer.max_length:
        raise ConfigError(f"{folder}: tokenizer pads to {tokenizer.max_length} tokens but tokenizer_2 to "
                          f"{tokenizer_2.max_length}; SDXL concatenates both encoders' hidden states per token")
    return encoder, tokenizer_2


DTYPES = {"fp32": jnp.float32, "bf16": jnp.bfloat16, "fp16": jnp.float16}


def dtype_setting(dtype: Any) -> str:
    """'fp32' / 'bf16' / 'fp16' for a dtype or its name (as identities and the CLI name them)."""
    if isinstance(dtype, str) and dtype in DTYPES:
        return dtype
    try:
        name = jnp.dtype(dtype).name
    except TypeError:
        raise ConfigError(f"dtype must be one of {sorted(DTYPES)} (or a JAX dtype), got {dtype!r}") from None
    for setting, known in DTYPES.items():
        if jnp.dtype(known).name == name:
            return setting
    raise ConfigError(f"dtype {name} is not supported; use one of {sorted(DTYPES)}")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model named as the CLI names it, loadable in any process (sweep workers, reruns).

    ``name`` is "demo" (the shipped demo model), a local diffusers folder or a hub id.
    """

    name: str = "demo"
    dtype: str = "fp32"  # compute dtype: "fp32", "bf16" or "fp16"
    param_dtype: str = "fp32"  # dtype the parameters are stored in
    attention: str = "auto"  # "auto", "xla" or "cudnn"
    variant: str | None = None  # weights variant, e.g. "fp16"
    time_ids: tuple[int, ...] | None = None  # SDXL size conditioning; None: diffusers' default
    t5: bool = True  # SD3: False drops text_encoder_3 (zeros in its place, as diffusers without it)
    max_sequence_length: int = sd3.MAX_SEQUENCE_LENGTH  # SD3: T5's token count

    def __post_init__(self):
        object.__setattr__(self, "dtype", dtype_setting(self.dtype))
        object.__setattr__(self, "param_dtype", dtype_setting(self.param_dtype))
        if self.time_ids is not None:
            object.__setattr__(self, "time_ids", SizeConditioning.from_time_ids(self.time_ids).time_ids)
        if not isinstance(self.t5, bool):
            raise ConfigError(f"ModelSpec t5={self.t5!r}: expected True or False")
        sd3.check_max_sequence_length(self.max_sequence_length)

    def load(self) -> Pipeline:
        return load_pipeline(self.name, dtype=DTYPES[self.dtype], param_dtype=DTYPES[self.param_dtype],
                             attention=self.attention, variant=self.variant, time_ids=self.time_ids, t5=self.t5,
                             max_sequence_length=self.max_sequence_length)

    def identity(self) -> dict:
        """What ``self.load().identity()`` gives, from the folder's configs alone."""
        return folder_identity(self.name, variant=self.variant, dtype=DTYPES[self.dtype],
                               param_dtype=DTYPES[self.param_dtype], attention=self.attention, time_ids=self.time_ids,
                               t5=self.t5, max_sequence_length=self.max_sequence_length)

    @classmethod
    def from_identity(cls, identity: Mapping[str, Any]) -> ModelSpec:
        """The spec of a recorded model identity (``Pipeline.identity()``)."""
        time_ids = identity.get("time_ids")
        return cls(identity["name"], identity["dtype"], identity.get("param_dtype", "float32"),
                   identity.get("attention", "auto"), identity.get("variant"),
                   None if time_ids is None else tuple(time_ids), t5=identity.get("text_encoder_3", True),
                   max_sequence_length=identity.get("max_sequence_length", sd3.MAX_SEQUENCE_LENGTH))


def model_identity(
    name: str,
    fingerprint: str,
    *,
    variant: str | None,
    dtype: Dtype,
    param_dtype: Dtype,
    attention: str,
    prediction_type: str,
    latent_shape: Sequence[int],
    extra: Mapping[str, Any] | None = None,
) -> dict:
    """The model's identity record: name, content fingerprint and every setting of its numerics.

    ``extra``: what a family adds (SDXL: ``sdxl.identity_fields``); SD 1.x / 2.x records add
    nothing, so their identities and sweep fingerprints are those of earlier versions.
    """
    return {
        "name": str(name),
        "fingerprint": fingerprint,
        "variant": variant,
        "dtype": jnp.dtype(dtype).name,
        "param_dtype": jnp.dtype(param_dtype).name,
        "attention": attention,
        "prediction_type": prediction_type,
        "latent_shape": [int(d) for d in latent_shape],
        **(extra or {}),
    }


def folder_identity(
    path_or_hub_id: str | Path,
    *,
    variant: str | None = None,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    attention: str = "auto",
    time_ids: Sequence[int] | None = None,
    t5: bool = True,
    max_sequence_length: int = sd3.MAX_SEQUENCE_LENGTH,
) -> dict:
    """``Pipeline.identity()`` of a folder, from its configs alone (no weights are loaded)."""
    folder = resolve_model_path(path_or_hub_id, variant=variant)
    index = read_model_index(folder)
    family = pipeline_family(folder, index)
    size = _given_size(path_or_hub_id, family, time_ids)
    sd3.check_text_options(path_or_hub_id, family, t5, max_sequence_length)
    if family == "sd3":
        return model_identity(str(path_or_hub_id), fingerprint(folder, variant), variant=variant, dtype=dtype,
                              param_dtype=param_dtype, attention=attention,
                              prediction_type=FlowMatchSchedule.from_folder(folder / "scheduler").prediction_type,
                              latent_shape=sd3.latent_shape(folder),
                              extra=sd3.folder_identity_fields(index, dtype, t5, max_sequence_length))
    unet_config = unet.UNetConfig.from_dict(read_json_config(folder / "unet"))
    schedule = NoiseSchedule.from_folder(folder / "scheduler")
    extra = None
    if family == "sdxl":
        vae_config = vae.VAEConfig.from_dict(read_json_config(folder / "vae")) if has_component(index, "vae") else None
        rule = sdxl.unconditional_rule(sdxl.force_zeros(index))
        extra = sdxl.identity_fields(rule, size or _default_size(unet_config, vae_config))
    return model_identity(str(path_or_hub_id), fingerprint(folder, variant), variant=variant, dtype=dtype,
                          param_dtype=param_dtype, attention=attention, prediction_type=schedule.prediction_type,
                          latent_shape=(unet_config.in_channels, unet_config.sample_size, unet_config.sample_size),
                          extra=extra)


def folder_schedule(path_or_hub_id: str | Path, variant: str | None = None) -> NoiseSchedule | FlowMatchSchedule:
    """A folder's noise schedule from its scheduler config alone: SD3's flow schedule, or a beta schedule."""
    scheduler = resolve_model_path(path_or_hub_id, variant=variant) / "scheduler"
    if read_json_config(scheduler, "scheduler_config.json").get("_class_name") in FLOW_SCHEDULERS:
        return FlowMatchSchedule.from_folder(scheduler)
    return NoiseSchedule.from_folder(scheduler)


def _load_component(
    folder: Path,
    module: nn.Module,
    expected: Mapping[str, Any],
    rename: Callable[[str], str | None] | None,
    variant: str | None,
    param_dtype: Dtype,
) -> BoundModel:
    state = load_component_weights(folder, variant)
    tree = convert_state_dict(state, expected, what=folder.name, rename=rename)
    del state
    params = jax.tree.map(lambda array: jnp.asarray(array, dtype=param_dtype), tree)
    return BoundModel(module=module, params=params)


def _check_compatible(folder: Path, text_config, unet_config, vae_config) -> None:
    dims = unet_config.cross_attention_dim
    context_dims = set(dims) if isinstance(dims, (tuple, list)) else {dims}
    if text_config is not None and context_dims != {text_config.hidden_size}:  # None: SDXL, checked before
        raise ConfigError(
            f"{folder}: text_encoder hidden_size {text_config.hidden_size} does not match the unet's "
            f"cross_attention_dim {sorted(context_dims)}"
        )
    if vae_config is not None and vae_config.latent_channels != unet_config.in_channels:
        raise ConfigError(
            f"{folder}: vae latent_channels {vae_config.latent_channels} does not match the unet's "
            f"in_channels {unet_config.in_channels}"
        )
    if vae_config is None and unet_config.in_channels != 3:
        raise ConfigError(
            f"{folder}: without a vae the unet works on RGB pixels, but its in_channels is "
            f"{unet_config.in_channels}"
        )
