"""Flax CLIP text encoder against transformers' CLIPTextModel on tiny random models."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from jaxpid.errors import ConfigError, ShapeError, WeightsMismatchError
from jaxpid.sd.models.clip import CLIPTextConfig, CLIPTextModel, clip_rename, expected_params
from jaxpid.sd.models.convert import convert_state_dict
from jaxpid.sd.tokenizer import load_tokenizer, write_test_tokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

WORDS = ["a", "photo", "of", "an", "astronaut", "riding", "horse", "on", "the", "moon", "cat"]
PROMPTS = ["a photo of an astronaut riding a horse on the moon", "", "Cat, cat: CAT!"]


def _tiny_torch_encoder(vocab_size: int, hidden_act: str, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, hidden_act=hidden_act,
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
    )
    model = transformers.CLIPTextModel(config).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a mis-mapped tensor shows
        for name, p in model.named_parameters():
            if "layer_norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    return write_test_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer", WORDS, pad_token="!")


def _saved(tmp_path, tokenizer_folder, hidden_act):
    tok = load_tokenizer(tokenizer_folder)
    model = _tiny_torch_encoder(tok.vocab_size, hidden_act)
    model.save_pretrained(str(tmp_path / "text_encoder"))
    return tok, model, tmp_path / "text_encoder"


def _load_flax(folder):
    config = CLIPTextConfig.from_dict(json.loads((folder / "config.json").read_text()))
    state = load_file(str(folder / "model.safetensors"))
    params = convert_state_dict(state, expected_params(config), what="text_encoder", rename=clip_rename)
    return config, state, params


def _torch_hidden(model, ids, mask=None):
    with torch.no_grad():
        kwargs = {} if mask is None else {"attention_mask": torch.as_tensor(np.asarray(mask), dtype=torch.long)}
        return model(torch.as_tensor(np.asarray(ids), dtype=torch.long), **kwargs)[0].numpy()


def _assert_close(ours, reference):
    scale = float(np.abs(reference).max())
    np.testing.assert_allclose(np.asarray(ours), reference, atol=1e-5 * scale, rtol=1e-5)


@pytest.mark.parametrize("hidden_act", ["quick_gelu", "gelu"])
def test_last_hidden_state_matches_transformers(tmp_path, tokenizer_folder, hidden_act):
    tok, model, folder = _saved(tmp_path, tokenizer_folder, hidden_act)
    config, state, params = _load_flax(folder)
    assert config.hidden_act == hidden_act and config.vocab_size == tok.vocab_size
    assert not any(k.startswith("text_model.") for k in state)  # transformers 5 writes no prefix

    ids = tok.encode(PROMPTS)
    random_ids = np.random.default_rng(0).integers(0, tok.vocab_size, (2, 77), dtype=np.int32)
    flax_model = CLIPTextModel(config)
    for batch in (ids, random_ids):
        out = flax_model.apply({"params": params}, jnp.asarray(batch))
        assert out.dtype == jnp.float32 and out.shape == (len(batch), 77, 32)
        _assert_close(out, _torch_hidden(model, batch))


def test_transformers4_checkpoint_names(tmp_path, tokenizer_folder):
    """Published SD checkpoints prefix names with ``text_model.`` and may keep ``position_ids``."""
    tok, model, folder = _saved(tmp_path, tokenizer_folder, "quick_gelu")
    config, state, params = _load_flax(folder)
    old_style = {f"text_model.{k}": v for k, v in state.items()}
    old_style["text_model.embeddings.position_ids"] = np.arange(77, dtype=np.int64)[None]
    converted = convert_state_dict(old_style, expected_params(config), what="text_encoder", rename=clip_rename)
    jax.tree_util.tree_map(np.testing.assert_array_equal, converted, params)
    ids = tok.encode(PROMPTS[:1])
    _assert_close(CLIPTextModel(config).apply({"params": converted}, jnp.asarray(ids)), _torch_hidden(model, ids))


def test_checkpoint_mismatch_names_the_tensor(tmp_path, tokenizer_folder):
    _, _, folder = _saved(tmp_path, tokenizer_folder, "quick_gelu")
    config, state, _ = _load_flax(folder)
    del state["encoder.layers.1.mlp.fc2.weight"]
    with pytest.raises(WeightsMismatchError, match=r"encoder\.layers\.1\.mlp\.fc2\.weight"):
        convert_state_dict(state, expected_params(config), what="text_encoder", rename=clip_rename)


def test_attention_mask_matches_transformers(tmp_path, tokenizer_folder):
    """For configs with ``use_attention_mask``, diffusers passes the tokenizer's padding mask."""
    tok, model, folder = _saved(tmp_path, tokenizer_folder, "gelu")
    config, _, params = _load_flax(folder)
    ids, mask = tok.encode(PROMPTS), tok.padding_mask(PROMPTS)
    out = CLIPTextModel(config).apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask))
    _assert_close(out, _torch_hidden(model, ids, mask))


def test_encode_prompt_of_the_diffusers_pipeline(tmp_path, tokenizer_folder):
    """Tokenizer + encoder reproduce ``StableDiffusionPipeline.encode_prompt`` end to end."""
    diffusers = pytest.importorskip("diffusers")
    tok, model, folder = _saved(tmp_path, tokenizer_folder, "gelu")
    config, _, params = _load_flax(folder)
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
    )
    vae = diffusers.AutoencoderKL(block_out_channels=(8,), norm_num_groups=8, latent_channels=4)
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=model, tokenizer=transformers.CLIPTokenizer.from_pretrained(str(tokenizer_folder)),
        unet=unet, scheduler=diffusers.DDIMScheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    with torch.no_grad():
        cond, uncond = pipe.encode_prompt(PROMPTS[0], torch.device("cpu"), 1, True, negative_prompt=None)
    ours = CLIPTextModel(config).apply({"params": params}, jnp.asarray(tok.encode([PROMPTS[0], ""])))
    _assert_close(ours[:1], cond.numpy())
    _assert_close(ours[1:], uncond.numpy())


def test_bf16_compute_smoke(tmp_path, tokenizer_folder):
    tok, _, folder = _saved(tmp_path, tokenizer_folder, "quick_gelu")
    config, _, params = _load_flax(folder)
    ids = jnp.asarray(tok.encode(PROMPTS))
    reference = CLIPTextModel(config).apply({"params": params}, ids)
    params_bf16 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.bfloat16), params)
    out = CLIPTextModel(config, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16).apply({"params": params_bf16}, ids)
    assert out.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out)))
    error = float(jnp.abs(out - reference).max()) / float(jnp.abs(reference).max())
    assert error < 0.05, error


def test_config_variants_and_errors():
    text = transformers.CLIPTextConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, hidden_act="gelu",
    )
    plain = CLIPTextConfig.from_dict(text.to_dict())
    nested = CLIPTextConfig.from_dict(transformers.CLIPConfig(text_config=text.to_dict()).to_dict())
    assert plain == nested
    assert (plain.num_hidden_layers, plain.hidden_act, plain.head_dim, plain.use_attention_mask) == (3, "gelu", 8, False)
    assert CLIPTextConfig.from_dict({**text.to_dict(), "use_attention_mask": True}).use_attention_mask
    # transformers-4 diff-style configs omit keys equal to the class defaults
    assert CLIPTextConfig.from_dict({"model_type": "clip_text_model"}).hidden_act == "quick_gelu"
    with pytest.raises(ConfigError, match="gelu_new"):
        CLIPTextConfig.from_dict({**text.to_dict(), "hidden_act": "gelu_new"})
    with pytest.raises(ConfigError, match="num_attention_heads=5"):
        CLIPTextConfig.from_dict({**text.to_dict(), "num_attention_heads": 5})
    with pytest.raises(ConfigError, match="text_config"):
        CLIPTextConfig.from_dict({"model_type": "clip"})


def test_expected_params_and_input_checks():
    config = CLIPTextConfig(100, 32, 64, 2, 4, 16, "quick_gelu", 1e-5)
    shapes = jax.tree_util.tree_map(lambda s: s.shape, expected_params(config))
    assert shapes["embeddings"]["token_embedding"]["embedding"] == (100, 32)
    assert shapes["embeddings"]["position_embedding"]["embedding"] == (16, 32)
    assert shapes["encoder"]["layers_1"]["mlp"]["fc1"]["kernel"] == (32, 64)
    assert shapes["final_layer_norm"]["scale"] == (32,)
    assert set(shapes["encoder"]) == {"layers_0", "layers_1"}
    with pytest.raises(ShapeError, match="max_position_embeddings 16"):
        jax.eval_shape(CLIPTextModel(config).init, jax.random.key(0), jax.ShapeDtypeStruct((1, 17), jnp.int32))
