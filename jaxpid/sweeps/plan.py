"""A sweep's plan: its jobs cut into fixed batches, the ppid priors, and its fingerprint.

Jobs are grouped by the shape of their fused pass (k sources, imin candidates per source) and
cut into batches of ``batch_size`` jobs in a fixed order, so batch ``b`` is the same slice of
the same table every time: a resumed, sharded or distributed run recomputes exactly the same
batches.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Protocol

import pyarrow as pa

from jaxpid.core.measures import check_measure
from jaxpid.errors import ConfigError, PromptError
from jaxpid.io.provenance import environment
from jaxpid.priors.word_priors import load_prior_spec
from jaxpid.sweeps.batch import batch_prompts, batch_rows, prepare_batch, row_schema
from jaxpid.sweeps.config import SweepConfig, sweep_fingerprint
from jaxpid.sweeps.fused import PreparedBatch, compute_batch
from jaxpid.sweeps.jobs import JobTable, read_jobs

MANIFEST_FORMAT = 3  # 3: nested configuration and the model's full identity in the manifest


@dataclasses.dataclass(frozen=True)
class Batch:
    """A fixed slice of the job list evaluated together (its shape compiles once)."""

    index: int
    jobs: tuple[int, ...]  # job indices, at most batch_size (padding is added when computing)
    k: int
    candidates: tuple[int, ...]  # imin alternatives per source (0s when imin is not measured)


class BatchPlan(Protocol):
    """What the runners (local, multi-host JAX, Ray) need of a batched computation: a PID sweep's
    ``SweepPlan``, or a study's plan (``jaxpid.studies``).

    ``batches`` are fixed slices of the jobs (objects with ``index`` and ``jobs``), the same every
    time the plan is made, so a resumed, sharded or distributed run computes the same batches;
    ``manifest`` is what the store keeps (and compares on resume, see ``SweepStore.open``).
    """

    batches: tuple
    fingerprint: str
    manifest: dict
    n_jobs: int
    unit: str  # what a job is called in progress bars ("job", "item", ...)

    def check(self, tokenizer) -> None:
        """Every prompt fits the tokenizer (and anything else checkable before model work)."""

    def compute(self, pipeline, batch, *, devices: Sequence | None = None) -> tuple[pa.Table, dict]:
        """One batch's result rows and timings (``seconds``, ``compile_s``)."""


@dataclasses.dataclass(frozen=True)
class SweepPlan:
    """A sweep ready to run: its jobs, their batches, ppid priors and configuration fingerprint."""

    table: JobTable
    config: SweepConfig
    batches: tuple[Batch, ...]  # in order
    priors: tuple  # per job: (log_prior tuple, origin) or None
    fingerprint: str
    manifest: dict  # what _sweep.json holds
    unit: str = "job"

    @property
    def n_jobs(self) -> int:
        return len(self.table)

    def check(self, tokenizer) -> None:
        check_prompts(tokenizer, self)

    def prepare(self, pipeline, batch: Batch) -> PreparedBatch:
        return prepare_batch(pipeline, self, batch)

    def rows(self, pipeline, batch: Batch, prepared: PreparedBatch, res, positions: Sequence[int]) -> pa.Table:
        return batch_rows(pipeline, self, batch, prepared, res, positions)

    def compute(self, pipeline, batch: Batch, *, devices: Sequence | None = None) -> tuple[pa.Table, dict]:
        return compute_batch(pipeline, self, batch, devices=devices)


def plan_sweep(jobs, config: SweepConfig, model: Mapping, *, analysis: str = "pid") -> SweepPlan:
    """Read the job table, cut it into batches, resolve ppid priors, fingerprint the sweep.

    Args:
      jobs: a ``JobTable`` or anything ``read_jobs`` takes.
      model: the model's identity (``Pipeline.identity()`` or ``folder_identity``).
      analysis: "pid", "cpid" or "both" for rows without a ``conditional`` column.
    """
    table = jobs if isinstance(jobs, JobTable) else read_jobs(jobs, analysis=analysis)
    reserved = sorted(set(table.extras.column_names) & set(row_schema(pa.schema([])).names))
    if reserved:
        raise ConfigError(f"job table columns {reserved} are names of result columns; rename them")
    batches = plan_batches(table, config)
    priors = resolve_priors(table, config)
    priors_digest = None if all(p is None for p in priors) else _digest([list(p) if p else None for p in priors])
    fingerprint = sweep_fingerprint(config, model, priors_digest)
    manifest = {
        "jaxpid_sweep": MANIFEST_FORMAT,
        "fingerprint": fingerprint,
        "config": config.to_dict(),
        "model": dict(model),
        "priors_digest": priors_digest,
        "jobs": {"digest": table.digest, "count": len(table), "rows": table.extras.num_rows, "source": table.source},
        "batches": len(batches),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
    }
    return SweepPlan(table, config, tuple(batches), priors, fingerprint, manifest)


def plan_batches(table: JobTable, config: SweepConfig) -> list[Batch]:
    """Batches in a deterministic order: by shape (k, candidates), then job index."""
    use_imin = "imin" in config.measures
    groups: dict[tuple, list[int]] = {}
    for job in table.jobs:
        k = len(job.sources)
        for m in config.measures:
            try:
                check_measure(m, k)
            except ConfigError as error:
                raise ConfigError(f"job {job.index} (table row {job.row + 1}, {job.prompt!r}): {error}") from None
        if use_imin and not all(job.alternatives):
            raise ConfigError(
                f"measure 'imin' needs alternatives for every source; job {job.index} (table row {job.row + 1}, "
                f"{job.prompt!r}) has none for some of {list(job.sources)}"
            )
        shape = (k, tuple(len(a) for a in job.alternatives) if use_imin else (0,) * k)
        groups.setdefault(shape, []).append(job.index)
    batches = []
    for (k, candidates), members in sorted(groups.items()):
        for start in range(0, len(members), config.batch_size):
            batches.append(Batch(len(batches), tuple(members[start:start + config.batch_size]), k, candidates))
    return batches


def shard_batches(batches: Sequence[Batch], shard: tuple[int, int] = (0, 1)) -> list[Batch]:
    """Batch b belongs to shard i of n iff b % n == i."""
    i, n = shard
    if not (isinstance(n, int) and isinstance(i, int) and n >= 1 and 0 <= i < n):
        raise ConfigError(f"shard must be i/n with 0 <= i < n, got {i}/{n}")
    return [b for b in batches if b.index % n == i]


def parse_shard(text: str) -> tuple[int, int]:
    """'2/8' -> (2, 8)."""
    i, sep, n = str(text).partition("/")
    try:
        shard = (int(i), int(n))
    except ValueError:
        raise ConfigError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if not sep or not 0 <= shard[0] < shard[1]:
        raise ConfigError(f"--shard {text!r}: expected i/n with 0 <= i < n")
    return shard


def resolve_priors(table: JobTable, config: SweepConfig) -> tuple:
    """Per job: (log p(y_j) per source, where it came from) for ppid, or None without ppid.

    A job's own ``log_prior`` wins; otherwise ``config.prior`` (see ``jaxpid.priors``) is asked,
    conditioned on the context for CPID jobs."""
    if "ppid" not in config.measures:
        return tuple(None for _ in table.jobs)
    spec, known, out = None, {}, []
    for job in table.jobs:
        if job.log_prior is not None:
            out.append((job.log_prior, "job"))
            continue
        question = (job.prompt, job.sources, job.conditional)  # seeds share their prompt's priors
        if question not in known:
            spec = spec or load_prior_spec(config.prior)
            try:
                values = spec.priors_for(job.prompt, list(job.sources), job.conditional, **config.removal.arguments())
            except PromptError as error:
                raise PromptError(f"job {job.index} (table row {job.row + 1}): {error}") from None
            known[question] = tuple(float(v) for v in values)
        out.append((known[question], config.prior))
    return tuple(out)


def check_prompts(tokenizer, plan: SweepPlan) -> None:
    """Every conditioning prompt fits the tokenizer: fail before any expensive work."""
    prompts, _ = batch_prompts(plan.table.jobs, plan.config)
    for job, group in zip(plan.table.jobs, prompts):
        try:
            tokenizer.encode(group)
        except PromptError as error:
            raise PromptError(f"job {job.index} (table row {job.row + 1}): {error}") from None


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
