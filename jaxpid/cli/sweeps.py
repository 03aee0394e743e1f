"""``jaxpid sweep`` and ``jaxpid report``."""

from __future__ import annotations

import argparse

from jaxpid.analysis.presets import resolve
from jaxpid.cli.options import model_spec
from jaxpid.errors import ConfigError
from jaxpid.io.reports import save_report
from jaxpid.sweeps.config import SweepConfig
from jaxpid.sweeps.distributed import initialize_distributed, run_sweep_distributed, run_sweep_ray
from jaxpid.sweeps.jobs import bias_study_jobs, read_jobs
from jaxpid.sweeps.plan import parse_shard
from jaxpid.sweeps.report import bias_report
from jaxpid.sweeps.runner import SweepSummary, cached_pipeline, run_sweep


def sweep_config(args: argparse.Namespace) -> SweepConfig:
    """The sweep's configuration from parsed arguments (preset, then explicit options)."""
    return SweepConfig.from_options(
        args.preset, measures=args.measure, forms=args.form, level=args.level, n_samples=args.samples,
        sampler=args.sampler, chunk_size=args.chunk_size, key=args.key, target_stderr=args.target_stderr,
        max_samples=args.max_samples, removal=args.removal, steps=args.steps, guidance_scale=args.guidance,
        prior=args.prior, batch_size=args.batch_size,
    )


def sweep_command(args: argparse.Namespace) -> int:
    shard = parse_shard(args.shard)
    bias = args.jobs == "bias"
    if not bias and (args.groups or args.occupations or args.seeds or args.templates != "first"):
        raise ConfigError("--seeds / --groups / --occupations / --templates choose the bias study's jobs: use "
                          "them with JOBS = bias (a job table has its own seed column)")
    config = sweep_config(args)
    if bias:
        seeds = resolve(args.preset, {"seeds": args.seeds}).get("seeds")  # None: bias_study_jobs' own
        source = bias_study_jobs(args.groups, args.occupations, args.templates,
                                 **({} if seeds is None else {"seeds": seeds}))
    else:
        source = args.jobs
    jobs = read_jobs(source, analysis=args.analysis)
    progress = not args.no_progress
    model = model_spec(args)
    lead = True
    if args.backend == "ray":
        summary = run_sweep_ray(model, jobs, args.out, config, shard=shard, address=args.ray_address,
                                num_cpus=args.ray_cpus, max_retries=args.ray_retries,
                                gpus_per_task=args.ray_gpus_per_task, progress=progress)
    elif args.backend == "distributed":
        index, _ = initialize_distributed(args.coordinator, args.num_processes, args.process_id)
        summary = run_sweep_distributed(cached_pipeline(model), jobs, args.out, config, shard=shard, progress=progress)
        lead = index == 0
    else:
        summary = run_sweep(model.load(), jobs, args.out, config, shard=shard, progress=progress)
    if lead:
        print_summary(summary, shard)
    return 0


def print_summary(summary: SweepSummary, shard: tuple[int, int]) -> None:
    where = f" (shard {shard[0]}/{shard[1]})" if shard != (0, 1) else ""
    print(f"sweep {summary.out}{where}: {summary.jobs} jobs in {summary.batches} batches; "
          f"{len(summary.computed)} batches ({summary.jobs_computed} jobs) computed now, {summary.skipped} were done")
    for damaged in summary.damaged:
        print(f"  damaged part set aside into _damaged/ and computed again: {damaged}")
    if summary.jobs_computed:
        steady = summary.steady_jobs_per_minute
        after = f"; after the first batch {steady:.1f} jobs/min" if steady is not None else ""
        print(f"  {summary.seconds:.1f} s ({summary.compile_seconds:.1f} s compiling fused passes), "
              f"{summary.jobs_per_minute:.1f} jobs/min{after}")
    if summary.evaluations is not None:
        print(f"  {summary.evaluations:,} denoiser evaluations in fused passes (chunk padding included)")
    print(f"  results: pyarrow.dataset.dataset('{summary.out}') or jaxpid.sweeps.read_sweep('{summary.out}')")


def report_command(args: argparse.Namespace) -> int:
    conditional = None if args.conditional is None else args.conditional == "yes"
    report = bias_report(args.sweep, measure=args.measure, form=args.form, atom=args.atom, conditional=conditional,
                         row=args.row, column=args.column, group=args.group, normalise=args.normalise)
    paths = save_report(report, args.out, overwrite=args.overwrite, top=args.top)
    print(f"{report.label}, normalised over the {report.normalisation['kind']}; "
          f"{len(report.cells)} cells; occupations ranked by bias (interaction of occupation and attribute):\n")
    for scope in report.flat():
        low = report.normalisation["range"][scope][0]
        print(f"note: every cell of the {scope} has the same {report.label} ({low:.4g}): no occupation stands out "
              f"there (normalised to 0)")
    print(report.text(args.top))
    print("\nwrote " + ", ".join(str(p) for p in paths))
    return 0
