"""The models the benchmarks run: tiny test configs, the shipped demo (or a random model of its
architecture until it exists) and the SD 2.1-base and SDXL-base architectures with random
weights, each with the inputs of one 2-source PID job (an image and its 4 subset conditionings:
an array, or for SDXL an ``SDXLConditioning`` pytree of hidden states, pooled embeddings and
size ids); whole random-weight pipelines (UNet, text encoder, VAE) for timing generation + maps
where no weights can be downloaded; and FLOP counts of the SD 2.1-base parts from their shapes
alone.
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
from jaxpid.sd.clip_bpe import ClipBPE
from jaxpid.sd.models import clip, unet, vae
from jaxpid.sd.pipeline import BoundModel, DiscreteTimeDenoiser, Pipeline
from jaxpid.sd.prompts import subset_prompts
from jaxpid.sd.schedule import NoiseSchedule
from jaxpid.sd.sdxl import SDXLConditioning, apply_unet
from jaxpid.sd.tokenizer import PromptTokenizer
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

# Stable Diffusion's training schedule (scaled-linear betas). SD 2.1-base (512 px) predicts ε;
# only the 768 px SD 2.x models predict v.
SD_SCHEDULE = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}

# stabilityai/stable-diffusion-2-1-base scheduler/scheduler_config.json (PNDM; DDIM reads the same keys).
SD21_BASE_SCHEDULER = {**SD_SCHEDULE, "num_train_timesteps": 1000, "prediction_type": "epsilon",
                       "set_alpha_to_one": False, "steps_offset": 1, "clip_sample": False}

# stabilityai/stable-diffusion-2-1-base text_encoder/config.json (OpenCLIP ViT-H/14's text tower).
SD21_BASE_TEXT = {
    "vocab_size": 49408,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 23,
    "num_attention_heads": 16,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-05,
}

# stabilityai/stable-diffusion-2-1-base vae/config.json (architecture keys).
SD21_BASE_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 768,
    "scaling_factor": 0.18215,
    "act_fn": "silu",
}

# Tiny text encoder and VAE matching MICRO_UNET / TINY_UNET (cross_attention_dim 16 / 32), for
# dry runs of the whole-pipeline benchmarks.
MICRO_TEXT = {"vocab_size": 600, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
              "num_attention_heads": 2, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
              "layer_norm_eps": 1e-05}
MICRO_VAE = {"in_channels": 3, "out_channels": 3, "block_out_channels": [8, 16], "layers_per_block": 1,
             "latent_channels": 4, "norm_num_groups": 8, "sample_size": 16, "scaling_factor": 0.18215}

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
    return random_params(unet.expected_params(unet.UNetConfig.from_dict(unet_config)), seed, dtype)


def random_params(expected: Any, seed: int = 0, dtype=jnp.float32) -> dict:
    """Random parameters for a tree of ``jax.ShapeDtypeStruct`` (a module's ``expected_params``)."""
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


# Whole pipelines with random weights: SD 2.1-base's three networks at their published sizes (or
# tiny ones), the demo's tokenizer padded to 77 tokens, SD 2.1-base's schedule.
PIPELINE_CONFIGS = {
    "sd21-base": (SD21_BASE_UNET, SD21_BASE_TEXT, SD21_BASE_VAE),
    "micro": (MICRO_UNET, MICRO_TEXT, MICRO_VAE),
}


def random_pipeline(name: str, *, dtype=jnp.float32, attention: str = "auto", seed: int = 0,
                    latent: int | None = None) -> Pipeline:
    """A ``Pipeline`` of random weights: ``"sd21-base"`` (865.9 M UNet, 340 M text encoder, 84 M VAE)
    or ``"micro"`` (seconds to compile, for dry runs). Its UNet holds ``random_unet_params(config,
    seed)`` in float32, so ``unet_params({"kind": "random", "seed": seed}, config)`` rebuilds it
    (for PyTorch on the same weights); ``dtype`` is the compute dtype. No file is read but the
    demo's tokenizer vocabulary (any text tokenizes: CLIP's BPE falls back to bytes)."""
    if name not in PIPELINE_CONFIGS:
        raise ValueError(f"unknown pipeline {name!r}; choose from {', '.join(PIPELINE_CONFIGS)}")
    _, text_dict, vae_dict = PIPELINE_CONFIGS[name]
    unet_dict = random_pipeline_unet_config(name, latent)
    unet_config = unet.UNetConfig.from_dict(unet_dict)
    text_config = clip.CLIPTextConfig.from_dict(text_dict)
    vae_config = vae.VAEConfig.from_dict(vae_dict)
    modules = {
        "unet": (unet.UNet2DConditionModel(unet_config, dtype=dtype, attention=attention),
                 random_unet_params(unet_dict, seed)),
        "text": (clip.CLIPTextModel(text_config, dtype=dtype, attention=attention),
                 random_params(clip.expected_params(text_config), seed + 1)),
        "vae": (vae.AutoencoderKL(vae_config, dtype=dtype, attention=attention),
                random_params(vae.expected_params(vae_config), seed + 2)),
    }
    bound = {key: BoundModel(module=module, params=params) for key, (module, params) in modules.items()}
    tokenizer = PromptTokenizer(ClipBPE.from_folder(DEMO_FOLDER / "tokenizer"),
                                text_config.max_position_embeddings, source="demo tokenizer, padded to 77")
    return Pipeline(
        name=f"{name} (random weights, seed {seed})",
        path=Path("."),
        fingerprint=f"random-{name}-seed-{seed}-latent-{unet_config.sample_size}",
        dtype=dtype,
        unet=bound["unet"],
        text_encoder=bound["text"],
        vae=bound["vae"],
        tokenizer=tokenizer,
        schedule=NoiseSchedule.from_config(SD21_BASE_SCHEDULER),
        attention=attention,
    )


def pipeline_model(pipe: Pipeline, unet_config: dict, latents: np.ndarray, *, seed: int = 0,
                   prompt: str = "a red circle and a blue square",
                   sources: tuple[str, str] = ("circle", "square")) -> BenchModel:
    """The 2-source PID job of a ``random_pipeline``'s generated latent, as a ``BenchModel`` that
    shares the pipeline's denoiser (jaxpid then compiles the pass once for both uses).
    ``unet_config`` is the pipeline's diffusers UNet config (``random_pipeline_unet_config``),
    for the PyTorch twin; ``seed`` the pipeline's."""
    subsets = subset_prompts(prompt, list(sources))
    conds = np.array(pipe.encode_prompt(list(subsets.prompts)), np.float32)  # writable (torch shares them)
    x = np.array(latents[:1], np.float32)
    n = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(pipe.unet.params))
    channels, size = x.shape[1], x.shape[-1]
    return BenchModel(
        name=pipe.name.split(" ")[0],
        description=f"{pipe.name}: {n / 1e6:.2f} M UNet parameters, {channels}x{size}x{size} latents, "
                    f"prompt {prompt!r}, sources {list(sources)}",
        denoiser=pipe.denoiser,
        unet_config=unet_config,
        x=x,
        conds=conds,
        prompts=subsets.prompts,
        source={"kind": "random", "seed": seed},
    )


def random_pipeline_unet_config(name: str, latent: int | None = None) -> dict:
    """The diffusers UNet config of ``random_pipeline(name, latent=latent)``."""
    config = dict(PIPELINE_CONFIGS[name][0])
    if latent:
        config["sample_size"] = latent
    return config


def pipeline_flops(name: str = "sd21-base", latent: int | None = None) -> dict:
    """Analytic FLOPs (2·MACs of every matmul and convolution, ``jaxpr_flops``) of one call of each
    network of ``random_pipeline(name)``, traced from parameter shapes alone (nothing is drawn or
    compiled): a UNet evaluation (one latent, one 77-token conditioning), a text encoding (one
    prompt), a VAE encoding and a decoding (one image)."""
    _, text_dict, vae_dict = PIPELINE_CONFIGS[name]
    unet_dict = random_pipeline_unet_config(name, latent)
    unet_config = unet.UNetConfig.from_dict(unet_dict)
    text_config = clip.CLIPTextConfig.from_dict(text_dict)
    vae_config = vae.VAEConfig.from_dict(vae_dict)
    spec = jax.ShapeDtypeStruct
    size, channels = unet_config.sample_size, unet_config.in_channels
    pixels = size * vae_config.downsample_factor
    unet_module = unet.UNet2DConditionModel(unet_config)
    text_module = clip.CLIPTextModel(text_config)
    vae_module = vae.AutoencoderKL(vae_config)
    length = text_config.max_position_embeddings
    return {
        "unet_per_evaluation": jaxpr_flops(
            lambda p, z, t, c: unet_module.apply({"params": p}, z, t, c), unet.expected_params(unet_config),
            spec((1, channels, size, size), jnp.float32), spec((1,), jnp.int32),
            spec((1, length, text_config.hidden_size), jnp.float32)),
        "text_encoder_per_prompt": jaxpr_flops(
            lambda p, ids: text_module.apply({"params": p}, ids), clip.expected_params(text_config),
            spec((1, length), jnp.int32)),
        "vae_encode_per_image": jaxpr_flops(
            lambda p, x: vae_module.apply({"params": p}, x, method="encode"), vae.expected_params(vae_config),
            spec((1, 3, pixels, pixels), jnp.float32)),
        "vae_decode_per_image": jaxpr_flops(
            lambda p, z: vae_module.apply({"params": p}, z, method="decode"), vae.expected_params(vae_config),
            spec((1, channels, size, size), jnp.float32)),
        "unet_parameters": sum(math.prod(x.shape) for x in jax.tree.leaves(unet.expected_params(unet_config))),
        "latent_shape": [channels, size, size],
    }


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
    config, text_length = (configs[name], TEXT_LENGTH) if name != "demo-sized" else _demo_sized_unet()
    return random_model(name, config, latent=latent, dtype=dtype, attention=attention,
                        prediction_type="epsilon", seed=seed, text_length=text_length)


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
