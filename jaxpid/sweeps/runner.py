"""The local runner: compute a plan's missing batches (a sweep's, a study's) in this process,
one part file each."""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from tqdm import tqdm

from jaxpid.sd.pipeline import ModelSpec, Pipeline
from jaxpid.sweeps.adaptive import adaptive, run_batches_adaptive
from jaxpid.sweeps.config import SweepConfig
from jaxpid.sweeps.plan import BatchPlan, plan_sweep, shard_batches
from jaxpid.sweeps.store import SweepStore


@dataclasses.dataclass(frozen=True)
class SweepSummary:
    """What a run did: batches computed now, found done, its throughput and compile time."""

    out: Path
    fingerprint: str
    jobs: int  # in the whole sweep
    batches: int  # in the whole sweep
    computed: tuple[int, ...]  # batches computed by this run
    skipped: int  # batches of this shard already done
    jobs_computed: int
    seconds: float  # wall time of the batches computed (compilation included)
    compile_seconds: float  # of which compiling fused passes (once per batch shape)
    first_batch_seconds: float | None
    damaged: tuple[str, ...] = ()  # parts found damaged and set aside (their batches computed again)
    evaluations: int | None = None  # denoiser evaluations of the fused passes run (None: not counted)

    @property
    def jobs_per_minute(self) -> float:
        return 60.0 * self.jobs_computed / self.seconds if self.seconds > 0 else float("nan")

    @property
    def steady_jobs_per_minute(self) -> float | None:
        """Jobs/min after the first batch (which also compiles generation and text encoding)."""
        if len(self.computed) < 2 or self.first_batch_seconds is None:
            return None
        rest = self.seconds - self.first_batch_seconds
        jobs_after = self.jobs_computed * (len(self.computed) - 1) / len(self.computed)
        return 60.0 * jobs_after / rest if rest > 0 else None


def run_sweep(
    pipeline: Pipeline,
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
    plan = plan_sweep(jobs, config, pipeline.identity(), analysis=analysis)
    return run_plan(pipeline, plan, out, shard=shard, devices=devices, progress=progress)


def run_plan(
    pipeline: Pipeline,
    plan: BatchPlan,
    out: str | Path,
    *,
    shard: tuple[int, int] = (0, 1),
    devices: Sequence | None = None,
    progress: bool = False,
) -> SweepSummary:
    """Run (or resume) any batched plan (a sweep's, a study's) in this process, one part per batch."""
    plan.check(pipeline.tokenizer)
    store = SweepStore(out)
    store.open(plan.manifest)
    mine = shard_batches(plan.batches, shard)
    done = store.done()
    todo = [b for b in mine if b.index not in done]
    bar = progress_bar(sum(len(b.jobs) for b in todo), progress, len(mine) - len(todo), plan.unit)
    timer = Timer()
    if adaptive(plan):  # per-item stopping: the items of a shape share one stream of rounds
        def write(batch, rows):
            store.write_part(batch.index, rows)
            timer.tick(len(batch.jobs))

        stats = run_batches_adaptive(pipeline, plan, todo, write, devices=devices, on_item=bar.update)
        timer.compile_seconds, timer.evaluations = stats["compile_s"], stats["evaluations"]
    else:
        for batch in todo:
            rows, timings = plan.compute(pipeline, batch, devices=devices)
            store.write_part(batch.index, rows)
            timer.tick(len(batch.jobs), timings["compile_s"], timings.get("evaluations"))
            bar.update(len(batch.jobs))
    bar.close()
    return dataclasses.replace(timer.summary(out, plan, mine, todo), damaged=tuple(store.damaged))


class Timer:
    """Wall time, jobs and compile time of a run, for its ``SweepSummary``."""

    def __init__(self):
        self.start, self.jobs, self.first, self.compile_seconds = time.perf_counter(), 0, None, 0.0
        self.evaluations = None  # denoiser evaluations of the fused passes (padding included), where counted

    def tick(self, jobs: int, compile_seconds: float = 0.0, evaluations: int | None = None) -> None:
        self.jobs += jobs
        self.compile_seconds += compile_seconds
        if evaluations is not None:
            self.evaluations = (self.evaluations or 0) + evaluations
        if self.first is None:
            self.first = time.perf_counter() - self.start

    def summary(self, out, plan: BatchPlan, mine: Sequence, todo: Sequence) -> SweepSummary:
        return SweepSummary(Path(out), plan.fingerprint, plan.n_jobs, len(plan.batches),
                            tuple(b.index for b in todo), len(mine) - len(todo), self.jobs,
                            time.perf_counter() - self.start, self.compile_seconds, self.first,
                            evaluations=self.evaluations)


def progress_bar(total_jobs: int, enabled: bool, skipped_batches: int = 0, unit: str = "job") -> tqdm:
    """A tqdm bar over jobs showing jobs/min and time left (a no-op when disabled)."""
    bar = tqdm(total=total_jobs, unit=unit, disable=not enabled, file=sys.stderr, dynamic_ncols=True,
               desc="sweep" + (f" ({skipped_batches} batches done before)" if skipped_batches else ""),
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} " + unit
                          + "s [{elapsed}<{remaining}{postfix}]")
    original = bar.update

    def update(n: int = 1):
        original(n)
        elapsed = bar.format_dict["elapsed"]
        if elapsed > 0:
            bar.set_postfix_str(f"{60.0 * bar.n / elapsed:.1f} {unit}s/min", refresh=True)

    bar.update = update
    return bar


@functools.lru_cache(maxsize=2)
def cached_pipeline(model: ModelSpec) -> Pipeline:
    """One loaded pipeline per process and model (Ray workers and distributed processes reuse
    it, and with it every compiled program)."""
    return model.load()


def iter_rounds(items: Sequence, n: int) -> Iterable[list]:
    """[a, b, c, d, e], 2 -> [a, b], [c, d], [e]: one item per worker per round."""
    for start in range(0, len(items), n):
        yield list(items[start:start + n])
