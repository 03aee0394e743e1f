"""The models the benchmarks run: tiny test configs, the shipped demo (or a random model of its
architecture until it exists) and the SD 2.1-base and SDXL-base architectures with random
weights, each with the inputs of one 2-source PID job (an image and its 4 subset conditionings:
an array, or for SDXL an ``SDXLConditioning`` pytree of hidden states, pooled embeddings and
size ids).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxpid
from jaxpid.bench.common import jaxpr_flops, xla_flops
from jaxpid.demo import DEMO_DIR
from jaxpid.demo import train as demo_train
from jaxpid.sd.models import unet
from jaxpid.sd.pipeline import DiscreteTimeDenoiser
from jaxpid.sd.prompts import subset_prompts
from jaxpid.sd.schedule import NoiseSchedule
from jaxpid.sd.sdxl import SDXLConditioning, apply_unet
from jaxpid.sd.weights import read_json_config

# Configs are diffusers unet/config.json dicts.

# A UNet small enough for smoke tests (compiles in seconds).
TINY_UNET = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": [16, 32],
    "layers_per_block": 1,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "cross_attention_dim": 32,
    "attention_head_dim": 2,
    "norm_num_groups": 8,
}

# One block each way: the smallest graph (fastest compile) with every layer kind, for tests.
MICRO_UNET = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": [16],
    "layers_per_block": 1,
    "down_block_types": ["CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D"],
    "cross_attention_dim": 16,
    "attention_head_dim": 2,
    "norm_num_groups": 8,
}

# The shipped demo model's architecture (jaxpid/demo/train.py: pixel space, 20x20, cross-attention
# below full resolution, 32-token text), used with random weights until jaxpid/data/demo exists.
DEMO_SIZED_UNET = {
    "sample_size": 20,
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": [16, 32, 64],
    "layers_per_block": 1,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "cross_attention_dim": 64,
    "attention_head_dim": 4,
    "norm_num_groups": 8,
}
DEMO_TEXT_LENGTH = 32


def _demo_sized_unet() -> tuple[dict, int]:
    """The demo's UNet config and text length, from its training script."""
    config = {k: v for k, v in demo_train.unet_config().items() if not k.startswith("_")}
    return config, getattr(demo_train, "MAX_LENGTH", DEMO_TEXT_LENGTH)


# stabilityai/stable-diffusion-2-1-base unet/config.json (architecture keys as published).
SD21_BASE_UNET = {
    "act_fn": "silu",
    "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "use_linear_projection": True,
}

# stabilityai/stable-diffusion-xl-base-1.0 unet/config.json (architecture keys as published).
SDXL_BASE_UNET = {
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "center_input_sample": False,
    "class_embed_type": None,
    "class_embeddings_concat": False,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "cross_attention_dim": 2048,
    "cross_attention_norm": None,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_only_cross_attention": None,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_attention_heads": None,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,
    "resnet_out_scale_factor": 1.0,
    "resnet_skip_time_act": False,
    "resnet_time_scale_shift": "default",
    "sample_size": 128,
    "time_cond_proj_dim": None,
    "time_embedding_act_fn": None,
    "time_embedding_dim": None,
    "time_embedding_type": "positional",
    "timestep_post_act": None,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "upcast_attention": None,
    "use_linear_projection": True,
}
SDXL_VAE_SCALE = 8  # pixels per latent side (SDXL's VAE), for the default size ids

# The smallest SDXL-style UNet (text_time embedding, a block without attention), for tests.
MICRO_SDXL_UNET = {
    **{k: v for k, v in MICRO_UNET.items() if k != "cross_attention_dim"},
    "block_out_channels": [16, 16],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "transformer_layers_per_block": [1, 2],
    "cross_attention_dim": 24,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 4,
    "projection_class_embeddings_input_dim": 8 + 6 * 4,
}

# Stable Diffusion's training schedule (scaled-linear betas); SD 2.x predicts v.
SD_SCHEDULE = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}

DEMO_FOLDER = DEMO_DIR  # the demo pipeline folder shipped inside the package
TEXT_LENGTH = 77


@dataclasses.dataclass(frozen=True, eq=False)
class BenchModel:
    """A denoiser with the inputs of one 2-source PID job.

    ``unet_config`` is the diffusers config dict (to build the PyTorch twin); ``denoiser`` is a
    ``jaxpid.sd.pipeline.DiscreteTimeDenoiser`` whose ``params`` are the weights both sides use.
    """

    name: str
    description: str
    denoiser: Any
    unet_config: dict
    x: np.ndarray  # (1, C, H, W) the image (latent) analysed
    conds: Any  # (4, 77, D) subset conditionings, bitmask order; SDXL: an SDXLConditioning of 4
    prompts: tuple[str, ...] | None  # the 4 subset prompts (demo), None for random embeddings
    source: dict  # where the weights come from: {"kind": "random", "seed": s} or {"kind": "folder", "path": p}

    @property
    def n_params(self) -> int:
        return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(self.denoiser.params))


def random_unet_params(unet_config: dict, seed: int = 0, dtype=jnp.float32) -> dict:
    """Random UNet parameters shaped by jaxpid's module: fan-in scaled kernels, perturbed norms.

    Drawn in numpy from the shapes alone (no compiled init), so even the SD 2.1 architecture
    takes seconds, not minutes.
    """
    expected = unet.expected_params(unet.UNetConfig.from_dict(unet_config))
    rng = np.random.default_rng(seed)

    def draw(path, spec):
        leaf, shape = path[-1].key, tuple(spec.shape)
        noise = rng.standard_normal(shape, dtype=np.float32)
        if leaf == "kernel":
            noise /= np.sqrt(max(1, math.prod(shape[:-1])))
        elif leaf == "scale":
            noise = 1.0 + 0.1 * noise
        else:
            noise *= 0.1
        return jnp.asarray(noise, dtype)

    return jax.tree_util.tree_map_with_path(draw, expected)


def make_denoiser(unet_config: dict, params: Any, *, dtype=jnp.float32, attention: str = "auto",
                  schedule: Any = None, prediction_type: str = "epsilon"):
    """A ``DiscreteTimeDenoiser`` over ``params`` computing in ``dtype``."""
    module = unet.UNet2DConditionModel(unet.UNetConfig.from_dict(unet_config), dtype=dtype, attention=attention)
    if schedule is None:
        schedule = NoiseSchedule(**SD_SCHEDULE, prediction_type=prediction_type)
    return DiscreteTimeDenoiser(params=params, unet=module, schedule=schedule)


def random_model(name: str, unet_config: dict, *, latent: int | None = None, dtype=jnp.float32,
                 attention: str = "auto", prediction_type: str = "epsilon", seed: int = 0,
                 text_length: int = TEXT_LENGTH) -> BenchModel:
    """A random-weight model at ``latent`` x ``latent`` with random text embeddings."""
    config = dict(unet_config)
    if latent is not None:
        config["sample_size"] = latent
    params = random_unet_params(config, seed)
    denoiser = make_denoiser(config, params, dtype=dtype, attention=attention, prediction_type=prediction_type)
    rng = np.random.default_rng(seed + 1)
    size, channels = config["sample_size"], config["in_channels"]
    x = rng.standard_normal((1, channels, size, size), dtype=np.float32)
    conds = rng.standard_normal((4, text_length, config["cross_attention_dim"]), dtype=np.float32)
    if config.get("addition_embed_type") == "text_time":  # SDXL: pooled text and diffusers' default size ids
        pooled_dim = unet.UNetConfig.from_dict(config).pooled_dim(unet.SDXL_TIME_IDS)
        pooled = rng.standard_normal((4, pooled_dim), dtype=np.float32)
        side = size * SDXL_VAE_SCALE
        time_ids = np.tile(np.array([side, side, 0, 0, side, side], np.float32), (4, 1))
        conds = SDXLConditioning(hidden=conds, pooled=pooled, time_ids=time_ids)
    n = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    return BenchModel(
        name=name,
        description=f"{name}: random weights, {n / 1e6:.2f} M parameters, {channels}x{size}x{size} input",
        denoiser=denoiser,
        unet_config=config,
        x=x,
        conds=conds,
        prompts=None,
        source={"kind": "random", "seed": seed},
    )


DEMO_PROMPT = ("a red circle and a blue square", ("circle", "square"))


def demo_model(folder: Path = DEMO_FOLDER, *, dtype=jnp.float32, attention: str = "auto",
               generate_steps: int = 20) -> BenchModel:
    """The shipped demo pipeline: a generated image of ``DEMO_PROMPT`` and its 4 subset prompts."""
    pipe = jaxpid.load_pipeline(folder, dtype=dtype, attention=attention)
    prompt, sources = DEMO_PROMPT
    subsets = subset_prompts(prompt, list(sources))
    conds = np.array(pipe.encode_prompt(list(subsets.prompts)), np.float32)  # writable copies (torch shares them)
    image = jaxpid.generate(pipe, [prompt], seeds=[0], steps=generate_steps)
    x = np.array(image.latents, np.float32)
    config = {k: v for k, v in read_json_config(folder / "unet").items() if not k.startswith("_")}
    n = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(pipe.unet.params))
    channels, size = x.shape[1], x.shape[-1]
    return BenchModel(
        name="demo",
        description=f"demo: shipped jaxpid/data/demo, {n / 1e6:.2f} M parameters, {channels}x{size}x{size} input, "
                    f"prompt {prompt!r}, sources {list(sources)}",
        denoiser=pipe.denoiser,
        unet_config=config,
        x=x,
        conds=conds,
        prompts=subsets.prompts,
        source={"kind": "folder", "path": str(folder)},
    )


LARGE_MODELS = ("sd21-base", "sdxl-base")  # published architectures: small latents on CPU, one timed run


def build_model(name: str, *, latent: int | None = None, dtype=jnp.float32, attention: str = "auto",
                seed: int = 0) -> BenchModel:
    """``micro`` / ``micro-sdxl`` (tests), ``tiny``, ``demo`` (the shipped model, or a random one of
    its size if not there yet), ``demo-sized``, ``sd21-base`` or ``sdxl-base`` (random weights,
    published architectures)."""
    if name == "demo":
        if (DEMO_FOLDER / "model_index.json").exists():
            return demo_model(dtype=dtype, attention=attention)
        name = "demo-sized"
    configs = {"micro": MICRO_UNET, "micro-sdxl": MICRO_SDXL_UNET, "tiny": TINY_UNET, "demo-sized": None,
               "sd21-base": SD21_BASE_UNET, "sdxl-base": SDXL_BASE_UNET}
    if name not in configs:
        raise ValueError(f"unknown model {name!r}; choose from demo, {', '.join(configs)}")
    prediction = "v_prediction" if name == "sd21-base" else "epsilon"  # SDXL base predicts epsilon
    config, text_length = (configs[name], TEXT_LENGTH) if name != "demo-sized" else _demo_sized_unet()
    return random_model(name, config, latent=latent, dtype=dtype, attention=attention,
                        prediction_type=prediction, seed=seed, text_length=text_length)


def unet_params(source: dict, unet_config: dict) -> dict:
    """The UNet parameters a ``BenchModel.source`` names, rebuilt (for a worker process)."""
    if source["kind"] == "random":
        return random_unet_params(unet_config, source["seed"])
    return jaxpid.load_pipeline(source["path"]).unet.params


def unet_call(denoiser) -> Callable:
    """(params, z, t, cond) -> UNet output: the bare network call, for FLOP counting."""
    module = denoiser.unet
    return lambda params, z, t, cond: apply_unet(module, params, z, t, cond)


def unet_flops_per_eval(model: BenchModel, batch: int = 1, xla: bool = True) -> dict:
    """FLOPs of one UNet evaluation: analytic (jaxpr) and XLA's HLO cost analysis."""
    shape = (batch,) + model.x.shape[1:]
    z = jax.ShapeDtypeStruct(shape, jnp.float32)
    t = jax.ShapeDtypeStruct((batch,), jnp.int32)
    cond = jax.tree.map(lambda a: jax.ShapeDtypeStruct((batch,) + np.shape(a)[1:], jnp.float32), model.conds)
    params = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), model.denoiser.params)
    fn = unet_call(model.denoiser)
    out = {"analytic_flops": jaxpr_flops(fn, params, z, t, cond) / batch}
    if xla:
        flops = xla_flops(fn, params, z, t, cond)
        out["xla_flops"] = None if flops is None else flops / batch
    return out
