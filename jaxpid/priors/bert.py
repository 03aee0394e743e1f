"""BERT masked language model (transformers ``BertForMaskedLM``) in Flax Linen.

jaxpid uses it only for word priors (DiffusionPID's p(y) from a masked LM, see
:mod:`jaxpid.priors`). Submodules are named after the transformers tensor names
(``bert.encoder.layer.3.attention.self.query.weight`` ->
``bert/encoder/layer_3/attention/self/query/kernel``), so
:func:`jaxpid.sd.models.convert.convert_state_dict` with :func:`bert_rename` loads a checkpoint.

The decoder of the masked-LM head is tied to the word embeddings (``tie_word_embeddings``, the
default): logits = transform(h) @ word_embeddings.T + cls.predictions.bias. A checkpoint may or
may not store the tied copies ``cls.predictions.decoder.{weight,bias}``; they are ignored, as
transformers ignores them. Untied configs have their own ``decoder`` (weight and bias).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from jaxpid.errors import ConfigError, ShapeError
from jaxpid.io.atomic import write_files
from jaxpid.sd.hf_tokenizers import bert_tokenizer_class
from jaxpid.sd.models.convert import convert_state_dict, flax_to_state_dict
from jaxpid.sd.models.layers import attention_implementation, layer_norm
from jaxpid.sd.weights import load_component_weights, read_json_config

Dtype = Any

ACTIVATIONS = ("gelu",)

# transformers' BertConfig defaults (bert-base-uncased): a key missing from config.json means this.
_TRANSFORMERS_DEFAULTS: dict[str, Any] = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
}
_POSITIVE_INTS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
    "max_position_embeddings", "type_vocab_size",
)


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The architecture fields of a transformers ``BertConfig``."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    tie_word_embeddings: bool = True

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BertConfig":
        """From a ``bert-base-uncased``-style ``config.json``; training-only keys are ignored.

        Raises:
          ConfigError: an unsupported activation, position embedding type or decoder setting,
            or sizes that do not fit together.
        """
        values = {key: d.get(key, default) for key, default in _TRANSFORMERS_DEFAULTS.items()}
        if values["hidden_act"] not in ACTIVATIONS:
            raise ConfigError(
                f"BERT config hidden_act={values['hidden_act']!r} is not supported; expected one of {ACTIVATIONS}"
            )
        position_type = d.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ConfigError(
                f"BERT config position_embedding_type={position_type!r} is not supported; expected 'absolute'"
            )
        for flag in ("is_decoder", "add_cross_attention"):
            if d.get(flag):
                raise ConfigError(f"BERT config {flag}=true: jaxpid's masked LM is a bidirectional encoder only")
        for key in _POSITIVE_INTS:
            if not isinstance(values[key], int) or isinstance(values[key], bool) or values[key] <= 0:
                raise ConfigError(f"BERT config {key}={values[key]!r}: expected a positive integer")
        if values["hidden_size"] % values["num_attention_heads"]:
            raise ConfigError(
                f"BERT config hidden_size={values['hidden_size']} does not split into "
                f"num_attention_heads={values['num_attention_heads']} heads"
            )
        values["layer_norm_eps"] = float(values["layer_norm_eps"])
        return cls(**values, tie_word_embeddings=bool(d.get("tie_word_embeddings", True)))


def _dense(features: int, dtype: Dtype, param_dtype: Dtype, name: str) -> nn.Dense:
    return nn.Dense(features, dtype=dtype, param_dtype=param_dtype, name=name)


class BertEmbeddings(nn.Module):
    """Word + absolute position + token type embeddings, then LayerNorm: ``(B, L) -> (B, L, D)``."""

    config: BertConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array) -> jax.Array:
        cfg = self.config
        kw = dict(features=cfg.hidden_size, dtype=self.dtype, param_dtype=self.param_dtype)
        words = nn.Embed(cfg.vocab_size, name="word_embeddings", **kw)(input_ids)
        positions = nn.Embed(cfg.max_position_embeddings, name="position_embeddings", **kw)(
            jnp.arange(input_ids.shape[-1])
        )
        types = nn.Embed(cfg.type_vocab_size, name="token_type_embeddings", **kw)(token_type_ids)
        x = words + types + positions[None]
        return layer_norm(cfg.layer_norm_eps, self.dtype, self.param_dtype, "LayerNorm")(x)


class BertSelfAttention(nn.Module):
    """Bidirectional multi-head attention with biased ``query``, ``key``, ``value``.

    Call: ``(x (B, L, D), key_mask (B, 1, 1, L) bool or None) -> (B, L, D)``.
    """

    config: BertConfig
    attention: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, key_mask: jax.Array | None) -> jax.Array:
        cfg = self.config
        heads = lambda h: h.reshape(*h.shape[:2], cfg.num_attention_heads, cfg.head_dim)  # noqa: E731
        q, k, v = (
            heads(_dense(cfg.hidden_size, self.dtype, self.param_dtype, name)(x)) for name in ("query", "key", "value")
        )
        impl = attention_implementation(self.attention, self.dtype, cfg.head_dim)
        out = jax.nn.dot_product_attention(q, k, v, mask=key_mask, implementation=impl)
        return out.reshape(x.shape[0], x.shape[1], cfg.hidden_size)


class BertResidualOutput(nn.Module):
    """Post-LayerNorm residual: ``LayerNorm(dense(h) + residual)`` (transformers' ``*Output``)."""

    config: BertConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array, residual: jax.Array) -> jax.Array:
        cfg = self.config
        h = _dense(cfg.hidden_size, self.dtype, self.param_dtype, "dense")(h)
        return layer_norm(cfg.layer_norm_eps, self.dtype, self.param_dtype, "LayerNorm")(h + residual)


class BertAttentionBlock(nn.Module):
    """transformers' ``BertAttention``: self-attention, then its residual output."""

    config: BertConfig
    attention: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, key_mask: jax.Array | None) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = BertSelfAttention(self.config, self.attention, name="self", **kw)(x, key_mask)
        return BertResidualOutput(self.config, name="output", **kw)(h, x)


class BertIntermediate(nn.Module):
    """``dense`` to ``intermediate_size`` then exact (erf) gelu, as transformers' "gelu"."""

    config: BertConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = _dense(self.config.intermediate_size, self.dtype, self.param_dtype, "dense")(x)
        return jax.nn.gelu(h, approximate=False)


class BertLayer(nn.Module):
    """``attention.self`` -> ``attention.output`` -> ``intermediate`` (gelu) -> ``output``."""

    config: BertConfig
    attention: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, key_mask: jax.Array | None) -> jax.Array:
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = BertAttentionBlock(cfg, self.attention, name="attention", **kw)(x, key_mask)
        h = BertIntermediate(cfg, name="intermediate", **kw)(x)
        return BertResidualOutput(cfg, name="output", **kw)(h, x)


class BertEncoder(nn.Module):
    """``num_hidden_layers`` post-LayerNorm layers named ``layer_0``, ``layer_1``, ..."""

    config: BertConfig
    attention: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, key_mask: jax.Array | None) -> jax.Array:
        for i in range(self.config.num_hidden_layers):
            layer = BertLayer(
                self.config, self.attention, dtype=self.dtype, param_dtype=self.param_dtype, name=f"layer_{i}"
            )
            x = layer(x, key_mask)
        return x


class BertModel(nn.Module):
    """``embeddings`` then ``encoder``: ``(B, L) ids -> (B, L, D)`` hidden states."""

    config: BertConfig
    attention: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids: jax.Array, key_mask: jax.Array | None, token_type_ids: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = BertEmbeddings(self.config, name="embeddings", **kw)(input_ids, token_type_ids)
        encoder = BertEncoder(self.config, self.attention, name="encoder", **kw)
        return encoder(x, key_mask)


class BertPredictionTransform(nn.Module):
    """``dense`` -> gelu -> ``LayerNorm``: ``(B, L, D) -> (B, L, D)``."""

    config: BertConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        cfg = self.config
        h = jax.nn.gelu(_dense(cfg.hidden_size, self.dtype, self.param_dtype, "dense")(h), approximate=False)
        return layer_norm(cfg.layer_norm_eps, self.dtype, self.param_dtype, "LayerNorm")(h)


class BertLMPredictionHead(nn.Module):
    """``transform`` (dense, gelu, LayerNorm), then the decoder and the output ``bias``.

    Call: ``(h (B, L, D), word_embeddings (V, D)) -> logits (B, L, V)`` float32.
    """

    config: BertConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array, word_embeddings: jax.Array) -> jax.Array:
        cfg = self.config
        transform = BertPredictionTransform(cfg, dtype=self.dtype, param_dtype=self.param_dtype, name="transform")
        h = transform(h)
        if not cfg.tie_word_embeddings:  # an own decoder, whose bias replaces ``bias``
            return _dense(cfg.vocab_size, self.dtype, self.param_dtype, "decoder")(h).astype(jnp.float32)
        logits = jnp.einsum("bld,vd->blv", h, word_embeddings.astype(self.dtype))
        bias = self.param("bias", nn.initializers.zeros, (cfg.vocab_size,), self.param_dtype)
        return logits.astype(jnp.float32) + bias.astype(jnp.float32)


class BertMLMHead(nn.Module):
    """transformers' ``BertOnlyMLMHead``: a module holding ``predictions``."""

    config: BertConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, h: jax.Array, word_embeddings: jax.Array) -> jax.Array:
        head = BertLMPredictionHead(self.config, dtype=self.dtype, param_dtype=self.param_dtype, name="predictions")
        return head(h, word_embeddings)


class BertForMaskedLM(nn.Module):
    """BERT masked LM: ``input_ids (B, L) int -> logits (B, L, vocab_size)`` float32.

    ``attention_mask`` (B, L): 1 for tokens to attend to, 0 for padding (any positions, as in
    transformers); ``token_type_ids`` (B, L) default all 0. ``attention`` picks the kernel (see
    :func:`layers.attention_implementation`).
    """

    config: BertConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attention: str = "auto"

    def setup(self) -> None:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.bert = BertModel(self.config, self.attention, **kw)
        self.cls = BertMLMHead(self.config, **kw)

    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        token_type_ids: jax.Array | None = None,
    ) -> jax.Array:
        cfg = self.config
        if input_ids.ndim != 2 or input_ids.shape[1] > cfg.max_position_embeddings:
            raise ShapeError(
                f"input_ids shape {input_ids.shape}: expected (batch, length) with length <= "
                f"max_position_embeddings {cfg.max_position_embeddings}"
            )
        for name, extra in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if extra is not None and extra.shape != input_ids.shape:
                raise ShapeError(f"{name} shape {extra.shape} != input_ids shape {input_ids.shape}")
        key_mask = None if attention_mask is None else (attention_mask != 0)[:, None, None, :]
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        h = self.bert(input_ids.astype(jnp.int32), key_mask, token_type_ids.astype(jnp.int32))
        table = self.bert.variables["params"]["embeddings"]["word_embeddings"]["embedding"]
        return self.cls(h, table)


def expected_params(config: BertConfig, param_dtype: Dtype = jnp.float32) -> dict[str, Any]:
    """The params pytree of :class:`BertForMaskedLM` as ``jax.ShapeDtypeStruct`` leaves (no compute)."""
    ids = jax.ShapeDtypeStruct((1, 8), jnp.int32)
    return jax.eval_shape(BertForMaskedLM(config, param_dtype=param_dtype).init, jax.random.key(0), ids)["params"]


# Tensors of BERT checkpoints that the masked LM does not use: the pooler and next-sentence
# head of BertForPreTraining / BertModel checkpoints (bert-base-uncased ships them), and buffers.
_UNUSED = re.compile(r"^(bert\.pooler\.|cls\.seq_relationship\.)|(\.position_ids|\.token_type_ids)$")
# With tied embeddings, transformers ties these to word_embeddings.weight and cls.predictions.bias;
# untied, the decoder has its own weight and bias and cls.predictions.bias is unused.
_TIED_COPIES = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")


def bert_rename(config: BertConfig) -> Callable[[str], str | None]:
    """Checkpoint tensor name -> canonical name, for :func:`convert_state_dict`.

    Drops the pooler, the next-sentence head and buffers; with tied embeddings the decoder's
    weight and bias (copies of the word embeddings and ``cls.predictions.bias``), untied the
    unused ``cls.predictions.bias``. Renames TF-era LayerNorm ``gamma`` / ``beta`` to
    ``weight`` / ``bias``.
    """

    def rename(name: str) -> str | None:
        if _UNUSED.search(name):
            return None
        if config.tie_word_embeddings and name in _TIED_COPIES:
            return None
        if not config.tie_word_embeddings and name == "cls.predictions.bias":
            return None
        if name.endswith("LayerNorm.gamma"):
            return name[: -len("gamma")] + "weight"
        if name.endswith("LayerNorm.beta"):
            return name[: -len("beta")] + "bias"
        return name

    return rename


def load_bert(
    folder: str | Path,
    dtype: Dtype = jnp.float32,
    param_dtype: Dtype = jnp.float32,
    attention: str = "auto",
) -> tuple[BertForMaskedLM, dict[str, Any], Any]:
    """Load a ``bert-base-uncased``-style folder: ``config.json``, ``model.safetensors``, ``vocab.txt``.

    Returns:
      (module, params, tokenizer): the Flax module, its params (``param_dtype``) and the
      transformers ``BertTokenizer`` (backed by the compiled ``tokenizers`` package; no torch).

    Raises:
      ConfigError: no or unsupported ``config.json``; no ``vocab.txt`` / ``tokenizer.json``; a
        tokenizer whose vocabulary or special tokens do not fit the model.
      PickleRefusedError: only ``pytorch_model.bin`` is present.
      WeightsError, WeightsMismatchError: unreadable weights, or tensors that do not match.
    """
    folder = Path(folder)
    config = BertConfig.from_dict(read_json_config(folder))
    module = BertForMaskedLM(config, dtype=dtype, param_dtype=param_dtype, attention=attention)
    state = load_component_weights(folder)
    expected = expected_params(config)
    tree = convert_state_dict(state, expected, what=f"BERT masked LM {folder}", rename=bert_rename(config))
    params = jax.tree.map(lambda array: jnp.asarray(array, dtype=param_dtype), tree)
    return module, params, load_bert_tokenizer(folder, config)


def load_bert_tokenizer(folder: str | Path, config: BertConfig | None = None) -> Any:
    """transformers' ``BertTokenizer`` from ``vocab.txt`` (and optional ``tokenizer_config.json``)
    or ``tokenizer.json``, checked to have [CLS], [SEP], [MASK] and to fit the model's vocabulary."""
    folder = Path(folder)
    if not ((folder / "vocab.txt").is_file() or (folder / "tokenizer.json").is_file()):
        raise ConfigError(f"{folder}: no BERT tokenizer files (need vocab.txt or tokenizer.json)")
    tokenizer = bert_tokenizer_class().from_pretrained(str(folder))
    # transformers appends special tokens missing from vocab.txt as new ids the model never saw.
    listed = None
    if (folder / "vocab.txt").is_file():
        listed = set((folder / "vocab.txt").read_text(encoding="utf-8").splitlines())
    for role in ("cls_token", "sep_token", "mask_token", "pad_token"):
        token = getattr(tokenizer, role)
        if token is None or getattr(tokenizer, f"{role}_id") is None or (listed is not None and token not in listed):
            raise ConfigError(f"{folder}: the tokenizer vocabulary has no {token!r} ({role})")
    if config is not None and len(tokenizer) > config.vocab_size:
        raise ConfigError(
            f"{folder}: the tokenizer has {len(tokenizer)} tokens, more than the model's vocab_size {config.vocab_size}"
        )
    return tokenizer


# ---------------------------------------------------------------------------------------------
# A tiny random BERT folder, for tests and demos (no download, no torch).

_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def write_test_bert(
    folder: str | Path,
    words: Sequence[str],
    *,
    key: jax.Array,
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    intermediate_size: int = 64,
    max_position_embeddings: int = 64,
) -> Path:
    """Write a random BERT masked-LM folder (``config.json``, ``model.safetensors``, ``vocab.txt``).

    The vocabulary is the special tokens, then ``words`` (lower-cased word pieces; ``##`` marks a
    continuation piece). Weights are random (normal, scale 0.2) so priors differ between words.
    """
    vocab = list(_SPECIAL_TOKENS) + [w for w in dict.fromkeys(words) if w not in _SPECIAL_TOKENS]
    config = {
        "architectures": ["BertForMaskedLM"], "model_type": "bert", "vocab_size": len(vocab),
        "hidden_size": hidden_size, "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads, "intermediate_size": intermediate_size,
        "hidden_act": "gelu", "max_position_embeddings": max_position_embeddings, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "pad_token_id": 0, "position_embedding_type": "absolute",
    }
    shapes = expected_params(BertConfig.from_dict(config))
    leaves, treedef = jax.tree.flatten(shapes)
    sizes = [int(np.prod(leaf.shape)) for leaf in leaves]
    flat = 0.2 * np.asarray(jax.random.normal(key, (sum(sizes),), jnp.float32))  # one draw, split below
    chunks = np.split(flat, np.cumsum(sizes)[:-1])
    params = jax.tree.unflatten(treedef, [chunk.reshape(leaf.shape) for chunk, leaf in zip(chunks, leaves)])
    # A list index in a name ("layer_0") becomes "layer.0", whatever convert's list-name table holds.
    state = {
        re.sub(r"\.layer_(\d+)\.", r".layer.\1.", name): np.asarray(array)
        for name, array in flax_to_state_dict(params).items()
    }
    return write_files(folder, {
        "model.safetensors": safetensors.numpy.save(state),
        "config.json": json.dumps(config, indent=2),
        "vocab.txt": "\n".join(vocab) + "\n",
    })
