"""Flax BERT masked LM against transformers' BertForMaskedLM on tiny random models."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from jaxpid.errors import ConfigError, PickleRefusedError, WeightsMismatchError
from jaxpid.priors.bert import BertConfig, bert_rename, expected_params, load_bert, write_test_bert
from jaxpid.sd.models.convert import convert_state_dict

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", "the", "doctor", "male", "female",
    "astro", "##naut", "riding", "horse", "on", "moon", "nur", "##se", "##s", ",", ".", "-", "t", "shirt", "_",
]


def write_vocab(folder, vocab=VOCAB):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return folder


def tiny_torch_bert(seed: int = 0, tie_word_embeddings: bool = True, vocab_size: int = len(VOCAB)):
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=40, type_vocab_size=2, tie_word_embeddings=tie_word_embeddings,
    )
    model = transformers.BertForMaskedLM(config).eval()
    with torch.no_grad():  # non-trivial norms and biases, so a mis-mapped tensor shows
        for name, p in model.named_parameters():
            if "LayerNorm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    return model


def saved_bert(folder, **kwargs):
    model = tiny_torch_bert(**kwargs)
    model.save_pretrained(str(folder), safe_serialization=True)
    write_vocab(folder)
    return model


def torch_logits(model, ids, mask=None, types=None):
    kwargs = {}
    if mask is not None:
        kwargs["attention_mask"] = torch.as_tensor(np.asarray(mask), dtype=torch.long)
    if types is not None:
        kwargs["token_type_ids"] = torch.as_tensor(np.asarray(types), dtype=torch.long)
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(ids), dtype=torch.long), **kwargs).logits.numpy()


def apply(module):
    return jax.jit(module.apply)


def assert_close(ours, reference):
    scale = float(np.abs(reference).max())
    np.testing.assert_allclose(np.asarray(ours), reference, atol=1e-5 * scale, rtol=1e-5)


def max_relative_error(ours, reference) -> float:
    return float(np.abs(np.asarray(ours) - reference).max() / np.abs(reference).max())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert")
    model = saved_bert(folder)
    return model, folder


def test_logits_match_transformers_with_and_without_attention_mask(tiny):
    model, folder = tiny
    module, params, tokenizer = load_bert(folder)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(VOCAB), (3, 17)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 9:] = 0  # right padding
    mask[2, [2, 5, 11]] = 0  # holes anywhere, as transformers allows
    types = (np.arange(17) >= 8).astype(np.int32)[None].repeat(3, axis=0)
    errors = {}
    for name, kwargs in (("plain", {}), ("mask+types", {"mask": mask, "types": types})):
        reference = torch_logits(model, ids, **kwargs)
        ours = apply(module)(
            {"params": params}, jnp.asarray(ids),
            None if "mask" not in kwargs else jnp.asarray(mask), None if "types" not in kwargs else jnp.asarray(types),
        )
        assert ours.dtype == jnp.float32 and ours.shape == (3, 17, len(VOCAB))
        assert_close(ours, reference)
        errors[name] = max_relative_error(ours, reference)
    print("max relative logit error vs transformers:", errors)


def test_tokenizer_loads_from_vocab_txt_only(tiny):
    _, folder = tiny
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "vocab.txt"]
    _, _, tokenizer = load_bert(folder)
    assert tokenizer.mask_token_id == 4 and tokenizer.cls_token_id == 2 and tokenizer.sep_token_id == 3
    assert tokenizer("A Photo of the astronaut,", add_special_tokens=False)["input_ids"] == [5, 6, 7, 8, 12, 13, 21]


def test_tokenizer_must_fit_the_model(tiny, tmp_path):
    _, folder = tiny
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    write_vocab(tmp_path, [t for t in VOCAB if t != "[MASK]"])
    with pytest.raises(ConfigError, match=r"no '\[MASK\]'"):
        load_bert(tmp_path)
    write_vocab(tmp_path, VOCAB + ["extra"])
    with pytest.raises(ConfigError, match="more than the model's vocab_size"):
        load_bert(tmp_path)
    (tmp_path / "vocab.txt").unlink()
    with pytest.raises(ConfigError, match="no BERT tokenizer files"):
        load_bert(tmp_path)


def test_untied_decoder_matches_transformers(tmp_path):
    model = saved_bert(tmp_path, tie_word_embeddings=False, seed=1)
    assert "cls.predictions.decoder.weight" in load_file(str(tmp_path / "model.safetensors"))
    module, params, _ = load_bert(tmp_path)
    ids = np.random.default_rng(1).integers(0, len(VOCAB), (2, 9)).astype(np.int32)
    assert_close(apply(module)({"params": params}, jnp.asarray(ids)), torch_logits(model, ids))


def test_transformers4_and_tf_era_checkpoint_names(tiny):
    """bert-base-uncased ships LayerNorm gamma/beta, the pooler, the next-sentence head and the
    tied decoder copies; all load into the same parameters."""
    model, folder = tiny
    config = BertConfig.from_dict(json.loads((folder / "config.json").read_text()))
    state = load_file(str(folder / "model.safetensors"))
    reference = convert_state_dict(state, expected_params(config), what="bert", rename=bert_rename(config))
    old = {}
    for name, value in state.items():
        if name.endswith("LayerNorm.weight"):
            name = name[: -len("weight")] + "gamma"
        elif name.endswith("LayerNorm.bias"):
            name = name[: -len("bias")] + "beta"
        old[name] = value
    old["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]
    old["cls.predictions.decoder.bias"] = state["cls.predictions.bias"]
    old["bert.pooler.dense.weight"] = np.zeros((32, 32), np.float32)
    old["bert.pooler.dense.bias"] = np.zeros((32,), np.float32)
    old["cls.seq_relationship.weight"] = np.zeros((2, 32), np.float32)
    old["cls.seq_relationship.bias"] = np.zeros((2,), np.float32)
    old["bert.embeddings.position_ids"] = np.arange(40)[None]
    converted = convert_state_dict(old, expected_params(config), what="bert", rename=bert_rename(config))
    jax.tree.map(np.testing.assert_array_equal, converted, reference)


def test_missing_and_misshaped_tensors_are_named(tiny, tmp_path):
    _, folder = tiny
    config = BertConfig.from_dict(json.loads((folder / "config.json").read_text()))
    state = load_file(str(folder / "model.safetensors"))
    broken = dict(state)
    del broken["bert.encoder.layer.1.output.dense.weight"]
    broken["cls.predictions.transform.dense.bias"] = np.zeros(31, np.float32)
    with pytest.raises(WeightsMismatchError) as info:
        convert_state_dict(broken, expected_params(config), what="bert", rename=bert_rename(config))
    message = str(info.value)
    assert "bert.encoder.layer.1.output.dense.weight" in message
    assert "cls.predictions.transform.dense.bias" in message and "(31,)" in message
    # The same through the loader, from a folder.
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    write_vocab(tmp_path)
    save_file(broken, str(tmp_path / "model.safetensors"))
    with pytest.raises(WeightsMismatchError, match="cls.predictions.transform.dense.bias"):
        load_bert(tmp_path)


def test_pickle_only_folder_is_refused(tiny, tmp_path):
    _, folder = tiny
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    write_vocab(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"not to be unpickled")
    with pytest.raises(PickleRefusedError, match="pytorch_model.bin"):
        load_bert(tmp_path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"hidden_act": "relu"}, "hidden_act='relu'"),
        ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
        ({"is_decoder": True}, "is_decoder"),
        ({"num_attention_heads": 5}, "num_attention_heads=5"),
        ({"vocab_size": 0}, "vocab_size=0"),
    ],
)
def test_config_errors_name_the_value(change, message):
    base = {"vocab_size": 30, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}
    with pytest.raises(ConfigError, match=message):
        BertConfig.from_dict({**base, **change})


def test_defaults_are_bert_base():
    config = BertConfig.from_dict({"vocab_size": 30522})
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 12, 12)
    assert config.layer_norm_eps == 1e-12 and config.tie_word_embeddings


def test_bfloat16_compute_stays_close_and_float32(tiny):
    model, folder = tiny
    module, params, _ = load_bert(folder, dtype=jnp.bfloat16)
    ids = np.random.default_rng(2).integers(0, len(VOCAB), (2, 12)).astype(np.int32)
    ours = apply(module)({"params": params}, jnp.asarray(ids))
    assert ours.dtype == jnp.float32
    assert max_relative_error(ours, torch_logits(model, ids)) < 0.05


def test_write_test_bert_folder_loads_without_torch_names(tmp_path):
    """The torch-free test-folder writer produces transformers' names (``encoder.layer.0``)."""
    folder = write_test_bert(tmp_path / "bert", ["doctor", "nurse"], key=jax.random.key(0))
    names = load_file(str(folder / "model.safetensors"))
    assert "bert.encoder.layer.1.attention.self.query.weight" in names
    module, params, tokenizer = load_bert(folder)
    model = transformers.BertForMaskedLM.from_pretrained(str(folder)).eval()
    ids = np.array([[2, 5, 4, 6, 3]], np.int32)
    assert_close(apply(module)({"params": params}, jnp.asarray(ids)), torch_logits(model, ids))
