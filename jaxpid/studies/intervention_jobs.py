"""The intervention study's jobs: read and checked (errors name the line), each job's prompts and
conditionings, and the demo's jobs over the demo world's captions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from jaxpid.core.config import SEED_LIMIT, check_choice, check_int
from jaxpid.core.decomposition import conditional_pairs
from jaxpid.demo import dataset
from jaxpid.errors import ConfigError, PromptError
from jaxpid.sd.prompts import Source, SubsetPrompts, WordRemoval, resolve_sources, split_punctuation, subset_prompts
from jaxpid.studies.base import where
from jaxpid.studies.manifest import read_manifest

EDITS = ("delete", "replace", "both")  # demo jobs
ATOM_COLUMNS = ("redundancy", "unique_word", "unique_source", "synergy")  # k = 2: the word is source 1

ATTENTION_NOTE = ("no attention baseline: this model's denoiser cannot return its cross-attention maps "
                  "(it has no with_aux method for FusedPass(collect_aux=True))")



# ---------------------------------------------------------------------------------------------
# Jobs


def read_intervention_jobs(path: str | Path) -> list[dict]:
    """The jobs of a JSONL file: ``{"prompt", "word", "seed"}`` plus optional ``replacement``,
    ``sources`` and ``group``; checked (see ``check_jobs``) with errors naming the line."""
    items = read_manifest(path, required=["prompt", "word", "seed"], what="intervention jobs")
    check_jobs(items)
    return items


def check_jobs(items: Sequence[dict], removal: WordRemoval = WordRemoval()) -> None:
    """Refuse a job the study cannot run, naming its line (or item): a word (or source) not in
    its prompt, a replacement equal to the word, a bad seed, too many sources, unknown fields."""
    allowed = {"prompt", "word", "seed", "replacement", "sources", "group", "line", "index"}
    for i, item in enumerate(items):
        at = where({**item, "index": item.get("index", i)})
        unknown = sorted(set(item) - allowed)
        if unknown:
            raise ConfigError(f"{at}: unknown field(s) {unknown}; a job has prompt, word, seed and optionally "
                              "replacement, sources, group")
        try:
            check_int("seed", item["seed"], 0, SEED_LIMIT)
        except ConfigError as error:
            raise ConfigError(f"{at}: {error}") from None
        if not isinstance(item.get("group", ""), (str, type(None))):
            raise ConfigError(f"{at}: group must be a string, got {item['group']!r}")
        try:
            job_prompts(item, removal)
        except (PromptError, ConfigError) as error:
            raise type(error)(f"{at}: {error}") from None


@dataclasses.dataclass(frozen=True)
class JobPrompts:
    """One job's prompts: the subsets, the edit and where each sits among the conditionings."""

    prompt: str
    word: Source
    sources: tuple[Source, ...]  # the other source words (PID with the word)
    subsets: SubsetPrompts  # over (word, *sources), the rest of the prompt as context
    replacement: str | None
    edited: str  # the prompt the edited image is generated from

    @property
    def k(self) -> int:
        return 1 + len(self.sources)

    @property
    def full(self) -> int:
        return (1 << self.k) - 1

    @property
    def empty(self) -> int:  # index of ""
        return 1 << self.k

    @property
    def conditionings(self) -> list[str]:
        subsets = list(self.subsets.prompts)
        subsets[self.full] = self.prompt  # the prompt exactly as the image was generated from it
        return subsets + [""] + ([self.edited] if self.replacement is not None else [])

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """(s, t) gaps of the pass: each source given the others (the word's CMI first), the
        prompt against "", and the prompt against the replaced prompt."""
        edit = [(self.full, self.empty + 1)] if self.replacement is not None else []
        return conditional_pairs(self.k) + [(self.full, self.empty)] + edit

    @property
    def cmi_pair(self) -> int:
        return 0

    @property
    def mi_pair(self) -> int:
        return self.k

    @property
    def edit_pair(self) -> int:
        return self.k + 1 if self.replacement is not None else self.cmi_pair


def job_prompts(item: Mapping, removal: WordRemoval = WordRemoval()) -> JobPrompts:
    """A job's prompts (checks the word, sources and replacement against the prompt)."""
    prompt, word = item["prompt"], item["word"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise PromptError(f"the prompt must be a non-empty string, got {prompt!r}")
    if not isinstance(word, str) or not word.strip():
        raise PromptError(f"the word must be a non-empty string, got {word!r}")
    sources = item.get("sources") or []
    if isinstance(sources, str) or not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise PromptError(f"sources must be a list of words of the prompt, got {sources!r}")
    found = resolve_sources(prompt, [word, *sources])  # PromptError: not in the prompt, twice, ambiguous
    replacement = item.get("replacement")
    if replacement is not None:
        if not isinstance(replacement, str) or not replacement.strip():
            raise PromptError(f"the replacement must be a non-empty string, got {replacement!r}")
        replacement = replacement.strip()
        if replacement.lower() == found[0].word.lower():
            raise PromptError(f"the replacement {replacement!r} is the word itself: the edit would change nothing")
    subsets = subset_prompts(prompt, found, conditional=True, **removal.arguments())
    if replacement is None:
        edited = subsets.prompts[((1 << len(found)) - 1) ^ 1]  # the prompt without the word
    else:
        tokens = prompt.split()
        lead, _, trail = split_punctuation(tokens[found[0].position])
        tokens[found[0].position] = lead + replacement + trail
        edited = " ".join(tokens)
    return JobPrompts(prompt, found[0], found[1:], subsets, replacement, edited)


# ---------------------------------------------------------------------------------------------
# The demo's jobs


def demo_jobs(n: int = 64, *, seeds_per_caption: int = 2, edit: str = "delete", seed: int = 0) -> list[dict]:
    """``n`` jobs over the demo world's captions: a random colour, shape or relation word of a
    random caption (one with at least two such words), deleted (or replaced by another word of
    its kind), with another of its words as the PID source; each caption with several seeds.

    Replacements keep the edited prompt in the grammar: orange is neither replaced nor a
    replacement (its article is "an"; it is also the fruit), and captions with "crimson red" are
    skipped (replacing one of two synonyms makes no caption of the grammar).
    """
    check_int("n (demo jobs)", n, 1)
    check_int("seeds_per_caption", seeds_per_caption, 1)
    check_choice("edit", edit, EDITS)
    rng = np.random.default_rng(check_int("seed (of the demo jobs' draw)", seed, 0))
    kinds = {**{c: "colour" for c in dataset.COLOUR_WORDS}, **{s: "shape" for s in dataset.SHAPES},
             **{r: "relation" for r in dataset.RELATIONS}}
    jobs: list[dict] = []
    while len(jobs) < n:
        caption, _ = dataset.sample_caption(rng)
        words = caption.split()
        content = [i for i, w in enumerate(words) if w in kinds and not _is_fruit(words, i)]
        replace = edit == "replace" or (edit == "both" and len(jobs) // seeds_per_caption % 2 == 1)
        # a replaced "orange" would leave its article "an" behind ("an blue square")
        editable = [i for i in content if not (replace and words[i] == "orange")]
        if len(content) < 2 or not editable or (replace and "crimson red" in caption):
            continue
        position = editable[rng.integers(len(editable))]
        others = [i for i in content if i != position]
        other = others[rng.integers(len(others))]
        job = {"prompt": caption, "word": _spec(words, position), "sources": [_spec(words, other)],
               "group": kinds[words[position]]}
        if replace:
            job["replacement"] = _replacement(words[position], kinds[words[position]], rng)
        for s in range(seeds_per_caption):
            if len(jobs) < n:
                jobs.append({**job, "seed": int(s)})
    return jobs


def _is_fruit(words: list[str], i: int) -> bool:
    """'orange' naming the fruit ('an orange' at the end of a phrase), not a colour."""
    return words[i] == "orange" and (i + 1 == len(words) or words[i + 1] in ("and", "with"))


def _spec(words: list[str], position: int) -> str:
    """The word at ``position`` as a source spec (``word@N`` when it occurs more than once)."""
    hits = [i for i, w in enumerate(words) if w == words[position]]
    return words[position] if len(hits) == 1 else f"{words[position]}@{hits.index(position) + 1}"


def _replacement(word: str, kind: str, rng: np.random.Generator) -> str:
    options = {"colour": [c for c in dataset.COLOURS if c not in ("orange", dataset.COLOUR_WORDS.get(word, word))],
               "shape": [s for s in dataset.SHAPES if s != word],
               "relation": [r for r in dataset.RELATIONS if r != word]}[kind]
    return str(options[rng.integers(len(options))])
