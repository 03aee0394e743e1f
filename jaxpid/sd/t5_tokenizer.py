"""Stable Diffusion 3's T5 tokenizer (``tokenizer_3``), read from its ``tokenizer.json``.

The ``tokenizers`` library runs the file's own pipeline (normalizer, Metaspace pre-tokenizer,
Unigram model, the post-processor that appends ``</s>``): no sentencepiece, no pickle, no network.
Prompts are padded to ``max_length`` with the folder's pad token, as diffusers'
``StableDiffusion3Pipeline._get_t5_prompt_embeds`` does (``padding="max_length"``, special tokens
added). Unlike diffusers, a prompt longer than ``max_length`` tokens is an error, not a silent
truncation (as for the CLIP tokenizers).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers

from jaxpid.errors import ConfigError, PromptError

_DEFAULTS = {"pad_token": "<pad>", "eos_token": "</s>"}  # transformers' T5Tokenizer defaults


class T5PromptTokenizer:
    """Prompts -> ``(B, max_length)`` int32 ids for the T5 encoder."""

    def __init__(self, tokenizer: tokenizers.Tokenizer, max_length: int, pad_id: int, eos_id: int,
                 source: str = "tokenizer_3"):
        self._tokenizer = tokenizer
        self.max_length = int(max_length)
        self.pad_id = int(pad_id)
        self.end_id = int(eos_id)
        self.source = source

    def __repr__(self) -> str:
        return f"T5PromptTokenizer({self.source!r}, max_length={self.max_length}, pad_id={self.pad_id})"

    def token_ids(self, text: str) -> list[int]:
        """Ids of ``text`` with the end token the post-processor appends."""
        return list(self._tokenizer.encode(text).ids)

    def encode(self, prompts: Sequence[str]) -> np.ndarray:
        """``(B, max_length)`` int32, right-padded with the pad id.

        Raises:
          TypeError: a bare string instead of a list.
          PromptError: a prompt needs more than ``max_length`` tokens (end token included).
        """
        if isinstance(prompts, str):
            raise TypeError("encode takes a list of prompts; wrap a single prompt as [prompt]")
        ids = np.full((len(prompts), self.max_length), self.pad_id, np.int32)
        for row, prompt in enumerate(prompts):
            tokens = self.token_ids(str(prompt))
            if len(tokens) > self.max_length:
                raise PromptError(f"prompt {prompt!r} has {len(tokens)} T5 tokens including the end token; "
                                  f"{self.source} takes at most {self.max_length} (max_sequence_length)")
            ids[row, :len(tokens)] = tokens
        return ids


def _special(folder: Path, name: str) -> str:
    """A special token's text from tokenizer_config.json or special_tokens_map.json (string or dict)."""
    for filename in ("tokenizer_config.json", "special_tokens_map.json"):
        path = folder / filename
        if path.is_file():
            try:
                value: Any = json.loads(path.read_text(encoding="utf-8")).get(name)
            except (OSError, json.JSONDecodeError) as error:
                raise ConfigError(f"{path}: not readable as JSON ({error})") from error
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                return value
    return _DEFAULTS[name]


def load_t5_tokenizer(folder: str | Path, max_length: int) -> T5PromptTokenizer:
    """The T5 tokenizer in ``folder`` (``tokenizer.json``), padding to ``max_length`` tokens.

    Raises:
      ConfigError: no ``tokenizer.json`` (e.g. only a sentencepiece ``spiece.model``), an unreadable
        one, or pad / end tokens missing from its vocabulary.
    """
    folder = Path(folder)
    path = folder / "tokenizer.json"
    if not path.is_file():
        found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        raise ConfigError(
            f"{folder}: no tokenizer.json (found {found}). jaxpid reads T5 tokenizers with the `tokenizers` "
            "library; a folder with only spiece.model can be converted once, where transformers and "
            "sentencepiece are installed: `T5TokenizerFast.from_pretrained(folder).save_pretrained(folder)`")
    try:
        tokenizer = tokenizers.Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises its own Exception type for malformed files
        raise ConfigError(f"{path}: not a readable tokenizers file ({error})") from error
    tokenizer.no_padding()  # padding and over-length checks are done here, the same way for every file
    tokenizer.no_truncation()
    ids = {name: tokenizer.token_to_id(_special(folder, name)) for name in _DEFAULTS}
    missing = [name for name, value in ids.items() if value is None]
    if missing:
        raise ConfigError(f"{folder}: the tokenizer's vocabulary lacks its {missing}")
    return T5PromptTokenizer(tokenizer, max_length, ids["pad_token"], ids["eos_token"], source=str(folder))
