"""Prompts -> token-subset conditionings (docs/method.md#prompt-words-and-subset-conditionings).
Pure string work: no model here.

Sources are words of the prompt (whitespace-separated; a word may be several BPE tokens).
For every subset S of the k sources (bitmask b, bit j ⇔ source j+1 present) the prompt is
rebuilt with the sources outside S removed — deleted (default) or replaced by a placeholder —
either keeping the rest of the prompt as context (conditional PID: b = 0 is the context alone)
or without it (plain PID: b = 0 is the empty prompt "").
"""

from __future__ import annotations

import dataclasses
import re

from jaxpid.core.lattice import MAX_SOURCES
from jaxpid.errors import ConfigError, PromptError

REMOVALS = ("delete", "placeholder")
_WORD = re.compile(r"^(\W*)(.*?)(\W*)$", re.UNICODE)


@dataclasses.dataclass(frozen=True)
class WordRemoval:
    """How a word absent from a conditioning leaves the prompt: deleted, or replaced by a
    placeholder token ("_" in the reference code)."""

    mode: str = "delete"  # one of REMOVALS
    placeholder: str = "_"  # used when mode == "placeholder"

    def __post_init__(self):
        if self.mode not in REMOVALS:
            raise ConfigError(f"removal must be one of {REMOVALS}, got {self.mode!r}")
        if not isinstance(self.placeholder, str) or not self.placeholder.strip() or len(self.placeholder.split()) != 1:
            raise ConfigError(f"the placeholder must be one non-empty token, got {self.placeholder!r}")

    def arguments(self) -> dict:
        """Keyword arguments of ``subset_prompts`` / ``without_word`` / the priors."""
        return {"removal": self.mode, "placeholder": self.placeholder}

    def to_dict(self) -> dict:
        return {"mode": self.mode, "placeholder": self.placeholder if self.mode == "placeholder" else None}

    @classmethod
    def from_dict(cls, record: dict) -> WordRemoval:
        return cls(record.get("mode", "delete"), record.get("placeholder") or "_")


@dataclasses.dataclass(frozen=True)
class Source:
    """One source word: its text and its position among the prompt's whitespace words."""

    word: str
    position: int  # 0-based index into prompt.split()

    @property
    def label(self) -> str:
        return self.word


@dataclasses.dataclass(frozen=True)
class SubsetPrompts:
    """The 2**k prompts of a k-source decomposition, in bitmask order."""

    prompt: str
    sources: tuple[Source, ...]
    prompts: tuple[str, ...]  # prompts[b]: the sources in b present
    conditional: bool  # True: the rest of the prompt is context in every prompt
    removal: str  # "delete" or "placeholder"
    placeholder: str

    @property
    def k(self) -> int:
        return len(self.sources)

    def to_dict(self) -> dict:
        return {
            "prompt": self.prompt,
            "sources": [{"word": s.word, "position": s.position} for s in self.sources],
            "subset_prompts": list(self.prompts),
            "conditional": self.conditional,
            "removal": self.removal,
            "placeholder": self.placeholder if self.removal == "placeholder" else None,
        }


def split_punctuation(token: str) -> tuple[str, str, str]:
    """'circle,' -> ('', 'circle', ','): leading punctuation, the word, trailing punctuation."""
    lead, word, trail = _WORD.match(token).groups()
    return lead, word, trail


def resolve_sources(prompt: str, sources: list[str], *, allow_large_k: bool = False) -> tuple[Source, ...]:
    """Find each source word in the prompt.

    A source is a word (matched case-insensitively, ignoring attached punctuation) or
    ``word@N`` for its N-th occurrence (1-based) when the word occurs more than once.

    Raises:
      PromptError: a word not in the prompt, an ambiguous word, the same word twice, an empty
        prompt or source.
      ConfigError: k = 0, or k > 4 without ``allow_large_k``.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptError("the prompt is empty")
    if isinstance(sources, str):
        raise PromptError(f"sources must be a list of words, got the string {sources!r}")
    if not sources:
        raise ConfigError("give at least one source word")
    if len(sources) > MAX_SOURCES and not allow_large_k:
        raise ConfigError(
            f"{len(sources)} sources: PID over k > {MAX_SOURCES} words needs 2**k conditionings per sample "
            f"and a lattice of thousands of atoms; pass allow_large_k=True (CLI: --allow-large-k) if you mean it"
        )
    words = [split_punctuation(token)[1].lower() for token in prompt.split()]
    resolved: list[Source] = []
    for spec in sources:
        if not isinstance(spec, str) or not spec.strip():
            raise PromptError(f"empty source word {spec!r}")
        word, _, occurrence = spec.strip().partition("@")
        target = split_punctuation(word)[1].lower()
        hits = [i for i, w in enumerate(words) if w == target]
        if not hits:
            raise PromptError(f"source word {word!r} is not in the prompt {prompt!r} (its words: {words})")
        if occurrence:
            if not occurrence.isdigit() or not 1 <= int(occurrence) <= len(hits):
                raise PromptError(
                    f"source {spec!r}: {word!r} occurs {len(hits)} time(s) in {prompt!r}; use {word}@1..{word}@{len(hits)}"
                )
            position = hits[int(occurrence) - 1]
        elif len(hits) > 1:
            options = ", ".join(f"{word}@{n + 1}" for n in range(len(hits)))
            raise PromptError(f"source word {word!r} occurs {len(hits)} times in {prompt!r}; say which: {options}")
        else:
            position = hits[0]
        if any(s.position == position for s in resolved):
            raise PromptError(f"source {spec!r} names the same word as another source")
        resolved.append(Source(split_punctuation(prompt.split()[position])[1], position))
    return tuple(resolved)


def source_spec(prompt: str, source: Source) -> str:
    """The spec that names ``source`` in ``prompt`` again: its word, or ``word@N`` when the word
    occurs more than once (the inverse of ``resolve_sources``)."""
    words = [split_punctuation(token)[1].lower() for token in prompt.split()]
    hits = [i for i, w in enumerate(words) if w == source.word.lower()]
    return source.word if len(hits) <= 1 else f"{source.word}@{hits.index(source.position) + 1}"


def subset_prompts(
    prompt: str,
    sources: list[str] | tuple[Source, ...],
    *,
    conditional: bool = True,
    removal: str = "delete",
    placeholder: str = "_",
    allow_large_k: bool = False,
) -> SubsetPrompts:
    """The 2**k prompts, bitmask order (see module docstring)."""
    WordRemoval(removal, placeholder)  # validates both
    if sources and all(isinstance(s, Source) for s in sources):
        resolved = tuple(sources)
    else:
        resolved = resolve_sources(prompt, list(sources), allow_large_k=allow_large_k)
    tokens = prompt.split()
    source_at = {s.position: j for j, s in enumerate(resolved)}
    prompts = []
    for mask in range(1 << len(resolved)):
        kept = []
        for i, token in enumerate(tokens):
            j = source_at.get(i)
            present = j is None and conditional or (j is not None and mask >> j & 1)
            if present:
                kept.append(token if conditional else split_punctuation(token)[1])
            elif j is not None and conditional:
                lead, _, trail = split_punctuation(token)
                kept.append(lead + (placeholder if removal == "placeholder" else "") + trail)
        prompts.append(_join(kept))
    return SubsetPrompts(prompt, resolved, tuple(prompts), conditional, removal, placeholder)


def replace_source(subsets: SubsetPrompts, source: int, alternative: str) -> str:
    """The prompt with source ``source`` replaced by ``alternative`` and the other sources
    absent (imin's candidate conditionings): context kept iff the decomposition is conditional."""
    tokens = subsets.prompt.split()
    target = subsets.sources[source].position
    positions = {s.position for s in subsets.sources}
    out = []
    for i, token in enumerate(tokens):
        lead, _, trail = split_punctuation(token)
        if i == target:
            out.append(lead + alternative + trail if subsets.conditional else alternative)
        elif i in positions:
            if subsets.conditional:
                out.append(lead + (subsets.placeholder if subsets.removal == "placeholder" else "") + trail)
        elif subsets.conditional:
            out.append(token)
    return _join(out)


def without_word(prompt: str, source: Source, *, removal: str = "delete", placeholder: str = "_") -> str:
    """The prompt with one word removed (Info-Decomp's CMI conditioning)."""
    return without_words(prompt, [source.position], removal=removal, placeholder=placeholder)


def without_words(prompt: str, positions, *, removal: str = "delete", placeholder: str = "_") -> str:
    """The prompt with the words at ``positions`` (indices into ``prompt.split()``) removed, e.g. a
    phrase such as "traffic light"; with ``removal="placeholder"`` each becomes the placeholder."""
    tokens = prompt.split()
    for position in positions:
        lead, _, trail = split_punctuation(tokens[position])
        tokens[position] = lead + (placeholder if removal == "placeholder" else "") + trail
    return _join(tokens)


def phrase_starts(prompt: str, phrase: str) -> list[int]:
    """Where the words of ``phrase`` occur consecutively in ``prompt``: indices into
    ``prompt.split()`` of each occurrence's first word (case and attached punctuation ignored)."""
    words = [split_punctuation(token)[1].lower() for token in prompt.split()]
    target = [split_punctuation(token)[1].lower() for token in phrase.split()]
    if not target or not all(target):
        return []
    n = len(target)
    return [i for i in range(len(words) - n + 1) if words[i:i + n] == target]


def _join(tokens: list[str]) -> str:
    """Join words; punctuation left behind by a deleted word attaches to the word before it."""
    return re.sub(r"\s+([,.;:!?])", r"\1", " ".join(t for t in tokens if t)).strip()
