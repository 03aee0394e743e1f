"""Sweep throughput and the bias study on the demo model: jobs per minute, and where the demo's
designed bias (uncoloured triangles are green 80 % of the time) lands in each measure's report.

The demo's shapes stand in for occupations and its colours for attribute words: every shape ×
colour × seed is one CPID job ("a {colour} {shape}", sources colour and shape, context "a"),
as in ``notebooks/bias_sweep.ipynb``. All measures come from one fused pass per batch.
Reported: jobs/min over the whole sweep (compilation included) and after the first batch, each
measure's top of the ranking, the designed cell's rank among all cells by bias (the report's
interaction) and its normalised value, and the cell means. Rows go to sweep.jsonl in the results
folder (``--results``; see ``jaxpid.bench.results.results_dir``).

    python -m jaxpid.bench.sweep --quick    # 48 jobs, N = 32, 10 DDIM steps: ~1 minute on 2 CPU cores
    python -m jaxpid.bench.sweep            # 96 jobs, N = 128, 25 DDIM steps, guidance 4: ~4 minutes
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import uuid
from pathlib import Path

import jaxpid
from jaxpid.bench import common
from jaxpid.demo import dataset
from jaxpid.errors import JaxpidError
from jaxpid.sweeps import SweepConfig, bias_jobs, bias_report, run_sweep
from jaxpid.sweeps.config import DEFAULT_MEASURES

COLOURS = ("red", "green", "blue", "yellow")  # "an orange" is the demo's fruit
MEASURES = DEFAULT_MEASURES  # what `jaxpid sweep` computes by default


def bias_sweep(pipeline, out: Path, *, seeds: int, config: SweepConfig, log=print) -> dict:
    """Run the demo bias sweep into ``out`` and summarise throughput and every measure's report."""
    jobs = bias_jobs(occupations=dataset.SHAPES, attributes={"colour": list(COLOURS)},
                     templates=["{article} {attribute} {occupation}"], seeds=range(seeds))
    summary = run_sweep(pipeline, jobs, out, config, analysis="cpid", progress=True)
    first = summary.first_batch_seconds or 0.0  # None when every batch was already done (--out resumed)
    designed = (dataset.BIASED_SHAPE, dataset.BIASED_COLOUR)
    reports = {}
    for measure in config.measures:
        report = bias_report(out, measure=measure)
        # the designed cell's place among all (occupation, attribute) cells by bias (interaction)
        ranked = [(c["row"], c["column"]) for c in sorted(report.cells, key=lambda c: -c["interaction"])]
        cell = next(c for c in report.cells if (c["row"], c["column"]) == designed)
        reports[measure] = {
            "top": [{"occupation": r["row"], "attribute": r["top"], "bias": r["bias"], "normalised": r["top_value"]}
                    for r in report.ranking[:3]],
            "designed_rank": ranked.index(designed) + 1,
            "designed_normalised": cell["normalised"],
            "designed_mean": cell["mean"],
            "designed_stderr": cell["stderr"],
            "cells": {f"{c['row']}/{c['column']}": [round(c["mean"], 4), round(c["stderr"], 4)] for c in report.cells},
        }
        log(f"\n{report.label}:")
        log(report.text(3))
        log(f"  designed bias {designed[0]} -> {designed[1]}: rank {reports[measure]['designed_rank']} of "
            f"{len(ranked)} cells by bias, "
            f"normalised {cell['normalised']:.2f}, mean {cell['mean']:.3f} ± {cell['stderr']:.3f} nats")
    return {
        "jobs": summary.jobs_computed,
        "seconds": summary.seconds,
        "first_batch_s": first,
        "compile_s": summary.compile_seconds,
        "jobs_per_min": summary.jobs_per_minute,
        "steady_jobs_per_min": summary.steady_jobs_per_minute,
        "designed": list(designed),
        "reports": reports,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 seeds, N = 32, 10 DDIM steps, guidance 7.5")
    parser.add_argument("--seeds", type=int, default=None, help="images per (shape, colour) cell (default 8)")
    parser.add_argument("--samples", type=int, default=None, help="log-SNR samples per image (default 128)")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps of the images (default 25)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale (default 4)")
    parser.add_argument("--batch-size", type=int, default=None, help="jobs per fused pass (default 12 quick, 24)")
    parser.add_argument("--out", type=Path, default=None, help="sweep directory (default: a temporary one)")
    common.add_results_option(parser)
    args = parser.parse_args(argv)
    jaxpid.use_cpu_cores()  # before JAX starts: one CPU device per core, as jaxpid runs (jaxpid.devices)
    try:
        return run(args)
    except JaxpidError as error:  # e.g. the demo model missing from this installation
        print(f"jaxpid.bench.sweep: error: {error}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    # 4 seeds: with 2 the retrained demo's ccs ranking is decided by noise (notebooks/bias_sweep.ipynb)
    quick = {"seeds": 4, "samples": 32, "steps": 10, "guidance": 7.5, "batch_size": 12}
    full = {"seeds": 8, "samples": 128, "steps": 25, "guidance": 4.0, "batch_size": 24}
    settings = {k: getattr(args, k) if getattr(args, k) is not None else v
                for k, v in (quick if args.quick else full).items()}
    print(common.load_note())
    config = SweepConfig.from_options(n_samples=settings["samples"], steps=settings["steps"],
                                      guidance_scale=settings["guidance"], batch_size=settings["batch_size"],
                                      measures=MEASURES)
    pipeline = jaxpid.load_pipeline("demo")
    out = args.out or Path(tempfile.gettempdir()) / f"jaxpid-bench-sweep-{uuid.uuid4().hex[:12]}"
    result = bias_sweep(pipeline, out, seeds=settings["seeds"], config=config)
    steady = result["steady_jobs_per_min"]
    print(f"\n{result['jobs']} jobs in {result['seconds']:.0f} s: {result['jobs_per_min']:.1f} jobs/min including "
          f"compilation (first batch {result['first_batch_s']:.0f} s)"
          + (f", {steady:.1f} jobs/min after it" if steady else "")
          + f"; {result['compile_s']:.0f} s compiling fused passes")
    row = {"benchmark": "sweep", "model": "demo", "quick": args.quick, **settings, **result,
           "environment": common.environment()}
    print(f"appended 1 row to {common.save_rows('sweep', [row], args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
