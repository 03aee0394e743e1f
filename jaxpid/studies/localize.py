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
from jaxpid.errors import ConfigError, PromptError
from jaxpid.sd.pipeline import Pipeline, center_crop_box
from jaxpid.sd.prompts import WordRemoval, split_punctuation, without_words
from jaxpid.studies.base import StudyPlan, StudyRun, complete_study, where
from jaxpid.studies.localize_items import ItemLoader
from jaxpid.studies.localize_summary import THRESHOLDS, LocalizationSummary, localize_throughput, summarise
from jaxpid.sweeps.fused import PreparedBatch, fused_batch

METHODS = ("cmi", "attention", "cmi_x_attention", "unique")
UNIQUE_MEASURES = ("mmi", "ccs")  # measures whose unique atom of a word against the rest means "only this word"
FITS = ("squash", "crop")
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
                 segmentations: Mapping[int, tuple] | None = None, calibration_fraction: float = 0.25,
                 split_seed: int = 0):
        super().__init__(items, config, model, batch_size=config.batch_size, shape_of=_one_shape, source=source)
        self.summary_options = check_summary_options(calibration_fraction, split_seed)
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

    def prepare(self, pipeline: Pipeline, batch) -> PreparedBatch:
        """The batch's images in the model's frame (with their masks) and each item's conditionings."""
        config = self.config
        items, n = self.batch_items(batch, config.batch_size)
        views = [model_view(pipeline, *self.loader.load(item), config.fit) for item in items[:n]]
        views += [views[-1]] * (len(items) - n)
        latents = pipeline.encode_pixels(jnp.concatenate([v.pixels for v in views]))
        return PreparedBatch(latents, [conditioning_prompts(item, config) for item in items],
                             [it["index"] for it in items], n, f"batch {batch.index} (items {list(batch.jobs)})",
                             pairs=tuple(config.pairs), collect_aux=config.captures_attention,
                             context={"items": items, "views": views})

    def compute(self, pipeline: Pipeline, batch, *, devices: Sequence | None = None) -> tuple[pa.Table, dict]:
        # the fixed-N way, with the batch's wall time kept in its rows (the study's throughput
        # is summed from them: right across resumes and shards)
        started = time.perf_counter()
        prepared = self.prepare(pipeline, batch)
        res = fused_batch(pipeline, self.config.estimator, prepared, devices=devices)
        positions = list(range(prepared.n_real))
        timings = {"seconds": time.perf_counter() - started, "compile_s": res.timings.get("compile_s", 0.0)}
        return self._rows(batch, prepared, res.select(positions), positions, pipeline, timings), timings

    def rows(self, pipeline: Pipeline, batch, prepared: PreparedBatch, res, positions: Sequence[int]) -> pa.Table:
        return self._rows(batch, prepared, res, positions, pipeline, None)

    def summarise(self, run: StudyRun, pipeline: Pipeline | None = None) -> LocalizationSummary:
        """mIoU per method: the threshold chosen on the calibration split and tuned on every item."""
        return summarise(self, run.rows, calibration_fraction=self.summary_options["calibration_fraction"],
                         seed=self.summary_options["split_seed"], throughput=localize_throughput(run))

    def _rows(self, batch, prepared: PreparedBatch, res, positions, pipeline, timings: dict | None) -> pa.Table:
        items, views = ([prepared.context[key][p] for p in positions] for key in ("items", "views"))
        prompts = [prepared.prompts[p] for p in positions]
        maps, values = method_maps(res, items, pipeline.tokenizer, self.config)
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
                    "n_samples": res.config["n_samples"], "model": str(pipeline.name),
                    "model_fingerprint": pipeline.fingerprint, "fingerprint": self.fingerprint,
                    "batch_seconds": timings and timings["seconds"],
                    "batch_compile_seconds": timings and timings["compile_s"],
                })
        return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


def check_summary_options(calibration_fraction: float, split_seed: int) -> dict:
    """The summary's options, checked before any work: the share of items the held-out threshold
    is chosen on, and the seed of that split."""
    if not 0.0 < calibration_fraction < 1.0:
        raise ConfigError(f"--calibration-fraction must be in (0, 1), got {calibration_fraction}")
    return {"calibration_fraction": float(calibration_fraction), "split_seed": check_int("--split-seed", split_seed, 0)}


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


def localize(pipeline: Pipeline, plan: LocalizePlan, out, *, calibration_fraction: float | None = None,
             seed: int | None = None, progress: bool = False, devices: Sequence | None = None
             ) -> LocalizationSummary | None:
    """Run (or resume) the study in this process and write its outputs; None while batches are
    missing (``--shard``). ``calibration_fraction`` / ``seed`` (of the split) override the plan's."""
    if calibration_fraction is not None or seed is not None:
        plan.summary_options = check_summary_options(
            plan.summary_options["calibration_fraction"] if calibration_fraction is None else calibration_fraction,
            plan.summary_options["split_seed"] if seed is None else seed)
    return complete_study(plan, out, pipeline=pipeline, progress=progress, devices=devices).summary
