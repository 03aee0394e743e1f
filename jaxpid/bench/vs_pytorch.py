"""jaxpid against PyTorch on the same job: a 2-source PID of one image at N log-SNR samples.

The job is 4 × N UNet evaluations (the 4 subset conditionings × N samples), done three ways on
the same weights (jaxpid's parameters converted once to a diffusers UNet2DConditionModel) and
the same (α, ε) draws (jaxpid's own, regenerated with the estimator's key scheme), so the atoms
of the three agree up to float error, not just Monte-Carlo error:

  (a) reference: PyTorch as Info-Decomp runs it: a Python loop over the log-SNR samples, one
      UNet call per sample with the 4 conditionings concatenated into the batch, fp32,
      ``torch.no_grad``, errors moved to the host (``.cpu()``) after every call;
  (b) best: PyTorch at its best here: all conditionings × a chunk of samples per call,
      ``torch.inference_mode``, SDPA attention; the fastest of fp32 / bf16 autocast (and fp16
      on a GPU) and contiguous / channels-last measured on a probe; then ``torch.compile`` of the
      winner in a worker process under a time budget (used if it finishes and is faster);
  (c) jaxpid: ``jaxpid.pid`` on the pipeline's denoiser; first call (compile) apart from the
      steady state.

Prints a table, appends rows to vs_pytorch.jsonl in the results folder (``--results``; see
``jaxpid.bench.results.results_dir``) and, as its last line, ``ratio_reference=<x> ratio_best=<y>``
(jaxpid's steady-state speed-up over (a) and (b)). Needs the ``torch`` extra
(``pip install 'jaxpid[torch]'``: PyTorch and diffusers). PyTorch runs on the GPU when JAX does
and PyTorch sees one (``torch_device``), else on the CPU.

    python -m jaxpid.bench.vs_pytorch --quick   # demo model (or a random one of its size)
    python -m jaxpid.bench.vs_pytorch           # + SD 2.1-base architecture, 16x16 latents, N=2
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxpid
from jaxpid.bench import common, prototypes
from jaxpid.bench import models as bench_models
from jaxpid.core import InformationResult, LogisticSampler, decompose
from jaxpid.errors import ConfigError, JaxpidError
from jaxpid.io.atomic import npz_bytes, temporary_folder, write_file, write_json
from jaxpid.sd.models.convert import flax_to_state_dict

TORCH_EXTRA = ("torch", "diffusers")  # the packages of jaxpid's "torch" extra this program needs

KEY_SEED = 0
ATOMS = ("{1}{2}", "{1}", "{2}", "{12}")
# The papers' 2-word PID (Info-Decomp's mmi on orthogonal values): what the PyTorch ways compute
# from their errors (gaps against the reference only), so jaxpid runs the same decomposition (and
# draws the papers' independent logistic samples, which the PyTorch loop regenerates).
PAPERS_PID = {"measure": "mmi", "form": "orthogonal"}

# ---------------------------------------------------------------------------------------------
# The shared draws.


def estimator_draws(denoiser, x_shape: tuple, n_samples: int, key_seed: int = KEY_SEED,
                    sampler=LogisticSampler()) -> dict:
    """The (α, w, ε) jaxpid's estimator draws for image 0, sample n = 0..N-1.

    Same calls as the estimator's fused pass (``jaxpid.core.estimator``): image i's key is
    ``fold_in(key, i)`` (as ``FusedPass.prepare`` derives one key per image from one key), item
    (i, n) draws from ``fold_in(key_i, n)``, split into a uniform key and a noise key, compiled
    with non-partitionable threefry as ``FusedPass.lower`` does.

    Returns numpy arrays: logsnr (N,) snapped α, weight (N,), eps (N, C, H, W), timestep (N,).
    """
    _, channels, height, width = x_shape

    @jax.jit
    def draw(keys):
        image = jnp.zeros(n_samples, jnp.int32)
        item_keys = jax.vmap(jax.random.fold_in)(keys[image], jnp.arange(n_samples))
        u_key, eps_key = jax.vmap(jax.random.split, out_axes=1)(item_keys)
        alpha, weight = sampler.draw(jax.vmap(lambda k: jax.random.uniform(k))(u_key))
        eps = jax.vmap(lambda k: jax.random.normal(k, (channels, height, width)))(eps_key)
        return denoiser.snap_logsnr(alpha), weight, eps, denoiser.timestep(alpha)

    key = jax.random.key(key_seed)
    with jax.threefry_partitionable(False):
        image_keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(1))
        logsnr, weight, eps, timestep = draw(image_keys)
    return {"logsnr": np.array(logsnr), "weight": np.array(weight), "eps": np.array(eps),
            "timestep": np.array(timestep)}  # writable copies: torch.from_numpy shares them


def information_from_errors(sq_err: np.ndarray, sq_gap: np.ndarray, draws: dict, config: dict) -> InformationResult:
    """An ``InformationResult`` of one image from per-sample squared-error maps.

    Args:
      sq_err: (N, S, H, W) ‖ε − ε̂_s‖² summed over channels.
      sq_gap: (N, S, H, W) ‖ε̂_s − ε̂_0‖² summed over channels.
    """
    n, _, height, width = sq_err.shape
    dim = draws["eps"][0].size
    w = 0.5 * draws["weight"].astype(np.float64)[:, None, None, None]
    map_std = w * (sq_err[:, :1] - sq_err)
    map_orth = w * sq_gap
    std, orth = map_std.sum(axis=(2, 3)), map_orth.sum(axis=(2, 3))  # (N, S)
    sigmoid = 1.0 / (1.0 + np.exp(-draws["logsnr"].astype(np.float64)))
    nll = w[:, :, 0, 0] * (sq_err.sum(axis=(2, 3)) - dim * sigmoid[:, None])
    stderr = lambda a: a.std(axis=0, ddof=1)[None] / math.sqrt(n)
    return InformationResult(
        mi_standard=std.mean(axis=0)[None],
        mi_orthogonal=orth.mean(axis=0)[None],
        nll=0.5 * dim * math.log(2 * math.pi * math.e) + nll.mean(axis=0)[None],
        stderr_standard=stderr(std),
        stderr_orthogonal=stderr(orth),
        stderr_nll=stderr(nll),
        maps_standard=map_std.mean(axis=0)[None],
        maps_orthogonal=map_orth.mean(axis=0)[None],
        samples_standard=std[None],
        samples_orthogonal=orth[None],
        logsnr=draws["logsnr"][None].astype(np.float64),
        config={**config, "reference": 0, "n_samples": n},
    )


# ---------------------------------------------------------------------------------------------
# PyTorch.


def torch_device() -> str:
    """Where PyTorch runs: "cuda" when JAX runs on a GPU and PyTorch sees one too, else "cpu"."""
    import torch

    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def torch_unet(unet_config: dict, params, device: str = "cpu"):
    """diffusers' UNet2DConditionModel holding jaxpid's ``params`` (converted once), eval mode, on ``device``."""
    import diffusers
    import torch

    state = {name: torch.from_numpy(array if array.flags.writeable else array.copy())
             for name, array in flax_to_state_dict(params).items()}
    with torch.device("meta"):  # no random init: the weights come from the state dict
        unet = diffusers.UNet2DConditionModel.from_config(unet_config)
    unet.load_state_dict(state, strict=True, assign=True)
    return unet.to(device).eval()


def torch_inputs(model: bench_models.BenchModel, draws: dict, device: str = "cpu") -> dict:
    return job_tensors({"x": model.x, "conds": model.conds, **draws}, model.denoiser.schedule.prediction_type, device)


def job_tensors(arrays, prediction_type: str, device: str = "cpu") -> dict:
    """The job's numpy arrays (x, conds, eps, logsnr, timestep) as PyTorch tensors on ``device``."""
    import torch

    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)
    return {
        "x": as_tensor(arrays["x"]),
        "conds": as_tensor(arrays["conds"]),
        "eps": as_tensor(arrays["eps"]),
        "logsnr": as_tensor(arrays["logsnr"].astype(np.float32)),
        "timestep": as_tensor(arrays["timestep"].astype(np.int64)),
        "prediction_type": prediction_type,
    }


def _to_epsilon(prediction, z, logsnr, prediction_type: str):
    import torch

    if prediction_type == "epsilon":
        return prediction
    signal, noise = torch.sqrt(torch.sigmoid(logsnr)), torch.sqrt(torch.sigmoid(-logsnr))
    if prediction_type == "v_prediction":
        return signal * prediction + noise * z
    return (z - signal * prediction) / noise


def run_reference(unet, inputs: dict) -> tuple[np.ndarray, np.ndarray]:
    """(a): one UNet call per log-SNR sample, conditionings batched, ``.cpu()`` after each."""
    import torch

    x, conds, eps_all = inputs["x"], inputs["conds"], inputs["eps"]
    n_conds = conds.shape[0]
    sq_err, sq_gap = [], []
    with torch.no_grad():
        for n in range(eps_all.shape[0]):
            logsnr = inputs["logsnr"][n]
            eps = eps_all[n : n + 1]
            z = torch.sqrt(torch.sigmoid(logsnr)) * x + torch.sqrt(torch.sigmoid(-logsnr)) * eps
            z = torch.cat([z] * n_conds)
            t = inputs["timestep"][n].repeat(n_conds)
            prediction = unet(z, t, encoder_hidden_states=conds).sample
            eps_hat = _to_epsilon(prediction, z, logsnr, inputs["prediction_type"])
            sq_err.append(((eps - eps_hat) ** 2).sum(dim=1).cpu().numpy())
            sq_gap.append(((eps_hat - eps_hat[:1]) ** 2).sum(dim=1).cpu().numpy())
    return np.stack(sq_err).astype(np.float64), np.stack(sq_gap).astype(np.float64)


def run_batched(unet, inputs: dict, chunk: int, bf16: bool = False, channels_last: bool = False, fp16: bool = False):
    """(b): chunks of samples × all conditionings per call, errors reduced on the device; bf16
    or fp16 autocast when asked."""
    import torch

    x, conds, eps_all = inputs["x"], inputs["conds"], inputs["eps"]
    n_samples, n_conds = eps_all.shape[0], conds.shape[0]
    low = torch.bfloat16 if bf16 else torch.float16 if fp16 else None
    autocast = torch.autocast(x.device.type, dtype=low) if low is not None else contextlib.nullcontext()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    sq_err, sq_gap = [], []
    with torch.inference_mode(), autocast:
        for start in range(0, n_samples, chunk):
            eps = eps_all[start : start + chunk]  # (c, C, H, W)
            c = eps.shape[0]
            logsnr = inputs["logsnr"][start : start + c].view(c, 1, 1, 1)
            z = torch.sqrt(torch.sigmoid(logsnr)) * x + torch.sqrt(torch.sigmoid(-logsnr)) * eps
            z_all = z.repeat_interleave(n_conds, dim=0).contiguous(memory_format=memory_format)
            t_all = inputs["timestep"][start : start + c].repeat_interleave(n_conds)
            cond_all = conds.repeat(c, 1, 1)
            prediction = unet(z_all, t_all, encoder_hidden_states=cond_all).sample.float()
            logsnr_all = logsnr.repeat_interleave(n_conds, dim=0)
            eps_hat = _to_epsilon(prediction, z_all, logsnr_all, inputs["prediction_type"])
            eps_hat = eps_hat.reshape((c, n_conds) + eps_hat.shape[1:])
            sq_err.append(((eps[:, None] - eps_hat) ** 2).sum(dim=2))
            sq_gap.append(((eps_hat - eps_hat[:, :1]) ** 2).sum(dim=2))
    return torch.cat(sq_err).cpu().double().numpy(), torch.cat(sq_gap).cpu().double().numpy()


def probe_best_eager(unet, inputs: dict, chunks: list[int], probe_samples: int, try_bf16: bool = True,
                     low_precision: tuple[str, ...] | None = None) -> list[dict]:
    """Time eager variants on the first ``probe_samples`` samples (each after a warm-up call):
    fp32 contiguous and channels-last at every chunk size, then each low-precision autocast
    (default: bf16 on a CPU, where it is emulated without bf16 instructions, so one look is
    enough; fp16 and bf16 on a GPU) at the best of those."""
    probe = {**inputs, "eps": inputs["eps"][:probe_samples]}
    evals = probe_samples * inputs["conds"].shape[0]
    if low_precision is None:
        low_precision = ("fp16", "bf16") if inputs["x"].device.type == "cuda" else ("bf16",)

    def measure(chunk: int, low: str | None, channels_last: bool) -> dict:
        import torch

        if channels_last:
            unet.to(memory_format=torch.channels_last)
        run = lambda: run_batched(unet, probe, chunk, low == "bf16", channels_last, fp16=low == "fp16")
        run()
        seconds, _ = common.best_of(run, 2)
        if channels_last:
            unet.to(memory_format=torch.contiguous_format)
        return {"chunk": chunk, "bf16": low == "bf16", "fp16": low == "fp16", "channels_last": channels_last,
                "evals_per_s": evals / seconds}

    rows = [measure(chunk, None, channels_last) for chunk in chunks for channels_last in (False, True)]
    if try_bf16:
        best = max(rows, key=lambda r: r["evals_per_s"])
        rows += [measure(best["chunk"], low, best["channels_last"]) for low in low_precision]
    return rows


# ---------------------------------------------------------------------------------------------
# torch.compile in a worker process (so a compile that runs too long can be stopped).


def compile_in_worker(model: bench_models.BenchModel, draws: dict, variant: dict, budget_s: float,
                      repeats: int) -> dict:
    """Run (b) with ``torch.compile`` in a child process; {"status": ..., times, errors}."""
    with temporary_folder(prefix="jaxpid-bench-") as tmp:
        write_file(tmp / "job.npz", npz_bytes(x=model.x, conds=model.conds, **draws))
        job = {"unet_config": model.unet_config, "source": model.source, "variant": variant,
               "prediction_type": model.denoiser.schedule.prediction_type, "repeats": repeats,
               "device": torch_device()}
        write_json(tmp / "job.json", job)
        command = [sys.executable, "-m", "jaxpid.bench.vs_pytorch", "--compile-worker", str(tmp)]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=budget_s)
        except subprocess.TimeoutExpired:
            return {"status": f"torch.compile did not finish within the budget of {budget_s:.0f} s "
                              "(compile + run) on this CPU; not used"}
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not (tmp / "result.json").exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return {"status": "torch.compile failed: " + " | ".join(tail)}
        result = json.loads((tmp / "result.json").read_text())
        errors = np.load(tmp / "errors.npz")
        return {"status": "ok", **result, "worker_wall_s": wall,
                "sq_err": errors["sq_err"], "sq_gap": errors["sq_gap"]}


def compile_worker(folder: Path) -> None:
    import torch

    job = json.loads((folder / "job.json").read_text())
    data = np.load(folder / "job.npz")
    torch.set_num_threads(os.cpu_count() or 1)
    device = job.get("device", "cpu")
    params = bench_models.unet_params(job["source"], job["unet_config"])
    unet = torch_unet(job["unet_config"], params, device)
    del params
    variant = job["variant"]
    if variant["channels_last"]:
        unet.to(memory_format=torch.channels_last)
    compiled = torch.compile(unet, dynamic=False)
    inputs = job_tensors(data, job["prediction_type"], device)
    run = lambda: run_batched(compiled, inputs, variant["chunk"], variant["bf16"], variant["channels_last"],
                              fp16=variant.get("fp16", False))
    t0 = time.perf_counter()
    run()
    first = time.perf_counter() - t0
    steady, (sq_err, sq_gap) = common.best_of(run, job["repeats"])
    write_file(folder / "errors.npz", npz_bytes(sq_err=sq_err, sq_gap=sq_gap))
    write_json(folder / "result.json", {"first_s": first, "steady_s": steady})


# ---------------------------------------------------------------------------------------------
# The comparison.


def run_jaxpid(model: bench_models.BenchModel, n_samples: int, chunk: int | None, repeats: int):
    # All local devices, as jaxpid runs by default: on a CPU, one device per core (main() calls
    # jaxpid.use_cpu_cores(), as the jaxpid command does).
    run = lambda: jaxpid.pid(model.denoiser, model.x, model.conds, key=jax.random.key(KEY_SEED),
                             n_samples=n_samples, chunk_size=chunk, sampler=LogisticSampler(), **PAPERS_PID)
    t0 = time.perf_counter()
    result = run()
    first = time.perf_counter() - t0
    steady, result = common.best_of(run, repeats)
    return result, first, steady


def compare(model: bench_models.BenchModel, n_samples: int, *, chunk: int | None = None, repeats: int = 2,
            compile_budget_s: float = 120.0, probe_samples: int | None = None, torch_compile: bool = True,
            try_bf16: bool = True, log=print) -> dict:
    """Run the job three ways; returns a summary dict (times, evals/s, ratios, atom differences)."""
    import torch

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    n_conds = model.conds.shape[0]
    evals = n_conds * n_samples
    log(f"model: {model.description}; job: 2-source PID, N={n_samples}, {evals} UNet evaluations")

    log("(c) jaxpid ...")
    pid_jax, jax_first, jax_steady = run_jaxpid(model, n_samples, chunk, repeats)
    jax_chunk = pid_jax.config["chunk_size"]

    draws = estimator_draws(model.denoiser, model.x.shape, n_samples)
    if not np.array_equal(draws["logsnr"], pid_jax.information.logsnr[0].astype(np.float32)):
        raise RuntimeError("regenerated log-SNR draws differ from jaxpid's: the key scheme changed")
    config = {"sampler": LogisticSampler().to_dict(), "chunk_size": None, "devices": 1, "n_conditionings": n_conds}
    decomposed = lambda sq: decompose(information_from_errors(*sq, draws, config), 2, **PAPERS_PID)

    device = torch_device()
    unet = torch_unet(model.unet_config, model.denoiser.params, device)
    inputs = torch_inputs(model, draws, device)

    # Every way's time includes its host-side PID (as jaxpid.pid's does): errors -> atoms.
    log("(a) PyTorch reference loop ...")
    run_reference(unet, {**inputs, "eps": inputs["eps"][:1]})  # warm-up call
    ref_s, pid_ref = common.best_of(lambda: decomposed(run_reference(unet, inputs)), repeats)

    log(f"(b) PyTorch best effort on {device}: probing variants ...")
    chunks = sorted({jax_chunk, max(1, min(n_samples, 64 // n_conds)), max(1, 16 // n_conds)})
    chunks = [c for c in chunks if n_samples % c == 0] or [c for c in chunks if c <= n_samples] or [1]
    probe_n = probe_samples or min(n_samples, max(chunks) * 2)
    probes = probe_best_eager(unet, inputs, chunks, probe_n, try_bf16)
    for p in probes:
        log(f"    chunk {p['chunk']:>3} bf16={p['bf16']!s:5} fp16={p['fp16']!s:5} "
            f"channels_last={p['channels_last']!s:5} {p['evals_per_s']:9.1f} evals/s")
    best = max(probes, key=lambda p: p["evals_per_s"])
    variant = {k: best[k] for k in ("chunk", "bf16", "fp16", "channels_last")}
    if variant["channels_last"]:
        unet.to(memory_format=torch.channels_last)
    eager_s, pid_best = common.best_of(
        lambda: decomposed(run_batched(unet, inputs, variant["chunk"], variant["bf16"], variant["channels_last"],
                                       fp16=variant["fp16"])),
        repeats)
    best_s, best_how = eager_s, "eager"
    compiled = {"status": "not tried (--no-compile)"}
    if torch_compile:
        log(f"(b) torch.compile of the best eager variant {variant} (budget {compile_budget_s:.0f} s) ...")
        compiled = compile_in_worker(model, draws, variant, compile_budget_s, repeats)
        log(f"    {compiled['status']}")
        if compiled["status"] == "ok":
            t0 = time.perf_counter()
            pid_compiled = decomposed((compiled["sq_err"], compiled["sq_gap"]))
            compiled["steady_s"] += time.perf_counter() - t0  # the worker timed the UNet passes only
            if compiled["steady_s"] < best_s:
                best_s, best_how, pid_best = compiled["steady_s"], "torch.compile", pid_compiled

    atoms = {name: np.array([p.atoms[a][0] for a in ATOMS]) for name, p in
             (("jaxpid", pid_jax), ("reference", pid_ref), ("best", pid_best))}
    stderr = np.array([pid_jax.atoms_stderr[a][0] for a in ATOMS])
    diff = lambda a, b: float(np.max(np.abs(atoms[a] - atoms[b])))
    summary = {
        "model": model.name,
        "description": model.description,
        "n_params": model.n_params,
        "input_shape": list(model.x.shape[1:]),
        "n_samples": n_samples,
        "evaluations": evals,
        "threads": threads,
        "torch_device": device,
        "jaxpid_dtype": str(np.dtype(model.denoiser.unet.dtype)),
        "jaxpid_chunk": jax_chunk,
        "jaxpid_devices": pid_jax.config["devices"],
        "jaxpid_first_s": jax_first,
        "jaxpid_compile_s": jax_first - jax_steady,
        "jaxpid_s": jax_steady,
        "reference_s": ref_s,
        "best_s": best_s,
        "best_how": best_how,
        "best_variant": variant,
        "best_eager_s": eager_s,
        "torch_compile": {k: v for k, v in compiled.items() if k not in ("sq_err", "sq_gap")},
        "probes": probes,
        "jaxpid_evals_per_s": evals / jax_steady,
        "reference_evals_per_s": evals / ref_s,
        "best_evals_per_s": evals / best_s,
        "ratio_reference": ref_s / jax_steady,
        "ratio_best": best_s / jax_steady,
        "ratio_reference_cold": ref_s / jax_first,
        "atoms": {name: dict(zip(ATOMS, values.tolist())) for name, values in atoms.items()},
        "atoms_stderr": dict(zip(ATOMS, stderr.tolist())),
        "max_atom_diff_jaxpid_reference": diff("jaxpid", "reference"),
        "max_atom_diff_jaxpid_best": diff("jaxpid", "best"),
        "max_atom_diff_reference_best": diff("reference", "best"),
        "max_atom_stderr": float(stderr.max()),
    }
    return summary


def print_summary(s: dict, log=print) -> None:
    evals = s["evaluations"]
    log("")
    log(f"{s['description']}; N={s['n_samples']} ({evals} UNet evaluations), {s['threads']} threads")
    log(f"{'way':<34} {'wall s':>9} {'evals/s':>9} {'jaxpid speed-up':>16}")
    log(f"{'(a) PyTorch reference loop, fp32':<34} {s['reference_s']:9.3f} {s['reference_evals_per_s']:9.1f} "
        f"{s['ratio_reference']:15.2f}x")
    low = ", bf16" if s["best_variant"]["bf16"] else ", fp16" if s["best_variant"].get("fp16") else ""
    how = f"(b) PyTorch best ({s['best_how']}{low})"
    log(f"{how:<34} {s['best_s']:9.3f} {s['best_evals_per_s']:9.1f} {s['ratio_best']:15.2f}x")
    log(f"{'(c) jaxpid, steady state':<34} {s['jaxpid_s']:9.3f} {s['jaxpid_evals_per_s']:9.1f} {1.0:15.2f}x")
    log(f"{'    jaxpid first call (compile)':<34} {s['jaxpid_first_s']:9.3f} {evals / s['jaxpid_first_s']:9.1f}")
    log(f"torch.compile: {s['torch_compile']['status']}")
    log("atoms (nats):      " + "  ".join(f"{a:>10}" for a in ATOMS))
    for name in ("jaxpid", "reference", "best"):
        log(f"  {name:<16}" + "  ".join(f"{s['atoms'][name][a]:10.5f}" for a in ATOMS))
    log(f"  {'MC stderr':<16}" + "  ".join(f"{s['atoms_stderr'][a]:10.5f}" for a in ATOMS))
    log(f"max |atom difference|: jaxpid-reference {s['max_atom_diff_jaxpid_reference']:.2e}, "
        f"jaxpid-best {s['max_atom_diff_jaxpid_best']:.2e}, reference-best {s['max_atom_diff_reference_best']:.2e} "
        f"(largest Monte-Carlo stderr {s['max_atom_stderr']:.2e})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="demo model only (under 5 minutes on 2 CPU cores)")
    parser.add_argument("--samples", type=int, default=None, help="log-SNR samples N of the demo job (default 128)")
    parser.add_argument("--sd-samples", type=int, default=2, help="N for the SD 2.1-base architecture")
    parser.add_argument("--sd-latent", type=int, default=16, help="latent side for the SD 2.1-base architecture")
    parser.add_argument("--chunk", type=int, default=None, help="jaxpid chunk size (default: jaxpid's)")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats per way (best is kept)")
    parser.add_argument("--compile-budget", type=float, default=None,
                        help="seconds allowed for torch.compile + its runs (default 150 demo, 420 SD)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--models", nargs="+", default=None, help="override: e.g. tiny demo sd21-base")
    parser.add_argument("--prototypes", nargs="*", default=None,
                        help="run jaxpid with the proposed layer changes of jaxpid.bench.prototypes patched in "
                             "(all, or the named ones)")
    common.add_results_option(parser)
    parser.add_argument("--compile-worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # Before JAX starts (the torch.compile worker too): one CPU device per core, as jaxpid runs.
    jaxpid.use_cpu_cores()
    missing = missing_extras()
    if missing:
        print(f"jaxpid.bench.vs_pytorch: error: needs PyTorch and diffusers ({', '.join(missing)} not installed): "
              "pip install 'jaxpid[torch]'", file=sys.stderr)
        return 2
    if args.compile_worker is not None:
        compile_worker(args.compile_worker)
        return 0
    try:
        return run(args)
    except JaxpidError as error:
        print(f"jaxpid.bench.vs_pytorch: error: {error}", file=sys.stderr)
        return 2


def missing_extras() -> list[str]:
    """The packages of the ``torch`` extra that are not installed here."""
    return [name for name in TORCH_EXTRA if importlib.util.find_spec(name) is None]


def run(args: argparse.Namespace) -> int:
    code = prototypes.apply_requested(args.prototypes)
    models = args.models or (["demo"] if args.quick else ["demo", "sd21-base"])
    unsupported = [name for name in models if name in ("sdxl-base", "micro-sdxl")]
    if unsupported:  # its PyTorch ways feed one (77, D) context tensor, not SDXL's added conditions
        raise ConfigError(f"vs_pytorch compares SD 1.x / 2.x-style UNets only; {unsupported} are SDXL "
                          "(use jaxpid.bench.throughput for them)")
    print(common.load_note())
    summaries = []
    for name in models:
        sd = name == "sd21-base"
        model = bench_models.build_model(name, latent=args.sd_latent if sd else None)
        n = args.sd_samples if sd else (args.samples or 128)
        budget = args.compile_budget or (420.0 if sd else 150.0)
        summary = compare(model, n, chunk=args.chunk, repeats=1 if sd else args.repeats,
                          compile_budget_s=budget, torch_compile=not args.no_compile)
        print_summary(summary)
        row = {"benchmark": "vs_pytorch", "quick": args.quick, "jaxpid_code": code, **summary,
               "environment": common.environment()}
        path = common.save_rows("vs_pytorch", [row], args)
        summaries.append(summary)
        del model
    print(f"appended {len(summaries)} rows to {path}")
    first = summaries[0]
    print(f"ratio_reference={first['ratio_reference']:.2f} ratio_best={first['ratio_best']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
