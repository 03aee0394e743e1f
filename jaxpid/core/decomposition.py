"""Partial information decomposition from the 2**k subset conditionings
(docs/method.md#partial-information-decomposition).

``pid`` runs one fused pass over the subset conditionings (plus, for ``imin``, the candidate
alternatives), measures every subset's information against the context-only conditioning
(bitmask 0) and each word's conditional information given the other words, applies the
redundancy measure on the Williams–Beer lattice and Möbius-inverts to atoms: image-level (with
jackknife standard errors over the log-SNR samples) and per latent pixel.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxpid.core.config import PID_FORMS, EstimatorConfig, PIDConfig, check_form
from jaxpid.core.estimator import Denoiser, information
from jaxpid.core.results import InformationResult
from jaxpid.core.lattice import redundancy_lattice
from jaxpid.core.measures import check_measure, redundancies
from jaxpid.core.sampling import (LogSNRSampler, StratifiedSampler, jackknife_replicates, jackknife_stderr,
                                  stratified_stderr)
from jaxpid.errors import ConfigError, ShapeError


@dataclasses.dataclass(frozen=True)
class PIDResult:
    """PID atoms of I images over the k-source lattice (A nodes), in nats."""

    names: tuple[str, ...]  # node names in lattice order, e.g. ("{1}{2}", "{1}", "{2}", "{12}")
    atoms: dict[str, np.ndarray]  # name -> (I,) image-level atom
    atoms_stderr: dict[str, np.ndarray]  # name -> (I,) jackknife standard error
    atom_maps: dict[str, np.ndarray]  # name -> (I, H, W) atom per latent pixel
    subset_information: np.ndarray  # (I, 2**k) image-level i(x; y_S | c), bitmask order
    subset_stderr: np.ndarray  # (I, 2**k)
    subset_maps: np.ndarray  # (I, 2**k, H, W) per latent pixel, in this result's form
    # i(x; y_j | the other sources, c) per source j: what word j adds to all the others
    # (Info-Decomp's CMI within the PID); in the orthogonal form its own gap (see measures, ccs).
    conditional_information: np.ndarray | None  # (I, k); None if the pass did not measure it
    conditional_stderr: np.ndarray | None  # (I, k)
    information: InformationResult  # the underlying pass (all conditionings)
    # With candidate alternatives: per source j, log Σ_y' p(y') exp(i(x; y' | c)) over the word and
    # its alternatives, in the standard form (exact per image); 0 (a sum of 1) for a model whose
    # predictions are one distribution's when the candidates are every option
    # (docs/method.md#the-consistency-check). None without alternatives.
    log_consistency: np.ndarray | None  # (I, k)
    log_consistency_stderr: np.ndarray | None  # (I, k) jackknife
    k: int
    measure: str
    form: str  # pointwise information: "anchored", "orthogonal" or "standard" (docs/method.md#pointwise-forms)
    level: str  # image-level information: "sum" of the pixel map (nats/image) or its "mean"
    config: dict

    def _two(self) -> None:
        if self.k != 2:
            raise ConfigError(f"redundancy/unique/synergy are the k=2 names; this PID has k={self.k}: use .atoms")

    @property
    def redundancy(self) -> np.ndarray:  # (I,)
        self._two()
        return self.atoms["{1}{2}"]

    @property
    def unique(self) -> np.ndarray:  # (I, 2)
        self._two()
        return np.stack([self.atoms["{1}"], self.atoms["{2}"]], axis=1)

    @property
    def synergy(self) -> np.ndarray:  # (I,)
        self._two()
        return self.atoms["{12}"]

    @property
    def joint(self) -> np.ndarray:
        """i(x; y_1..k | c): what all atoms add up to. (I,)"""
        return self.subset_information[:, -1]


def pid(
    denoise: Denoiser,
    x: jax.Array,
    subset_conds: Any,
    *,
    key: jax.Array,
    n_samples: int = EstimatorConfig.n_samples,
    measure: str = PIDConfig.measure,
    form: str = PIDConfig.form,
    level: str = PIDConfig.level,
    alternatives: Sequence[Any] | None = None,
    alternatives_log_prior: Sequence[np.ndarray] | None = None,
    log_prior: np.ndarray | None = None,
    sampler: LogSNRSampler = StratifiedSampler(),
    chunk_size: int | None = None,
    conds_per_image: bool = False,
    devices: Sequence[jax.Device] | None = None,
    allow_large_k: bool = False,
    target_stderr: float | None = None,
    max_samples: int | None = None,
    on_round: Callable[[PIDResult], None] | None = None,
) -> PIDResult:
    """PID of the k sources whose 2**k subset conditionings are stacked in ``subset_conds``.

    Args:
      subset_conds: pytree, leaves (2**k, ...) (or (I, 2**k, ...) with ``conds_per_image``):
        conditioning b has source j present iff bit j of b is set; b = 0 is the context alone
        (or the empty prompt for plain PID).
      measure: "mmi" (any k), "imin", "ppid" or "ccs" (k = 2).
      form: which pointwise information feeds the measure: "anchored" (gaps that end at the full
        prompt), "orthogonal" or "standard" (docs/method.md#pointwise-forms).
      level: image-level information as the "sum" of the pixel map (nats per image,
        Info-Decomp) or its "mean" (DiffusionPID). Maps are per pixel either way.
      alternatives: imin only: per source j, a pytree of m_j conditionings (leaves (m_j, ...))
        with source j replaced by an alternative candidate (and the other sources absent).
      alternatives_log_prior: imin only: per source, (1 + m_j,) log prior over [true, alternatives].
      log_prior: ppid only: (k,) or (I, k) log p(y_j) (conditional PID: log p(y_j | c)).
      target_stderr: rounds of ``n_samples`` until every atom's and the joint information's
        standard error is at most this (nats, at the chosen level), or ``max_samples``;
        ``on_round`` sees the decomposition after each round.
      Other arguments as in :func:`jaxpid.information`.
    """
    n_subsets = _leading_count(subset_conds, conds_per_image)
    k = int(round(math.log2(n_subsets))) if n_subsets > 0 else 0
    if n_subsets < 2 or 1 << k != n_subsets:
        raise ShapeError(
            f"subset_conds must stack 2**k conditionings (k >= 1 sources, bitmask order); got {n_subsets}"
        )
    lattice = redundancy_lattice(k, allow_large=allow_large_k)
    PIDConfig(measure, form, level)  # validates the names
    check_measure(measure, k)

    conds, candidate_index = _with_alternatives(subset_conds, alternatives, measure, k, conds_per_image)
    prior_list = _candidate_priors(alternatives_log_prior, candidate_index)
    if measure == "ppid":
        log_prior = _check_log_prior(log_prior, k, np.shape(x)[0])
    elif log_prior is not None:
        raise ConfigError(f"log_prior is used by measure 'ppid' only (measure is {measure!r})")

    last = {}  # a round's decomposition, made once for its stopping rule and its on_round call

    def decomposed(res: InformationResult) -> PIDResult:
        if last.get("information") is not res:
            last.update(information=res, pid=_decompose(res, lattice, n_subsets, measure, form, level,
                                                        candidate_index, prior_list, log_prior))
        return last["pid"]

    reported = lambda res: reported_stderr(decomposed(res))  # noqa: E731
    res = information(
        denoise, x, conds, key=key, n_samples=n_samples, reference=0, sampler=sampler,
        chunk_size=chunk_size, conds_per_image=conds_per_image, devices=devices,
        pairs=pairs_for(k, PID_FORMS, _leading_count(conds, conds_per_image)),  # every form from one pass
        target_stderr=target_stderr, max_samples=max_samples, reported=reported,
        on_round=None if on_round is None else (lambda res: on_round(decomposed(res))),
    )
    return decomposed(res)


def reported_stderr(result: PIDResult) -> np.ndarray:
    """(I, A + 1) the standard errors a target standard error applies to: every atom's and the
    joint information's."""
    atoms = np.stack([result.atoms_stderr[name] for name in result.names], axis=1)
    return np.concatenate([atoms, result.subset_stderr[:, -1:]], axis=1)


def decompose(
    res: InformationResult,
    k: int,
    *,
    measure: str = PIDConfig.measure,
    form: str = PIDConfig.form,
    level: str = PIDConfig.level,
    candidates: Sequence[Sequence[int]] | None = None,
    candidates_log_prior: Sequence[np.ndarray] | None = None,
    log_prior: np.ndarray | None = None,
    allow_large_k: bool = False,
) -> PIDResult:
    """PID atoms from an existing pass: several measures / forms / levels from one evaluation.

    ``res`` must measure information against conditioning 0 and hold the 2**k subset
    conditionings first (bitmask order). ``candidates`` (imin): per source, the indices into
    ``res``'s conditionings of its candidates, the true word first (index ``1 << j``).
    """
    lattice = redundancy_lattice(k, allow_large=allow_large_k)
    PIDConfig(measure, form, level)  # validates the names
    check_measure(measure, k)
    if res.config.get("reference", 0) != 0:
        raise ConfigError("decompose needs information measured against conditioning 0 (the context alone)")
    if res.mi_orthogonal.shape[1] < 1 << k:
        raise ShapeError(f"the pass has {res.mi_orthogonal.shape[1]} conditionings; k={k} needs {1 << k}")
    candidate_index = [np.asarray(c) for c in candidates] if candidates else []
    if measure == "imin" and len(candidate_index) != k:
        raise ConfigError(f"measure 'imin' needs candidate indices for each of the {k} sources")
    if measure == "ppid":
        log_prior = _check_log_prior(log_prior, k, res.mi_orthogonal.shape[0])
    prior_list = _candidate_priors(candidates_log_prior, candidate_index)
    return _decompose(res, lattice, 1 << k, measure, form, level, candidate_index, prior_list, log_prior)


def conditional_pairs(k: int) -> list[tuple[int, int]]:
    """The (all sources, all but source j) conditioning pairs, j = 1..k: i(x; y_j | others, c)."""
    full = (1 << k) - 1
    return [(full, full ^ (1 << j)) for j in range(k)]


def anchored_pairs(k: int, n_conds: int | None = None) -> list[tuple[int, int]]:
    """(full prompt, s) for every other conditioning s but the context alone: the gaps the anchored
    form subtracts from gap(∅ → full) (docs/method.md#the-anchored-form). ``n_conds`` counts
    conditionings after the 2**k subsets too (imin's candidates). Includes ``conditional_pairs(k)``."""
    full = (1 << k) - 1
    return [(full, s) for s in range(1, max(n_conds or 0, 1 << k)) if s != full]


def pairs_for(k: int, forms, n_conds: int | None = None) -> list[tuple[int, int]]:
    """The conditioning pairs a pass needs so that ``decompose`` can use every form in ``forms``."""
    for form in forms:
        check_form(form)
    return anchored_pairs(k, n_conds) if "anchored" in forms else conditional_pairs(k)


def _subset_values(res: InformationResult, k: int, form: str):
    """(per-sample (I, N, S_total), maps (I, H, W, S_total)) of every conditioning's information in
    ``form``. The anchored form replaces every conditioning s's value by
    gap(∅ → full) − gap(s → full), gaps that end at the prompt the image came from."""
    if form != "anchored":
        return res.samples(form), np.moveaxis(res.maps(form), 1, -1)
    full = (1 << k) - 1
    n_conds = res.samples_orthogonal.shape[-1]
    wanted = anchored_pairs(k, n_conds)
    missing = [p for p in wanted if p not in res.pairs]
    if missing:
        raise ConfigError(f"the anchored form needs the gaps between the full prompt ({full}) and every other "
                          f"conditioning; missing {missing}: run the pass with "
                          f"pairs=jaxpid.core.anchored_pairs({k}, {n_conds}) (jaxpid.pid does)")
    index = [res.pairs.index(p) for p in wanted]
    others = [s for _, s in wanted]
    top_samples = res.samples_orthogonal[..., full:full + 1]  # gap(∅ → full), (I, N, 1)
    top_maps = res.maps_orthogonal[:, full:full + 1]  # (I, 1, H, W)
    samples, maps = res.samples_orthogonal.copy(), res.maps_orthogonal.copy()
    samples[..., others] = top_samples - res.pair_samples_orthogonal[..., index]
    maps[:, others] = top_maps - res.pair_maps_orthogonal[:, index]
    return samples, np.moveaxis(maps, 1, -1)


def _conditional_values(res: InformationResult, k: int, form: str, subsets: tuple):
    """(per-sample (I, N, k), maps (I, H, W, k)) of i(x; y_j | others, c), or None if unmeasured.

    The standard and anchored forms obey the chain rule pointwise, so it is a difference of their
    subset values (for the anchored form exactly the gap(others → full)); the orthogonal form
    measures it as its own gap."""
    wanted = conditional_pairs(k)
    first, second = np.asarray(wanted).T
    if form != "orthogonal":
        samples, maps = subsets
        return samples[..., first] - samples[..., second], maps[..., first] - maps[..., second]
    if all(p in res.pairs for p in wanted):
        index = [res.pairs.index(p) for p in wanted]
        return res.pair_samples(form)[..., index], np.moveaxis(res.pair_maps(form)[:, index], 1, -1)
    return None


def _decompose(res, lattice, n_subsets, measure, form, level, candidate_index, prior_list, log_prior) -> PIDResult:
    k = lattice.k
    n_pixels = res.maps_orthogonal.shape[-1] * res.maps_orthogonal.shape[-2]
    scale = 1.0 / n_pixels if level == "mean" else 1.0
    per_sample, maps = _subset_values(res, k, form)  # (I, N, S_total), (I, H, W, S_total)
    per_sample = per_sample * scale
    info = per_sample.mean(axis=1)  # (I, S_total)
    conditional = _conditional_values(res, k, form, (per_sample / scale, maps))
    if conditional is None and measure == "ccs":
        raise ConfigError(
            "measure 'ccs' in the orthogonal form needs each word's conditional information given the "
            f"others: run the pass with pairs=jaxpid.core.conditional_pairs({k}) (jaxpid.pid does)"
        )
    cond_samples = cond_maps = cond_info = cond_stderr = None
    if conditional is not None:
        cond_samples, cond_maps = conditional[0] * scale, conditional[1]
        cond_info = cond_samples.mean(axis=1)
        cond_stderr = stratified_stderr(cond_samples, res.strata)
    leave_one_out = lambda a: jackknife_replicates(a, res.strata)  # noqa: E731

    def atoms_of(values: np.ndarray, prior_axes: int, cond: np.ndarray | None = None) -> np.ndarray:
        """values (I, *extra, S_total) -> atoms (I, *extra, A)."""
        prior = None
        if log_prior is not None:
            prior = log_prior.reshape(log_prior.shape[:1] + (1,) * prior_axes + log_prior.shape[1:])
        red = redundancies(
            lattice,
            values[..., :n_subsets],
            measure,
            candidate_info=[values[..., idx] for idx in candidate_index] if candidate_index else None,
            candidate_log_prior=prior_list,
            log_prior=prior,
            conditional_info=cond if measure == "ccs" else None,
        )
        return lattice.atoms(red)

    image_atoms = atoms_of(info, 0, cond_info)  # (I, A)
    cond_replicates = None if cond_samples is None else leave_one_out(cond_samples)
    replicate_atoms = atoms_of(leave_one_out(per_sample), 1, cond_replicates)  # (I, N, A)
    atoms_se = jackknife_stderr(replicate_atoms, res.strata)
    pixel_atoms = atoms_of(maps, 2, cond_maps)  # (I, H, W, A)

    log_consistency = log_consistency_se = None
    if candidate_index:  # the standard form: the identity holds per image for log-density ratios
        standard = res.samples("standard")
        priors = prior_list or [np.full(len(idx), -np.log(len(idx))) for idx in candidate_index]
        consistency = lambda v: np.stack([_logsumexp(v[..., idx] + p) for idx, p in  # noqa: E731
                                          zip(candidate_index, priors)], axis=-1)
        log_consistency = consistency(standard.mean(axis=1))  # (I, k)
        log_consistency_se = jackknife_stderr(consistency(leave_one_out(standard)), res.strata)

    names = lattice.names
    return PIDResult(
        names=names,
        atoms={name: image_atoms[:, a] for a, name in enumerate(names)},
        atoms_stderr={name: atoms_se[:, a] for a, name in enumerate(names)},
        atom_maps={name: pixel_atoms[..., a] for a, name in enumerate(names)},
        subset_information=info[:, :n_subsets],
        subset_stderr=stratified_stderr(per_sample[..., :n_subsets], res.strata),
        subset_maps=np.moveaxis(maps[..., :n_subsets], -1, 1),
        conditional_information=cond_info,
        conditional_stderr=cond_stderr,
        information=res,
        log_consistency=log_consistency,
        log_consistency_stderr=log_consistency_se,
        k=k,
        measure=measure,
        form=form,
        level=level,
        config={
            **res.config,
            "k": k,
            "measure": measure,
            "form": form,
            "level": level,
            "log_prior": None if log_prior is None else log_prior.tolist(),
            "candidates_per_source": [len(idx) for idx in candidate_index] or None,
        },
    )


def _logsumexp(values: np.ndarray) -> np.ndarray:
    top = values.max(axis=-1, keepdims=True)
    return (top + np.log(np.exp(values - top).sum(axis=-1, keepdims=True)))[..., 0]


def _leading_count(conds: Any, per_image: bool) -> int:
    leaves = jax.tree.leaves(conds)
    if not leaves:
        raise ShapeError("subset_conds is empty: give the 2**k subset conditionings as a pytree of arrays")
    axis = 1 if per_image else 0
    counts = {np.shape(a)[axis] if np.ndim(a) > axis else -1 for a in leaves}
    if len(counts) != 1 or -1 in counts:
        raise ShapeError(f"subset_conds leaves disagree on the conditioning axis: {[np.shape(a) for a in leaves]}")
    return counts.pop()


def _with_alternatives(subset_conds, alternatives, measure: str, k: int, per_image: bool):
    """Append the candidate alternatives after the subsets (imin's specific information needs
    them; with any measure they give the consistency check); index each source's candidates."""
    if alternatives is None and measure != "imin":
        return subset_conds, []
    if alternatives is None or len(alternatives) != k:
        got = "none" if alternatives is None else len(alternatives)
        raise ConfigError(f"alternatives are needed for each of the {k} sources (measure 'imin' needs them); "
                          f"got {got}")
    axis = 1 if per_image else 0
    offset = 1 << k
    candidate_index, pieces = [], [subset_conds]
    for j, alt in enumerate(alternatives):
        m = _leading_count(alt, per_image)
        if m < 1:
            raise ConfigError(f"source {j + 1} has no alternative candidates")
        if jax.tree.structure(alt) != jax.tree.structure(subset_conds):
            raise ShapeError(f"alternatives for source {j + 1} have a different pytree structure than subset_conds")
        candidate_index.append(np.array([1 << j] + list(range(offset, offset + m))))
        offset += m
        pieces.append(alt)
    conds = jax.tree.map(lambda *xs: jnp.concatenate([jnp.asarray(a) for a in xs], axis=axis), *pieces)
    return conds, candidate_index


def _candidate_priors(priors, candidate_index):
    if priors is None:
        return None
    if len(priors) != len(candidate_index):
        raise ConfigError(f"alternatives_log_prior needs one array per source ({len(candidate_index)})")
    out = []
    for j, (p, idx) in enumerate(zip(priors, candidate_index)):
        p = np.asarray(p, np.float64)
        if p.shape != (len(idx),):
            raise ShapeError(
                f"alternatives_log_prior[{j}] must have shape ({len(idx)},) (true word first, then "
                f"the alternatives); got {p.shape}"
            )
        out.append(p)
    return out


def _check_log_prior(log_prior, k: int, n_images: int) -> np.ndarray:
    if log_prior is None:
        raise ConfigError("measure 'ppid' needs log_prior: the sources' log p(y_j), shape (k,) or (I, k)")
    lp = np.asarray(log_prior, np.float64)
    if lp.shape == (k,):
        lp = np.broadcast_to(lp, (n_images, k))
    if lp.shape != (n_images, k):
        raise ShapeError(f"log_prior must have shape ({k},) or ({n_images}, {k}); got {np.shape(log_prior)}")
    if not np.all(np.isfinite(lp)) or np.any(lp > 0):
        raise ConfigError(f"log_prior must hold finite log probabilities (<= 0); got {lp.tolist()}")
    return lp


# ---------------------------------------------------------------------------------------------
# Every form from one pass, and what a measure's rule fixes


DISAGREEMENT_Z = 3.0  # two forms disagree on an image when their paired difference exceeds 3 s.e.


@dataclasses.dataclass(frozen=True)
class FormComparison:
    """Every form's subset and conditional informations of one pass, and where they disagree.

    The forms see the same draws, so a difference between two of them has a paired standard
    error (from their per-sample difference), much smaller than either form's own."""

    forms: tuple[str, ...]
    subset_information: dict[str, np.ndarray]  # form -> (I, 2**k), at the result's level
    subset_stderr: dict[str, np.ndarray]  # form -> (I, 2**k)
    conditional_information: dict[str, np.ndarray]  # form -> (I, k)
    conditional_stderr: dict[str, np.ndarray]  # form -> (I, k)
    # one entry per (image, quantity, pair of forms) whose difference exceeds DISAGREEMENT_Z paired
    # standard errors: {"image", "quantity", "forms", "values", "difference", "stderr"}
    disagreements: list[dict]


def compare_forms(result: PIDResult, z: float = DISAGREEMENT_Z) -> FormComparison:
    """Every form's informations from ``result``'s pass (which must hold the anchored pairs, as
    ``jaxpid.pid``'s does) and the images where two forms disagree beyond ``z`` paired s.e.

    Quantities are indexed like the result: subset b (bitmask) as ``("subset", b)``, word j's
    conditional information as ``("conditional", j)``."""
    res, k = result.information, result.k
    n_pixels = res.maps_orthogonal.shape[-1] * res.maps_orthogonal.shape[-2]
    scale = 1.0 / n_pixels if result.level == "mean" else 1.0
    values = {}
    for form in PID_FORMS:
        samples, maps = _subset_values(res, k, form)
        conditional = _conditional_values(res, k, form, (samples, maps))[0]
        values[form] = np.concatenate([samples[..., 1:1 << k], conditional], axis=-1) * scale  # (I, N, Q)
    quantities = [("subset", b) for b in range(1, 1 << k)] + [("conditional", j) for j in range(k)]
    disagreements = []
    for a, first in enumerate(PID_FORMS):
        for second in PID_FORMS[a + 1:]:
            difference = values[first] - values[second]
            mean, se = difference.mean(axis=1), stratified_stderr(difference, res.strata)
            for i, q in zip(*np.nonzero(np.abs(mean) > z * se)):
                disagreements.append({"image": int(i), "quantity": quantities[q], "forms": (first, second),
                                      "values": (float(values[first][i, :, q].mean()),
                                                 float(values[second][i, :, q].mean())),
                                      "difference": float(mean[i, q]), "stderr": float(se[i, q])})
    zero = np.zeros(values[PID_FORMS[0]].shape[:1] + (1,))
    split = lambda v: (np.concatenate([zero, v[:, : (1 << k) - 1]], 1), v[:, (1 << k) - 1:])  # noqa: E731
    means = {f: split(v.mean(axis=1)) for f, v in values.items()}
    errors = {f: split(stratified_stderr(v, res.strata)) for f, v in values.items()}
    return FormComparison(
        forms=PID_FORMS,
        subset_information={f: m[0] for f, m in means.items()}, subset_stderr={f: e[0] for f, e in errors.items()},
        conditional_information={f: m[1] for f, m in means.items()},
        conditional_stderr={f: e[1] for f, e in errors.items()},
        disagreements=disagreements,
    )


def rule_fixed_atoms(result: PIDResult) -> list[dict[str, str]]:
    """Per image, the atoms whose value a measure's rule sets (not an estimate): name -> why.

    ccs sets the redundancy to 0 where the co-information does not agree in sign with the words'
    and the joint information, and otherwise the redundancy is the co-information, which makes
    the synergy 0; mmi gives the word with the smaller information no unique information. Such a
    value has no Monte-Carlo error to report."""
    out = [{} for _ in range(len(result.joint))]
    if result.k != 2 or result.measure not in ("ccs", "mmi"):
        return out
    i = result.subset_information
    for image, fixed in enumerate(out):
        tiny = 1e-9 * (1.0 + abs(result.joint[image]))
        if result.measure == "ccs":  # the synergy is fixed only where the conditional informations are differences
            for name, why in (("{1}{2}", "ccs sign rule"), ("{12}", "ccs: the co-information is the redundancy")):
                if abs(result.atoms[name][image]) <= tiny:
                    fixed[name] = why
                    break
        else:
            weaker = 1 if i[image, 1] <= i[image, 2] else 2
            fixed["{%d}" % weaker] = "mmi: the weaker word's unique information"
    return out
