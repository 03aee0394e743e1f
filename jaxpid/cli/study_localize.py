"""``jaxpid study localize``: per-word maps vs cross-attention, mIoU against object masks."""

from __future__ import annotations

import argparse

from jaxpid.cli.options import given, model_spec, study_estimator
from jaxpid.cli.studies import execute, load_for
from jaxpid.errors import ConfigError
from jaxpid.sd.prompts import WordRemoval
from jaxpid.studies.localize import METHODS, LocalizeConfig, LocalizePlan
from jaxpid.studies.localize_items import coco_items, demo_items, manifest_items

def localize_config(args: argparse.Namespace) -> LocalizeConfig:
    """The study's configuration from the arguments (unset options keep LocalizeConfig's defaults)."""
    return LocalizeConfig(estimator=study_estimator(args), methods=tuple(args.methods or METHODS),
                          removal=WordRemoval(**given(mode=args.removal)), resize_masks=args.resize_masks,
                          **given(measure=args.measure, fit=args.fit, overlays=args.overlays, batch_size=args.batch_size))


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
        return demo_items(args.n, args.demo_seed), None, f"demo n {args.n} seed {args.demo_seed}"
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    items = manifest_items(args.manifest, resize_masks=args.resize_masks)
    return items[:args.limit], None, f"manifest {args.manifest}" + (f" limit {args.limit}" if args.limit else "")


def localize_command(args: argparse.Namespace) -> int:
    config = localize_config(args)
    items, segmentations, source = localization_items(args)  # every input checked before a model loads
    plan = LocalizePlan(items, config, model_spec(args).identity(), source=source, segmentations=segmentations,
                        calibration_fraction=args.calibration_fraction, split_seed=args.split_seed)
    print(f"localize: {plan.n_jobs} items ({source}), methods {', '.join(config.methods)}; "
          f"{len(config.conditionings)} conditionings x {config.estimator.n_samples} log-SNR samples per item, "
          f"{len(plan.batches)} batches of {config.batch_size}")
    execute(args, plan, load_for(args))
    return 0
