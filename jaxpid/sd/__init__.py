"""Stable Diffusion in JAX: diffusers folders -> Flax modules -> a denoiser and a sampler.

Knows nothing of information or PID: it gives the estimator a denoiser (``Pipeline.denoiser``)
and conditionings (``Pipeline.encode_prompt``), and the analysis layer images (``generate``).

    weights        diffusers folders: safetensors reading (no pickle), hub download, fingerprints
    models/        Flax UNet, CLIP text encoder, VAE, SD3's MMDiT and T5 encoder, the strict weight converter
    tokenizer      CLIP tokenizer (77 tokens, word -> token spans)
    clip_bpe       CLIP's byte-level BPE, read from a tokenizer folder (no transformers import)
    schedule       discrete noise schedule, log-SNR <-> timestep, prediction type -> ε
    pipeline       load_pipeline, prompt encoding, the discrete-time denoiser, model identity
    sdxl           SDXL's conditioning pytree (two encoders, pooled text, size ids) and its rules
    sd3            SD3's conditioning pytree (CLIP-L, CLIP-G, T5), its loading and its flow denoiser
    flow           flow-matching time t <-> log-SNR, velocity -> ε̂, the FlowMatchEuler scheduler config
    flow_sampler   SD3 generation: Euler steps at the scheduler's shift + classifier-free guidance
    t5_tokenizer   SD3's T5 tokenizer from tokenizer.json (tokenizers library)
    ddim           generate: DDIM + classifier-free guidance
    prompts        prompt -> 2**k subset prompts (pure string work)
"""

from jaxpid.sd.ddim import GenerationConfig, GenerationResult, generate, initial_latents
from jaxpid.sd.flow import FlowDenoiser, FlowMatchSchedule
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
from jaxpid.sd.sd3 import SD3Conditioning
from jaxpid.sd.sdxl import SDXLConditioning, SizeConditioning
from jaxpid.sd.tokenizer import PromptTokenizer, load_tokenizer
from jaxpid.sd.weights import DEMO_MODEL, demo_path

__all__ = [
    "DEMO_MODEL", "DTYPES", "ModelSpec", "demo_path", "DiscreteTimeDenoiser", "GenerationConfig", "GenerationResult", "NoiseSchedule", "Pipeline", "PromptTokenizer",
    "SDXLConditioning", "SizeConditioning", "SD3Conditioning", "FlowDenoiser", "FlowMatchSchedule",
    "Source", "SubsetPrompts", "WordRemoval", "folder_identity", "generate", "initial_latents", "load_image",
    "load_pipeline", "load_tokenizer", "prediction_to_epsilon", "resolve_sources", "split_prediction",
    "subset_prompts", "without_word",
]
