"""Running a sweep on many processes: multi-host JAX and Ray.

Both compute exactly the batches of ``jaxpid.sweeps.plan.plan_batches`` (same slices, same keys, same
padding), so their tables equal a one-process run's; only the writer of the part files changes.

- Multi-host JAX (``jax.distributed``): every process reads the same job table, process 0
  decides which batches are missing and broadcasts it; each round, process p computes the p-th
  of the next P missing batches on its local devices, the rows travel to process 0 as Arrow
  bytes through ``process_allgather`` (padded to a common length), and process 0 writes them.
- Ray: batches are Ray tasks with retries; each worker process loads the pipeline once
  (``jaxpid.sweeps.runner.cached_pipeline``) and so compiles once per shape; the driver writes each
  part file as its result arrives. Ray is an optional dependency, imported only here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

import jax
from jax.experimental import multihost_utils

from jaxpid.devices import use_cpu_cores
from jaxpid.errors import ConfigError, JaxpidError
from jaxpid.sd.pipeline import ModelSpec, Pipeline
from jaxpid.sd.tokenizer import PromptTokenizer, load_tokenizer
from jaxpid.sd.weights import read_json_config, resolve_model_path
from jaxpid.sweeps.batch import rows_from_bytes, rows_to_bytes
from jaxpid.sweeps.config import SweepConfig
from jaxpid.sweeps.plan import BatchPlan, plan_sweep, shard_batches
from jaxpid.sweeps.adaptive import adaptive
from jaxpid.sweeps.runner import SweepSummary, Timer, cached_pipeline, iter_rounds, progress_bar
from jaxpid.sweeps.store import SweepStore

_DIGEST_BYTES = 32


# ---------------------------------------------------------------------------------------------
# Multi-host JAX


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> tuple[int, int]:
    """``jax.distributed.initialize``; arguments left None come from the environment
    (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``, or a cluster JAX
    detects: SLURM, Open MPI, TPU pods). Must run before any other JAX call. -> (index, count)."""
    env = os.environ
    coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = int(env["JAX_PROCESS_ID"])
    # Cross-process collectives on CPU need an implementation; gloo is jax's default since 0.5,
    # set explicitly so an older default ("none") cannot make process_allgather fail.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
    return jax.process_index(), jax.process_count()


def refuse_adaptive(plan, backend: str) -> None:
    """Per-item stopping refills slots across batches inside one process: only the local runner."""
    if adaptive(plan):
        raise ConfigError(f"{backend} runs fixed batches of N samples: a target standard error (or a sequential "
                          "decision) refills slots across batches in one process; use --backend local (each process "
                          "its own --shard), or a fixed --samples")


def run_sweep_distributed(
    pipeline: Pipeline,
    jobs,
    out: str | Path,
    config: SweepConfig = SweepConfig(),
    *,
    analysis: str = "pid",
    shard: tuple[int, int] = (0, 1),
    progress: bool = False,
) -> SweepSummary:
    """Run (or resume) a sweep over all processes of an initialised ``jax.distributed`` job.

    Every process calls this with the same arguments. Only process 0 touches ``out``.

    Raises:
      ConfigError: process 0 refused ``out`` (another sweep there), or the processes were given
        different job tables.
    """
    return run_plan_distributed(pipeline, lambda: plan_sweep(jobs, config, pipeline.identity(), analysis=analysis),
                                out, shard=shard, progress=progress)


def run_plan_distributed(
    pipeline: Pipeline,
    make_plan: Callable[[], BatchPlan],
    out: str | Path,
    *,
    shard: tuple[int, int] = (0, 1),
    progress: bool = False,
) -> SweepSummary:
    """Run (or resume) any batched plan over all processes of an initialised ``jax.distributed`` job.

    Every process calls this with the same arguments; ``make_plan`` builds the plan in each (its
    refusals are gathered before anyone computes). Only process 0 touches ``out``.
    """
    me, count = jax.process_index(), jax.process_count()
    lead = me == 0
    plan, refusal, store = None, None, SweepStore(out)
    try:
        plan = make_plan()
        refuse_adaptive(plan, "the multi-host JAX backend")
        plan.check(pipeline.tokenizer)
        if lead:
            store.open(plan.manifest)
    except JaxpidError as error:
        refusal = error
    # Header: [refused?, digest bytes, number of batches]; every process checks it agrees.
    header = np.zeros(1 + _DIGEST_BYTES + 8, np.uint8)
    if plan is not None:
        header[1:1 + _DIGEST_BYTES] = np.frombuffer(bytes.fromhex(plan.fingerprint), np.uint8)
        header[1 + _DIGEST_BYTES:] = np.frombuffer(np.int64(len(plan.batches)).tobytes(), np.uint8)
    header[0] = refusal is not None
    header = np.asarray(multihost_utils.broadcast_one_to_all(header))
    if refusal is None and header[0]:
        refusal = ConfigError("process 0 refused the sweep (see its error); nothing was computed")
    if refusal is None and bytes(header[1:1 + _DIGEST_BYTES]).hex() != plan.fingerprint:
        refusal = ConfigError(f"process {me} planned a different sweep than process 0 (fingerprints differ: "
                              "another job table, configuration, model or priors)")
    # Every process learns whether any refused before anyone waits in a later collective.
    refused = np.asarray(multihost_utils.process_allgather(np.array([refusal is not None], np.uint8))).reshape(count)
    if refusal is not None:
        raise refusal
    if refused.any():
        raise ConfigError(f"process(es) {np.flatnonzero(refused).tolist()} refused the sweep (see their errors)")

    mine = shard_batches(plan.batches, shard)
    done = np.zeros(len(plan.batches), np.uint8)
    if lead:
        done[sorted(store.done())] = 1
    done = np.asarray(multihost_utils.broadcast_one_to_all(done))
    todo = [b for b in mine if not done[b.index]]
    bar = progress_bar(sum(len(b.jobs) for b in todo), progress and lead, len(mine) - len(todo), plan.unit)
    timer = Timer()
    for round_batches in iter_rounds(todo, count):
        batch = round_batches[me] if me < len(round_batches) else None
        payload, failure, compile_s = b"", None, 0.0
        if batch is not None:
            try:
                rows, timings = plan.compute(pipeline, batch, devices=jax.local_devices())
                payload, compile_s = rows_to_bytes(rows), timings["compile_s"]
            except Exception as error:  # noqa: BLE001 -- every process must reach the collective
                failure = error
        sizes = np.asarray(multihost_utils.process_allgather(
            np.array([-1 if failure else len(payload)], np.int64))).reshape(count)
        if failure is not None:
            raise failure
        if np.any(sizes < 0):
            raise JaxpidError(f"process(es) {np.flatnonzero(sizes < 0).tolist()} failed; see their errors")
        buffer = np.zeros(int(sizes.max()), np.uint8)
        buffer[:len(payload)] = np.frombuffer(payload, np.uint8)
        gathered = np.asarray(multihost_utils.process_allgather(buffer)).reshape(count, -1)
        if lead:
            for p, b in enumerate(round_batches):
                store.write_part(b.index, rows_from_bytes(gathered[p, :sizes[p]].tobytes()))
        timer.tick(sum(len(b.jobs) for b in round_batches), compile_s)  # this process's compile time
        bar.update(sum(len(b.jobs) for b in round_batches))
    bar.close()
    multihost_utils.sync_global_devices("jaxpid sweep done")
    return timer.summary(out, plan, mine, todo)


# ---------------------------------------------------------------------------------------------
# Ray


def _ray_batch(model: ModelSpec, plan: BatchPlan, batch) -> tuple[bytes, float]:
    """A Ray task: one batch in a worker process (pipeline and programs cached per process).
    -> (rows as Arrow bytes, seconds spent compiling)."""
    use_cpu_cores()  # a worker process of jaxpid's: one JAX CPU device per core, as the CLI does
    rows, timings = plan.compute(cached_pipeline(model), batch)
    return rows_to_bytes(rows), timings["compile_s"]


def run_sweep_ray(
    model: ModelSpec,
    jobs,
    out: str | Path,
    config: SweepConfig = SweepConfig(),
    *,
    analysis: str = "pid",
    shard: tuple[int, int] = (0, 1),
    address: str | None = None,
    num_cpus: int | None = None,
    cpus_per_task: float = 1.0,
    gpus_per_task: float = 0.0,
    max_retries: int = 3,
    runtime_env: dict | None = None,
    progress: bool = False,
) -> SweepSummary:
    """Run (or resume) a sweep as Ray tasks, one per missing batch; this driver writes the parts.

    Args:
      model: the model, loaded by each worker process once.
      address: an existing Ray cluster ("auto", "ray://host:10001", ...); None starts a local
        one (``num_cpus`` CPUs), unless Ray is already initialised in this process.
      max_retries: times a task is retried when its worker dies (preemption, out of memory).
      runtime_env: passed to ``ray.init`` (e.g. environment variables for the workers).
    """
    plan = plan_sweep(jobs, config, model.identity(), analysis=analysis)
    return run_plan_ray(model, plan, out, shard=shard, address=address, num_cpus=num_cpus, cpus_per_task=cpus_per_task,
                        gpus_per_task=gpus_per_task, max_retries=max_retries, runtime_env=runtime_env,
                        progress=progress)


def run_plan_ray(
    model: ModelSpec,
    plan: BatchPlan,
    out: str | Path,
    *,
    shard: tuple[int, int] = (0, 1),
    address: str | None = None,
    num_cpus: int | None = None,
    cpus_per_task: float = 1.0,
    gpus_per_task: float = 0.0,
    max_retries: int = 3,
    runtime_env: dict | None = None,
    progress: bool = False,
) -> SweepSummary:
    """Run (or resume) any batched plan as Ray tasks, one per missing batch; this driver writes.
    Arguments as in ``run_sweep_ray``."""
    ray = _ray(address, num_cpus, runtime_env)
    refuse_adaptive(plan, "the Ray backend")
    plan.check(_tokenizer(model))
    store = SweepStore(out)
    store.open(plan.manifest)
    mine = shard_batches(plan.batches, shard)
    todo = [b for b in mine if b.index not in store.done()]
    task = ray.remote(_ray_batch).options(num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_retries=max_retries)
    model_ref, plan_ref = ray.put(model), ray.put(plan)
    pending = {task.remote(model_ref, plan_ref, b): b for b in todo}
    bar = progress_bar(sum(len(b.jobs) for b in todo), progress, len(mine) - len(todo), plan.unit)
    timer = Timer()
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            batch = pending.pop(ready[0])
            payload, compile_s = ray.get(ready[0])
            store.write_part(batch.index, rows_from_bytes(payload))
            timer.tick(len(batch.jobs), compile_s)
            bar.update(len(batch.jobs))
    finally:
        for ref in pending:
            ray.cancel(ref)
        bar.close()
    return timer.summary(out, plan, mine, todo)


def _ray(address: str | None, num_cpus: int | None, runtime_env: dict | None):
    """The ray module, initialised (a local runtime when no address is given) unless it is already."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install 'jaxpid[ray]'") from None
    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "runtime_env": runtime_env}
        if address is None:
            kwargs["num_cpus"] = num_cpus
        ray.init(address=address, **kwargs)
    return ray


def _tokenizer(model: ModelSpec) -> PromptTokenizer:
    """The model's tokenizer alone (the Ray driver checks prompts without loading weights)."""
    folder = resolve_model_path(model.name, variant=model.variant)
    positions = read_json_config(folder / "text_encoder").get("max_position_embeddings")
    return load_tokenizer(folder / "tokenizer", model_max_positions=positions)


__all__: Sequence[str] = ("initialize_distributed", "run_plan_distributed", "run_plan_ray", "run_sweep_distributed",
                          "run_sweep_ray")
