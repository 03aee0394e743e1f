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
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from jaxpid.core.config import FORMS, EstimatorConfig, check_choice, check_int
from jaxpid.core.decomposition import decompose
from jaxpid.errors import PromptError
from jaxpid.sd.ddim import GenerationConfig, generate
from jaxpid.sd.pipeline import Pipeline
from jaxpid.sd.prompts import WordRemoval
from jaxpid.studies.base import FinishedStudy, StudyBatch, StudyPlan, StudyRun, complete_study
from jaxpid.studies.intervention_jobs import (  # noqa: F401  (the jobs' API, also importable from here)
    ATOM_COLUMNS,
    ATTENTION_NOTE,
    EDITS,
    JobPrompts,
    check_jobs,
    demo_jobs,
    job_prompts,
    read_intervention_jobs,
)
from jaxpid.studies.intervention_summary import InterventionSummary, intervention_study_summary
from jaxpid.sweeps.fused import PreparedBatch

MEASURES = ("mmi", "ccs")  # need nothing but the subset conditionings (ppid needs priors, imin candidates)


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

    def select(self, jobs: Sequence[int]) -> EditedImages:
        """The images of the jobs at ``jobs`` (positions), in that order."""
        jobs = np.asarray(jobs, int)
        return EditedImages(*(np.asarray(getattr(self, f.name))[jobs] for f in dataclasses.fields(self)))

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

    def prepare(self, pipeline: Pipeline, batch: StudyBatch) -> PreparedBatch:
        """The batch's original and edited images (same initial noise), and each job's conditionings."""
        config = self.config
        items, n_real = self.batch_items(batch, config.batch_size)
        jobs = [job_prompts(item, config.removal) for item in items]
        images = edit_images(pipeline, [j.prompt for j in jobs], [j.edited for j in jobs],
                             [int(item["seed"]) for item in items], config.generation)
        # the attention baseline's maps come from the same pass (same images, noise levels and draws)
        return PreparedBatch(images.original_latents, [j.conditionings for j in jobs],
                             [item["index"] for item in items], n_real, f"batch {batch.index} (items {list(batch.jobs)})",
                             pairs=tuple(jobs[0].pairs), collect_aux=captures_attention(pipeline),
                             context={"items": items, "jobs": jobs, "images": images})

    def rows(self, pipeline: Pipeline, batch: StudyBatch, prepared: PreparedBatch, res,
             positions: Sequence[int]) -> pa.Table:
        items, jobs = ([prepared.context[key][p] for p in positions] for key in ("items", "jobs"))
        images = prepared.context["images"].select(positions)
        pid = decompose(res, jobs[0].k, measure=self.config.measure, form=self.config.form) if jobs[0].k > 1 else None
        return self._rows(items, jobs, images, res, pid, word_attention(res, jobs, pipeline.tokenizer), pipeline)

    def summarise(self, run: StudyRun, pipeline: Pipeline | None = None) -> InterventionSummary:
        """Information against change across jobs and per pixel, the attention baseline, the atoms."""
        return intervention_study_summary(run.rows, config=self.config.to_dict(), jobs=self.manifest["jobs"], run=run)

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
                "n_samples": res.config["n_samples"], "model": str(pipeline.name),
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


def run_intervention(pipeline: Pipeline, jobs, out: str | Path, config: InterventionConfig = InterventionConfig(),
                     *, progress: bool = False, devices: Sequence | None = None) -> FinishedStudy:
    """Run (or resume) the study in this process and write its outputs into ``out``.

    Args:
      jobs: a JSONL path or job dicts (``demo_jobs()`` builds the demo's).
    """
    plan = plan_intervention(jobs, config, pipeline.identity())
    return complete_study(plan, out, pipeline=pipeline, progress=progress, devices=devices)


