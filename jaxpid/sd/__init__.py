"""Stable Diffusion in JAX: diffusers folders -> Flax modules -> a denoiser and a sampler.

Knows nothing of information or PID: it gives the estimator a denoiser (``Pipeline.denoiser``)
and conditionings (``Pipeline.encode_prompt``), and the analysis layer images (``generate``).

    weights        diffusers folders: safetensors reading (no pickle), hub download, fingerprints
    models/        Flax UNet, CLIP text encoder, VAE and the strict weight converter
    tokenizer      CLIP tokenizer (77 tokens, word -> token spans)
    schedule       discrete noise schedule, log-SNR <-> timestep, prediction type -> ε
    pipeline       load_pipeline, prompt encoding, the discrete-time denoiser, model identity
    sdxl           SDXL's conditioning pytree (two encoders, pooled text, size ids) and its rules
    ddim           generate: DDIM + classifier-free guidance
    prompts        prompt -> 2**k subset prompts (pure string work)
"""

from jaxpid.sd.ddim import GenerationConfig, GenerationResult, generate, initial_latents
from jaxpid.sd.pipeline import (
    DTYPES,
    DiscreteTimeDenoiser,
    ModelSpec,
    Pipeline,
    folder_identity,
    load_image,
    load_pipeline,
)
from jaxpid.sd.prompts import Source, SubsetPrompts, WordRemoval, resolve_sources, subset_prompts, without_word
from jaxpid.sd.schedule import NoiseSchedule, prediction_to_epsilon, split_prediction
from jaxpid.sd.sdxl import SDXLConditioning, SizeConditioning
from jaxpid.sd.tokenizer import PromptTokenizer, load_tokenizer
from jaxpid.sd.weights import DEMO_MODEL, demo_path

__all__ = [
    "DEMO_MODEL", "DTYPES", "ModelSpec", "demo_path", "DiscreteTimeDenoiser", "GenerationConfig", "GenerationResult", "NoiseSchedule", "Pipeline", "PromptTokenizer",
    "SDXLConditioning", "SizeConditioning",
    "Source", "SubsetPrompts", "WordRemoval", "folder_identity", "generate", "initial_latents", "load_image",
    "load_pipeline", "load_tokenizer", "prediction_to_epsilon", "resolve_sources", "split_prediction",
    "subset_prompts", "without_word",
]
