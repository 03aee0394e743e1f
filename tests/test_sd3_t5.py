"""The Flax T5 encoder against transformers' PyTorch T5EncoderModel on tiny random configs."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxpid.errors import ConfigError, WeightsMismatchError
from jaxpid.sd.models.convert import convert_state_dict
from jaxpid.sd.models.t5 import T5Config, T5EncoderModel, expected_params, relative_position_buckets, t5_state_dict

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# T5 v1.1 layout (gated GELU, d_kv * heads != d_model); few buckets and a short max distance so a
# 40-token sequence reaches every branch of the bucketing (exact, logarithmic, beyond max_distance).
T5_TINY = dict(vocab_size=101, d_model=32, d_kv=6, d_ff=37, num_layers=3, num_heads=4,
               relative_attention_num_buckets=12, relative_attention_max_distance=20, feed_forward_proj="gated-gelu")
RTOL = 1e-5


def _torch_encoder(config: dict, seed: int = 0):
    torch.manual_seed(seed)
    model = transformers.T5EncoderModel(transformers.T5Config(**config)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _run(model, ids: np.ndarray):
    config = T5Config.from_dict(model.config.to_dict())
    state = t5_state_dict({k: v.numpy() for k, v in model.state_dict().items()})
    params = convert_state_dict(state, expected_params(config), what="text_encoder_3")
    ours = jax.jit(T5EncoderModel(config).apply)({"params": params}, ids)
    with torch.no_grad():
        theirs = model(torch.from_numpy(ids.astype(np.int64))).last_hidden_state.numpy()
    return np.asarray(ours), theirs


@pytest.mark.parametrize("projection", ["gated-gelu", "relu", "gelu"])
def test_encoder_parity(projection):
    model = _torch_encoder({**T5_TINY, "feed_forward_proj": projection})
    ids = np.random.default_rng(0).integers(0, 101, (3, 40)).astype(np.int32)
    ids[:, 30:] = 0  # right padding with the pad id, attended to as SD3 does (no mask)
    ours, theirs = _run(model, ids)
    error = np.abs(ours - theirs).max() / np.abs(theirs).max()
    print(f"T5 encoder parity ({projection}): max relative error {error:.2e}")
    assert ours.dtype == np.float32 and error < RTOL


def test_relative_position_buckets_match_transformers():
    """Default bucketing (32 buckets, max distance 128) over the 256 tokens SD3 feeds T5, and a tiny one."""
    from transformers.models.t5.modeling_t5 import T5Attention

    for length, buckets, distance in ((256, 32, 128), (40, 12, 20), (300, 32, 128)):
        relative = torch.arange(length)[None, :] - torch.arange(length)[:, None]
        theirs = T5Attention._relative_position_bucket(relative, True, buckets, distance).numpy()
        np.testing.assert_array_equal(relative_position_buckets(length, buckets, distance), theirs)


def test_tied_embedding_names():
    """A checkpoint may hold the token embedding as shared.weight, encoder.embed_tokens.weight or both."""
    model = _torch_encoder(T5_TINY)
    config = T5Config.from_dict(model.config.to_dict())
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    shared = state.pop("shared.weight", None)
    table = shared if shared is not None else state["encoder.embed_tokens.weight"]
    for variant in ({"shared.weight": table}, {"encoder.embed_tokens.weight": table},
                    {"shared.weight": table, "encoder.embed_tokens.weight": table.copy()}):
        rest = {k: v for k, v in state.items() if k != "encoder.embed_tokens.weight"}
        params = convert_state_dict(t5_state_dict({**rest, **variant}), expected_params(config), what="t5")
        np.testing.assert_array_equal(params["shared"]["embedding"], table)
    with pytest.raises(ConfigError, match="embed_tokens"):
        t5_state_dict({"shared.weight": table, "encoder.embed_tokens.weight": table + 1})
    # strict: a relative_attention_bias in a later layer is unexpected
    extra = {**rest, "shared.weight": table,
             "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight": np.zeros((12, 4), np.float32)}
    with pytest.raises(WeightsMismatchError, match=r"encoder\.block\.1\.layer\.0\.SelfAttention\.relative"):
        convert_state_dict(extra, expected_params(config), what="t5")


def test_config_checks():
    assert T5Config.from_dict({"feed_forward_proj": "gated-gelu"}).activation == "gelu_new"
    assert T5Config.from_dict({"feed_forward_proj": "gated-gelu"}).gated
    with pytest.raises(ConfigError, match="feed_forward_proj"):
        T5Config.from_dict({"feed_forward_proj": "gated-swish"})
    with pytest.raises(ConfigError, match="d_model"):
        T5Config.from_dict({"d_model": 0})


def test_bf16_compute_stays_close():
    model = _torch_encoder(T5_TINY)
    config = T5Config.from_dict(model.config.to_dict())
    state = t5_state_dict({k: v.numpy() for k, v in model.state_dict().items()})
    params = convert_state_dict(state, expected_params(config), what="text_encoder_3")
    ids = np.random.default_rng(1).integers(0, 101, (2, 40)).astype(np.int32)
    out32 = T5EncoderModel(config).apply({"params": params}, ids)
    out16 = T5EncoderModel(config, dtype=jax.numpy.bfloat16).apply({"params": params}, ids)
    relative = float(np.linalg.norm(np.asarray(out16) - np.asarray(out32)) / np.linalg.norm(np.asarray(out32)))
    print(f"T5 bf16 compute vs fp32: relative L2 error {relative:.4f}")
    assert out16.dtype == np.float32 and relative < 0.03


# text_encoder_3/config.json of SD3 (google/t5-v1_1-xxl), architecture keys.
T5_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
              relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu")


@pytest.mark.slow
def test_t5_xxl_encoder_matches_transformers_tensor_by_tensor():
    with torch.device("meta"):
        model = transformers.T5EncoderModel(transformers.T5Config(**T5_XXL))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = expected_params(T5Config.from_dict(T5_XXL))
    count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(expected))
    state = t5_state_dict({k: np.broadcast_to(np.float32(0), s) for k, s in shapes.items()})
    print(f"T5-XXL encoder: jaxpid {count:,} parameters, transformers {sum(np.prod(s) for s in shapes.values()):,} "
          f"(tied embedding counted once: {sum(int(np.prod(v.shape)) for v in state.values()):,})")
    assert count == sum(int(np.prod(v.shape)) for v in state.values())
    convert_state_dict(state, expected, what="text_encoder_3")
