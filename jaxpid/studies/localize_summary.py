"""The localization study's summary: mIoU per method with the threshold chosen on a seeded
calibration split (and tuned on every item, the papers' practice), per word kind and object
count, the whole-image baseline, the items table and the overlay panels
(docs/studies.md#localization).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from jaxpid.analysis.maps import normalise_min_max, upsample_bilinear
from jaxpid.errors import ConfigError
from jaxpid.io.plots import localization_overlays
from jaxpid.studies.base import StudyRun, StudySummary, throughput
from jaxpid.studies.stats import mean_and_stderr

if TYPE_CHECKING:  # the plan imports this module for its summary
    from jaxpid.studies.localize import LocalizePlan

THRESHOLDS = np.linspace(0.1, 0.5, 50)  # of the min-max normalised map (Info-Decomp's grid)


@dataclasses.dataclass(frozen=True, eq=False)
class LocalizationSummary(StudySummary):
    """The localization study's summary: ``summary.json``'s record, the items table (one row per
    item x method, with the chosen thresholds' IoU), ``overlays.png`` and its panels."""

    panels: list = dataclasses.field(default_factory=list)  # per overlay item: dict(image, mask, title, maps)

    @property
    def summary(self) -> Mapping:
        """summary.json's record (as before the study contract: ``result.summary["methods"]``)."""
        return self.record

    @property
    def items(self) -> pa.Table:
        return self.tables["items"]

    def miou(self, method: str) -> tuple[float, float]:
        """(mIoU, s.e.) of a method at the threshold chosen on the calibration split."""
        s = self.record["methods"][method]
        return s["miou"], s["miou_stderr"]

    def text(self) -> str:
        """mIoU per method (held-out and tuned threshold), then per kind."""
        summary = self.record

        def cell(value, stderr):
            return "   n/a      " if not math.isfinite(value) else f"{value:.3f} ± {stderr:.3f}" if math.isfinite(stderr) \
                else f"{value:.3f}        "

        n_eval, n_all = summary["n_evaluation"], summary["n_items"]
        lines = [f"\nmIoU (fraction; ± s.e.): held-out = threshold chosen on {summary['n_calibration']} calibration items, "
                 f"reported on {n_eval}; tuned = threshold tuned on all {n_all} items (the papers' practice, optimistic); "
                 "mean+1std = fixed rule",
                 f"{'method':<16} {'held-out':>14} {'thr':>5}   {'tuned':>14} {'thr':>5}   {'mean+1std':>14}"]
        for method, s in summary["methods"].items():
            lines.append(f"{method:<16} {cell(s['miou'], s['miou_stderr']):>14} {s['threshold']:5.2f}   "
                         f"{cell(s['miou_tuned'], s['miou_tuned_stderr']):>14} {s['threshold_tuned']:5.2f}   "
                         f"{cell(s['miou_mean_std'], s['miou_mean_std_stderr']):>14}")
        at_edge = [m for m, s in summary["methods"].items() if s["threshold_at_grid_edge"] or s["threshold_tuned_at_grid_edge"]]
        if at_edge:
            lines.append(f"(thresholds of {', '.join(at_edge)} at the end of the grid [0.1, 0.5]: the best one may lie "
                         "outside it)")
        whole = summary["baselines"]["whole_image"]
        lines.append(f"{'whole image':<16} {cell(whole['miou'], whole['miou_stderr']):>14} {'':>5}   "
                     f"{cell(whole['miou_tuned'], whole['miou_tuned_stderr']):>14}")
        for key, label in (("kinds", "word kind"), ("objects", "objects in the image")):
            for group, methods in summary.get(key, {}).items():
                lines.append(f"\n{label} = {group}:")
                for method, s in methods.items():
                    lines.append(f"  {method:<16} held-out {cell(s['miou'], s['miou_stderr'])} (n={s['n']})   "
                                 f"tuned {cell(s['miou_tuned'], s['miou_tuned_stderr'])} (n={s['n_tuned']})   "
                                 f"mean+1std {cell(s['miou_mean_std'], s['miou_mean_std_stderr'])}")
        excluded = summary["excluded"]["empty_mask_in_frame"]
        if excluded:
            lines.append(f"\n{excluded} item(s) left out: their object is not inside the model's frame (--fit crop)")
        rate = summary["throughput"]
        if rate["seconds"] > 0:
            lines.append(f"\n{rate['items_per_minute']:.1f} items/min ({rate['images_per_second']:.3f} images/s) over the "
                         f"study's {rate['items']} items, {rate['compile_seconds']:.1f} s of its {rate['seconds']:.1f} s "
                         f"compiling ({rate['items_per_minute_without_compiling']:.1f} items/min without)")
        return "\n".join(lines)


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
                f"--calibration-fraction {calibration_fraction:g}, --split-seed {seed}), mIoU reported on the other items",
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
    suptitle = (f"localization: {plan.n_jobs} items, {config.estimator.n_samples} log-SNR samples; maps min-max "
                f"normalised, binarised at the threshold chosen on the calibration split (red: the object's outline)")
    figure = localization_overlays(panels, config.methods, suptitle)
    return LocalizationSummary("localize", summary, tables={"items": items}, figures={"overlays": figure},
                               panels=panels)


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
