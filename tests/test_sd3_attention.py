"""SD3's text→image attention maps for the studies (docs/sd3.md#attention-maps), on tiny folders
written by diffusers (needs torch).

The maps are checked against probabilities computed directly from diffusers' transformer: a
processor installed on every joint attention layer recomputes the queries and keys from the
layer's own weights and takes the softmax over [image; text] keys in float64, before running
diffusers' processor unchanged. Then the maps go through the fused pass and both studies'
attention baselines.
"""

from __future__ import annotations

import jax
import numpy as np
import pyarrow.parquet as pq
import pytest
from sd3_folders import write_tiny_sd3

import jaxpid
from jaxpid.core.config import EstimatorConfig
from jaxpid.core.estimator import FusedPass
from jaxpid.sd.ddim import GenerationConfig
from jaxpid.sd.flow import FlowDenoiser, flow_input_scale, flow_time
from jaxpid.sd.models import mmdit
from jaxpid.studies.intervention import InterventionConfig, run_intervention
from jaxpid.studies.localize import LocalizeConfig, LocalizePlan, localize
from jaxpid.studies.localize_items import demo_items

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

PROMPTS = ["a photo of a cat", "a red car on the beach", "", "A Woman Doctor"]
LOGSNR = np.array([-4.0, 0.0, 2.5, 8.0], np.float32)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd3attention")
    return {"sd3": write_tiny_sd3(root / "sd3", seed=11), "sd35": write_tiny_sd3(root / "sd35", sd35=True, seed=12)}


@pytest.fixture(scope="module")
def pipeline(folders):
    return jaxpid.load_pipeline(folders["sd3"])


class _Recording:
    """Wraps a layer's JointAttnProcessor2_0: records, per call, the image queries' probabilities on
    the text keys averaged over heads (B, N, L) and their mass on the image keys (B, N)."""

    def __init__(self, processor, records):
        self.processor, self.records = processor, records

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, *args, **kwargs):
        batch, heads = hidden_states.shape[0], attn.heads

        def split(x):
            return x.view(batch, -1, heads, x.shape[-1] // heads).transpose(1, 2).double()

        q, k = split(attn.to_q(hidden_states)), split(attn.to_k(hidden_states))
        ck = split(attn.add_k_proj(encoder_hidden_states))
        if attn.norm_q is not None:
            q, k, ck = attn.norm_q(q.float()).double(), attn.norm_k(k.float()).double(), \
                attn.norm_added_k(ck.float()).double()
        logits = q @ torch.cat([k, ck], dim=2).transpose(-1, -2) / np.sqrt(q.shape[-1])
        probabilities = torch.softmax(logits, dim=-1).mean(dim=1)  # (B, N, N + L)
        n = hidden_states.shape[1]
        self.records.append((probabilities[:, :, n:].numpy(), probabilities[:, :, :n].sum(-1).numpy()))
        return self.processor(attn, hidden_states, encoder_hidden_states, *args, **kwargs)


def _torch_maps(folder, x_t, timesteps, cond, patch):
    model = diffusers.SD3Transformer2DModel.from_pretrained(folder / "transformer").eval()
    records = []
    for block in model.transformer_blocks:  # attn2 (SD3.5's image-only attention) has no text keys
        block.attn.set_processor(_Recording(block.attn.processor, records))
    with torch.no_grad():
        model(torch.from_numpy(x_t), torch.from_numpy(np.array(cond.hidden)), torch.from_numpy(np.array(cond.pooled)),
              torch.from_numpy(timesteps))
    assert len(records) == model.config.num_layers  # every block, the context-pre-only last one too
    text = np.mean([r[0] for r in records], axis=0)  # (B, N, L)
    image_mass = np.mean([r[1] for r in records], axis=0)  # (B, N)
    batch, _, height, width = x_t.shape
    grid = text.reshape(batch, height // patch, width // patch, -1).transpose(0, 3, 1, 2)
    return np.repeat(np.repeat(grid, patch, axis=2), patch, axis=3), image_mass


@pytest.mark.parametrize("which", ["sd3", "sd35"])
def test_attention_maps_are_the_joint_softmax_of_diffusers_transformer(folders, which):
    """The maps over all 77 + 256 text keys equal the torch computation (block mean, each patch's value
    on its 2x2 latent positions); per position they sum over the text to at most 1, the rest being the
    image keys' share; with_aux returns the plain call's ε̂ and the first 77 (CLIP) positions."""
    pipeline = jaxpid.load_pipeline(folders[which])
    cond = pipeline.encode_prompt(PROMPTS)
    z = np.random.default_rng(0).standard_normal((4,) + pipeline.latent_shape).astype(np.float32)
    t = np.asarray(flow_time(LOGSNR))
    x_t = z * np.asarray(flow_input_scale(t))[:, None, None, None]
    transformer = pipeline.unet
    _, maps = jax.jit(mmdit.apply_capturing_attention, static_argnums=0)(
        transformer.module, transformer.params, x_t, 1000 * t, cond.hidden, cond.pooled)
    maps = np.asarray(maps, np.float64)
    expected, image_mass = _torch_maps(folders[which], x_t, (1000 * t).astype(np.float32), cond,
                                       transformer.module.config.patch_size)
    assert maps.shape == (4, 77 + 256, 8, 8) == expected.shape
    error = np.abs(maps - expected).max() / expected.max()
    print(f"SD3 attention maps ({which}) vs torch: max relative error {error:.2e}")
    assert error < 1e-5
    text_mass = maps.sum(axis=1)  # per latent position
    assert np.all(text_mass <= 1 + 1e-6) and np.all(text_mass > 0)
    image_grid = np.repeat(np.repeat(image_mass.reshape(4, 4, 4), 2, axis=1), 2, axis=2)
    np.testing.assert_allclose(text_mass + image_grid, 1.0, atol=1e-5)

    denoiser = pipeline.denoiser
    plain = jax.jit(lambda d, z, a, c: d(z, a, c))(denoiser, z, LOGSNR, cond)
    eps, aux = jax.jit(lambda d, z, a, c: d.with_aux(z, a, c))(denoiser, z, LOGSNR, cond)
    np.testing.assert_allclose(np.asarray(eps), np.asarray(plain), rtol=1e-6, atol=1e-6)
    assert aux.shape == (4, 77, 8, 8) and aux.dtype == np.float32
    np.testing.assert_allclose(np.asarray(aux), maps[:, :77], rtol=1e-5, atol=1e-7)


def test_a_velocity_without_maps_gives_a_denoiser_without_with_aux():
    """The studies ask ``getattr(denoiser, "with_aux", None)``: a flow denoiser of a plain velocity says no."""
    denoiser = FlowDenoiser(velocity=lambda x_t, timesteps, cond: x_t)
    assert getattr(denoiser, "with_aux", None) is None
    with pytest.raises(jaxpid.ConfigError, match="with_aux"):
        FusedPass(denoiser, n_samples=2, collect_aux=True)


def test_the_fused_pass_averages_the_maps_and_changes_no_number(pipeline, compilations):
    latents = jax.random.normal(jax.random.key(0), (2,) + pipeline.latent_shape)
    conds = pipeline.encode_prompt(["", "a car on the beach", "a red car on the beach"])
    kwargs = dict(n_samples=2, reference=0, pairs=[(2, 1)])
    res = FusedPass(pipeline.denoiser, collect_aux=True, **kwargs)(latents, conds, key=jax.random.key(1))
    plain = FusedPass(pipeline.denoiser, **kwargs)(latents, conds, key=jax.random.key(1))
    np.testing.assert_allclose(res.mi_orthogonal, plain.mi_orthogonal, rtol=1e-5)
    assert res.aux.shape == (2, 3, 77, 8, 8)
    mass = res.aux.sum(axis=2)
    assert np.all(np.isfinite(res.aux)) and np.all(mass > 0) and np.all(mass <= 1 + 1e-6)
    with compilations() as count:  # other prompts of the same count: the capturing pass is reused
        FusedPass(pipeline.denoiser, collect_aux=True, **kwargs)(
            latents, pipeline.encode_prompt(["", "a dog", "a blue dog"]), key=jax.random.key(1))
    assert count[0] == 0


def test_localize_and_intervene_attention_baselines_run_on_sd3(pipeline, tmp_path):
    """Both studies read the maps at the CLIP tokenizer's word positions, unchanged."""
    estimator = EstimatorConfig(n_samples=2, chunk_size=2)
    plan = LocalizePlan(demo_items(2, seed=1), LocalizeConfig(estimator, methods=("cmi", "attention"), batch_size=2),
                        pipeline.identity(), source="demo")
    summary = localize(pipeline, plan, tmp_path / "localize")
    assert summary is not None
    rows = [r for r in pq.read_table(tmp_path / "localize" / "items.parquet").to_pylist() if r["method"] == "attention"]
    assert len(rows) == 2
    for row in rows:
        latent_map = np.asarray(row["map"])
        assert row["tokens"] and latent_map.size == 64 and np.all(np.isfinite(latent_map)) and latent_map.max() > 0

    jobs = [{"prompt": "a red car on the beach", "word": "red", "seed": 0},
            {"prompt": "a photo of a red dog", "word": "dog", "seed": 1}]
    config = InterventionConfig(estimator, GenerationConfig(steps=2), batch_size=2, examples=0)
    study = run_intervention(pipeline, jobs, tmp_path / "intervene", config)
    assert study.summary["attention"]["n_items"] == 2
    assert all(np.isfinite(r["attention"]) and r["attention"] > 0 for r in study.run.rows.to_pylist())
