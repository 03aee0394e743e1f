"""The device check: what jaxpid does on the accelerator at hand, measured in one run of minutes.

Run it first whenever a GPU or TPU machine is at hand: ``bash benchmarks/device_check.sh``
installs jaxpid there and runs ``python -m jaxpid.bench.device_check``. ``--dry-run`` runs the
same code on tiny configurations (a minute or two on a CPU), so that it cannot break unseen; a test
runs it. Built on the benchmark programs: ``throughput`` (fused-pass rows, bf16 agreement) and
``vs_pytorch`` (the same PID job in PyTorch, on the same weights and draws).

Steps, in order of what matters most; a step the remaining time budget would not cover is skipped
with a line saying so (and recorded), so a slow machine still reports what it measured:

  environment   devices, kind, count, versions, free memory, the data-sheet peak MFU is taken against
  flops         analytic FLOPs of each SD 2.1-base network at 64x64 latents (a UNet evaluation: 804 GFLOP)
  throughput    fused-pass UNet evaluations/s: bf16 / fp32 x XLA / cuDNN attention x chunk sizes, compile
                time apart, XLA's scratch memory, the device's peak memory, MFU; the chunk the memory rule
                (jaxpid.core.memory) would choose here
  diffusionpid  a DiffusionPID job: generate (50 DDIM steps, guidance) + 2-word PID maps at 50 log-SNR samples,
                first call (compiles) and after compilation
  map           a 2-word map at 100 samples after compilation (compile, device run, host summary apart)
  pytorch       the maps' job by the PyTorch reference loop and by best-effort PyTorch (fp16 / bf16, SDPA,
                batched), then torch.compile when time is left -> jaxpid's speed-up over each
  agreement     bf16 vs fp32 MI and PID atoms of the same job, in Monte-Carlo standard errors

on SD 2.1-base with random weights at 64x64 latents (``jaxpid.bench.models.random_pipeline``: the
machine downloads nothing) and on the shipped demo model; ``--dry-run`` uses a micro pipeline and
tiny sizes. Rows go to ``device_check.jsonl`` (every step, skipped ones too), ``throughput.jsonl``
and ``vs_pytorch.jsonl`` in ``--results DIR`` (the script passes ``$OUT``); the last lines printed
are a summary table.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxpid
from jaxpid.bench import adaptive as bench_adaptive
from jaxpid.bench import common, throughput, vs_pytorch
from jaxpid.bench import models as bench_models
from jaxpid.core import (
    PID_FORMS,
    FusedPass,
    bytes_per_evaluation,
    chunk_size_for_device,
    decompose,
    free_device_memory,
    pairs_for,
)
from jaxpid.sd.weights import read_json_config

PROMPT, SOURCES = bench_models.DEMO_PROMPT
N_CONDS = 4  # a 2-source PID: 4 subset conditionings


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The sizes of a run: the real ones, or tiny ones for a dry run on a CPU."""

    models: tuple[str, ...]  # "sd21-base" (random weights) / "micro", then "demo"
    sections: dict  # model -> the sections run on it
    dtype: str  # the pipelines' compute dtype (the main throughput row's too); the other one joins the grid
    latent: int | None  # latent side of the random pipeline (None: its config's)
    chunks: dict  # model -> throughput chunk sizes (samples per step; a step is 4 x chunk evaluations), main first
    steps: int  # DDIM steps of the generated image
    guidance: float
    dpid_samples: int  # log-SNR samples of the DiffusionPID job's maps (and of the PyTorch comparison)
    map_samples: int  # log-SNR samples of the timed 2-word map
    repeats: int  # timed runs per measurement (the best is kept)
    compile_guess_s: dict  # model -> first guess of one fused-pass compilation, before one is measured
    torch_compile: bool  # try torch.compile when the budget allows
    budget_s: float  # default time budget of the whole run


ALL_SECTIONS = ("throughput", "diffusionpid", "map", "pytorch", "throughput grid", "agreement", "torch.compile",
                "adaptive")
FULL = Sizes(models=("sd21-base", "demo"), sections={"sd21-base": ALL_SECTIONS, "demo": ALL_SECTIONS}, dtype="bf16",
             latent=64, chunks={"sd21-base": (8, 4, 16), "demo": (16, 64)},
             steps=50, guidance=7.5, dpid_samples=50, map_samples=100, repeats=3,
             compile_guess_s={"sd21-base": 60.0, "demo": 15.0}, torch_compile=True, budget_s=420.0)
# The dry run computes in fp32 (XLA:CPU compiles it faster) and measures bf16 in the grid; on the
# demo it runs only what differs from the micro pipeline's code paths (loading a folder).
DRY = Sizes(models=("micro", "demo"), sections={"micro": ALL_SECTIONS, "demo": ("throughput", "adaptive")},
            dtype="fp32", latent=None, chunks={"micro": (2,), "demo": (2,)},
            steps=2, guidance=7.5, dpid_samples=4, map_samples=8, repeats=1,
            compile_guess_s={"micro": 5.0, "demo": 10.0}, torch_compile=False, budget_s=240.0)


class Budget:
    """The run's deadline, and what each step is expected to cost from the compilations seen so far."""

    def __init__(self, seconds: float, guesses: dict):
        self.deadline = time.perf_counter() + seconds
        self.guesses = dict(guesses)  # model -> one compilation, before any is measured
        self.seen: dict[str, float] = {}  # model -> the longest compilation measured

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def saw_compile(self, model: str, seconds: float) -> None:
        if seconds > 0:  # 0: the program came from the cache
            self.seen[model] = max(seconds, self.seen.get(model, 0.0))

    def cost(self, model: str, compiles: float, extra_s: float = 0.0) -> float:
        return compiles * self.seen.get(model, self.guesses.get(model, 30.0)) + extra_s


class Check:
    """One run: its sizes, budget, the models built so far and the rows written."""

    def __init__(self, args: argparse.Namespace, sizes: Sizes):
        self.args, self.sizes = args, sizes
        self.budget = Budget(args.budget_s or sizes.budget_s, sizes.compile_guess_s)
        self.env = common.environment()
        self.state: dict = {}  # model -> {"pipe", "unet_config", "latents", "model", ...}
        self.summary: list[dict] = []

    # ------------------------------------------------------------------ running steps

    def step(self, section: str, model: str, cost_s: float, fn: Callable[[], dict]) -> dict | None:
        """Run ``fn`` unless the budget would not cover ``cost_s``; record a row either way."""
        left = self.budget.left()
        if cost_s > left:
            reason = f"needs ~{cost_s:.0f} s, {max(left, 0):.0f} s left of the budget"
            print(f"[{section} / {model}] skipped: {reason}", flush=True)
            self.save("device_check", [{"section": section, "model": model, "status": "skipped", "reason": reason}])
            return None
        print(f"\n[{section} / {model}] (~{cost_s:.0f} s expected, {left:.0f} s left)", flush=True)
        t0 = time.perf_counter()
        try:
            row = fn()
        except Exception as error:  # on an unseen machine: report it (the traceback too) and go on to the next step
            traceback.print_exc()
            print(f"[{section} / {model}] FAILED: {type(error).__name__}: {error}", flush=True)
            row = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
        row = {"section": section, "model": model, "status": row.pop("status", "ok"), **row,
               "step_s": round(time.perf_counter() - t0, 2)}
        self.save("device_check", [row])
        self.summary.append(row)
        return row

    def save(self, name: str, rows: list[dict]) -> None:
        rows = [{"benchmark": name, "dry_run": self.args.dry_run, **row, "environment": self.env} for row in rows]
        common.save_rows(name, rows, self.args)

    # ------------------------------------------------------------------ models

    def pipeline(self, model: str):
        """The model's pipeline (compute in the run's dtype, fp32 weights), built once."""
        state = self.state.setdefault(model, {})
        if "pipe" not in state:
            t0 = time.perf_counter()
            dtype = throughput.DTYPES[self.sizes.dtype]
            if model == "demo":
                state["pipe"] = jaxpid.load_pipeline("demo", dtype=dtype)
                config = read_json_config(bench_models.DEMO_FOLDER / "unet")
                state["unet_config"] = {k: v for k, v in config.items() if not k.startswith("_")}
            else:
                state["pipe"] = bench_models.random_pipeline(model, dtype=dtype, latent=self.sizes.latent)
                state["unet_config"] = bench_models.random_pipeline_unet_config(model, self.sizes.latent)
            print(f"built {state['pipe'].name} in {time.perf_counter() - t0:.1f} s", flush=True)
        return state["pipe"]

    def job_inputs(self, model: str) -> tuple[np.ndarray, np.ndarray]:
        """The 2-source PID job's latent (1, C, h, w) and 4 conditionings: the DiffusionPID step's
        generated image and encoded subset prompts when it ran, else a random latent and random
        conditionings of the right shape (the timings do not depend on the values)."""
        pipe, state = self.pipeline(model), self.state[model]
        if "latents" in state:
            return state["latents"][:1], state["conds"]
        rng = np.random.default_rng(0)
        width = pipe.text_encoder.module.config.hidden_size
        return (rng.standard_normal((1,) + pipe.latent_shape, dtype=np.float32),
                rng.standard_normal((N_CONDS, pipe.tokenizer.max_length, width), dtype=np.float32))

    def bench_model(self, model: str, dtype, attention: str) -> bench_models.BenchModel:
        """The 2-source PID job (``job_inputs``) for the throughput rows, computing in ``dtype`` with
        ``attention`` on the pipeline's UNet weights."""
        pipe, state = self.pipeline(model), self.state[model]
        x, conds = self.job_inputs(model)
        denoiser = bench_models.make_denoiser(state["unet_config"], pipe.unet.params, dtype=dtype, attention=attention,
                                              schedule=pipe.schedule)
        description = f"{pipe.name}, {jnp.dtype(dtype).name}, attention {attention}"
        return bench_models.BenchModel(name=model, description=description,
                                       denoiser=denoiser, unet_config=state["unet_config"], x=np.array(x, np.float32),
                                       conds=np.array(conds, np.float32), prompts=None, source={"kind": "pipeline"})

    # ------------------------------------------------------------------ steps

    def environment(self) -> dict:
        devices = jax.devices()
        free = free_device_memory(devices[0])
        peaks = {"fp32": common.device_peak("float32")}
        kind = devices[0].device_kind
        bf16 = common.KNOWN_PEAKS_TFLOPS.get((kind, "bfloat16"))
        # Without a data-sheet figure, bf16 is measured against the same practical peak as fp32
        # (measured once: on a CPU bf16 is emulated in fp32 anyway).
        peaks["bf16"] = (bf16 * 1e12, f"data-sheet dense peak of {kind}") if bf16 else peaks["fp32"]
        self.peaks = peaks
        print(f"jax {jax.__version__}, backend {jax.default_backend()}, {len(devices)} device(s): "
              f"{devices[0].device_kind} x {len(devices)}; processes {jax.process_count()}")
        print("free memory on device 0: "
              + ("not tracked on this backend" if free is None else f"{free / 2**30:.1f} GiB"))
        for name, (peak, how) in peaks.items():
            print(f"peak for MFU, {name}: {peak / 1e12:.1f} TFLOP/s ({how})")
        missing = vs_pytorch.missing_extras()
        print("PyTorch comparison: "
              + ("available" if not missing else f"not possible, {', '.join(missing)} not installed"))
        return {"backend": jax.default_backend(), "device_kind": devices[0].device_kind, "n_devices": len(devices),
                "free_bytes": free, "peak_tflops": {k: v[0] / 1e12 for k, v in peaks.items()},
                "peak_how": {k: v[1] for k, v in peaks.items()}, "torch_missing": missing}

    def flops(self) -> dict:
        sd = bench_models.pipeline_flops("sd21-base", 64) if not self.args.dry_run else None
        small = {m: bench_models.pipeline_flops(m, self.sizes.latent)["unet_per_evaluation"]
                 for m in self.sizes.models if m != "demo"}
        if sd:
            print(f"SD 2.1-base at 64x64: UNet {sd['unet_per_evaluation'] / 1e9:.1f} GFLOP per evaluation "
                  f"({sd['unet_parameters'] / 1e6:.1f} M parameters), text encoder "
                  f"{sd['text_encoder_per_prompt'] / 1e9:.1f} GFLOP per prompt, VAE encode "
                  f"{sd['vae_encode_per_image'] / 1e9:.0f} / decode "
                  f"{sd['vae_decode_per_image'] / 1e9:.0f} GFLOP per image")
        for name, value in small.items():
            print(f"{name}: {value / 1e9:.4f} GFLOP per UNet evaluation")
        return {"sd21_base": sd, "unet_gflop": {k: v / 1e9 for k, v in small.items()}}

    def throughput(self, model: str, dtype_name: str, attention: str, chunk: int) -> dict:
        dtype = throughput.DTYPES[dtype_name]
        bench = self.bench_model(model, dtype, attention)
        state = self.state[model]
        if "flops" not in state:  # analytic: the same for every dtype and attention (tracing the SD UNet takes seconds)
            state["flops"] = bench_models.unet_flops_per_eval(bench, xla=False)
        flops = state["flops"]
        n = 2 * chunk  # two scan steps: the loop is exercised, and the run stays short
        row = throughput.throughput_row(bench, chunk=chunk, n_samples=n, repeats=self.sizes.repeats, flops=flops,
                                        peak=self.peaks[dtype_name][0])
        self.budget.saw_compile(model, row["compile_s"])
        rule = self.memory_rule(row, chunk)
        row.update(model=model, code="shipped", description=bench.description, n_params=bench.n_params,
                   dtype=dtype_name, attention=attention, peak_gflop_s=round(self.peaks[dtype_name][0] / 1e9, 2),
                   peak_how=self.peaks[dtype_name][1], memory_rule=rule)
        throughput.print_throughput([row])
        self.save("throughput", [{k: v for k, v in row.items() if k != "memory_rule"}])
        kept = ("dtype", "attention", "chunk_size", "batch", "compile_s", "steady_s", "evals_per_s", "mfu",
                "temp_bytes", "peak_device_bytes", "analytic_gflop_per_eval")
        return {k: row[k] for k in kept} | {"memory_rule": rule}

    def memory_rule(self, row: dict, chunk: int) -> dict:
        """The chunk ``jaxpid.core.memory`` would choose on this device, from this program's scratch size."""
        if not row["temp_bytes"]:
            return {"chunk": None, "why": "XLA reported no scratch size"}
        per_eval = bytes_per_evaluation(row["temp_bytes"], chunk * N_CONDS)
        chosen = chunk_size_for_device(jax.devices()[0], per_eval, N_CONDS)
        why = "device memory not tracked on this backend (the fixed cap applies)" if chosen is None else \
            f"free {free_device_memory(jax.devices()[0]) / 2**30:.1f} GiB"
        print(f"memory rule: {per_eval / 2**20:.1f} MiB scratch per evaluation -> chunk {chosen} ({why})")
        return {"bytes_per_evaluation": per_eval, "chunk": chosen, "why": why}

    def diffusionpid(self, model: str) -> dict:
        pipe, sizes = self.pipeline(model), self.sizes
        options = dict(n_samples=sizes.dpid_samples, steps=sizes.steps, guidance_scale=sizes.guidance, seeds=[0], key=0)
        runs = []
        for _ in range(2):  # the first call compiles generation, text encoding and the fused pass
            t0 = time.perf_counter()
            result = jaxpid.analyze(pipe, PROMPT, list(SOURCES), **options)
            runs.append({"wall_s": time.perf_counter() - t0, **result.timings})
        self.budget.saw_compile(model, runs[0].get("compile_s", 0.0))
        state = self.state[model]
        state["latents"] = np.array(result.images.latents, np.float32)
        state["conds"] = np.array(pipe.encode_prompt(list(result.subsets.prompts)), np.float32)
        first, steady = runs
        print(f"DiffusionPID job ({sizes.steps} DDIM steps + maps at {sizes.dpid_samples} samples): first call "
              f"{first['wall_s']:.2f} s, after compilation {steady['wall_s']:.3f} s "
              f"(images {steady['images_s']:.3f} s, maps {steady['estimate_s']:.3f} s)")
        atoms = {result.atom_label(n): float(result.result.atoms[n][0]) for n in result.result.names}
        return {"steps": sizes.steps, "n_samples": sizes.dpid_samples, "first": first, "steady": steady, "atoms": atoms}

    def adaptive(self, model: str) -> dict:
        """Per-item stopping's saving on this device (``jaxpid.bench.adaptive``): evaluations at the
        same worst-case standard error, Gaussian mixtures and a demo sweep (the demo model only)."""
        dry = self.sizes.repeats == 1
        gmm = bench_adaptive.gmm_sweep("XOR", 32 if dry else 64, 64, 8, 16)
        words = [("a red circle and a blue square", ["circle", "square"]),
                 ("a green triangle and a yellow circle", ["green", "triangle"])]
        jobs = [{"prompt": p, "sources": w, "seed": seed} for p, w in words for seed in range(2 if dry else 8)]
        folder = Path(tempfile.gettempdir()) / f"jaxpid-device-adaptive-{uuid.uuid4().hex[:12]}"
        demo = bench_adaptive.demo_sweep(folder, jobs, 32, 8, 4)
        print(f"per-item stopping: Gaussian mixture {gmm['evals_ratio']:.2f}x fewer evaluations, demo sweep "
              f"{demo['evals_ratio']:.2f}x (worst s.e. {demo['worst_stderr_fixed']:.3f} fixed, "
              f"{demo['worst_stderr_adaptive']:.3f} per job; {demo['seconds_fixed']:.1f} s vs "
              f"{demo['seconds_adaptive']:.1f} s)")
        return {"gmm_evals_ratio": gmm["evals_ratio"], "sweep_evals_ratio": demo["evals_ratio"],
                "sweep_seconds_fixed": demo["seconds_fixed"], "sweep_seconds_adaptive": demo["seconds_adaptive"],
                "sweep_jobs": len(jobs)}

    def map(self, model: str) -> dict:
        pipe = self.pipeline(model)
        x, conds = self.job_inputs(model)
        # the pass jaxpid.pid runs: 4 subsets and the gaps every form needs (the anchored form's two)
        fused = FusedPass(pipe.denoiser, n_samples=self.sizes.map_samples, pairs=pairs_for(2, PID_FORMS))
        inputs = fused.prepare(x, conds, key=jax.random.key(1))
        compiled = fused.compile(inputs)
        self.budget.saw_compile(model, compiled.compile_seconds)
        jax.block_until_ready(fused.run(inputs, compiled))
        run_s, raw = common.best_of(lambda: jax.block_until_ready(fused.run(inputs, compiled)), self.sizes.repeats)
        t0 = time.perf_counter()
        result = decompose(fused.summarise(raw, inputs), 2)
        host_s = time.perf_counter() - t0
        print(f"2-word map at {self.sizes.map_samples} samples ({compiled.evaluations} evaluations): compile "
              f"{compiled.compile_seconds:.1f} s, run {run_s:.3f} s ({compiled.evaluations / run_s:.0f} "
              f"evaluations/s), host summary + PID {host_s:.3f} s")
        return {"n_samples": self.sizes.map_samples, "evaluations": compiled.evaluations,
                "chunk": inputs.plan.chunk_size, "compile_s": compiled.compile_seconds, "run_s": run_s,
                "host_s": host_s,
                "evals_per_s": compiled.evaluations / run_s, "redundancy": float(result.atoms["{1}{2}"][0])}

    def pytorch(self, model: str) -> dict:
        missing = vs_pytorch.missing_extras()
        if missing:
            print(f"PyTorch column skipped: {', '.join(missing)} not installed on this machine. To have it, carry the "
                  "wheels (here: python3 -m pip download diffusers==0.42.1 importlib_metadata --no-deps -d .whl; "
                  "name .whl in the device tool's carry); benchmarks/device_check.sh installs them")
            return {"status": "skipped", "reason": f"{', '.join(missing)} not installed"}
        if vs_pytorch.torch_device() == "cpu" and jax.default_backend() != "cpu":
            reason = (f"PyTorch has no {jax.default_backend()} device here: its CPU would not compare with jaxpid "
                      "on the accelerator")
            print(f"PyTorch column skipped: {reason}")
            return {"status": "skipped", "reason": reason}
        state = self.state[model]
        bench = bench_models.pipeline_model(self.pipeline(model), state["unet_config"], self.job_inputs(model)[0])
        if model == "demo":
            bench = dataclasses.replace(bench, source={"kind": "folder", "path": str(bench_models.DEMO_FOLDER)})
        summary = vs_pytorch.compare(bench, self.sizes.dpid_samples, repeats=self.sizes.repeats, torch_compile=False)
        vs_pytorch.print_summary(summary)
        state["vs_pytorch"] = summary
        self.save("vs_pytorch", [{"quick": False, "jaxpid_code": "shipped", **summary}])
        self.release_torch()
        kept = ("torch_device", "jaxpid_dtype", "n_samples", "jaxpid_s", "reference_s", "best_s", "best_how",
                "best_variant", "ratio_reference", "ratio_best", "max_atom_diff_jaxpid_reference", "max_atom_stderr")
        return {k: summary[k] for k in kept}

    def torch_compile(self, model: str) -> dict:
        state = self.state[model]
        summary = state.get("vs_pytorch")
        if summary is None:
            return {"status": "skipped", "reason": "no eager PyTorch comparison to compile"}
        bench = bench_models.pipeline_model(self.pipeline(model), state["unet_config"], self.job_inputs(model)[0])
        if model == "demo":
            bench = dataclasses.replace(bench, source={"kind": "folder", "path": str(bench_models.DEMO_FOLDER)})
        draws = vs_pytorch.estimator_draws(bench.denoiser, bench.x.shape, summary["n_samples"])
        budget = max(30.0, self.budget.left() - 20.0)
        result = vs_pytorch.compile_in_worker(bench, draws, summary["best_variant"], budget, self.sizes.repeats)
        self.release_torch()
        print(f"torch.compile: {result['status']}")
        if result["status"] != "ok":
            return {"status": "failed" if "failed" in result["status"] else "ok", "torch_compile": result["status"]}
        compiled_s = result["steady_s"]
        out = {"torch_compile_s": compiled_s, "torch_compile_first_s": result["first_s"],
               "ratio_torch_compile": compiled_s / summary["jaxpid_s"]}
        if compiled_s < summary["best_s"]:
            summary.update(best_s=compiled_s, best_how="torch.compile", ratio_best=compiled_s / summary["jaxpid_s"],
                           best_evals_per_s=summary["evaluations"] / compiled_s,
                           torch_compile={k: v for k, v in result.items() if k not in ("sq_err", "sq_gap")})
            self.save("vs_pytorch", [{"quick": False, "jaxpid_code": "shipped", **summary}])
        print(f"jaxpid / torch.compile: {out['ratio_torch_compile']:.2f}x")
        return out

    def agreement(self, model: str, chunk: int) -> dict:
        fp32 = self.bench_model(model, jnp.float32, "xla")
        bf16 = self.bench_model(model, jnp.bfloat16, "xla")
        out = throughput.bf16_accuracy(fp32, bf16, n_samples=2 * chunk, chunk=chunk)
        print(f"bf16 vs fp32 (N={2 * chunk}, same draws): MI max |diff| "
              f"{out['bf16_max_mi_diff_orthogonal_in_stderr']:.3f} stderr, atoms "
              f"{out['bf16_max_atom_diff_orthogonal_in_stderr']:.3f} stderr (orthogonal form); "
              f"standard form {out['bf16_max_mi_diff_standard_in_stderr']:.3f} / "
              f"{out['bf16_max_atom_diff_standard_in_stderr']:.3f}")
        return out | {"n_samples": 2 * chunk}

    @staticmethod
    def release_torch() -> None:
        """Give PyTorch's cached GPU memory back, for the JAX steps after it."""
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()


def plan(check: Check) -> list[tuple[str, str, Callable[[], float], Callable[[], dict]]]:
    """The steps, most important first: (section, model, expected cost, run). The throughput grid
    (the settings after the main one) comes after every model's main steps."""
    sizes, budget = check.sizes, check.budget
    gpu = jax.default_backend() == "gpu"
    first, other = sizes.dtype, "fp32" if sizes.dtype == "bf16" else "bf16"
    steps, late = [], []
    for model in sizes.models:
        main, *others = sizes.chunks[model]
        c = lambda n, extra=0.0, m=model: (lambda: budget.cost(m, n, extra))
        steps += [
            ("throughput", model, c(1), lambda m=model, k=main: check.throughput(m, first, "xla", k)),
            ("diffusionpid", model, c(2.5, 5), lambda m=model: check.diffusionpid(m)),
            ("map", model, c(1, 2), lambda m=model: check.map(m)),
            ("pytorch", model, c(0, 60 if gpu and model != "demo" else 20), lambda m=model: check.pytorch(m)),
        ]
        grid = [("bf16", "cudnn", main)] if gpu else []
        grid += [(other, "xla", main)] + [("bf16", "xla", k) for k in others]
        grid += [("bf16", "cudnn", k) for k in others if gpu]
        late += [("throughput grid", model, c(1), lambda m=model, d=d, a=a, k=k: check.throughput(m, d, a, k))
                 for d, a, k in grid]
        late += [("agreement", model, c(0.2, 2), lambda m=model, k=main: check.agreement(m, k))]
        if model == "demo":  # per-item stopping is measured on the demo model (and Gaussian mixtures)
            late += [("adaptive", model, c(0, 30), lambda m=model: check.adaptive(m))]
        if sizes.torch_compile:
            late += [("torch.compile", model, c(0, 150 if model != "demo" else 60),
                      lambda m=model: check.torch_compile(m))]
    return [(section.split()[0], model, cost, fn) for section, model, cost, fn in steps + late
            if section in sizes.sections[model]]


def print_summary(rows: list[dict]) -> None:
    print("\n==== device check summary ====")
    for row in rows:
        section, model, status = row["section"], row["model"], row["status"]
        if status != "ok":
            why = row.get("error") or row.get("reason") or row.get("torch_compile", "")
            print(f"{section:<13} {model:<10} {status}: {why}")
        elif section == "throughput":
            peak = row["peak_device_bytes"]
            print(f"{section:<13} {model:<10} {row['dtype']} {row['attention']:<5} chunk {row['chunk_size']:>3}: "
                  f"{row['evals_per_s']:9.1f} evals/s, MFU {100 * row['mfu']:5.1f}%, compile {row['compile_s']:6.1f} s"
                  + ("" if peak is None else f", peak {peak / 2**30:.1f} GiB"))
        elif section == "diffusionpid":
            print(f"{section:<13} {model:<10} generate {row['steps']} steps + maps at {row['n_samples']}: "
                  f"{row['steady']['wall_s']:.3f} s after compile (first call {row['first']['wall_s']:.1f} s)")
        elif section == "map":
            print(f"{section:<13} {model:<10} {row['n_samples']} samples: {row['run_s']:.3f} s after compile "
                  f"({row['evals_per_s']:.0f} evals/s; compile {row['compile_s']:.1f} s)")
        elif section == "pytorch":
            print(f"{section:<13} {model:<10} on {row['torch_device']}: jaxpid {row['ratio_reference']:.2f}x the "
                  f"reference loop, {row['ratio_best']:.2f}x best PyTorch ({row['best_how']}); max atom diff "
                  f"{row['max_atom_diff_jaxpid_reference']:.2e} nats (stderr {row['max_atom_stderr']:.2e})")
        elif section == "agreement":
            print(f"{section:<13} {model:<10} bf16 vs fp32: MI within "
                  f"{row['bf16_max_mi_diff_orthogonal_in_stderr']:.2f}, atoms within "
                  f"{row['bf16_max_atom_diff_orthogonal_in_stderr']:.2f} standard errors")
        elif section == "adaptive":
            print(f"{section:<13} {model:<10} per-item stopping: {row['gmm_evals_ratio']:.2f}x fewer evaluations "
                  f"(Gaussian mixture), {row['sweep_evals_ratio']:.2f}x (demo sweep) at the same worst s.e.")
        elif section == "torch.compile" and "ratio_torch_compile" in row:
            print(f"{section:<13} {model:<10} jaxpid {row['ratio_torch_compile']:.2f}x torch.compile")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny configurations: the whole check in a minute or two on a CPU")
    parser.add_argument("--budget-s", type=float, default=None,
                        help=f"time budget in seconds; steps that would not fit are skipped "
                             f"(default {FULL.budget_s:.0f}, dry run {DRY.budget_s:.0f})")
    parser.add_argument("--models", nargs="+", default=None, help="subset of the models (default: sd21-base demo)")
    common.add_results_option(parser)
    args = parser.parse_args(argv)
    jaxpid.use_cpu_cores()  # before JAX starts; a no-op on GPU / TPU machines
    sizes = DRY if args.dry_run else FULL
    if args.models:
        unknown = set(args.models) - set(sizes.models)
        if unknown:
            parser.error(f"unknown models {sorted(unknown)}; choose from {list(sizes.models)}")
        sizes = dataclasses.replace(sizes, models=tuple(m for m in sizes.models if m in args.models))
    check = Check(args, sizes)
    print(common.load_note())
    print(f"device check{' (dry run: tiny sizes)' if args.dry_run else ''}: budget {check.budget.left():.0f} s, "
          f"models {', '.join(sizes.models)}", flush=True)
    for section, model, fn in (("environment", "-", check.environment), ("flops", "-", check.flops)):
        if check.step(section, model, 0.0, fn) is None or check.summary[-1]["status"] != "ok":
            return 2  # without the environment or the FLOP counts there is nothing to measure against
    for section, model, cost, fn in plan(check):
        check.step(section, model, cost(), fn)
    print_summary(check.summary[2:])
    print(f"rows in {common.results_dir(args.results)}: device_check.jsonl, throughput.jsonl, vs_pytorch.jsonl")
    failed = [r for r in check.summary if r["status"] == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
