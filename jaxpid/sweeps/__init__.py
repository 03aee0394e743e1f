"""Sweeps: the PID of many (prompt, sources, seed) jobs, batched, resumable and sharded.

A *job table* (JSONL, CSV, Parquet, or rows in Python) has one job per row: ``prompt``,
``sources``, ``seed``, optional per-job options, and pass-through columns. Each job gives one
result row per decomposition (measure × form × level): every atom with its standard error, the
subset informations, the job's pass-through columns and the sweep's configuration fingerprint.

    config        SweepConfig and its fingerprint
    jobs          job tables (JSONL / CSV / Parquet) and the bias study's jobs
    plan          batches of equal shape, shards, ppid priors, the manifest; BatchPlan: what any
                  batched computation (a sweep, a study) gives the runners
    batch         one batch: images, conditionings, one fused pass, result rows
    store         the sweep directory: manifest and atomic Parquet parts, resume checks
    runner        the local runner (run_plan for any BatchPlan, run_sweep) and its summary
    distributed   multi-host JAX and Ray runners (run_plan_distributed, run_plan_ray)
    report        a bias study's normalised redundancy and ranking
"""

from jaxpid.sweeps.batch import row_schema
from jaxpid.sweeps.fused import compute_batch
from jaxpid.sweeps.config import SweepConfig, sweep_fingerprint
from jaxpid.sweeps.distributed import (
    initialize_distributed,
    run_plan_distributed,
    run_plan_ray,
    run_sweep_distributed,
    run_sweep_ray,
)
from jaxpid.sweeps.jobs import Job, JobTable, bias_data, bias_jobs, bias_study_jobs, read_jobs
from jaxpid.sweeps.plan import Batch, BatchPlan, SweepPlan, parse_shard, plan_batches, plan_sweep, shard_batches
from jaxpid.sweeps.report import BiasReport, bias_report
from jaxpid.sweeps.runner import SweepSummary, cached_pipeline, run_plan, run_sweep
from jaxpid.sweeps.store import SweepStore, read_sweep

__all__ = [
    "Batch", "BatchPlan", "BiasReport", "Job", "JobTable", "SweepConfig", "SweepPlan", "SweepStore", "SweepSummary",
    "bias_data", "bias_jobs", "bias_report", "bias_study_jobs", "cached_pipeline", "compute_batch",
    "initialize_distributed", "parse_shard", "plan_batches", "plan_sweep", "read_jobs", "read_sweep", "row_schema",
    "run_plan", "run_plan_distributed", "run_plan_ray", "run_sweep", "run_sweep_distributed", "run_sweep_ray",
    "shard_batches", "sweep_fingerprint",
]
