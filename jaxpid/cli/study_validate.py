"""``jaxpid study validate``: the measures' validation table on the demo's designed phenomena, on
Gaussian mixtures with exact atoms and on the known-answer worlds."""

from __future__ import annotations

import argparse

from jaxpid.cli.options import given, model_spec, study_estimator
from jaxpid.cli.studies import execute, load_for
from jaxpid.studies.validate import ValidateConfig, ValidatePlan


def validate_command(args: argparse.Namespace) -> int:
    config = ValidateConfig(estimator=study_estimator(args), **given(images=args.n_images))
    tables = {"gmm_images": args.gmm_images, "gmm_samples": args.gmm_samples, "truth_samples": args.truth_samples,
              "known_images": args.known_images, "known_samples": args.known_samples}
    pipeline = load_for(args)
    identity = pipeline.identity() if pipeline is not None else model_spec(args).identity()
    execute(args, ValidatePlan(config, identity, **tables), pipeline)
    return 0


__all__ = ["validate_command"]
