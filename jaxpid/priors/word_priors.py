"""Word priors p(y_j) for the ``ppid`` redundancy measure (docs/method.md#ppid).

DiffusionPID's pointwise PID needs each source word's surprisal h_j = −log p(y_j) (conditional
PID: −log p(y_j | c)). Three sources of priors, chosen by a spec string (CLI ``--prior``):

- ``bert:PATH``: a BERT masked language model (:class:`MaskedLMPrior`), as DiffusionPID does:
  the word's probability at a lone ``[MASK]`` (plain PID) or at its position in the prompt with
  the context around it (conditional PID).
- ``uniform``: every source gets the same prior. Its value cancels in ``ppid``:
  with h_1 = h_2 = h, R = h − (h − max_j i_j) = max(i_1, i_2).
- ``file:PRIORS.json``: fixed numbers (:class:`FilePrior`; format in its docstring).

Each returns natural-log priors through ``priors_for(prompt, sources, conditional)`` and, with
``evaluate``, a :class:`PriorValues` record to save next to the result.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import math
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxpid.errors import ConfigError, PromptError
from jaxpid.priors.bert import load_bert
from jaxpid.sd.prompts import REMOVALS, Source, resolve_sources, split_punctuation

OTHER_SOURCES = ("remove", "keep")


@dataclasses.dataclass(frozen=True)
class PriorValues:
    """The priors of one prompt's k sources, and how they were obtained."""

    spec: str  # "bert:PATH", "uniform" or "file:PATH"
    method: str  # a sentence saying what the numbers are
    conditional: bool  # p(y_j | c) (True) or p(y_j) (False)
    words: tuple[str, ...]  # (k,) source words
    log_prior: np.ndarray  # (k,) natural log
    queries: tuple[str, ...] = ()  # (k,) what the masked LM saw, masks included (bert only)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: spec, method, words, log_prior, prior (probabilities), queries."""
        return {
            "spec": self.spec,
            "method": self.method,
            "conditional": self.conditional,
            "words": list(self.words),
            "log_prior": [float(v) for v in self.log_prior],
            "prior": [float(math.exp(v)) for v in self.log_prior],
            "queries": list(self.queries) or None,
        }


class WordPriors(abc.ABC):
    """Something that gives the k source words of a prompt their log priors."""

    spec: str

    @abc.abstractmethod
    def evaluate(
        self, prompt: str, sources: Sequence[Source | str], conditional: bool, *,
        removal: str = "delete", placeholder: str = "_",
    ) -> PriorValues:
        """The sources' priors in this prompt; ``conditional`` asks for p(y_j | context).
        ``removal`` / ``placeholder``: how the run removes words (see :mod:`jaxpid.sd.prompts`),
        for priors that look at the context."""

    def priors_for(
        self, prompt: str, sources: Sequence[Source | str], conditional: bool, *,
        removal: str = "delete", placeholder: str = "_",
    ) -> np.ndarray:
        """(k,) natural-log priors of the sources, as ``jaxpid.pid(..., log_prior=...)`` takes them."""
        return self.evaluate(prompt, sources, conditional, removal=removal, placeholder=placeholder).log_prior


def _resolve(prompt: str, sources: Sequence[Source | str]) -> tuple[Source, ...]:
    if sources and all(isinstance(s, Source) for s in sources):
        return tuple(sources)
    return resolve_sources(prompt, list(sources), allow_large_k=True)


# ---------------------------------------------------------------------------------------------
# uniform


def uniform_log_prior(k: int, probability: float = 0.5) -> np.ndarray:
    """(k,) equal log priors log(probability). With equal priors ``ppid`` gives R = max(i_1, i_2)
    whatever the value; 0.5 is a fair coin per source, as in the canonical binary-source cases."""
    if k < 1:
        raise ConfigError(f"uniform prior: k={k}, expected at least one source")
    if not 0.0 < probability <= 1.0:
        raise ConfigError(f"uniform prior: probability={probability!r}, expected a value in (0, 1]")
    return np.full(k, math.log(probability))


class UniformPrior(WordPriors):
    spec = "uniform"

    def evaluate(self, prompt, sources, conditional, *, removal="delete", placeholder="_") -> PriorValues:
        resolved = _resolve(prompt, sources)
        return PriorValues(
            self.spec,
            "equal priors for every source (0.5 each); ppid's redundancy is then max(i1, i2)",
            bool(conditional),
            tuple(s.word for s in resolved),
            uniform_log_prior(len(resolved)),
        )


# ---------------------------------------------------------------------------------------------
# file


class FilePrior(WordPriors):
    """Priors from a JSON file::

        {
          "format": "probability",              # or "log_probability" (natural log)
          "words": {"doctor": 0.004, "male": 0.012},          # p(word): plain PID
          "in_context": {                                     # p(word | context): conditional PID
            "a photo of a male doctor": {"male": 0.21, "doctor": 0.05}
          }
        }

    Words are matched case-insensitively (one entry per word); ``in_context`` is keyed by the
    exact prompt. At least one of ``words`` / ``in_context`` must be given. Probabilities lie in
    (0, 1], log probabilities in (−inf, 0].
    """

    _KEYS = ("format", "words", "in_context")
    _FORMATS = ("probability", "log_probability")

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.spec = f"file:{path}"
        if not self.path.is_file():
            raise ConfigError(f"prior file {self.path}: file not found")
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ConfigError(f"prior file {self.path}: not readable as JSON ({error})") from error
        if not isinstance(data, dict):
            raise ConfigError(f"prior file {self.path}: expected a JSON object, found {type(data).__name__}")
        unknown = sorted(set(data) - set(self._KEYS))
        if unknown:
            raise ConfigError(f"prior file {self.path}: unknown key(s) {unknown}; expected {list(self._KEYS)}")
        if data.get("format") not in self._FORMATS:
            raise ConfigError(
                f"prior file {self.path}: 'format' is {data.get('format')!r}; expected one of {list(self._FORMATS)}"
            )
        self.is_log = data["format"] == "log_probability"
        if "words" not in data and "in_context" not in data:
            raise ConfigError(f"prior file {self.path}: give 'words' (plain PID) and/or 'in_context' (conditional PID)")
        self.words = self._table(data.get("words", {}), "words")
        contexts = data.get("in_context", {})
        if not isinstance(contexts, dict):
            raise ConfigError(f"prior file {self.path}: 'in_context' must map prompts to word tables")
        self.in_context = {prompt: self._table(table, f"in_context[{prompt!r}]") for prompt, table in contexts.items()}

    def _table(self, table: Any, where: str) -> dict[str, float]:
        if not isinstance(table, dict):
            raise ConfigError(f"prior file {self.path}: {where} must be an object mapping words to numbers")
        out: dict[str, float] = {}
        for word, value in table.items():
            key = word.strip().lower()
            if not key or len(key.split()) != 1:
                raise ConfigError(f"prior file {self.path}: {where} key {word!r} is not a single word")
            if key in out:
                raise ConfigError(f"prior file {self.path}: {where} lists {word!r} twice (words are case-insensitive)")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"prior file {self.path}: {where}[{word!r}] = {value!r} is not a finite number")
            if self.is_log and value > 0:
                raise ConfigError(f"prior file {self.path}: {where}[{word!r}] = {value} is a log probability > 0")
            if not self.is_log and not 0 < value <= 1:
                raise ConfigError(f"prior file {self.path}: {where}[{word!r}] = {value} is not a probability in (0, 1]")
            out[key] = float(value) if self.is_log else math.log(value)
        return out

    def evaluate(self, prompt, sources, conditional, *, removal="delete", placeholder="_") -> PriorValues:
        resolved = _resolve(prompt, sources)
        if conditional:
            if prompt not in self.in_context:
                raise PromptError(
                    f"prior file {self.path} has no 'in_context' entry for the prompt {prompt!r} (conditional "
                    f"PID needs p(word | context)); prompts it has: {sorted(self.in_context)[:10]}"
                )
            table, where = self.in_context[prompt], f"in_context[{prompt!r}]"
        else:
            table, where = self.words, "words"
        missing = [s.word for s in resolved if s.word.lower() not in table]
        if missing:
            raise PromptError(
                f"prior file {self.path}: {where} has no prior for {missing}; it lists {sorted(table)[:20]}"
            )
        return PriorValues(
            self.spec,
            f"fixed priors from {self.path} ({'in_context' if conditional else 'words'})",
            bool(conditional),
            tuple(s.word for s in resolved),
            np.array([table[s.word.lower()] for s in resolved]),
        )


# ---------------------------------------------------------------------------------------------
# masked language model


def _log_prob_of_targets(module, params, ids, mask, positions, targets):
    """ids, mask (B, L); positions, targets (B,) -> (B,) log p(targets[b] at positions[b])."""
    logits = module.apply({"params": params}, ids, mask)  # (B, L, V) float32
    rows = jnp.arange(ids.shape[0])
    return jax.nn.log_softmax(logits[rows, positions], axis=-1)[rows, targets]


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


class MaskedLMPrior(WordPriors):
    """p(word) or p(word | context) from a BERT masked LM (DiffusionPID's priors).

    - Plain: the word's probability at a lone mask, ``[CLS] [MASK] [SEP]``.
    - In context: the prompt's words around it stay, the word's pieces are masked:
      ``[CLS] a photo of a [MASK] doctor [SEP]``. Punctuation attached to the word stays.
    - A word of n > 1 word pieces gets n masks and the chain rule over successive masks, left
      to right: log P(piece_1 at mask 1 | all n masked) + log P(piece_2 at mask 2 | piece_1
      filled in, the rest masked) + ... The n steps are independent inputs, so they run as one
      batched forward. The number of masks tells the model the piece count, so this is
      p(pieces | n pieces), as masked-LM scoring of a multi-piece word usually is.

    Inputs are padded to multiples of 16 tokens and 4 rows, so a few compiled programs serve
    every query.
    """

    def __init__(self, module, params, tokenizer, *, spec: str = "bert", other_sources: str = "remove"):
        if other_sources not in OTHER_SOURCES:
            raise ConfigError(f"other_sources={other_sources!r}: expected one of {OTHER_SOURCES}")
        self.module = module
        self.params = params
        self.tokenizer = tokenizer
        self.spec = spec
        self.other_sources = other_sources
        self.max_length = module.config.max_position_embeddings
        self._score = jax.jit(partial(_log_prob_of_targets, module))

    @classmethod
    def from_folder(cls, folder: str | Path, *, dtype=jnp.float32, attention: str = "auto",
                    other_sources: str = "remove") -> "MaskedLMPrior":
        """Load a ``bert-base-uncased``-style folder (see :func:`jaxpid.priors.bert.load_bert`)."""
        module, params, tokenizer = load_bert(folder, dtype=dtype, attention=attention)
        return cls(module, params, tokenizer, spec=f"bert:{folder}", other_sources=other_sources)

    # -- single words ---------------------------------------------------------------------------

    def log_prob(self, word: str, prompt: str | None = None, *, index: int | None = None) -> float:
        """Natural-log probability of ``word``: alone (``prompt`` None) or at its place in ``prompt``.

        Args:
          word: the word (attached punctuation is ignored; case follows the tokenizer).
          prompt: the context; ``word`` must be one of its whitespace-separated words.
          index: position of the word in ``prompt.split()``; needed when it occurs twice.

        Raises:
          PromptError: the word is empty, not in the prompt, ambiguous, contains word pieces the
            vocabulary lacks, or the query exceeds the model's maximum length.
        """
        log_p, _ = self._log_prob_and_query(word, prompt, index)
        return log_p

    def _log_prob_and_query(self, word: str, prompt: str | None, index: int | None) -> tuple[float, str]:
        _, core, _ = split_punctuation(word.strip())
        if not core:
            raise PromptError(f"prior of {word!r}: not a word")
        pieces = self._pieces(core, word)
        if prompt is None:
            if index is not None:
                raise PromptError("an index into the prompt was given without a prompt")
            before, after = [], []
        else:
            tokens = prompt.split()
            position = self._position(core, prompt, tokens, index)
            lead, _, trail = split_punctuation(tokens[position])
            before = self._ids(tokens[:position] + [lead])
            after = self._ids([trail] + tokens[position + 1:])
        tok = self.tokenizer
        start = 1 + len(before)
        ids = [tok.cls_token_id] + before + [tok.mask_token_id] * len(pieces) + after + [tok.sep_token_id]
        if len(ids) > self.max_length:
            raise PromptError(
                f"prior of {word!r}: the query needs {len(ids)} tokens, more than the masked LM's "
                f"{self.max_length} positions"
            )
        steps = [ids[:start] + pieces[:t] + ids[start + t:] for t in range(len(pieces))]  # pieces filled so far
        log_p = self._forward(steps, [start + t for t in range(len(pieces))], pieces)
        query = " ".join(tok.convert_ids_to_tokens(ids))  # word pieces as the model saw them
        return float(np.sum(log_p)), query

    def _pieces(self, core: str, word: str) -> list[int]:
        pieces = self._ids([core])
        unknown = self.tokenizer.unk_token_id
        if not pieces or unknown in pieces:
            raise PromptError(
                f"prior of {word!r}: the masked LM's vocabulary cannot spell it (tokenizes to "
                f"{self.tokenizer.convert_ids_to_tokens(pieces)})"
            )
        return pieces

    def _ids(self, words: Sequence[str]) -> list[int]:
        # BERT's tokenizer splits on whitespace first, so word by word gives the same ids.
        text = " ".join(w for w in words if w)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

    @staticmethod
    def _position(core: str, prompt: str, tokens: list[str], index: int | None) -> int:
        cores = [split_punctuation(t)[1].lower() for t in tokens]
        if index is not None:
            if not 0 <= index < len(tokens):
                raise PromptError(f"word index {index} is outside the prompt {prompt!r} ({len(tokens)} words)")
            if cores[index] != core.lower():
                raise PromptError(f"word {index} of {prompt!r} is {tokens[index]!r}, not {core!r}")
            return index
        hits = [i for i, c in enumerate(cores) if c == core.lower()]
        if not hits:
            raise PromptError(f"{core!r} is not a word of the prompt {prompt!r}")
        if len(hits) > 1:
            raise PromptError(f"{core!r} occurs {len(hits)} times in {prompt!r} (words {hits}); give its index")
        return hits[0]

    def _forward(self, rows: list[list[int]], positions: list[int], targets: list[int]) -> np.ndarray:
        """One padded batched forward: rows of token ids -> (n,) log p(target at position)."""
        n, length = len(rows), max(len(r) for r in rows)
        width = min(_round_up(length, 16), self.max_length)
        height = _round_up(n, 4)
        ids = np.full((height, width), self.tokenizer.pad_token_id, np.int32)
        mask = np.zeros((height, width), np.int32)
        for b, row in enumerate(rows + [rows[0]] * (height - n)):
            ids[b, : len(row)] = row
            mask[b, : len(row)] = 1
        pos = np.array(positions + [positions[0]] * (height - n), np.int32)
        tgt = np.array(targets + [targets[0]] * (height - n), np.int32)
        return np.asarray(self._score(self.params, ids, mask, pos, tgt), np.float64)[:n]

    # -- the sources of a prompt ----------------------------------------------------------------

    def evaluate(
        self, prompt: str, sources: Sequence[Source | str], conditional: bool, *,
        removal: str = "delete", placeholder: str = "_",
    ) -> PriorValues:
        """Each source's prior. Conditional PID: p(y_j | c) with c the context that the subset
        conditionings use (docs/method.md#prompt-words-and-subset-conditionings): the prompt with the *other* sources removed as the run
        removes them (``other_sources="remove"``, the default: deleted, or replaced by
        ``placeholder``), or the whole rest of the prompt including the other sources
        (``"keep"``)."""
        if removal not in REMOVALS:
            raise ConfigError(f"removal must be one of {REMOVALS}, got {removal!r}")
        resolved = _resolve(prompt, sources)
        values, queries = [], []
        for source in resolved:
            if conditional:
                filler = placeholder if removal == "placeholder" else ""
                context, index = self._context_for(prompt, resolved, source, filler)
                log_p, query = self._log_prob_and_query(source.word, context, index)
            else:
                log_p, query = self._log_prob_and_query(source.word, None, None)
            values.append(log_p)
            queries.append(query)
        where = "alone ([CLS] [MASK] [SEP])" if not conditional else (
            "at its position, other sources deleted from the context" if self.other_sources == "remove"
            else "at its position in the whole prompt"
        )
        return PriorValues(
            self.spec,
            f"masked-LM probability of the word {where}; several word pieces by the chain rule over successive masks",
            bool(conditional),
            tuple(s.word for s in resolved),
            np.array(values),
            tuple(queries),
        )

    def _context_for(
        self, prompt: str, sources: tuple[Source, ...], source: Source, filler: str
    ) -> tuple[str, int]:
        """The context prompt for ``source`` and the source's word index in it."""
        tokens = prompt.split()
        if self.other_sources == "keep":
            return prompt, source.position
        others = {s.position for s in sources} - {source.position}
        kept, index = [], -1
        for i, token in enumerate(tokens):
            if i == source.position:
                index = len(kept)
                kept.append(token)
            elif i in others:
                lead, _, trail = split_punctuation(token)
                if lead + filler + trail:  # punctuation of a removed word stays, as in jaxpid.sd.prompts
                    kept.append(lead + filler + trail)
            else:
                kept.append(token)
        return " ".join(kept), index


# ---------------------------------------------------------------------------------------------
# specs


def parse_prior_spec(spec: str) -> tuple[str, str]:
    """``"bert:PATH"`` -> ("bert", "PATH"), ``"uniform"`` -> ("uniform", ""): checks the form only.

    Raises:
      ConfigError: not one of the three forms.
    """
    if isinstance(spec, str):
        kind, sep, target = spec.strip().partition(":")
        if kind == "uniform" and not sep:
            return kind, ""
        if kind in ("bert", "file") and sep and target:
            return kind, target
    raise ConfigError(f"prior spec {spec!r}: expected 'uniform', 'bert:PATH' or 'file:PRIORS.json'")


def load_prior_spec(
    spec: str, *, dtype=jnp.float32, attention: str = "auto", other_sources: str = "remove"
) -> WordPriors:
    """``"bert:PATH"``, ``"uniform"`` or ``"file:PRIORS.json"`` -> a :class:`WordPriors`.

    Raises:
      ConfigError: an unknown spec form or an unusable prior file / BERT config.
      WeightsError (and subclasses): the BERT folder's weights.
    """
    kind, target = parse_prior_spec(spec)
    if kind == "uniform":
        return UniformPrior()
    if kind == "file":
        return FilePrior(target)
    return MaskedLMPrior.from_folder(target, dtype=dtype, attention=attention, other_sources=other_sources)
