"""Ground truth for DiffusionPID's ``ppid`` measure (docs/method.md#partial-information-decomposition, #ground-truth).

(a) Discrete: pointwise ppid atoms from exact pointwise quantities, averaged over p(y1, y2, x),
    equal the Finn–Lizier decomposition of the ``dit`` package (``PID_PM``).
(b) Gaussian mixtures with non-uniform source priors: estimates against exact atoms (standard
    form) and against a high-sample truth (orthogonal form); equal priors give R = max(i1, i2).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
import pytest

import jaxpid
from jaxpid.core.ground_truth import canonical_case
from jaxpid.core.lattice import redundancy_lattice
from jaxpid.core.measures import redundancies
from jaxpid.priors import uniform_log_prior

LATTICE = redundancy_lattice(2)

# --- (a) discrete distributions ---------------------------------------------------------------

AND = {(0, 0, 0): 0.25, (0, 1, 0): 0.25, (1, 0, 0): 0.25, (1, 1, 1): 0.25}
# XOR whose (1, 1) pair sometimes gives 1, with skewed probabilities: 5 outcomes.
SKEWED_XOR = {(0, 0, 0): 0.3, (0, 1, 1): 0.25, (1, 0, 1): 0.2, (1, 1, 0): 0.15, (1, 1, 1): 0.1}


def pointwise_ppid_atoms_bits(table: dict[tuple, float]) -> dict[str, float]:
    """Average over p(y1, y2, x) of jaxpid's pointwise ppid atoms, from the exact pointwise
    i(x; y_S) = log p(x | y_S) − log p(x) and h_j = −log p(y_j); in bits."""
    outcomes = [o for o, p in table.items() if p > 0]
    prob = np.array([table[o] for o in outcomes])

    def marginal(keep) -> dict[tuple, float]:
        out: dict[tuple, float] = {}
        for o, p in zip(outcomes, prob):
            key = tuple(o[i] for i in keep)
            out[key] = out.get(key, 0.0) + p
        return out

    p_x = marginal((2,))
    p_y = {keep: marginal(keep) for keep in [(), (0,), (1,), (0, 1)]}  # subsets in bitmask order
    p_yx = {keep: marginal(keep + (2,)) for keep in p_y}
    info = np.array(
        [
            [
                math.log(p_yx[keep][tuple(o[i] for i in keep) + (o[2],)] / p_y[keep][tuple(o[i] for i in keep)])
                - math.log(p_x[(o[2],)])
                for keep in p_y
            ]
            for o in outcomes
        ]
    )  # (n, 4): i(x; y_S), S = {}, {1}, {2}, {1,2}
    log_prior = np.array([[math.log(p_y[(0,)][(o[0],)]), math.log(p_y[(1,)][(o[1],)])] for o in outcomes])
    atoms = LATTICE.atoms(redundancies(LATTICE, info, "ppid", log_prior=log_prior))  # (n, 4)
    mean = (prob[:, None] * atoms).sum(axis=0) / math.log(2)
    return dict(zip(LATTICE.names, mean))


def dit_pid_pm_bits(table: dict[tuple, float]) -> dict[str, float]:
    dit = pytest.importorskip("dit")
    dist = dit.Distribution(["".join(str(v) for v in o) for o in table], list(table.values()))
    return _dit_atoms(dit, dist)


def _dit_atoms(dit, dist) -> dict[str, float]:
    pid = dit.pid.PID_PM(dist)  # inputs: all variables but the last; target: the last
    nodes = {"{1}{2}": ((0,), (1,)), "{1}": ((0,),), "{2}": ((1,),), "{12}": ((0, 1),)}
    return {name: float(pid.get_pi(node)) for name, node in nodes.items()}


def test_and_matches_the_published_finn_lizier_numbers():
    """docs/method.md#ground-truth's values for AND (also those of dit's PID_PM), without needing dit."""
    atoms = pointwise_ppid_atoms_bits(AND)
    assert atoms["{1}{2}"] == pytest.approx(0.5613, abs=5e-5)
    assert atoms["{1}"] == pytest.approx(-0.25, abs=1e-12) and atoms["{2}"] == pytest.approx(-0.25, abs=1e-12)
    assert atoms["{12}"] == pytest.approx(0.75, abs=1e-12)


@pytest.mark.parametrize("name, table", [("AND", AND), ("skewed XOR", SKEWED_XOR)])
def test_pointwise_ppid_matches_dit_pid_pm(name, table):
    ours, reference = pointwise_ppid_atoms_bits(table), dit_pid_pm_bits(table)
    print(name, {k: round(v, 4) for k, v in ours.items()})
    for node in LATTICE.names:
        assert ours[node] == pytest.approx(reference[node], abs=1e-10), (name, node)
        assert round(ours[node], 4) == round(reference[node], 4)


def test_pointwise_ppid_matches_dit_on_its_whole_bivariate_catalogue():
    """dit's 27 two-source test distributions, including non-binary alphabets."""
    dit = pytest.importorskip("dit")
    from dit.pid.distributions import bivariates

    for name, dist in bivariates.items():
        dist = dist.copy(base="linear")
        table = {tuple(o): float(p) for o, p in zip(dist.outcomes, dist.pmf)}
        ours, reference = pointwise_ppid_atoms_bits(table), _dit_atoms(dit, dist)
        for node in LATTICE.names:
            assert ours[node] == pytest.approx(reference[node], abs=1e-9), (name, node, ours, reference)


# --- (b) Gaussian mixtures with non-uniform source priors -------------------------------------

# AND on skewed sources: p(y1 = 0) = 0.7, p(y2 = 0) = 0.65, so the true priors differ per word.
P_SKEWED = np.array([[0.45, 0.25], [0.2, 0.1]])
# One image count and sample count for every estimate here: one compiled program serves them all.
N_IMAGES, N_SAMPLES = 24, 128


def skewed_and(n_images: int, seed: int):
    case = dataclasses.replace(canonical_case("AND"), name="AND-skewed", p_joint=P_SKEWED)
    pairs, x = case.sample(jax.random.key(seed), n_images)
    subset = np.stack([case.subset_log_weights(*p) for p in pairs]).astype(np.float32)  # (I, 4, M)
    # The mixture's own p(y_j) at each image's source values: the exact Finn–Lizier priors.
    log_prior = np.stack([[math.log(case.marginal(j)[p[j]]) for j in range(2)] for p in pairs])  # (I, 2)
    return case, pairs, x, subset, log_prior


def test_standard_form_ppid_with_the_mixtures_own_priors_matches_exact_atoms():
    case, pairs, x, subset, log_prior = skewed_and(N_IMAGES, seed=11)
    assert len(np.unique(np.round(log_prior, 6))) == 4  # four distinct priors: 0.7, 0.3, 0.65, 0.35
    res = jaxpid.pid(
        case.denoiser, x, subset, key=jax.random.key(12), n_samples=N_SAMPLES, measure="ppid", form="standard",
        log_prior=log_prior, conds_per_image=True,
    )
    exact = LATTICE.atoms(redundancies(LATTICE, case.exact_information(x, pairs), "ppid", log_prior=log_prior))
    for a, node in enumerate(res.names):
        se = np.sqrt(np.sum(res.atoms_stderr[node] ** 2)) / len(x)
        estimate, truth = res.atoms[node].mean(), exact[:, a].mean()
        assert abs(estimate - truth) < 4 * se + 0.02, (node, estimate, truth)
    assert exact[:, LATTICE.index("{1}")].min() < 0  # pointwise atoms do go negative


def test_orthogonal_form_ppid_matches_high_sample_truth():
    """Per image, orthogonal-form atoms are not the log-density atoms; their truth is the same
    integral with the exact denoiser and 4,096 samples (docs/method.md#ground-truth)."""
    case, pairs, x, subset, log_prior = skewed_and(N_IMAGES, seed=13)
    kwargs = dict(conds_per_image=True)
    truth_pass = jaxpid.information(case.denoiser, x, subset, key=jax.random.key(14), n_samples=4096, **kwargs)
    truth = jaxpid.decompose(truth_pass, 2, measure="ppid", form="orthogonal", log_prior=log_prior)
    res = jaxpid.pid(
        case.denoiser, x, subset, key=jax.random.key(15), n_samples=N_SAMPLES, measure="ppid", form="orthogonal",
        log_prior=log_prior, **kwargs,
    )
    for node in res.names:
        diff = res.atoms[node] - truth.atoms[node]
        se = np.sqrt(res.atoms_stderr[node] ** 2 + truth.atoms_stderr[node] ** 2)
        assert abs(diff.mean()) < 4 * np.sqrt(np.sum(se**2)) / len(x) + 0.01, node
        # Per image too. The orthogonal integrand is heavy-tailed at small information, where 128
        # samples understate the standard error, hence the small absolute slack.
        assert np.mean(np.abs(diff) > 3.5 * se + 0.02) <= 0.1, (node, diff / (se + 1e-12))


@pytest.mark.parametrize("level", ["sum", "mean"])
def test_equal_priors_give_redundancy_max_of_the_two_informations(level):
    case, pairs, x, subset, _ = skewed_and(N_IMAGES, seed=16)
    runs = [
        jaxpid.pid(
            case.denoiser, x, subset, key=jax.random.key(17), n_samples=N_SAMPLES, measure="ppid", form="orthogonal",
            level=level, log_prior=prior, conds_per_image=True,
        )
        for prior in (uniform_log_prior(2), np.log([0.01, 0.01]))
    ]
    for res in runs:
        info = res.subset_information
        np.testing.assert_allclose(res.redundancy, np.maximum(info[:, 1], info[:, 2]), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(res.unique[:, 0], info[:, 1] - np.maximum(info[:, 1], info[:, 2]), atol=1e-12)
        maps = np.moveaxis(res.information.maps_orthogonal, 1, -1)  # (I, H, W, S)
        np.testing.assert_allclose(res.atom_maps["{1}{2}"], np.maximum(maps[..., 1], maps[..., 2]), atol=1e-12)
        np.testing.assert_allclose(sum(res.atoms.values()), res.joint, atol=1e-9)
    for node in runs[0].names:  # the common prior's value cancels
        np.testing.assert_allclose(runs[0].atoms[node], runs[1].atoms[node], atol=1e-12)
        np.testing.assert_allclose(runs[0].atoms_stderr[node], runs[1].atoms_stderr[node], atol=1e-12)
