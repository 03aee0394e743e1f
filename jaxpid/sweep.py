"""Sweeps: the PID of many (prompt, sources, seed) jobs, batched, resumable and sharded.

A *job table* (``jaxpid.sweep_jobs``: JSONL, CSV, Parquet, or rows in Python) has one job per
row: ``prompt``, ``sources``, ``seed``, optional per-job options, and pass-through columns.
Each job gives one result row per measure: every atom with its standard error, the subset
informations, the job's pass-through columns and the sweep's configuration fingerprint.

Jobs are grouped by the shape of their fused pass (k sources, imin candidates per source) and
cut into batches of ``batch_size`` jobs in a fixed order, so batch ``b`` is the same slice of the
same table every time: a resumed, sharded or distributed run recomputes exactly the same
batches. A batch is one ``generate`` call and one fused pass (``conds_per_image``, one key per
job: ``fold_in(key(config.key), job)``), padded to ``batch_size`` by repeating its last job, so
each (batch size, shape) compiles once; every requested measure comes from that one pass.

A sweep directory holds ``_sweep.json`` (configuration, its fingerprint, the job table's
digest) and one ``part-<batch>.parquet`` per finished batch, each written to a hidden temporary
file and renamed into place: a run killed at any moment leaves only whole parts, and a restart
computes the batches that have no part yet. ``pyarrow.dataset.dataset(DIR)`` reads the parts as
one table (it skips names starting with ``_`` or ``.``). The multi-host and Ray runners are in
``jaxpid.sweep_backends``.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from jaxpid.errors import ConfigError, NonFiniteError, PromptError
from jaxpid.measures import check_measure
from jaxpid.prompts import replace_source, subset_prompts
from jaxpid.sampling import LogisticSampler, LogSNRSampler
from jaxpid.sweep_jobs import Job, JobTable, bias_data, bias_jobs, read_jobs

__all__ = [
    "Batch", "Job", "JobTable", "SweepConfig", "SweepPlan", "SweepStore", "SweepSummary", "bias_data", "bias_jobs",
    "compute_batch", "plan_batches", "plan_sweep", "read_jobs", "read_sweep", "run_sweep", "shard_batches",
]

MEASURES = ("mmi", "ppid", "imin", "ccs")
MANIFEST = "_sweep.json"
ROW_FORMAT = 2  # 2: rows carry each word's conditional information given the other words
PART_PREFIX = "part-"
K2_ATOMS = {"{1}{2}": "redundancy", "{1}": "unique_1", "{2}": "unique_2", "{12}": "synergy"}


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """Everything that decides a sweep's numbers; its fingerprint guards a resumed directory."""

    n_samples: int = 100  # log-SNR samples per image
    measures: tuple[str, ...] = ("mmi", "ppid", "ccs")  # each gives one row per job
    form: str = "orthogonal"
    level: str = "sum"
    removal: str = "delete"
    placeholder: str = "_"
    prior: str = "uniform"  # ppid priors of jobs without log_prior: "uniform", "file:PATH", "bert:PATH"
    steps: int = 50  # DDIM steps of the generated images
    guidance_scale: float = 7.5
    batch_size: int = 8  # jobs per fused pass
    chunk_size: int | None = None
    key: int = 0  # the estimator's base key: job j draws from fold_in(key(key), j)
    sampler: LogSNRSampler = LogisticSampler()

    def __post_init__(self):
        if not self.measures or len(set(self.measures)) != len(self.measures):
            raise ConfigError(f"measures must be distinct names from {MEASURES}, got {self.measures!r}")
        for m in self.measures:
            if m not in MEASURES:
                raise ConfigError(f"unknown measure {m!r}; expected some of {MEASURES}")
        for name, value, options in (("form", self.form, ("orthogonal", "standard")), ("level", self.level, ("sum", "mean")),
                                     ("removal", self.removal, ("delete", "placeholder"))):
            if value not in options:
                raise ConfigError(f"{name} must be one of {options}, got {value!r}")
        for name in ("n_samples", "batch_size", "steps"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < (2 if name == "n_samples" else 1):
                raise ConfigError(f"{name} must be a positive integer{' >= 2' if name == 'n_samples' else ''}, got {value!r}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["measures"] = list(self.measures)
        d["sampler"] = self.sampler.to_dict()
        return d


def sweep_fingerprint(config: SweepConfig, model: Mapping, priors_digest: str | None = None) -> str:
    """sha256 of the configuration, the model's content fingerprint and dtype, and the ppid
    priors actually used (so a changed prior file or masked LM is a changed sweep)."""
    identity = {"config": config.to_dict(), "model": {"fingerprint": model.get("fingerprint"), "dtype": model.get("dtype")},
                "priors": priors_digest}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def resolve_priors(table: JobTable, config: SweepConfig) -> tuple:
    """Per job: (log p(y_j) per source, where it came from) for ppid, or None without ppid.

    A job's own ``log_prior`` wins; otherwise ``config.prior`` (see ``jaxpid.priors``) is asked,
    conditioned on the context for CPID jobs."""
    if "ppid" not in config.measures:
        return tuple(None for _ in table.jobs)
    from jaxpid.priors import load_prior_spec

    spec, known, out = None, {}, []
    for job in table.jobs:
        if job.log_prior is not None:
            out.append((job.log_prior, "job"))
            continue
        question = (job.prompt, job.sources, job.conditional)  # seeds share their prompt's priors
        if question not in known:
            spec = spec or load_prior_spec(config.prior)
            try:
                values = spec.priors_for(job.prompt, list(job.sources), job.conditional, removal=config.removal,
                                         placeholder=config.placeholder)
            except PromptError as error:
                raise PromptError(f"job {job.index} (row {job.row}): {error}") from None
            known[question] = tuple(float(v) for v in values)
        out.append((known[question], config.prior))
    return tuple(out)


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Batches


@dataclasses.dataclass(frozen=True)
class SweepPlan:
    """A sweep ready to run: its jobs, their batches, ppid priors and configuration fingerprint."""

    table: JobTable
    batches: tuple  # (Batch, ...) in order
    priors: tuple  # per job: (log_prior tuple, origin) or None
    fingerprint: str
    manifest: dict  # what _sweep.json holds


@dataclasses.dataclass(frozen=True)
class Batch:
    """A fixed slice of the job list evaluated together (its shape compiles once)."""

    index: int
    jobs: tuple[int, ...]  # job indices, at most batch_size (padding is added when computing)
    k: int
    candidates: tuple[int, ...]  # imin alternatives per source (0s when imin is not measured)


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
                raise ConfigError(f"job {job.index} (row {job.row}, {job.prompt!r}): {error}") from None
        if use_imin and not all(job.alternatives):
            raise ConfigError(
                f"measure 'imin' needs alternatives for every source; job {job.index} (row {job.row}, "
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


# ---------------------------------------------------------------------------------------------
# One batch: images, conditionings, one fused pass, every measure


def batch_prompts(jobs: Sequence[Job], config: SweepConfig) -> tuple[list[list[str]], list]:
    """Per job: its conditioning prompts (2**k subsets, then imin's alternatives) and subsets."""
    use_imin = "imin" in config.measures
    prompts, subsets = [], []
    for job in jobs:
        sp = subset_prompts(job.prompt, list(job.sources), conditional=job.conditional, removal=config.removal,
                            placeholder=config.placeholder)
        extra = [replace_source(sp, j, alt) for j, alts in enumerate(job.alternatives) for alt in alts] if use_imin else []
        prompts.append(list(sp.prompts) + extra)
        subsets.append(sp)
    return prompts, subsets


def compute_batch(pipeline, plan: SweepPlan, batch: Batch, config: SweepConfig, *, devices: Sequence | None = None):
    """The result rows (a pyarrow Table) of one batch: one row per (job, measure).

    Args:
      pipeline: a loaded ``jaxpid.pipeline.Pipeline``.
      devices: devices of the fused pass (default: all local devices).
    """
    import jax

    from jaxpid.generate import generate
    from jaxpid.pid import conditional_pairs, decompose
    from jaxpid.estimator import information

    real = [plan.table.jobs[j] for j in batch.jobs]
    jobs = real + [real[-1]] * (config.batch_size - len(real))  # static shape: pad by repetition
    prompts, subsets = batch_prompts(jobs, config)
    n_conds = len(prompts[0])

    images = generate(pipeline, [j.prompt for j in jobs], seeds=[j.seed for j in jobs], steps=config.steps,
                      guidance_scale=config.guidance_scale)
    conds = pipeline.encode_prompt([p for group in prompts for p in group])
    conds = conds.reshape((len(jobs), n_conds) + conds.shape[1:])  # (B, S, 77, D)
    base = jax.random.key(config.key)
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(np.asarray([j.index for j in jobs], np.uint32))
    try:
        res = information(pipeline.denoiser, images.latents, conds, key=keys, n_samples=config.n_samples, reference=0,
                          sampler=config.sampler, chunk_size=config.chunk_size, conds_per_image=True,
                          devices=list(jax.local_devices() if devices is None else devices),
                          pairs=conditional_pairs(batch.k))
    except NonFiniteError as error:  # its image index counts within the batch: name the jobs
        raise NonFiniteError(f"batch {batch.index} (jobs {list(batch.jobs)}, images in that order): {error}") from None

    results = {}
    for measure in config.measures:
        kwargs = {}
        if measure == "ppid":
            kwargs["log_prior"] = np.array([plan.priors[j.index][0] for j in jobs])
        if measure == "imin":
            offsets = np.cumsum((1 << batch.k,) + batch.candidates)
            kwargs["candidates"] = [[1 << s] + list(range(offsets[s], offsets[s] + m)) for s, m in enumerate(batch.candidates)]
        results[measure] = decompose(res, batch.k, measure=measure, form=config.form, level=config.level, **kwargs)
    return _rows(plan, batch, real, subsets, results, config, pipeline)


def row_schema(extras_schema):
    """The result table's columns: fixed ones, then the job table's pass-through columns."""
    import pyarrow as pa

    f64, words = pa.float64(), pa.list_(pa.string())
    fixed = [
        ("job", pa.int64()), ("row", pa.int64()), ("batch", pa.int64()), ("prompt", pa.string()), ("sources", words),
        ("seed", pa.int64()), ("conditional", pa.bool_()), ("alternatives", pa.list_(words)), ("k", pa.int64()),
        ("measure", pa.string()), ("form", pa.string()), ("level", pa.string()), ("prior", pa.string()),
        ("log_prior", pa.list_(f64)), ("atom_names", words), ("atoms", pa.list_(f64)), ("atoms_stderr", pa.list_(f64)),
    ]
    for name in K2_ATOMS.values():
        fixed += [(name, f64), (f"{name}_stderr", f64)]
    fixed += [
        ("joint", f64), ("joint_stderr", f64), ("subset_prompts", words), ("subset_information", pa.list_(f64)),
        ("subset_stderr", pa.list_(f64)), ("conditional_information", pa.list_(f64)),
        ("conditional_stderr", pa.list_(f64)), ("n_samples", pa.int64()), ("model", pa.string()),
        ("model_fingerprint", pa.string()), ("fingerprint", pa.string()),
    ]
    return pa.schema(fixed + list(extras_schema))


def _rows(plan, batch, real, subsets, results, config, pipeline):
    import pyarrow as pa

    rows, extra_rows = [], []
    for i, job in enumerate(real):
        for measure, res in results.items():
            log_prior, prior = plan.priors[job.index] if measure == "ppid" else (None, None)
            atoms = [float(res.atoms[n][i]) for n in res.names]
            stderr = [float(res.atoms_stderr[n][i]) for n in res.names]
            row = {
                "job": job.index, "row": job.row, "batch": batch.index, "prompt": job.prompt, "sources": list(job.sources),
                "seed": job.seed, "conditional": job.conditional, "alternatives": [list(a) for a in job.alternatives],
                "k": res.k, "measure": measure, "form": res.form, "level": res.level, "prior": prior,
                "log_prior": None if log_prior is None else list(log_prior), "atom_names": list(res.names),
                "atoms": atoms, "atoms_stderr": stderr,
                "joint": float(res.joint[i]), "joint_stderr": float(res.subset_stderr[i, -1]),
                "subset_prompts": list(subsets[i].prompts), "subset_information": res.subset_information[i].tolist(),
                "subset_stderr": res.subset_stderr[i].tolist(),
                "conditional_information": res.conditional_information[i].tolist(),
                "conditional_stderr": res.conditional_stderr[i].tolist(), "n_samples": config.n_samples,
                "model": str(pipeline.name), "model_fingerprint": pipeline.fingerprint, "fingerprint": plan.fingerprint,
            }
            if res.k == 2:
                for a, name in enumerate(res.names):
                    row[K2_ATOMS[name]], row[f"{K2_ATOMS[name]}_stderr"] = atoms[a], stderr[a]
            rows.append(row)
            extra_rows.append(job.row)
    out = pa.Table.from_pylist(rows, schema=row_schema(pa.schema([])))
    extras = plan.table.extras.take(pa.array(extra_rows, pa.int64()))
    for name in extras.column_names:
        out = out.append_column(extras.schema.field(name), extras.column(name))
    return out


# ---------------------------------------------------------------------------------------------
# The sweep directory


class SweepStore:
    """A sweep directory: the manifest and one atomically written Parquet part per batch."""

    def __init__(self, out: str | Path):
        self.out = Path(out)

    def part_path(self, batch: int) -> Path:
        return self.out / f"{PART_PREFIX}{batch:06d}.parquet"

    def open(self, manifest: dict) -> None:
        """Create the directory and its manifest, or check that it holds the same sweep.

        Raises:
          ConfigError: the directory holds another sweep (names what differs), or stray files.
        """
        if self.out.exists() and not self.out.is_dir():
            raise ConfigError(f"--out {self.out} exists and is not a directory")
        path = self.out / MANIFEST
        if path.is_file():
            try:
                old = json.loads(path.read_text())
            except ValueError as error:
                raise ConfigError(f"{path} is not a readable sweep manifest ({error})") from None
            _check_same_sweep(old, manifest, path)
            return
        if self.out.is_dir() and any(p for p in self.out.iterdir() if not p.name.startswith(".")):
            raise ConfigError(f"--out {self.out} is not empty and has no {MANIFEST}: not a sweep directory")
        self.out.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, json.dumps(manifest, indent=2, default=str).encode())

    def done(self) -> set[int]:
        """Batches whose part file exists (only whole files ever get a part name)."""
        if not self.out.is_dir():
            return set()
        out = set()
        for p in self.out.glob(f"{PART_PREFIX}*.parquet"):
            stem = p.name[len(PART_PREFIX):-len(".parquet")]
            if stem.isdigit():
                out.add(int(stem))
        return out

    def write_part(self, batch: int, rows) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        sink = pa.BufferOutputStream()
        pq.write_table(rows, sink)
        path = self.part_path(batch)
        _write_atomic(path, sink.getvalue().to_pybytes())
        return path


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a hidden sibling, flush it to disk, rename into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _check_same_sweep(old: dict, new: dict, path: Path) -> None:
    if old.get("jaxpid_sweep") != new["jaxpid_sweep"]:
        raise ConfigError(
            f"{path.parent} holds a sweep written by another jaxpid (row format {old.get('jaxpid_sweep')!r} there, "
            f"{new['jaxpid_sweep']} now: its rows have other columns); use a new --out"
        )
    old_jobs = old.get("jobs", {})
    if old_jobs.get("digest") != new["jobs"]["digest"]:
        raise ConfigError(
            f"{path.parent} holds a sweep over another job table ({old_jobs.get('count')} jobs from "
            f"{old_jobs.get('source')!r} there, {new['jobs']['count']} jobs from {new['jobs']['source']!r} now; "
            f"digests differ); resume with the same table or use a new --out"
        )
    if old.get("fingerprint") != new["fingerprint"]:
        before = {**old.get("config", {}), **_prefixed("model.", old.get("model", {})), "ppid priors": old.get("priors_digest")}
        now = {**new["config"], **_prefixed("model.", new["model"]), "ppid priors": new.get("priors_digest")}
        diffs = [f"{k}: {before.get(k)!r} there, {now.get(k)!r} now" for k in sorted(set(before) | set(now))
                 if before.get(k) != now.get(k) and k != "model.name"]
        raise ConfigError(
            f"{path.parent} holds a sweep with another configuration ({'; '.join(diffs) or 'fingerprints differ'}); "
            f"resume with the same options or use a new --out"
        )


def _prefixed(prefix: str, d: Mapping) -> dict:
    return {prefix + k: v for k, v in d.items()}


def make_manifest(config: SweepConfig, model: Mapping, table: JobTable, n_batches: int, priors: tuple) -> dict:
    from jaxpid.output import environment

    priors_digest = None if all(p is None for p in priors) else _digest([list(p) if p else None for p in priors])
    return {
        "jaxpid_sweep": ROW_FORMAT,
        "fingerprint": sweep_fingerprint(config, model, priors_digest),
        "config": config.to_dict(),
        "model": dict(model),
        "priors_digest": priors_digest,
        "jobs": {"digest": table.digest, "count": len(table), "rows": table.extras.num_rows, "source": table.source},
        "batches": n_batches,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
    }


def read_sweep(out: str | Path):
    """The sweep's results as one pyarrow Table, sorted by (job, measure)."""
    import pyarrow.dataset as ds

    table = ds.dataset(str(out), format="parquet").to_table()
    return table.sort_by([("job", "ascending"), ("measure", "ascending")])


# ---------------------------------------------------------------------------------------------
# The local runner


@dataclasses.dataclass(frozen=True)
class SweepSummary:
    """What a run did: batches computed now, found done, and its throughput."""

    out: Path
    fingerprint: str
    jobs: int  # in the whole sweep
    batches: int  # in the whole sweep
    computed: tuple[int, ...]  # batches computed by this run
    skipped: int  # batches of this shard already done
    jobs_computed: int
    seconds: float  # wall time of the batches computed (first one includes compilation)
    first_batch_seconds: float | None

    @property
    def jobs_per_minute(self) -> float:
        return 60.0 * self.jobs_computed / self.seconds if self.seconds > 0 else float("nan")


def model_identity(pipeline) -> dict:
    return {"name": str(pipeline.name), "fingerprint": pipeline.fingerprint,
            "dtype": str(np.dtype(getattr(pipeline, "dtype", np.float32)))}


def plan_sweep(jobs, config: SweepConfig, model: Mapping, *, analysis: str = "pid") -> SweepPlan:
    """Read the job table, cut it into batches, resolve ppid priors, fingerprint the sweep."""
    import pyarrow as pa

    table = jobs if isinstance(jobs, JobTable) else read_jobs(jobs, analysis=analysis)
    reserved = sorted(set(table.extras.column_names) & set(row_schema(pa.schema([])).names))
    if reserved:
        raise ConfigError(f"job table columns {reserved} are names of result columns; rename them")
    batches = plan_batches(table, config)
    priors = resolve_priors(table, config)
    record = make_manifest(config, model, table, len(batches), priors)
    return SweepPlan(table, tuple(batches), priors, record["fingerprint"], record)


def run_sweep(
    pipeline,
    jobs,
    out: str | Path,
    config: SweepConfig = SweepConfig(),
    *,
    analysis: str = "pid",
    shard: tuple[int, int] = (0, 1),
    devices: Sequence | None = None,
    progress: bool = False,
) -> SweepSummary:
    """Run (or resume) a sweep in this process, writing one part file per batch.

    Args:
      pipeline: a loaded pipeline.
      jobs: a ``JobTable`` or anything ``read_jobs`` takes.
      out: the sweep directory (created, or resumed when it holds the same sweep).
      analysis: "pid", "cpid" or "both" for rows without a ``conditional`` column.
      shard: (i, n): compute only batches b with b % n == i (other workers do the rest).
      devices: devices of the fused passes (default: all local devices).
      progress: show a progress bar (jobs, jobs/min, time left) on stderr.

    Raises:
      ConfigError: ``out`` holds a sweep with another configuration or job table.
    """
    plan = plan_sweep(jobs, config, model_identity(pipeline), analysis=analysis)
    _check_prompts(pipeline.tokenizer, plan.table, config)
    store = SweepStore(out)
    store.open(plan.manifest)
    mine = shard_batches(plan.batches, shard)
    done = store.done()
    todo = [b for b in mine if b.index not in done]
    bar = progress_bar(sum(len(b.jobs) for b in todo), progress, len(mine) - len(todo))
    timer = _Timer()
    for batch in todo:
        store.write_part(batch.index, compute_batch(pipeline, plan, batch, config, devices=devices))
        timer.tick(len(batch.jobs))
        bar.update(len(batch.jobs))
    bar.close()
    return timer.summary(out, plan, mine, todo)


def _check_prompts(tokenizer, table: JobTable, config: SweepConfig) -> None:
    """Every conditioning prompt fits the tokenizer: fail before any expensive work."""
    prompts, _ = batch_prompts(table.jobs, config)
    for job, group in zip(table.jobs, prompts):
        try:
            tokenizer.encode(group)
        except PromptError as error:
            raise PromptError(f"job {job.index} (row {job.row}): {error}") from None


class _Timer:
    def __init__(self):
        self.start, self.jobs, self.first = time.perf_counter(), 0, None

    def tick(self, jobs: int) -> None:
        self.jobs += jobs
        if self.first is None:
            self.first = time.perf_counter() - self.start

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def summary(self, out, plan: SweepPlan, mine: Sequence[Batch], todo: Sequence[Batch]) -> SweepSummary:
        return SweepSummary(Path(out), plan.fingerprint, len(plan.table), len(plan.batches),
                            tuple(b.index for b in todo), len(mine) - len(todo), self.jobs, self.seconds, self.first)


def progress_bar(total_jobs: int, enabled: bool, skipped_batches: int = 0):
    """A tqdm bar over jobs showing jobs/min and time left (a no-op when disabled)."""
    import sys

    from tqdm import tqdm

    bar = tqdm(total=total_jobs, unit="job", disable=not enabled, file=sys.stderr, dynamic_ncols=True,
               desc="sweep" + (f" ({skipped_batches} batches done before)" if skipped_batches else ""),
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} jobs [{elapsed}<{remaining}{postfix}]")
    original = bar.update

    def update(n: int = 1):
        original(n)
        elapsed = bar.format_dict["elapsed"]
        if elapsed > 0:
            bar.set_postfix_str(f"{60.0 * bar.n / elapsed:.1f} jobs/min", refresh=True)

    bar.update = update
    return bar


@functools.lru_cache(maxsize=2)
def cached_pipeline(name: str, dtype: str = "fp32", variant: str | None = None):
    """One loaded pipeline per process and model (Ray workers and distributed processes reuse
    it, and with it every compiled program)."""
    return load_model(name, dtype, variant)


def load_model(name: str, dtype: str = "fp32", variant: str | None = None):
    """Load a pipeline by CLI-style name: 'demo', a folder, or a hub id."""
    import jax.numpy as jnp

    from jaxpid.demo import resolve_model_name
    from jaxpid.pipeline import load_pipeline

    name = resolve_model_name(name)
    dtypes = {"fp32": jnp.float32, "bf16": jnp.bfloat16}
    if dtype not in dtypes:
        raise ConfigError(f"dtype must be one of {sorted(dtypes)}, got {dtype!r}")
    return load_pipeline(name, dtype=dtypes[dtype], variant=variant)


def rows_to_bytes(rows) -> bytes:
    """A result table as Arrow IPC bytes (to move between processes)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, rows.schema) as writer:
        writer.write_table(rows)
    return sink.getvalue().to_pybytes()


def rows_from_bytes(data: bytes):
    import pyarrow as pa

    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def iter_rounds(items: Sequence, n: int) -> Iterable[list]:
    """[a, b, c, d, e], 2 -> [a, b], [c, d], [e]: one item per worker per round."""
    for start in range(0, len(items), n):
        yield list(items[start:start + n])

