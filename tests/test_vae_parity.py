"""The Flax AutoencoderKL against diffusers' PyTorch AutoencoderKL on a tiny random config."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxpid.errors import ConfigError, WeightsMismatchError
from jaxpid.sd.models.convert import convert_state_dict
from jaxpid.sd.models.vae import AutoencoderKL, VAEConfig, expected_params, posterior_sample, vae_rename

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

VAE_TINY = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=(16, 32),
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
    up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=8,
    sample_size=32,
    scaling_factor=0.18215,
)

_NEW_TO_OLD = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


@pytest.fixture(scope="module")
def torch_vae():
    """A seeded random diffusers VAE; every parameter is perturbed so norms are not identity."""
    torch.manual_seed(0)
    model = diffusers.AutoencoderKL(**VAE_TINY).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _state(model) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in model.state_dict().items()}


def _old_style(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    renamed = {}
    for name, value in state.items():
        for new, old in _NEW_TO_OLD.items():
            name = name.replace(f".attentions.0.{new}.", f".attentions.0.{old}.")
        renamed[name] = value
    return renamed


def _assert_close(out, ref, what):
    out, ref = np.asarray(out), np.asarray(ref)
    scale = float(np.abs(ref).max())
    print(f"{what}: max |jax - torch| = {np.abs(out - ref).max():.3g} (scale {scale:.3g})")
    assert out.dtype == np.float32 and out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=1e-5 * scale, rtol=1e-5)


def test_encode_decode_parity_and_bf16_smoke(torch_vae):
    config = VAEConfig.from_dict(dict(torch_vae.config))
    params = convert_state_dict(_state(torch_vae), expected_params(config), what="vae")
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1
    latent = torch.randn(2, 4, 16, 16, generator=gen)
    with torch.no_grad():
        posterior = torch_vae.encode(image).latent_dist
        decoded = torch_vae.decode(latent).sample

    model = AutoencoderKL(config)
    encode = jax.jit(lambda p, x: model.apply({"params": p}, x, method="encode"))
    decode = jax.jit(lambda p, z: model.apply({"params": p}, z, method="decode"))
    mean, logvar = encode(params, image.numpy())
    _assert_close(mean, posterior.mean.numpy(), "encode mean")
    _assert_close(logvar, posterior.logvar.numpy(), "encode logvar")
    out32 = decode(params, latent.numpy())
    _assert_close(out32, decoded.numpy(), "decode")

    model16 = AutoencoderKL(config, dtype=jnp.bfloat16)
    out16 = np.asarray(jax.jit(lambda p, z: model16.apply({"params": p}, z, method="decode"))(params, latent.numpy()))
    assert out16.dtype == np.float32 and np.isfinite(out16).all()
    relative = np.linalg.norm(out16 - out32) / np.linalg.norm(out32)
    print(f"bf16 decode vs fp32: relative L2 error {relative:.4f}")
    assert relative < 0.03


def test_old_attention_names_load_through_vae_rename(torch_vae):
    config = VAEConfig.from_dict(dict(torch_vae.config))
    expected = expected_params(config)
    current = convert_state_dict(_state(torch_vae), expected, what="vae")
    old = _old_style(_state(torch_vae))
    assert "encoder.mid_block.attentions.0.proj_attn.weight" in old

    with pytest.raises(WeightsMismatchError, match="query"):
        convert_state_dict(old, expected, what="vae")
    loaded = convert_state_dict(old, expected, what="vae", rename=vae_rename)
    jax.tree.map(np.testing.assert_array_equal, loaded, current)


def test_vae_rename_names():
    assert vae_rename("decoder.mid_block.attentions.0.query.weight") == "decoder.mid_block.attentions.0.to_q.weight"
    assert vae_rename("encoder.mid_block.attentions.0.key.bias") == "encoder.mid_block.attentions.0.to_k.bias"
    assert vae_rename("encoder.mid_block.attentions.0.value.weight") == "encoder.mid_block.attentions.0.to_v.weight"
    assert vae_rename("encoder.mid_block.attentions.0.proj_attn.bias") == "encoder.mid_block.attentions.0.to_out.0.bias"
    for name in ("encoder.mid_block.attentions.0.to_q.weight", "decoder.conv_in.weight", "quant_conv.bias"):
        assert vae_rename(name) == name


def test_config_scaling_factor_and_rejections():
    assert VAEConfig.from_dict(VAE_TINY).scaling_factor == pytest.approx(0.18215)
    assert VAEConfig.from_dict({**VAE_TINY, "scaling_factor": 0.13025}).scaling_factor == pytest.approx(0.13025)
    with pytest.raises(ConfigError, match="AttnDownEncoderBlock2D"):
        VAEConfig.from_dict({**VAE_TINY, "down_block_types": ("DownEncoderBlock2D", "AttnDownEncoderBlock2D")})
    with pytest.raises(ConfigError, match="latents_mean"):
        VAEConfig.from_dict({**VAE_TINY, "latents_mean": [0.0] * 4})


def test_posterior_sample_moments():
    mean = jnp.full((4, 4, 16, 16), 0.5)
    logvar = jnp.full((4, 4, 16, 16), np.log(0.04))
    draws = posterior_sample(mean, logvar, jax.random.key(0))
    assert draws.shape == mean.shape
    assert abs(float(draws.mean()) - 0.5) < 0.01
    assert abs(float(draws.std()) - 0.2) < 0.01
