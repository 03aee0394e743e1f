"""``jaxpid study validate``: the measures' validation table on the demo's designed phenomena and
on Gaussian mixtures with exact atoms."""

from __future__ import annotations

import argparse

from jaxpid.cli.options import model_spec
from jaxpid.cli.studies import execute, load_for, study_estimator, writes_outputs
from jaxpid.core.known_answers import WORLDS, form_verdicts, known_answer_table
from jaxpid.io.studies import save_study
from jaxpid.studies.validate import (
    PHENOMENA,
    WORLD,
    ValidateConfig,
    ValidatePlan,
    demo_table,
    ground_truth_table,
    known_answers_markdown,
    markdown,
)

DEFAULT_SAMPLES = 64


def validate_command(args: argparse.Namespace) -> int:
    estimator = study_estimator(args, DEFAULT_SAMPLES)
    config = ValidateConfig(estimator=estimator, images=args.images)
    pipeline = load_for(args)
    identity = pipeline.identity() if pipeline is not None else model_spec(args).identity()
    run = execute(args, ValidatePlan(config, identity), pipeline)
    if not run.complete or not writes_outputs(args):
        return 0
    demo = demo_table(run.rows)
    print(f"Gaussian-mixture cases ({args.gmm_images} images x {args.gmm_samples} samples; orthogonal truth at "
          f"{args.truth_samples})...")
    truth = ground_truth_table(n_images=args.gmm_images, n_samples=args.gmm_samples, truth_samples=args.truth_samples,
                               seed=estimator.key)
    print(f"known answers, one fixed prompt at a time ({args.known_images} images x {args.known_samples} samples "
          "per prompt)...")
    known = known_answer_table(WORLDS, seed=estimator.key, n_images=args.known_images, n_samples=args.known_samples,
                               sampler=estimator.sampler)
    verdicts = form_verdicts(known)
    table = markdown(demo, truth) + "\n\n" + known_answers_markdown(known)
    summary = {
        "phenomena": [{"name": p.name, "designed": p.designed, "statistic": p.statistic, "cases": list(p.cases),
                       "criterion": "above 0 by 2 s.e." if p.passes.__name__ == "_above" else "below 0 by 2 s.e."}
                      for p in PHENOMENA],
        "demo": demo,
        "gaussian_mixtures": truth,
        "known_answers": {"rows": known, "forms": verdicts,
                          "criterion": "mean over images of estimate - exact within 3.5 s.e. (+0.02 nats) per "
                                       "information; forms' Monte-Carlo s.e. at most 1.25 x the standard form's"},
        # the estimated cells (the world's exact rows are the reference, not a measurement)
        "passed": {m: sum(c["passed"] for c in demo + truth if c["measure"] == m and c.get("form") != WORLD)
                   for m in config.measures},
        "cells": {m: sum(1 for c in demo + truth if c["measure"] == m and c.get("form") != WORLD)
                  for m in config.measures},
        "config": {**config.to_dict(), "gaussian_mixtures": {"images": args.gmm_images, "samples": args.gmm_samples,
                                                             "truth_samples": args.truth_samples},
                   "known_answers": {"images": args.known_images, "samples": args.known_samples}},
        "items_per_minute": run.items_per_minute,
    }
    paths = save_study(args.out, "validate", summary, tables={"items": run.rows}, texts={"table.md": table + "\n"},
                       model=identity)
    print(table)
    print("\ncells passed per measure: " + ", ".join(f"{m} {summary['passed'][m]}/{summary['cells'][m]}"
                                                    for m in config.measures))
    print("known answers, prompts whose every information is within 3.5 s.e.: " + ", ".join(
        f"{f} {v['prompts_passed']}/{v['prompts']}" for f, v in verdicts.items()))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


__all__ = ["validate_command"]
