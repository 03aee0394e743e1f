"""Stable Diffusion 3 folders loaded into a jaxpid Pipeline, against diffusers' StableDiffusion3Pipeline.

Tiny random folders written by diffusers itself (tests/sd3_folders.py), with and without T5. Each
comparison prints the largest error relative to the output's scale; fp32 tolerance 1e-5.
"""

from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sd3_folders import JOINT_DIM, POOLED_DIM, SCALING_FACTOR, SHIFT_FACTOR, write_tiny_sd3

import jaxpid
from jaxpid.errors import ConfigError, NotAPipelineError, PromptError, WeightsMismatchError
from jaxpid.sd.flow import FlowDenoiser, FlowMatchSchedule, flow_input_scale, flow_time
from jaxpid.sd.pipeline import ModelSpec, folder_identity, load_pipeline
from jaxpid.sd.sd3 import SD3Conditioning
from jaxpid.sd.weights import pipeline_family, read_model_index

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

PROMPTS = ["a photo of a cat", "a red car on the beach", "A Woman Doctor", ""]
RTOL = 1e-5


def _check(name, ours, theirs, rtol=RTOL):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, (name, ours.shape, theirs.shape)
    error = np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-30)
    print(f"SD3 parity {name}: max relative error {error:.2e}")
    assert error < rtol, (name, error)


def _reference(folder):
    index = json.loads((folder / "model_index.json").read_text())
    without_t5 = {} if index["text_encoder_3"][0] else {"text_encoder_3": None, "tokenizer_3": None}
    pipe = diffusers.StableDiffusion3Pipeline.from_pretrained(folder, **without_t5)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd3")
    return {"t5": write_tiny_sd3(root / "t5", seed=1), "no_t5": write_tiny_sd3(root / "no_t5", with_t5=False, seed=2),
            "sd35": write_tiny_sd3(root / "sd35", sd35=True, seed=3)}


@pytest.fixture(scope="module")
def pair(folders):
    return load_pipeline(folders["t5"]), _reference(folders["t5"])


def test_loads_as_the_sd3_family(pair, folders):
    pipeline, _ = pair
    assert pipeline.family == "sd3" and pipeline_family(folders["t5"], read_model_index(folders["t5"])) == "sd3"
    assert pipeline.latent_shape == (16, 8, 8) and pipeline.image_size == (16, 16)
    assert isinstance(pipeline.schedule, FlowMatchSchedule) and pipeline.schedule.shift == 3.0
    assert isinstance(pipeline.denoiser, FlowDenoiser) and not hasattr(pipeline.denoiser, "snap_logsnr")
    identity = pipeline.identity()
    assert identity["family"] == "sd3" and identity["prediction_type"] == "flow" and identity["text_encoder_3"]
    assert identity["max_sequence_length"] == 256
    assert folder_identity(folders["t5"]) == identity == ModelSpec(str(folders["t5"])).identity()
    assert not load_pipeline(folders["no_t5"]).identity()["text_encoder_3"]


def test_text_encoders_and_tokenizers_match(pair):
    """CLIP-L / CLIP-G: penultimate hidden states and projected pooled outputs; T5: ids (tokenizer.json
    read by the tokenizers library vs transformers' T5 tokenizer) and last hidden state."""
    pipeline, reference = pair
    for ours_model, theirs_model, tokenizer, name in (
        (pipeline.text_encoder, reference.text_encoder, pipeline.tokenizer, "text_encoder (CLIP-L)"),
        (pipeline.sd3.text_encoder_2, reference.text_encoder_2, pipeline.sd3.tokenizer_2, "text_encoder_2 (CLIP-G)"),
    ):
        ids = tokenizer.encode(PROMPTS)
        ours = ours_model.apply(jnp.asarray(ids), None, True)
        with torch.no_grad():
            theirs = theirs_model(torch.from_numpy(ids.astype(np.int64)), output_hidden_states=True)
        _check(f"{name} penultimate hidden state", ours.hidden_states[-2], theirs.hidden_states[-2].numpy())
        _check(f"{name} pooled (projected)", ours.pooled, theirs.text_embeds.numpy())
    ids = pipeline.sd3.tokenizer_3.encode(PROMPTS)
    theirs_ids = reference.tokenizer_3(PROMPTS, padding="max_length", max_length=256, truncation=True,
                                       add_special_tokens=True).input_ids
    np.testing.assert_array_equal(ids, np.asarray(theirs_ids))
    assert ids.shape == (4, 256) and ids[3, 0] == pipeline.sd3.tokenizer_3.end_id  # "" is just </s>, then pads
    with torch.no_grad():
        theirs = reference.text_encoder_3(torch.from_numpy(ids.astype(np.int64)))[0].numpy()
    _check("text_encoder_3 (T5) last hidden state", pipeline.sd3.text_encoder_3.apply(jnp.asarray(ids)), theirs)


@pytest.mark.parametrize("which", ["t5", "no_t5"])
def test_encode_prompt_matches_diffusers(folders, which):
    """hidden = [CLIP-L | CLIP-G zero-padded to T5's width ; T5 tokens (or zeros)], pooled = both
    projections; "" is diffusers' negative (unconditional) prompt."""
    pipeline, reference = load_pipeline(folders[which]), _reference(folders[which])
    prompts = PROMPTS[:3]
    with torch.no_grad():
        hidden, negative, pooled, negative_pooled = reference.encode_prompt(
            prompts, None, None, device="cpu", do_classifier_free_guidance=True)
    ours = pipeline.encode_prompt(prompts + [""])
    assert isinstance(ours, SD3Conditioning)
    assert ours.hidden.shape == (4, 77 + 256, JOINT_DIM) and ours.pooled.shape == (4, POOLED_DIM)
    _check(f"encode_prompt hidden ({which})", ours.hidden[:3], hidden.numpy())
    _check(f"encode_prompt pooled ({which})", ours.pooled[:3], pooled.numpy())
    _check(f"encode_prompt unconditional hidden ({which})", ours.hidden[3], negative[0].numpy())
    _check(f"encode_prompt unconditional pooled ({which})", ours.pooled[3], negative_pooled[0].numpy())
    assert not np.any(ours.hidden[:, :77, 40:])  # the CLIP features' zero padding
    if which == "no_t5":
        assert not np.any(ours.hidden[:, 77:])


@pytest.mark.parametrize("which", ["t5", "sd35"])
def test_denoiser_is_the_transformer_velocity_at_flow_time(folders, which):
    """ε̂(z, λ) = x_t + (1 − t)·v̂(x_t, 1000·t) with t = σ(−λ/2) and x_t = z·√((1 − t)² + t²), the
    velocity from diffusers' transformer; λ spans the scheduler's range (t = 1: λ = −∞ excluded)."""
    pipeline, reference = load_pipeline(folders[which]), _reference(folders[which])
    logsnr = np.array([-9.0, -1.5, 0.0, 4.0, 11.6], np.float32)
    z = np.random.default_rng(0).standard_normal((5, 16, 8, 8)).astype(np.float32)
    cond = pipeline.encode_prompt(["a photo of a cat", "", "a red car on the beach", "A Woman Doctor", "dog"])
    ours = jax.jit(lambda d, z, a, c: d(z, a, c))(pipeline.denoiser, z, logsnr, cond)
    t = np.asarray(flow_time(logsnr))
    x_t = z * np.asarray(flow_input_scale(t))[:, None, None, None]
    with torch.no_grad():
        velocity = reference.transformer(torch.from_numpy(x_t), torch.from_numpy(np.array(cond.hidden)),
                                         torch.from_numpy(np.array(cond.pooled)), torch.from_numpy(1000 * t)).sample
    _check(f"denoiser ε̂ ({which})", ours, x_t + (1 - t)[:, None, None, None] * velocity.numpy())


def test_vae_latents_use_shift_and_scaling_factor(pair):
    """encode: (posterior mean − shift_factor)·scaling_factor; decode: latents/scaling_factor + shift_factor."""
    pipeline, reference = pair
    assert (pipeline.vae.module.config.shift_factor, pipeline.vae.module.config.scaling_factor) == \
        (SHIFT_FACTOR, SCALING_FACTOR)
    pixels = np.random.default_rng(1).uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
    latents = pipeline.encode_pixels(pixels)
    with torch.no_grad():
        mean = reference.vae.encode(torch.from_numpy(pixels)).latent_dist.mean.numpy()
        decoded = reference.vae.decode(torch.from_numpy(np.array(latents)) / SCALING_FACTOR + SHIFT_FACTOR).sample
    _check("vae encode (shifted, scaled)", latents, (mean - SHIFT_FACTOR) * SCALING_FACTOR)
    images = pipeline.decode_latents(latents)
    expected = np.round(np.clip(decoded.numpy() / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1) * 255)
    assert np.abs(images.astype(np.int32) - expected).max() <= 1


def test_information_runs_on_sd3_conditionings(pair, compilations):
    """The estimator takes the SD3Conditioning pytree like SDXL's: subset prompts stacked per image;
    other prompts of the same count reuse the compiled pass (the weights are arguments)."""
    pipeline, _ = pair
    conds = pipeline.encode_prompt(["", "cat", "red", "red cat"])
    x = np.random.default_rng(2).standard_normal((1, 16, 8, 8)).astype(np.float32)
    res = jaxpid.information(pipeline.denoiser, x, conds, key=jax.random.key(0), n_samples=4)
    assert res.mi_orthogonal.shape == (1, 4) and np.all(np.isfinite(res.mi_standard))
    assert np.all(res.mi_orthogonal[:, 1:] > 0) and res.mi_orthogonal[0, 0] == 0
    other = pipeline.encode_prompt(["", "dog", "blue", "blue dog"])
    with compilations() as count:
        again = jaxpid.information(pipeline.denoiser, x, other, key=jax.random.key(0), n_samples=4)
    assert count[0] == 0 and not np.allclose(again.mi_orthogonal, res.mi_orthogonal)


def test_unsupported_folders_name_the_component(folders, tmp_path):
    """A Flux folder (FluxTransformer2DModel, T5 as text_encoder_2) is refused naming the transformer;
    an SD3 folder missing a part, or with mismatched parts, names that part."""
    index = json.loads((folders["t5"] / "model_index.json").read_text())
    flux = {**index, "_class_name": "FluxPipeline", "transformer": ["diffusers", "FluxTransformer2DModel"],
            "text_encoder_2": ["transformers", "T5EncoderModel"]}
    bad = tmp_path / "flux"
    bad.mkdir()
    (bad / "model_index.json").write_text(json.dumps(flux))
    with pytest.raises(NotAPipelineError, match=r"component transformer is 'FluxTransformer2DModel'"):
        load_pipeline(bad)
    missing = {k: v for k, v in index.items() if k != "text_encoder_2"}
    (bad / "model_index.json").write_text(json.dumps(missing))
    with pytest.raises(NotAPipelineError, match="text_encoder_2"):
        load_pipeline(bad)
    # An SD3.5 transformer config over SD3 weights: the strict loader names the transformer's tensors.
    copy = tmp_path / "mixed"
    shutil.copytree(folders["t5"], copy)
    shutil.copy(folders["sd35"] / "transformer" / "config.json", copy / "transformer" / "config.json")
    with pytest.raises(WeightsMismatchError, match=r"transformer: .*\n.*missing"):
        load_pipeline(copy)
    # A T5 of another width than the transformer's joint_attention_dim.
    config = json.loads((folders["t5"] / "text_encoder_3" / "config.json").read_text())
    (copy / "text_encoder_3" / "config.json").write_text(json.dumps({**config, "d_model": 40}))
    with pytest.raises(ConfigError, match="text_encoder_3 d_model 40"):
        load_pipeline(copy)
    with pytest.raises(ConfigError, match="SDXL"):
        load_pipeline(folders["t5"], time_ids=(16, 16, 0, 0, 16, 16))


def test_t5_computes_in_float32_under_float16(folders):
    """T5 v1.1 overflows in float16: the pipeline runs it in float32 then, and records it."""
    half = load_pipeline(folders["t5"], dtype=jnp.float16)
    assert half.sd3.text_encoder_3.module.dtype == jnp.float32 and half.unet.module.dtype == jnp.float16
    assert half.identity()["t5_dtype"] == "float32" == folder_identity(folders["t5"], dtype=jnp.float16)["t5_dtype"]
    assert load_pipeline(folders["t5"], dtype=jnp.bfloat16).identity()["t5_dtype"] == "bfloat16"


def test_over_long_prompts_are_refused(pair):
    pipeline, _ = pair
    with pytest.raises(PromptError, match="77"):
        pipeline.encode_prompt(["cat " * 80])


def test_dropping_t5_is_diffusers_without_text_encoder_3(folders, tmp_path):
    """t5=False on a folder with T5: nothing of text_encoder_3 is read (here its weights are gone), the
    conditioning is diffusers' with text_encoder_3=None (zeros for T5's 256 tokens), and the identity
    says so: another sweep fingerprint, and a ModelSpec that round-trips through it."""
    copy = tmp_path / "t5_weights_gone"
    shutil.copytree(folders["t5"], copy)
    for weights in (copy / "text_encoder_3").glob("*.safetensors"):
        weights.unlink()
    pipeline = load_pipeline(copy, t5=False)
    assert pipeline.sd3.text_encoder_3 is None and pipeline.sd3.tokenizer_3 is None
    reference = diffusers.StableDiffusion3Pipeline.from_pretrained(folders["t5"], text_encoder_3=None, tokenizer_3=None)
    with torch.no_grad():
        hidden, _, pooled, _ = reference.encode_prompt(PROMPTS[:2], None, None, device="cpu",
                                                       do_classifier_free_guidance=False)
    ours = pipeline.encode_prompt(PROMPTS[:2])
    _check("encode_prompt hidden (t5 dropped)", ours.hidden, hidden.numpy())
    _check("encode_prompt pooled (t5 dropped)", ours.pooled, pooled.numpy())
    assert ours.hidden.shape == (2, 77 + 256, JOINT_DIM) and not np.any(ours.hidden[:, 77:])

    spec = ModelSpec(str(folders["t5"]), t5=False)
    identity = spec.identity()
    assert identity["text_encoder_3"] is False and identity == load_pipeline(folders["t5"], t5=False).identity()
    assert identity != ModelSpec(str(folders["t5"])).identity()
    assert identity == folder_identity(folders["t5"], t5=False)
    assert ModelSpec.from_identity(identity) == spec
    assert ModelSpec.from_identity(ModelSpec(str(folders["t5"])).identity()).t5
    # a folder without T5 is the same with or without the flag
    assert ModelSpec(str(folders["no_t5"]), t5=False).identity() == ModelSpec(str(folders["no_t5"])).identity()


def test_t5_max_sequence_length(folders):
    """diffusers' max_sequence_length: T5's token count (zeros of that count without T5), recorded."""
    pipeline = load_pipeline(folders["t5"], max_sequence_length=32)
    reference = _reference(folders["t5"])
    with torch.no_grad():
        hidden, _, _, _ = reference.encode_prompt(PROMPTS[:2], None, None, device="cpu",
                                                  do_classifier_free_guidance=False, max_sequence_length=32)
    ours = pipeline.encode_prompt(PROMPTS[:2])
    assert ours.hidden.shape == (2, 77 + 32, JOINT_DIM)
    _check("encode_prompt hidden (T5 length 32)", ours.hidden, hidden.numpy())
    assert pipeline.identity()["max_sequence_length"] == 32 == folder_identity(
        folders["t5"], max_sequence_length=32)["max_sequence_length"]
    assert ModelSpec.from_identity(pipeline.identity()).max_sequence_length == 32
    dropped = load_pipeline(folders["t5"], t5=False, max_sequence_length=8).encode_prompt(["cat"])
    assert dropped.hidden.shape == (1, 77 + 8, JOINT_DIM)
    with pytest.raises(PromptError, match="32"):
        pipeline.encode_prompt(["cat " * 40])
    for bad in (0, 513, True):
        with pytest.raises(ConfigError, match="max_sequence_length"):
            ModelSpec(str(folders["t5"]), max_sequence_length=bad)


def test_t5_options_are_refused_for_other_families():
    with pytest.raises(ConfigError, match=r"Stable Diffusion 3 folders only; this is a 'sd' folder"):
        load_pipeline("demo", t5=False)
    with pytest.raises(ConfigError, match="Stable Diffusion 3 folders only"):
        ModelSpec("demo", t5=False).identity()
    with pytest.raises(ConfigError, match="max_sequence_length applies to Stable Diffusion 3"):
        folder_identity("demo", max_sequence_length=77)
    with pytest.raises(ConfigError, match="t5="):
        ModelSpec("demo", t5="no")
    assert ModelSpec("demo").identity() == folder_identity("demo")  # SD identities carry no T5 fields
    assert "text_encoder_3" not in ModelSpec("demo").identity()
