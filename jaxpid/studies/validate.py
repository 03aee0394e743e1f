"""Which PID measure recovers known structure? The measures' validation table.

Two kinds of known answers:

- the demo model's designed phenomena (``jaxpid.demo.dataset``): images drawn by the demo's own
  renderer from its captions (with exact object masks), and for each phenomenon a statistic
  whose sign the design fixes — for every measure (mmi, imin, ppid with uniform priors, ccs),
  both pointwise forms and plain and conditional PID, all from one fused pass per (case, mode);
- the Gaussian-mixture cases with exact atoms (RDN, UNQ, XOR, AND and their hidden-parameter
  variants): the estimated mean atoms against the exact ones (standard form: the closed-form
  log-density atoms; orthogonal form: the same integral with the exact denoiser at 4,096
  samples per image).

Each cell of the table holds the statistic, its standard error over images (which includes the
Monte-Carlo error of each image) and pass / fail against the designed answer; the criteria are
in ``PHENOMENA`` and docs/validation.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa

from jaxpid.core.config import PID_FORMS as FORMS
from jaxpid.core.config import EstimatorConfig, check_int
from jaxpid.core.decomposition import anchored_pairs, decompose
from jaxpid.core.lattice import redundancy_lattice
from jaxpid.core.measures import MEASURES, redundancies
from jaxpid.demo import dataset, world
from jaxpid.priors.word_priors import uniform_log_prior
from jaxpid.sd.pipeline import Pipeline
from jaxpid.sd.prompts import replace_source, subset_prompts
from jaxpid.core.known_answers import WORLDS, form_verdicts, known_answer_table
from jaxpid.studies.base import StudyBatch, StudyPlan, StudyRun, StudySummary, check_positive, finite
from jaxpid.studies.validate_tables import ATOMS, MODES, WORLD, ground_truth_table, known_answers_markdown, markdown
from jaxpid.sweeps.fused import PreparedBatch
from jaxpid.studies.stats import mean_and_stderr

OTHER_COLOURS = {c: tuple(o for o in dataset.COLOURS if o != c) for c in dataset.COLOURS}


@dataclasses.dataclass(frozen=True)
class Case:
    """One designed case: images rendered from ``caption``, the PID of ``sources`` in ``prompt``."""

    name: str
    caption: str  # the images' caption (rendered with the demo's renderer)
    prompt: str  # the analysed prompt
    sources: tuple[str, str]
    alternatives: tuple[tuple[str, ...], tuple[str, ...]]  # imin's candidates per source
    colours: tuple[str, ...] | None = None  # colours the caption leaves open
    objects: tuple[int, int] | None = None  # which object's mask belongs to each source (maps)


def _alternatives(word: str) -> tuple[str, ...]:
    if word in dataset.COLOUR_WORDS:
        return OTHER_COLOURS[dataset.COLOUR_WORDS[word]]
    if word in dataset.SHAPES:
        return tuple(s for s in dataset.SHAPES if s != word)
    if word in dataset.RELATIONS:
        return tuple(r for r in dataset.RELATIONS if r != word)
    raise ValueError(f"no alternatives for {word!r}")


def _case(name, caption, sources, colours=None, objects=None, prompt=None) -> Case:
    return Case(name, caption, prompt or caption, tuple(sources), tuple(_alternatives(w) for w in sources),
                colours, objects)


CASES = (
    _case("distinct objects", "a red circle and a blue square", ("circle", "square"), objects=(0, 1)),
    _case("co-hyponyms", "a red circle and a blue square", ("red", "blue"), objects=(0, 1)),
    _case("synonyms", "a crimson red circle", ("crimson", "red")),
    _case("interaction", "a red square with a contrasting circle", ("red", "contrasting")),
    _case("homonym: orange", "an orange square", ("orange", "square")),
    _case("homonym control: red", "a red square", ("red", "square")),
    _case("bias: green triangle", "a triangle", ("green", "triangle"), colours=("green",),
          prompt="a green triangle"),
    _case("bias control: red triangle", "a triangle", ("red", "triangle"), colours=("red",), prompt="a red triangle"),
)
CASE_INDEX = {case.name: i for i, case in enumerate(CASES)}


# ---------------------------------------------------------------------------------------------
# The phenomena: a statistic per (measure, form, mode) from the per-image rows, and its criterion


@dataclasses.dataclass(frozen=True)
class Phenomenon:
    name: str
    designed: str  # the designed answer, in words
    statistic: str  # what is computed, in words
    cases: tuple[str, ...]  # the cases it reads (a second one is a control it is compared with)
    per_image: Callable[[dict], float]  # one image's value from its row
    passes: Callable[[float, float], bool]  # (mean, stderr) -> designed answer recovered?
    contrast: bool = False  # the statistic is case 1's mean minus case 2's


TINY = 1e-9  # nats: the world's exact rows have no error; a float-rounding 0 is not a sign


def _above(mean: float, se: float) -> bool:
    return math.isfinite(mean) and math.isfinite(se) and mean - 2 * se > TINY


def _below(mean: float, se: float) -> bool:
    return math.isfinite(mean) and math.isfinite(se) and mean + 2 * se < -TINY


PHENOMENA = (
    Phenomenon("distinct objects: maps", "each word's unique information lies on its own object",
               "min over the two shape words of (share of the unique map's positive mass on the word's own object "
               "- share on the other object)", ("distinct objects",),
               lambda r: min(r["own_1"] - r["other_1"], r["own_2"] - r["other_2"]), _above),
    Phenomenon("distinct objects: atoms", "each word carries unique information (image level)",
               "min(U1, U2), nats", ("distinct objects",), lambda r: min(r["U1"], r["U2"]), _above),
    Phenomenon("co-hyponyms", "two colour words of two objects share little information",
               "R - i12 / 4 (redundancy minus a quarter of the joint information), nats", ("co-hyponyms",),
               lambda r: r["R"] - 0.25 * r["joint"], _below),
    Phenomenon("synonyms", "crimson and red: redundancy the largest atom",
               "R - max(U1, U2, S), nats", ("synonyms",), lambda r: r["R"] - max(r["U1"], r["U2"], r["S"]), _above),
    Phenomenon("interaction", "red and contrasting fix the circle's colour only together: synergy",
               "S, nats", ("interaction",), lambda r: r["S"], _above),
    Phenomenon("homonym", "orange alone means the fruit; the shape word resolves it: more synergy than a "
               "plain colour word", "S(orange, square) - S(red, square), nats",
               ("homonym: orange", "homonym control: red"), lambda r: r["S"], _above, contrast=True),
    Phenomenon("designed bias", "an uncoloured triangle is green 80 %: triangle and green share information",
               "R(green, triangle) - R(red, triangle) on their own images, nats",
               ("bias: green triangle", "bias control: red triangle"), lambda r: r["R"], _above, contrast=True),
)


# ---------------------------------------------------------------------------------------------
# The study plan: one batch = one (case, mode), its images = seeds


@dataclasses.dataclass(frozen=True)
class ValidateConfig:
    estimator: EstimatorConfig = EstimatorConfig(n_samples=64)
    images: int = 8  # rendered images per (case, mode)
    measures: tuple[str, ...] = MEASURES

    def __post_init__(self):
        check_int("images", self.images, 2)

    def to_dict(self) -> dict:
        return {"estimator": self.estimator.to_dict(), "images": self.images, "measures": list(self.measures)}


class ValidatePlan(StudyPlan):
    study = "validate"

    def __init__(self, config: ValidateConfig, model: dict, *, gmm_images: int = 48, gmm_samples: int = 256,
                 truth_samples: int = 4096, known_images: int = 1024, known_samples: int = 64):
        items = [{"case": case.name, "mode": mode, "seed": seed}
                 for case in CASES for mode in MODES for seed in range(config.images)]
        super().__init__(items, config, model, batch_size=config.images, shape_of=lambda i: (i["case"], i["mode"]),
                         source="jaxpid.studies.validate.CASES")
        self.batch_size = config.images
        # the reference tables computed at the end (no model): outside the fingerprint
        self.summary_options = check_positive(gmm_images=gmm_images, gmm_samples=gmm_samples,
                                              truth_samples=truth_samples, known_images=known_images,
                                              known_samples=known_samples)

    def prompts(self, item) -> list[str]:
        case = CASES[CASE_INDEX[item["case"]]]
        return _prompts(case, item["mode"] == "conditional")

    def prepare(self, pipeline: Pipeline, batch: StudyBatch) -> PreparedBatch:
        """The case's images drawn by the demo's renderer (with their objects' masks and scenes)."""
        items, n = self.batch_items(batch, self.batch_size)
        case = CASES[CASE_INDEX[items[0]["case"]]]
        pixels, masks, scenes = zip(*(_render(case, item["seed"]) for item in items))
        latents = np.asarray(pipeline.encode_images(np.stack(pixels)))
        masks = np.stack([_on_latent_grid(m, latents.shape[-2:]) for m in masks])  # (B, objects, h, w)
        prompts = _prompts(case, items[0]["mode"] == "conditional")
        return PreparedBatch(latents, [prompts] * len(items), [i["index"] for i in items], n,
                             f"batch {batch.index} ({case.name}, {items[0]['mode']})",
                             pairs=tuple(anchored_pairs(2, len(prompts))),
                             context={"items": items, "case": case, "masks": masks, "scenes": scenes})

    def rows(self, pipeline: Pipeline, batch: StudyBatch, prepared: PreparedBatch, res,
             positions: Sequence[int]) -> pa.Table:
        case, prompts = prepared.context["case"], prepared.prompts[0]
        items = [prepared.context["items"][p] for p in positions]
        masks = prepared.context["masks"][np.asarray(positions, int)]
        rows = []
        for measure in self.config.measures:
            for form in FORMS:
                kwargs = _measure_inputs(measure, case, len(items))
                result = decompose(res, 2, measure=measure, form=form, **kwargs)
                rows += _rows(items, case, measure, form, result, masks)
        # the world's exact values for the same images and conditionings (jaxpid.demo.world)
        exact = np.array([[world.information(world.scene_key(prepared.context["scenes"][p]), c, prompts[0])
                           for c in prompts] for p in positions])
        for measure in self.config.measures:
            rows += _world_rows(items, case, measure, exact)
        return pa.Table.from_pylist(rows)

    @property
    def summary_note(self) -> str:
        o = self.summary_options
        return (f"summary: Gaussian-mixture cases ({o['gmm_images']} images x {o['gmm_samples']} samples; orthogonal "
                f"truth at {o['truth_samples']}) and known answers, one fixed prompt at a time ({o['known_images']} "
                f"images x {o['known_samples']} samples per prompt)...")

    def summarise(self, run: StudyRun, pipeline: Pipeline | None = None) -> ValidateSummary:
        """The demo's cells from the rows, then the Gaussian-mixture and known-answer tables."""
        return validate_summary(self, run)


def _prompts(case: Case, conditional: bool) -> list[str]:
    subsets = subset_prompts(case.prompt, list(case.sources), conditional=conditional)
    return list(subsets.prompts) + [replace_source(subsets, j, alt) for j in range(2) for alt in case.alternatives[j]]


def _measure_inputs(measure: str, case: Case, n_images: int) -> dict:
    if measure == "imin":
        offset = 4 + len(case.alternatives[0])
        return {"candidates": [[1] + list(range(4, offset)),
                               [2] + list(range(offset, offset + len(case.alternatives[1])))]}
    if measure == "ppid":
        return {"log_prior": uniform_log_prior(2)}
    return {}


def _render(case: Case, seed: int) -> tuple[np.ndarray, np.ndarray, dataset.Scene]:
    rng = np.random.default_rng([seed, CASE_INDEX[case.name], 2024])
    scene = dataset.scene_for_caption(case.caption, case.colours, rng=rng)
    return (*dataset.render(scene), scene)




def _world_rows(items, case: Case, measure: str, exact: np.ndarray) -> list[dict]:
    """Rows of the world's exact atoms: the measure applied to the exact pointwise values
    (``exact`` (I, conditionings): subsets in bitmask order, then the alternatives). No maps."""
    lattice = redundancy_lattice(2)
    kwargs = _measure_inputs(measure, case, len(items))
    if "candidates" in kwargs:
        kwargs = {"candidate_info": [exact[:, idx] for idx in kwargs["candidates"]]}
    atoms = lattice.atoms(redundancies(lattice, exact[:, :4], measure, **kwargs))
    nan = float("nan")
    return [{"item": item["index"], "case": case.name, "mode": item["mode"], "seed": item["seed"],
             "measure": measure, "form": WORLD, **dict(zip(ATOMS, map(float, atoms[i]))),
             "joint": float(exact[i, 3]), "i1": float(exact[i, 1]), "i2": float(exact[i, 2]),
             "own_1": nan, "other_1": nan, "own_2": nan, "other_2": nan} for i, item in enumerate(items)]


def _on_latent_grid(masks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Object masks (objects, H, W) on the latent grid: pixels covered at least half."""
    height, width = masks.shape[-2:]
    fy, fx = height // shape[0], width // shape[1]
    if (fy * shape[0], fx * shape[1]) != (height, width):
        raise ValueError(f"image {height}x{width} is not a multiple of the latent grid {shape}")
    return masks.reshape(masks.shape[0], shape[0], fy, shape[1], fx).mean(axis=(2, 4)) >= 0.5


def _rows(items, case: Case, measure: str, form: str, result, masks: np.ndarray) -> list[dict]:
    rows = []
    atoms = np.stack([result.atoms[name] for name in result.names], axis=1)  # (I, 4): R, U1, U2, S
    for i, item in enumerate(items):
        row = {"item": item["index"], "case": case.name, "mode": item["mode"], "seed": item["seed"],
               "measure": measure, "form": form, **dict(zip(ATOMS, map(float, atoms[i]))),
               "joint": float(result.joint[i]), "i1": float(result.subset_information[i, 1]),
               "i2": float(result.subset_information[i, 2])}
        for j in (1, 2):
            own = other = float("nan")
            if case.objects is not None:
                unique = np.clip(result.atom_maps["{%d}" % j][i], 0.0, None)
                total = unique.sum()
                mine, theirs = case.objects[j - 1], case.objects[2 - j]
                own = float((unique * masks[i, mine]).sum() / total) if total > 0 else 0.0
                other = float((unique * masks[i, theirs]).sum() / total) if total > 0 else 0.0
            row[f"own_{j}"], row[f"other_{j}"] = own, other
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# The table


def demo_table(rows: pa.Table) -> list[dict]:
    """One cell per (phenomenon, measure, form, mode): statistic, s.e., pass."""
    by_key: dict[tuple, list[dict]] = {}
    for row in rows.to_pylist():
        by_key.setdefault((row["case"], row["measure"], row["form"], row["mode"]), []).append(row)
    measures = list(dict.fromkeys(r["measure"] for r in rows.to_pylist()))
    cells = []
    for phenomenon in PHENOMENA:
        for measure in measures:
            for form in FORMS + (WORLD,):
                for mode in MODES:
                    values = [[phenomenon.per_image(r) for r in by_key.get((c, measure, form, mode), [])]
                              for c in phenomenon.cases]
                    mean, se = mean_and_stderr(values[0])
                    if phenomenon.contrast:
                        control, control_se = mean_and_stderr(values[1])
                        mean, se = mean - control, math.sqrt(se**2 + control_se**2)
                    cells.append({"phenomenon": phenomenon.name, "measure": measure, "form": form, "mode": mode,
                                  "statistic": mean, "stderr": se, "n": len(values[0]),
                                  "passed": bool(phenomenon.passes(mean, se))})
    return cells




# ---------------------------------------------------------------------------------------------
# The summary


@dataclasses.dataclass(frozen=True, eq=False)
class ValidateSummary(StudySummary):
    """The validation study's summary: the demo's cells, the Gaussian-mixture cells, the
    known-answer rows and verdicts (summary.json), the items table and table.md."""

    @property
    def passed(self) -> dict[str, int]:
        """Estimated cells passed per measure (the world's exact rows are the reference, not counted)."""
        return dict(self.record["passed"])

    @property
    def cells(self) -> dict[str, int]:
        return dict(self.record["cells"])

    def text(self) -> str:
        verdicts = self.record["known_answers"]["forms"]
        return "\n".join([
            self.texts["table.md"].rstrip(),
            "\ncells passed per measure: " + ", ".join(f"{m} {self.passed[m]}/{self.cells[m]}" for m in self.passed),
            "known answers, prompts whose every information is within 3.5 s.e.: "
            + ", ".join(f"{f} {v['prompts_passed']}/{v['prompts']}" for f, v in verdicts.items())])


def validate_summary(plan: ValidatePlan, run: StudyRun) -> ValidateSummary:
    """The demo's cells from the run's rows, and the reference tables (no model): the Gaussian
    mixtures against their exact atoms and the known-answer worlds, one fixed prompt at a time."""
    config, options, estimator = plan.config, plan.summary_options, plan.config.estimator
    demo = demo_table(run.rows)
    truth = ground_truth_table(n_images=options["gmm_images"], n_samples=options["gmm_samples"],
                               truth_samples=options["truth_samples"], seed=estimator.key)
    known = known_answer_table(WORLDS, seed=estimator.key, n_images=options["known_images"],
                               n_samples=options["known_samples"], sampler=estimator.sampler)
    estimated = [c for c in demo + truth if c.get("form") != WORLD]  # the world's rows are the reference
    record = {
        "phenomena": [{"name": p.name, "designed": p.designed, "statistic": p.statistic, "cases": list(p.cases),
                       "criterion": "above 0 by 2 s.e." if p.passes.__name__ == "_above" else "below 0 by 2 s.e."}
                      for p in PHENOMENA],
        "demo": demo,
        "gaussian_mixtures": truth,
        "known_answers": {"rows": known, "forms": form_verdicts(known),
                          "criterion": "mean over images of estimate - exact within 3.5 s.e. (+0.02 nats) per "
                                       "information; forms' Monte-Carlo s.e. at most 1.25 x the standard form's"},
        "passed": {m: sum(c["passed"] for c in estimated if c["measure"] == m) for m in config.measures},
        "cells": {m: sum(1 for c in estimated if c["measure"] == m) for m in config.measures},
        "config": {**config.to_dict(),
                   "gaussian_mixtures": {"images": options["gmm_images"], "samples": options["gmm_samples"],
                                         "truth_samples": options["truth_samples"]},
                   "known_answers": {"images": options["known_images"], "samples": options["known_samples"]}},
        "items_per_minute": run.items_per_minute,
    }
    table = markdown(demo, truth) + "\n\n" + known_answers_markdown(known)
    return ValidateSummary("validate", finite(record), tables={"items": run.rows}, texts={"table.md": table + "\n"})
