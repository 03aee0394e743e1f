"""``jaxpid study localize``: per-word maps vs cross-attention, mIoU against object masks."""

from __future__ import annotations

import argparse
import math

from jaxpid.cli.options import model_spec
from jaxpid.cli.studies import execute, load_for, study_estimator, writes_outputs
from jaxpid.errors import ConfigError
from jaxpid.sd.prompts import WordRemoval
from jaxpid.studies.localize import (
    METHODS,
    LocalizationSummary,
    LocalizeConfig,
    LocalizePlan,
    localize_throughput,
    save_localization,
    summarise,
)
from jaxpid.studies.localize_items import coco_items, demo_items, manifest_items

DEFAULT_BATCH = 8


def localize_config(args: argparse.Namespace) -> LocalizeConfig:
    estimator = study_estimator(args)
    return LocalizeConfig(estimator=estimator, methods=tuple(args.methods or METHODS), measure=args.measure,
                          removal=WordRemoval(args.removal), fit=args.fit, resize_masks=args.resize_masks,
                          batch_size=DEFAULT_BATCH if args.batch_size is None else args.batch_size,
                          overlays=args.overlays)


def localization_items(args: argparse.Namespace) -> tuple[list[dict], dict | None, str]:
    """(items, COCO segmentations or None, a description of the source) from the arguments."""
    coco_parts = (args.coco, args.captions, args.images)
    if args.coco is not None or args.captions is not None or args.images is not None:
        if args.manifest is not None:
            raise ConfigError("give a MANIFEST (or 'demo') or --coco/--captions/--images, not both")
        if any(part is None for part in coco_parts):
            raise ConfigError("the COCO path needs --coco INSTANCES_JSON, --captions CAPTIONS_JSON and --images DIR")
        items, segmentations = coco_items(*coco_parts, limit=args.limit, resize_masks=args.resize_masks)
        return items, segmentations, f"coco {args.coco} {args.captions} images {args.images} limit {args.limit}"
    if args.manifest is None:
        raise ConfigError("give a MANIFEST (JSONL), 'demo', or --coco/--captions/--images")
    if args.manifest == "demo":
        if args.limit is not None:
            raise ConfigError("--limit chooses manifest or COCO items; the demo set's size is --n")
        return demo_items(args.n, args.seed), None, f"demo n {args.n} seed {args.seed}"
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    items = manifest_items(args.manifest, resize_masks=args.resize_masks)
    return items[:args.limit], None, f"manifest {args.manifest}" + (f" limit {args.limit}" if args.limit else "")


def localize_command(args: argparse.Namespace) -> int:
    if not 0.0 < args.calibration_fraction < 1.0:
        raise ConfigError(f"--calibration-fraction must be in (0, 1), got {args.calibration_fraction}")
    config = localize_config(args)
    items, segmentations, source = localization_items(args)  # every input checked before a model loads
    plan = LocalizePlan(items, config, model_spec(args).identity(), source=source, segmentations=segmentations)
    print(f"localize: {plan.n_jobs} items ({source}), methods {', '.join(config.methods)}; "
          f"{len(config.conditionings)} conditionings x {config.estimator.n_samples} log-SNR samples per item, "
          f"{len(plan.batches)} batches of {config.batch_size}")
    run = execute(args, plan, load_for(args))
    if not run.complete or not writes_outputs(args):
        return 0
    result = summarise(plan, run.rows, calibration_fraction=args.calibration_fraction, seed=args.seed,
                       throughput=localize_throughput(run))
    paths = save_localization(args.out, plan, result)
    print(table(result))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def table(result: LocalizationSummary) -> str:
    """The summary as text: mIoU per method (held-out and tuned threshold), then per kind."""
    summary = result.summary

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
