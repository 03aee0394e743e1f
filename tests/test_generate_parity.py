"""DDIM + classifier-free guidance against diffusers' StableDiffusionPipeline, and the seed rule."""

import jax
import numpy as np
import pytest
from sd_folders import FAMILIES, write_random_pipeline, write_tiny_pipeline

from jaxpid.errors import ConfigError, ShapeError
from jaxpid.sd.ddim import generate, initial_latents
from jaxpid.sd.pipeline import load_pipeline

PROMPTS = ["a photo of a cat", "a red car on the beach"]
STEPS = 4


@pytest.fixture(scope="module", params=FAMILIES)
def torch_pair(request, tmp_path_factory):
    pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    folder = write_tiny_pipeline(tmp_path_factory.mktemp(request.param), request.param, seed=2)
    reference = diffusers.StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    assert isinstance(reference.scheduler, diffusers.DDIMScheduler)
    return request.param, load_pipeline(folder), reference


def test_ddim_with_guidance_matches_diffusers(torch_pair):
    torch = pytest.importorskip("torch")
    _, pipeline, reference = torch_pair
    start = torch.randn((len(PROMPTS), 4, 8, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        theirs = reference(
            PROMPTS, num_inference_steps=STEPS, guidance_scale=7.5, latents=start.clone(), output_type="latent"
        ).images.numpy()
    result = generate(pipeline, PROMPTS, steps=STEPS, guidance_scale=7.5, latents=start.numpy())
    ours = np.asarray(result.latents)
    np.testing.assert_allclose(ours, theirs, atol=1e-4 * np.abs(theirs).max(), rtol=1e-4)
    assert result.images.shape == (2, 16, 16, 3) and result.images.dtype == np.uint8
    assert result.seeds is None and result.prompts == tuple(PROMPTS)


def test_generation_without_guidance_matches_diffusers(torch_pair):
    torch = pytest.importorskip("torch")
    family, pipeline, reference = torch_pair
    if family != "sd2":
        pytest.skip("one family is enough for the unguided path")
    start = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = reference(
            PROMPTS[:1], num_inference_steps=3, guidance_scale=1.0, latents=start.clone(), output_type="latent"
        ).images.numpy()
    ours = np.asarray(generate(pipeline, PROMPTS[:1], steps=3, guidance_scale=1.0, latents=start.numpy()).latents)
    np.testing.assert_allclose(ours, theirs, atol=1e-4 * np.abs(theirs).max(), rtol=1e-4)


def test_seed_rule_is_per_seed_and_documented():
    shape = (4, 8, 8)
    key = jax.random.key(0)
    batch = initial_latents(shape, [7, 3])
    np.testing.assert_array_equal(batch[1], jax.random.normal(jax.random.fold_in(key, 3), shape))
    np.testing.assert_array_equal(initial_latents(shape, [3])[0], batch[1])
    other = initial_latents(shape, [3], key=jax.random.key(1))
    assert not np.allclose(other[0], batch[1])
    with pytest.raises(ConfigError, match="seed"):
        initial_latents(shape, [-1])


def test_generate_from_seeds_without_torch(tmp_path):
    pipeline = load_pipeline(write_random_pipeline(tmp_path, "sd1", with_vae=False))
    result = generate(pipeline, ["a cat"], seeds=[5, 9], steps=2, guidance_scale=3.0)
    assert result.latents.shape == (2, 3, 8, 8) and result.images.shape == (2, 8, 8, 3)
    assert result.prompts == ("a cat", "a cat") and result.seeds == (5, 9)
    again = generate(pipeline, ["a dog", "a cat"], seeds=[1, 9], steps=2, guidance_scale=3.0)
    np.testing.assert_allclose(again.latents[1], result.latents[1], rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(result.latents))
    with pytest.raises(ShapeError):
        generate(pipeline, ["a", "b", "c"], seeds=[1, 2], steps=2)
    with pytest.raises(ShapeError):
        generate(pipeline, ["a"], steps=2)
