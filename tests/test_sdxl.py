"""SDXL without torch: loading (variants, shards, errors), the conditioning pytree and its rules,
and the unchanged estimator, CLI and sweeps on a tiny random SDXL folder written by the test.

Parity with diffusers' PyTorch SDXL is in test_sdxl_parity.py.
"""

import fnmatch
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from sd_folders import SDXL, write_random_pipeline

import jaxpid
from jaxpid.cli import main
from jaxpid.errors import ConfigError, NotAPipelineError, WeightsMismatchError
from jaxpid.sd.pipeline import ModelSpec, folder_identity, load_pipeline
from jaxpid.sd.prompts import subset_prompts
from jaxpid.sd.sdxl import SDXLConditioning, SizeConditioning
from jaxpid.sd.weights import fingerprint, hub_allow_patterns
from jaxpid.sweeps import SweepConfig, read_sweep, run_sweep

PROMPT = "a red car on the beach"
FAST = ["--samples", "8", "--steps", "3", "--chunk-size", "4"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_random_pipeline(tmp_path_factory.mktemp("sdxl") / "pipe", SDXL, seed=0)


@pytest.fixture(scope="module")
def pipeline(folder):
    return load_pipeline(folder)


def _copy(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "copy")


def _edit_json(path, **changes):
    value = json.loads(path.read_text())
    value.update(changes)
    path.write_text(json.dumps(value))


# ---------------------------------------------------------------------------------------------
# the conditioning pytree


def test_encode_prompt_is_one_pytree_per_prompt(pipeline):
    cond = pipeline.encode_prompt([PROMPT, "", "  ", "a dog"])
    assert isinstance(cond, SDXLConditioning) and pipeline.family == "sdxl"
    assert cond.hidden.shape == (4, 77, 80) and cond.pooled.shape == (4, 24) and cond.time_ids.shape == (4, 6)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(cond))
    # force_zeros_for_empty_prompt: the empty prompt is SDXL's zero unconditional; the time ids stay.
    assert not np.any(cond.hidden[1:3]) and not np.any(cond.pooled[1:3])
    assert np.all(np.abs(np.asarray(cond.hidden[0])).max(-1) > 0)
    np.testing.assert_array_equal(cond.time_ids, np.tile([16, 16, 0, 0, 16, 16], (4, 1)))
    # one encoder per half of the features, each its penultimate layer
    assert np.any(cond.hidden[0, :, :32]) and np.any(cond.hidden[0, :, 32:])


def test_identity_records_family_unconditional_rule_and_time_ids(folder, pipeline):
    identity = pipeline.identity()
    assert identity["family"] == "sdxl" and identity["unconditional"] == "zeros"
    assert identity["time_ids"] == [16, 16, 0, 0, 16, 16] and identity["vae_dtype"] == "float32"
    assert ModelSpec(str(folder)).identity() == identity == folder_identity(folder)
    assert ModelSpec.from_identity(identity) == ModelSpec(str(folder), time_ids=(16, 16, 0, 0, 16, 16))


def test_size_conditioning_is_settable_and_recorded(folder, pipeline):
    sized = pipeline.with_size_conditioning(original_size=(12, 20), crop_top_left=(2, 3))
    cond = sized.encode_prompt([PROMPT])
    np.testing.assert_array_equal(cond.time_ids, [[12, 20, 2, 3, 16, 16]])
    assert sized.identity()["time_ids"] == [12, 20, 2, 3, 16, 16]
    base = pipeline.encode_prompt([PROMPT])
    z = np.random.default_rng(0).standard_normal((1, 4, 8, 8)).astype(np.float32)
    denoise = jax.jit(lambda d, z, c: d(z, jnp.float32(0.5), c))
    assert not np.allclose(denoise(pipeline.denoiser, z, cond), denoise(pipeline.denoiser, z, base), atol=1e-5)
    spec = ModelSpec(str(folder), time_ids=(12, 20, 2, 3, 16, 16))
    assert spec.load().identity() == sized.identity() == spec.identity()
    with pytest.raises(ConfigError, match="time ids"):
        ModelSpec(str(folder), time_ids=(16, 16))
    with pytest.raises(ConfigError, match="crop_top_left"):
        SizeConditioning((16, 16), (-1, 0))


def test_time_ids_and_size_conditioning_are_sdxl_only(tmp_path):
    sd = write_random_pipeline(tmp_path / "sd1", "sd1", seed=0)
    with pytest.raises(ConfigError, match="not an SDXL folder"):
        load_pipeline(sd, time_ids=(16, 16, 0, 0, 16, 16))
    pipeline = load_pipeline(sd)
    assert pipeline.family == "sd" and "family" not in pipeline.identity()
    with pytest.raises(ConfigError, match="SDXL pipelines only"):
        pipeline.with_size_conditioning((8, 8))


def test_empty_prompt_rule_follows_force_zeros(tmp_path):
    folder = write_random_pipeline(tmp_path / "pipe", SDXL, seed=0, force_zeros=False)
    pipeline = load_pipeline(folder)
    cond = pipeline.encode_prompt(["", PROMPT])
    assert np.any(cond.hidden[0]) and np.any(cond.pooled[0])  # the encoding of ""
    assert pipeline.identity()["unconditional"] == "empty_prompt"


# ---------------------------------------------------------------------------------------------
# files: variants, shards, fingerprints, hub patterns


def test_fp16_variant_and_sharded_text_encoder_2(folder, pipeline, tmp_path):
    copy = _copy(folder, tmp_path)
    for component, base in (("unet", "diffusion_pytorch_model"), ("text_encoder", "model"), ("vae", "diffusion_pytorch_model")):
        path = copy / component / f"{base}.safetensors"
        save_file({k: v.astype(np.float16) for k, v in load_file(path).items()}, str(copy / component / f"{base}.fp16.safetensors"))
        path.unlink()
    encoder_2 = copy / "text_encoder_2"
    tensors = {k: v.astype(np.float16) for k, v in load_file(encoder_2 / "model.safetensors").items()}
    (encoder_2 / "model.safetensors").unlink()
    names = sorted(tensors)
    weight_map = {}
    for i, part in enumerate((names[::2], names[1::2])):
        shard = f"model.fp16-{i + 1:05d}-of-00002.safetensors"
        save_file({n: tensors[n] for n in part}, str(encoder_2 / shard))
        weight_map.update({n: shard for n in part})
    (encoder_2 / "model.safetensors.index.fp16.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))

    half = load_pipeline(copy, variant="fp16")
    assert half.identity()["variant"] == "fp16" and half.fingerprint != pipeline.fingerprint
    ours, reference = half.encode_prompt([PROMPT]), pipeline.encode_prompt([PROMPT])
    for got, want in zip(jax.tree.leaves(ours), jax.tree.leaves(reference)):
        np.testing.assert_allclose(got, want, atol=2e-2 * float(np.abs(want).max()))


def test_fingerprint_and_hub_patterns_cover_the_second_encoder(folder, tmp_path):
    copy = _copy(folder, tmp_path)
    before = fingerprint(copy)
    _edit_json(copy / "tokenizer_2" / "tokenizer_config.json", model_max_length=77, note="edited")
    assert fingerprint(copy) != before
    patterns = hub_allow_patterns()
    for name in ("text_encoder_2/config.json", "text_encoder_2/model.safetensors", "tokenizer_2/vocab.json",
                 "tokenizer_2/merges.txt", "text_encoder_2/model-00001-of-00002.safetensors"):
        assert any(fnmatch.fnmatch(name, p) for p in patterns), name


# ---------------------------------------------------------------------------------------------
# bad inputs: specific errors naming the component and tensor


def test_missing_text_encoder_2_is_named(folder, tmp_path):
    copy = _copy(folder, tmp_path)
    shutil.rmtree(copy / "text_encoder_2")
    with pytest.raises(NotAPipelineError, match=r"text_encoder_2 \(CLIPTextModelWithProjection\).*missing"):
        load_pipeline(copy)
    index = json.loads((copy / "model_index.json").read_text())
    del index["text_encoder_2"]
    (copy / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(NotAPipelineError, match="needs component text_encoder_2.*does not list it"):
        load_pipeline(copy)


def test_pooled_projection_size_mismatch_is_named(folder, tmp_path):
    copy = _copy(folder, tmp_path)
    _edit_json(copy / "text_encoder_2" / "config.json", projection_dim=16)
    with pytest.raises(ConfigError, match=r"pooled-projection size mismatch: text_encoder_2 text_projection\.weight "
                                          r"gives projection_dim 16.*add_embedding\.linear_1\.weight takes 72"):
        load_pipeline(copy)
    # Configs that agree with each other but not with the checkpoint: the strict loader names the tensor.
    _edit_json(copy / "unet" / "config.json", projection_class_embeddings_input_dim=16 + 48)
    with pytest.raises(WeightsMismatchError, match=r"text_encoder_2(.|\n)*text_projection\.weight: checkpoint \(24, 48\)"):
        load_pipeline(copy)


def test_second_encoder_without_projection_head_is_named(folder, tmp_path):
    copy = _copy(folder, tmp_path)
    path = copy / "text_encoder_2" / "model.safetensors"
    tensors = load_file(path)
    del tensors["text_projection.weight"]  # a CLIPTextModel saved where SDXL needs the projection
    save_file(tensors, str(path))
    with pytest.raises(WeightsMismatchError, match=r"text_encoder_2(.|\n)*missing tensors(.|\n)*text_projection\.weight"):
        load_pipeline(copy)


@pytest.mark.parametrize("kind", ["text_image", "image"])
def test_unsupported_addition_embedding_is_named(folder, tmp_path, kind):
    copy = _copy(folder, tmp_path)
    _edit_json(copy / "unet" / "config.json", addition_embed_type=kind)
    with pytest.raises(ConfigError, match=f"unet config addition_embed_type='{kind}' is not supported"):
        load_pipeline(copy)


def test_sdxl_folder_with_a_plain_unet_is_refused(folder, tmp_path):
    copy = _copy(folder, tmp_path)
    _edit_json(copy / "unet" / "config.json", addition_embed_type=None)
    with pytest.raises(ConfigError, match="needs a unet with addition_embed_type 'text_time'"):
        load_pipeline(copy)


def test_refiner_only_folder_is_refused(folder, tmp_path):
    copy = _copy(folder, tmp_path)
    _edit_json(copy / "model_index.json", _class_name="StableDiffusionXLImg2ImgPipeline", requires_aesthetics_score=True,
               text_encoder=[None, None], tokenizer=[None, None], force_zeros_for_empty_prompt=False)
    with pytest.raises(NotAPipelineError, match="refiner-only"):
        load_pipeline(copy)


# ---------------------------------------------------------------------------------------------
# the estimator, the CLI and sweeps, unchanged


@pytest.mark.e2e  # a whole `jaxpid pid` run; CI runs the e2e tier after the default suite
def test_cli_pid_on_sdxl_writes_a_result_folder(folder, tmp_path):
    out = tmp_path / "run"
    assert main(["pid", PROMPT, "--sources", "red", "car", "--model", str(folder), "--seed", "0", "--out", str(out),
                 "--no-conditional", *FAST]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["image_0.png", "maps.npz", "panel.png", "result.json"]
    record = json.loads((out / "result.json").read_text())
    model = record["config"]["model"]
    assert model["family"] == "sdxl" and model["unconditional"] == "zeros" and model["time_ids"] == [16, 16, 0, 0, 16, 16]
    assert record["config"]["subset_prompts"] == ["", "red", "car", "red car"]
    atoms = record["results"][0]["atoms"]
    assert set(atoms) == {"{1}{2}", "{1}", "{2}", "{12}"} and all(np.isfinite(a["nats"]) for a in atoms.values())
    assert main(["mi", PROMPT, "--words", "red", "--model", str(folder), "--time-ids", "12", "20", "2", "3", "16", "16",
                 "--out", str(tmp_path / "mi"), *FAST]) == 0
    record = json.loads((tmp_path / "mi" / "result.json").read_text())
    assert np.isfinite(record["results"][0]["cmi"]["red"]["nats"])
    assert record["config"]["model"]["time_ids"] == [12, 20, 2, 3, 16, 16]


def test_sweep_rows_are_the_pid_of_their_jobs(pipeline, tmp_path):
    """Sweep batches stack SDXL conditionings per job (jax.tree.map), as the API does by hand."""
    jobs = [{"prompt": f"a {c} car on the beach", "sources": [c, "car"], "seed": s} for c, s in (("red", 0), ("blue", 1))]
    config = SweepConfig.from_options(n_samples=4, steps=2, batch_size=2, chunk_size=2, measures=("mmi",))
    run_sweep(pipeline, jobs, tmp_path / "sweep", config)
    rows = read_sweep(tmp_path / "sweep").to_pylist()

    images = jaxpid.generate(pipeline, [j["prompt"] for j in jobs], seeds=[j["seed"] for j in jobs], steps=2)
    prompts = [p for j in jobs for p in subset_prompts(j["prompt"], j["sources"], conditional=False).prompts]
    conds = jax.tree.map(lambda a: a.reshape((2, 4) + a.shape[1:]), pipeline.encode_prompt(prompts))
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(np.array([0, 1], np.uint32))
    res = jaxpid.pid(pipeline.denoiser, images.latents, conds, key=keys, n_samples=4, chunk_size=2, conds_per_image=True,
                     measure="mmi")  # the sweep's measure, in the default (anchored) form of both
    for i, row in enumerate(sorted(rows, key=lambda r: r["job"])):
        np.testing.assert_allclose(row["atoms"], [res.atoms[n][i] for n in res.names], rtol=1e-6, atol=1e-9)


def test_attention_capture_takes_the_sdxl_conditioning(pipeline):
    """with_aux (the localization and intervention studies' attention) passes SDXL's pooled text and
    time ids to the UNet as __call__ does: the same ε̂, and one map per token of the hidden states."""
    cond = pipeline.encode_prompt([PROMPT, "a dog"])
    z = jax.random.normal(jax.random.key(0), (2,) + pipeline.latent_shape)
    logsnr = jnp.array([0.5, -1.0])
    eps, maps = pipeline.denoiser.with_aux(z, logsnr, cond)
    np.testing.assert_array_equal(np.asarray(eps), np.asarray(pipeline.denoiser(z, logsnr, cond)))
    assert maps.shape == (2, 77) + pipeline.latent_shape[1:] and np.all(np.isfinite(np.asarray(maps)))
    res = jaxpid.information(pipeline.denoiser, z[:1], cond, key=jax.random.key(1), n_samples=4, chunk_size=2,
                             collect_aux=True)
    assert res.aux.shape == (1, 2, 77) + pipeline.latent_shape[1:]
