"""Why the demo model reads too high (issue 27, item 3): one measurement per hypothesis.

On images the renderer draws for the README prompt "a red circle and a blue square", given the
context c = "a red _ and a blue _", the world's exact values are i(x; circle | c) =
i(x; square | c) = log 3 and the joint log 9 (``jaxpid.demo.world``). This program evaluates the
demo model on 16 conditionings of one shared (α, ε) per sample (the context, the three shapes in
each slot, the nine full prompts "a red A and a blue B"), beside a **reference denoiser of the
world**: the exact posterior-mean denoiser of an empirical mixture of ``--refs`` renders per shape
pair (the renderer's scenes with their jitter; the context's posterior over the nine pairs is
uniform, as ``jaxpid.demo.world`` gives). Then, per log-SNR bin (12 bins over the sampler's
support) and integrated (mean over images ± s.e. over images):

1. where the joint's standard-form integrand ½w(‖ε−ε̂_c‖² − ‖ε−ε̂_F‖²) comes from, model vs
   reference, and the model's own error ‖ε−ε̂_F‖²/d per bin;
2. inconsistency of the context-only prediction with the full ones: a consistent model has
   ε̂(z, c) = Σ_y p(y | z, c) ε̂(z, c, y) over the nine pairs y. Measured as ½w·‖ε̂_c − mix‖²,
   (a) with the world's posterior p(y | z, c) (from the reference) as the weights, and (b) the
   distance from ε̂_c to the convex hull of the nine ε̂(z, c, y) (the best weights: a lower bound on
   any mixture's residual), beside the orthogonal joint gap ½w‖ε̂_F − ε̂_c‖²; and the consistency
   sum log Σ_y' (1/3) exp(i(x; y' | c)) over each slot's three shapes (0 for a consistent model);
3. guidance: the package's ``jaxpid.analyze`` (standard and anchored forms) on rendered images and
   on images the model generated with guidance 1 and 7.5 (same seeds), with its log_consistency;
4. log-SNR truncation: the same quantities with a stratified uniform proposal on a wider support
   (``--wide-clip``, default 5: [−9, 11]); model α snaps to its 1000 steps ([−5.36, 7.07]),
   the reference runs at the drawn α; the integral is split by region;
5. training length / EMA: the joint of other weights (``--checkpoint CKPT`` of
   ``python -m jaxpid.demo.train``, its EMA and its raw weights) under part 1's pass;
6. the logistic proposal's clip: the README job (images generated with guidance 7.5, seeds
   0..images-1) under ``jaxpid.analyze`` with clip 3 (the default), 4 (Info-Decomp's code) and 5;
   beyond the model's range α snaps to its last step, so what a wider clip adds is the size of the
   integrand at the ends of the range (paired differences against clip 3, anchored form).

    nice -n 19 python benchmarks/demo_calibration.py                       # 16 images x 128 samples, ~15 min on 2 cores
    nice -n 19 python benchmarks/demo_calibration.py --quick               # 4 x 32, ~2 min
    nice -n 19 python benchmarks/demo_calibration.py --checkpoint runs/calib/ckpt/ckpt-0000500 --skip-guidance --skip-wide

Prints tables and appends rows (with ``environment()``) to demo_calibration.jsonl in the results folder.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import nnls

import jaxpid
from jaxpid.analysis.images import given_images
from jaxpid.bench import common
from jaxpid.core.sampling import LogisticSampler, StratifiedSampler, UniformSampler
from jaxpid.demo import dataset, world

PROMPT = "a red circle and a blue square"
SOURCES = ("circle", "square")
SHAPES = dataset.SHAPES
TRUE = ("circle", "square")
N_BINS = 12
REGIONS = [(-20.0, 0.0), (0.0, 20.0)]  # where the world's posterior over the shapes is / is not settled


# ---------------------------------------------------------------------------------------------
# The 16 conditionings and the reference denoiser


def conditionings() -> tuple[list[str], list[tuple[str | None, str | None]]]:
    """Prompts and the (first, second) shapes each fixes (None: open)."""
    specs = [(None, None)] + [(a, None) for a in SHAPES] + [(None, b) for b in SHAPES] + \
            [(a, b) for a in SHAPES for b in SHAPES]
    prompts = [f"a red {a + ' ' if a else ''}and a blue{' ' + b if b else ''}" for a, b in specs]
    return prompts, specs


PROMPTS, SPECS = conditionings()
CTX = 0
SLOT1 = {a: 1 + i for i, a in enumerate(SHAPES)}
SLOT2 = {b: 4 + i for i, b in enumerate(SHAPES)}
FULL = {(a, b): 7 + 3 * i + j for i, a in enumerate(SHAPES) for j, b in enumerate(SHAPES)}
PAIRS = list(FULL)  # the nine (first, second) shape pairs, in FULL's order


def render_pixels(caption: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, H, W, 3) float in [0, 1]: the renderer's scenes of ``caption`` with training jitter."""
    return np.stack([dataset.render(dataset.scene_for_caption(caption, rng=rng))[0] for _ in range(n)])


def to_model(pixels: np.ndarray) -> np.ndarray:
    return np.transpose(2.0 * pixels - 1.0, (0, 3, 1, 2)).astype(np.float32)


def reference_bank(refs: int, seed: int = 123) -> tuple[np.ndarray, np.ndarray]:
    """(9·refs, d) renders of every shape pair (model pixel space) and (16, 9·refs) log-weights of
    each conditioning over them (uniform over the pairs the conditioning allows: world posterior)."""
    rng = np.random.default_rng(seed)
    bank = np.concatenate([to_model(render_pixels(f"a red {a} and a blue {b}", refs, rng)).reshape(refs, -1)
                           for a, b in PAIRS])
    logw = np.full((len(SPECS), len(bank)), -np.inf, np.float32)
    for k, (a, b) in enumerate(SPECS):
        allowed = [p for p, (pa, pb) in enumerate(PAIRS) if (a is None or a == pa) and (b is None or b == pb)]
        for p in allowed:
            logw[k, p * refs:(p + 1) * refs] = -math.log(len(allowed) * refs)
    return bank, logw


# ---------------------------------------------------------------------------------------------
# One pass: model and reference on all 16 conditionings of shared (α, ε)


def make_step(denoiser, conds, bank, logw, refs: int):
    n_conds = conds.shape[0]

    @jax.jit
    def step(den, x, eps, alpha_model, alpha_ref):
        b = eps.shape[0]
        shape = eps.shape[1:]
        a_m = jax.nn.sigmoid(alpha_model)[:, None, None, None]
        z = jnp.sqrt(a_m) * x[None] + jnp.sqrt(1 - a_m) * eps
        zz = jnp.repeat(z, n_conds, axis=0)
        cc = jnp.tile(conds, (b, 1, 1))
        aa = jnp.repeat(alpha_model, n_conds)
        eps_hat = den(zz, aa, cc).reshape(b, n_conds, *shape)
        # the reference: posterior mean over the bank at the drawn α (its own z, same ε)
        a_r = jax.nn.sigmoid(alpha_ref)[:, None]
        zr = (jnp.sqrt(a_r) * x.reshape(1, -1) + jnp.sqrt(1 - a_r) * eps.reshape(b, -1))
        d2 = jnp.sum((zr[:, None, :] - jnp.sqrt(a_r)[:, :, None] * bank[None]) ** 2, axis=-1)  # (b, M)
        loglik = -d2 / (2 * (1 - a_r))  # (b, M)
        post = jax.nn.softmax(loglik[:, None, :] + logw[None], axis=-1)  # (b, 16, M)
        x_mean = jnp.einsum("bkm,md->bkd", post, bank)
        ref_hat = (zr[:, None, :] - jnp.sqrt(a_r)[:, :, None] * x_mean) / jnp.sqrt(1 - a_r)[:, :, None]
        # the world's posterior over the nine pairs given (z, c): the context's weights, per pair
        pair_post = post[:, CTX].reshape(b, len(PAIRS), refs).sum(-1)
        return eps_hat.reshape(b, n_conds, -1), ref_hat, pair_post

    return step


def hull_residual(target: np.ndarray, points: np.ndarray) -> tuple[float, np.ndarray]:
    """min over simplex weights w of ‖target − points·w‖² (points (d, K)) and the weights."""
    scale = max(float(np.abs(points).max()), 1e-6)
    lam = 1e3 * scale
    a = np.vstack([points, lam * np.ones((1, points.shape[1]))])
    w, _ = nnls(a, np.concatenate([target, [lam]]), maxiter=2000)
    w = w / w.sum() if w.sum() > 0 else np.full(points.shape[1], 1 / points.shape[1])
    r = target - points @ w
    return float(r @ r), w


def run_pass(pipe, latents: np.ndarray, sampler, n_samples: int, bank, logw, refs: int, seed: int = 0,
             chunk: int = 16, log=print) -> dict:
    """Per-sample terms (I, N) of everything the tables use."""
    den = pipe.denoiser
    conds = jnp.asarray(pipe.encode_prompt(PROMPTS))
    sampler = sampler.for_samples(n_samples)
    step = make_step(den, conds, jnp.asarray(bank), jnp.asarray(logw), refs)
    n_img, d = latents.shape[0], int(np.prod(latents.shape[1:]))
    keys = ("alpha", "alpha_model", "weight", "err", "err_ref", "hull", "hull_w_true", "mix", "post_true", "orth")
    out = {k: [] for k in keys}
    t0 = time.time()
    true_full, true_pair = FULL[TRUE], PAIRS.index(TRUE)
    for i in range(n_img):
        key = jax.random.fold_in(jax.random.key(seed), i)
        idx = jnp.arange(n_samples)
        sub = jax.vmap(lambda n: jax.random.split(jax.random.fold_in(key, n)))(idx)
        u = jax.vmap(lambda k: jax.random.uniform(k))(sub[:, 0])
        eps = jax.vmap(lambda k: jax.random.normal(k, latents.shape[1:]))(sub[:, 1])
        alpha, weight = sampler.draw(u, idx, n_samples)
        alpha_m = den.snap_logsnr(alpha)
        rows = {k: [] for k in keys}
        for s in range(0, n_samples, chunk):
            sl = slice(s, s + chunk)
            eh, rh, pp = jax.device_get(step(den, jnp.asarray(latents[i]), eps[sl], alpha_m[sl], alpha[sl]))
            e = np.asarray(eps[sl]).reshape(eh.shape[0], -1)
            rows["err"].append(np.sum((e[:, None] - eh) ** 2, -1))
            rows["err_ref"].append(np.sum((e[:, None] - rh) ** 2, -1))
            rows["orth"].append(np.sum((eh[:, true_full] - eh[:, CTX]) ** 2, -1))
            full_points = eh[:, [FULL[p] for p in PAIRS]]  # (b, 9, d)
            hull, wt = zip(*(hull_residual(eh[j, CTX], full_points[j].T) for j in range(eh.shape[0])))
            rows["hull"].append(np.asarray(hull))
            rows["hull_w_true"].append(np.asarray([w[true_pair] for w in wt]))
            mix = np.einsum("bp,bpd->bd", pp, full_points)
            rows["mix"].append(np.sum((eh[:, CTX] - mix) ** 2, -1))
            rows["post_true"].append(pp[:, true_pair])
        rows["alpha"], rows["alpha_model"], rows["weight"] = [np.asarray(alpha)], [np.asarray(alpha_m)], [np.asarray(weight)]
        for k in keys:
            out[k].append(np.concatenate(rows[k]))
        log(f"  image {i + 1}/{n_img} ({time.time() - t0:.0f} s)", flush=True) if (i + 1) % 4 == 0 else None
    res = {k: np.stack(v).astype(np.float64) for k, v in out.items()}
    res["d"] = d
    return res


def terms(p: dict) -> dict[str, np.ndarray]:
    """name -> (I, N) weighted per-sample integrands (their mean over N is the estimate)."""
    hw = 0.5 * p["weight"]
    e, r = p["err"], p["err_ref"]
    out = {
        "joint": hw * (e[..., CTX] - e[..., FULL[TRUE]]),
        "i(circle|c)": hw * (e[..., CTX] - e[..., SLOT1["circle"]]),
        "i(square|c)": hw * (e[..., CTX] - e[..., SLOT2["square"]]),
        "ref joint": hw * (r[..., CTX] - r[..., FULL[TRUE]]),
        "ref i(circle|c)": hw * (r[..., CTX] - r[..., SLOT1["circle"]]),
        "ref i(square|c)": hw * (r[..., CTX] - r[..., SLOT2["square"]]),
        "excess joint": hw * ((e[..., CTX] - e[..., FULL[TRUE]]) - (r[..., CTX] - r[..., FULL[TRUE]])),
        "orth joint gap": hw * p["orth"],
        "mix residual": hw * p["mix"],
        "hull residual": hw * p["hull"],
    }
    return out


def consistency(p: dict, err_key: str = "err") -> dict[str, np.ndarray]:
    """(I,) log Σ_y' (1/3) exp(i(x; y' | c)) per slot, standard form, from the pass's samples."""
    hw = 0.5 * p["weight"]
    e = p[err_key]
    out = {}
    for name, slot in (("circle slot", SLOT1), ("square slot", SLOT2)):
        info = np.stack([(hw * (e[..., CTX] - e[..., slot[y]])).mean(1) for y in SHAPES], 1)
        out[name] = np.log(np.mean(np.exp(info), axis=1))
    return out


def mean_se(v: np.ndarray) -> tuple[float, float]:
    v = np.asarray(v, np.float64)
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan


def fmt(v) -> str:
    m, s = mean_se(v)
    return f"{m:7.2f} ± {s:4.2f}"


def binned(p: dict, t: dict[str, np.ndarray], edges: np.ndarray, alpha_key: str = "alpha") -> dict:
    """Per bin: the contribution to each integrated term (Σ_bin g / N per image, mean and s.e.
    over images), model errors per pixel, posterior masses."""
    a = p[alpha_key]
    n_img, n = a.shape
    bins = np.clip(np.searchsorted(edges, a, side="right") - 1, 0, len(edges) - 2)
    out = {"edges": edges.tolist(), "counts": [int((bins == b).sum()) for b in range(len(edges) - 1)]}
    for name, g in t.items():
        per = np.stack([np.where(bins == b, g, 0).sum(1) / n for b in range(len(edges) - 1)], 1)  # (I, B)
        out[name] = [mean_se(per[:, b]) for b in range(per.shape[1])]
    d = p["d"]
    with np.errstate(invalid="ignore"):
        for name, arr in (("mse full /px", p["err"][..., FULL[TRUE]] / d), ("mse ctx /px", p["err"][..., CTX] / d),
                          ("ref mse full /px", p["err_ref"][..., FULL[TRUE]] / d),
                          ("p_world(true|z,c)", p["post_true"]), ("hull w(true)", p["hull_w_true"])):
            out[name] = [float(arr[bins == b].mean()) if (bins == b).any() else math.nan for b in range(len(edges) - 1)]
    return out


def print_bins(title: str, table: dict, names: list[str], log=print) -> None:
    edges = np.asarray(table["edges"])
    log(f"\n{title}")
    log(f"{'α bin':>14}{'n':>6}" + "".join(f"{n[:16]:>17}" for n in names))
    for b in range(len(edges) - 1):
        cells = []
        for name in names:
            v = table[name][b]
            cells.append(f"{v[0]:9.3f}±{v[1]:6.3f}" if isinstance(v, (list, tuple)) else f"{v:16.4f}")
        log(f"{edges[b]:6.2f},{edges[b + 1]:6.2f}{table['counts'][b]:6d}" + "".join(f"{c:>17}" for c in cells))


# ---------------------------------------------------------------------------------------------
# Parts


def part_bins(pipe, latents, args, bank, logw, log, label="shipped demo (EMA, 3000 steps)") -> tuple[dict, dict]:
    sampler = StratifiedSampler()
    t0 = time.time()
    p = run_pass(pipe, latents, sampler, args.samples, bank, logw, args.refs, seed=args.seed, log=log)
    log(f"pass: {time.time() - t0:.0f} s")
    t = terms(p)
    edges = np.linspace(*sampler.support, N_BINS + 1)
    table = binned(p, t, edges, "alpha_model")
    cons = consistency(p)
    cons_ref = consistency(p, "err_ref")
    totals = {k: mean_se(v.mean(1)) for k, v in t.items()}
    log(f"\n[{label}] integrated over the default support (mean over {latents.shape[0]} images ± s.e.), nats:")
    for k, v in t.items():
        log(f"  {k:<20}{fmt(v.mean(1))}")
    for k in cons:
        log(f"  consistency log-sum {k}: model {fmt(cons[k])}  reference {fmt(cons_ref[k])}  (median model "
            f"{np.median(cons[k]):.2f}, range {cons[k].min():.2f} to {cons[k].max():.2f})")
    exact = world.information((("circle", "red"), ("square", "blue")), PROMPT, "a red and a blue")
    log(f"  world exact joint {exact:.3f}")
    regions = {}
    log(f"\n[{label}] by region of log-SNR (mean over images ± s.e.), nats:")
    log(f"{'term':<20}" + "".join(f"{f'α in [{a:g}, {b:g})':>22}" for a, b in REGIONS))
    for name in ("joint", "ref joint", "excess joint", "orth joint gap", "mix residual", "hull residual",
                 "i(circle|c)", "ref i(circle|c)", "i(square|c)", "ref i(square|c)"):
        a_ = p["alpha_model"]
        vals = [mean_se(np.where((a_ >= a) & (a_ < b), t[name], 0).mean(1)) for a, b in REGIONS]
        regions[name] = vals
        log(f"{name:<20}" + "".join(f"{v[0]:14.2f} ± {v[1]:5.2f}" for v in vals))
    print_bins(f"[{label}] per log-SNR bin: contribution to the integral (Σ_bin g / N, mean ± s.e. over images)",
               table, ["joint", "ref joint", "orth joint gap", "mix residual", "hull residual", "i(circle|c)",
                       "i(square|c)"], log)
    print_bins(f"[{label}] per log-SNR bin: errors per pixel value and posterior masses", table,
               ["mse full /px", "mse ctx /px", "ref mse full /px", "p_world(true|z,c)", "hull w(true)"], log)
    row = {"part": "bins", "label": label, "totals": totals, "regions": {"edges": REGIONS, **regions},
           "consistency": {k: mean_se(v) for k, v in cons.items()},
           "consistency_median": {k: float(np.median(v)) for k, v in cons.items()},
           "consistency_reference": {k: mean_se(v) for k, v in cons_ref.items()}, "bins": table,
           "sampler": sampler.for_samples(args.samples).to_dict()}
    return row, p


def part_wide(pipe, latents, args, bank, logw, log) -> dict:
    clip = args.wide_clip
    sampler = StratifiedSampler(UniformSampler(clip=clip))
    p = run_pass(pipe, latents, sampler, args.samples, bank, logw, args.refs, seed=args.seed + 1, log=log)
    t = terms(p)
    lo, hi = sampler.support
    regions = [(lo, -5.364), (-5.364, -5.0), (-5.0, 7.0), (7.0, 7.069), (7.069, hi)]
    log(f"\n[truncation] stratified uniform on [{lo:g}, {hi:g}] ({args.samples} samples): contribution by region of the "
        "drawn α (model snapped to its steps beyond [-5.36, 7.07]; reference at the drawn α)")
    names = ["joint", "ref joint", "i(circle|c)", "i(square|c)"]
    log(f"{'region':>18}" + "".join(f"{n:>18}" for n in names))
    region_rows = []
    for a, b in regions:
        inside = (p["alpha"] >= a) & (p["alpha"] < b)
        vals = {n: mean_se(np.where(inside, t[n], 0).mean(1)) for n in names}
        region_rows.append({"region": [a, b], **vals})
        log(f"{a:8.2f},{b:8.2f} " + "".join(f"{vals[n][0]:10.3f} ± {vals[n][1]:5.3f}" for n in names))
    totals = {n: mean_se(t[n].mean(1)) for n in t}
    log("  total: " + ", ".join(f"{n} {fmt(t[n].mean(1))}" for n in names))
    edges = np.linspace(lo, hi, 2 * clip * 2 + 1)
    table = binned(p, t, edges, "alpha")
    print_bins("[truncation] per α bin (drawn α)", table, ["joint", "ref joint", "mse full /px"], log)
    return {"part": "truncation", "sampler": sampler.for_samples(args.samples).to_dict(), "regions": region_rows,
            "totals": totals, "bins": table}


def part_guidance(pipe, args, rendered, log) -> list[dict]:
    """The package's own pass (jaxpid.analyze, default sampler) on three kinds of image."""
    from jaxpid.core.decomposition import decompose

    alts = {"circle": ["square", "triangle"], "square": ["circle", "triangle"]}
    seeds = list(range(args.images))
    kinds = {"rendered": dict(images=rendered), "generated, guidance 1": dict(guidance_scale=1.0),
             "generated, guidance 7.5": dict(guidance_scale=7.5)}
    rows = []
    log(f"\n[guidance] jaxpid.analyze (conditional, default sampler, {args.samples} samples, {args.images} images; "
        "alternatives circle=square,triangle square=circle,triangle)")
    log(f"{'images':<26}{'form':<10}{'i(circle|c)':>16}{'i(square|c)':>16}{'joint':>16}{'log-cons circle':>18}"
        f"{'log-cons square':>18}")
    edges = np.linspace(*StratifiedSampler().support, N_BINS + 1)
    for name, opts in kinds.items():
        r = jaxpid.analyze(pipe, PROMPT, list(SOURCES), n_samples=args.samples, seeds=seeds, alternatives=alts,
                           key=args.seed, **opts).result
        info = r.information
        lc = r.log_consistency
        row = {"part": "guidance", "images": name, "n_images": args.images}
        for form in ("standard", "anchored", "orthogonal"):
            dd = decompose(info, 2, measure=r.measure, form=form)
            vals = {"i(circle|c)": dd.subset_information[:, 1], "i(square|c)": dd.subset_information[:, 2],
                    "joint": dd.subset_information[:, 3]}
            row[form] = {k: mean_se(v) for k, v in vals.items()}
            log(f"{name:<26}{form:<10}" + "".join(f"{fmt(v):>16}" for v in vals.values())
                + (f"{fmt(lc[:, 0]):>18}{fmt(lc[:, 1]):>18}" if form == "standard" else ""))
        row["log_consistency"] = {"circle": mean_se(lc[:, 0]), "square": mean_se(lc[:, 1]),
                                  "median": [float(np.median(lc[:, 0])), float(np.median(lc[:, 1]))]}
        # where the standard joint comes from on these images
        g = info.samples_standard[..., 3]
        bins = np.clip(np.searchsorted(edges, info.logsnr, side="right") - 1, 0, N_BINS - 1)
        n = g.shape[1]
        row["joint_bins"] = [mean_se(np.where(bins == b, g, 0).sum(1) / n) for b in range(N_BINS)]
        rows.append(row)
    log("\n[guidance] standard joint per log-SNR bin (Σ_bin g / N, mean over images)")
    log(f"{'α bin':>14}" + "".join(f"{r['images'][:24]:>26}" for r in rows))
    for b in range(N_BINS):
        log(f"{edges[b]:6.2f},{edges[b + 1]:6.2f}" + "".join(f"{r['joint_bins'][b][0]:18.3f} ± {r['joint_bins'][b][1]:5.3f}"
                                                          for r in rows))
    return rows


CLIPS = (3.0, 4.0, 5.0)


def part_clip(pipe, args, log) -> dict:
    """The README job at clip 3 / 4 / 5 of the default proposal (stratified logistic, loc 1, scale 2)."""
    from jaxpid.core.decomposition import decompose

    seeds = list(range(args.images))
    names = ("i(circle|c)", "i(square|c)", "joint")
    values, images = {}, dict(seeds=seeds)
    for clip in CLIPS:
        pid = jaxpid.analyze(pipe, PROMPT, list(SOURCES), n_samples=args.samples, key=args.seed,
                             sampler=StratifiedSampler(LogisticSampler(clip=clip)), **images)
        images = dict(images=pid.images)  # generated once, the same images for every clip
        info = decompose(pid.result.information, 2, measure=pid.result.measure, form="anchored").subset_information
        values[clip] = {n: info[:, j] for j, n in enumerate(names, start=1)}
    log(f"\n[clip] README job, {args.images} images generated with guidance 7.5, {args.samples} stratified samples, "
        "anchored form (mean ± s.e. over images; differences paired by image)")
    log(f"{'clip':<8}{'support':<14}" + "".join(f"{n:>16}" for n in names) + f"{'joint − clip 3':>18}")
    rows = []
    for clip in CLIPS:
        lo, hi = LogisticSampler(clip=clip).support
        diff = mean_se(values[clip]["joint"] - values[CLIPS[0]]["joint"])
        rows.append({"clip": clip, "support": [lo, hi], **{n: mean_se(v) for n, v in values[clip].items()},
                     "joint_minus_clip3": diff})
        log(f"{clip:<8g}{f'[{lo:g}, {hi:g}]':<14}" + "".join(f"{fmt(v):>16}" for v in values[clip].values())
            + f"{diff[0]:>+11.2f} ± {diff[1]:.2f}")
    return {"part": "clip", "rows": rows}


def checkpoint_pipeline(checkpoint: Path, weights: str, folder: Path) -> Path:
    """A pipeline folder of a training checkpoint's EMA ("ema") or raw ("params") weights."""
    from jaxpid.demo import train as tr
    from jaxpid.sd.models import clip, unet
    from jaxpid.sd.tokenizer import tokenizer_files_for_words

    meta = json.loads((checkpoint / "meta.json").read_text())
    hyper = meta["hyper"]
    files = tokenizer_files_for_words(dataset.VOCABULARY, model_max_length=tr.MAX_LENGTH)
    vocab = json.loads(files["vocab.json"])
    configs = {"unet": tr.unet_config(hyper["size"], hyper["channels"]), "text_encoder": tr.text_encoder_config(vocab),
               "scheduler": tr.scheduler_config()}
    u = unet.UNet2DConditionModel(unet.UNetConfig.from_dict(configs["unet"]), attention="xla")
    te = clip.CLIPTextModel(clip.CLIPTextConfig.from_dict(configs["text_encoder"]), attention="xla")
    size = hyper["size"]
    k1, k2 = jax.random.split(jax.random.key(0))
    params = {"unet": u.init(k1, jnp.zeros((1, 3, size, size)), jnp.zeros((1,), jnp.int32),
                             jnp.zeros((1, tr.MAX_LENGTH, tr.TEXT_DIM)))["params"],
              "text_encoder": te.init(k2, jnp.zeros((1, tr.MAX_LENGTH), jnp.int32))["params"]}
    optimizer = tr.make_optimizer(hyper["steps"], hyper["learning_rate"], hyper["warmup"])
    like = {"params": params, "ema": params, "opt": optimizer.init(params), "step": jnp.zeros((), jnp.int32)}
    state, _ = tr.load_checkpoint(checkpoint, like)
    out = folder / f"{checkpoint.name}-{weights}"
    tr.write_pipeline(out, files, configs, jax.device_get(state[weights]),
                      {"from_checkpoint": str(checkpoint), "weights": weights, "step": int(state["step"])})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo", help="the pipeline to measure (default: the shipped demo)")
    parser.add_argument("--quick", action="store_true", help="4 images x 32 samples, 16 renders per pair")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--refs", type=int, default=200, help="renders per shape pair in the reference denoiser")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wide-clip", type=int, default=5, help="truncation part: uniform on [1 - 2c, 1 + 2c]")
    parser.add_argument("--skip-guidance", action="store_true")
    parser.add_argument("--skip-wide", action="store_true")
    parser.add_argument("--skip-clip", action="store_true")
    parser.add_argument("--skip-demo", action="store_true", help="only the --checkpoint models")
    parser.add_argument("--checkpoint", type=Path, action="append", default=[],
                        help="a python -m jaxpid.demo.train checkpoint folder (ckpt-NNNNNNN): its EMA and raw weights "
                             "under part 1's pass (repeatable)")
    common.add_results_option(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.samples, args.refs = 4, 32, 16
    log = print
    log(common.load_note())
    env = common.environment()
    pipe = jaxpid.load_pipeline(args.model)
    rng = np.random.default_rng(7)
    pixels = render_pixels(PROMPT, args.images, rng)
    rendered = given_images(pipe, pixels, "rendered by jaxpid.demo.dataset")
    latents = np.asarray(rendered.latents, np.float32)
    bank, logw = reference_bank(args.refs)
    record = {"benchmark": "demo-calibration", "model": args.model, "prompt": PROMPT, "n_images": args.images, "n_samples": args.samples,
              "refs": args.refs, "seed": args.seed, "quick": bool(args.quick), "environment": env}
    rows = []
    if not args.skip_demo:
        label = "shipped demo" if args.model == "demo" else args.model
        row, _ = part_bins(pipe, latents, args, bank, logw, log, label=label)
        rows.append(row)
        if not args.skip_wide:
            rows.append(part_wide(pipe, latents, args, bank, logw, log))
        if not args.skip_guidance:
            rows += part_guidance(pipe, args, rendered, log)
        if not args.skip_clip:
            rows.append(part_clip(pipe, args, log))
    with tempfile.TemporaryDirectory(prefix="jaxpid-calibration-") as tmp:
        for checkpoint in args.checkpoint:
            for weights in ("ema", "params"):
                folder = checkpoint_pipeline(checkpoint, weights, Path(tmp))
                other = jaxpid.load_pipeline(str(folder))
                label = f"{checkpoint.name} {weights}"
                row, _ = part_bins(other, latents, args, bank, logw, log, label=label)
                rows.append({**row, "part": "training"})
    rows = [{**record, **r} for r in rows]
    log(f"\nappended {len(rows)} rows to {common.save_rows('demo_calibration', rows, args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
