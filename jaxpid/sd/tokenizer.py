"""CLIP prompt tokenization: fixed-length ids for the text encoder and word -> token positions.

Stable Diffusion pipelines pad every prompt to the tokenizer's maximum length (77) with the
pad token of the model's *own* tokenizer: SD 1.x pads with the end token, SD 2.x with "!"
(id 0). The UNet was trained on that padding, so the pad id is always read from the folder.

Unlike the diffusers pipeline, an over-long prompt is an error here rather than a silent
truncation: information terms about a truncated word would be meaningless.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxpid.errors import ConfigError, PromptError
from jaxpid.io.atomic import write_files
from jaxpid.sd.clip_bpe import END_OF_WORD as _END_OF_WORD
from jaxpid.sd.clip_bpe import END_TOKEN as _END_TOKEN
from jaxpid.sd.clip_bpe import START_TOKEN as _START_TOKEN
from jaxpid.sd.clip_bpe import ClipBPE, byte_symbols

_DEFAULT_MAX_LENGTH = 77
# A tokenizer_config.json model_max_length at or above this means "no limit" (transformers writes
# a huge integer for it).
_UNBOUNDED = 1_000_000


class WordSpan(NamedTuple):
    """A whitespace-separated word of a prompt and the token positions it occupies.

    ``first_token`` indexes the encoded ids, where position 0 holds the start token.
    """

    word: str
    first_token: int
    n_tokens: int


class PromptTokenizer:
    """Turns prompts into the ``(B, max_length)`` int32 ids the CLIP text encoder consumes.

    ``tokenizer`` is a :class:`~jaxpid.sd.clip_bpe.ClipBPE` (what :func:`load_tokenizer` gives),
    or anything with the same ``encode(text, add_special_tokens)``, ``pad_token_id``,
    ``bos_token_id``, ``eos_token_id`` and ``len()`` (transformers' ``CLIPTokenizer`` has them).
    """

    def __init__(self, tokenizer, max_length: int, source: str = "tokenizer"):
        self._tokenizer = tokenizer
        self.max_length = int(max_length)
        self.source = source
        self.pad_id = int(tokenizer.pad_token_id)
        self.start_id = int(tokenizer.bos_token_id)
        self.end_id = int(tokenizer.eos_token_id)
        self.vocab_size = len(tokenizer)

    def __repr__(self) -> str:
        return (
            f"PromptTokenizer({self.source!r}, max_length={self.max_length}, pad_id={self.pad_id}, "
            f"vocab_size={self.vocab_size})"
        )

    def token_ids(self, text: str) -> list[int]:
        """BPE ids of ``text`` without start/end tokens."""
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    def encode(self, prompts: Sequence[str]) -> np.ndarray:
        """Ids exactly as the diffusers SD pipeline builds them, shape ``(B, max_length)`` int32.

        Raises:
          PromptError: a prompt needs more than ``max_length`` tokens (start/end included).
        """
        prompts = _as_prompt_list(prompts)
        ids = np.full((len(prompts), self.max_length), self.pad_id, dtype=np.int32)
        for row, tokens in zip(ids, self._encode_checked(prompts)):
            row[: len(tokens)] = tokens
        return ids

    def padding_mask(self, prompts: Sequence[str]) -> np.ndarray:
        """``(B, max_length)`` bool, True at start, prompt and end tokens; only for text encoders
        whose config sets ``use_attention_mask`` (the pad id alone cannot tell SD 1.x padding
        from its end token)."""
        prompts = _as_prompt_list(prompts)
        lengths = [len(ids) for ids in self._encode_checked(prompts)]
        return np.arange(self.max_length)[None, :] < np.asarray(lengths, dtype=np.int64).reshape(-1, 1)

    def word_spans(self, prompt: str) -> list[WordSpan]:
        """Map each whitespace-separated word of ``prompt`` to its token positions in ``encode``.

        CLIP lower-cases and splits punctuation into tokens of their own, so ``"cat,"`` covers
        two tokens; a word's span holds all of them.

        Raises:
          PromptError: the prompt is too long, a word yields no token, or word-by-word
            tokenization disagrees with tokenizing the whole prompt.
        """
        self._check_lengths([prompt])
        whole = self.token_ids(prompt)
        spans: list[WordSpan] = []
        pieces: list[int] = []
        for word in prompt.split():
            ids = self.token_ids(word)
            if not ids:
                raise PromptError(f"word {word!r} of prompt {prompt!r} produces no token")
            spans.append(WordSpan(word, 1 + len(pieces), len(ids)))  # +1: the start token
            pieces.extend(ids)
        if pieces != whole:
            raise PromptError(
                f"prompt {prompt!r}: tokenizing word by word gives {pieces}, the whole prompt "
                f"gives {whole}; cannot map words to token positions"
            )
        return spans

    def _check_lengths(self, prompts: list[str]) -> list[int]:
        return [len(ids) for ids in self._encode_checked(prompts)]

    def _encode_checked(self, prompts: list[str]) -> list[list[int]]:
        """Each prompt's ids with start and end tokens, after checking they all fit."""
        encoded = [list(self._tokenizer.encode(prompt, add_special_tokens=True)) for prompt in prompts]
        for prompt, ids in zip(prompts, encoded):
            if len(ids) > self.max_length:
                raise PromptError(
                    f"prompt {prompt!r} has {len(ids)} tokens including start and end tokens; "
                    f"the text encoder takes at most {self.max_length}"
                )
        return encoded


def _as_prompt_list(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str):
        raise TypeError("encode takes a list of prompts; wrap a single prompt as [prompt]")
    return [str(p) for p in prompts]


def load_tokenizer(folder: str | Path, model_max_positions: int | None = None) -> PromptTokenizer:
    """Load the CLIP tokenizer saved in ``folder`` (``vocab.json`` + ``merges.txt`` or ``tokenizer.json``).

    Args:
      folder: a tokenizer folder, e.g. ``<sd-model>/tokenizer``.
      model_max_positions: the text encoder's ``max_position_embeddings``, if known. The padded
        length is the tokenizer config's ``model_max_length``, else this, else 77.

    Raises:
      ConfigError: the folder holds no tokenizer files, or its max length exceeds the encoder's.
    """
    folder = Path(folder)
    has_json = (folder / "tokenizer.json").is_file()
    has_bpe = (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    if not (has_json or has_bpe):
        raise ConfigError(
            f"{folder}: no CLIP tokenizer files (need vocab.json + merges.txt, or tokenizer.json)"
        )
    tokenizer = ClipBPE.from_folder(folder)
    if tokenizer.pad_token_id is None or tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
        raise ConfigError(f"{folder}: tokenizer lacks a pad, start or end token")

    configured = tokenizer.model_max_length  # None: the folder sets no limit
    if configured is not None and configured < _UNBOUNDED:
        max_length = int(configured)
        if model_max_positions is not None and max_length > model_max_positions:
            raise ConfigError(
                f"{folder}: tokenizer model_max_length {max_length} exceeds the text encoder's "
                f"max_position_embeddings {model_max_positions}"
            )
    else:
        max_length = model_max_positions if model_max_positions is not None else _DEFAULT_MAX_LENGTH
    return PromptTokenizer(tokenizer, max_length, source=str(folder))


# ---------------------------------------------------------------------------------------------
# A tiny CLIP tokenizer folder, for tests and the demo model (no download).


def _apply_merges(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Byte-pair encoding of one pre-token: repeatedly merge the adjacent pair of lowest rank."""
    symbols = list(symbols)
    while len(symbols) > 1:
        pairs = [(ranks.get(pair, len(ranks) + 1), i, pair) for i, pair in enumerate(zip(symbols, symbols[1:]))]
        rank, _, best = min(pairs)
        if rank > len(ranks):
            break
        merged: list[str] = []
        i = 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return symbols


def write_test_tokenizer(
    folder: str | Path,
    words: Sequence[str],
    pad_token: str = _END_TOKEN,
    model_max_length: int = _DEFAULT_MAX_LENGTH,
) -> Path:
    """Write :func:`tokenizer_files_for_words` into ``folder`` (created if needed); returns it."""
    return write_files(folder, tokenizer_files_for_words(words, pad_token, model_max_length))


def tokenizer_files_for_words(
    words: Sequence[str],
    pad_token: str = _END_TOKEN,
    model_max_length: int = _DEFAULT_MAX_LENGTH,
) -> dict[str, str]:
    """The files of a small CLIP BPE tokenizer folder in which each of ``words`` is one token.

    The vocabulary is laid out like CLIP's: the 256 byte symbols, the same with the ``</w>``
    end-of-word suffix, the merged tokens, then the start and end tokens. Any text tokenizes
    (into single characters at worst). Merges for a new word are appended after all earlier
    ones, so they never fire inside an earlier word and every listed word stays one token.

    Args:
      words: alphabetic words (any case; CLIP lower-cases).
      pad_token: ``"<|endoftext|>"`` as in SD 1.x tokenizers, or ``"!"`` as in SD 2.x.

    Returns:
      file name -> text: vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json.
    """
    if pad_token not in (_END_TOKEN, "!"):
        raise ValueError(f"pad_token must be {_END_TOKEN!r} or '!', got {pad_token!r}")
    table = byte_symbols()
    symbols = list(table.values())
    vocab: dict[str, int] = {}
    for token in symbols + [s + _END_OF_WORD for s in symbols]:
        vocab[token] = len(vocab)
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in dict.fromkeys(w.lower() for w in words):
        if not word.isalpha():
            raise ValueError(f"test tokenizer words must be alphabetic, got {word!r}")
        chars = [table[b] for b in word.encode("utf-8")]
        pieces = _apply_merges(chars[:-1] + [chars[-1] + _END_OF_WORD], ranks)
        while len(pieces) > 1:  # join what existing merges left apart, left to right
            pair = (pieces[0], pieces[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            vocab.setdefault(pair[0] + pair[1], len(vocab))
            pieces = [pair[0] + pair[1]] + pieces[2:]
    vocab[_START_TOKEN] = len(vocab)
    vocab[_END_TOKEN] = len(vocab)

    special = {
        "bos_token": _START_TOKEN,
        "eos_token": _END_TOKEN,
        "unk_token": _END_TOKEN,
        "pad_token": pad_token,
    }
    config = {
        **special,
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": model_max_length,
        "do_lower_case": True,
        "add_prefix_space": False,
        "errors": "replace",
    }
    return {
        "vocab.json": json.dumps(vocab, ensure_ascii=False),
        "merges.txt": "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
        "special_tokens_map.json": json.dumps(special, indent=2),
        "tokenizer_config.json": json.dumps(config, indent=2),
    }
