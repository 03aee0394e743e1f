"""load_pipeline on tiny SD-1/SD-2-like folders: prompts, denoiser, VAE, errors."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from sd_folders import FAMILIES, write_random_pipeline, write_tiny_pipeline

from jaxpid.errors import ConfigError, WeightsMismatchError
from jaxpid.errors import ImageReadError
from jaxpid.sd.pipeline import load_image, load_pipeline
from jaxpid.sd.schedule import prediction_to_epsilon
from jaxpid.errors import NotAPipelineError
from jaxpid.sd.weights import fingerprint

PROMPTS = ["a photo of a cat", "", "a red car on the beach", "A Woman Doctor"]


def _close(ours, theirs, rtol=1e-5):
    theirs = np.asarray(theirs)
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=rtol * max(1.0, np.abs(theirs).max()), rtol=rtol)


@pytest.fixture(scope="module", params=FAMILIES)
def torch_pair(request, tmp_path_factory):
    """(family, jaxpid Pipeline, diffusers StableDiffusionPipeline) on the same tiny folder."""
    pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    folder = write_tiny_pipeline(tmp_path_factory.mktemp(request.param), request.param, seed=1)
    reference = diffusers.StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
    return request.param, load_pipeline(folder), reference


def test_encode_prompt_matches_diffusers(torch_pair):
    _, pipeline, reference = torch_pair
    theirs, _ = reference.encode_prompt(PROMPTS, "cpu", 1, False)
    ours = pipeline.encode_prompt(PROMPTS)
    assert ours.shape == (len(PROMPTS), 77, 32) and ours.dtype == jnp.float32
    _close(ours, theirs.detach().numpy())


_apply_denoiser = jax.jit(lambda denoiser, z, logsnr, cond: denoiser(z, logsnr, cond))


def test_denoiser_equals_unet_output_converted_by_hand(torch_pair, compilations):
    torch = pytest.importorskip("torch")
    family, pipeline, reference = torch_pair
    denoiser = pipeline.denoiser
    table = pipeline.schedule.logsnr_table
    steps = np.array([3, 420, 999])
    # Off-table log-SNRs, still nearest to `steps`.
    logsnr = (table[steps] + 0.3 * (table[steps + np.array([1, 1, -1])] - table[steps])).astype(np.float32)
    z = np.random.default_rng(0).standard_normal((3, 4, 8, 8)).astype(np.float32)
    cond = np.array(pipeline.encode_prompt(PROMPTS[:3]))

    ours = _apply_denoiser(denoiser, z, logsnr, cond)
    np.testing.assert_array_equal(denoiser.timestep(logsnr), steps)

    with torch.no_grad():
        output = reference.unet(torch.from_numpy(z), torch.from_numpy(steps), torch.from_numpy(cond)).sample.numpy()
    alpha_bar = reference.scheduler.alphas_cumprod[steps].double().numpy()[:, None, None, None]
    if family == "sd2":  # v-prediction: ε = sqrt(ᾱ)·v + sqrt(1 − ᾱ)·z
        expected = np.sqrt(alpha_bar) * output + np.sqrt(1 - alpha_bar) * z
    else:
        expected = output
    assert ours.dtype == jnp.float32 and ours.shape == z.shape
    _close(ours, expected, rtol=2e-5)

    # The parameters are traced leaves: new values reuse the compiled program.
    assert len(jax.tree.leaves(denoiser)) == len(jax.tree.leaves(pipeline.unet.params))
    changed = denoiser.replace(params=jax.tree.map(lambda p: 1.1 * p, denoiser.params))
    with compilations() as count:
        other = _apply_denoiser(changed, z, logsnr, cond)
    assert count[0] == 0
    assert not np.allclose(ours, other)


def test_vae_matches_diffusers(torch_pair):
    torch = pytest.importorskip("torch")
    family, pipeline, reference = torch_pair
    if family != "sd1":
        pytest.skip("the VAE is the same in both families")
    images = np.random.default_rng(1).integers(0, 256, size=(2, 16, 16, 3), dtype=np.uint8)
    latents = pipeline.encode_images(images)
    pixels = torch.from_numpy(images.astype(np.float32) / 127.5 - 1).permute(0, 3, 1, 2)
    scale = reference.vae.config.scaling_factor
    with torch.no_grad():
        expected = reference.vae.encode(pixels).latent_dist.mean * scale
        decoded = reference.vae.decode(expected / scale).sample
    _close(latents, expected.numpy())
    theirs = reference.image_processor.postprocess(decoded, output_type="np")
    ours = pipeline.decode_latents(expected.numpy())
    assert ours.dtype == np.uint8 and ours.shape == (2, 16, 16, 3)
    assert np.abs(ours.astype(int) - np.round(theirs * 255).astype(int)).max() <= 1


def test_pipeline_attributes(torch_pair):
    family, pipeline, _ = torch_pair
    assert pipeline.latent_shape == (4, 8, 8)
    assert pipeline.vae_scale_factor == 2 and pipeline.image_size == (16, 16)
    assert pipeline.fingerprint == fingerprint(pipeline.path)
    assert pipeline.schedule.prediction_type == ("v_prediction" if family == "sd2" else "epsilon")
    assert pipeline.tokenizer.pad_id == (0 if family == "sd2" else pipeline.tokenizer.end_id)


def test_prediction_conversions_recover_epsilon():
    rng = np.random.default_rng(2)
    x, eps = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 3, 4, 4))
    logsnr = np.array([-3.0, 4.0])[:, None, None, None]
    signal, noise = np.sqrt(1 / (1 + np.exp(-logsnr))), np.sqrt(1 / (1 + np.exp(logsnr)))
    z = signal * x + noise * eps
    v = signal * eps - noise * x
    for prediction, kind in ((eps, "epsilon"), (v, "v_prediction"), (x, "sample")):
        np.testing.assert_allclose(prediction_to_epsilon(prediction, z, logsnr, kind), eps, atol=1e-5)
    with pytest.raises(ConfigError):
        prediction_to_epsilon(x, z, logsnr, "flow")


@pytest.fixture(scope="module")
def random_sd2(tmp_path_factory):
    """A torch-free folder with pre-transformers-5 text encoder names and old VAE attention names."""
    folder = write_random_pipeline(tmp_path_factory.mktemp("random_sd2"), "sd2", seed=3, legacy_names=True)
    return folder, load_pipeline(folder)


def test_snap_logsnr_and_table_values(random_sd2):
    _, pipeline = random_sd2
    denoiser = pipeline.denoiser
    table = pipeline.schedule.logsnr_table
    snapped = denoiser.snap_logsnr(table.astype(np.float32))
    np.testing.assert_array_equal(denoiser.timestep(snapped), np.arange(1000))
    np.testing.assert_array_equal(snapped, table.astype(np.float32))
    low, high = pipeline.schedule.logsnr_range
    np.testing.assert_allclose(denoiser.snap_logsnr(np.array([high + 5, low - 5, 0.0])),
                               [high, low, table[np.argmin(np.abs(table))]], rtol=1e-6)


@pytest.mark.slow  # two more UNet compilations, one in bf16
def test_bfloat16_compute_stays_close(random_sd2):
    folder, pipeline = random_sd2
    half = load_pipeline(folder, dtype=jnp.bfloat16)
    z = jax.random.normal(jax.random.key(0), (1, 4, 8, 8))
    logsnr = jnp.array([1.0])
    full = _apply_denoiser(pipeline.denoiser, z, logsnr, pipeline.encode_prompt(["a cat"]))
    bf16 = _apply_denoiser(half.denoiser, z, logsnr, half.encode_prompt(["a cat"]))
    assert bf16.dtype == jnp.float32
    assert float(jnp.linalg.norm(bf16 - full) / jnp.linalg.norm(full)) < 0.05


def test_pixel_space_pipeline_without_vae(tmp_path):
    folder = write_random_pipeline(tmp_path, "sd1", with_vae=False)
    pipeline = load_pipeline(folder)
    assert pipeline.vae is None and pipeline.latent_shape == (3, 8, 8) and pipeline.vae_scale_factor == 1
    images = np.random.default_rng(4).integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
    latents = pipeline.encode_images(images)
    _close(latents, np.transpose(images, (0, 3, 1, 2)) / 127.5 - 1)
    np.testing.assert_array_equal(pipeline.decode_latents(latents), images)
    # Other sizes and aspect ratios are centre-cropped and resized.
    tall = np.random.default_rng(5).integers(0, 256, size=(40, 20, 3), dtype=np.uint8)
    assert pipeline.encode_images(tall).shape == (1, 3, 8, 8)
    assert pipeline.encode_images(np.full((1, 12, 30, 3), 0.5, np.float32)).shape == (1, 3, 8, 8)


def test_not_a_pipeline(tmp_path):
    with pytest.raises(NotAPipelineError, match="model_index.json"):
        load_pipeline(tmp_path)


def test_mismatched_unet_weights_are_named(tmp_path):
    folder = write_random_pipeline(tmp_path, "sd1")
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    state["mid_block.resnets.0.conv_one.weight"] = state.pop("mid_block.resnets.0.conv1.weight")
    save_file(state, str(weights))
    with pytest.raises(WeightsMismatchError) as raised:
        load_pipeline(folder)
    assert "mid_block.resnets.0.conv1.weight" in str(raised.value)
    assert "mid_block.resnets.0.conv_one.weight" in str(raised.value)


def test_text_encoder_width_must_match_unet(tmp_path):
    folder = write_random_pipeline(tmp_path, "sd1")
    config_path = folder / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config["cross_attention_dim"] = 16
    config_path.write_text(json.dumps(config))
    with pytest.raises((ConfigError, WeightsMismatchError)):
        load_pipeline(folder)


def test_hub_id_loads_through_snapshot_download(tmp_path, monkeypatch):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    folder = write_random_pipeline(tmp_path / "snapshot", "sd1", with_vae=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kwargs: str(folder))
    pipeline = load_pipeline("someone/tiny-pixel-sd")
    assert pipeline.name == "someone/tiny-pixel-sd" and pipeline.path == folder


def test_load_image(tmp_path):
    from PIL import Image

    pixels = np.random.default_rng(6).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "image.png")
    np.testing.assert_array_equal(load_image(tmp_path / "image.png"), pixels)
    Image.fromarray(pixels[..., 0]).save(tmp_path / "gray.png")
    assert load_image(tmp_path / "gray.png").shape == (5, 7, 3)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    for name in ("broken.png", "absent.png"):
        with pytest.raises(ImageReadError, match=name):
            load_image(tmp_path / name)
