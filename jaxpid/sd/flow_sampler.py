"""Text-to-image sampling for flow-matching pipelines (SD3): Euler steps with classifier-free guidance.

:func:`euler_sample` reproduces the denoising loop of diffusers' ``StableDiffusion3Pipeline`` with
its ``FlowMatchEulerDiscreteScheduler`` (same flow times -- evenly spaced, then shifted by the
config's ``shift`` --, same time input 1000·t, same guidance ``v_uncond + w·(v_cond − v_uncond)``,
same update x ← x + (t_next − t)·v̂) as one ``lax.scan`` over the steps, batched over images. It
takes what :func:`jaxpid.sd.ddim.generate` prepares (initial latents from seeds, the prompts' and
the empty prompt's conditionings) and returns the final latents, so ``generate`` can hand an SD3
pipeline to it in place of its DDIM loop (this module does not import ``ddim``: no import cycle).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from jaxpid.core.config import check_int
from jaxpid.errors import ConfigError
from jaxpid.sd.pipeline import BoundModel, Pipeline
from jaxpid.sd.sd3 import apply_transformer


def euler_sample(pipeline: Pipeline, latents: jax.Array, cond: Any, uncond: Any, steps: int,
                 guidance_scale: float) -> jax.Array:
    """Final latents (B, C, h, w) float32 of ``steps`` Euler steps from the initial ``latents``.

    Args:
      pipeline: a flow-matching (SD3) pipeline.
      latents: (B, C, h, w) initial noise (t = 1).
      cond: the prompts' ``SD3Conditioning`` (leaves lead with B).
      uncond: the unconditional conditioning ("" encoded, broadcast to B); unused when
        ``guidance_scale`` <= 1, which runs the conditional model alone, as diffusers does.
      steps: Euler steps; flow times follow the scheduler config (``FlowMatchSchedule.sampling_sigmas``).
      guidance_scale: classifier-free guidance weight w.

    Raises:
      ConfigError: not a flow-matching pipeline, steps < 1, or scheduler options the sampler does not
        reproduce (dynamic / terminal shifting, Karras / exponential / beta sigmas, stochastic sampling).
    """
    if pipeline.sd3 is None:
        raise ConfigError(f"{pipeline.name}: the Euler flow sampler is for flow-matching (SD3) pipelines; "
                          f"this is a {pipeline.family!r} pipeline")
    steps = check_int("steps (Euler steps)", steps, 1)
    sigmas = pipeline.schedule.sampling_sigmas(steps)  # (steps + 1,) float32, ends with 0
    timesteps = sigmas[:-1] * pipeline.schedule.num_train_timesteps  # float32, as diffusers feeds them
    return _euler_sample(pipeline.unet, guidance_scale > 1.0, jnp.asarray(latents, jnp.float32), cond, uncond,
                         jnp.asarray(timesteps, jnp.float32), jnp.asarray(sigmas), jnp.float32(guidance_scale))


@functools.partial(jax.jit, static_argnums=(1,))
def _euler_sample(
    transformer: BoundModel,
    guided: bool,
    latents: jax.Array,  # (B, C, h, w)
    cond: Any,  # SD3Conditioning of B
    uncond: Any,  # the same structure
    timesteps: jax.Array,  # (S,) float32 model time inputs 1000·t, descending
    sigmas: jax.Array,  # (S + 1,) float32 flow times t, descending to 0
    guidance_scale: jax.Array,  # () float32
) -> jax.Array:
    batch = latents.shape[0]
    apply = functools.partial(apply_transformer, transformer.module, transformer.params)

    def velocity(x, timestep):
        t_batch = jnp.full((batch,), timestep, jnp.float32)
        if not guided:
            return apply(x, t_batch, cond).astype(jnp.float32)
        both = apply(jnp.concatenate([x, x]), jnp.concatenate([t_batch, t_batch]),
                     jax.tree.map(lambda u, c: jnp.concatenate([u, c]), uncond, cond))
        unconditional, conditional = jnp.split(both.astype(jnp.float32), 2)
        return unconditional + guidance_scale * (conditional - unconditional)

    def step(x, per_step):
        timestep, sigma, sigma_next = per_step
        return x + (sigma_next - sigma) * velocity(x, timestep), None

    final, _ = jax.lax.scan(step, latents.astype(jnp.float32), (timesteps, sigmas[:-1], sigmas[1:]))
    return final
