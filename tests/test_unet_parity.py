"""The Flax UNet against diffusers' PyTorch UNet2DConditionModel on tiny random configs."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpid.errors import ConfigError, WeightsMismatchError
from jaxpid.sd.models.convert import convert_state_dict
from jaxpid.sd.models.layers import attention_implementation, timestep_embedding
from jaxpid.sd.models.unet import UNet2DConditionModel, UNetConfig, expected_params

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

SD1_TINY = dict(
    block_out_channels=(32, 64),
    layers_per_block=2,
    cross_attention_dim=32,
    attention_head_dim=8,
    use_linear_projection=False,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    norm_num_groups=8,
    sample_size=16,
    in_channels=4,
    out_channels=4,
)

SD2_TINY = dict(
    block_out_channels=(16, 32, 32),
    layers_per_block=1,
    cross_attention_dim=24,
    attention_head_dim=(2, 4, 4),
    transformer_layers_per_block=(1, 2, 2),
    use_linear_projection=True,
    upcast_attention=True,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    norm_num_groups=8,
    sample_size=16,
    in_channels=4,
    out_channels=4,
)

# SD 2.1-base unet/config.json (architecture keys as published).
SD21_BASE = dict(
    act_fn="silu",
    attention_head_dim=[5, 10, 20, 20],
    block_out_channels=[320, 640, 1280, 1280],
    center_input_sample=False,
    cross_attention_dim=1024,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    downsample_padding=1,
    dual_cross_attention=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    in_channels=4,
    layers_per_block=2,
    mid_block_scale_factor=1,
    norm_eps=1e-05,
    norm_num_groups=32,
    num_class_embeds=None,
    only_cross_attention=False,
    out_channels=4,
    sample_size=64,
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    use_linear_projection=True,
)
SD21_BASE_PARAM_COUNT = 865_910_724


def _torch_unet(config: dict):
    """A seeded random diffusers UNet; every parameter is perturbed so norms are not identity."""
    torch.manual_seed(0)
    model = diffusers.UNet2DConditionModel(**config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _converted(model) -> tuple[UNetConfig, dict]:
    config = UNetConfig.from_dict(dict(model.config))
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    return config, convert_state_dict(state, expected_params(config), what="unet")


def _inputs(batch: int, size: int, context_dim: int, timesteps):
    gen = torch.Generator().manual_seed(1)
    sample = torch.randn(batch, 4, size, size, generator=gen)
    context = torch.randn(batch, 77, context_dim, generator=gen)
    return sample, torch.tensor(timesteps), context


def _assert_parity(model, sample, timesteps, context, dtype=jnp.float32):
    config, params = _converted(model)
    apply = jax.jit(UNet2DConditionModel(config, dtype=dtype).apply)
    out = np.asarray(apply({"params": params}, sample.numpy(), timesteps.numpy(), context.numpy()))
    with torch.no_grad():
        ref = model(sample, timesteps, context).sample.numpy()
    scale = float(np.abs(ref).max())
    print(f"max |jax - torch| = {np.abs(out - ref).max():.3g} (output scale {scale:.3g})")
    assert out.dtype == np.float32 and out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=1e-5 * scale, rtol=1e-5)
    return config, params, out


def test_sd1_style_parity_and_bf16_smoke():
    model = _torch_unet(SD1_TINY)
    sample, timesteps, context = _inputs(3, 16, 32, [1, 500, 999])
    config, params, out32 = _assert_parity(model, sample, timesteps, context)

    apply16 = jax.jit(UNet2DConditionModel(config, dtype=jnp.bfloat16).apply)
    out16 = np.asarray(apply16({"params": params}, sample.numpy(), timesteps.numpy(), context.numpy()))
    assert out16.dtype == np.float32 and np.isfinite(out16).all()
    relative = np.linalg.norm(out16 - out32) / np.linalg.norm(out32)
    print(f"bf16 compute vs fp32: relative L2 error {relative:.4f}")
    assert relative < 0.03


def test_sd2_style_parity_odd_latent_size():
    # Per-block head counts and transformer depths, linear projections, three blocks and an 18x18 latent
    # (18 -> 9 -> 5 on the way down, so upsampling must follow the skips' sizes).
    model = _torch_unet(SD2_TINY)
    sample, timesteps, context = _inputs(3, 18, 24, [0.5, 250.0, 999.0])
    _assert_parity(model, sample, timesteps, context)


@pytest.mark.parametrize("flip, shift, dim", [(True, 0, 32), (False, 1, 32), (True, 1, 33)])
def test_timestep_embedding_matches_diffusers(flip, shift, dim):
    from diffusers.models.embeddings import get_timestep_embedding

    t = np.array([0, 1, 17, 500, 999], dtype=np.float32)
    ref = get_timestep_embedding(torch.tensor(t), dim, flip_sin_to_cos=flip, downscale_freq_shift=shift).numpy()
    out = np.asarray(timestep_embedding(jnp.asarray(t), dim, flip, shift))
    # A float32 angle near 1000 rad is known to ~6e-5 (one ulp), in either framework.
    np.testing.assert_allclose(out, ref, atol=6e-5)
    assert np.abs(out - ref)[:3].max() < 1e-6  # small timesteps agree to float32 precision


def test_config_heads_from_attention_head_dim_or_num_attention_heads():
    assert UNetConfig.from_dict(SD1_TINY).num_heads == (8, 8)
    assert UNetConfig.from_dict(SD21_BASE).num_heads == (5, 10, 20, 20)
    config = UNetConfig.from_dict({**SD1_TINY, "num_attention_heads": 4})
    assert config.num_heads == (4, 4)
    assert UNetConfig.from_dict({**SD1_TINY, "num_attention_heads": None}).num_heads == (8, 8)


@pytest.mark.parametrize(
    "key, value",
    [
        ("dual_cross_attention", True),
        ("only_cross_attention", True),
        ("class_embed_type", "timestep"),
        ("addition_embed_type", "text_image"),
        ("time_cond_proj_dim", 256),
        ("mid_block_type", "UNetMidBlock2DSimpleCrossAttn"),
        ("attention_head_dim", 7),
    ],
)
def test_config_rejects_unsupported_values(key, value):
    with pytest.raises(ConfigError, match=key):
        UNetConfig.from_dict({**SD1_TINY, key: value})


def test_config_rejects_unknown_block_type():
    config = {**SD1_TINY, "down_block_types": ("CrossAttnDownBlock2D", "AttnDownBlock2D")}
    with pytest.raises(ConfigError, match="AttnDownBlock2D"):
        UNetConfig.from_dict(config)


def test_expected_params_are_shapes_and_catch_wrong_config():
    config = UNetConfig.from_dict(SD1_TINY)
    expected = expected_params(config)
    assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(expected))
    # Weights of a model with another head count have the same shapes, so use another width.
    model = _torch_unet({**SD1_TINY, "cross_attention_dim": 16})
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsMismatchError, match="attn2.to_k.weight"):
        convert_state_dict(state, expected, what="unet")


def test_attention_implementation_choice():
    assert attention_implementation("xla", jnp.bfloat16, 64) == "xla"
    if jax.default_backend() != "gpu":
        assert attention_implementation("auto", jnp.bfloat16, 64) == "xla"
        with pytest.raises(ConfigError, match="cudnn"):
            attention_implementation("cudnn", jnp.bfloat16, 64)
    assert attention_implementation("auto", jnp.float32, 64) == "xla"
    with pytest.raises(ConfigError, match="flash"):
        attention_implementation("flash", jnp.float32, 64)


@pytest.mark.slow
def test_sd21_base_architecture_random_weights():
    config = UNetConfig.from_dict(SD21_BASE)
    with torch.device("meta"):
        torch_count = sum(p.numel() for p in diffusers.UNet2DConditionModel(**SD21_BASE).parameters())
    assert torch_count == SD21_BASE_PARAM_COUNT

    size = 32
    sample = jax.random.normal(jax.random.key(1), (1, 4, size, size))
    timesteps = jnp.array([500.0])
    context = jax.random.normal(jax.random.key(2), (1, 77, config.cross_attention_dim))

    start = time.perf_counter()
    params = jax.jit(UNet2DConditionModel(config).init)(jax.random.key(0), sample, timesteps, context)["params"]
    count = sum(x.size for x in jax.tree.leaves(params))
    print(f"init: {time.perf_counter() - start:.1f} s, {count:,} params")
    assert count == SD21_BASE_PARAM_COUNT

    outputs = {}
    for name, dtype in (("fp32", jnp.float32), ("bf16", jnp.bfloat16)):
        apply = jax.jit(UNet2DConditionModel(config, dtype=dtype).apply)
        start = time.perf_counter()
        out = apply({"params": params}, sample, timesteps, context).block_until_ready()
        first = time.perf_counter() - start
        start = time.perf_counter()
        out = apply({"params": params}, sample, timesteps, context).block_until_ready()
        steady = time.perf_counter() - start
        print(f"{name}: compile+run {first:.1f} s, run {steady:.2f} s, latent {size}x{size}, batch 1")
        outputs[name] = np.asarray(out)
        assert outputs[name].shape == (1, 4, size, size) and np.isfinite(outputs[name]).all()
    relative = np.linalg.norm(outputs["bf16"] - outputs["fp32"]) / np.linalg.norm(outputs["fp32"])
    print(f"SD 2.1-base bf16 compute vs fp32: relative L2 difference {relative:.4f}")
    assert relative < 0.1


@pytest.mark.parametrize("size,kernel,stride,padding", [(2, 3, 1, 1), (1, 3, 1, 1), (4, 3, 2, 1), (3, 3, 2, 1), (2, 1, 1, 0)])
def test_small_map_convolution_matches_xla_convolution(size, kernel, stride, padding):
    """Conv2D's im2col path (output maps <= 2 wide) equals XLA's convolution with the same params."""
    import flax.linen as nn

    from jaxpid.sd.models.layers import SMALL_MAP, Conv2D

    x = jax.random.normal(jax.random.key(0), (3, size, size, 5))
    ours = Conv2D(7, kernel, stride, padding)
    params = ours.init(jax.random.key(1), x)
    params = jax.tree.map(lambda p: p + 0.1, params)  # a non-zero bias too
    out_size = (size + 2 * padding - kernel) // stride + 1
    assert out_size <= SMALL_MAP
    reference = nn.Conv(7, (kernel, kernel), strides=(stride, stride), padding=((padding, padding),) * 2)
    np.testing.assert_allclose(ours.apply(params, x), reference.apply(params, x), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ cross-attention capture


def _torch_attention_maps(model, sample, timesteps, context):
    """diffusers' cross-attention probabilities, recorded by an attention processor on every attn2
    layer (softmax(q·kᵀ·scale) from diffusers' own get_attention_scores), averaged over heads,
    upsampled bilinearly (align_corners=False) to the latent grid and summed over layers.
    Returns (output, maps (B, 77, H, W), number of layers)."""
    from diffusers.models.attention_processor import AttnProcessor

    recorded = []

    class Recording(AttnProcessor):
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
            query = attn.head_to_batch_dim(attn.to_q(hidden_states))
            key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
            probabilities = attn.get_attention_scores(query, key, None)  # (B * heads, T, S)
            batch = hidden_states.shape[0]
            recorded.append(probabilities.reshape(batch, attn.heads, *probabilities.shape[1:]).mean(1))
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)

    model.set_attn_processor({name: Recording() if ".attn2." in name else AttnProcessor()
                              for name in model.attn_processors})
    with torch.no_grad():
        out = model(sample, timesteps, context).sample.numpy()
    height, width = sample.shape[2:]
    grids = {}
    h, w = height, width
    while True:  # the grids on the way down (stride-2 convs with padding 1 round up)
        grids[h * w] = (h, w)
        if (h, w) == (1, 1):
            break
        h, w = (h + 1) // 2, (w + 1) // 2
    total = 0
    for probabilities in recorded:
        batch, tokens, length = probabilities.shape
        h, w = grids[tokens]
        grid = probabilities.reshape(batch, h, w, length).permute(0, 3, 1, 2)
        total = total + torch.nn.functional.interpolate(grid, size=(height, width), mode="bilinear",
                                                        align_corners=False)
    return out, total.numpy(), len(recorded)


@pytest.mark.parametrize("family, config, size", [("sd1", SD1_TINY, (16, 16)), ("sd2", SD2_TINY, (18, 12))])
def test_cross_attention_maps_match_diffusers_and_leave_the_output_unchanged(family, config, size):
    """UNet(capture_attention=True): every cross-attention layer's probabilities averaged over heads,
    upsampled to the latent grid and summed over layers, as diffusers computes them (fp32)."""
    from jaxpid.sd.models.unet import apply_capturing_attention

    model = _torch_unet(config)
    context_dim = config["cross_attention_dim"]
    gen = torch.Generator().manual_seed(3)
    sample = torch.randn(2, 4, *size, generator=gen)
    context = torch.randn(2, 77, context_dim, generator=gen)
    timesteps = torch.tensor([10.0, 700.0])
    ref_out, ref_maps, n_layers = _torch_attention_maps(model, sample, timesteps, context)

    jax_config, params = _converted(model)
    module = UNet2DConditionModel(jax_config)
    args = (sample.numpy(), timesteps.numpy(), context.numpy())
    plain = np.asarray(jax.jit(module.apply)({"params": params}, *args))
    out, maps = jax.jit(apply_capturing_attention, static_argnums=0)(module, params, *args)
    out, maps = np.asarray(out), np.asarray(maps)
    print(f"{family}: {n_layers} cross-attention layers; max |maps jax - torch| = {np.abs(maps - ref_maps).max():.3g} "
          f"(maps scale {np.abs(ref_maps).max():.3g}); max |output with capture - without| = "
          f"{np.abs(out - plain).max():.3g}")
    assert maps.shape == (2, 77, *size) and maps.dtype == np.float32
    np.testing.assert_allclose(maps, ref_maps, atol=1e-5 * np.abs(ref_maps).max(), rtol=1e-5)
    np.testing.assert_array_equal(out, plain)  # capturing changes nothing in the output
    np.testing.assert_allclose(out, ref_out, atol=1e-5 * np.abs(ref_out).max(), rtol=1e-5)
    # each layer's probabilities sum to 1 over the tokens, and bilinear upsampling keeps that
    np.testing.assert_allclose(maps.sum(axis=1), n_layers, rtol=1e-5)


def test_capture_attention_needs_its_collection_mutable():
    config = UNetConfig.from_dict(SD1_TINY)
    module = UNet2DConditionModel(config)
    params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), expected_params(config))
    with pytest.raises(ConfigError, match="mutable"):
        module.apply({"params": params}, jnp.zeros((1, 4, 8, 8)), jnp.zeros(1), jnp.zeros((1, 77, 32)),
                     capture_attention=True)
