"""The fused estimator: all conditionings × all log-SNR samples of every image in one program.

A *denoiser* is any callable ``denoise(z, logsnr, cond) -> eps_hat`` with ``z: (B, C, H, W)``,
``logsnr: (B,)`` and ``cond`` a pytree whose leaves have leading dimension B. If it has a method
``snap_logsnr(logsnr) -> logsnr`` (discrete-time models), z is built with the snapped log-SNR so
that z and the queried timestep agree (docs/method.md#noise-channel-and-log-snr). Denoisers that
are pytrees (e.g. a dataclass holding parameters) pass their arrays as traced arguments, so
weights are never baked into the compiled program as constants.

Work items are (image, sample) pairs. Item (i, n) draws its (α, ε) from
``fold_in(key_i, n)``, and every conditioning of image i sees the same draw (common random
numbers). Items are split evenly over the devices of a 1-D mesh (``shard_map``) and, on each
device, scanned in chunks of ``chunk_size`` samples, so memory stays flat in N and S and the
result depends only on the keys and inputs, never on chunking or device count.

``FusedPass`` is that program as an object: ``prepare`` validates inputs, ``lower`` /
``compile`` build it (compiled programs are cached per shape, so each shape compiles once per
process), ``run`` executes it and ``summarise`` turns its per-sample terms into an
``InformationResult`` on the host; ``rounds`` runs it again on the next N samples of every image
until the standard errors reach a target (the first sample index is an argument of the program,
so rounds never recompile). ``information`` is the one-call form.

Progress: an ``on_chunk`` callback (``FusedPass(on_chunk=...)``, ``information(on_chunk=...)`` or,
for callers several layers up, a ``report_chunks_to(callback)`` block) receives a ``PassProgress``
as each chunk of the pass finishes. It is reported from inside the compiled scan by a host callback
that only a program built with progress contains: without one, the program is the one it always
was; with one, every number is the same (the callback reads a finished value and writes nothing
back).
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import dataclasses
import functools
import itertools
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

from jaxpid.core.config import EstimatorConfig, check_chunk_size, check_n_samples
from jaxpid.core.memory import bytes_per_evaluation, chunk_size_for_memory, free_device_memory
from jaxpid.core.results import InformationResult
from jaxpid.core.sampling import LogSNRSampler, StratifiedSampler, stratified_stderr
from jaxpid.errors import ConfigError, NonFiniteError, ShapeError

Denoiser = Callable[[jax.Array, jax.Array, Any], jax.Array]

DEFAULT_MAX_BATCH = 64  # denoiser evaluations per device per step when chunk_size is not given (CPU)
COMPILED_CACHE_SIZE = 32  # compiled programs kept per process (one per shape and setting)


# ---------------------------------------------------------------------------------------------
# The public compiled pass.


@dataclasses.dataclass(frozen=True)
class PassInputs:
    """Validated, device-ready arguments of one fused pass (``FusedPass.prepare``)."""

    plan: _Plan  # the static part: denoiser structure, sampler, N, chunking, mesh, pairs
    dynamic: list  # the denoiser's arrays (traced, never constants)
    x: jax.Array  # (I, C, H, W) float
    conds: Any  # pytree, leaves (I, S, ...)
    keys: jax.Array  # (I,) typed keys, one per image
    key_record: dict  # the key(s) as given, recorded in the result's config
    chunk_memory: dict | None = None  # how device memory chose the chunk (no chunk_size given, memory tracked)
    probe_compile_s: float = 0.0  # compile time spent choosing that chunk in this prepare (0 once cached)

    @property
    def n_images(self) -> int:
        return self.x.shape[0]

    @property
    def n_conditionings(self) -> int:
        return jax.tree.leaves(self.conds)[0].shape[1]

    def signature(self) -> tuple:
        """What a compiled program depends on besides the plan: pytree structure, shapes, dtypes."""
        leaves, treedef = jax.tree.flatten((self.dynamic, self.x, self.conds, self.keys))
        return treedef, tuple((tuple(a.shape), str(a.dtype)) for a in leaves)


@dataclasses.dataclass(frozen=True)
class CompiledPass:
    """A fused pass compiled for one shape, and what XLA says about it."""

    executable: Any  # jax.stages.Compiled
    compile_seconds: float  # lowering + XLA compilation, when it was built
    temp_bytes: int | None  # XLA's temporary-buffer size (peak scratch memory of the program)
    argument_bytes: int | None
    evaluations: int  # denoiser evaluations per run, padding included


@dataclasses.dataclass(frozen=True)
class PassProgress:
    """How far a running fused pass is, handed to an ``on_chunk`` callback (see ``FusedPass``).

    The devices run their chunks in step, so device 0's count stands for all of them. The
    callback is called from a thread of the runtime: it should be quick and must not call JAX.
    """

    chunks_done: int  # chunks finished per device; 0 once compiled, just before the first chunk
    chunks: int  # chunks per device in this run
    evaluations: int  # denoiser evaluations of this run, all devices, padding included
    elapsed_s: float  # since this run was launched (compilation excluded)
    first_chunk_s: float | None = None  # how long the first chunk took (None before it finished)
    round: int = 0  # 0-based round of ``FusedPass.rounds``; 0 for a single pass

    @property
    def seconds_per_chunk(self) -> float | None:
        """The rate of the chunks after the first (which also pays for starting the program:
        measured on the CPU, ~5x a later chunk), or the first's alone while it is the only one."""
        if self.chunks_done == 0:
            return None
        if self.chunks_done == 1:
            return self.elapsed_s
        return (self.elapsed_s - self.first_chunk_s) / (self.chunks_done - 1)

    @property
    def remaining_s(self) -> float | None:
        rate = self.seconds_per_chunk
        return None if rate is None else rate * (self.chunks - self.chunks_done)

    @property
    def estimated_total_s(self) -> float | None:
        """The whole run's time at the rate so far (None before the first chunk has finished)."""
        remaining = self.remaining_s
        return None if remaining is None else self.elapsed_s + remaining


ChunkCallback = Callable[[PassProgress], None]
# A pass under a report_chunks_to block reports chunks only from this many evaluations (see
# FusedPass._reports_chunks): ~10 s of the demo model on 2 CPU cores, under a second on a GPU.
SCOPED_PROGRESS_MIN_EVALUATIONS = 20_000

# The callback of a ``report_chunks_to`` block: the CLI reaches passes made deep inside the analyses
# without threading an argument through each of them.
_SCOPED_ON_CHUNK: contextvars.ContextVar[ChunkCallback | None] = contextvars.ContextVar("jaxpid_progress", default=None)


@contextlib.contextmanager
def report_chunks_to(callback: ChunkCallback | None):
    """Every ``FusedPass`` run in this block (this thread or task) that was given no ``on_chunk``
    of its own reports its chunks to ``callback`` (``None``: none do)."""
    token = _SCOPED_ON_CHUNK.set(callback)
    try:
        yield
    finally:
        _SCOPED_ON_CHUNK.reset(token)


_COMPILED: collections.OrderedDict[tuple, CompiledPass] = collections.OrderedDict()
# (plan with chunk_size 0, input signature) -> the memory rule's decision, made once per process
_MEMORY_CHUNKS: collections.OrderedDict[tuple, dict] = collections.OrderedDict()


class FusedPass:
    """``information``'s compiled program for one denoiser and setting, reusable across calls.

    >>> fused = FusedPass(denoise, n_samples=100)
    >>> inputs = fused.prepare(x, conds, key=jax.random.key(0))
    >>> compiled = fused.compile(inputs)      # compiled once per shape (cached per process)
    >>> result = fused(x, conds, key=jax.random.key(0))   # InformationResult, timings included
    >>> result = fused.rounds(x, conds, key=jax.random.key(0), max_samples=1000,
    ...                       done=lambda r: r.stderr_orthogonal.max() < 0.1)   # more samples until done

    Args:
      denoise: the denoiser (see the module docstring).
      n_samples: log-SNR samples N per image (each with one noise draw).
      sampler: importance sampler over log-SNR.
      reference: index of the conditioning the information is measured against
        (0 = unconditional / context-only in the subset order of docs/method.md).
      chunk_size: samples evaluated together per device per step (× S denoiser calls);
        default: as many as fit ``DEFAULT_MAX_BATCH`` denoiser evaluations where the devices do
        not track their memory (the CPU); where they do (GPU, TPU), the chunk whose step fits
        their free memory (``jaxpid.core.memory``, decided once per shape; see ``prepare``).
      pairs: (s, t) conditioning pairs whose information i(x; s against t) is also wanted,
        e.g. a word's conditional information given another word: (both words, the other word).
      devices: devices to shard the work over; default all local devices.
      collect_aux: also average the denoiser's auxiliary output over each image's samples: the
        denoiser's ``with_aux(z, logsnr, cond)`` returns (ε̂, aux), aux a pytree whose leaves lead
        with the batch (e.g. a UNet's cross-attention maps); ``InformationResult.aux`` holds its
        mean per (image, conditioning), leaves (I, S, ...).
      on_chunk: called with a ``PassProgress`` once the program is compiled (``chunks_done`` 0)
        and as each chunk finishes (``__call__`` and ``rounds``; ``run`` alone reports nothing),
        e.g. to print an estimate of the time left. Default: the callback of an enclosing
        ``report_chunks_to`` block, if any. A pass that reports chunks compiles its own program
        (the scan calls back to the host once per chunk); its results are identical to one without.
    """

    def __init__(
        self,
        denoise: Denoiser,
        *,
        n_samples: int = EstimatorConfig.n_samples,
        sampler: LogSNRSampler = StratifiedSampler(),
        reference: int = 0,
        chunk_size: int | None = None,
        pairs: Sequence[tuple[int, int]] = (),
        devices: Sequence[jax.Device] | None = None,
        collect_aux: bool = False,
        on_chunk: ChunkCallback | None = None,
    ):
        if on_chunk is not None and not callable(on_chunk):
            raise ConfigError(f"on_chunk must be a callable taking a PassProgress, got {on_chunk!r}")
        self.on_chunk = on_chunk
        # a precision target (set by from_config), read by the callers that run rounds to it
        self.target_stderr: float | None = None
        self.max_samples: int | None = None
        if collect_aux and not callable(getattr(denoise, "with_aux", None)):
            raise ConfigError("collect_aux=True needs a denoiser with a with_aux(z, logsnr, cond) -> (eps_hat, aux) "
                              f"method; {type(denoise).__name__} has none")
        self.collect_aux = bool(collect_aux)
        self.denoise = denoise
        self.n_samples = check_n_samples(n_samples)
        if not all(callable(getattr(sampler, m, None)) for m in ("draw", "for_samples", "to_dict")):
            raise ConfigError(f"sampler must be a log-SNR sampler with draw(u, sample, n_samples), for_samples(n) "
                              f"and to_dict() (jaxpid.core.sampling.LogSNRSampler), got {sampler!r}")
        self.sampler = sampler.for_samples(self.n_samples)  # raises if N is too small for its strata
        self.reference = reference
        self.chunk_size = check_chunk_size(chunk_size)
        self.pairs = pairs
        self.devices = tuple(jax.devices() if devices is None else devices)
        if not self.devices:
            raise ConfigError("devices is empty: give at least one device to run the pass on")

    @classmethod
    def from_config(cls, denoise: Denoiser, config: EstimatorConfig, **kwargs) -> FusedPass:
        """The pass of ``config``: its samples, sampler and chunking, and its precision target
        (``target_stderr`` / ``max_samples``, kept on the pass: the sweeps' and studies' per-item
        rounds run them; a plain call of the pass runs one round of N)."""
        fused = cls(denoise, n_samples=config.n_samples, sampler=config.sampler, chunk_size=config.chunk_size, **kwargs)
        fused.target_stderr, fused.max_samples = config.target_stderr, config.max_samples
        return fused

    # -------------------------------------------------------------------- inputs and program

    def prepare(self, x: jax.Array, conds: Any, *, key: jax.Array, conds_per_image: bool = False) -> PassInputs:
        """Validate the inputs and fix the plan (chunking depends on the number of images).

        Without a ``chunk_size``, on devices that report their free memory, the chunk comes from
        it: the pass is compiled with the default chunk, XLA's scratch size of that program gives
        the bytes of one denoiser evaluation, and ``chunk_size_for_memory`` picks the chunk whose
        step fits the least free memory of the devices (balanced over each device's samples).
        The decision is made once per (setting, input shapes) and process; results do not
        depend on it. On the CPU the default cap stays.

        Args:
          x: images, (I, C, H, W) (for Stable Diffusion: VAE latents).
          conds: pytree of S conditionings, leaves (S, ...); with ``conds_per_image`` (I, S, ...).
          key: a PRNG key (image i uses ``fold_in(key, i)``) or I keys, one per image.
        """
        x = jnp.asarray(x)
        if x.ndim != 4:
            raise ShapeError(f"x must be a batch of images (I, C, H, W); got shape {tuple(x.shape)}")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ShapeError(f"x must be floating point (latents, not uint8 pixels); got dtype {x.dtype}")
        n_images = x.shape[0]
        conds = jax.tree.map(jnp.asarray, conds)
        n_conds = _conditioning_count(conds, n_images if conds_per_image else None)
        if not conds_per_image:
            conds = jax.tree.map(lambda a: jnp.broadcast_to(a[None], (n_images,) + a.shape), conds)
        if not isinstance(self.reference, (int, np.integer)) or not 0 <= self.reference < n_conds:
            raise ConfigError(f"reference={self.reference!r} is not a conditioning index in [0, {n_conds})")
        keys, key_record = _image_keys(key, n_images)
        pairs = _check_pairs(self.pairs, n_conds)
        chunk_size = self.chunk_size
        per_device = math.ceil(n_images * self.n_samples / len(self.devices))
        if chunk_size is None:
            chunk_size = max(1, min(per_device, DEFAULT_MAX_BATCH // n_conds))
        dynamic, static = _split_denoiser(self.denoise)
        plan = _Plan(
            static=static,
            sampler=self.sampler,
            n_samples=self.n_samples,
            reference=int(self.reference),
            chunk_size=int(chunk_size),
            mesh=Mesh(np.array(self.devices), ("d",)),
            pairs=pairs,
            collect_aux=self.collect_aux,
            report_chunks=self._reports_chunks(n_images * self.n_samples * n_conds),
        )
        inputs = PassInputs(plan, dynamic, x, conds, keys, key_record)
        if self.chunk_size is None:
            inputs = self._fit_chunk_to_memory(inputs, per_device)
        return inputs

    def _fit_chunk_to_memory(self, inputs: PassInputs, items_per_device: int) -> PassInputs:
        """``inputs`` re-planned with the chunk the devices' free memory allows (see ``prepare``);
        unchanged where a device does not track its memory."""
        free = [free_device_memory(device) for device in self.devices]
        if any(f is None for f in free):
            return inputs  # the CPU: the fixed cap stays the rule
        decision_key = (dataclasses.replace(inputs.plan, chunk_size=0), inputs.signature())
        decision = _MEMORY_CHUNKS.get(decision_key)
        probe_seconds = 0.0
        if decision is None:
            fresh = (inputs.plan, inputs.signature()) not in _COMPILED
            probe = self.compile(inputs)  # the default chunk's program, cached: used as is if it is chosen
            probe_seconds = probe.compile_seconds if fresh else 0.0
            decision = _memory_decision(probe, inputs, min(free), items_per_device)
            _MEMORY_CHUNKS[decision_key] = decision
            while len(_MEMORY_CHUNKS) > COMPILED_CACHE_SIZE:
                _MEMORY_CHUNKS.popitem(last=False)
        plan = dataclasses.replace(inputs.plan, chunk_size=decision["chunk_size"])
        return dataclasses.replace(inputs, plan=plan, chunk_memory=decision, probe_compile_s=probe_seconds)

    def lower(self, inputs: PassInputs):
        """The program lowered to StableHLO (``jax.stages.Lowered``) for these inputs' shapes."""
        # Each item draws from its own key, so how threefry partitions bits across devices cannot
        # change any value; the non-partitionable lowering compiles ~20x faster on CPU (12 s ->
        # 0.5 s for one chunk of 16 latents of 4x16x16 on jax 0.10).
        with jax.threefry_partitionable(False):
            return _fused_pass.lower(inputs.plan, inputs.dynamic, inputs.x, inputs.conds, inputs.keys,
                                     _first_samples(0, inputs.n_images), _progress_token(inputs.plan, 0))

    def compile(self, inputs: PassInputs) -> CompiledPass:
        """The compiled program for these inputs' shapes: built once per process, then cached."""
        cache_key = (inputs.plan, inputs.signature())
        cached = _COMPILED.get(cache_key)
        if cached is not None:
            _COMPILED.move_to_end(cache_key)
            return cached
        t0 = time.perf_counter()
        executable = self.lower(inputs).compile()
        seconds = time.perf_counter() - t0
        memory = executable.memory_analysis()
        plan = inputs.plan
        steps = math.ceil(inputs.n_images * plan.n_samples / (plan.mesh.size * plan.chunk_size))
        compiled = CompiledPass(
            executable=executable,
            compile_seconds=seconds,
            temp_bytes=None if memory is None else int(memory.temp_size_in_bytes),
            argument_bytes=None if memory is None else int(memory.argument_size_in_bytes),
            evaluations=plan.mesh.size * steps * plan.chunk_size * inputs.n_conditionings,
        )
        _COMPILED[cache_key] = compiled
        while len(_COMPILED) > COMPILED_CACHE_SIZE:
            _COMPILED.popitem(last=False)
        return compiled

    def run(self, inputs: PassInputs, compiled: CompiledPass | None = None, *, first_sample: int = 0) -> dict:
        """Execute the program; returns its outputs as device arrays (not waited for).

        ``first_sample``: the index of the first of this run's N samples per image (a later
        round of ``rounds`` draws samples first_sample … first_sample + N − 1, as one longer
        pass would: same compiled program, the offset is an argument) — one number, or one per
        image (``jaxpid.core.adaptive``: items at different rounds share a run)."""
        return self._launch(inputs, compiled or self.compile(inputs), first_sample, 0)

    def _launch(self, inputs: PassInputs, compiled: CompiledPass, first_sample: int, token: int) -> dict:
        executable = compiled.executable
        args = (inputs.dynamic, inputs.x, inputs.conds, inputs.keys, _first_samples(first_sample, inputs.n_images),
                _progress_token(inputs.plan, token))
        # A compiled program takes arrays laid out as it was compiled for; place them so.
        args = jax.device_put(args, executable.input_shardings[0])
        return executable(*args)

    def _on_chunk(self) -> ChunkCallback | None:
        return self.on_chunk if self.on_chunk is not None else _SCOPED_ON_CHUNK.get()

    def _reports_chunks(self, evaluations: int) -> bool:
        """Whether this pass's program reports its chunks: always with an ``on_chunk`` of its own;
        with a ``report_chunks_to`` block's callback only for a pass of at least
        ``SCOPED_PROGRESS_MIN_EVALUATIONS`` (a program with host callbacks stays out of JAX's
        persistent compilation cache, and a short pass needs no progress: the CLI's second run
        of a short job loads its program instead of compiling it)."""
        if self.on_chunk is not None:
            return True
        return _SCOPED_ON_CHUNK.get() is not None and evaluations >= SCOPED_PROGRESS_MIN_EVALUATIONS

    def _run_waited(self, inputs: PassInputs, compiled: CompiledPass, first_sample: int = 0, round_: int = 0) -> dict:
        """``run``, waited for, reporting its chunks to ``on_chunk`` (if the plan reports them)."""
        callback = self._on_chunk()
        if not inputs.plan.report_chunks or callback is None:
            return jax.block_until_ready(self.run(inputs, compiled, first_sample=first_sample))
        plan = inputs.plan
        chunks = math.ceil(inputs.n_images * plan.n_samples / (plan.mesh.size * plan.chunk_size))
        t0, first = time.perf_counter(), []

        def report(done: int) -> None:
            elapsed = time.perf_counter() - t0
            if done and not first:
                first.append(elapsed)
            callback(PassProgress(done, chunks, compiled.evaluations, elapsed, first[0] if first else None, round_))

        # A program with host callbacks runs inside the call that launches it on the CPU, where a
        # signal handler cannot run until the whole pass ends: launch it from a worker thread, so
        # this one waits where Ctrl-C and SIGTERM still interrupt it.
        listener = _Listener(report)
        outcome: dict = {}

        def launch() -> None:
            try:
                outcome["raw"] = jax.block_until_ready(self._launch(inputs, compiled, first_sample, listener.token))
            except BaseException as error:  # noqa: BLE001  (handed to the waiting thread)
                outcome["error"] = error
            finally:
                listener.close()

        report(0)
        worker = threading.Thread(target=launch, name="jaxpid-fused-pass", daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                # in short waits: a signal the kernel hands to another thread only runs its
                # Python handler once this thread is back in Python
                worker.join(0.1)
        except BaseException:
            listener.stop()  # interrupted: no more reports; the program ends in the background
            raise
        if listener.error is not None:  # on_chunk raised (in the runtime's thread): raise it here
            raise listener.error
        if "error" in outcome:
            raise outcome["error"]
        return outcome["raw"]

    def summarise(self, raw: dict, inputs: PassInputs, timings: dict | None = None) -> InformationResult:
        """Per-sample terms on the device -> an ``InformationResult`` (host, float64)."""
        return _summarise(jax.device_get(raw), inputs, timings or {})

    def __call__(self, x: jax.Array, conds: Any, *, key: jax.Array, conds_per_image: bool = False) -> InformationResult:
        inputs = self.prepare(x, conds, key=key, conds_per_image=conds_per_image)
        fresh = (inputs.plan, inputs.signature()) not in _COMPILED
        compiled = self.compile(inputs)
        t0 = time.perf_counter()
        raw = self._run_waited(inputs, compiled)
        # a chunk chosen from device memory compiled the default chunk's program first
        compile_s = (compiled.compile_seconds if fresh else 0.0) + inputs.probe_compile_s
        timings = {"compile_s": compile_s, "run_s": time.perf_counter() - t0, "evaluations": compiled.evaluations}
        return self.summarise(raw, inputs, timings)

    def rounds(
        self,
        x: jax.Array,
        conds: Any,
        *,
        key: jax.Array,
        done: Callable[[InformationResult], bool],
        max_samples: int,
        conds_per_image: bool = False,
        progress: Callable[[InformationResult], None] | None = None,
    ) -> InformationResult:
        """Rounds of this pass's N samples per image until ``done(result)`` or ``max_samples``.

        Round r draws samples rN … (r + 1)N − 1 of every image with the one compiled program
        (the first sample is an argument), so the result after R rounds is the result of one
        pass of RN samples with the same key and the recorded sampler. The stratified sampler's
        strata must divide N (every round then adds the same number of samples to each stratum).
        The result's config records ``rounds`` and ``max_samples``; ``progress`` is called with
        the result after each round (``on_chunk`` sees the chunks of each round).
        """
        n = self.n_samples
        max_samples = int(max_samples)
        if max_samples < n:
            raise ConfigError(f"max_samples ({max_samples}) is below the samples of one round ({n})")
        if n % self.sampler.strata:
            raise ConfigError(f"rounds of {n} samples cannot keep {self.sampler.strata} strata balanced: use an even "
                              f"number of samples per round (strata = samples // 2) or strata that divide it")
        inputs = self.prepare(x, conds, key=key, conds_per_image=conds_per_image)
        fresh = (inputs.plan, inputs.signature()) not in _COMPILED
        compiled = self.compile(inputs)
        timings = {"compile_s": (compiled.compile_seconds if fresh else 0.0) + inputs.probe_compile_s, "run_s": 0.0}
        total, rounds = None, 0
        while True:
            t0 = time.perf_counter()
            raw = jax.device_get(self._run_waited(inputs, compiled, first_sample=rounds * n, round_=rounds))
            timings["run_s"] += time.perf_counter() - t0
            total, rounds = raw if total is None else join_rounds(total, raw), rounds + 1
            result = _summarise(total, inputs, timings)
            stop = done(result)
            if progress is not None:
                progress(result)
            if stop or (rounds + 1) * n > max_samples:
                config = {**result.config, "rounds": rounds, "samples_per_round": n, "max_samples": max_samples,
                          "stopped": "target reached" if stop else "max_samples reached"}
                return dataclasses.replace(result, config=config)


def _first_samples(first_sample, n_images: int) -> np.ndarray:
    """The first sample index of each image's run, (I,) int32 (one number: the same for all)."""
    first = np.asarray(first_sample, np.int32)
    if first.ndim == 0:
        return np.full(n_images, first, np.int32)
    if first.shape != (n_images,):
        raise ShapeError(f"first_sample: one index or one per image ({n_images},); got shape {first.shape}")
    if (first < 0).any():
        raise ConfigError(f"first_sample must be >= 0, got {first.tolist()}")
    return first


def join_rounds(total: dict, more: dict) -> dict:
    """Two rounds' raw outputs as one: per-sample terms side by side (sample order), sums added."""
    per_sample = ("standard", "orthogonal", "pairs", "nll", "logsnr", "finite")
    joined = {name: np.concatenate([total[name], more[name]], axis=1) for name in per_sample}
    for name in total.keys() - set(per_sample):
        joined[name] = jax.tree.map(np.add, total[name], more[name])
    return joined


def information(
    denoise: Denoiser,
    x: jax.Array,
    conds: Any,
    *,
    key: jax.Array,
    n_samples: int = EstimatorConfig.n_samples,
    reference: int = 0,
    sampler: LogSNRSampler = StratifiedSampler(),
    chunk_size: int | None = None,
    conds_per_image: bool = False,
    devices: Sequence[jax.Device] | None = None,
    pairs: Sequence[tuple[int, int]] = (),
    collect_aux: bool = False,
    target_stderr: float | None = None,
    max_samples: int | None = None,
    reported: Callable[[InformationResult], np.ndarray] | None = None,
    on_round: Callable[[InformationResult], None] | None = None,
    on_chunk: ChunkCallback | None = None,
) -> InformationResult:
    """Pointwise MI of every conditioning against ``reference``, NLLs and pixel maps.

    One call of a :class:`FusedPass` (see it for the arguments); ``x``, ``conds``, ``key`` and
    ``conds_per_image`` as in :meth:`FusedPass.prepare`.

    With ``target_stderr``: rounds of ``n_samples`` per image (``FusedPass.rounds``) until every
    standard error ``reported(result)`` returns is at most the target (default: the information
    of every conditioning and pair, both forms) or ``max_samples`` (default 10 rounds) is
    reached; ``on_round`` sees the result after each round. ``on_chunk`` sees each chunk
    (``FusedPass``'s).
    """
    estimator = EstimatorConfig(n_samples=n_samples, sampler=sampler, chunk_size=chunk_size,
                                target_stderr=target_stderr, max_samples=max_samples)  # validates the target
    fused = FusedPass(denoise, n_samples=n_samples, sampler=sampler, reference=reference, chunk_size=chunk_size,
                      pairs=pairs, devices=devices, collect_aux=collect_aux, on_chunk=on_chunk)
    if target_stderr is None:
        return fused(x, conds, key=key, conds_per_image=conds_per_image)
    reported = reported or _every_stderr
    target = estimator.target_stderr
    largest = {}  # the last round's largest reported standard error

    def done(res: InformationResult) -> bool:
        largest["stderr"] = float(np.max(reported(res)))
        return largest["stderr"] <= target

    result = fused.rounds(x, conds, key=key, conds_per_image=conds_per_image, max_samples=estimator.max_samples,
                          done=done, progress=on_round)
    return dataclasses.replace(result, config={**result.config, "target_stderr": target,
                                               "largest_stderr": largest["stderr"]})


_LISTENERS: dict[int, _Listener] = {}  # token -> the listener of a run in flight
_LISTENERS_LOCK = threading.Lock()
_TOKENS = itertools.count(1)  # 0: a run nobody listens to (``run`` called directly)


class _Listener:
    """A run's chunks, reported to ``report`` under a token the program passes back; silent once
    stopped (the caller was interrupted) or once ``report`` raised.

    The callback never raises into the program to stop it: a device whose program fails while the
    others wait for it in the final ``psum`` aborts the whole process (seen on 8 CPU devices). An
    interrupted program runs on to its end in the background, as any JAX computation does whose
    caller stops waiting for it."""

    def __init__(self, report: Callable[[int], None]):
        self.report, self.error, self.stopped = report, None, False
        with _LISTENERS_LOCK:
            self.token = next(_TOKENS) % (2**31 - 1) or 1
            _LISTENERS[self.token] = self

    def chunk_finished(self, device: int, step: int) -> None:
        if self.stopped or device != 0:  # the devices run in step: device 0 counts for all
            return
        try:
            self.report(step + 1)
        except BaseException as error:  # noqa: BLE001  (raised again by the caller once the run ends)
            self.error, self.stopped = error, True

    def stop(self) -> None:
        self.stopped = True

    def close(self) -> None:
        with _LISTENERS_LOCK:
            _LISTENERS.pop(self.token, None)


def _progress_token(plan: _Plan, token: int):
    """The program's ``token`` argument: an int32 where it reports chunks, else nothing (None is an
    empty pytree, so a program that reports nothing has exactly its old arguments)."""
    return np.int32(token) if plan.report_chunks else None


def _chunk_finished(token, device, step, _finished_value) -> None:
    """Host side of the in-program callback: ``device``'s chunk ``step`` has finished."""
    with _LISTENERS_LOCK:
        listener = _LISTENERS.get(int(token))
    if listener is not None:
        listener.chunk_finished(int(device), int(step))


def _every_stderr(res: InformationResult) -> np.ndarray:
    """The standard errors of every conditioning's information and every pair's, both forms."""
    others = [s for s in range(res.mi_orthogonal.shape[1]) if s != res.config["reference"]]
    parts = [res.stderr_orthogonal[:, others], res.stderr_standard[:, others]]
    if res.pairs:
        parts += [res.pair_stderr("orthogonal"), res.pair_stderr("standard")]
    return np.concatenate([p.reshape(len(p), -1) for p in parts], axis=1)


def _memory_decision(probe: CompiledPass, inputs: PassInputs, free_bytes: int, items_per_device: int) -> dict:
    """The chunk whose step fits ``free_bytes``, from the default chunk's compiled program ``probe``:
    its scratch bytes, less the accumulated maps (which do not grow with the chunk), per
    evaluation of its step. Recorded in the result's config as ``chunk_memory``."""
    plan, n_conds = inputs.plan, inputs.n_conditionings
    record = {"rule": "device memory", "free_bytes": int(free_bytes), "probe_chunk_size": plan.chunk_size}
    if probe.temp_bytes is None:  # no memory analysis from XLA: nothing to scale, keep the default
        return {**record, "chunk_size": plan.chunk_size, "note": "XLA gave no memory analysis; default chunk kept"}
    _, _, height, width = inputs.x.shape
    maps_bytes = 4 * inputs.n_images * height * width * (2 * n_conds + len(plan.pairs))  # float32 map accumulators
    per_evaluation = bytes_per_evaluation(probe.temp_bytes, plan.chunk_size * n_conds, fixed_bytes=maps_bytes)
    record["bytes_per_evaluation"] = per_evaluation
    try:
        # arguments may not be on the device yet when the pass runs: leave room for them
        chunk = chunk_size_for_memory(free_bytes, per_evaluation, n_conds, reserved_bytes=probe.argument_bytes or 0,
                                      items_per_device=items_per_device)
    except ConfigError as error:  # the estimate leaves no room: keep the default and let XLA judge
        return {**record, "chunk_size": plan.chunk_size, "note": f"default chunk kept: {error}"}
    return {**record, "chunk_size": chunk}


def _check_pairs(pairs, n_conds: int) -> tuple[tuple[int, int], ...]:
    try:
        out = tuple((int(s), int(t)) for s, t in pairs)
    except (TypeError, ValueError):
        raise ConfigError(f"pairs must be (s, t) pairs of conditioning indices; got {pairs!r}") from None
    for s, t in out:
        if not (0 <= s < n_conds and 0 <= t < n_conds) or s == t:
            raise ConfigError(f"pair ({s}, {t}) must name two different conditionings in [0, {n_conds})")
    return out


def _conditioning_count(conds: Any, n_images: int | None) -> int:
    leaves = jax.tree.leaves(conds)
    if not leaves:
        raise ShapeError("conds is empty: give at least one conditioning (a pytree of arrays)")
    lead = 2 if n_images is not None else 1
    shapes = [tuple(a.shape) for a in leaves]
    if any(len(s) < lead for s in shapes):
        want = "(I, S, ...)" if n_images is not None else "(S, ...)"
        raise ShapeError(f"every conds leaf needs leading dimensions {want}; got leaf shapes {shapes}")
    heads = {s[:lead] for s in shapes}
    if len(heads) != 1:
        raise ShapeError(f"conds leaves disagree on their leading dimensions: {sorted(heads)}")
    (head,) = heads
    if n_images is not None and head[0] != n_images:
        raise ShapeError(f"conds_per_image: leaves lead with {head[0]} images but x has {n_images}")
    return head[-1]


def _image_keys(key: jax.Array, n_images: int) -> tuple[jax.Array, dict]:
    """(I,) typed keys, and the key as given ({"impl", "data"}) to record with the result."""
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.dtype != jnp.uint32 or key.shape[-1:] != (2,):
            raise ConfigError("key must be a jax.random.key(...) (or a legacy uint32 PRNGKey)")
        key = jax.random.wrap_key_data(key)
    record = {"impl": str(jax.random.key_impl(key)), "data": np.asarray(jax.random.key_data(key)).tolist()}
    if key.shape == ():
        return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n_images)), record
    if key.shape == (n_images,):
        return key, record
    raise ShapeError(f"key must be one key or one per image ({n_images},); got shape {key.shape}")


# ---------------------------------------------------------------------------------------------
# The compiled program.


@dataclasses.dataclass(frozen=True)
class _StaticDenoiser:
    """The non-array part of a denoiser pytree: its structure and any non-array leaves."""

    treedef: Any
    leaves: tuple  # None where the leaf is an array (passed dynamically)

    def rebuild(self, dynamic: list) -> Denoiser:
        merged = [d if s is None else s for s, d in zip(self.leaves, dynamic)]
        return jax.tree.unflatten(self.treedef, merged)


def _split_denoiser(denoise: Denoiser) -> tuple[list, _StaticDenoiser]:
    leaves, treedef = jax.tree.flatten(denoise)
    is_array = [isinstance(leaf, (jax.Array, np.ndarray, np.generic)) for leaf in leaves]
    dynamic = [leaf if a else None for leaf, a in zip(leaves, is_array)]
    static = tuple(None if a else leaf for leaf, a in zip(leaves, is_array))
    try:
        hash(static)
        hash(treedef)
    except TypeError as exc:
        raise ConfigError(
            "the denoiser's non-array parts must be hashable (they key the compiled program); "
            f"{exc}"
        ) from None
    return dynamic, _StaticDenoiser(treedef, static)


@dataclasses.dataclass(frozen=True)
class _Plan:
    static: _StaticDenoiser
    sampler: Any
    n_samples: int
    reference: int
    chunk_size: int
    mesh: Mesh
    pairs: tuple[tuple[int, int], ...] = ()
    collect_aux: bool = False
    report_chunks: bool = False  # the scan reports each finished chunk to the host


@functools.partial(jax.jit, static_argnames=("plan",))
def _fused_pass(plan: _Plan, dynamic: list, x: jax.Array, conds: Any, keys: jax.Array, first_sample: jax.Array,
                token: jax.Array | None = None) -> dict:
    n_images, n_devices, chunk = x.shape[0], plan.mesh.size, plan.chunk_size
    total = n_images * plan.n_samples
    steps = math.ceil(total / (n_devices * chunk))
    item = jnp.arange(n_devices * steps * chunk)
    valid = item < total
    item = jnp.where(valid, item, 0)  # padding items recompute item 0 with zero weight
    layout = lambda a: a.reshape(n_devices, steps, chunk)
    # image i's samples are first_sample[i] ... first_sample[i] + N - 1 (a round of a longer pass)
    image, sample = layout(item // plan.n_samples), layout(item % plan.n_samples + first_sample[item // plan.n_samples])

    body = functools.partial(_device_pass, plan)
    replicated = P()
    sharded = P("d")
    summed = ("maps_standard", "maps_orthogonal", "maps_pairs") + (("aux",) if plan.collect_aux else ())
    run = jax.shard_map(
        body,
        mesh=plan.mesh,
        in_specs=(replicated, replicated, replicated, replicated, sharded, sharded, sharded, replicated),
        out_specs=({name: replicated for name in summed}, sharded),
        check_vma=False,
    )
    maps, per_item = run(dynamic, x, conds, keys, image, sample, layout(valid), token)
    per_item = jax.tree.map(lambda a: a.reshape((math.prod(a.shape[:3]),) + a.shape[3:])[:total], per_item)
    per_item = jax.tree.map(lambda a: a.reshape((n_images, plan.n_samples) + a.shape[1:]), per_item)
    return {**maps, **per_item}


def _device_pass(plan: _Plan, dynamic, x, conds, keys, image, sample, valid, token):
    """One device's share: scan over its chunks, accumulating maps, keeping per-item scalars."""
    denoise = plan.static.rebuild(dynamic)
    snap = getattr(denoise, "snap_logsnr", None)
    n_images, channels, height, width = x.shape
    n_conds = jax.tree.leaves(conds)[0].shape[1]
    dim = channels * height * width
    ref = plan.reference

    def step(carry, chunk):
        if plan.report_chunks:
            *chunk, index = chunk
        img, smp, ok = chunk  # (c,) each
        item_keys = jax.vmap(jax.random.fold_in)(keys[img], smp)
        u_key, eps_key = jax.vmap(jax.random.split, out_axes=1)(item_keys)
        alpha, weight = plan.sampler.draw(jax.vmap(lambda k: jax.random.uniform(k))(u_key), smp, plan.n_samples)
        eps = jax.vmap(lambda k: jax.random.normal(k, (channels, height, width)))(eps_key)
        alpha_used = snap(alpha) if snap is not None else alpha
        signal = jnp.sqrt(jax.nn.sigmoid(alpha_used))[:, None, None, None]
        noise = jnp.sqrt(jax.nn.sigmoid(-alpha_used))[:, None, None, None]
        z = signal * x[img].astype(jnp.float32) + noise * eps  # (c, C, H, W)

        c = img.shape[0]
        batch = c * n_conds
        z_all = jnp.broadcast_to(z[:, None], (c, n_conds) + z.shape[1:]).reshape((batch,) + z.shape[1:])
        alpha_all = jnp.broadcast_to(alpha_used[:, None], (c, n_conds)).reshape(batch)
        cond_all = jax.tree.map(lambda a: a[img].reshape((batch,) + a.shape[2:]), conds)
        if plan.collect_aux:
            eps_hat, aux = denoise.with_aux(z_all, alpha_all, cond_all)
        else:
            eps_hat = denoise(z_all, alpha_all, cond_all)
        eps_hat = eps_hat.astype(jnp.float32).reshape((c, n_conds, channels, height, width))

        finite = jnp.all(jnp.isfinite(eps_hat), axis=(2, 3, 4))  # (c, S)
        sq_err = jnp.sum((eps[:, None] - eps_hat) ** 2, axis=2)  # (c, S, H, W)
        sq_gap = jnp.sum((eps_hat - eps_hat[:, ref : ref + 1]) ** 2, axis=2)
        w = (0.5 * weight * ok)[:, None, None, None]
        map_std = w * (sq_err[:, ref : ref + 1] - sq_err)
        map_orth = w * sq_gap
        first, second = (np.asarray([p[i] for p in plan.pairs], int) for i in (0, 1))
        map_pairs = w * jnp.sum((eps_hat[:, first] - eps_hat[:, second]) ** 2, axis=2)  # (c, P, H, W)
        nll_term = 0.5 * weight[:, None] * (jnp.sum(sq_err, axis=(2, 3)) - dim * jax.nn.sigmoid(alpha_used)[:, None])

        carry = {
            **carry,
            "maps_standard": carry["maps_standard"].at[img].add(map_std),
            "maps_orthogonal": carry["maps_orthogonal"].at[img].add(map_orth),
            "maps_pairs": carry["maps_pairs"].at[img].add(map_pairs),
        }
        if plan.collect_aux:  # per (image, conditioning): summed over valid samples (a mean at the end)
            def add(total, a):
                a = a.astype(jnp.float32).reshape((c, n_conds) + a.shape[1:])
                return total.at[img].add(a * ok.reshape((c,) + (1,) * (a.ndim - 1)))
            carry["aux"] = jax.tree.map(add, carry["aux"], aux)
        out = {
            "standard": jnp.sum(map_std, axis=(2, 3)),
            "orthogonal": jnp.sum(map_orth, axis=(2, 3)),
            "pairs": jnp.sum(map_pairs, axis=(2, 3)),
            "nll": nll_term,
            "logsnr": alpha_used,
            "finite": finite | ~ok[:, None],
        }
        if plan.report_chunks:
            # It reads a value of this chunk's denoiser output, so it runs once the chunk is done.
            jax.debug.callback(_chunk_finished, token, jax.lax.axis_index("d"), index, nll_term[0, 0])
        return carry, out

    zeros = jnp.zeros((n_images, n_conds, height, width), jnp.float32)
    init = {"maps_standard": zeros, "maps_orthogonal": zeros,
            "maps_pairs": jnp.zeros((n_images, len(plan.pairs), height, width), jnp.float32)}
    if plan.collect_aux:
        init["aux"] = _aux_zeros(denoise, x, conds, image.shape[-1], n_images, n_conds)
    chunks = (image[0], sample[0], valid[0])
    if plan.report_chunks:
        chunks += (jnp.arange(image.shape[1]),)
    maps, per_item = jax.lax.scan(step, init, chunks)
    maps = jax.tree.map(lambda a: jax.lax.psum(a, "d"), maps)
    return maps, jax.tree.map(lambda a: a[None], per_item)


def _aux_zeros(denoise, x, conds, chunk: int, n_images: int, n_conds: int):
    """Zeros shaped like ``with_aux``'s auxiliary output per (image, conditioning)."""
    batch = chunk * n_conds
    spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype)  # noqa: E731
    cond_spec = jax.tree.map(lambda a: spec((batch,) + a.shape[2:], a.dtype), conds)
    _, aux = jax.eval_shape(denoise.with_aux, spec((batch,) + x.shape[1:], jnp.float32), spec((batch,), jnp.float32),
                            cond_spec)
    return jax.tree.map(lambda a: jnp.zeros((n_images, n_conds) + a.shape[1:], jnp.float32), aux)


# ---------------------------------------------------------------------------------------------
# Host-side summary.


def _summarise(out: dict, inputs: PassInputs, timings: dict) -> InformationResult:
    plan = inputs.plan
    n_images, channels, height, width = inputs.x.shape
    n = out["standard"].shape[1]  # the plan's N, or the samples of all rounds so far
    strata = plan.sampler.strata
    finite = np.asarray(out["finite"])  # (I, N, S)
    if not finite.all():
        i, s_idx, c = np.argwhere(~finite)[0]
        raise NonFiniteError(
            f"the denoiser returned NaN/inf for image {i}, conditioning {c}, sample {s_idx} "
            f"(log-SNR {float(out['logsnr'][i, s_idx]):.4g}); {int((~finite).sum())} of "
            f"{finite.size} (image, sample, conditioning) evaluations are non-finite"
        )
    std = np.asarray(out["standard"], np.float64)  # (I, N, S)
    orth = np.asarray(out["orthogonal"], np.float64)
    nll = np.asarray(out["nll"], np.float64)
    stderr = lambda a: stratified_stderr(a, strata)  # noqa: E731
    config = {
        "sampler": plan.sampler.to_dict(),
        "n_samples": n,
        "reference": plan.reference,
        "chunk_size": plan.chunk_size,
        "devices": plan.mesh.size,
        "n_conditionings": inputs.n_conditionings,
        "pairs": [list(p) for p in plan.pairs],
        "key": inputs.key_record,
        "units": "nats",
    }
    if inputs.chunk_memory is not None:
        config["chunk_memory"] = dict(inputs.chunk_memory)
    pairs = np.asarray(out["pairs"], np.float64)  # (I, N, P)
    return InformationResult(
        mi_standard=std.mean(axis=1),
        mi_orthogonal=orth.mean(axis=1),
        nll=0.5 * channels * height * width * math.log(2 * math.pi * math.e) + nll.mean(axis=1),
        stderr_standard=stderr(std),
        stderr_orthogonal=stderr(orth),
        stderr_nll=stderr(nll),
        maps_standard=np.asarray(out["maps_standard"], np.float64) / n,
        maps_orthogonal=np.asarray(out["maps_orthogonal"], np.float64) / n,
        samples_standard=std,
        samples_orthogonal=orth,
        logsnr=np.asarray(out["logsnr"], np.float64),
        config=config,
        pairs=plan.pairs,
        pair_mi_orthogonal=pairs.mean(axis=1),
        pair_stderr_orthogonal=stderr(pairs),
        pair_maps_orthogonal=np.asarray(out["maps_pairs"], np.float64) / n,
        pair_samples_orthogonal=pairs,
        aux=None if "aux" not in out else jax.tree.map(lambda a: np.asarray(a, np.float64) / n, out["aux"]),
        timings=dict(timings),
        strata=strata,
    )
