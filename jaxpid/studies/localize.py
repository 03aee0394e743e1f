"""Unsupervised localization (Info-Decomp §4.2, DiffusionPID's unique maps): does the
information a word carries sit on the object it names? Per-word maps, binarised and scored by
IoU against object masks, beside the cross-attention baseline.

One fused pass per batch gives every method. Each item (image x, prompt, word y1; the rest of
the prompt y2) is evaluated under the conditionings, in bitmask order of (y1, y2):

    0 ""        1 the word alone        2 the prompt without the word        3 the prompt

(Info-Decomp used 3: the caption, the caption without the word, ""; the word alone is added
for ``unique`` and dropped when it is not asked for.) Every conditioning sees the same
(log-SNR, noise) draws, and:

- ``cmi``: i(x; y1 | y2) per latent pixel, ½∫E‖ε̂(prompt) − ε̂(prompt without the word)‖² — the
  orthogonal gap of the pair (3, 2) measured in the pass;
- ``attention``: the UNet's cross-attention probabilities on the word's tokens under the full
  prompt, averaged over heads, upsampled to the latent grid and summed over layers (DAAM) at
  each sampled log-SNR, averaged over the samples inside the same compiled pass
  (``FusedPass(collect_aux=True)``): the real image noised at the estimator's log-SNRs, as
  Info-Decomp's "Attention + Information" row did;
- ``cmi_x_attention``: the pixel-wise product of the two maps, each min-max normalised first;
- ``unique``: the unique-information atom of y1 against y2 (plain PID, context "") under the
  chosen measure (mmi or ccs), per latent pixel.

Maps are upsampled bilinearly to the mask's resolution in the model's frame (the whole image
when it is squashed to the model's size, Info-Decomp's practice; the centre crop otherwise),
min-max normalised per map and thresholded: IoU at 50 thresholds in [0.1, 0.5] is stored per
item, and the summary picks the threshold two ways: tuned on the evaluation set itself (the
papers' practice, optimistic) and chosen on a seeded calibration split, reported on the rest.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow as pa

from jaxpid.analysis.maps import iou_curve, normalise_min_max, upsample_bilinear
from jaxpid.core.config import EstimatorConfig, check_choice, check_int
from jaxpid.core.decomposition import conditional_pairs, decompose
from jaxpid.core.estimator import FusedPass
from jaxpid.errors import ConfigError, NonFiniteError, PromptError
from jaxpid.io.plots import localization_overlays
from jaxpid.io.studies import save_study
from jaxpid.sd.pipeline import Pipeline, center_crop_box
from jaxpid.sd.prompts import WordRemoval, split_punctuation, without_words
from jaxpid.studies.base import StudyPlan, StudyRun, run_study, throughput, where
from jaxpid.studies.localize_items import ItemLoader
from jaxpid.studies.stats import mean_and_stderr

METHODS = ("cmi", "attention", "cmi_x_attention", "unique")
UNIQUE_MEASURES = ("mmi", "ccs")  # measures whose unique atom of a word against the rest means "only this word"
FITS = ("squash", "crop")
THRESHOLDS = np.linspace(0.1, 0.5, 50)  # of the min-max normalised map (Info-Decomp's grid)
MEAN_STD = 1.0  # the fixed rule: pixels above mean + 1·std of the upsampled map


@dataclasses.dataclass(frozen=True)
class LocalizeConfig:
    """What decides a localization study's numbers (the store's fingerprint covers it)."""

    estimator: EstimatorConfig = EstimatorConfig()
    methods: tuple[str, ...] = METHODS
    measure: str = "mmi"  # unique's redundancy measure
    removal: WordRemoval = WordRemoval()  # how the word leaves the prompt
    fit: str = "squash"  # how an image becomes the model's input: "squash" (resize) or "crop" (centre crop)
    resize_masks: bool = False  # resize masks of another size to their images (else refused)
    batch_size: int = 8  # items per fused pass
    overlays: int = 8  # items whose maps are kept for overlays.png

    def __post_init__(self):
        methods = tuple(self.methods)
        if not methods:
            raise ConfigError(f"give at least one method of {METHODS}")
        for method in methods:
            check_choice("method", method, METHODS)
        if len(set(methods)) != len(methods):
            raise ConfigError(f"methods repeat: {list(methods)}")
        object.__setattr__(self, "methods", methods)
        if self.measure not in UNIQUE_MEASURES:
            raise ConfigError(f"--measure {self.measure!r}: the localization study's unique maps use "
                              f"{UNIQUE_MEASURES} (imin needs alternative words, ppid word priors: with equal "
                              "priors its unique atom of a word is never positive)")
        check_choice("fit", self.fit, FITS)
        check_int("batch_size", self.batch_size, 1)
        check_int("overlays", self.overlays, 0)

    @property
    def with_unique(self) -> bool:
        return "unique" in self.methods

    @property
    def conditionings(self) -> tuple[str, ...]:
        """Names of the conditionings, in pass order (the prompt last)."""
        return ("empty", "word", "rest", "prompt") if self.with_unique else ("empty", "rest", "prompt")

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """The gaps measured besides each conditioning against "": the CMI pair (prompt, rest) first."""
        return conditional_pairs(2) if self.with_unique else [(2, 1)]

    @property
    def captures_attention(self) -> bool:
        return bool({"attention", "cmi_x_attention"} & set(self.methods))

    def to_dict(self) -> dict:
        return {"estimator": self.estimator.to_dict(), "methods": list(self.methods), "measure": self.measure,
                "form": "orthogonal", "removal": self.removal.to_dict(), "fit": self.fit,
                "resize_masks": self.resize_masks, "batch_size": self.batch_size, "overlays": self.overlays,
                "conditionings": list(self.conditionings),
                "thresholds": {"low": float(THRESHOLDS[0]), "high": float(THRESHOLDS[-1]), "count": len(THRESHOLDS)}}


def conditioning_prompts(item: Mapping, config: LocalizeConfig) -> list[str]:
    """The item's conditioning prompts in pass order (see the module docstring)."""
    prompt, positions = item["prompt"], range(item["start"], item["start"] + item["length"])
    rest = without_words(prompt, positions, **config.removal.arguments())
    if not config.with_unique:
        return ["", rest, prompt]
    words = prompt.split()
    alone = " ".join(split_punctuation(words[p])[1] for p in positions)
    return ["", alone, rest, prompt]


def word_tokens(tokenizer, item: Mapping) -> list[int]:
    """Token positions (in the encoded prompt, 0 = the start token) of the item's word(s)."""
    spans = tokenizer.word_spans(item["prompt"])
    chosen = spans[item["start"]:item["start"] + item["length"]]
    return [t for span in chosen for t in range(span.first_token, span.first_token + span.n_tokens)]


def overlay_items(items: Sequence[Mapping], count: int) -> tuple[int, ...]:
    """Up to ``count`` items for overlays.png: round-robin over word kinds (then object counts),
    in item order, so every kind shows."""
    groups: dict = {}
    for item in items:
        groups.setdefault((str(item.get("kind")), str(item.get("objects"))), []).append(item["index"])
    chosen, queues = [], [list(g) for g in groups.values()]
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    return tuple(sorted(chosen))


# ---------------------------------------------------------------------------------------------
# The plan and one batch


class LocalizePlan(StudyPlan):
    """The localization study's items in fixed batches (all of one shape: S conditionings of 77
    tokens and the model's latent); any sweep runner executes and resumes it."""

    study = "localize"
    format = 1

    def __init__(self, items: Sequence[dict], config: LocalizeConfig, model: Mapping, *, source: str,
                 segmentations: Mapping[int, tuple] | None = None):
        super().__init__(items, config, model, batch_size=config.batch_size, shape_of=_one_shape, source=source)
        self.loader = ItemLoader(segmentations, resize_masks=config.resize_masks)
        self.overlays = overlay_items(self.items, config.overlays)

    def prompts(self, item: Mapping) -> list[str]:
        return conditioning_prompts(item, self.config)

    def check(self, tokenizer) -> None:
        super().check(tokenizer)
        for item in self.items:
            try:
                word_tokens(tokenizer, item)
            except PromptError as error:
                raise PromptError(f"{where(item)}: {error}") from None

    def compute(self, pipeline: Pipeline, batch, *, devices: Sequence | None = None) -> tuple[pa.Table, dict]:
        started = time.perf_counter()
        config = self.config
        items, n = self.batch_items(batch, config.batch_size)
        views = [model_view(pipeline, *self.loader.load(item), config.fit) for item in items[:n]]
        views += [views[-1]] * (len(items) - n)
        latents = pipeline.encode_pixels(jnp.concatenate([v.pixels for v in views]))
        prompts = [conditioning_prompts(item, config) for item in items]
        conds = pipeline.encode_prompt([p for group in prompts for p in group])
        # leaves (B, S, ...): an array, or a pytree (SDXL)
        conds = jax.tree.map(lambda a: a.reshape((len(items), len(prompts[0])) + a.shape[1:]), conds)
        base = config.estimator.prng_key()
        keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(np.asarray([it["index"] for it in items], np.uint32))
        fused = FusedPass.from_config(pipeline.denoiser, config.estimator, reference=0, pairs=config.pairs,
                                      devices=list(jax.local_devices() if devices is None else devices),
                                      collect_aux=config.captures_attention)
        try:
            res = fused(latents, conds, key=keys, conds_per_image=True)
        except NonFiniteError as error:  # its image index counts within the batch: name the items
            raise NonFiniteError(f"batch {batch.index} (items {list(batch.jobs)}, in that order): {error}") from None
        maps, values = method_maps(res, items, pipeline.tokenizer, config)
        timings = {"seconds": time.perf_counter() - started, "compile_s": res.timings.get("compile_s", 0.0)}
        rows = self._rows(batch, items[:n], views, prompts, maps, values, pipeline, timings)
        return rows, timings

    def _rows(self, batch, items, views, prompts, maps, values, pipeline, timings) -> pa.Table:
        rows = []
        for i, item in enumerate(items):
            view = views[i]
            frame_pixels = int(view.mask.size)
            for method in self.config.methods:
                latent_map = maps[method][i]
                upsampled = upsample_bilinear(latent_map, view.mask.shape)
                curve = iou_curve(normalise_min_max(upsampled), view.mask, THRESHOLDS)
                fixed = upsampled > upsampled.mean() + MEAN_STD * upsampled.std()
                keep_map = item["index"] in self.overlays
                rows.append({
                    "item": item["index"], "method": method, "batch": batch.index, "source": item["source"],
                    "line": item.get("line"), "image": item["image"], "prompt": item["prompt"], "word": item["word"],
                    "kind": item.get("kind"), "objects": item.get("objects"),
                    "extra": json.dumps(item.get("extra") or {}, sort_keys=True, default=str),
                    "conditionings": prompts[i], "tokens": values["tokens"][i], "frame": list(view.box),
                    "mask_pixels": int(view.mask.sum()), "frame_pixels": frame_pixels,
                    "ious": curve.tolist(), "iou_mean_std": _iou(fixed, view.mask),
                    "whole_image_iou": float(view.mask.sum() / frame_pixels) if view.mask.any() else float("nan"),
                    "mi": values["mi"][i], "mi_stderr": values["mi_stderr"][i],
                    "cmi": values["cmi"][i], "cmi_stderr": values["cmi_stderr"][i],
                    "unique": values.get("unique", [None] * len(items))[i],
                    "unique_stderr": values.get("unique_stderr", [None] * len(items))[i],
                    "measure": self.config.measure if method == "unique" else None,
                    "map": np.asarray(latent_map, np.float32).ravel().tolist() if keep_map else None,
                    "map_height": int(latent_map.shape[0]), "map_width": int(latent_map.shape[1]),
                    "n_samples": self.config.estimator.n_samples, "model": str(pipeline.name),
                    "model_fingerprint": pipeline.fingerprint, "fingerprint": self.fingerprint,
                    "batch_seconds": timings["seconds"], "batch_compile_seconds": timings["compile_s"],
                })
        return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


def _one_shape(item: Mapping) -> int:
    return 0  # every item: S conditionings of 77 tokens, the model's latent shape


def _iou(predicted: np.ndarray, mask: np.ndarray) -> float:
    union = np.sum(predicted | mask)
    return float(np.sum(predicted & mask) / union) if mask.any() else float("nan")


_F64, _I64, _STR = pa.float64(), pa.int64(), pa.string()
ROW_SCHEMA = pa.schema([
    ("item", _I64), ("method", _STR), ("batch", _I64), ("source", _STR), ("line", _I64), ("image", _STR),
    ("prompt", _STR), ("word", _STR), ("kind", _STR), ("objects", _I64), ("extra", _STR),
    ("conditionings", pa.list_(_STR)), ("tokens", pa.list_(_I64)), ("frame", pa.list_(_I64)),
    ("mask_pixels", _I64), ("frame_pixels", _I64), ("ious", pa.list_(_F64)), ("iou_mean_std", _F64),
    ("whole_image_iou", _F64), ("mi", _F64), ("mi_stderr", _F64), ("cmi", _F64), ("cmi_stderr", _F64),
    ("unique", _F64), ("unique_stderr", _F64), ("measure", _STR), ("map", pa.list_(pa.float32())),
    ("map_height", _I64), ("map_width", _I64), ("n_samples", _I64), ("model", _STR), ("model_fingerprint", _STR),
    ("fingerprint", _STR), ("batch_seconds", _F64), ("batch_compile_seconds", _F64),  # the item's batch, whole
])


@dataclasses.dataclass(frozen=True)
class ModelView:
    """An item as the model sees it: its pixels, and the mask in the same frame."""

    pixels: jax.Array  # (1, 3, H, W) in [-1, 1] at the model's image size
    mask: np.ndarray  # (h, w) bool: the object's mask over the part of the image the model sees
    box: tuple[int, int, int, int]  # (top, left, height, width) of that part in the image


def model_view(pipeline: Pipeline, image: np.ndarray, mask: np.ndarray, fit: str) -> ModelView:
    """``fit="squash"``: the whole image resized to the model's size (aspect ratio not kept, every
    object stays in view; Info-Decomp resized COCO images to 512x512 so). ``"crop"``: the centre
    crop ``Pipeline.preprocess_images`` takes; the mask is cropped with the same box."""
    height, width = image.shape[:2]
    if fit == "crop":
        box = center_crop_box(height, width, pipeline.image_size)
        pixels = pipeline.preprocess_images(image)
    else:
        box = (0, 0, height, width)
        scaled = np.asarray(image, np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)
        if (height, width) != pipeline.image_size:
            scaled = jax.image.resize(scaled, pipeline.image_size + (3,), method="linear", antialias=True)
        pixels = pipeline.preprocess_images(np.asarray(scaled))
    top, left, h, w = box
    return ModelView(pixels, np.asarray(mask[top:top + h, left:left + w], bool), box)


def method_maps(res, items: Sequence[Mapping], tokenizer, config: LocalizeConfig) -> tuple[dict, dict]:
    """Each method's latent map per item, (B, h, w), and the image-level values per item."""
    last = len(config.conditionings) - 1  # the full prompt
    cmi = res.pair_maps("orthogonal")[:, 0]
    values = {"cmi": res.pair_mi("orthogonal")[:, 0].tolist(), "cmi_stderr": res.pair_stderr("orthogonal")[:, 0].tolist(),
              "mi": res.mi_orthogonal[:, last].tolist(), "mi_stderr": res.stderr_orthogonal[:, last].tolist()}
    tokens = [word_tokens(tokenizer, item) for item in items]
    values["tokens"] = tokens
    maps = {"cmi": cmi}
    if config.captures_attention:
        prompt_maps = np.asarray(res.aux)[:, last]  # (B, 77, h, w): the full prompt's attention
        attention = np.stack([prompt_maps[i, t].sum(axis=0) for i, t in enumerate(tokens)])
        maps["attention"] = attention
        maps["cmi_x_attention"] = normalise_min_max(cmi) * normalise_min_max(attention)
    if config.with_unique:
        decomposition = decompose(res, 2, measure=config.measure, form="orthogonal", level="sum")
        maps["unique"] = decomposition.atom_maps["{1}"]
        values["unique"] = decomposition.atoms["{1}"].tolist()
        values["unique_stderr"] = decomposition.atoms_stderr["{1}"].tolist()
    return {m: maps[m] for m in config.methods}, values


# ---------------------------------------------------------------------------------------------
# The summary


@dataclasses.dataclass(frozen=True)
class LocalizationSummary:
    """What ``summary.json`` says, the items table and the overlay panels."""

    summary: dict
    items: pa.Table  # one row per item x method, with the chosen thresholds' IoU
    panels: list  # per overlay item: dict(image, mask, title, maps {method: (map, binary, iou)})


def summarise(plan: LocalizePlan, rows: pa.Table, *, calibration_fraction: float = 0.25, seed: int = 0,
              throughput: Mapping | None = None) -> LocalizationSummary:
    """mIoU per method (and per word kind and object count, when items carry them) from the
    study's rows: the threshold tuned on all items (the papers' practice) and the threshold chosen
    on a seeded calibration split, reported on the other items."""
    if not 0.0 < calibration_fraction < 1.0:
        raise ConfigError(f"--calibration-fraction must be in (0, 1), got {calibration_fraction}")
    config = plan.config
    n_items = plan.n_jobs
    if n_items < 2:
        raise ConfigError("a held-out threshold needs at least 2 items (one to calibrate on, one to report)")
    order = np.random.default_rng(seed).permutation(n_items)
    n_calibration = min(max(1, int(round(calibration_fraction * n_items))), n_items - 1)
    calibration = np.zeros(n_items, bool)
    calibration[order[:n_calibration]] = True

    columns = rows.to_pydict()
    methods = list(config.methods)
    by_method = {m: [i for i, name in enumerate(columns["method"]) if name == m] for m in methods}
    first = by_method[methods[0]]
    item_ids = np.asarray([columns["item"][i] for i in first])
    if not np.array_equal(item_ids, np.arange(n_items)):
        raise ConfigError("the study's rows do not cover every item once per method")
    valid = np.asarray([columns["mask_pixels"][i] > 0 for i in first])
    labels = {key: [columns[key][i] for i in first] for key in ("kind", "objects")}

    chosen = {}
    methods_summary = {}
    for method in methods:
        curves = np.asarray([columns["ious"][i] for i in by_method[method]], np.float64)  # (I, T)
        fixed = np.asarray([columns["iou_mean_std"][i] for i in by_method[method]], np.float64)
        tuned = int(np.argmax(np.nanmean(curves[valid], axis=0)))
        held = int(np.argmax(np.nanmean(curves[valid & calibration], axis=0))) if (valid & calibration).any() else tuned
        chosen[method] = (held, tuned, curves)
        evaluation = valid & ~calibration
        methods_summary[method] = _scores(curves, fixed, held, tuned, evaluation, valid)
    summary = {
        "methods": methods_summary,
        "baselines": {"whole_image": _whole_image(columns, first, valid, calibration)},
        "n_items": n_items,
        "n_calibration": int(calibration.sum()),
        "n_evaluation": int((~calibration).sum()),
        "excluded": {"empty_mask_in_frame": int((~valid).sum())},
    }
    for key, name in (("kind", "kinds"), ("objects", "objects")):
        groups = sorted({v for v in labels[key] if v is not None}, key=str)
        if groups:
            summary[name] = {str(g): {m: _scores(c[2], np.asarray([columns["iou_mean_std"][i] for i in by_method[m]]),
                                                  c[0], c[1], valid & ~calibration & (np.asarray(labels[key]) == g),
                                                  valid & (np.asarray(labels[key]) == g))
                                      for m, c in chosen.items()} for g in groups}
    summary["binarisation"] = {
        "maps": "each map bilinearly upsampled from the latent grid to the mask's resolution in the model's frame, "
                "then min-max normalised to [0, 1] over its own pixels; pixels above the threshold are the object",
        "thresholds": f"{len(THRESHOLDS)} values evenly spaced in [{THRESHOLDS[0]:g}, {THRESHOLDS[-1]:g}] of the "
                      "normalised map",
        "miou": f"threshold chosen on a seeded calibration split ({n_calibration} of {n_items} items, "
                f"--calibration-fraction {calibration_fraction:g}, --seed {seed}), mIoU reported on the other items",
        "miou_tuned": "threshold tuned on the evaluation set itself (every item), as the papers report it "
                      "(Info-Decomp: best of 50 values in [0.1, 0.5]); optimistic",
        "miou_mean_std": "a fixed rule, no tuning: pixels above mean + 1 std of the upsampled map, every item",
        "grid_edge": "threshold(_tuned)_at_grid_edge: the chosen threshold is 0.1 or 0.5, the grid's end; the best "
                     "threshold for that method may lie outside the grid (its mIoU is then a lower bound)",
    }
    summary["conditionings"] = {
        "order": list(config.conditionings),
        "meaning": {"empty": '""', "word": "the word alone", "rest": "the prompt without the word",
                    "prompt": "the full prompt"},
        "cmi": "orthogonal gap of (prompt, rest): i(x; word | rest of the prompt)",
        "attention": "cross-attention on the word's tokens under the full prompt, averaged over the sampled log-SNRs",
        "unique": f"PID atom {{1}} of (word, rest) with context \"\" under measure {config.measure}",
    }
    summary["config"] = {**config.to_dict(), "calibration_fraction": calibration_fraction, "seed": seed,
                         "source": plan.manifest["jobs"]["source"]}
    summary["throughput"] = {**study_throughput(columns, first, config.batch_size),
                             "this_run": dict(throughput) if throughput else None}
    items = _items_table(rows, methods, chosen, calibration)
    panels = _panels(plan, columns, by_method, chosen)
    return LocalizationSummary(summary, items, panels)


def _scores(curves, fixed, held, tuned, evaluation, every) -> dict:
    miou, miou_se = mean_and_stderr(curves[evaluation, held])
    tuned_miou, tuned_se = mean_and_stderr(curves[every, tuned])
    fixed_miou, fixed_se = mean_and_stderr(np.asarray(fixed, np.float64)[every])
    edge = (0, len(THRESHOLDS) - 1)  # a threshold at the grid's end: the best one may lie outside [0.1, 0.5]
    return {"miou": miou, "miou_stderr": miou_se, "threshold": float(THRESHOLDS[held]), "n": int(evaluation.sum()),
            "miou_tuned": tuned_miou, "miou_tuned_stderr": tuned_se, "threshold_tuned": float(THRESHOLDS[tuned]),
            "n_tuned": int(every.sum()), "miou_mean_std": fixed_miou, "miou_mean_std_stderr": fixed_se,
            "threshold_at_grid_edge": held in edge, "threshold_tuned_at_grid_edge": tuned in edge}


def _whole_image(columns, first, valid, calibration) -> dict:
    whole = np.asarray([columns["whole_image_iou"][i] for i in first], np.float64)
    miou, se = mean_and_stderr(whole[valid & ~calibration])
    tuned, tuned_se = mean_and_stderr(whole[valid])
    return {"miou": miou, "miou_stderr": se, "miou_tuned": tuned, "miou_tuned_stderr": tuned_se,
            "note": "the whole frame predicted as the object (Info-Decomp's 'Whole Image Mask' row)"}


def _items_table(rows: pa.Table, methods, chosen, calibration) -> pa.Table:
    items = rows.column("item").to_numpy()
    method_of = rows.column("method").to_pylist()
    iou, threshold, iou_tuned, threshold_tuned = [], [], [], []
    for item, method in zip(items, method_of):
        held, tuned, curves = chosen[method]
        curve = curves[item]  # rows of a method are in item order
        iou.append(float(curve[held]))
        threshold.append(float(THRESHOLDS[held]))
        iou_tuned.append(float(curve[tuned]))
        threshold_tuned.append(float(THRESHOLDS[tuned]))
    split = ["calibration" if calibration[i] else "evaluation" for i in items]
    out = rows.append_column("split", pa.array(split, pa.string()))
    for name, values in (("iou", iou), ("threshold", threshold), ("iou_tuned", iou_tuned),
                         ("threshold_tuned", threshold_tuned)):
        out = out.append_column(name, pa.array(values, pa.float64()))
    return out


def _panels(plan: LocalizePlan, columns, by_method, chosen) -> list[dict]:
    panels = []
    for index in plan.overlays:
        item = plan.items[index]
        image, mask = plan.loader.load(item)
        row = by_method[plan.config.methods[0]][index]
        top, left, h, w = columns["frame"][row]
        image, mask = image[top:top + h, left:left + w], mask[top:top + h, left:left + w]
        shown = {}
        for method in plan.config.methods:
            r = by_method[method][index]
            latent = np.asarray(columns["map"][r], np.float64).reshape(columns["map_height"][r], columns["map_width"][r])
            normalised = normalise_min_max(upsample_bilinear(latent, mask.shape))
            held = chosen[method][0]
            shown[method] = (normalised, normalised > THRESHOLDS[held], float(chosen[method][2][index, held]))
        kind = f" [{item['kind']}]" if item.get("kind") else ""
        panels.append({"image": image, "mask": mask, "title": f"{item['prompt']}\n→ {item['word']}{kind}",
                       "maps": shown})
    return panels


def study_throughput(columns: Mapping, first: Sequence[int], batch_size: int) -> dict:
    """Items per minute and images per second (one image per item) over every batch of the study,
    from the wall time each batch took (stored with its rows: right across resumes and shards)."""
    no_time = [None] * (max(first) + 1)  # parts written before batch timings were stored
    batches = {columns["batch"][i]: (columns.get("batch_seconds", no_time)[i],
                                     columns.get("batch_compile_seconds", no_time)[i]) for i in first}
    seconds = sum(s for s, _ in batches.values() if s is not None)
    compile_seconds = sum(c for _, c in batches.values() if c is not None)
    items = len(first)
    rate = lambda t: 60.0 * items / t if t > 0 else float("nan")  # noqa: E731
    return {"items": items, "batches": len(batches), "batch_size": batch_size, "seconds": seconds,
            "compile_seconds": compile_seconds, "items_per_minute": rate(seconds),
            "images_per_second": rate(seconds) / 60.0, "items_per_minute_without_compiling": rate(seconds - compile_seconds),
            "note": "wall time of each batch (images, conditionings, the fused pass, maps and IoU), compiling included"}


def localize_throughput(run: StudyRun) -> dict:
    """The study's throughput record, with images per second (one image per item)."""
    record = throughput(run)
    return {**record, "images_per_second": record["items_per_minute"] / 60.0}


def save_localization(out, plan: LocalizePlan, result: LocalizationSummary) -> list:
    """summary.json, items.parquet and overlays.png into ``out`` (each written atomically)."""
    config = plan.config
    suptitle = (f"localization: {plan.n_jobs} items, {config.estimator.n_samples} log-SNR samples; maps min-max "
                f"normalised, binarised at the threshold chosen on the calibration split (red: the object's outline)")
    figure = localization_overlays(result.panels, config.methods, suptitle)
    return save_study(out, plan.study, result.summary, tables={"items": result.items}, figures={"overlays": figure},
                      model=plan.model)


def localize(pipeline: Pipeline, plan: LocalizePlan, out, *, calibration_fraction: float = 0.25, seed: int = 0,
             progress: bool = False, devices: Sequence | None = None) -> LocalizationSummary | None:
    """Run (or resume) the study in this process and write its outputs; None while batches are
    missing (``--shard``)."""
    if not 0.0 < calibration_fraction < 1.0:  # before any work
        raise ConfigError(f"--calibration-fraction must be in (0, 1), got {calibration_fraction}")
    run = run_study(plan, out, pipeline=pipeline, progress=progress, devices=devices)
    if not run.complete:
        return None
    result = summarise(plan, run.rows, calibration_fraction=calibration_fraction, seed=seed, throughput=localize_throughput(run))
    save_localization(out, plan, result)
    return result
