"""The validation study's reference tables: the Gaussian-mixture cases against their exact atoms,
and the validation tables as Markdown (docs/validation.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np

from jaxpid.core.config import PID_FORMS as FORMS
from jaxpid.core.decomposition import anchored_pairs, decompose
from jaxpid.core.estimator import information
from jaxpid.core.ground_truth import CANONICAL_CASES, canonical_case
from jaxpid.core.lattice import redundancy_lattice
from jaxpid.core.measures import MEASURES, redundancies

MODES = ("plain", "conditional")
ATOMS = ("R", "U1", "U2", "S")  # redundancy, unique of source 1 and 2, synergy (lattice order)
WORLD = "world"  # the rows of the world's exact values (form column), beside the estimated forms


def ground_truth_table(measures: Sequence[str] = MEASURES, *, n_images: int = 48, n_samples: int = 256,
                       truth_samples: int = 4096, seed: int = 0) -> list[dict]:
    """One cell per (Gaussian-mixture case, measure, form): the largest |estimated − exact| mean
    atom in standard errors; passes within 3 (plus 0.01 nats for the truth's own rounding)."""
    lattice = redundancy_lattice(2)
    cells = []
    for c, name in enumerate(CANONICAL_CASES):
        for hidden in (False, True):
            case = canonical_case(name, hidden=hidden)
            pairs, x = case.sample(jax.random.key(1000 * seed + 10 * c + hidden), n_images)
            # the 4 subsets, then imin's candidate for each source (the other value of its bit)
            conds = np.concatenate([np.stack([case.subset_log_weights(*p) for p in pairs])]
                                   + [np.stack([case.single_source_log_weights(j, 1 - p[j]) for p in pairs])[:, None]
                                      for j in range(2)], axis=1).astype(np.float32)
            common = dict(conds_per_image=True, pairs=anchored_pairs(2, conds.shape[1]))
            estimated = information(case.denoiser, x, conds, key=jax.random.key(seed + 1), n_samples=n_samples, **common)
            truth = information(case.denoiser, x, conds, key=jax.random.key(seed + 7), n_samples=truth_samples, **common)
            exact_info = case.exact_information(x, pairs)
            for measure in measures:
                kwargs = _gmm_inputs(measure, case, pairs)
                for form in FORMS:
                    res = decompose(estimated, 2, measure=measure, form=form, **kwargs)
                    estimate, se = _mean_atoms(res, n_images)
                    if form == "standard":
                        exact = lattice.atoms(redundancies(lattice, exact_info, measure,
                                                           **_exact_inputs(measure, case, x, pairs, exact_info)))
                        exact = exact.mean(axis=0)
                    else:  # the gap forms: the same integrals with the exact denoiser and many samples
                        exact, truth_se = _mean_atoms(decompose(truth, 2, measure=measure, form=form, **kwargs),
                                                      n_images)
                        se = np.sqrt(se**2 + truth_se**2)
                    z = np.abs(estimate - exact) / np.maximum(se, 1e-12)
                    cells.append({"case": case.name, "measure": measure, "form": form,
                                  "estimate": estimate.tolist(), "exact": exact.tolist(), "stderr": se.tolist(),
                                  "max_z": float(z.max()), "worst_atom": ATOMS[int(np.argmax(z))],
                                  "passed": bool(np.all(np.abs(estimate - exact) <= 3 * se + 0.01))})
    return cells


def _mean_atoms(result, n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean atoms over images and their standard error (from the per-image jackknife errors)."""
    atoms = np.stack([result.atoms[n] for n in result.names], axis=1)
    errors = np.stack([result.atoms_stderr[n] for n in result.names], axis=1)
    return atoms.mean(axis=0), np.sqrt(np.sum(errors**2, axis=0)) / n_images


def _gmm_inputs(measure, case, pairs) -> dict:
    if measure == "imin":
        return {"candidates": [[1, 4], [2, 5]]}
    if measure == "ppid":  # the mixture's own source priors, per image
        return {"log_prior": np.log(np.stack([[case.marginal(j)[p[j]] for j in range(2)] for p in pairs]))}
    return {}


def _exact_inputs(measure, case, x, pairs, exact_info) -> dict:
    if measure == "imin":
        alt = [np.array([case.exact_single_source_information(x[i:i + 1], j, 1 - pairs[i][j])[0]
                         for i in range(len(x))]) for j in range(2)]
        return {"candidate_info": [np.stack([exact_info[:, 1 << j], alt[j]], axis=1) for j in range(2)]}
    if measure == "ppid":
        return {"log_prior": np.log(np.stack([[case.marginal(j)[p[j]] for j in range(2)] for p in pairs]))}
    return {}


def markdown(demo: list[dict], truth: list[dict]) -> str:
    """Both tables as Markdown (docs/validation.md)."""
    measures = list(dict.fromkeys(c["measure"] for c in demo))
    lines = ["| phenomenon | form | mode | " + " | ".join(measures) + " |", "|---|---|---|" + "---|" * len(measures)]
    index = {(c["phenomenon"], c["measure"], c["form"], c["mode"]): c for c in demo}
    for phenomenon in dict.fromkeys(c["phenomenon"] for c in demo):
        for form in FORMS + (WORLD,):
            for mode in MODES:
                cells = []
                for measure in measures:
                    c = index.get((phenomenon, measure, form, mode))
                    if c is None or not math.isfinite(c["statistic"]):
                        cells.append("–")
                        continue
                    mark = "✓" if c["passed"] else "✗"
                    cells.append(f"{mark} {c['statistic']:+.2f} ± {c['stderr']:.2f}")
                lines.append(f"| {phenomenon} | {form} | {mode} | " + " | ".join(cells) + " |")
    lines += ["", "| Gaussian mixture | form | " + " | ".join(measures) + " |", "|---|---|" + "---|" * len(measures)]
    index = {(c["case"], c["measure"], c["form"]): c for c in truth}
    for case in dict.fromkeys(c["case"] for c in truth):
        for form in FORMS:
            cells = []
            for measure in measures:
                c = index.get((case, measure, form))
                cells.append("–" if c is None else f"{'✓' if c['passed'] else '✗'} {c['max_z']:.1f}")
            lines.append(f"| {case} | {form} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def known_answers_markdown(rows: Sequence[dict]) -> str:
    """The known-answer table (one fixed prompt at a time) as Markdown: per world and prompt, each
    form's informations as estimate − exact ± s.e. (✗ beyond 3.5 s.e.), then the atoms' largest
    |estimate − exact| per (form, measure)."""
    info = [r for r in rows if r["kind"] == "information"]
    forms = list(dict.fromkeys(r["form"] for r in info))
    quantities = list(dict.fromkeys(r["quantity"] for r in info))
    index = {(r["world"], r["prompt"], r["form"], r["quantity"]): r for r in info}
    lines = ["| world | prompt | quantity | exact | " + " | ".join(forms) + " |", "|---|---|---|---|" + "---|" * len(forms)]
    for name, prompt in dict.fromkeys((r["world"], r["prompt"]) for r in info):
        for q in quantities:
            cells = []
            for form in forms:
                r = index[(name, prompt, form, q)]
                cells.append(f"{'' if r['passed'] else '✗ '}{r['difference']:+.3f} ± {r['stderr']:.3f}")
            exact = index[(name, prompt, forms[0], q)]["exact"]
            lines.append(f"| {name} | {prompt} | {q.replace('|', chr(92) + '|')} | {exact:.3f} | " + " | ".join(cells) + " |")
    atoms = [r for r in rows if r["kind"] == "atom"]
    measures = list(dict.fromkeys(r["measure"] for r in atoms))
    lines += ["", "| atoms: largest \\|mean estimate − mean exact\\| over prompts (nats) | " + " | ".join(measures) + " |",
              "|---|" + "---|" * len(measures)]
    for form in forms:
        cells = []
        for m in measures:
            mine = [abs(r["difference"]) for r in atoms if r["form"] == form and r["measure"] == m]
            cells.append(f"{max(mine):.3f}" if mine else "–")
        lines.append(f"| {form} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
