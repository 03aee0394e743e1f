"""Sweep throughput and the bias study on the demo model: jobs per minute, and where the demo's
designed bias (uncoloured triangles are green 80 % of the time) lands in each measure's report.

The demo's shapes stand in for occupations and its colours for attribute words: every shape ×
colour × seed is one CPID job ("a {colour} {shape}", sources colour and shape, context "a"),
as in ``notebooks/bias_sweep.ipynb``. All measures come from one fused pass per batch.
Reported: jobs/min over the whole sweep (compilation included) and after the first batch, each
measure's top of the ranking, the designed cell's rank among all cells by bias (the report's
interaction) and its normalised value, and the cell means. Rows go to benchmarks/results/sweep.jsonl.

    python benchmarks/bench_sweep.py --quick    # 24 jobs, N = 32, 10 DDIM steps: ~1 minute on 2 CPU cores
    python benchmarks/bench_sweep.py            # 96 jobs, N = 128, 25 DDIM steps, guidance 4: ~4 minutes
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import jaxpid  # noqa: E402
from jaxpid.demo import dataset, demo_path  # noqa: E402
from jaxpid.report import bias_report  # noqa: E402
from jaxpid.sweep import SweepConfig, bias_jobs, run_sweep  # noqa: E402

COLOURS = ("red", "green", "blue", "yellow")  # "an orange" is the demo's fruit
MEASURES = ("mmi", "ppid", "ccs")


def bias_sweep(pipeline, out: Path, *, seeds: int, config: SweepConfig, log=print) -> dict:
    """Run the demo bias sweep into ``out`` and summarise throughput and every measure's report."""
    jobs = bias_jobs(occupations=dataset.SHAPES, attributes={"colour": list(COLOURS)},
                     templates=["{article} {attribute} {occupation}"], seeds=range(seeds))
    summary = run_sweep(pipeline, jobs, out, config, analysis="cpid", progress=True)
    steady_jobs = summary.jobs_computed - min(config.batch_size, summary.jobs_computed)
    first = summary.first_batch_seconds or 0.0  # None when every batch was already done (--out resumed)
    steady_s = summary.seconds - first
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
        "jobs_per_min": summary.jobs_per_minute,
        "steady_jobs_per_min": 60 * steady_jobs / steady_s if steady_jobs and steady_s > 0 else None,
        "designed": list(designed),
        "reports": reports,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 seeds, N = 32, 10 DDIM steps, guidance 7.5")
    parser.add_argument("--seeds", type=int, default=None, help="images per (shape, colour) cell (default 8)")
    parser.add_argument("--samples", type=int, default=None, help="log-SNR samples per image (default 128)")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps of the images (default 25)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale (default 4)")
    parser.add_argument("--batch-size", type=int, default=None, help="jobs per fused pass (default 12 quick, 24)")
    parser.add_argument("--out", type=Path, default=None, help="sweep directory (default: a temporary one)")
    parser.add_argument("--no-save", action="store_true", help="do not append the row to benchmarks/results")
    args = parser.parse_args(argv)
    quick = {"seeds": 2, "samples": 32, "steps": 10, "guidance": 7.5, "batch_size": 12}
    full = {"seeds": 8, "samples": 128, "steps": 25, "guidance": 4.0, "batch_size": 24}
    settings = {k: getattr(args, k) if getattr(args, k) is not None else v
                for k, v in (quick if args.quick else full).items()}
    print(common.load_note())
    config = SweepConfig(n_samples=settings["samples"], steps=settings["steps"], guidance_scale=settings["guidance"],
                         batch_size=settings["batch_size"], measures=MEASURES)
    pipeline = jaxpid.load_pipeline(demo_path())
    out = args.out or Path(tempfile.mkdtemp(prefix="jaxpid-bench-sweep-")) / "sweep"
    result = bias_sweep(pipeline, out, seeds=settings["seeds"], config=config)
    steady = result["steady_jobs_per_min"]
    print(f"\n{result['jobs']} jobs in {result['seconds']:.0f} s: {result['jobs_per_min']:.1f} jobs/min including "
          f"compilation (first batch {result['first_batch_s']:.0f} s)"
          + (f", {steady:.1f} jobs/min after it" if steady else ""))
    row = {"benchmark": "sweep", "model": "demo", "quick": args.quick, **settings, **result,
           "environment": common.environment()}
    if not args.no_save:
        print(f"appended to {common.append_rows('sweep', [row])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
