"""CLIP's byte-level BPE tokenizer, read from a tokenizer folder without transformers.

It gives the ids transformers' ``CLIPTokenizer.from_pretrained(folder)`` gives (transformers 5,
whose CLIP tokenizer is the ``tokenizers``-backed one; ``tests/test_clip_bpe.py`` pins the
parity), but importing it costs milliseconds instead of transformers' half second. A prompt goes
through these steps:

1. Added tokens (the special tokens of the folder: start, end, unknown, pad, and any others it
   lists) are cut out of the raw text wherever they occur, e.g. ``<|endoftext|>`` written in a
   prompt, or ``!`` when it is the pad token (SD 2.x). Tokens flagged ``normalized`` are looked
   for in step 2's normalized text instead.
2. The rest is normalized: Unicode NFC, every run of whitespace to one space, lower case
   (character by character: ``"Σ"`` is always ``"σ"``).
3. It is split into words: the two special strings, the contractions ``'s 't 're 've 'm 'll 'd``,
   runs of letters, single digits and runs of other non-space characters; whitespace is dropped.
   A word is then cut again by GPT-2's byte-level pattern (only ``<|startoftext|>`` and
   ``<|endoftext|>`` are affected: ``"<|"``, ``"endoftext"``, ``"|>"``).
4. Each word's UTF-8 bytes become printable symbols (the byte table below), the last one gets the
   ``</w>`` suffix, and merges apply: always the adjacent pair of lowest rank, leftmost first.
   A symbol outside the vocabulary becomes the unknown token's id.

Unlike the original OpenAI code (and transformers 4's slow ``CLIPTokenizer``) there is no
``ftfy`` / HTML clean-up, control characters are kept (as byte tokens) and a run of CJK
characters is one word: that is what transformers 5 (and transformers 4's ``CLIPTokenizerFast``)
does.

Unicode tables: letters, digits and whitespace come from the ``regex`` module, NFC and lower
case from Python's ``unicodedata``; the ``tokenizers`` library compiles in its own. They agree on
every character Python's database knows (Unicode 14 for Python 3.11; checked over all code
points against ``tokenizers`` 0.23), but characters assigned later (Unicode 15-17) may split or
lower-case differently.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import json
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regex

from jaxpid.errors import ConfigError

START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"

# transformers' CLIPTokenizer defaults for the roles its folder leaves out.
_ROLE_DEFAULTS = {"unk_token": END_TOKEN, "bos_token": START_TOKEN, "eos_token": END_TOKEN, "pad_token": END_TOKEN}
# The named special-token roles, in the order transformers registers them.
_ROLES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")

# `\s` here is Unicode White_Space, as in the Rust regex engines of the `tokenizers` library.
_WHITESPACE_RUN = regex.compile(r"\s+")
_WORD = regex.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+")
_BYTE_LEVEL_WORD = regex.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")
# Rust regex's Unicode `\w`.
_ENDS_WITH_WORD = regex.compile(r"[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]$")
_STARTS_WITH_WORD = regex.compile(r"^[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]")
_SIGMA = "\u03a3"
_WORD_CACHE_SIZE = 1 << 16  # words memoised per tokenizer (emptied when full)


def byte_symbols() -> dict[int, str]:
    """Byte -> the printable symbol byte-level BPE uses for it, in CLIP's vocabulary order.

    Printable bytes stand for themselves; the rest are shifted above 255 so that every byte has
    a visible, non-whitespace symbol. CLIP's vocabulary starts with these symbols in this
    order, which is why "!" (byte 33) has id 0.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + len(table) - len(printable))
    return table


_BYTE_SYMBOL = byte_symbols()


@dataclass(frozen=True)
class AddedToken:
    """A token matched in the text before BPE, with the flags ``tokenizers`` gives it.

    ``lstrip``/``rstrip`` (take the whitespace beside the token into it) never change CLIP's
    ids, whose pre-tokenizer drops whitespace anyway, so matching ignores them; they still tell
    two registrations of a token apart (see ``_special_tokens``).
    """

    content: str
    single_word: bool = False
    lstrip: bool = False
    rstrip: bool = False
    normalized: bool = False


def normalize(text: str) -> str:
    """CLIP's normalizer: NFC, whitespace runs -> one space, per-character lower case."""
    text = unicodedata.normalize("NFC", text)
    text = _WHITESPACE_RUN.sub(" ", text)
    if _SIGMA in text:  # str.lower() would make a word-final sigma "ς"; the tokenizer does not
        return "".join(c.lower() for c in text)
    return text.lower()


class ClipBPE:
    """CLIP's tokenizer: text -> ids, as transformers' ``CLIPTokenizer`` of the same folder.

    Build it with :meth:`from_folder`. ``bos_token_id``/``eos_token_id``/``pad_token_id``/
    ``unk_token_id`` are ``None`` where the folder sets that role to null.
    """

    def __init__(
        self,
        vocab: Mapping[str, int],
        merges: Iterable[Sequence[str]],
        special_tokens: Mapping[str, str | None],
        added_tokens: Iterable[AddedToken] = (),
        model_max_length: int | None = None,
        source: str = "CLIP tokenizer",
    ):
        self.source = source
        self.model_max_length = model_max_length
        self._vocab = dict(vocab)
        self._merges: dict[tuple[int, int], tuple[int, int]] = {}
        lookup = self._vocab.get
        for rank, (a, b) in enumerate(merges):
            left, right, merged = lookup(a), lookup(b), lookup(a + b)
            if left is None or right is None or merged is None:
                missing = next(t for t in (a, b, a + b) if t not in self._vocab)
                raise ConfigError(f"{source}: merge {a!r} {b!r} uses {missing!r}, which the vocabulary lacks")
            self._merges[left, right] = (rank, merged)  # a repeated pair keeps its last rank
        self._special = dict(special_tokens)
        self._unk = self._special.get("unk_token")

        # Added tokens: ids from the vocabulary, else new ids after it; a repeated content keeps
        # its first id and takes the flags of its last occurrence (as `tokenizers` does).
        self._added: dict[str, tuple[int, AddedToken]] = {}
        for token in added_tokens:
            if not token.content:
                continue
            if token.content in self._added:
                token_id = self._added[token.content][0]
            elif token.content in self._vocab:
                token_id = self._vocab[token.content]
            else:
                newest = max((i for i, _ in self._added.values()), default=None)
                size = len(self._vocab)
                token_id = size if newest is None or (newest < size and size) else newest + 1
            self._added[token.content] = (token_id, token)
        self._raw_matcher = self._matcher(t for _, t in self._added.values() if not t.normalized)
        self._normalized_matcher = self._matcher(t for _, t in self._added.values() if t.normalized)
        self._word_cache: dict[str, tuple[int, ...]] = {}

    # -- loading ---------------------------------------------------------------------------

    @classmethod
    def from_folder(cls, folder: str | Path) -> ClipBPE:
        """Read ``tokenizer.json`` (a BPE model) or ``vocab.json`` + ``merges.txt``, with
        ``tokenizer_config.json`` and ``special_tokens_map.json`` when present.

        Raises:
          ConfigError: no tokenizer files, or files that cannot be read as a CLIP BPE tokenizer.
        """
        folder = Path(folder)
        with _gc_paused():  # ~10^5 small objects: the collector would double the load time
            return cls._from_folder(folder)

    @classmethod
    def _from_folder(cls, folder: Path) -> ClipBPE:
        config = _read_json(folder / "tokenizer_config.json", {})
        if not isinstance(config, dict):
            raise ConfigError(f"{folder / 'tokenizer_config.json'}: not a JSON object")
        json_added: list[AddedToken] | None = None
        if (folder / "tokenizer.json").is_file():
            vocab, merges, json_added = _read_tokenizer_json(folder / "tokenizer.json")
        elif (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            vocab = _read_vocab(folder / "vocab.json")
            merges = _read_merges(folder / "merges.txt")
        else:
            raise ConfigError(
                f"{folder}: no CLIP tokenizer files (need vocab.json + merges.txt, or tokenizer.json)"
            )
        specials, added = _special_tokens(folder, config, json_added)
        max_length = config.get("model_max_length", config.get("max_len"))
        return cls(vocab, merges, specials, added,
                   model_max_length=None if max_length is None else int(max_length), source=str(folder))

    # -- the vocabulary --------------------------------------------------------------------

    def __len__(self) -> int:
        """Vocabulary size with the added tokens (as ``len()`` of transformers' tokenizer)."""
        return len(self._vocab.keys() | self._added.keys())

    def __repr__(self) -> str:
        return f"ClipBPE({self.source!r}, {len(self)} tokens)"

    def token_to_id(self, token: str) -> int | None:
        if token in self._added:
            return self._added[token][0]
        return self._vocab.get(token)

    def _role_id(self, role: str) -> int | None:
        token = self._special.get(role)
        return None if token is None else self.token_to_id(token)

    bos_token = property(lambda self: self._special.get("bos_token"))
    eos_token = property(lambda self: self._special.get("eos_token"))
    unk_token = property(lambda self: self._special.get("unk_token"))
    pad_token = property(lambda self: self._special.get("pad_token"))
    bos_token_id = property(lambda self: self._role_id("bos_token"))
    eos_token_id = property(lambda self: self._role_id("eos_token"))
    unk_token_id = property(lambda self: self._role_id("unk_token"))
    pad_token_id = property(lambda self: self._role_id("pad_token"))

    # -- encoding --------------------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Ids of ``text``; with ``add_special_tokens`` between the start and end tokens."""
        ids: list[int] = []
        for raw, token_id in self._split_added(text, self._raw_matcher):
            if token_id is not None:
                ids.append(token_id)
                continue
            for piece, token_id in self._split_added(normalize(raw), self._normalized_matcher):
                if token_id is not None:
                    ids.append(token_id)
                    continue
                for word in _WORD.findall(piece):
                    cached = self._word_cache.get(word)
                    if cached is None:
                        if len(self._word_cache) >= _WORD_CACHE_SIZE:
                            self._word_cache.clear()
                        cached = self._word_cache[word] = self._word_ids(word)
                    ids.extend(cached)
        if add_special_tokens:
            start, end = self.bos_token_id, self.eos_token_id
            if start is None or end is None:
                raise ConfigError(f"{self.source}: no start or end token to add")
            ids = [start, *ids, end]
        return ids

    def _word_ids(self, word: str) -> tuple[int, ...]:
        ids: list[int] = []
        for part in _BYTE_LEVEL_WORD.findall(word):
            ids.extend(self._bpe("".join(_BYTE_SYMBOL[b] for b in part.encode("utf-8"))))
        return tuple(ids)

    def _bpe(self, symbols: str) -> list[int]:
        """Byte-pair encoding of one word of byte symbols, as the ``tokenizers`` BPE model does:
        a queue of adjacent pairs by (rank, position); the lowest merges, its neighbours' new
        pairs join the queue, stale entries are skipped."""
        ids: list[int] = []
        last = len(symbols) - 1
        for i, symbol in enumerate(symbols):
            token_id = self._vocab.get(symbol + END_OF_WORD if i == last else symbol)
            if token_id is None:
                token_id = self._vocab.get(self._unk) if self._unk is not None else None
                if token_id is None:
                    raise ConfigError(f"{self.source}: {symbol!r} is not in the vocabulary and there is no "
                                      f"unknown token in it to stand for it")
            ids.append(token_id)
        n = len(ids)
        if n < 2:
            return ids
        merges = self._merges
        after = list(range(1, n)) + [-1]
        before = list(range(-1, n - 1))
        alive = [True] * n
        queue = [(m[0], i, m[1]) for i in range(n - 1) if (m := merges.get((ids[i], ids[i + 1])))]
        heapq.heapify(queue)
        while queue:
            _, pos, new_id = heapq.heappop(queue)
            right = after[pos]
            if not alive[pos] or right < 0:
                continue
            current = merges.get((ids[pos], ids[right]))
            if current is None or current[1] != new_id:
                continue  # the pair changed since it was queued
            ids[pos] = new_id
            alive[right] = False
            nxt = after[right]
            after[pos] = nxt
            if nxt >= 0:
                before[nxt] = pos
            prv = before[pos]
            if prv >= 0 and (m := merges.get((ids[prv], new_id))):
                heapq.heappush(queue, (m[0], prv, m[1]))
            if nxt >= 0 and (m := merges.get((new_id, ids[nxt]))):
                heapq.heappush(queue, (m[0], pos, m[1]))
        return [token_id for token_id, keep in zip(ids, alive) if keep]

    # -- added tokens ----------------------------------------------------------------------

    def _matcher(self, tokens: Iterable[AddedToken]) -> Any:
        """A pattern finding the tokens leftmost-longest, and the token each match stands for."""
        by_pattern: dict[str, AddedToken] = {}
        for token in tokens:
            pattern = normalize(token.content) if token.normalized else token.content
            if pattern:
                by_pattern.setdefault(pattern, token)
        if not by_pattern:
            return None
        ordered = sorted(by_pattern, key=len, reverse=True)  # the longest first: leftmost-longest
        return regex.compile("|".join(regex.escape(p) for p in ordered)), by_pattern

    def _split_added(self, text: str, matcher: Any) -> list[tuple[str, int | None]]:
        """``text`` as pieces: (piece, None) for plain text, (token, id) for an added token."""
        if matcher is None:
            return [(text, None)]
        pattern, by_pattern = matcher
        pieces: list[tuple[str, int | None]] = []
        done = 0
        for match in pattern.finditer(text):
            start, stop = match.span()
            token = by_pattern[match.group()]
            if token.single_word and not (
                (start == 0 or not _ENDS_WITH_WORD.search(text[:start]))
                and (stop == len(text) or not _STARTS_WITH_WORD.search(text[stop:]))
            ):
                continue
            if done < start:
                pieces.append((text[done:start], None))
            pieces.append((text[start:stop], self._added[token.content][0]))
            done = stop
        if done < len(text):
            pieces.append((text[done:], None))
        return pieces


# ---------------------------------------------------------------------------------------------
# Reading a folder


@contextlib.contextmanager
def _gc_paused():
    """No cyclic garbage collection inside (the tables built are acyclic; nothing is lost)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _read_json(path: Path, default: Any = None) -> Any:
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid JSON ({error})") from None


def _read_vocab(path: Path) -> dict[str, int]:
    vocab = _read_json(path)
    if not isinstance(vocab, dict):
        raise ConfigError(f"{path}: the vocabulary must be a JSON object of token -> id")
    if all(type(token_id) is int and token_id >= 0 for token_id in vocab.values()):
        return vocab
    out = {}
    for token, token_id in vocab.items():
        if isinstance(token_id, bool) or not isinstance(token_id, (int, float)):
            continue  # `tokenizers` skips entries whose id is not a number
        if token_id < 0 or token_id != int(token_id):
            raise ConfigError(f"{path}: token {token!r} has id {token_id!r}, not a non-negative integer")
        out[token] = int(token_id)
    return out


def _read_merges(path: Path) -> list[list[str]]:
    """Merges, one "a b" a line, as the ``tokenizers`` library reads them: lines split at "\\n"
    only (a "\\r" before it dropped), "#version" lines skipped, no trailing empty line."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if "\r" in text:
        lines = [line.removesuffix("\r") for line in lines]
    pairs = [line.split(" ") for line in lines if not line.startswith("#version")]
    for rank, pair in enumerate(pairs):
        if len(pair) != 2:
            raise ConfigError(f"{path}: merge {rank + 1} is {' '.join(pair)!r}, not two symbols and a space")
    return pairs


def _read_tokenizer_json(path: Path) -> tuple[dict[str, int], list[tuple[str, str]], list[AddedToken]]:
    data = _read_json(path)
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or model.get("type", "BPE") != "BPE" or "vocab" not in model:
        raise ConfigError(f"{path}: not a BPE tokenizer (model.type must be 'BPE', with a vocab)")
    vocab = model["vocab"]
    if isinstance(vocab, list):
        vocab = {token[0] if isinstance(token, list) else token: i for i, token in enumerate(vocab)}
    merges = []
    for merge in model.get("merges") or []:
        pair = merge.split(" ") if isinstance(merge, str) else list(merge)
        if len(pair) != 2:
            raise ConfigError(f"{path}: merge {merge!r} is not a pair")
        merges.append((pair[0], pair[1]))
    added = [_added_token(entry, special_default=False, where=str(path)) for entry in data.get("added_tokens") or []]
    return dict(vocab), merges, added


def _added_token(value: Any, special_default: bool, where: str) -> AddedToken:
    """An ``AddedToken`` from its JSON form: a dict with ``content`` and flags (``normalized``
    defaulting to ``not special``, as in ``tokenizers``)."""
    if not isinstance(value, dict) or not isinstance(value.get("content"), str):
        raise ConfigError(f"{where}: special token {value!r} is neither a string nor a dict with a 'content'")
    special = bool(value.get("special", special_default))
    return AddedToken(
        value["content"],
        single_word=bool(value.get("single_word", False)),
        lstrip=bool(value.get("lstrip", False)),
        rstrip=bool(value.get("rstrip", False)),
        normalized=bool(value.get("normalized", not special)),
    )


def _special_tokens(
    folder: Path, config: dict, json_added: list[AddedToken] | None
) -> tuple[dict[str, str | None], list[AddedToken]]:
    """The special-token roles (role -> text) and the added tokens in the order transformers 5
    registers them, with the flags it gives each.

    ``tokenizer_config.json``'s ``added_tokens_decoder`` lists the added tokens when present;
    otherwise ``special_tokens_map.json`` overrides the config's roles and ``tokenizer.json``'s
    ``added_tokens`` are the listed ones. The roles' tokens follow, unless listed: a role given
    as a plain string is matched on the raw text (not normalized), one given as a dict keeps its
    flags. Where one text is registered twice, the last registration's flags hold.
    """
    where = str(folder / "tokenizer_config.json")
    roles: dict[str, Any] = {key: value for key, value in config.items() if key in _ROLES}
    # model-specific named tokens (any other "*_token" key holding a token), after the standard roles
    roles |= {key: value for key, value in config.items()
              if key.endswith("_token") and key not in _ROLES and _is_token_value(value)}
    extra = config.get("extra_special_tokens") or config.get("additional_special_tokens") or []
    if isinstance(extra, dict):
        roles |= {key: value for key, value in extra.items() if _is_token_value(value)}
        extra = []
    decoder = config.get("added_tokens_decoder")
    if decoder is not None:
        if not isinstance(decoder, dict):
            raise ConfigError(f"{where}: added_tokens_decoder must be an object of id -> token")
        entries = sorted(decoder.items(), key=lambda item: int(item[0]))
        listed = [_added_token(entry, special_default=False, where=where) for _, entry in entries]
    else:
        stm_path = folder / "special_tokens_map.json"
        stm = _read_json(stm_path, {})
        if not isinstance(stm, dict):
            raise ConfigError(f"{stm_path}: not a JSON object")
        for key, value in stm.items():
            if key in ("extra_special_tokens", "additional_special_tokens") and isinstance(value, list):
                extra = list(extra) + [v for v in value if v not in extra]
            elif isinstance(value, dict):  # a token written out in full: special, so not normalized by default
                roles[key] = {k: v for k, v in value.items() if k != "special"} | {"special": True}
            else:
                roles[key] = value
        listed = list(json_added or [])
    for role, default in _ROLE_DEFAULTS.items():
        roles.setdefault(role, default)

    # Registration: the listed tokens, then each role's and extra token whose text is not listed,
    # skipping a repeat of the same string or of the same token with the same flags.
    listed_contents = {t.content for t in listed}
    order = list(listed)
    seen: list[Any] = []
    specials: dict[str, str | None] = {}
    named = [r for r in _ROLES if r in roles] + [r for r in roles if r not in _ROLES]
    for key, value in [(role, roles[role]) for role in named] + [(None, v) for v in extra]:
        if value is None or not _is_token_value(value):
            if key in _ROLES:
                specials[key] = None
            continue
        if isinstance(value, str):
            identity: Any = value
            token = AddedToken(value)  # special, hence not normalized
        else:
            token = _added_token(value, special_default=False, where=where)
            identity = (token, bool(value.get("special", False)))
        if key in _ROLES:
            specials[key] = token.content
        if token.content not in listed_contents and identity not in seen:
            seen.append(identity)
            order.append(token)
    return specials, order


def _is_token_value(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, dict) and isinstance(value.get("content"), str))
