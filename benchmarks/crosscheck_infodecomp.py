"""jaxpid against the authors' own Info-Decomp code, on the same model and the same images.

    python benchmarks/crosscheck_infodecomp.py --reference PATH_TO_INFO_DECOMP [--model demo|FOLDER]
                                               [--images 4] [--samples 8192] [--json OUT.json]

PATH is a checkout of kxh001/Info-Decomp (``git clone https://github.com/kxh001/Info-Decomp``);
nothing of it is copied into jaxpid. Their ``DiffusionModel`` (utils/itdiffusion.py) and
``logistic_integrate`` (utils/utils.py) run unchanged; imports this check does not use
(PyTorch Lightning's base class, seaborn, torchvision, easydict) are stubbed when missing. Their
model is jaxpid's denoiser wrapped as a PyTorch ε-predictor, queried at the timesteps their
``StableDiffuser.logsnr2t`` picks, so both sides see the same network. Needs torch and diffusers.

Conditionings, as their localization builds them (eval_itd.py:72-85): the caption, the caption
without the word, "". Per image and quantity — orthogonal MI i°(x; caption), standard MI, the
word's CMI i°(x; word | rest), the NLL −log p(x | caption) — it prints

(a) independent draws: jaxpid (the ``infodecomp`` preset's sampler) ± s.e., their code ± s.e., z;
    also jaxpid with the old clip 3, and its NLL with z built at the continuous log-SNR as theirs;
(b) shared draws: jaxpid's (u, ε) fed to their code (their integrator turns u into α and w),
    against jaxpid with z at the continuous log-SNR: the largest difference;
(c) their ``image_level_nll`` against their ``nll()`` on the same draws (its offset), and the
    intervention proposal their image_edit.py fits against jaxpid's ``study intervene`` preset.
docs/method.md#presets holds a run's table.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import json
import math
import sys
import time
import types
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np

import jaxpid
from jaxpid.analysis.config import RunConfig
from jaxpid.analysis.presets import STUDY_PRESETS
from jaxpid.demo import dataset
from jaxpid.sd.weights import resolve_model_path

CASES = (("a red circle and a blue square", "circle"), ("a green triangle", "green"),
         ("a blue square and a yellow triangle", "square"), ("a red square with a contrasting circle", "contrasting"),
         ("an orange", "orange"), ("a yellow circle and a red triangle", "triangle"))
QUANTITIES = ("orthogonal MI", "standard MI", "word's CMI", "NLL")


def stub_missing(torch) -> None:
    """Stand-ins for their imports this check never calls, only where the package is missing."""
    def stub(name: str, **attrs) -> None:
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module

    if importlib.util.find_spec("pytorch_lightning") is None:
        class LightningModule(torch.nn.Module):
            def save_hyperparameters(self, ignore=()):
                args = {k: v for k, v in inspect.currentframe().f_back.f_locals.items()
                        if k not in ("self", "__class__", *ignore)}
                args.update(args.pop("kwargs", {}))
                self.hparams = types.SimpleNamespace(**args)
        stub("pytorch_lightning", LightningModule=LightningModule)
    for name, attrs in (("seaborn", {"set_context": lambda *a, **k: None}), ("easydict", {"EasyDict": dict})):
        if importlib.util.find_spec(name) is None:
            stub(name, **attrs)
    if importlib.util.find_spec("torchvision") is None:
        for name in ("torchvision", "torchvision.transforms", "torchvision.datasets"):
            stub(name)
        stub("torchvision.datasets.utils", download_url=None)
        sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]


class TorchUNet:
    """Their ``self.model(z, t, encoder_hidden_states=c).sample`` (itdiffusion.py:53), computed by
    jaxpid's denoiser at the log-SNR of timestep t."""

    def __init__(self, torch, denoiser):
        self.torch, self.denoiser = torch, denoiser
        self.table = np.asarray(denoiser.schedule.logsnr_table, np.float32)
        self.call = jax.jit(lambda d, z, a, c: d(z, a, c))

    def __call__(self, z, t, encoder_hidden_states):
        eps = self.call(self.denoiser, jnp.asarray(z.numpy()), jnp.asarray(self.table[t.numpy()]),
                        jnp.asarray(encoder_hidden_states.numpy()))
        return types.SimpleNamespace(sample=self.torch.from_numpy(np.array(eps)))


@flax.struct.dataclass
class Unsnapped:
    """jaxpid's denoiser without ``snap_logsnr``: z is built at the continuous log-SNR, as theirs is."""

    inner: object

    def __call__(self, z, logsnr, cond):
        return self.inner(z, logsnr, cond)


class Draws:
    """Their module's ``t`` (torch) with ``rand`` / ``randn`` answering, in order, from given draws."""

    def __init__(self, torch, u, eps):
        self.torch, self.u, self.eps, self.used = torch, u, eps, [0, 0]

    def __getattr__(self, name):
        return getattr(self.torch, name)

    def _next(self, which: int, n: int) -> np.ndarray:
        stream = (self.u, self.eps)[which]
        start, self.used[which] = self.used[which], self.used[which] + n
        return np.ascontiguousarray(stream[start:start + n])

    def rand(self, n, dtype=None, device=None):
        return self.torch.from_numpy(self._next(0, n)).to(dtype)

    def randn(self, shape):
        return self.torch.from_numpy(self._next(1, shape[0]))


def jaxpid_draws(key: int, n_images: int, n_samples: int, shape) -> tuple[np.ndarray, np.ndarray]:
    """(I, N) uniforms and (I, N, C, H, W) noises of jaxpid's estimator (``core/estimator.py``:
    image i: fold_in(key, i); sample n: fold_in(key_i, n), split into a u key and an ε key)."""
    @jax.jit
    def draw(k):
        item = jax.vmap(lambda n: jax.random.split(jax.random.fold_in(k, n)))(jnp.arange(n_samples))
        return (jax.vmap(jax.random.uniform)(item[:, 0]),
                jax.vmap(lambda kk: jax.random.normal(kk, shape))(item[:, 1]))
    with jax.threefry_partitionable(False):
        base = jax.random.key(key)
        out = [draw(jax.random.fold_in(base, i)) for i in range(n_images)]
    return np.stack([np.asarray(u) for u, _ in out]), np.stack([np.asarray(e) for _, e in out])


def reference_samples(torch, itd, modules, x, conds, n_samples, rounds_of, draws=None) -> dict:
    """Per-sample terms of their ``nll()`` (the loop body of image_level_nll_fast, itdiffusion.py:423-425):
    x repeated R times per call, one log-SNR and one noise per row. Returns (I, N) arrays."""
    n_images = x.shape[0]
    xt, ct = torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(conds))  # ct: (3, I, L, D)
    nll, mi = [], []
    for start in range(0, n_samples, rounds_of):
        reps = min(rounds_of, n_samples - start)
        x_rep = xt.repeat((reps, 1, 1, 1))  # (reps·I, ...), row r·I + i
        c_rep = ct.repeat_interleave(reps, dim=0).view((-1,) + ct.shape[2:])
        patch = contextlib.nullcontext()
        if draws is not None:
            u, eps = (a[:, start:start + reps].swapaxes(0, 1).reshape((-1,) + a.shape[2:]) for a in draws)
            patch = patched(modules, Draws(torch, u, eps))
        with patch, torch.no_grad():
            n, m = itd.nll(x_rep, c_rep, mse_dim=1, int_mode="logistic")
        nll.append(n.reshape(-1, reps, n_images).numpy())
        mi.append(m.reshape(-1, reps, n_images).numpy())
    nll, mi = (np.concatenate(a, axis=1).astype(np.float64).transpose(0, 2, 1) for a in (nll, mi))  # (k, I, N)
    # conditionings [caption, caption without the word, ""]: pairs (0,1), (0,2), (1,2) (itdiffusion.py:117-138)
    return {"orthogonal MI": mi[1], "standard MI": nll[2] - nll[0], "word's CMI": mi[0], "NLL": nll[0]}


@contextlib.contextmanager
def patched(modules, fake):
    """Their modules' ``t`` replaced by ``fake`` (utils.utils draws u, itdiffusion draws ε)."""
    saved = [m.t for m in modules]
    for m in modules:
        m.t = fake
    yield
    for m, t in zip(modules, saved):
        m.t = t


def jaxpid_samples(denoise, x, conds, key, n_samples, sampler) -> dict:
    """Per-sample terms of jaxpid's fused pass, conditionings ["", without the word, caption]."""
    res = jaxpid.information(denoise, x, conds, key=jax.random.key(key), n_samples=n_samples, reference=0,
                             sampler=sampler, pairs=[(2, 1)], conds_per_image=True)
    return {"orthogonal MI": res.samples_orthogonal[:, :, 2], "standard MI": res.samples_standard[:, :, 2],
            "word's CMI": res.pair_samples_orthogonal[:, :, 0],
            "NLL": (res.nll[:, 2], res.stderr_nll[:, 2])}


def mean_se(values):
    if isinstance(values, tuple):
        return values
    return values.mean(axis=-1), values.std(axis=-1, ddof=1) / math.sqrt(values.shape[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", type=Path, required=True, help="a checkout of kxh001/Info-Decomp")
    p.add_argument("--model", default="demo", help="demo (default) or an SD 1.x / 2.x folder or hub id")
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--samples", type=int, default=8192, help="log-SNR samples per image, each side")
    p.add_argument("--key", type=int, default=0, help="jaxpid's key (their side seeds torch with it)")
    p.add_argument("--rounds-of", type=int, default=64, help="their samples per image per call (lower for SD)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args(argv)
    jaxpid.use_cpu_cores()  # on a CPU: one JAX device per core (before any JAX computation)

    import torch
    from diffusers import DDIMScheduler

    stub_missing(torch)
    sys.path.insert(0, str(args.reference.resolve()))
    from utils import itdiffusion, stablediffusion
    from utils import utils as their_utils
    modules = (itdiffusion, their_utils)
    itdiffusion.tqdm = lambda iterable, **_: iterable  # no progress bars
    torch.manual_seed(args.key)

    started = time.time()
    pipe = jaxpid.load_pipeline(args.model)
    rng = np.random.default_rng(0)
    cases = [CASES[i % len(CASES)] for i in range(args.images)]
    images = [dataset.render(dataset.scene_for_caption(c, rng=rng if i >= len(CASES) else None))[0]
              for i, (c, _) in enumerate(cases)]
    x = np.array(pipe.encode_images(np.stack(images)))
    prompts = [[c, " ".join(w for w in c.split() if w != word), ""] for c, word in cases]
    encoded = np.asarray(pipe.encode_prompt([q for ps in prompts for q in ps]))
    conds = encoded.reshape((len(cases), 3) + encoded.shape[1:])
    d = int(np.prod(x.shape[1:]))

    # Their model as eval_itd.py:40-41 builds it (configs' loc 1, scale 2, clip 3), on jaxpid's network.
    sd = stablediffusion.StableDiffuser.__new__(stablediffusion.StableDiffuser)
    sd.scheduler = DDIMScheduler.from_pretrained(str(resolve_model_path(args.model)), subfolder="scheduler")
    itd = itdiffusion.DiffusionModel(TorchUNet(torch, pipe.denoiser), tuple(x.shape[1:]), logsnr_loc=1.0,
                                     logsnr_scale=2.0, clip=3.0, logsnr2t=sd.logsnr2t)
    their_conds = np.ascontiguousarray(conds.transpose(1, 0, 2, 3))  # (3, I, L, D): caption, without the word, ""
    ours = np.ascontiguousarray(conds[:, ::-1])  # jaxpid: "", without the word, caption (information against conditioning 0)

    sampler = RunConfig.from_options("infodecomp").estimator.sampler
    old = jaxpid.LogisticSampler(loc=1.0, scale=2.0, clip=3.0)
    unsnapped = Unsnapped(pipe.denoiser)
    t0 = time.time()
    ref = reference_samples(torch, itd, modules, x, their_conds, args.samples, args.rounds_of)
    t1 = time.time()
    jx = jaxpid_samples(pipe.denoiser, x, ours, args.key, args.samples, sampler)
    t_ref, t_jax = t1 - t0, time.time() - t1
    jx_old = jaxpid_samples(pipe.denoiser, x, ours, args.key, args.samples, old)
    jx_cont = jaxpid_samples(unsnapped, x, ours, args.key, args.samples, sampler)

    rows = []
    print(f"\n(a) independent draws, {args.model}, {len(cases)} images, {args.samples} log-SNR samples each side; "
          f"jaxpid: {sampler} (the infodecomp preset); reference: their nll() (clip 4 by default)")
    print("images: " + "; ".join(f"{i + 1} “{c}” (word: {w})" for i, (c, w) in enumerate(cases)))
    print(f"{'':<3} {'quantity':<22} {'jaxpid':>20} {'reference':>20} {'z':>6}")
    sides = {"orthogonal MI": [("", jx), (", clip 3", jx_old)], "NLL": [("", jx), (", z continuous", jx_cont)]}
    for q in QUANTITIES:
        for label, side in sides.get(q, [("", jx)]):
            (jm, js), (rm, rs) = mean_se(side[q]), mean_se(ref[q])
            z = (jm - rm) / np.sqrt(js**2 + rs**2)
            for i, (c, word) in enumerate(cases):
                print(f"{i + 1:<3} {q + label:<22} {jm[i]:11.2f} ± {js[i]:6.2f} {rm[i]:11.2f} ± {rs[i]:6.2f} {z[i]:6.2f}")
                rows.append({"image": i, "caption": c, "word": word, "quantity": q + label, "jaxpid_mean": float(jm[i]),
                             "jaxpid_se": float(js[i]), "reference_mean": float(rm[i]), "reference_se": float(rs[i]),
                             "z": float(z[i])})
    largest = lambda names: max(abs(r["z"]) for r in rows if r["quantity"] in names)  # noqa: E731
    snapping = jx["NLL"][0] - jx_cont["NLL"][0]
    print(f"largest |z|: informations {largest(QUANTITIES[:3]):.2f}, NLL with z continuous "
          f"{largest(['NLL, z continuous']):.2f}, NLL as jaxpid builds z {largest(['NLL']):.2f}; jaxpid's NLL with z at "
          f"the snapped − the continuous log-SNR, same draws: " + ", ".join(f"{v:.0f}" for v in snapping) + " nats")

    shared_n = min(args.samples, 1024)
    draws = jaxpid_draws(args.key, len(cases), shared_n, tuple(x.shape[1:]))
    ref_shared = reference_samples(torch, itd, modules, x, their_conds, shared_n, args.rounds_of, draws)
    jax_shared = jaxpid_samples(unsnapped, x, ours, args.key, shared_n, sampler)
    with patched(modules, Draws(torch, draws[0].reshape(-1), None)):  # their α of these u, by their integrator
        their_alpha, _ = their_utils.logistic_integrate(draws[0].size, 1.0, 2.0)
    their_t = sd.logsnr2t(their_alpha).numpy().reshape(draws[0].shape)
    same = their_t == np.asarray(pipe.denoiser.timestep(sampler.draw(jnp.asarray(draws[0]))[0]))
    print(f"\n(b) shared draws: jaxpid's (u, ε) fed to their code (their integrator makes α and w), {shared_n} samples "
          f"per image, against jaxpid with z at the continuous log-SNR; {int((~same).sum())} of {same.size} samples "
          "have α on the two sides (float32) nearest to different timesteps and are left out")
    shared = {}
    for q in QUANTITIES:
        if q == "NLL":  # jaxpid keeps the NLL's per-image mean only: images without a left-out sample
            keep = same.all(axis=1)
            if not keep.any():
                continue
            a, b = jax_shared[q][0][keep], ref_shared[q][keep].mean(axis=1)
        else:
            a, b = jax_shared[q][same], ref_shared[q][same]
        shared[q] = {"max_abs_diff": float(np.abs(a - b).max()), "max_abs_value": float(np.abs(b).max())}
        print(f"  {q:<14} max |jaxpid − reference| = {shared[q]['max_abs_diff']:.3g} "
              f"({'per-image means' if q == 'NLL' else 'per sample'}; values up to {shared[q]['max_abs_value']:.3g})")

    # (c) their nll_1D path against their nll() path on the same draws (u shared by the images, as theirs is)
    lo, hi = sampler.support
    expected = (d - 1) * (0.5 * (math.log1p(math.exp(hi)) - math.log1p(math.exp(lo))) - 0.5 * math.log(2 * math.pi * math.e))
    u_one, eps_one = draws[0][0], draws[1]
    with patched(modules, Draws(torch, u_one, eps_one.swapaxes(0, 1).reshape((-1,) + eps_one.shape[2:]))), \
            torch.no_grad():
        their_1d, _ = itd.image_level_nll(torch.from_numpy(x), torch.from_numpy(their_conds), snr_num=shared_n)
    path = reference_samples(torch, itd, modules, x, their_conds, shared_n, args.rounds_of,
                             (np.broadcast_to(u_one, draws[0].shape), eps_one))["NLL"].mean(axis=1)
    alpha, weight = (np.asarray(a, np.float64) for a in sampler.draw(jnp.asarray(u_one)))
    these = (d - 1) * (0.5 * np.mean(weight / (1 + np.exp(-alpha))) - 0.5 * math.log(2 * math.pi * math.e))
    measured = their_1d[0].numpy().astype(np.float64) - path
    print(f"\n(c) their image_level_nll (the nll_1D path) − their nll() path, same {shared_n} draws, per image: "
          + ", ".join(f"{m:.1f}" for m in measured) + f" nats; (d − 1)·(½·mean w·σ(α) − ½·log 2πe) on these draws "
          f"= {these:.1f}, in expectation (½∫σ(α)dα over [{lo:g}, {hi:g}]) {expected:.1f} (d = {d})")
    table = sd.t2logsnr()
    lmin, lmax = float(table.min()), float(table.max())
    their_fit = (lmin + 0.5 * (lmax - lmin), (lmax - lmin) / (2.0 * 3.0))  # image_edit.py:35-37, clip 3
    ours_fit = STUDY_PRESETS["infodecomp"]["intervene"]["sampler"].for_range(pipe.schedule.logsnr_range)
    print(f"    intervention proposal: theirs (image_edit.py:35-37) loc {their_fit[0]:.5f} scale {their_fit[1]:.5f}; "
          f"jaxpid's study preset loc {ours_fit.loc:.5f} scale {ours_fit.scale:.5f} clip {ours_fit.clip}")
    print(f"\nseconds: total {time.time() - started:.0f}, reference {t_ref:.0f}, jaxpid {t_jax:.0f} (one pass, "
          f"compile included); devices {jax.devices()}; torch {torch.__version__}, jax {jax.__version__}")
    if args.json:
        record = {"model": args.model, "images": len(cases), "samples": args.samples, "key": args.key,
                  "sampler": sampler.to_dict(), "independent": rows, "shared": shared,
                  "image_level_nll_offset": measured.tolist(), "offset_on_these_draws": these,
                  "expected_offset": expected, "versions": {"jax": jax.__version__, "torch": torch.__version__}}
        args.json.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
