"""A Stable Diffusion pipeline folder as JAX functions: prompts -> conditionings, a denoiser, VAE.

``load_pipeline`` reads a diffusers pipeline folder (or hub id): each component's config and
safetensors weights, converted strictly onto the Flax modules. The ``Pipeline`` it returns
offers what the estimator and the sampler need:

- ``encode_prompt``: prompts -> (B, 77, D) text conditionings, as diffusers feeds the UNet;
- ``denoiser``: a pytree-registered ε̂(z, α, cond), mapping log-SNR α to the model's nearest
  discrete timestep, with ``snap_logsnr`` so the caller builds z with that step's ᾱ;
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
from jaxpid.sd.models import clip, unet, vae
from jaxpid.sd.models.convert import convert_state_dict
from jaxpid.sd.models.layers import ATTENTION_SETTINGS
from jaxpid.sd.schedule import NoiseSchedule, prediction_to_epsilon
from jaxpid.sd.tokenizer import PromptTokenizer, load_tokenizer
from jaxpid.sd.weights import (
    fingerprint,
    has_component,
    load_component_weights,
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
        return self.module.apply({"params": self.params}, *args, method=method, **kwargs)


@flax.struct.dataclass
class DiscreteTimeDenoiser:
    """ε̂(z, α, cond) of a discrete-time UNet; a pytree whose leaves are the UNet parameters.

    Pass it to jitted functions as an argument (never close over it): the parameters are then
    traced, and the module and schedule -- static, hashable fields -- key the compilation.
    """

    params: Any  # the UNet's params pytree
    unet: nn.Module = flax.struct.field(pytree_node=False)
    schedule: NoiseSchedule = flax.struct.field(pytree_node=False)

    def __call__(self, z: jax.Array, logsnr: jax.Array, cond: jax.Array) -> jax.Array:
        """z (B,C,H,W), log-SNR (B,) or scalar, cond (B,L,D) -> ε̂ (B,C,H,W) float32.

        The model runs at the timestep t nearest to α and its output is converted to ε with
        α_t = logit(ᾱ_t), the log-SNR z should have been built with (see ``snap_logsnr``).
        """
        z = jnp.asarray(z, jnp.float32)
        logsnr = jnp.broadcast_to(jnp.asarray(logsnr, jnp.float32), z.shape[:1])
        timesteps = self.schedule.nearest_timestep(logsnr)
        prediction = self.unet.apply({"params": self.params}, z, timesteps, cond).astype(jnp.float32)
        logsnr_t = self.schedule.timestep_logsnr(timesteps)[:, None, None, None]
        return prediction_to_epsilon(prediction, z, logsnr_t, self.schedule.prediction_type)

    def with_aux(self, z: jax.Array, logsnr: jax.Array, cond: jax.Array) -> tuple[jax.Array, jax.Array]:
        """ε̂ as ``__call__``, and the UNet's cross-attention maps (B, L, H, W) float32 at this
        (z, timestep): per token, the probabilities averaged over heads, upsampled to the latent
        grid and summed over layers (``unet.attention_maps``). ``FusedPass(collect_aux=True)``
        averages them over an image's sampled log-SNRs inside the fused pass."""
        z = jnp.asarray(z, jnp.float32)
        logsnr = jnp.broadcast_to(jnp.asarray(logsnr, jnp.float32), z.shape[:1])
        timesteps = self.schedule.nearest_timestep(logsnr)
        prediction, maps = unet.apply_capturing_attention(self.unet, self.params, z, timesteps, cond)
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
    schedule: NoiseSchedule
    param_dtype: Dtype = jnp.float32  # dtype the parameters are stored in
    attention: str = "auto"  # attention implementation setting (jaxpid.sd.models.layers)
    variant: str | None = None  # weights variant loaded, e.g. "fp16"

    def identity(self) -> dict:
        """What decides this model's numbers (recorded with every result; keys sweep fingerprints)."""
        return model_identity(self.name, self.fingerprint, variant=self.variant, dtype=self.dtype,
                              param_dtype=self.param_dtype, attention=self.attention,
                              prediction_type=self.schedule.prediction_type, latent_shape=self.latent_shape)

    # ------------------------------------------------------------------ prompts

    def encode_prompt(self, prompts: Sequence[str]) -> jax.Array:
        """Prompts -> (B, max_length, D) float32: CLIP's final-layer-normed last hidden state.

        As diffusers' ``StableDiffusionPipeline.encode_prompt``: padded to the tokenizer's max
        length with the folder's pad token; the padding mask goes to the encoder only when its
        config sets ``use_attention_mask``. Over-long prompts raise ``PromptError``.
        """
        ids = jnp.asarray(self.tokenizer.encode(prompts))
        mask = None
        if self.text_encoder.module.config.use_attention_mask:
            mask = jnp.asarray(self.tokenizer.padding_mask(prompts), jnp.int32)
        return _apply_text_encoder(self.text_encoder, ids, mask)

    # ------------------------------------------------------------------ denoiser

    @property
    def denoiser(self) -> DiscreteTimeDenoiser:
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
) -> Pipeline:
    """Load a diffusers Stable Diffusion pipeline folder (or hub id) into Flax.

    Args:
      path_or_hub_id: a local pipeline folder, ``"org/name"`` on the Hugging Face hub, or
        ``"demo"`` (the small demo model shipped with jaxpid).
      dtype: compute dtype of every module (float32, bfloat16, float16).
      param_dtype: dtype the parameters are stored in.
      attention: ``"auto"``, ``"xla"`` or ``"cudnn"`` (see ``layers.attention_implementation``).
      variant: weight file variant such as ``"fp16"``.

    Raises:
      ModelNotFoundError, NotAPipelineError, ConfigError: the folder, its index or a config.
      WeightsError, PickleRefusedError, MissingShardError, WeightsMismatchError: the weights.
    """
    if attention not in ATTENTION_SETTINGS:
        raise ConfigError(f"attention={attention!r}: expected one of {ATTENTION_SETTINGS}")
    folder = resolve_model_path(path_or_hub_id, variant=variant)
    index = read_model_index(folder)
    schedule = NoiseSchedule.from_folder(folder / "scheduler")

    text_config = clip.CLIPTextConfig.from_dict(read_json_config(folder / "text_encoder"))
    text_module = clip.CLIPTextModel(text_config, dtype=dtype, param_dtype=param_dtype, attention=attention)
    text_encoder = _load_component(
        folder / "text_encoder", text_module, clip.expected_params(text_config), clip.clip_rename, variant, param_dtype
    )
    tokenizer = load_tokenizer(folder / "tokenizer", model_max_positions=text_config.max_position_embeddings)

    unet_config = unet.UNetConfig.from_dict(read_json_config(folder / "unet"))
    unet_module = unet.UNet2DConditionModel(unet_config, dtype=dtype, param_dtype=param_dtype, attention=attention)
    unet_bound = _load_component(
        folder / "unet", unet_module, unet.expected_params(unet_config), None, variant, param_dtype
    )

    autoencoder = None
    if has_component(index, "vae"):
        vae_config = vae.VAEConfig.from_dict(read_json_config(folder / "vae"))
        vae_module = vae.AutoencoderKL(vae_config, dtype=dtype, param_dtype=param_dtype, attention=attention)
        autoencoder = _load_component(
            folder / "vae", vae_module, vae.expected_params(vae_config), vae.vae_rename, variant, param_dtype
        )

    _check_compatible(folder, text_config, unet_config, None if autoencoder is None else autoencoder.module.config)
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
    )


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

    def __post_init__(self):
        object.__setattr__(self, "dtype", dtype_setting(self.dtype))
        object.__setattr__(self, "param_dtype", dtype_setting(self.param_dtype))

    def load(self) -> Pipeline:
        return load_pipeline(self.name, dtype=DTYPES[self.dtype], param_dtype=DTYPES[self.param_dtype],
                             attention=self.attention, variant=self.variant)

    def identity(self) -> dict:
        """What ``self.load().identity()`` gives, from the folder's configs alone."""
        return folder_identity(self.name, variant=self.variant, dtype=DTYPES[self.dtype],
                               param_dtype=DTYPES[self.param_dtype], attention=self.attention)

    @classmethod
    def from_identity(cls, identity: Mapping[str, Any]) -> ModelSpec:
        """The spec of a recorded model identity (``Pipeline.identity()``)."""
        return cls(identity["name"], identity["dtype"], identity.get("param_dtype", "float32"),
                   identity.get("attention", "auto"), identity.get("variant"))


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
) -> dict:
    """The model's identity record: name, content fingerprint and every setting of its numerics."""
    return {
        "name": str(name),
        "fingerprint": fingerprint,
        "variant": variant,
        "dtype": jnp.dtype(dtype).name,
        "param_dtype": jnp.dtype(param_dtype).name,
        "attention": attention,
        "prediction_type": prediction_type,
        "latent_shape": [int(d) for d in latent_shape],
    }


def folder_identity(
    path_or_hub_id: str | Path,
    *,
    variant: str | None = None,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    attention: str = "auto",
) -> dict:
    """``Pipeline.identity()`` of a folder, from its configs alone (no weights are loaded)."""
    folder = resolve_model_path(path_or_hub_id, variant=variant)
    read_model_index(folder)
    unet_config = unet.UNetConfig.from_dict(read_json_config(folder / "unet"))
    schedule = NoiseSchedule.from_folder(folder / "scheduler")
    return model_identity(str(path_or_hub_id), fingerprint(folder, variant), variant=variant, dtype=dtype,
                          param_dtype=param_dtype, attention=attention, prediction_type=schedule.prediction_type,
                          latent_shape=(unet_config.in_channels, unet_config.sample_size, unet_config.sample_size))


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
    if context_dims != {text_config.hidden_size}:
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
