"""Prompt intervention: does a word's information predict what editing it changes?

Info-Decomp's experiment (docs/studies.md#prompt-intervention). For each job (a prompt, one of
its words, a seed, and optionally a replacement word and other source words):

1. the image is generated from the prompt, and the *edited* image from the prompt with the word
   deleted (or replaced) — from the **same initial noise** with the same deterministic sampler
   (DDIM, η = 0), both in one ``generate`` call per batch;
2. the change is the per-pixel squared difference of the two images (summed over RGB, pixels in
   [0, 1]) and the same in latent space (summed over latent channels);
3. one fused pass over the *original* image measures the word's conditional information
   i(x; word | rest) and the information of the edit i(x; prompt | edited prompt) (the same
   thing for a deletion; Info-Decomp's swap information for a replacement), each with its map,
   and — with ``sources`` — the PID of the word and the other sources given the rest.

Conditionings of a job with k = 1 + len(sources) sources, in this order: the 2**k conditional
subset prompts (bitmask order: 0 = the rest of the prompt without any source, 2**k − 1 = the
prompt, 2**k − 2 = the prompt without the word), then "" (for the MI of the prompt), then the
replaced prompt if there is one. Information is measured against conditioning 0, so
``core.decompose`` reads the subsets directly.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import jax
import numpy as np
import pyarrow as pa

from jaxpid.core.config import FORMS, SEED_LIMIT, EstimatorConfig, check_choice, check_int
from jaxpid.core.decomposition import conditional_pairs, decompose
from jaxpid.core.estimator import FusedPass
from jaxpid.demo import dataset
from jaxpid.errors import ConfigError, NonFiniteError, PromptError
from jaxpid.sd.ddim import GenerationConfig, generate
from jaxpid.sd.pipeline import Pipeline
from jaxpid.sd.prompts import Source, SubsetPrompts, WordRemoval, resolve_sources, split_punctuation, subset_prompts
from jaxpid.studies.base import StudyBatch, StudyPlan, read_manifest, where

MEASURES = ("mmi", "ccs")  # need nothing but the subset conditionings (ppid needs priors, imin candidates)
EDITS = ("delete", "replace", "both")  # demo jobs


@dataclasses.dataclass(frozen=True)
class InterventionConfig:
    """Everything that decides an intervention study's numbers."""

    estimator: EstimatorConfig = EstimatorConfig()  # job j draws from fold_in(key(estimator.key), j)
    generation: GenerationConfig = GenerationConfig()  # of both images of a job
    removal: WordRemoval = WordRemoval()  # how a deleted word leaves the prompt (edit and CMI alike)
    measure: str = "mmi"  # redundancy measure of the PID atoms (jobs with sources)
    form: str = "orthogonal"  # pointwise information: orthogonal or standard
    batch_size: int = 8  # jobs per generate call and fused pass
    examples: int = 4  # the first jobs keep their images in the rows (for examples.png)

    def __post_init__(self):
        check_choice("measure", self.measure, MEASURES)
        check_choice("form", self.form, FORMS)
        object.__setattr__(self, "batch_size", check_int("batch_size", self.batch_size, 1))
        object.__setattr__(self, "examples", check_int("examples", self.examples, 0))

    def to_dict(self) -> dict:
        return {"estimator": self.estimator.to_dict(), "generation": self.generation.to_dict(),
                "removal": self.removal.to_dict(), "measure": self.measure, "form": self.form,
                "batch_size": self.batch_size, "examples": self.examples}


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


def _shape(item: Mapping) -> tuple[int, bool]:
    """What fixes a job's compiled shapes: its number of sources and whether it replaces."""
    return 1 + len(item.get("sources") or []), item.get("replacement") is not None


# ---------------------------------------------------------------------------------------------
# Images from the same noise


@dataclasses.dataclass(frozen=True)
class EditedImages:
    """The original and edited images of B jobs, generated from the same initial noise."""

    original_latents: np.ndarray  # (B, C, h, w)
    edited_latents: np.ndarray  # (B, C, h, w)
    original_pixels: np.ndarray  # (B, H, W, 3) uint8
    edited_pixels: np.ndarray  # (B, H, W, 3) uint8

    @property
    def pixel_change(self) -> np.ndarray:
        """(B, H, W) squared difference per pixel, summed over RGB (pixels in [0, 1])."""
        delta = (self.edited_pixels.astype(np.float64) - self.original_pixels.astype(np.float64)) / 255.0
        return np.sum(delta**2, axis=-1)

    @property
    def latent_change(self) -> np.ndarray:
        """(B, h, w) squared difference per latent position, summed over channels."""
        delta = self.edited_latents.astype(np.float64) - self.original_latents.astype(np.float64)
        return np.sum(delta**2, axis=1)


def edit_images(pipeline: Pipeline, prompts: Sequence[str], edited: Sequence[str], seeds: Sequence[int],
                generation: GenerationConfig = GenerationConfig()) -> EditedImages:
    """Generate every original and edited image in one call: row i and row B + i share seed i,
    hence their initial noise, and DDIM (η = 0) is deterministic, so an edit that changes nothing
    gives the identical image."""
    n = len(prompts)
    out = generate(pipeline, list(prompts) + list(edited), seeds=list(seeds) * 2, **generation.arguments())
    latents, pixels = np.asarray(out.latents), np.asarray(out.images)
    return EditedImages(latents[:n], latents[n:], pixels[:n], pixels[n:])


def upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of (..., h, w) maps to (..., H, W) (half-pixel centres, edges clamped,
    as ``jax.image.resize(method="linear")`` and torch's ``align_corners=False``); numpy, so the
    per-batch work compiles nothing."""
    maps = np.asarray(maps, np.float64)
    h, w = maps.shape[-2:]
    if (h, w) == tuple(size):
        return maps

    def axis(n_in, n_out):
        x = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        low = np.floor(x).astype(int)
        high = np.minimum(low + 1, n_in - 1)
        return low, high, x - low

    (y0, y1, fy), (x0, x1, fx) = axis(h, size[0]), axis(w, size[1])
    rows = maps[..., y0, :] * (1 - fy)[:, None] + maps[..., y1, :] * fy[:, None]
    return rows[..., x0] * (1 - fx) + rows[..., x1] * fx


def map_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps over their pixels (NaN when one is constant, e.g. no change)."""
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


# ---------------------------------------------------------------------------------------------
# The attention baseline


ATTENTION_NOTE = ("no attention baseline: this model's denoiser cannot return its cross-attention maps "
                  "(it has no with_aux method for FusedPass(collect_aux=True))")


def captures_attention(pipeline: Pipeline) -> bool:
    """Whether the denoiser can return its attention maps with ε̂ (``with_aux``)."""
    return callable(getattr(pipeline.denoiser, "with_aux", None))


def word_attention(res, jobs: Sequence[JobPrompts], tokenizer) -> list[np.ndarray | None] | None:
    """The attention baseline: each job's cross-attention map of its word under the prompt,
    (h, w), averaged over the pass's samples from ``res.aux`` (``FusedPass(collect_aux=True)``,
    (B, S, 77, h, w)) and summed over the word's token positions (all its BPE pieces), as the
    localization study's ``attention`` map; None for the whole batch when the pass collected
    none, and for a job whose words cannot be mapped to tokens. The summary correlates it with
    the change exactly as the information."""
    if res.aux is None:
        return None
    maps = np.asarray(res.aux)
    out: list[np.ndarray | None] = []
    for i, job in enumerate(jobs):
        try:
            span = tokenizer.word_spans(job.prompt)[job.word.position]
        except PromptError:  # word-by-word tokens disagree with the whole prompt's: no attention for it
            out.append(None)
            continue
        out.append(maps[i, job.full, span.first_token:span.first_token + span.n_tokens].sum(axis=0))
    return out


# ---------------------------------------------------------------------------------------------
# The plan


class InterventionPlan(StudyPlan):
    """Intervention jobs in batches of one shape (k sources, replacement or not)."""

    study = "intervention"
    format = 2  # 2: rows carry the attention baseline
    unit = "job"

    def __init__(self, items: Sequence[dict], config: InterventionConfig, model: Mapping, *, source: str):
        check_jobs(items, config.removal)
        super().__init__(items, config, model, batch_size=config.batch_size, shape_of=_shape, source=source)

    def prompts(self, item: Mapping) -> list[str]:
        jp = job_prompts(item, self.config.removal)
        return jp.conditionings + [jp.edited]

    def compute(self, pipeline: Pipeline, batch: StudyBatch, *, devices: Sequence | None = None) -> tuple[pa.Table, dict]:
        started = time.perf_counter()
        config = self.config
        items, n_real = self.batch_items(batch, config.batch_size)
        jobs = [job_prompts(item, config.removal) for item in items]
        images = edit_images(pipeline, [j.prompt for j in jobs], [j.edited for j in jobs],
                             [int(item["seed"]) for item in items], config.generation)
        conditionings = [j.conditionings for j in jobs]
        conds = pipeline.encode_prompt([c for group in conditionings for c in group])
        # leaves (B, S, ...): an array, or a pytree (SDXL)
        conds = jax.tree.map(lambda a: a.reshape((len(jobs), len(conditionings[0])) + a.shape[1:]), conds)
        base = config.estimator.prng_key()
        keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(np.asarray([item["index"] for item in items], np.uint32))
        # the attention baseline's maps come from the same pass (same images, noise levels and draws)
        fused = FusedPass.from_config(pipeline.denoiser, config.estimator, reference=0, pairs=jobs[0].pairs,
                                      devices=list(jax.local_devices() if devices is None else devices),
                                      collect_aux=captures_attention(pipeline))
        try:
            res = fused(images.original_latents, conds, key=keys, conds_per_image=True)
        except NonFiniteError as error:
            raise NonFiniteError(f"batch {batch.index} (items {list(batch.jobs)}, in that order): {error}") from None
        pid = decompose(res, jobs[0].k, measure=config.measure, form=config.form) if jobs[0].k > 1 else None
        attention = word_attention(res, jobs, pipeline.tokenizer)
        rows = self._rows(items[:n_real], jobs, images, res, pid, attention, pipeline)
        return rows, {"seconds": time.perf_counter() - started, "compile_s": res.timings.get("compile_s", 0.0)}

    def _rows(self, items, jobs, images, res, pid, attention, pipeline) -> pa.Table:
        form = self.config.form
        info, info_se, maps = res.pair_mi(form), res.pair_stderr(form), res.pair_maps(form)
        pixel_change, latent_change = images.pixel_change, images.latent_change
        size = pixel_change.shape[1:]
        rows = []
        for i, (item, job) in enumerate(zip(items, jobs)):
            edit_map = maps[i, job.edit_pair]
            word_map = None if attention is None else attention[i]
            row = {
                "item": item["index"], "line": item.get("line"), "prompt": job.prompt, "word": job.word.word,
                "position": job.word.position, "sources": [s.word for s in job.sources], "seed": int(item["seed"]),
                "edit": "replace" if job.replacement is not None else "delete", "replacement": job.replacement,
                "edited_prompt": job.edited, "group": item.get("group"), "k": job.k,
                # what the correlations use: i(x; prompt | edited prompt) (= the CMI for a deletion)
                "information": float(info[i, job.edit_pair]), "information_stderr": float(info_se[i, job.edit_pair]),
                "cmi": float(info[i, job.cmi_pair]), "cmi_stderr": float(info_se[i, job.cmi_pair]),
                "mi_prompt": float(info[i, job.mi_pair]), "mi_prompt_stderr": float(info_se[i, job.mi_pair]),
                "change_pixel": float(pixel_change[i].mean()), "change_latent": float(latent_change[i].mean()),
                "pearson_pixel": map_correlation(upsample(edit_map, size), pixel_change[i]),
                "pearson_latent": map_correlation(edit_map, latent_change[i]),
                # the word's attention mass (its map summed over the latent grid), and its map vs the change
                "attention": None if word_map is None else float(word_map.sum()),
                "pearson_pixel_attention": None if word_map is None else map_correlation(
                    upsample(word_map, size), pixel_change[i]),
                "map_shape": list(edit_map.shape), "information_map": edit_map.ravel().tolist(),
                "change_latent_map": latent_change[i].ravel().tolist(),
            }
            row.update(_atoms(pid, i))
            keep = item["index"] < self.config.examples
            row.update({
                "image_shape": list(images.original_pixels.shape[1:]),
                "original": images.original_pixels[i].tobytes() if keep else None,
                "edited": images.edited_pixels[i].tobytes() if keep else None,
                "change_pixel_map": pixel_change[i].astype(np.float32).tobytes() if keep else None,
                "n_samples": self.config.estimator.n_samples, "model": str(pipeline.name),
                "fingerprint": self.fingerprint,
            })
            rows.append(row)
        return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


def _atoms(pid, i: int) -> dict:
    out = {"measure": None, "atom_names": None, "atoms": None, "atoms_stderr": None, "subset_information": None}
    out.update({name: None for name in ATOM_COLUMNS})
    if pid is None:
        return out
    out.update(measure=pid.measure, atom_names=list(pid.names), atoms=[float(pid.atoms[n][i]) for n in pid.names],
               atoms_stderr=[float(pid.atoms_stderr[n][i]) for n in pid.names],
               subset_information=pid.subset_information[i].tolist())
    if pid.k == 2:
        for name, column in zip(("{1}{2}", "{1}", "{2}", "{12}"), ATOM_COLUMNS):
            out[column] = float(pid.atoms[name][i])
    return out


ATOM_COLUMNS = ("redundancy", "unique_word", "unique_source", "synergy")  # k = 2: the word is source 1

_F, _S, _I = pa.float64(), pa.string(), pa.int64()
ROW_SCHEMA = pa.schema(
    [("item", _I), ("line", _I), ("prompt", _S), ("word", _S), ("position", _I), ("sources", pa.list_(_S)),
     ("seed", _I), ("edit", _S), ("replacement", _S), ("edited_prompt", _S), ("group", _S), ("k", _I)]
    + [(name, _F) for name in ("information", "information_stderr", "cmi", "cmi_stderr", "mi_prompt",
                               "mi_prompt_stderr", "change_pixel", "change_latent", "pearson_pixel", "pearson_latent",
                               "attention", "pearson_pixel_attention")]
    + [("map_shape", pa.list_(_I)), ("information_map", pa.list_(pa.float32())),
       ("change_latent_map", pa.list_(pa.float32())), ("measure", _S), ("atom_names", pa.list_(_S)),
       ("atoms", pa.list_(_F)), ("atoms_stderr", pa.list_(_F)), ("subset_information", pa.list_(_F))]
    + [(name, _F) for name in ATOM_COLUMNS]
    + [("image_shape", pa.list_(_I)), ("original", pa.binary()), ("edited", pa.binary()),
       ("change_pixel_map", pa.binary()), ("n_samples", _I), ("model", _S), ("fingerprint", _S)]
)


def plan_intervention(jobs: str | Path | Sequence[dict], config: InterventionConfig, model: Mapping, *,
                      source: str | None = None) -> InterventionPlan:
    """The study's plan from a JSONL file or job dicts (checked before any model work)."""
    if isinstance(jobs, (str, Path)):
        items, source = read_intervention_jobs(jobs), source or str(jobs)
    else:
        items = [dict(job) for job in jobs]
    return InterventionPlan(items, config, model, source=source or "jobs")


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
