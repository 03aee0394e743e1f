"""Redundancy measures: pointwise information of subsets -> redundancy of every lattice node
(docs/method.md#partial-information-decomposition).

All functions are vectorised over leading axes (images, jackknife replicates, pixels) and work
in float64 numpy: they run once on small arrays after the fused pass.

- ``mmi``: R(α) = min over the elements A of α of i(x; y_A | c)   (any k).
- ``imin``: Williams–Beer I_min with pointwise specific information (docs/method.md#imin), k = 2:
  each source j has candidates y' (the true word first, then alternatives) with prior p(y');
  p(y'|x) ∝ p(y')·exp(i(x; y')), I(x; Y_j) = Σ_{y'} p(y'|x)·i(x; y'), R = min_j I(x; Y_j).
- ``ppid``: Finn & Lizier's pointwise PID as DiffusionPID uses it, k = 2: with source surprisals
  h_j = −log p(y_j) (conditional PID: −log p(y_j | c)), r⁺ = min_j h_j,
  r⁻ = min_j (h_j − i_j), R = r⁺ − r⁻.
- ``ccs``: Ince's common change in surprisal (2017, "Measuring multivariate redundant
  information with pointwise common change in surprisal"), k = 2, applied to the model's own
  pointwise informations (as ``ppid`` is; Ince evaluates it under a pairwise maximum-entropy
  distribution, which a test reproduces with ``dit``): the pointwise co-information
  c = i(x; y1) + i(x; y2) − i(x; y1, y2) counts as redundancy only where its sign agrees with
  i(x; y1), i(x; y2) and i(x; y1, y2); otherwise R = 0. Written with the conditional
  informations, c = ½ Σ_j [i(x; y_j) − i(x; y_j | y_other)]: the information a word carries
  that the other word already carried. In the standard form this is the same number; in the
  orthogonal form i(x; y_j | y_other) is its own gap ½∫E‖ε̂(y1, y2) − ε̂(y_other)‖², which the
  fused pass measures (``PIDResult.conditional_information``). Unlike ``mmi`` and ``ppid``,
  whose two-source redundancy is a function of i1 and i2 alone, ``ccs`` sees one word implying
  the other (a "triangle" that is green by default shares its greenness with "green").
Nodes with one element always take their own information, so the atoms sum to i(x; y_1..k | c).
"""

from __future__ import annotations

import numpy as np

from jaxpid.errors import ConfigError
from jaxpid.core.lattice import Lattice

MEASURES = ("mmi", "imin", "ppid", "ccs")
TWO_SOURCE_MEASURES = ("imin", "ppid", "ccs")

# What the validation table (docs/validation.md) found each measure and form blind to; written into
# result.json and printed with the atoms, so a reader knows what a number cannot show.
MEASURE_NOTES = {
    "mmi": "mmi: two-source redundancy is min(i1, i2), a function of the words' separate informations: it "
           "cannot see one word implying the other (misses the demo's triangle -> green bias) and gives the "
           "weaker word no unique information whenever both words inform (distinct objects: unique 0)",
    "imin": "imin: on the demo its unique atoms come out large and negative (distinct objects: -5 to -12 nats "
            "in the orthogonal and chain forms of an earlier release); do not read its atoms as amounts",
    "ppid": "ppid: with uniform priors the redundancy is a function of i1 and i2 alone, like mmi: blind to the "
            "designed bias, and its unique atoms on distinct objects are negative",
    "ccs": "ccs: redundancy only where the pointwise co-information agrees in sign with both words' and the "
           "joint information, else 0 (0 for most images where neither word implies the other); in the plain "
           "PID synonyms get no redundancy (use the conditional PID for synonyms)",
}
FORM_NOTES = {
    "orthogonal": "orthogonal form: each subset's own gap from the context, unbiased only for images drawn from "
                  "that subset's prompt; for the words of an image drawn from the whole prompt it is biased "
                  "(only the joint information is not), and the joint can be smaller than one word's information",
    "standard": "standard form: the log-density ratio itself, exact per image for any image (also guided or "
                "given ones), but several times noisier than the gap forms at the same sample count",
    "anchored": "anchored form: gaps that all end at the full prompt, unbiased on average over images drawn from "
                "the prompt by the model without guidance, not per image; on guided or given images read it next "
                "to the standard form",
}


def decomposition_notes(measure: str, form: str) -> list[str]:
    """The caveats of a (measure, form) pair, as written into result.json and printed."""
    return [MEASURE_NOTES[check_measure_name(measure)], FORM_NOTES[form]]


def check_measure_name(measure: str) -> str:
    if measure not in MEASURES:
        raise ConfigError(f"unknown redundancy measure {measure!r}; expected one of {MEASURES}")
    return measure


def check_measure(measure: str, k: int) -> None:
    check_measure_name(measure)
    if measure in TWO_SOURCE_MEASURES and k != 2:
        raise ConfigError(
            f"measure {measure!r} is defined here for exactly 2 sources (got k={k}): beyond two "
            "sources it needs candidates, priors or co-informations of joint sources; use measure='mmi' "
            "for k > 2"
        )


def redundancies(
    lattice: Lattice,
    subset_info: np.ndarray,
    measure: str = "mmi",
    *,
    candidate_info: list[np.ndarray] | None = None,
    candidate_log_prior: list[np.ndarray] | None = None,
    log_prior: np.ndarray | None = None,
    conditional_info: np.ndarray | None = None,
) -> np.ndarray:
    """Redundancy of every node.

    Args:
      lattice: the k-source lattice.
      subset_info: (..., 2**k) pointwise information i(x; y_S | c), S as bitmask (index 0 = 0).
      measure: "mmi", "imin" or "ppid".
      candidate_info: imin only: per source, (..., n_j) information of its candidates, the true
        word first (so ``candidate_info[j][..., 0] == subset_info[..., 1 << j]``).
      candidate_log_prior: imin only: per source, (n_j,) log prior of the candidates
        (default uniform).
      log_prior: ppid only: (..., k) log p(y_j) (or log p(y_j | c)), natural log.
      conditional_info: ccs only: (..., k) i(x; y_j | y_other, c); default (standard form)
        i(x; y1, y2 | c) − i(x; y_other | c).

    Returns:
      (..., A) redundancy per node, in lattice order.
    """
    k = lattice.k
    check_measure(measure, k)
    if subset_info.shape[-1] != 1 << k:
        raise ConfigError(f"subset_info has {subset_info.shape[-1]} entries, the k={k} lattice needs {1 << k}")
    values = []
    for node in lattice.nodes:
        if len(node) == 1:
            values.append(subset_info[..., node[0]])
        elif measure == "mmi":
            values.append(np.min(np.stack([subset_info[..., m] for m in node], axis=-1), axis=-1))
        elif measure == "imin":
            values.append(imin_redundancy(candidate_info, candidate_log_prior))
        elif measure == "ccs":
            values.append(ccs_redundancy(subset_info, conditional_info))
        else:
            singles = np.stack([subset_info[..., 1 << j] for j in range(k)], axis=-1)
            values.append(ppid_redundancy(singles, log_prior))
    return np.stack(np.broadcast_arrays(*values), axis=-1)


def specific_information(info: np.ndarray, log_prior: np.ndarray | None = None) -> np.ndarray:
    """Σ_{y'} p(y'|x)·i(x; y') with p(y'|x) ∝ p(y')·exp(i(x; y')); info (..., n) -> (...)."""
    info = np.asarray(info, np.float64)
    if log_prior is None:
        log_prior = np.zeros(info.shape[-1])
    logits = np.asarray(log_prior, np.float64) + info
    logits = logits - logits.max(axis=-1, keepdims=True)
    posterior = np.exp(logits)
    posterior /= posterior.sum(axis=-1, keepdims=True)
    # a candidate the image rules out (i = −inf) has posterior 0 and adds nothing
    return np.sum(np.where(posterior > 0, posterior * np.where(np.isfinite(info), info, 0.0), 0.0), axis=-1)


def imin_redundancy(candidate_info, candidate_log_prior=None) -> np.ndarray:
    if candidate_info is None:
        raise ConfigError(
            "measure 'imin' needs candidate alternatives for every source (the true word and at "
            "least one alternative): pass alternatives=[conds_for_source_1, conds_for_source_2]"
        )
    priors = candidate_log_prior or [None] * len(candidate_info)
    specific = [specific_information(info, prior) for info, prior in zip(candidate_info, priors)]
    return np.min(np.stack(np.broadcast_arrays(*specific), axis=-1), axis=-1)


def ppid_redundancy(source_info: np.ndarray, log_prior: np.ndarray | None) -> np.ndarray:
    """R = min_j h_j − min_j (h_j − i_j); source_info (..., k), log_prior broadcastable to it."""
    if log_prior is None:
        raise ConfigError(
            "measure 'ppid' needs the sources' log prior probabilities log p(y_j) "
            "(log p(y_j | context) for conditional PID): pass log_prior=[..., ...]"
        )
    surprisal = -np.asarray(log_prior, np.float64)
    surprisal = np.broadcast_to(surprisal, np.broadcast_shapes(surprisal.shape, source_info.shape))
    return surprisal.min(axis=-1) - (surprisal - source_info).min(axis=-1)


def ccs_redundancy(subset_info: np.ndarray, conditional_info: np.ndarray | None = None) -> np.ndarray:
    """Pointwise common change in surprisal of two sources; subset_info (..., 4) in bitmask
    order, conditional_info (..., 2) = [i(x; y1 | y2), i(x; y2 | y1)] (default: from the subsets)."""
    i1, i2, i12 = subset_info[..., 1], subset_info[..., 2], subset_info[..., 3]
    if conditional_info is None:
        conditional_info = np.stack([i12 - i2, i12 - i1], axis=-1)
    conditional_info = np.asarray(conditional_info, np.float64)
    if conditional_info.shape[-1] != 2:
        raise ConfigError(f"conditional_info needs one value per source (2); got shape {conditional_info.shape}")
    co = 0.5 * ((i1 - conditional_info[..., 0]) + (i2 - conditional_info[..., 1]))
    sign = np.sign(co)
    agree = (np.sign(i1) == sign) & (np.sign(i2) == sign) & (np.sign(i12) == sign)
    return np.where(agree, co, 0.0)
