"""The flow-matching Euler sampler against diffusers' StableDiffusion3Pipeline on a tiny folder."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sd3_folders import SHIFT, write_tiny_sd3

from jaxpid.errors import ConfigError
from jaxpid.sd.ddim import initial_latents
from jaxpid.sd.flow_sampler import euler_sample
from jaxpid.sd.pipeline import load_pipeline

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

PROMPTS = ["a photo of a cat", "a red car on the beach"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = write_tiny_sd3(tmp_path_factory.mktemp("sd3gen") / "sd3", sd35=True, seed=4)
    reference = diffusers.StableDiffusion3Pipeline.from_pretrained(folder)
    reference.set_progress_bar_config(disable=True)
    return load_pipeline(folder), reference


def _sample(pipeline, prompts, latents, steps, guidance_scale):
    """What jaxpid.sd.ddim.generate prepares for a sampler: the prompts' and ""'s conditionings."""
    cond = pipeline.encode_prompt(prompts)
    uncond = jax.tree.map(lambda u, c: jnp.broadcast_to(u, c.shape), pipeline.encode_prompt([""]), cond)
    return euler_sample(pipeline, latents, cond, uncond, steps, guidance_scale)


@pytest.mark.e2e  # diffusers' whole SD3 pipeline twice (~25 s): the e2e tier
@pytest.mark.parametrize("guidance_scale", [5.0, 1.0])
def test_euler_with_guidance_matches_diffusers(pair, guidance_scale):
    """3 Euler steps at the folder's shift (3.0), with classifier-free guidance against "" and without;
    the decoded images as diffusers' VAE decodes the same latents (shift_factor, scaling_factor)."""
    pipeline, reference = pair
    latents = np.random.default_rng(0).standard_normal((2, 16, 8, 8)).astype(np.float32)
    ours = _sample(pipeline, PROMPTS, latents, 3, guidance_scale)
    with torch.no_grad():
        theirs = reference(PROMPTS, num_inference_steps=3, guidance_scale=guidance_scale,
                           latents=torch.from_numpy(latents), height=16, width=16, output_type="latent").images.numpy()
    error = np.abs(np.asarray(ours) - theirs).max() / np.abs(theirs).max()
    print(f"SD3 Euler 3 steps, shift {SHIFT}, CFG {guidance_scale}: max relative error {error:.2e}")
    assert error < 1e-5
    images = pipeline.decode_latents(ours)
    with torch.no_grad():
        decoded = reference.vae.decode(torch.from_numpy(theirs) / reference.vae.config.scaling_factor
                                       + reference.vae.config.shift_factor).sample.numpy()
    expected = np.round(np.clip(decoded / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1) * 255)
    assert images.shape == (2, 16, 16, 3) and np.abs(images.astype(np.int32) - expected).max() <= 1


def test_seeded_streams_and_errors(pair):
    pipeline, _ = pair
    one = _sample(pipeline, PROMPTS[:1], initial_latents(pipeline.latent_shape, [3]), 2, 5.0)
    both = _sample(pipeline, PROMPTS, initial_latents(pipeline.latent_shape, [3, 4]), 2, 5.0)
    np.testing.assert_allclose(both[0], one[0], atol=2e-5)  # a seed's image ignores its batch (float32 batching)
    cond = pipeline.encode_prompt(PROMPTS)
    with pytest.raises(ConfigError, match="steps"):
        euler_sample(pipeline, np.zeros((2, 16, 8, 8), np.float32), cond, cond, 0, 5.0)
