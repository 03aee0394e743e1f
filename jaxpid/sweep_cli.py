"""The ``jaxpid sweep`` and ``jaxpid report`` commands.

``jaxpid.cli`` adds them with ``add_sweep_parsers(sub)``; ``python -m jaxpid.sweep_cli sweep ...``
runs them without the rest of the CLI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxpid.errors import ConfigError, JaxpidError


def add_sweep_parsers(sub) -> dict:
    """Add the ``sweep`` and ``report`` subcommands; -> {command: handler(args) -> exit code}."""
    _add_sweep(sub)
    _add_report(sub)
    return {"sweep": sweep_command, "report": report_command}


def _add_sweep(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="PID of many (prompt, sources, seed) jobs into a resumable Parquet table (e.g. the bias study)",
        description=(
            "Runs a table of jobs (JSONL / CSV / Parquet: prompt, sources, seed; optional conditional, "
            "alternatives, log_prior; any other column passes through) or the shipped 'bias' study, in "
            "batches of equal shape (one fused pass each), writing one part-<batch>.parquet per batch into "
            "--out. Killed and started again with the same arguments, it computes only what is missing; a "
            "changed configuration is refused. pyarrow.dataset.dataset(OUT) reads the results as one table."
        ),
    )
    p.add_argument("jobs", help="a job table (.jsonl, .csv, .parquet) or 'bias' for the shipped bias study")
    p.add_argument("--out", type=Path, required=True, help="sweep directory (created, or resumed)")
    p.add_argument("--model", default="demo", help="'demo', a diffusers folder, or a hub id")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--variant", default=None, help="weights variant, e.g. fp16")
    p.add_argument("--preset", choices=("diffusionpid", "infodecomp"), default=None,
                   help="a paper's settings (explicit options win): diffusionpid = ppid with BERT priors, 50 "
                        "samples, seed 42, mean-of-map level; infodecomp = mmi, 100 samples, nats per image")
    p.add_argument("--samples", type=int, default=None, help="log-SNR samples per image (default 100)")
    p.add_argument("--measure", nargs="+", choices=("mmi", "ppid", "imin", "ccs"), default=None,
                   help="redundancy measures, all from one pass (default: mmi ppid ccs; imin needs an "
                        "'alternatives' column)")
    p.add_argument("--prior", default=None,
                   help="ppid priors for jobs without a log_prior column: 'uniform' (default; ppid's "
                        "redundancy is then max(i1, i2)), 'file:PRIORS.json' or 'bert:PATH' (masked-LM word "
                        "probabilities, as DiffusionPID; see jaxpid.priors)")
    p.add_argument("--analysis", choices=("pid", "cpid", "both"), default="pid",
                   help="for rows without a 'conditional' column: PID, conditional PID, or both (two jobs)")
    p.add_argument("--form", choices=("orthogonal", "standard"), default=None)
    p.add_argument("--level", choices=("sum", "mean"), default=None,
                   help="image-level information: sum of the pixel map (nats/image) or mean (DiffusionPID)")
    p.add_argument("--removal", choices=("delete", "placeholder"), default="delete")
    p.add_argument("--sampler", choices=("logistic", "uniform"), default=None)
    p.add_argument("--steps", type=int, default=50, help="DDIM steps of the generated images (default 50)")
    p.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    p.add_argument("--batch-size", type=int, default=8, help="jobs per fused pass (default 8)")
    p.add_argument("--chunk-size", type=int, default=None, help="log-SNR samples per device per step")
    p.add_argument("--key", type=int, default=0, help="seed of the estimator's draws (job j uses fold_in(key, j))")
    p.add_argument("--shard", default="0/1", help="i/n: compute only batches b with b %% n == i (default 0/1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    bias = p.add_argument_group("bias study (JOBS = bias)")
    bias.add_argument("--seeds", type=int, nargs="+", default=None, help="image seeds per prompt (default 42)")
    bias.add_argument("--groups", nargs="+", default=None, help="attribute groups (default: gender ethnicity)")
    bias.add_argument("--occupations", nargs="+", default=None, help="only these occupations (default: all 188)")
    bias.add_argument("--templates", default="first", help="'first' (default), 'all', or indices like 0,2")
    scale = p.add_argument_group("scale-out")
    scale.add_argument("--backend", choices=("local", "ray"), default="local",
                       help="local: this process (all its devices); ray: batches as Ray tasks")
    scale.add_argument("--ray-address", default=None, help="an existing Ray cluster ('auto', 'ray://host:10001'); "
                       "default: start a local one")
    scale.add_argument("--ray-cpus", type=int, default=None, help="CPUs of a local Ray runtime")
    scale.add_argument("--ray-retries", type=int, default=3, help="retries of a task whose worker died (default 3)")
    scale.add_argument("--ray-gpus-per-task", type=float, default=0.0)
    scale.add_argument("--distributed", action="store_true",
                       help="multi-host JAX: jax.distributed.initialize(), every process computes, process 0 writes")
    scale.add_argument("--coordinator", default=None, help="host:port of process 0 (default: from the environment)")
    scale.add_argument("--num-processes", type=int, default=None)
    scale.add_argument("--process-id", type=int, default=None)


def _add_report(sub) -> None:
    p = sub.add_parser(
        "report",
        help="a bias study's outputs from a sweep: normalised redundancy, ranked table, plots",
        description=(
            "Averages the image-level redundancy of each (occupation, attribute) cell over its images, "
            "min-max normalises it over the whole study (DiffusionPID), ranks occupations by their bias (the "
            "cell's normalised redundancy minus its occupation's and attribute's means plus the group's mean), "
            "and writes cells.csv, ranking.csv, bar_chart.png and heatmap.png."
        ),
    )
    p.add_argument("sweep", type=Path, help="a sweep directory (jaxpid sweep --out)")
    p.add_argument("--out", type=Path, required=True, help="report directory")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--measure", choices=("mmi", "ppid", "imin", "ccs"), default=None,
                   help="default: ccs if the sweep has it (the measure that sees an occupation word implying "
                        "an attribute), else the sweep's only measure, else mmi")
    p.add_argument("--atom", default="{1}{2}", help="lattice atom to compare (default {1}{2}: redundancy)")
    p.add_argument("--conditional", choices=("no", "yes"), default=None,
                   help="use the PID (no) or CPID (yes) rows when the sweep has both")
    p.add_argument("--row", default="occupation", help="column naming the occupation (default occupation)")
    p.add_argument("--column", default="attribute", help="column naming the attribute (default attribute)")
    p.add_argument("--group", default="group", help="column naming the attribute group (default group)")
    p.add_argument("--normalise", choices=("study", "group", "none"), default="study")
    p.add_argument("--top", type=int, default=20, help="rows of the ranked table printed / bars drawn")


# ---------------------------------------------------------------------------------------------
# Handlers


def resolve_options(args) -> None:
    """Fill unset options from ``--preset``, then the sweep's defaults (explicit options win)."""
    from jaxpid.presets import resolve

    explicit = {"samples": args.samples, "sampler": args.sampler, "level": args.level, "form": args.form,
                "prior": args.prior, "seed": args.seeds}
    settings = resolve(args.preset, explicit)
    args.samples, args.sampler, args.level, args.form = (settings[k] for k in ("samples", "sampler", "level", "form"))
    args.prior = settings["prior"] or "uniform"
    args.seeds = args.seeds or ([42] if args.preset is None else settings["seed"])
    if args.measure is None:
        args.measure = ["mmi", "ppid", "ccs"] if args.preset is None else [settings["measure"]]


def sweep_config(args):
    """A ``SweepConfig`` from parsed (and resolved) arguments."""
    from jaxpid.sampling import LogisticSampler, UniformSampler
    from jaxpid.sweep import SweepConfig

    return SweepConfig(
        n_samples=args.samples, measures=tuple(args.measure), form=args.form, level=args.level,
        removal=args.removal, prior=args.prior, steps=args.steps, guidance_scale=args.guidance,
        batch_size=args.batch_size, chunk_size=args.chunk_size, key=args.key,
        sampler=LogisticSampler() if args.sampler == "logistic" else UniformSampler(),
    )


def _jobs(args):
    if args.jobs != "bias":
        return args.jobs
    from jaxpid.sweep import bias_data, bias_jobs

    data = bias_data()
    attributes = data["attributes"]
    if args.groups:
        unknown = sorted(set(args.groups) - set(attributes))
        if unknown:
            raise ConfigError(f"--groups {unknown}: the bias study's groups are {sorted(attributes)}")
        attributes = {g: attributes[g] for g in args.groups}
    templates = data["templates"]
    if args.templates == "first":
        templates = templates[:1]
    elif args.templates != "all":
        try:
            templates = [templates[int(i)] for i in args.templates.split(",")]
        except (ValueError, IndexError):
            raise ConfigError(f"--templates {args.templates!r}: 'first', 'all' or indices 0..{len(templates) - 1}") from None
    return bias_jobs(occupations=args.occupations, attributes=attributes, templates=templates, seeds=args.seeds)


def sweep_command(args) -> int:
    from jaxpid.sweep import parse_shard, read_jobs

    shard = parse_shard(args.shard)
    if args.jobs != "bias" and (args.groups or args.occupations or args.seeds or args.templates != "first"):
        raise ConfigError("--seeds / --groups / --occupations / --templates choose the bias study's jobs: use "
                          "them with JOBS = bias (a job table has its own seed column)")
    resolve_options(args)
    config = sweep_config(args)
    if args.distributed and args.backend == "ray":
        raise ConfigError("--distributed and --backend ray are two ways to scale out: choose one")
    jobs = read_jobs(_jobs(args), analysis=args.analysis)
    progress = not args.no_progress
    if args.backend == "ray":
        from jaxpid.sweep_backends import ModelSpec, run_sweep_ray

        summary = run_sweep_ray(ModelSpec(args.model, args.dtype, args.variant), jobs, args.out, config, shard=shard,
                                address=args.ray_address, num_cpus=args.ray_cpus, max_retries=args.ray_retries,
                                gpus_per_task=args.ray_gpus_per_task, progress=progress)
        lead = True
    elif args.distributed:
        from jaxpid.sweep_backends import initialize_distributed, run_sweep_distributed

        index, count = initialize_distributed(args.coordinator, args.num_processes, args.process_id)
        from jaxpid.sweep import cached_pipeline

        pipeline = cached_pipeline(args.model, args.dtype, args.variant)
        summary = run_sweep_distributed(pipeline, jobs, args.out, config, shard=shard, progress=progress)
        lead = index == 0
    else:
        from jaxpid.sweep import load_model, run_sweep

        pipeline = load_model(args.model, args.dtype, args.variant)
        summary = run_sweep(pipeline, jobs, args.out, config, shard=shard, progress=progress)
        lead = True
    if lead:
        _print_summary(summary, shard)
    return 0


def _print_summary(summary, shard) -> None:
    where = f" (shard {shard[0]}/{shard[1]})" if shard != (0, 1) else ""
    print(f"sweep {summary.out}{where}: {summary.jobs} jobs in {summary.batches} batches; "
          f"{len(summary.computed)} batches ({summary.jobs_computed} jobs) computed now, {summary.skipped} were done")
    if summary.jobs_computed:
        steady = ""
        if len(summary.computed) > 1 and summary.first_batch_seconds is not None:
            rest = summary.seconds - summary.first_batch_seconds
            jobs_after = summary.jobs_computed * (len(summary.computed) - 1) / len(summary.computed)
            steady = f"; after the first batch (compilation) {60 * jobs_after / rest:.1f} jobs/min" if rest > 0 else ""
        print(f"  {summary.seconds:.1f} s, {summary.jobs_per_minute:.1f} jobs/min{steady}")
    print(f"  results: pyarrow.dataset.dataset('{summary.out}') or jaxpid.sweep.read_sweep('{summary.out}')")


def report_command(args) -> int:
    from jaxpid.report import bias_report, save_report

    conditional = None if args.conditional is None else args.conditional == "yes"
    report = bias_report(args.sweep, measure=args.measure, atom=args.atom, conditional=conditional, row=args.row,
                         column=args.column, group=args.group, normalise=args.normalise)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jaxpid", description="jaxpid sweeps and bias reports")
    sub = parser.add_subparsers(dest="command", required=True)
    handlers = add_sweep_parsers(sub)
    args = parser.parse_args(argv)
    try:
        return handlers[args.command](args)
    except JaxpidError as error:
        print(f"jaxpid {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
