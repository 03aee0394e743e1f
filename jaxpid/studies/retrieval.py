"""Compositional retrieval: which caption does the diffusion model find most likely for an image?

Info-Decomp's ARO experiment (docs/studies.md#compositional-retrieval). Each item is an image
and C candidate captions, one of them true. The C captions and the empty prompt "" are the
conditionings of **one** fused pass over the image, so every caption is scored with the same
(α, ε) draws (common random numbers: the noise of a comparison mostly cancels):

- the standard choice: the caption with the lowest NLL −log p(x | caption) (equivalently the
  largest standard-form information i^s(x; caption), measured against "");
- the orthogonal choice: the largest orthogonal-form information i^o(x; caption) against "".

A tie (identical captions score identically) earns 1/m of a correct answer, m the number of
captions tied at the best score: the expected result of breaking it at random. Items marked
``"expect": "tie"`` hold captions meant to be equivalent (the demo's synonyms): they are left
out of the accuracy and reported apart.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from jaxpid.core.config import EstimatorConfig, check_int
from jaxpid.core.sampling import stratified_stderr
from jaxpid.core.sequential import sequential_choice
from jaxpid.demo import dataset
from jaxpid.errors import ConfigError
from jaxpid.sd.pipeline import Pipeline, load_image
from jaxpid.studies.base import (
    FinishedStudy,
    StudyBatch,
    StudyPlan,
    StudyRun,
    complete_study,
    where,
)
from jaxpid.studies.manifest import read_manifest, resolve_path
from jaxpid.studies.retrieval_summary import RetrievalSummary, benchmark_of, macro_rule, retrieval_study_summary
from jaxpid.sweeps.fused import PreparedBatch

EXPECTATIONS = (None, "tie")


@dataclasses.dataclass(frozen=True)
class RetrievalConfig:
    """Everything that decides a retrieval study's numbers."""

    estimator: EstimatorConfig = EstimatorConfig()  # item j draws from fold_in(key(estimator.key), j)
    batch_size: int = 8  # images per fused pass
    # sequential decisions (jaxpid.core.sequential): rounds of estimator.n_samples per item until
    # the lowest-NLL caption's margin over every rival clears an always-valid bound at this
    # confidence, or max_samples (default 10 rounds) — then the fixed-N rule's choice there
    sequential: bool = False
    confidence: float = 0.99
    max_samples: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "batch_size", check_int("batch_size", self.batch_size, 1))
        if not 0.0 < self.confidence < 1.0:
            raise ConfigError(f"confidence must be in (0, 1), got {self.confidence!r}")
        if not self.sequential and self.max_samples is not None:
            raise ConfigError("max_samples caps the rounds of a sequential retrieval: give sequential=True too "
                              "(--sequential)")
        if self.sequential:
            if self.estimator.target_stderr is not None:
                raise ConfigError("a sequential retrieval stops on its decision bound: drop the target standard error")
            most = self.max_samples
            most = 10 * self.estimator.n_samples if most is None else check_int(
                "max_samples", most, self.estimator.n_samples)
            object.__setattr__(self, "max_samples", most)

    def to_dict(self) -> dict:
        record = {"estimator": self.estimator.to_dict(), "batch_size": self.batch_size,
                  "images": "resized to the model's size (no crop, aspect not kept), bicubic"}
        if self.sequential:  # absent otherwise: fixed-N studies keep their fingerprints
            record["sequential"] = {"confidence": self.confidence, "max_samples": self.max_samples,
                                    "samples_per_round": self.estimator.n_samples,
                                    "bound": "alpha spending 6/(pi^2 k^2) over looks, Bonferroni over rivals"}
        return record


# ---------------------------------------------------------------------------------------------
# Items


def read_retrieval_manifest(path: str | Path) -> list[dict]:
    """Items of a JSONL manifest: ``{"image": path, "captions": [...], "label": 0}`` with optional
    ``group``, ``crop`` ([x, y, w, h] in pixels) and ``expect`` ("tie"); image paths relative to
    the manifest's folder. Errors name the line."""
    path = Path(path)
    items = read_manifest(path, required=["image", "captions"], what="retrieval manifest")
    for item in items:
        item["image"] = str(resolve_path(item["image"], path.parent, f"{path} line {item['line']}"))
    check_items(items)
    return items


def check_items(items: Sequence[dict]) -> None:
    """Refuse an item the study cannot score, naming its line (or item): fewer than two captions,
    a label out of range, a missing image, a bad crop, unknown fields."""
    allowed = {"image", "render", "seed", "captions", "label", "group", "crop", "expect", "line", "index"}
    for i, item in enumerate(items):
        at = where({**item, "index": item.get("index", i)})
        unknown = sorted(set(item) - allowed)
        if unknown:
            raise ConfigError(f"{at}: unknown field(s) {unknown}; an item has image, captions and optionally label, "
                              "group, crop, expect")
        captions = item.get("captions")
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            raise ConfigError(f"{at}: captions must be a list of strings, got {captions!r}")
        if len(captions) < 2:
            raise ConfigError(f"{at}: an item needs at least two captions to choose from, got {len(captions)}")
        label = item.get("label", 0)
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(captions):
            raise ConfigError(f"{at}: label {label!r} is out of range for {len(captions)} captions "
                              f"(0..{len(captions) - 1}, the index of the true caption)")
        if item.get("expect") not in EXPECTATIONS:
            raise ConfigError(f"{at}: expect must be 'tie' or absent, got {item['expect']!r}")
        if not isinstance(item.get("group", ""), (str, type(None))):
            raise ConfigError(f"{at}: group must be a string, got {item['group']!r}")
        if "render" in item:  # the demo's images: a caption of its grammar
            try:
                dataset.parse_caption(item["render"])
            except (ValueError, AttributeError, TypeError) as error:
                raise ConfigError(f"{at}: render: {error}") from None
        elif not isinstance(item.get("image"), str) or not Path(item["image"]).is_file():
            raise ConfigError(f"{at}: image {item.get('image')!r} does not exist")
        crop = item.get("crop")
        if crop is not None and (not isinstance(crop, list) or len(crop) != 4
                                 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in crop)
                                 or crop[2] <= 0 or crop[3] <= 0):
            raise ConfigError(f"{at}: crop must be [x, y, width, height] with a positive size, got {crop!r}")


def load_item_image(item: Mapping, size: tuple[int, int]) -> np.ndarray:
    """The item's image as (H, W, 3) uint8 at the model's ``size``: read (or, for the demo,
    rendered), cropped to ``crop`` if given (as ARO crops VG images to the bounding box; outside
    the image is black, as PIL crops), resized (bicubic, aspect not kept, as Info-Decomp)."""
    if "render" in item:
        pixels = np.round(render_caption(item["render"], int(item.get("seed", 0))) * 255).astype(np.uint8)
    else:
        pixels = load_image(item["image"])
    image = Image.fromarray(pixels)
    if item.get("crop") is not None:
        x, y, w, h = item["crop"]
        image = image.crop((int(round(x)), int(round(y)), int(round(x + w)), int(round(y + h))))
    if image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.Resampling.BICUBIC)
    return np.asarray(image.convert("RGB"), np.uint8)


def render_caption(caption: str, seed: int) -> np.ndarray:
    """A demo-world image of ``caption`` (its grammar's colours; random offsets and sizes as in
    training, drawn from ``seed``), (20, 20, 3) float in [0, 1]."""
    rng = np.random.default_rng(seed)
    nominal = dataset.scene_for_caption(caption)
    objects = []
    for obj in nominal.objects:
        dx, dy = rng.uniform(-dataset.JITTER, dataset.JITTER, size=2)
        objects.append(dataclasses.replace(obj, centre=(obj.centre[0] + dx, obj.centre[1] + dy),
                                           radius=obj.radius * rng.uniform(0.94, 1.02)))
    return dataset.render(dataset.Scene(caption, tuple(objects)))[0]


# ---------------------------------------------------------------------------------------------
# Choosing


@dataclasses.dataclass(frozen=True)
class Choice:
    """One item's choice by a score."""

    index: int  # the caption chosen (the first of a tie)
    credit: float  # 1 if the true caption alone is best, 1/m if it ties with m − 1 others, else 0


def choose(scores: Sequence[float], label: int, *, lowest: bool) -> Choice:
    """The best caption by ``scores`` (lowest or highest) and the credit of the true one."""
    s = np.asarray(scores, np.float64)
    s = s if lowest else -s
    best = np.flatnonzero(s == s.min())
    return Choice(int(best[0]), float(label in best) / len(best))


# ---------------------------------------------------------------------------------------------
# The plan


class RetrievalPlan(StudyPlan):
    """Retrieval items in batches of one shape (the number of captions)."""

    study = "retrieval"
    format = 1
    unit = "item"

    def __init__(self, items: Sequence[dict], config: RetrievalConfig, model: Mapping, *, source: str,
                 benchmark: str | None = None):
        check_items(items)
        super().__init__(items, config, model, batch_size=config.batch_size,
                         shape_of=lambda item: len(item["captions"]), source=source)
        macro_rule(benchmark)  # an unknown name is refused before any model work
        # the ARO set's macro-accuracy rules: given, else the one the source names (the CLI's --aro)
        self.summary_options = {"benchmark": benchmark or benchmark_of(source)}

    def prompts(self, item: Mapping) -> list[str]:
        return list(item["captions"]) + [""]

    def prepare(self, pipeline: Pipeline, batch: StudyBatch) -> PreparedBatch:
        """The batch's images (resized to the model's size) and each item's captions, then ""."""
        items, n_real = self.batch_items(batch, self.config.batch_size)
        latents = pipeline.encode_images(np.stack([load_item_image(item, pipeline.image_size) for item in items]))
        return PreparedBatch(latents, [self.prompts(item) for item in items], [item["index"] for item in items],
                             n_real, f"batch {batch.index} (items {list(batch.jobs)})",
                             reference=len(items[0]["captions"]), context=items)

    def rows(self, pipeline: Pipeline, batch: StudyBatch, prepared: PreparedBatch, res,
             positions: Sequence[int]) -> pa.Table:
        n_captions = prepared.reference
        rows = [self._row(prepared.context[p], i, res, n_captions, pipeline) for i, p in enumerate(positions)]
        if self.config.sequential:
            for i, row in enumerate(rows):
                row["rounds"] = res.config.get("rounds", 1)
                row["decided"] = self._decision(res.select([i]))[1]
        return pa.Table.from_pylist(rows, schema=row_schema(self.config.sequential))

    @property
    def stop(self):
        """The sequential decision rule (``jaxpid.sweeps.adaptive`` runs it per item), or None."""
        return (lambda res: self._decision(res)[1]) if self.config.sequential else None

    @property
    def max_samples(self) -> int | None:
        return self.config.max_samples

    def _decision(self, res) -> tuple[int, bool]:
        n_captions = res.config["reference"]
        look = res.samples_standard.shape[1] // self.config.estimator.n_samples
        choice, decided, _ = sequential_choice(res, range(n_captions), confidence=self.config.confidence, look=look)
        return choice, decided

    def summarise(self, run: StudyRun, pipeline: Pipeline | None = None) -> RetrievalSummary:
        """Accuracy (micro and macro by ``summary_options['benchmark']``'s rules), margins, groups."""
        return retrieval_study_summary(run.rows, config=self.config.to_dict(), items=self.manifest["jobs"], run=run,
                                       benchmark=self.summary_options.get("benchmark"))

    def _row(self, item: Mapping, i: int, res, n_captions: int, pipeline: Pipeline) -> dict:
        label = int(item.get("label", 0))
        nll, nll_se = res.nll[i, :n_captions], res.stderr_nll[i, :n_captions]
        mi_o, mi_s = res.mi_orthogonal[i, :n_captions], res.mi_standard[i, :n_captions]
        by_nll, by_mi = choose(nll, label, lowest=True), choose(mi_o, label, lowest=False)
        others = [c for c in range(n_captions) if c != label]
        rival = others[int(np.argmin(nll[others]))]
        # nll_true − nll_rival per sample: the standard integrands' difference (the reference cancels)
        per_sample = res.samples_standard[i, :, rival] - res.samples_standard[i, :, label]
        return {
            "item": item["index"], "line": item.get("line"), "image": item.get("image") or f"demo:{item['render']}",
            "seed": item.get("seed"), "group": item.get("group"), "expect": item.get("expect"),
            "captions": list(item["captions"]), "n_captions": n_captions, "label": label,
            "nll": nll.tolist(), "nll_stderr": nll_se.tolist(), "mi_orthogonal": mi_o.tolist(),
            "mi_orthogonal_stderr": res.stderr_orthogonal[i, :n_captions].tolist(), "mi_standard": mi_s.tolist(),
            "choice": by_nll.index, "correct": by_nll.credit, "choice_mi": by_mi.index, "correct_mi": by_mi.credit,
            "rival": rival, "margin": float(nll[label] - nll[rival]),
            "margin_stderr": float(stratified_stderr(per_sample, res.strata, axis=0)),
            "margin_stderr_independent": float(math.hypot(nll_se[label], nll_se[rival])),
            "n_samples": res.config["n_samples"], "model": str(pipeline.name), "fingerprint": self.fingerprint,
        }


def row_schema(sequential: bool = False) -> pa.Schema:
    """The rows' columns; a sequential run adds each item's rounds and whether the bound decided it."""
    extra = [pa.field("rounds", _I), pa.field("decided", pa.bool_())] if sequential else []
    return pa.schema(list(ROW_SCHEMA) + extra)


_F, _S, _I = pa.float64(), pa.string(), pa.int64()
ROW_SCHEMA = pa.schema([
    ("item", _I), ("line", _I), ("image", _S), ("seed", _I), ("group", _S), ("expect", _S),
    ("captions", pa.list_(_S)), ("n_captions", _I), ("label", _I), ("nll", pa.list_(_F)), ("nll_stderr", pa.list_(_F)),
    ("mi_orthogonal", pa.list_(_F)), ("mi_orthogonal_stderr", pa.list_(_F)), ("mi_standard", pa.list_(_F)),
    ("choice", _I), ("correct", _F), ("choice_mi", _I), ("correct_mi", _F), ("rival", _I), ("margin", _F),
    ("margin_stderr", _F), ("margin_stderr_independent", _F), ("n_samples", _I), ("model", _S), ("fingerprint", _S),
])


def plan_retrieval(items: str | Path | Sequence[dict], config: RetrievalConfig, model: Mapping, *,
                   source: str | None = None, benchmark: str | None = None) -> RetrievalPlan:
    """The study's plan from a JSONL manifest or item dicts (checked before any model work).

    Args:
      benchmark: the ARO set of ``load_aro`` items (``"vg_relation"``, ...): the macro accuracy
        follows its rules; None: the set ``source`` names (``aro:<set>:<file>``), else the mean
        over every group.
    """
    if isinstance(items, (str, Path)):
        items, source = read_retrieval_manifest(items), source or str(items)
    return RetrievalPlan([dict(item) for item in items], config, model, source=source or "items", benchmark=benchmark)


def run_retrieval(pipeline: Pipeline, items, out: str | Path, config: RetrievalConfig = RetrievalConfig(), *,
                  progress: bool = False, devices: Sequence | None = None,
                  benchmark: str | None = None) -> FinishedStudy:
    """Run (or resume) the study in this process and write its outputs into ``out``.

    Args:
      items: a JSONL manifest path or item dicts (``demo_items()``, ``aro.load_aro(...)``).
      benchmark: as ``plan_retrieval``.
    """
    plan = plan_retrieval(items, config, pipeline.identity(), benchmark=benchmark)
    return complete_study(plan, out, pipeline=pipeline, progress=progress, devices=devices)


# ---------------------------------------------------------------------------------------------
# The demo's items


DEMO_COLOURS = ("red", "green", "blue", "yellow")  # orange left out: it is also the demo's fruit
DEMO_GROUPS = ("attribute", "order", "relation", "synonym")


def demo_items(n: int = 32, *, seed: int = 0) -> list[dict]:
    """``n`` items per group over the demo world, each image rendered from its true caption:

    - attribute: "a red circle and a blue square" vs "a blue circle and a red square";
    - order: "a red circle and a blue square" vs "a blue square and a red circle" (the first
      object is drawn on the left);
    - relation: "a red circle with a matching square" vs "... with a contrasting square";
    - synonym: "a red circle" vs "a crimson circle" — the same image by design (crimson = red),
      so ``expect: tie``: reported apart, neither should be preferred.

    The true caption's position is random.
    """
    check_int("n (demo items per group)", n, 1)
    rng = np.random.default_rng(check_int("seed (of the demo items' draw)", seed, 0))
    pick = lambda options: str(options[rng.integers(len(options))])  # noqa: E731
    article = lambda word: "an" if word[0] in "aeiou" else "a"  # noqa: E731
    items = []
    for group in DEMO_GROUPS:
        for _ in range(n):
            c1, c2 = rng.choice(DEMO_COLOURS, size=2, replace=False)
            s1, s2 = rng.choice(dataset.SHAPES, size=2, replace=False)
            if group == "attribute":
                true, false = f"a {c1} {s1} and a {c2} {s2}", f"a {c2} {s1} and a {c1} {s2}"
            elif group == "order":
                true, false = f"a {c1} {s1} and a {c2} {s2}", f"a {c2} {s2} and a {c1} {s1}"
            elif group == "relation":
                relation = pick(dataset.RELATIONS)
                other = [r for r in dataset.RELATIONS if r != relation][0]
                true, false = f"a {c1} {s1} with a {relation} {s2}", f"a {c1} {s1} with a {other} {s2}"
            else:
                words = ["red", "crimson"] if rng.random() < 0.5 else ["crimson", "red"]
                phrase = f"{words[0]} {s1}" if rng.random() < 0.5 else f"{words[0]} {s1} and {article(c2)} {c2} {s2}"
                true = f"a {phrase}"
                false = true.replace(words[0], words[1], 1)
            label = int(rng.integers(2))
            captions = [false, true] if label else [true, false]
            item = {"render": true, "seed": int(rng.integers(2**31)), "captions": captions, "label": label,
                    "group": group}
            if group == "synonym":
                item["expect"] = "tie"
            items.append(item)
    return items
