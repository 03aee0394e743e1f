"""Running a sweep on many processes: multi-host JAX and Ray.

Both compute exactly the batches of ``jaxpid.sweep.plan_batches`` (same slices, same keys, same
padding), so their tables equal a one-process run's; only the writer of the part files changes.

- Multi-host JAX (``jax.distributed``): every process reads the same job table, process 0
  decides which batches are missing and broadcasts it; each round, process p computes the p-th
  of the next P missing batches on its local devices, the rows travel to process 0 as Arrow
  bytes through ``process_allgather`` (padded to a common length), and process 0 writes them.
- Ray: batches are Ray tasks with retries; each worker process loads the pipeline once
  (``jaxpid.sweep.cached_pipeline``) and so compiles once per shape; the driver writes each
  part file as its result arrives. Ray is an optional dependency, imported only here.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxpid.errors import ConfigError, JaxpidError
from jaxpid.sweep import (
    SweepConfig,
    SweepPlan,
    SweepStore,
    SweepSummary,
    _check_prompts,
    _Timer,
    cached_pipeline,
    compute_batch,
    iter_rounds,
    model_identity,
    plan_sweep,
    progress_bar,
    rows_from_bytes,
    rows_to_bytes,
    shard_batches,
)

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
    import jax

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


def run_sweep_distributed(
    pipeline,
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
    import jax
    from jax.experimental import multihost_utils

    me, count = jax.process_index(), jax.process_count()
    lead = me == 0
    plan, refusal, store = None, None, SweepStore(out)
    try:
        plan = plan_sweep(jobs, config, model_identity(pipeline), analysis=analysis)
        _check_prompts(pipeline.tokenizer, plan.table, config)
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
    bar = progress_bar(sum(len(b.jobs) for b in todo), progress and lead, len(mine) - len(todo))
    timer = _Timer()
    for round_batches in iter_rounds(todo, count):
        batch = round_batches[me] if me < len(round_batches) else None
        payload, failure = b"", None
        if batch is not None:
            try:
                payload = rows_to_bytes(compute_batch(pipeline, plan, batch, config, devices=jax.local_devices()))
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
        timer.tick(sum(len(b.jobs) for b in round_batches))
        bar.update(sum(len(b.jobs) for b in round_batches))
    bar.close()
    multihost_utils.sync_global_devices("jaxpid sweep done")
    return timer.summary(out, plan, mine, todo)


# ---------------------------------------------------------------------------------------------
# Ray


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model named the CLI's way, loadable in any process: 'demo', a folder or a hub id."""

    name: str
    dtype: str = "fp32"  # "fp32" or "bf16"
    variant: str | None = None

    def resolved(self) -> str:
        from jaxpid.demo import resolve_model_name

        return resolve_model_name(self.name)

    def identity(self) -> dict:
        """What ``jaxpid.sweep.model_identity`` gives for the loaded pipeline, without loading it."""
        from jaxpid.weights import fingerprint, resolve_model_path

        name = self.resolved()
        folder = resolve_model_path(name, variant=self.variant)
        return {"name": name, "fingerprint": fingerprint(folder, self.variant),
                "dtype": {"fp32": "float32", "bf16": "bfloat16"}[self.dtype]}

    def load(self):
        return cached_pipeline(self.resolved(), self.dtype, self.variant)


def _ray_batch(model: ModelSpec, plan: SweepPlan, batch, config: SweepConfig) -> bytes:
    """A Ray task: one batch in a worker process (pipeline and programs cached per process)."""
    return rows_to_bytes(compute_batch(model.load(), plan, batch, config))


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
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray: pip install 'jaxpid[ray]'") from None

    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "runtime_env": runtime_env}
        if address is None:
            kwargs["num_cpus"] = num_cpus
        ray.init(address=address, **kwargs)
    plan = plan_sweep(jobs, config, model.identity(), analysis=analysis)
    _check_prompts(_tokenizer(model), plan.table, config)
    store = SweepStore(out)
    store.open(plan.manifest)
    mine = shard_batches(plan.batches, shard)
    todo = [b for b in mine if b.index not in store.done()]
    task = ray.remote(_ray_batch).options(num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_retries=max_retries)
    model_ref, plan_ref = ray.put(model), ray.put(plan)
    pending = {task.remote(model_ref, plan_ref, b, config): b for b in todo}
    bar = progress_bar(sum(len(b.jobs) for b in todo), progress, len(mine) - len(todo))
    timer = _Timer()
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            batch = pending.pop(ready[0])
            store.write_part(batch.index, rows_from_bytes(ray.get(ready[0])))
            timer.tick(len(batch.jobs))
            bar.update(len(batch.jobs))
    finally:
        for ref in pending:
            ray.cancel(ref)
        bar.close()
    return timer.summary(out, plan, mine, todo)


def _tokenizer(model: ModelSpec):
    """The model's tokenizer alone (the Ray driver checks prompts without loading weights)."""
    from jaxpid.tokenizer import load_tokenizer
    from jaxpid.weights import read_json_config, resolve_model_path

    folder = resolve_model_path(model.resolved(), variant=model.variant)
    positions = read_json_config(folder / "text_encoder").get("max_position_embeddings")
    return load_tokenizer(folder / "tokenizer", model_max_positions=positions)


__all__: Sequence[str] = ("ModelSpec", "initialize_distributed", "run_sweep_distributed", "run_sweep_ray")
