"""Known answers in magnitude, read the way users read results: one fixed prompt at a time, with
images drawn from that prompt (docs/validation.md#known-answers-one-fixed-prompt-at-a-time).

A world with an exact denoiser and closed-form log-densities (``ground_truth``) fixes a prompt
y* = (y1, y2), draws images x ~ p(x | y*), runs the fused pass and the decomposition exactly as
``jaxpid.pid`` does, and compares, over those images, every form's subset informations, each
word's conditional information and every measure's atoms with the exact values: the mean over
images of the estimate minus the exact value, with its standard error over images (which holds
the Monte-Carlo error of each image and, for the gap forms, their per-image deviation from the
log-density ratio). A quantity passes when that mean difference is within 3.5 standard errors.

Exact atoms apply the same measure to the exact pointwise values. For a nonlinear measure the
mean of a gap form's atoms need not equal the mean of the exact atoms even when its informations
are unbiased (the measure is applied per image), so atom rows are reported, and only the
informations decide whether a form passes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np

from jaxpid.core.config import PID_FORMS
from jaxpid.core.decomposition import conditional_pairs, decompose, pairs_for
from jaxpid.core.estimator import information
from jaxpid.core.ground_truth import (CANONICAL_CASES, DESIGNED_CASES, GaussianWorld, PIDCase, canonical_case,
                                      designed_case)
from jaxpid.core.lattice import redundancy_lattice
from jaxpid.core.measures import MEASURES, redundancies
from jaxpid.core.sampling import LogSNRSampler, StratifiedSampler
from jaxpid.errors import ConfigError

WORLDS = CANONICAL_CASES + DESIGNED_CASES + ("gaussian",)
INFORMATIONS = ("i(y1)", "i(y2)", "i(y1,y2)", "i(y1|y2)", "i(y2|y1)")
ATOMS = ("R", "U1", "U2", "S")  # lattice order: {1}{2}, {1}, {2}, {12}
Z_PASS = 3.5  # a quantity passes when |mean(estimate − exact)| <= 3.5 standard errors
ATOL = 0.02  # nats: the share of the log-SNR range the proposal leaves out (docs/validation.md)


def world(name: str):
    """A known world by name: ``WORLDS``."""
    if name in CANONICAL_CASES:
        return canonical_case(name)
    if name in DESIGNED_CASES:
        return designed_case(name)
    if name == "gaussian":
        return GaussianWorld()
    raise ConfigError(f"unknown world {name!r}; expected one of {WORLDS}")


def world_measures(w) -> tuple[str, ...]:
    """imin needs discrete candidate words and ppid their probabilities: binary worlds only."""
    return MEASURES if isinstance(w, PIDCase) else ("mmi", "ccs")


@dataclasses.dataclass(frozen=True)
class FixedPrompt:
    """Everything one fixed prompt needs: its conditionings and the exact value of each."""

    conds: object  # pytree, leaves (n_conds, ...): the 4 subsets in bitmask order, then candidates
    measure_inputs: dict  # measure -> keyword arguments of ``decompose`` (candidates, priors)
    exact_inputs: dict  # measure -> keyword arguments of ``redundancies`` on the exact values (but candidate_info)
    candidates: list  # per source, indices into the conditionings (the true word first); [] if none

    @staticmethod
    def of(w, prompt) -> FixedPrompt:
        if not isinstance(w, PIDCase):
            return FixedPrompt(w.conditionings(prompt), {}, {}, [])
        y1, y2 = prompt
        alternatives = [w.single_source_log_weights(j, 1 - prompt[j])[None] for j in range(2)]
        conds = np.concatenate([w.subset_log_weights(y1, y2)] + alternatives).astype(np.float32)
        candidates = [[1, 4], [2, 5]]
        log_prior = np.log([w.marginal(j)[prompt[j]] for j in range(2)])
        candidate_prior = [np.log(w.marginal(j)[[prompt[j], 1 - prompt[j]]]) for j in range(2)]
        measure_inputs = {"imin": {"candidates": candidates, "candidates_log_prior": candidate_prior},
                          "ppid": {"log_prior": log_prior}}
        exact_inputs = {"imin": {"candidate_log_prior": candidate_prior}, "ppid": {"log_prior": log_prior}}
        return FixedPrompt(conds, measure_inputs, exact_inputs, candidates)


def exact_values(w, prompt, x: np.ndarray) -> np.ndarray:
    """Exact log p(x | conditioning) − log p(x) for every conditioning of ``FixedPrompt.of``: (I, n)."""
    if not isinstance(w, PIDCase):
        return w.exact_information(x, prompt)
    subsets = w.exact_information(x, np.tile(np.asarray(prompt), (len(x), 1)))
    alternatives = [w.exact_single_source_information(x, j, 1 - prompt[j])[:, None] for j in range(2)]
    return np.concatenate([subsets] + alternatives, axis=1)


def known_answers(w, prompt, *, key: jax.Array, n_images: int = 48, n_samples: int = 128,
                  measures: Sequence[str] | None = None, forms: Sequence[str] = PID_FORMS,
                  sampler: LogSNRSampler = StratifiedSampler(), chunk_size: int | None = None) -> list[dict]:
    """Rows comparing every form's informations and every (form, measure)'s atoms with the exact
    values over ``n_images`` images drawn from the fixed ``prompt`` (one fused pass)."""
    measures = tuple(measures or world_measures(w))
    unknown = [m for m in measures if m not in world_measures(w)]
    if unknown:
        raise ConfigError(f"world {getattr(w, 'name', w)!r} has no exact values for measures {unknown}")
    fixed = FixedPrompt.of(w, prompt)
    k_images, k_pass = jax.random.split(key)
    x = w.sample_given(k_images, prompt, n_images)
    n_conds = len(jax.tree.leaves(fixed.conds)[0])
    res = information(w.denoiser, x, fixed.conds, key=k_pass, n_samples=n_samples, sampler=sampler,
                      chunk_size=chunk_size, pairs=sorted(set(pairs_for(2, forms, n_conds)) | set(conditional_pairs(2))))
    exact = exact_values(w, prompt, x)  # (I, n_conds)
    exact_cond = np.stack([exact[:, 3] - exact[:, 2], exact[:, 3] - exact[:, 1]], axis=1)
    lattice = redundancy_lattice(2)
    label = {"world": getattr(w, "name", "gaussian"), "prompt": str(tuple(prompt)), "n_images": n_images,
             "n_samples": n_samples}
    rows = []
    for form in forms:
        for m, measure in enumerate(measures):
            result = decompose(res, 2, measure=measure, form=form, **fixed.measure_inputs.get(measure, {}))
            if m == 0:  # the informations do not depend on the measure
                estimates = np.concatenate([result.subset_information[:, 1:], result.conditional_information], 1)
                mc = np.concatenate([result.subset_stderr[:, 1:], result.conditional_stderr], 1)
                truth = np.concatenate([exact[:, 1:4], exact_cond], 1)
                rows += _compare(label, form, None, INFORMATIONS, estimates, truth, mc)
            kwargs = dict(fixed.exact_inputs.get(measure, {}))
            if measure == "imin":
                kwargs["candidate_info"] = [exact[:, idx] for idx in fixed.candidates]
            exact_atoms = lattice.atoms(redundancies(lattice, exact[:, :4], measure, **kwargs))
            atoms = np.stack([result.atoms[n] for n in result.names], 1)
            atoms_se = np.stack([result.atoms_stderr[n] for n in result.names], 1)
            rows += _compare(label, form, measure, ATOMS, atoms, exact_atoms, atoms_se)
    return rows


def _compare(label: dict, form: str, measure: str | None, names, estimates, exact, mc_stderr) -> list[dict]:
    """One row per quantity: mean estimate and exact value over images, the standard error of
    their mean difference over images (what decides), the standard error of the mean estimate as
    a user computes it from the images alone, and the images' Monte-Carlo standard error (rms)."""
    n = len(estimates)
    diff = estimates - exact
    se = diff.std(axis=0, ddof=1) / np.sqrt(n)
    se_mean = estimates.std(axis=0, ddof=1) / np.sqrt(n)
    rows = []
    for q, name in enumerate(names):
        z = diff[:, q].mean() / se[q] if se[q] > 0 else 0.0
        rows.append({**label, "form": form, "measure": measure, "quantity": name,
                     "kind": "atom" if measure else "information",
                     "estimate": float(estimates[:, q].mean()), "exact": float(exact[:, q].mean()),
                     "difference": float(diff[:, q].mean()), "stderr": float(se[q]), "z": float(z),
                     "stderr_mean": float(se_mean[q]),
                     "mc_stderr": float(np.sqrt(np.mean(mc_stderr[:, q] ** 2))),
                     "passed": bool(abs(diff[:, q].mean()) <= Z_PASS * se[q] + ATOL)})
    return rows


def known_answer_table(worlds: Sequence[str] = WORLDS, *, seed: int = 0, n_images: int = 48, n_samples: int = 128,
                       forms: Sequence[str] = PID_FORMS, sampler: LogSNRSampler = StratifiedSampler()) -> list[dict]:
    """``known_answers`` for every fixed prompt of every world: one fused pass per prompt."""
    rows = []
    for w_index, name in enumerate(worlds):
        w = world(name)
        for p_index, prompt in enumerate(w.prompts()):
            key = jax.random.fold_in(jax.random.key(seed), 100 * w_index + p_index)
            rows += known_answers(w, prompt, key=key, n_images=n_images, n_samples=n_samples, forms=forms,
                                  sampler=sampler)
    return rows


def form_verdicts(rows: Sequence[dict], reference: str = "standard", max_stderr_ratio: float = 1.25) -> dict:
    """Per form: prompts whose every information passed, the worst |z|, and the largest ratios of its
    standard errors (one image's Monte-Carlo error; the prompt's mean over images) to the
    ``reference`` form's on the same quantity and prompt."""
    info = [r for r in rows if r["kind"] == "information"]
    ref = {(r["world"], r["prompt"], r["quantity"]): r for r in info if r["form"] == reference}
    out = {}
    for form in dict.fromkeys(r["form"] for r in info):
        mine = [r for r in info if r["form"] == form]
        prompts = {(r["world"], r["prompt"]) for r in mine}
        failed = {(r["world"], r["prompt"]) for r in mine if not r["passed"]}
        ratio, ratio_mean = (_largest_ratio(mine, ref, field) for field in ("mc_stderr", "stderr_mean"))
        out[form] = {"prompts": len(prompts), "prompts_passed": len(prompts) - len(failed),
                     "worst_z": max(abs(r["z"]) for r in mine), "max_stderr_ratio": ratio,
                     "max_mean_stderr_ratio": ratio_mean,
                     "failed": sorted(f"{w} {p}" for w, p in failed),
                     "passes": not failed and (form == reference or ratio <= max_stderr_ratio)}
    return out


def _largest_ratio(rows, reference: dict, field: str) -> float:
    ratios = [r[field] / ref[field] for r in rows
              if (ref := reference.get((r["world"], r["prompt"], r["quantity"]))) is not None and ref[field] > 0]
    return max(ratios) if ratios else float("nan")
