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

import jax
import numpy as np
import pyarrow as pa

from jaxpid.core.config import PID_FORMS as FORMS
from jaxpid.core.config import EstimatorConfig, check_int
from jaxpid.core.decomposition import anchored_pairs, decompose
from jaxpid.core.estimator import information
from jaxpid.core.ground_truth import CANONICAL_CASES, canonical_case
from jaxpid.core.lattice import redundancy_lattice
from jaxpid.core.measures import MEASURES, redundancies
from jaxpid.demo import dataset, world
from jaxpid.priors.word_priors import uniform_log_prior
from jaxpid.sd.pipeline import Pipeline
from jaxpid.sd.prompts import replace_source, subset_prompts
from jaxpid.studies.base import StudyBatch, StudyPlan
from jaxpid.studies.stats import mean_and_stderr

MODES = ("plain", "conditional")
ATOMS = ("R", "U1", "U2", "S")  # redundancy, unique of source 1 and 2, synergy (lattice order)
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

    def __init__(self, config: ValidateConfig, model: dict):
        items = [{"case": case.name, "mode": mode, "seed": seed}
                 for case in CASES for mode in MODES for seed in range(config.images)]
        super().__init__(items, config, model, batch_size=config.images, shape_of=lambda i: (i["case"], i["mode"]),
                         source="jaxpid.studies.validate.CASES")
        self.batch_size = config.images

    def prompts(self, item) -> list[str]:
        case = CASES[CASE_INDEX[item["case"]]]
        return _prompts(case, item["mode"] == "conditional")

    def compute(self, pipeline: Pipeline, batch: StudyBatch, *, devices: Sequence | None = None):
        items, n = self.batch_items(batch, self.batch_size)
        case = CASES[CASE_INDEX[items[0]["case"]]]
        conditional = items[0]["mode"] == "conditional"
        pixels, masks, scenes = zip(*(_render(case, item["seed"]) for item in items))
        latents = np.asarray(pipeline.encode_images(np.stack(pixels)))
        masks = np.stack([_on_latent_grid(m, latents.shape[-2:]) for m in masks])  # (B, objects, h, w)
        prompts = _prompts(case, conditional)
        conds = pipeline.encode_prompt(prompts)
        base = self.config.estimator.prng_key()
        keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(np.asarray([i["index"] for i in items], np.uint32))
        est = self.config.estimator
        res = information(pipeline.denoiser, latents, conds, key=keys, n_samples=est.n_samples, sampler=est.sampler,
                          chunk_size=est.chunk_size, devices=devices, pairs=anchored_pairs(2, len(prompts)))
        rows = []
        for measure in self.config.measures:
            for form in FORMS:
                kwargs = _measure_inputs(measure, case, len(items))
                result = decompose(res, 2, measure=measure, form=form, **kwargs)
                rows += _rows(items[:n], case, measure, form, result, masks)
        # the world's exact values for the same images and conditionings (jaxpid.demo.world)
        exact = np.array([[world.information(world.scene_key(scene), p, prompts[0]) for p in prompts]
                          for scene in scenes[:n]])
        for measure in self.config.measures:
            rows += _world_rows(items[:n], case, measure, exact)
        return pa.Table.from_pylist(rows), {"seconds": 0.0, "compile_s": res.timings.get("compile_s", 0.0)}


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


WORLD = "world"  # the rows of the world's exact values (form column), beside the estimated forms


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


def ground_truth_table(measures: Sequence[str] = MEASURES, *, n_images: int = 48, n_samples: int = 256,
                       truth_samples: int = 4096, seed: int = 0) -> list[dict]:
    """One cell per (Gaussian-mixture case, measure, form): the largest |estimated − exact| mean
    atom in standard errors; passes within 3 (plus 0.01 nats for the truth's own rounding)."""
    lattice = redundancy_lattice(2)
    cells = []
    for c, name in enumerate(CANONICAL_CASES):
        for hidden in (False, True):
            case = canonical_case(name, hidden=hidden)
            pairs, x = case.sample(jax.random.key(1000 * seed + 10 * c + hidden), n_images)
            # the 4 subsets, then imin's candidate for each source (the other value of its bit)
            conds = np.concatenate([np.stack([case.subset_log_weights(*p) for p in pairs])]
                                   + [np.stack([case.single_source_log_weights(j, 1 - p[j]) for p in pairs])[:, None]
                                      for j in range(2)], axis=1).astype(np.float32)
            common = dict(conds_per_image=True, pairs=anchored_pairs(2, conds.shape[1]))
            estimated = information(case.denoiser, x, conds, key=jax.random.key(seed + 1), n_samples=n_samples, **common)
            truth = information(case.denoiser, x, conds, key=jax.random.key(seed + 7), n_samples=truth_samples, **common)
            exact_info = case.exact_information(x, pairs)
            for measure in measures:
                kwargs = _gmm_inputs(measure, case, pairs)
                for form in FORMS:
                    res = decompose(estimated, 2, measure=measure, form=form, **kwargs)
                    estimate, se = _mean_atoms(res, n_images)
                    if form == "standard":
                        exact = lattice.atoms(redundancies(lattice, exact_info, measure,
                                                           **_exact_inputs(measure, case, x, pairs, exact_info)))
                        exact = exact.mean(axis=0)
                    else:  # the gap forms: the same integrals with the exact denoiser and many samples
                        exact, truth_se = _mean_atoms(decompose(truth, 2, measure=measure, form=form, **kwargs),
                                                      n_images)
                        se = np.sqrt(se**2 + truth_se**2)
                    z = np.abs(estimate - exact) / np.maximum(se, 1e-12)
                    cells.append({"case": case.name, "measure": measure, "form": form,
                                  "estimate": estimate.tolist(), "exact": exact.tolist(), "stderr": se.tolist(),
                                  "max_z": float(z.max()), "worst_atom": ATOMS[int(np.argmax(z))],
                                  "passed": bool(np.all(np.abs(estimate - exact) <= 3 * se + 0.01))})
    return cells


def _mean_atoms(result, n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean atoms over images and their standard error (from the per-image jackknife errors)."""
    atoms = np.stack([result.atoms[n] for n in result.names], axis=1)
    errors = np.stack([result.atoms_stderr[n] for n in result.names], axis=1)
    return atoms.mean(axis=0), np.sqrt(np.sum(errors**2, axis=0)) / n_images


def _gmm_inputs(measure, case, pairs) -> dict:
    if measure == "imin":
        return {"candidates": [[1, 4], [2, 5]]}
    if measure == "ppid":  # the mixture's own source priors, per image
        return {"log_prior": np.log(np.stack([[case.marginal(j)[p[j]] for j in range(2)] for p in pairs]))}
    return {}


def _exact_inputs(measure, case, x, pairs, exact_info) -> dict:
    if measure == "imin":
        alt = [np.array([case.exact_single_source_information(x[i:i + 1], j, 1 - pairs[i][j])[0]
                         for i in range(len(x))]) for j in range(2)]
        return {"candidate_info": [np.stack([exact_info[:, 1 << j], alt[j]], axis=1) for j in range(2)]}
    if measure == "ppid":
        return {"log_prior": np.log(np.stack([[case.marginal(j)[p[j]] for j in range(2)] for p in pairs]))}
    return {}


def markdown(demo: list[dict], truth: list[dict]) -> str:
    """Both tables as Markdown (docs/validation.md)."""
    measures = list(dict.fromkeys(c["measure"] for c in demo))
    lines = ["| phenomenon | form | mode | " + " | ".join(measures) + " |", "|---|---|---|" + "---|" * len(measures)]
    index = {(c["phenomenon"], c["measure"], c["form"], c["mode"]): c for c in demo}
    for phenomenon in dict.fromkeys(c["phenomenon"] for c in demo):
        for form in FORMS + (WORLD,):
            for mode in MODES:
                cells = []
                for measure in measures:
                    c = index.get((phenomenon, measure, form, mode))
                    if c is None or not math.isfinite(c["statistic"]):
                        cells.append("–")
                        continue
                    mark = "✓" if c["passed"] else "✗"
                    cells.append(f"{mark} {c['statistic']:+.2f} ± {c['stderr']:.2f}")
                lines.append(f"| {phenomenon} | {form} | {mode} | " + " | ".join(cells) + " |")
    lines += ["", "| Gaussian mixture | form | " + " | ".join(measures) + " |", "|---|---|" + "---|" * len(measures)]
    index = {(c["case"], c["measure"], c["form"]): c for c in truth}
    for case in dict.fromkeys(c["case"] for c in truth):
        for form in FORMS:
            cells = []
            for measure in measures:
                c = index.get((case, measure, form))
                cells.append("–" if c is None else f"{'✓' if c['passed'] else '✗'} {c['max_z']:.1f}")
            lines.append(f"| {case} | {form} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def known_answers_markdown(rows: Sequence[dict]) -> str:
    """The known-answer table (one fixed prompt at a time) as Markdown: per world and prompt, each
    form's informations as estimate − exact ± s.e. (✗ beyond 3.5 s.e.), then the atoms' largest
    |estimate − exact| per (form, measure)."""
    info = [r for r in rows if r["kind"] == "information"]
    forms = list(dict.fromkeys(r["form"] for r in info))
    quantities = list(dict.fromkeys(r["quantity"] for r in info))
    index = {(r["world"], r["prompt"], r["form"], r["quantity"]): r for r in info}
    lines = ["| world | prompt | quantity | exact | " + " | ".join(forms) + " |", "|---|---|---|---|" + "---|" * len(forms)]
    for name, prompt in dict.fromkeys((r["world"], r["prompt"]) for r in info):
        for q in quantities:
            cells = []
            for form in forms:
                r = index[(name, prompt, form, q)]
                cells.append(f"{'' if r['passed'] else '✗ '}{r['difference']:+.3f} ± {r['stderr']:.3f}")
            exact = index[(name, prompt, forms[0], q)]["exact"]
            lines.append(f"| {name} | {prompt} | {q.replace('|', chr(92) + '|')} | {exact:.3f} | " + " | ".join(cells) + " |")
    atoms = [r for r in rows if r["kind"] == "atom"]
    measures = list(dict.fromkeys(r["measure"] for r in atoms))
    lines += ["", "| atoms: largest \\|mean estimate − mean exact\\| over prompts (nats) | " + " | ".join(measures) + " |",
              "|---|" + "---|" * len(measures)]
    for form in forms:
        cells = []
        for m in measures:
            mine = [abs(r["difference"]) for r in atoms if r["form"] == form and r["measure"] == m]
            cells.append(f"{max(mine):.3f}" if mine else "–")
        lines.append(f"| {form} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
