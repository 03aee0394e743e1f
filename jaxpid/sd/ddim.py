"""Text-to-image sampling: deterministic DDIM (η = 0) with classifier-free guidance.

It reproduces diffusers' ``StableDiffusionPipeline`` (and ``StableDiffusionXLPipeline``) with a
``DDIMScheduler`` built from the folder's scheduler config (same timesteps, same update, same
guidance), as one ``lax.scan`` over the steps, batched over prompts and seeds.

Initial noise, one rule per seed: ``jax.random.normal(jax.random.fold_in(key, seed), (C, h, w))``
with ``key = jax.random.key(0)`` unless one is given. The same (key, seed) gives the same image
whatever else is in the batch.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxpid.core.config import SEED_LIMIT, check_int
from jaxpid.errors import ConfigError, ShapeError
from jaxpid.sd import flow_sampler
from jaxpid.sd.pipeline import BoundModel, Pipeline
from jaxpid.sd.schedule import NoiseSchedule, split_prediction
from jaxpid.sd.sdxl import apply_unet


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """How images are generated from their prompt: DDIM steps and the guidance weight."""

    steps: int = 50  # DDIM steps (timesteps follow the scheduler config's spacing)
    guidance_scale: float = 7.5  # classifier-free guidance weight; <= 1 runs the conditional model alone

    def __post_init__(self):
        object.__setattr__(self, "steps", check_int("steps (DDIM steps)", self.steps, 1))
        if isinstance(self.guidance_scale, bool) or not isinstance(self.guidance_scale, (int, float, np.floating)) \
                or not math.isfinite(self.guidance_scale):
            raise ConfigError(f"guidance_scale must be a finite number, got {self.guidance_scale!r}")
        object.__setattr__(self, "guidance_scale", float(self.guidance_scale))

    def arguments(self) -> dict:
        """Keyword arguments of ``generate``."""
        return dataclasses.asdict(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, record: dict) -> GenerationConfig:
        return cls(record["steps"], record["guidance_scale"])


@dataclasses.dataclass(frozen=True)
class GenerationResult:
    """Generated samples and how they were made."""

    latents: jax.Array  # (B, C, h, w) float32: final latents, scaled as the UNet sees them
    images: np.ndarray  # (B, H, W, 3) uint8
    prompts: tuple[str, ...]  # (B,)
    seeds: tuple[int, ...] | None  # (B,), None when initial latents were given
    steps: int
    guidance_scale: float


def initial_latents(shape: tuple[int, int, int], seeds: Sequence[int], key: jax.Array | None = None) -> jax.Array:
    """Standard normal starting latents, (len(seeds), *shape) float32, one stream per seed.

    Raises:
      ConfigError: a seed outside 0..2**32 − 1.
    """
    for seed in seeds:
        check_int("seed", seed, 0, SEED_LIMIT)
    key = jax.random.key(0) if key is None else key
    seeds_array = jnp.asarray(np.asarray(seeds, dtype=np.uint32))
    draw = lambda seed: jax.random.normal(jax.random.fold_in(key, seed), shape, jnp.float32)  # noqa: E731
    return jax.vmap(draw)(seeds_array)


def generate(
    pipeline: Pipeline,
    prompts: Sequence[str],
    seeds: Sequence[int] | None = None,
    steps: int = GenerationConfig.steps,
    guidance_scale: float = GenerationConfig.guidance_scale,
    key: jax.Array | None = None,
    latents: jax.Array | None = None,
) -> GenerationResult:
    """Sample images for prompts with DDIM (η = 0) and classifier-free guidance.

    Args:
      pipeline: a loaded pipeline.
      prompts: B prompts (one prompt is repeated for every seed).
      seeds: B seeds (one seed is repeated for every prompt); ignored if ``latents`` is given.
      steps: number of DDIM steps; timesteps follow the scheduler config's spacing.
      guidance_scale: classifier-free guidance weight w; the unconditional branch is the
        empty prompt "". w ≤ 1 runs the conditional model alone, as diffusers does.
      key: base key of the initial noise (default ``jax.random.key(0)``).
      latents: explicit initial latents (B, C, h, w) instead of seeded noise.

    Raises:
      ShapeError: prompts, seeds and latents disagree in number or latent shape.
      ConfigError: steps out of range, a bad seed, or a scheduler with dynamic thresholding.
      PromptError: a prompt longer than the text encoder takes.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    schedule = pipeline.schedule
    if pipeline.sd3 is None and schedule.thresholding:
        raise ConfigError("scheduler thresholding=true (dynamic thresholding) is not supported by jaxpid's DDIM")
    if latents is None:
        if seeds is None:
            raise ShapeError("generate needs seeds or explicit initial latents")
        seeds = [int(seed) for seed in seeds]
        prompts, seeds = _broadcast_pair(prompts, seeds)
        start = initial_latents(pipeline.latent_shape, seeds, key)
    else:
        start = jnp.asarray(latents, jnp.float32)
        if start.ndim == 3:
            start = start[None]
        if start.ndim != 4 or start.shape[1] != pipeline.latent_shape[0]:
            raise ShapeError(f"latents: expected (B, {pipeline.latent_shape[0]}, h, w), got {start.shape}")
        if len(prompts) == 1:
            prompts = prompts * start.shape[0]
        if len(prompts) != start.shape[0]:
            raise ShapeError(f"{len(prompts)} prompts for {start.shape[0]} initial latents")
        seeds = None

    cond = pipeline.encode_prompt(prompts)  # an array, or a pytree of arrays (SDXL)
    guided = guidance_scale > 1.0
    # The unconditional branch: the empty prompt, as the pipeline encodes it (SDXL: its rule).
    uncond = jax.tree.map(lambda u, c: jnp.broadcast_to(u, c.shape), pipeline.encode_prompt([""]), cond) \
        if guided else cond
    if pipeline.sd3 is not None:  # a flow-matching model: Euler steps at its scheduler's shift
        final = flow_sampler.euler_sample(pipeline, start, cond, uncond, steps, guidance_scale)
        return GenerationResult(latents=final, images=pipeline.decode_latents(final), prompts=tuple(prompts),
                                seeds=None if seeds is None else tuple(seeds), steps=steps,
                                guidance_scale=float(guidance_scale))
    timesteps = schedule.sampling_timesteps(steps)
    alphas = schedule.alphas_cumprod[timesteps]
    previous_alphas = schedule.previous_alpha_cumprod(timesteps, steps)
    final = _ddim_sample(
        pipeline.unet,
        schedule,
        guided,
        start,
        cond,
        uncond,
        jnp.asarray(timesteps, jnp.int32),
        jnp.asarray(alphas, jnp.float32),
        jnp.asarray(previous_alphas, jnp.float32),
        jnp.float32(guidance_scale),
    )
    return GenerationResult(
        latents=final,
        images=pipeline.decode_latents(final),
        prompts=tuple(prompts),
        seeds=None if seeds is None else tuple(seeds),
        steps=steps,
        guidance_scale=float(guidance_scale),
    )


def _broadcast_pair(prompts: list[str], seeds: list[int]) -> tuple[list[str], list[int]]:
    if len(prompts) == 1 and len(seeds) > 1:
        prompts = prompts * len(seeds)
    if len(seeds) == 1 and len(prompts) > 1:
        seeds = seeds * len(prompts)
    if len(prompts) != len(seeds):
        raise ShapeError(f"{len(prompts)} prompts and {len(seeds)} seeds: give one of each per image, or one of either")
    return prompts, seeds


@functools.partial(jax.jit, static_argnums=(1, 2))
def _ddim_sample(
    unet: BoundModel,
    schedule: NoiseSchedule,
    guided: bool,
    latents: jax.Array,  # (B, C, h, w)
    cond: Any,  # (B, L, D), or a pytree of leaves (B, ...) (SDXL)
    uncond: Any,  # the same structure
    timesteps: jax.Array,  # (S,) int32, descending
    alphas: jax.Array,  # (S,) ᾱ at each timestep
    previous_alphas: jax.Array,  # (S,) ᾱ of the step each one moves to
    guidance_scale: jax.Array,  # () float32
) -> jax.Array:
    batch = latents.shape[0]

    def model_output(x, t):
        t_batch = jnp.full((batch,), t, jnp.int32)
        if not guided:
            return apply_unet(unet.module, unet.params, x, t_batch, cond)
        both_conds = jax.tree.map(lambda u, c: jnp.concatenate([u, c]), uncond, cond)
        both = apply_unet(
            unet.module, unet.params, jnp.concatenate([x, x]), jnp.concatenate([t_batch, t_batch]), both_conds
        )
        unconditional, conditional = jnp.split(both.astype(jnp.float32), 2)
        return unconditional + guidance_scale * (conditional - unconditional)

    def step(x, per_step):
        t, alpha, previous_alpha = per_step
        output = model_output(x, t).astype(jnp.float32)
        signal, noise = jnp.sqrt(alpha), jnp.sqrt(1.0 - alpha)
        epsilon, x0 = split_prediction(output, x, signal, noise, schedule.prediction_type)
        if schedule.clip_sample:
            x0 = jnp.clip(x0, -schedule.clip_sample_range, schedule.clip_sample_range)
        # η = 0: no fresh noise; the step keeps the predicted ε direction (unclipped, as diffusers).
        x = jnp.sqrt(previous_alpha) * x0 + jnp.sqrt(1.0 - previous_alpha) * epsilon
        return x, None

    final, _ = jax.lax.scan(step, latents.astype(jnp.float32), (timesteps, alphas, previous_alphas))
    return final
