"""The study contract, and what every study shares.

A study is one module that fills the contract: a config (a frozen dataclass), its items (read
with line-numbered errors), a ``StudyPlan`` subclass whose ``compute`` turns one batch into rows
through the shared fused-batch helper (``jaxpid.sweeps.fused.fused_batch``) and whose
``summarise`` turns the complete rows into a typed ``StudySummary`` (summary.json's record, its
tables, figures and the text the CLI prints). Running, resuming, progress, timing and writing
are ``complete_study`` here; the CLI's executor (``jaxpid.cli.studies``) is one function for
every study.

A study's directory holds ``parts/`` (the sweep store: ``_sweep.json`` and one Parquet part
per batch, written atomically, so a killed study resumes where it stopped) and, once every
batch is done, the study's outputs (``summary.json``, ``items.parquet``, figures), each written
atomically by ``jaxpid.io.studies``.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import pyarrow as pa

from jaxpid.core.config import check_int
from jaxpid.errors import ConfigError
from jaxpid.io.atomic import lock_output
from jaxpid.io.studies import save_study
from jaxpid.io.provenance import environment
from jaxpid.sd.pipeline import ModelSpec, Pipeline
from jaxpid.core.results import InformationResult
from jaxpid.sweeps.distributed import run_plan_distributed, run_plan_ray
from jaxpid.sweeps.fused import PreparedBatch, compute_batch
from jaxpid.sweeps.plan import BatchPlan
from jaxpid.sweeps.runner import SweepSummary, run_plan
from jaxpid.sweeps.store import MANIFEST, SweepStore, read_sweep

PARTS = "parts"  # the resumable store inside a study's directory
BACKENDS = ("local", "ray", "distributed")


# ---------------------------------------------------------------------------------------------
# The plan


@dataclasses.dataclass(frozen=True)
class StudyBatch:
    """A fixed slice of a study's items evaluated together (one compiled shape)."""

    index: int
    jobs: tuple[int, ...]  # item indices, at most batch_size (padding is added when computing)
    shape: Hashable  # what fixes the batch's compiled shapes (e.g. the number of captions)


def cut_batches(items: Sequence[Mapping], batch_size: int, shape_of: Callable[[Mapping], Hashable]) -> tuple:
    """Batches of at most ``batch_size`` items of one shape, in a fixed order (by shape, then item)."""
    groups: dict[Hashable, list[int]] = {}
    for item in items:
        groups.setdefault(shape_of(item), []).append(item["index"])
    batches = []
    for shape in sorted(groups, key=repr):
        members = groups[shape]
        for start in range(0, len(members), batch_size):
            batches.append(StudyBatch(len(batches), tuple(members[start:start + batch_size]), shape))
    return tuple(batches)


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


class StudyPlan:
    """A study's items cut into batches, with the manifest and fingerprint that guard a resume.

    A study subclasses it and implements ``prepare`` (one batch -> its fused-pass inputs),
    ``rows`` (items' results -> their rows), ``summarise`` (the complete rows -> its
    ``StudySummary``) and ``prompts`` (every prompt one item will encode, checked before any
    model work); ``compute`` runs a batch through them (``jaxpid.sweeps.fused``). It is a ``jaxpid.sweeps.BatchPlan``: the
    local, multi-host JAX and Ray runners execute it. Options that only shape the summary (not
    the rows) live in ``summary_options``, outside the fingerprint: a finished study can be
    summarised again with other ones without recomputing.
    """

    study = "study"  # the study's name
    format = 1  # its row format: a directory of another format is refused
    unit = "item"

    def __init__(self, items: Sequence[dict], config: Any, model: Mapping, *, batch_size: int,
                 shape_of: Callable[[Mapping], Hashable], source: str):
        if not items:
            raise ConfigError(f"the {self.study} study has no items")
        self.items = tuple({**item, "index": i} for i, item in enumerate(items))
        self.config = config
        self.model = dict(model)
        self.batches = cut_batches(self.items, batch_size, shape_of)
        config_record = config.to_dict()
        items_digest = digest([_without(item, "line") for item in self.items])
        model_record = {k: v for k, v in self.model.items() if k != "name"}  # a moved folder still resumes
        self.fingerprint = digest({"study": self.study, "config": config_record, "model": model_record})
        self.manifest = {
            "jaxpid_sweep": f"{self.study}-{self.format}",
            "fingerprint": self.fingerprint,
            "config": config_record,
            "model": self.model,
            "jobs": {"digest": items_digest, "count": len(self.items), "rows": len(self.items), "source": source},
            "batches": len(self.batches),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "environment": environment(),
        }

    @property
    def n_jobs(self) -> int:
        return len(self.items)

    def batch_items(self, batch: StudyBatch, batch_size: int) -> tuple[list[dict], int]:
        """The batch's items padded to ``batch_size`` by repeating the last (static shapes), and
        how many are real."""
        real = [self.items[i] for i in batch.jobs]
        return real + [real[-1]] * (batch_size - len(real)), len(real)

    def prompts(self, item: Mapping) -> list[str]:
        """Every prompt ``item`` will encode (checked against the tokenizer before any model work)."""
        return []

    def check(self, tokenizer) -> None:
        for item in self.items:
            prompts = self.prompts(item)
            if prompts:
                try:
                    tokenizer.encode(prompts)
                except ConfigError:
                    raise
                except Exception as error:  # PromptError and friends: name the item's line
                    raise type(error)(f"{where(item)}: {error}") from None

    def prepare(self, pipeline: Pipeline, batch: StudyBatch) -> PreparedBatch:
        """The batch's fused-pass inputs: images, each item's conditioning prompts, indices."""
        raise NotImplementedError

    def rows(self, pipeline: Pipeline, batch: StudyBatch, prepared: PreparedBatch, res: InformationResult,
             positions: Sequence[int]) -> pa.Table:
        """The rows of the items at ``positions`` of the batch from their result ``res`` (those
        items' images, in that order; each item's samples in ``res.config['n_samples']``)."""
        raise NotImplementedError

    def compute(self, pipeline: Pipeline, batch: StudyBatch, *, devices: Sequence | None = None) -> tuple[pa.Table, dict]:
        """One batch's rows the fixed-N way (``prepare``, one fused pass, ``rows``) and timings."""
        return compute_batch(pipeline, self, batch, devices=devices)

    def summarise(self, run: StudyRun, pipeline: Pipeline | None = None) -> StudySummary:
        """The summary of a complete run (``run.rows``); ``pipeline``: the loaded model where a
        study draws extra figures with it (None in a Ray run, whose workers hold the model)."""
        raise NotImplementedError


def where(item: Mapping) -> str:
    """'line 12' (manifest items) or 'item 3' (built items), for error messages."""
    return f"line {item['line']}" if "line" in item else f"item {item.get('index', '?')}"


def _without(item: Mapping, *keys: str) -> dict:
    return {k: v for k, v in item.items() if k not in keys}


# ---------------------------------------------------------------------------------------------
# The run


@dataclasses.dataclass(frozen=True)
class StudyRun:
    """What running a study did, and its rows once every batch is done."""

    out: Path
    summary: SweepSummary
    rows: pa.Table | None  # every item's rows, sorted; None while batches are missing (another shard's)

    @property
    def complete(self) -> bool:
        return self.rows is not None

    @property
    def items_per_minute(self) -> float:
        return self.summary.jobs_per_minute


@dataclasses.dataclass(frozen=True, eq=False)
class StudySummary(Mapping):
    """A finished study's summary: what ``summary.json`` records (its keys are stable — notebooks
    and users' scripts read them — and the summary reads like that dict: ``summary["n_items"]``),
    the tables and figures written beside it, and ``text()``, what the CLI prints.

    Each study subclasses it with typed accessors of its headline numbers and its ``text``.
    """

    study: str
    record: Mapping[str, Any]
    tables: Mapping[str, pa.Table] = dataclasses.field(default_factory=dict)
    figures: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    texts: Mapping[str, str] = dataclasses.field(default_factory=dict)  # file name -> text (e.g. table.md)

    def to_json(self) -> dict:
        """summary.json's body (non-finite numbers as null: strict JSON)."""
        return finite(dict(self.record))

    def text(self) -> str:
        """The summary as the CLI prints it."""
        return ""

    def __getitem__(self, key: str) -> Any:
        return self.record[key]

    def __iter__(self):
        return iter(self.record)

    def __len__(self) -> int:
        return len(self.record)


@dataclasses.dataclass(frozen=True)
class FinishedStudy:
    """A study run end to end (``complete_study``): the run, its summary and the files written
    (None and [] while another shard's batches are missing)."""

    run: StudyRun
    summary: StudySummary | None
    paths: list[Path]


def check_study_folder(out: str | Path) -> None:
    """A study writes into an empty folder or its own (``parts/_sweep.json``, whose manifest the
    run then checks): never into a folder holding something else.

    Raises:
      ConfigError: ``out`` is a file, or a non-empty folder that is not a study's.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(p for p in out.iterdir() if not p.name.startswith(".")) \
            and not (out / PARTS / MANIFEST).is_file():
        raise ConfigError(f"--out {out} is not empty and holds no study (no {PARTS}/{MANIFEST}); choose a new "
                          "directory (a study never mixes its files with others)")


def run_study(
    plan: BatchPlan,
    out: str | Path,
    *,
    pipeline: Pipeline | None = None,
    model: ModelSpec | None = None,
    backend: str = "local",
    shard: tuple[int, int] = (0, 1),
    devices: Sequence | None = None,
    progress: bool = False,
    ray_options: Mapping | None = None,
) -> StudyRun:
    """Compute (or resume) a study's batches (a ``StudyPlan``, or a sweep's plan) into
    ``out/parts`` with the chosen runner.

    Args:
      pipeline: the loaded model (local and distributed runs); ``model``: its spec (Ray loads
        it in each worker).
      backend: "local" (this process), "distributed" (an initialised multi-host JAX job; every
        process calls this) or "ray".

    Returns:
      The run's summary and, when every batch is done, all rows (sorted by item).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
    check_study_folder(out)
    if backend != "distributed" or jax.process_index() == 0:  # the writer holds the folder: one at a time
        lock_output(out)
    parts = Path(out) / PARTS
    if backend == "ray":
        if model is None:
            raise ConfigError("the ray backend needs the model's ModelSpec (each worker loads it)")
        summary = run_plan_ray(model, plan, parts, shard=shard, progress=progress, **dict(ray_options or {}))
    elif pipeline is None:
        raise ConfigError("a local or distributed study run needs the loaded pipeline")
    elif backend == "distributed":
        summary = run_plan_distributed(pipeline, lambda: plan, parts, shard=shard, progress=progress)
    else:
        summary = run_plan(pipeline, plan, parts, shard=shard, devices=devices, progress=progress)
    done = SweepStore(parts).done()
    rows = None
    if done >= {b.index for b in plan.batches}:
        rows = read_sweep(parts)  # a sweep's rows come sorted by job; a study's are sorted by item
        keys = [(k, "ascending") for k in ("item", "method") if k in rows.column_names]
        rows = rows.sort_by(keys) if keys else rows
    return StudyRun(Path(out), summary, rows)


def complete_study(
    plan: StudyPlan,
    out: str | Path,
    *,
    pipeline: Pipeline | None = None,
    model: ModelSpec | None = None,
    backend: str = "local",
    shard: tuple[int, int] = (0, 1),
    devices: Sequence | None = None,
    progress: bool = False,
    ray_options: Mapping | None = None,
    announce: Callable[[str], None] | None = None,
) -> FinishedStudy:
    """Run (or resume) a study's batches (``run_study``) and, once every batch is done, summarise
    it (``plan.summarise``) and write summary.json, its tables, figures and texts into ``out``
    (each atomically; only process 0 of a distributed run writes).

    ``announce`` is told what the summary computes when it takes long (``plan.summary_note``).

    Returns:
      The run, and the summary and paths written (None and [] while batches are missing:
      another shard's, or an interrupted run's — the same call again finishes it).
    """
    run = run_study(plan, out, pipeline=pipeline, model=model, backend=backend, shard=shard, devices=devices,
                    progress=progress, ray_options=ray_options)
    if not run.complete or (backend == "distributed" and jax.process_index() != 0):
        return FinishedStudy(run, None, [])
    note = getattr(plan, "summary_note", None)
    if announce is not None and note:
        announce(note)
    summary = plan.summarise(run, pipeline)
    paths = save_study(out, plan.study, summary.to_json(), tables=summary.tables, figures=summary.figures,
                       texts=summary.texts, model=plan.model)
    return FinishedStudy(run, summary, paths)


def throughput(run: StudyRun) -> dict:
    """What this run computed and how fast (for a study's summary)."""
    s = run.summary
    return {"items_computed": s.jobs_computed, "batches_computed": len(s.computed), "seconds": s.seconds,
            "compile_seconds": s.compile_seconds, "evaluations": s.evaluations, "items_per_minute": s.jobs_per_minute,
            "items_per_minute_after_first_batch": s.steady_jobs_per_minute, "batches_done_before": s.skipped}


def check_positive(**counts: int) -> dict[str, int]:
    """``counts`` checked to be whole numbers of at least 1 (naming the one at fault)."""
    return {name: check_int(name, value, 1) for name, value in counts.items()}


def finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (summary.json stays strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
