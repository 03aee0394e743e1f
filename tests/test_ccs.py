"""Ground truth for the ``ccs`` measure (Ince's common change in surprisal, docs/method.md#ccs).

Ince defines I_ccs as the average, under the maximum-entropy distribution that keeps the
pairwise marginals (y1, y2), (y1, x), (y2, x), of the pointwise co-information wherever its sign
agrees with the pointwise informations. jaxpid applies the same pointwise rule to the model's own
pointwise informations; fed the exact pointwise informations of that maximum-entropy
distribution, it must reproduce ``dit``'s ``PID_CCS`` redundancy on dit's whole catalogue.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from jaxpid.core.lattice import redundancy_lattice
from jaxpid.core.measures import redundancies

LATTICE = redundancy_lattice(2)


def pointwise_ccs_redundancy_bits(table: dict[tuple, float]) -> float:
    """Σ p(y1, y2, x) · ccs(pointwise informations of p), in bits."""
    outcomes = [o for o, p in table.items() if p > 0]
    prob = np.array([table[o] for o in outcomes])

    def marginal(keep):
        out = {}
        for o, p in zip(outcomes, prob):
            out[tuple(o[i] for i in keep)] = out.get(tuple(o[i] for i in keep), 0.0) + p
        return out

    p_x = marginal((2,))
    subsets = [(), (0,), (1,), (0, 1)]  # bitmask order
    p_y = {keep: marginal(keep) for keep in subsets}
    p_yx = {keep: marginal(keep + (2,)) for keep in subsets}
    info = np.array([
        [math.log(p_yx[keep][tuple(o[i] for i in keep) + (o[2],)] / p_y[keep][tuple(o[i] for i in keep)] / p_x[(o[2],)])
         for keep in subsets]
        for o in outcomes
    ])
    info[np.abs(info) < 1e-9] = 0.0  # as dit, an information within rounding of 0 has no sign
    red = redundancies(LATTICE, info, "ccs")[:, LATTICE.bottom]
    return float((prob * red).sum() / math.log(2))


def test_pointwise_ccs_matches_dit_pid_ccs_on_its_bivariate_catalogue():
    dit = pytest.importorskip("dit")
    from dit.algorithms import maxent_dist
    from dit.pid.distributions import bivariates

    checked = 0
    for name, dist in bivariates.items():
        dist = dist.copy(base="linear")
        reference = float(dit.pid.PID_CCS(dist).get_pi(((0,), (1,))))
        joint = dist.coalesce([(0,), (1,), (2,)])
        maxent = maxent_dist(joint, [[0, 1], [0, 2], [1, 2]])
        table = {tuple(v[0] for v in o): float(p) for o, p in zip(maxent.outcomes, maxent.pmf) if p > 1e-15}
        ours = pointwise_ccs_redundancy_bits(table)
        assert ours == pytest.approx(reference, abs=1e-6), (name, ours, reference)
        checked += 1
    assert checked >= 20


def test_redundant_and_xor_distributions():
    """RDN: both sources are the target (all of its bit is redundant); XOR: none is."""
    rdn = {(0, 0, 0): 0.5, (1, 1, 1): 0.5}
    xor = {(0, 0, 0): 0.25, (0, 1, 1): 0.25, (1, 0, 1): 0.25, (1, 1, 0): 0.25}
    assert pointwise_ccs_redundancy_bits(rdn) == pytest.approx(1.0)
    assert pointwise_ccs_redundancy_bits(xor) == pytest.approx(0.0)
