"""Stable Diffusion XL against diffusers' PyTorch StableDiffusionXLPipeline on tiny random folders.

Each test prints the largest error relative to the output's scale (max |jax - torch| / max |torch|)
per component; every one must be within fp32 tolerance (1e-5 of the scale). The slow test checks
the published SDXL-base UNet architecture's parameter count against diffusers.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sd_folders import SDXL, write_tiny_pipeline

from jaxpid.bench.models import SDXL_BASE_UNET  # the published SDXL-base unet/config.json
from jaxpid.sd.ddim import generate
from jaxpid.sd.models import unet as flax_unet
from jaxpid.sd.pipeline import load_pipeline
from jaxpid.sd.sdxl import SDXLConditioning, apply_unet

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

PROMPTS = ["a photo of a cat", "a red car on the beach", "A Woman Doctor", ""]
RTOL = 1e-5  # of the output's scale


def _relative(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-30))


def _check(name: str, ours, theirs, rtol: float = RTOL) -> None:
    assert np.shape(ours) == np.shape(theirs), (name, np.shape(ours), np.shape(theirs))
    error = _relative(ours, theirs)
    print(f"SDXL parity {name}: max relative error {error:.2e}")
    assert error < rtol, f"{name}: max relative error {error:.2e}"


def _reference(folder):
    pipe = diffusers.StableDiffusionXLPipeline.from_pretrained(folder, add_watermarker=False)
    pipe.scheduler = diffusers.DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two tiny SDXL folders with the same random weights: force_zeros_for_empty_prompt true / false."""
    root = tmp_path_factory.mktemp("sdxl")
    return {zeros: write_tiny_pipeline(root / f"zeros_{zeros}", SDXL, seed=1, force_zeros=zeros) for zeros in (True, False)}


@pytest.fixture(scope="module")
def pair(folders):
    """(jaxpid Pipeline, diffusers StableDiffusionXLPipeline) on the force-zeros folder."""
    return load_pipeline(folders[True]), _reference(folders[True])


def test_unet_text_time_parity(pair):
    """The UNet with SDXL's text_time embedding, on random pooled embeddings and varied size ids."""
    pipeline, reference = pair
    rng = np.random.default_rng(0)
    sample = rng.standard_normal((3, 4, 8, 8)).astype(np.float32)
    timesteps = np.array([1, 500, 999])
    hidden = rng.standard_normal((3, 77, reference.unet.config.cross_attention_dim)).astype(np.float32)
    pooled = rng.standard_normal((3, 24)).astype(np.float32)
    time_ids = np.array([[1024, 1024, 0, 0, 1024, 1024], [512, 768, 32, 16, 1024, 1024], [16, 16, 0, 0, 16, 16]],
                        np.float32)
    cond = SDXLConditioning(hidden=hidden, pooled=pooled, time_ids=time_ids)
    ours = jax.jit(apply_unet, static_argnums=0)(pipeline.unet.module, pipeline.unet.params, sample, timesteps, cond)
    with torch.no_grad():
        theirs = reference.unet(torch.from_numpy(sample), torch.from_numpy(timesteps), torch.from_numpy(hidden),
                                added_cond_kwargs={"text_embeds": torch.from_numpy(pooled),
                                                   "time_ids": torch.from_numpy(time_ids)}).sample.numpy()
    _check("unet (text_time)", ours, theirs)
    # The size ids matter: other ids, other output.
    other = cond.replace(time_ids=np.roll(time_ids, 1, axis=0))
    moved = jax.jit(apply_unet, static_argnums=0)(pipeline.unet.module, pipeline.unet.params, sample, timesteps, other)
    assert not np.allclose(moved, ours, atol=1e-4)


def test_text_encoders_parity(pair):
    """Both encoders: every hidden state (SDXL takes the penultimate), and the pooled outputs --
    text_encoder pools the first end token, text_encoder_2 (legacy eos_token_id 2) the largest id
    and projects it."""
    pipeline, reference = pair
    for ours_model, theirs_model, tokenizer, name in (
        (pipeline.text_encoder, reference.text_encoder, pipeline.tokenizer, "text_encoder"),
        (pipeline.sdxl.text_encoder_2, reference.text_encoder_2, pipeline.sdxl.tokenizer_2, "text_encoder_2"),
    ):
        ids = tokenizer.encode(PROMPTS)
        ours = ours_model.apply(jnp.asarray(ids), None, True)
        with torch.no_grad():
            theirs = theirs_model(torch.from_numpy(ids.astype(np.int64)), output_hidden_states=True)
        assert len(ours.hidden_states) == len(theirs.hidden_states) == theirs_model.config.num_hidden_layers + 1
        _check(f"{name} penultimate hidden state", ours.hidden_states[-2], theirs.hidden_states[-2].numpy())
        _check(f"{name} last hidden state", ours.last_hidden_state, theirs.last_hidden_state.numpy())
        pooled = theirs.text_embeds if name == "text_encoder_2" else theirs.pooler_output
        _check(f"{name} pooled{' (projected)' if name == 'text_encoder_2' else ''}", ours.pooled, pooled.numpy())


@pytest.mark.parametrize("force_zeros", [True, False])
def test_encode_prompt_matches_diffusers(folders, force_zeros):
    """Per prompt: hidden states, pooled embedding and time ids as StableDiffusionXLPipeline
    builds them; "" is its unconditional (negative) conditioning: zeros under
    force_zeros_for_empty_prompt, the encoding of "" otherwise."""
    pipeline, reference = load_pipeline(folders[force_zeros]), _reference(folders[force_zeros])
    prompts = PROMPTS[:3]
    with torch.no_grad():
        hidden, negative, pooled, negative_pooled = reference.encode_prompt(
            prompts, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True)
        time_ids = reference._get_add_time_ids((16, 16), (0, 0), (16, 16), dtype=torch.float32,
                                               text_encoder_projection_dim=reference.text_encoder_2.config.projection_dim)
    ours = pipeline.encode_prompt(prompts + [""])
    assert isinstance(ours, SDXLConditioning)
    assert ours.hidden.shape == (4, 77, 80) and ours.pooled.shape == (4, 24) and ours.time_ids.shape == (4, 6)
    _check("encode_prompt hidden (both encoders)", ours.hidden[:3], hidden.numpy())
    _check("encode_prompt pooled", ours.pooled[:3], pooled.numpy())
    np.testing.assert_array_equal(ours.time_ids, np.broadcast_to(time_ids.numpy(), (4, 6)))
    if force_zeros:
        assert not np.any(negative.numpy()) and not np.any(negative_pooled.numpy())
        assert not np.any(ours.hidden[3]) and not np.any(ours.pooled[3])
    else:
        assert np.any(negative.numpy())
        _check("encode_prompt unconditional hidden", ours.hidden[3], negative[0].numpy())
        _check("encode_prompt unconditional pooled", ours.pooled[3], negative_pooled[0].numpy())
    assert pipeline.identity()["unconditional"] == ("zeros" if force_zeros else "empty_prompt")


def test_denoiser_on_encoded_prompts(pair):
    """The estimator's denoiser on encoded prompts: the UNet's ε at the nearest timestep."""
    pipeline, reference = pair
    table = pipeline.schedule.logsnr_table
    steps = np.array([3, 420, 999])
    z = np.random.default_rng(1).standard_normal((3, 4, 8, 8)).astype(np.float32)
    cond = pipeline.encode_prompt(PROMPTS[1:])
    ours = jax.jit(lambda d, z, a, c: d(z, a, c))(pipeline.denoiser, z, table[steps].astype(np.float32), cond)
    with torch.no_grad():
        theirs = reference.unet(torch.from_numpy(z), torch.from_numpy(steps), torch.from_numpy(np.array(cond.hidden)),
                                added_cond_kwargs={"text_embeds": torch.from_numpy(np.array(cond.pooled)),
                                                   "time_ids": torch.from_numpy(np.array(cond.time_ids))}).sample
    _check("denoiser (epsilon)", ours, theirs.numpy())


def test_ddim_with_guidance_matches_diffusers(pair):
    """A few DDIM steps with classifier-free guidance (unconditional = SDXL's zero embeddings)."""
    pipeline, reference = pair
    latents = np.random.default_rng(2).standard_normal((2, 4, 8, 8)).astype(np.float32)
    ours = generate(pipeline, PROMPTS[:2], latents=latents, steps=3, guidance_scale=5.0)
    with torch.no_grad():
        theirs = reference(PROMPTS[:2], num_inference_steps=3, guidance_scale=5.0, latents=torch.from_numpy(latents),
                           height=16, width=16, output_type="latent").images.numpy()
    _check("DDIM 3 steps + CFG 5.0 (latents)", ours.latents, theirs)
    assert ours.images.shape == (2, 16, 16, 3)


def test_vae_decodes_in_float32_for_sdxl(folders):
    """SDXL's VAE overflows in float16: the pipeline computes it in float32 whatever the dtype."""
    pipeline = load_pipeline(folders[True], dtype=jnp.float16)
    assert pipeline.vae.module.dtype == jnp.float32 and pipeline.unet.module.dtype == jnp.float16
    assert pipeline.identity()["vae_dtype"] == "float32"


SDXL_BASE_PARAM_COUNT = 2_567_463_684


@pytest.mark.slow
def test_sdxl_base_unet_parameter_count_matches_diffusers():
    """The published SDXL-base UNet: jaxpid's parameter tree has diffusers' count, tensor by tensor."""
    start = time.perf_counter()
    with torch.device("meta"):
        model = diffusers.UNet2DConditionModel(**SDXL_BASE_UNET)
    torch_shapes = {name: tuple(p.shape) for name, p in model.state_dict().items()}
    config = flax_unet.UNetConfig.from_dict(SDXL_BASE_UNET)
    expected = flax_unet.expected_params(config)
    count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(expected))
    print(f"SDXL-base UNet: jaxpid {count:,} parameters, diffusers {sum(map(np.prod, torch_shapes.values())):,} "
          f"({time.perf_counter() - start:.1f} s)")
    assert sum(int(np.prod(s)) for s in torch_shapes.values()) == SDXL_BASE_PARAM_COUNT == count
    from jaxpid.sd.models.convert import convert_state_dict

    # Every diffusers tensor lands on a jaxpid parameter of the right shape (zero-stride arrays: no memory).
    state = {name: np.broadcast_to(np.float32(0), shape) for name, shape in torch_shapes.items()}
    convert_state_dict(state, expected, what="unet")
