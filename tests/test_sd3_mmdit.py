"""The Flax SD3 MMDiT against diffusers' PyTorch SD3Transformer2DModel on tiny random configs.

SD3-style (no qk norm, no dual attention) and SD3.5-style (qk_norm="rms_norm", dual attention in
some layers) configs, fp32, with every parameter perturbed so no norm or gate is the identity and
the loaded pos_embed table (a checkpoint tensor) differs from the formula's. The slow test checks the
published SD3-medium and SD3.5-large architectures' parameter trees against diffusers, tensor by
tensor, without allocating them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpid.errors import ConfigError, ShapeError, WeightsMismatchError
from jaxpid.sd.models.convert import convert_state_dict
from jaxpid.sd.models.mmdit import SD3Transformer2DModel, SD3TransformerConfig, expected_params, \
    sincos_position_table

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

SD3_TINY = dict(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=3, attention_head_dim=8,
                num_attention_heads=4, joint_attention_dim=24, caption_projection_dim=32, pooled_projection_dim=16,
                pos_embed_max_size=12)
SD35_TINY = dict(SD3_TINY, qk_norm="rms_norm", dual_attention_layers=(0, 1))

# transformer/config.json of the published models (architecture keys).
SD3_MEDIUM = dict(sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24,
                  attention_head_dim=64, num_attention_heads=24, joint_attention_dim=4096,
                  caption_projection_dim=1536, pooled_projection_dim=2048, pos_embed_max_size=192)
SD35_LARGE = dict(SD3_MEDIUM, num_layers=38, num_attention_heads=38, caption_projection_dim=2432,
                  qk_norm="rms_norm")
SD35_MEDIUM = dict(SD3_MEDIUM, qk_norm="rms_norm", dual_attention_layers=tuple(range(13)), pos_embed_max_size=384)
RTOL = 1e-5  # of the output's scale


def _torch_model(config: dict, seed: int = 0):
    torch.manual_seed(seed)
    model = diffusers.SD3Transformer2DModel(**config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        model.pos_embed.pos_embed.add_(0.01 * torch.randn_like(model.pos_embed.pos_embed))
    return model


def _converted(model):
    config = SD3TransformerConfig.from_dict(dict(model.config))
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    return config, convert_state_dict(state, expected_params(config), what="transformer")


def _check(ours, theirs, name):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape
    error = np.abs(ours - theirs).max() / np.abs(theirs).max()
    print(f"SD3 transformer parity {name}: max relative error {error:.2e}")
    assert error < RTOL, (name, error)


def _inputs(config: dict, batch: int, height: int, width: int, text_len: int = 7):
    gen = torch.Generator().manual_seed(1)
    latents = torch.randn(batch, config["in_channels"], height, width, generator=gen)
    text = torch.randn(batch, text_len, config["joint_attention_dim"], generator=gen)
    pooled = torch.randn(batch, config["pooled_projection_dim"], generator=gen)
    return latents, text, pooled


@pytest.mark.parametrize("name, config", [("sd3", SD3_TINY), ("sd3.5", SD35_TINY)])
def test_transformer_parity(name, config):
    """Fractional timesteps (the model sees 1000·t), a non-square latent (the pos_embed crop is off
    centre differently per axis) and a square one."""
    model = _torch_model(config)
    jax_config, params = _converted(model)
    apply = jax.jit(SD3Transformer2DModel(jax_config).apply)
    timesteps = torch.tensor([1000.0, 512.25, 3.0])
    for height, width in ((8, 8), (6, 10)):
        latents, text, pooled = _inputs(config, 3, height, width)
        ours = apply({"params": params}, latents.numpy(), timesteps.numpy(), text.numpy(), pooled.numpy())
        with torch.no_grad():
            theirs = model(latents, text, pooled, timesteps).sample.numpy()
        assert np.asarray(ours).dtype == np.float32
        _check(ours, theirs, f"{name} {height}x{width}")


def test_bf16_compute_stays_close():
    model = _torch_model(SD35_TINY)
    config, params = _converted(model)
    latents, text, pooled = (a.numpy() for a in _inputs(SD35_TINY, 2, 8, 8))
    timesteps = np.array([900.0, 100.0], np.float32)
    out32 = SD3Transformer2DModel(config).apply({"params": params}, latents, timesteps, text, pooled)
    out16 = SD3Transformer2DModel(config, dtype=jnp.bfloat16).apply({"params": params}, latents, timesteps, text,
                                                                     pooled)
    relative = float(jnp.linalg.norm(out16.astype(jnp.float32) - out32) / jnp.linalg.norm(out32))
    print(f"bf16 compute vs fp32: relative L2 error {relative:.4f}")
    assert np.isfinite(np.asarray(out16, np.float32)).all() and relative < 0.05


def test_position_table_is_diffusers_buffer():
    """The formula's table equals a fresh diffusers model's pos_embed buffer (what the init uses)."""
    torch.manual_seed(0)
    fresh = diffusers.SD3Transformer2DModel(**SD3_TINY)
    table = sincos_position_table(32, 12, 4)
    np.testing.assert_allclose(table[None], fresh.pos_embed.pos_embed.numpy(), atol=1e-6)
    init = SD3Transformer2DModel(SD3TransformerConfig.from_dict(SD3_TINY)).init(
        jax.random.key(0), jnp.zeros((1, 4, 8, 8)), jnp.zeros((1,)), jnp.zeros((1, 3, 24)), jnp.zeros((1, 16)))
    np.testing.assert_array_equal(init["params"]["pos_embed"]["pos_embed"], table[None])


def test_config_checks_and_strict_loading():
    with pytest.raises(ConfigError, match="qk_norm"):
        SD3TransformerConfig.from_dict({**SD3_TINY, "qk_norm": "layer_norm"})
    with pytest.raises(ConfigError, match="caption_projection_dim"):
        SD3TransformerConfig.from_dict({**SD3_TINY, "caption_projection_dim": 48})
    with pytest.raises(ConfigError, match="dual_attention_layers"):
        SD3TransformerConfig.from_dict({**SD3_TINY, "dual_attention_layers": [3]})
    # An SD3.5 checkpoint (extra attn2 / norm_q tensors) against an SD3 config names what does not fit.
    model = _torch_model(SD35_TINY)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsMismatchError, match=r"transformer_blocks\.0\.attn2\.to_q\.weight") as error:
        convert_state_dict(state, expected_params(SD3TransformerConfig.from_dict(SD3_TINY)), what="transformer")
    assert "transformer_blocks.0.attn.norm_q.weight" in str(error.value)
    assert "transformer_blocks.0.norm1.linear.weight" in str(error.value)  # 9 vs 6 modulation chunks
    config = SD3TransformerConfig.from_dict(SD3_TINY)
    with pytest.raises(ShapeError, match="patch_size"):
        SD3Transformer2DModel(config).init(jax.random.key(0), jnp.zeros((1, 4, 7, 8)), jnp.zeros((1,)),
                                           jnp.zeros((1, 3, 24)), jnp.zeros((1, 16)))
    with pytest.raises(ShapeError, match="pos_embed_max_size"):
        SD3Transformer2DModel(config).init(jax.random.key(0), jnp.zeros((1, 4, 26, 8)), jnp.zeros((1,)),
                                           jnp.zeros((1, 3, 24)), jnp.zeros((1, 16)))


@pytest.mark.slow
@pytest.mark.parametrize("name, config", [("SD3-medium", SD3_MEDIUM), ("SD3.5-large", SD35_LARGE),
                                          ("SD3.5-medium", SD35_MEDIUM)])
def test_published_architectures_match_diffusers_tensor_by_tensor(name, config):
    with torch.device("meta"):
        model = diffusers.SD3Transformer2DModel(**config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = expected_params(SD3TransformerConfig.from_dict(config))
    count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(expected))
    print(f"{name} transformer: jaxpid {count:,} parameters, diffusers {sum(map(np.prod, shapes.values())):,}")
    assert count == sum(int(np.prod(s)) for s in shapes.values())
    # Every diffusers tensor lands on a jaxpid parameter of its shape (zero-stride arrays: no memory).
    convert_state_dict({k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()}, expected, what=name)
