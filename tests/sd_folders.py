"""Tiny Stable Diffusion pipeline folders for tests, in the diffusers on-disk format.

Two writers share the same configs:

- ``write_tiny_pipeline``: random PyTorch models (diffusers UNet / VAE, transformers CLIP text
  encoder) saved with ``save_pretrained(safe_serialization=True)`` -- the reference for parity.
- ``write_random_pipeline``: no torch. Random parameters shaped by jaxpid's own Flax modules,
  written as safetensors under PyTorch names by inverting the name rule, for end-to-end tests
  that must run without the torch extra.

Families: ``"sd1"`` (epsilon prediction, quick_gelu, conv projections, end-token padding),
``"sd2"`` (v-prediction, gelu, linear projections, per-block heads, "!" padding) and ``"sdxl"``
(SDXL base layout: text_encoder (quick_gelu, end-token padding) + text_encoder_2 with projection
(gelu, "!" padding, legacy eos_token_id 2 pooling), a UNet with the text_time addition embedding,
a first block without attention and per-block transformer depths; force_zeros_for_empty_prompt).
``FAMILIES`` lists the SD 1.x / 2.x ones that the StableDiffusionPipeline-based tests run over.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
from safetensors.numpy import save_file

from jaxpid.sd.tokenizer import write_test_tokenizer

FAMILIES = ("sd1", "sd2")
SDXL = "sdxl"
TEXT_DIM_2 = 48  # text_encoder_2 width: the UNet's context is TEXT_DIM + TEXT_DIM_2 wide
POOLED_DIM = 24  # text_encoder_2 projection_dim
TIME_ID_DIM = 8  # addition_time_embed_dim
WORDS = ("a", "photo", "of", "cat", "dog", "red", "blue", "car", "man", "woman", "doctor", "on", "the", "beach")
TEXT_DIM = 32
LATENT_SIZE = 8  # latent side; images are LATENT_SIZE * 2 pixels with the VAE


def unet_config(family: str = "sd1", in_channels: int = 4) -> dict:
    """A diffusers ``unet/config.json`` of a tiny SD-like UNet."""
    _check_family(family)
    if family == SDXL:
        return {
            "_class_name": "UNet2DConditionModel",
            "sample_size": LATENT_SIZE,
            "in_channels": in_channels,
            "out_channels": in_channels,
            "block_out_channels": [16, 32],
            "layers_per_block": 1,
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
            "transformer_layers_per_block": [1, 2],
            "cross_attention_dim": TEXT_DIM + TEXT_DIM_2,
            "attention_head_dim": [2, 4],
            "norm_num_groups": 8,
            "use_linear_projection": True,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": TIME_ID_DIM,
            "projection_class_embeddings_input_dim": POOLED_DIM + 6 * TIME_ID_DIM,
            "flip_sin_to_cos": True,
            "freq_shift": 0,
        }
    sd2 = family == "sd2"
    return {
        "_class_name": "UNet2DConditionModel",
        "sample_size": LATENT_SIZE,
        "in_channels": in_channels,
        "out_channels": in_channels,
        "block_out_channels": [16, 32],
        "layers_per_block": 1,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "cross_attention_dim": TEXT_DIM,
        "attention_head_dim": [2, 4] if sd2 else 2,
        "norm_num_groups": 8,
        "use_linear_projection": sd2,
        "upcast_attention": sd2,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
    }


def vae_config(family: str = "sd1") -> dict:
    """A diffusers ``vae/config.json`` of a tiny AutoencoderKL (2x downsampling)."""
    _check_family(family)
    return {
        "_class_name": "AutoencoderKL",
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": [8, 16],
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 4,
        "sample_size": 2 * LATENT_SIZE,
        "scaling_factor": 0.13025 if family == SDXL else 0.18215,
    }


def text_encoder_config(family: str, vocab_size: int, pad_id: int, bos_id: int, eos_id: int) -> dict:
    """A transformers ``text_encoder/config.json`` of a tiny CLIP text model."""
    _check_family(family)
    if family == SDXL:  # text_encoder: three layers, so the penultimate one SDXL uses is an inner one
        return {**text_encoder_config("sd1", vocab_size, pad_id, bos_id, eos_id), "num_hidden_layers": 3}
    return {
        "architectures": ["CLIPTextModel"],
        "model_type": "clip_text_model",
        "vocab_size": vocab_size,
        "hidden_size": TEXT_DIM,
        "intermediate_size": 37,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
        "hidden_act": "gelu" if family == "sd2" else "quick_gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": TEXT_DIM,
        "pad_token_id": pad_id,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
    }


def text_encoder_2_config(vocab_size: int, pad_id: int, bos_id: int) -> dict:
    """SDXL's ``text_encoder_2/config.json`` (CLIPTextModelWithProjection), tiny; pooling by the
    legacy eos_token_id 2 rule (largest id), as the published SDXL config."""
    return {
        "architectures": ["CLIPTextModelWithProjection"],
        "model_type": "clip_text_model",
        "vocab_size": vocab_size,
        "hidden_size": TEXT_DIM_2,
        "intermediate_size": 61,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
        "projection_dim": POOLED_DIM,
        "pad_token_id": pad_id,
        "bos_token_id": bos_id,
        "eos_token_id": 2,
    }


def scheduler_config(family: str = "sd1") -> dict:
    """A DDIM ``scheduler/scheduler_config.json`` with SD's betas; sd2 predicts v."""
    _check_family(family)
    return {
        "_class_name": "DDIMScheduler",
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "prediction_type": "v_prediction" if family == "sd2" else "epsilon",
        "timestep_spacing": "leading",
    }


def model_index(with_vae: bool = True, family: str = "sd1", force_zeros: bool = True) -> dict:
    if family == SDXL:
        return {
            "_class_name": "StableDiffusionXLPipeline",
            "_diffusers_version": "0.30.0",
            "force_zeros_for_empty_prompt": force_zeros,
            "feature_extractor": [None, None],
            "image_encoder": [None, None],
            "scheduler": ["diffusers", "DDIMScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "tokenizer_2": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"] if with_vae else [None, None],
        }
    return {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.30.0",
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"] if with_vae else [None, None],
    }


def _check_family(family: str) -> None:
    if family not in FAMILIES + (SDXL,):
        raise ValueError(f"family must be one of {FAMILIES + (SDXL,)}, got {family!r}")


def _write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2))


def _write_common(folder: Path, family: str, with_vae: bool, force_zeros: bool = True) -> dict:
    """Tokenizer(s), scheduler and model index; returns the text encoder config(s) by component."""
    pad_token = "!" if family == "sd2" else "<|endoftext|>"
    write_test_tokenizer(folder / "tokenizer", WORDS, pad_token)
    vocab = json.loads((folder / "tokenizer" / "vocab.json").read_text(encoding="utf-8"))
    pad_id = vocab[pad_token]
    _write_json(folder / "scheduler" / "scheduler_config.json", scheduler_config("sd1" if family == SDXL else family))
    _write_json(folder / "model_index.json", model_index(with_vae, family, force_zeros))
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    configs = {"text_encoder": text_encoder_config(family, len(vocab), pad_id, bos, eos)}
    if family == SDXL:  # SDXL's second tokenizer pads with "!", like SD 2.x's
        write_test_tokenizer(folder / "tokenizer_2", WORDS, "!")
        configs["text_encoder_2"] = text_encoder_2_config(len(vocab), vocab["!"], bos)
    return configs


def write_tiny_pipeline(
    folder: str | Path, family: str = "sd1", with_vae: bool = True, seed: int = 0, force_zeros: bool = True
) -> Path:
    """Write a tiny random diffusers pipeline folder from PyTorch models (needs torch).

    Biases and norm parameters get random values too, so a swapped scale/bias would show.
    Without a VAE the UNet works on 3-channel pixels and model_index lists ``vae: [null, null]``.
    ``force_zeros``: SDXL's ``force_zeros_for_empty_prompt``.
    """
    import diffusers
    import torch
    import transformers

    folder = Path(folder)
    text_configs = _write_common(folder, family, with_vae, force_zeros)
    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel.from_config(unet_config(family, 4 if with_vae else 3))
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(**text_configs["text_encoder"]))
    models = {"unet": unet, "text_encoder": text_encoder}
    if family == SDXL:
        config_2 = transformers.CLIPTextConfig(**text_configs["text_encoder_2"])
        models["text_encoder_2"] = transformers.CLIPTextModelWithProjection(config_2)
    if with_vae:
        models["vae"] = diffusers.AutoencoderKL.from_config(vae_config(family))
    with torch.no_grad():
        for model in models.values():
            for parameter in model.parameters():
                if parameter.ndim == 1:
                    parameter.add_(0.1 * torch.randn_like(parameter))
    for name, model in models.items():
        model.eval()
        model.save_pretrained(folder / name, safe_serialization=True)
    return folder


def write_random_pipeline(
    folder: str | Path,
    family: str = "sd1",
    seed: int = 0,
    with_vae: bool = True,
    legacy_names: bool = False,
    force_zeros: bool = True,
) -> Path:
    """Write a tiny random pipeline folder without torch, from the shapes of jaxpid's modules.

    Args:
      legacy_names: write the names of older checkpoints -- ``text_model.`` prefix and a
        ``position_ids`` buffer in the text encoder(s), ``query/key/value/proj_attn`` in the VAE.
      force_zeros: SDXL's ``force_zeros_for_empty_prompt``.
    """
    from jaxpid.sd.models import clip, unet, vae
    from jaxpid.sd.models.convert import flax_to_state_dict

    folder = Path(folder)
    text_dicts = _write_common(folder, family, with_vae, force_zeros)
    rng = np.random.default_rng(seed)
    unet_dict = unet_config(family, 4 if with_vae else 3)
    components = {"unet": (unet_dict, unet.expected_params(unet.UNetConfig.from_dict(unet_dict)))}
    for name, text_dict in text_dicts.items():
        config = clip.CLIPTextConfig.from_dict(text_dict)
        components[name] = (text_dict, clip.expected_params(config, with_projection=name == "text_encoder_2"))
    if with_vae:
        components["vae"] = (vae_config(family), vae.expected_params(vae.VAEConfig.from_dict(vae_config(family))))
    for name, (config, expected) in components.items():
        # Drawn from the shapes alone: compiling each model's init would cost far more time.
        params = _random_params(expected, rng)
        state = flax_to_state_dict(params)
        if legacy_names:
            state = _legacy_names(name, state)
        _write_json(folder / name / "config.json", config)
        weights = "model.safetensors" if name.startswith("text_encoder") else "diffusion_pytorch_model.safetensors"
        save_file(state, str(folder / name / weights))
    return folder


def _random_params(expected, rng: np.random.Generator):
    """float32 arrays shaped like ``expected``: fan-in scaled kernels, random biases and norms."""

    def draw(path, spec):
        leaf = path[-1].key
        shape = tuple(spec.shape)
        noise = rng.standard_normal(shape).astype(np.float32)
        if leaf == "kernel":
            return noise / np.sqrt(max(1, int(np.prod(shape[:-1]))))
        if leaf == "embedding":
            return noise / np.sqrt(shape[-1])
        if leaf == "scale":
            return 1.0 + 0.1 * noise
        return 0.1 * noise

    return jax.tree_util.tree_map_with_path(draw, expected)


def _legacy_names(component: str, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if component.startswith("text_encoder"):
        renamed = {name if name == "text_projection.weight" else f"text_model.{name}": value
                   for name, value in state.items()}
        renamed["text_model.embeddings.position_ids"] = np.arange(77, dtype=np.int64)[None]
        return renamed
    if component == "vae":
        old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
        renamed = {}
        for name, value in state.items():
            for new_part, old_part in old.items():
                if ".attentions." in name and f".{new_part}." in name:
                    name = name.replace(f".{new_part}.", f".{old_part}.")
            renamed[name] = value
        return renamed
    return state
