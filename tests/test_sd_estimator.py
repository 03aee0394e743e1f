"""The Stable Diffusion denoiser through the estimator core: the contract between the two.

A tiny random pipeline folder (written without torch) is loaded, its 2**k subset prompts are
encoded, and the fused pass runs on the pipeline's discrete-time denoiser.
"""

import jax
import numpy as np
import pytest
from sd_folders import write_random_pipeline

import jaxpid
from jaxpid.sd.pipeline import load_pipeline

PROMPTS = ["a photo of the", "a red photo of the", "a photo of the cat", "a red photo of the cat"]


@pytest.fixture(scope="module", params=["sd1", "sd2"])
def pipeline(request, tmp_path_factory):
    folder = write_random_pipeline(tmp_path_factory.mktemp(request.param) / "pipe", request.param, seed=0)
    return load_pipeline(folder)


def test_pid_on_the_sd_denoiser(pipeline, compilations):
    cond = pipeline.encode_prompt(PROMPTS)  # (4, 77, D), bitmask order: "red" = bit 0, "cat" = bit 1
    x = jax.random.normal(jax.random.key(1), (2,) + pipeline.latent_shape)
    res = jaxpid.pid(pipeline.denoiser, x, cond, key=jax.random.key(0), n_samples=6, chunk_size=2)
    assert res.names == ("{1}{2}", "{1}", "{2}", "{12}")
    assert all(np.all(np.isfinite(v)) for v in res.atoms.values())
    np.testing.assert_allclose(sum(res.atoms.values()), res.joint, rtol=1e-9, atol=1e-9)
    h, w = pipeline.latent_shape[1:]
    assert res.atom_maps["{12}"].shape == (2, h, w)
    # every log-SNR the estimator used is one of the model's own steps (z and t agree)
    table = np.asarray(pipeline.schedule.logsnr_table)
    assert np.all(np.min(np.abs(res.information.logsnr[..., None] - table), axis=-1) < 1e-4)

    # new prompts of the same shape and new latents: no new compilation
    other = pipeline.encode_prompt(["a photo of", "a blue photo of", "a photo of the dog", "a blue photo of the dog"])
    x_new = jax.random.normal(jax.random.key(5), x.shape)
    with compilations() as count:
        jaxpid.pid(pipeline.denoiser, x_new, other, key=jax.random.key(0), n_samples=6, chunk_size=2)
    assert count[0] == 0


def test_sd_results_identical_on_one_and_eight_devices(pipeline):
    cond = pipeline.encode_prompt(PROMPTS[:2])
    x = jax.random.normal(jax.random.key(2), (1,) + pipeline.latent_shape)
    run = lambda devices: jaxpid.information(
        pipeline.denoiser, x, cond, key=jax.random.key(3), n_samples=8, chunk_size=1, devices=devices
    )
    one, eight = run(jax.devices()[:1]), run(jax.devices())
    np.testing.assert_allclose(eight.mi_orthogonal, one.mi_orthogonal, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(eight.maps_standard, one.maps_standard, rtol=1e-4, atol=1e-6)
