"""The variance profile over log-SNR (jaxpid.bench.variance) on a Gaussian-mixture case: the bins
account for all of the variance and rebuild the estimate, and the atoms' pseudo-values agree
with the jackknife errors jaxpid reports."""

from __future__ import annotations

import math

import numpy as np

from jaxpid.bench import variance
from jaxpid.core import LogisticSampler


def test_profile_bins_share_the_variance_and_rebuild_the_estimate():
    sampler = LogisticSampler()
    edges = np.linspace(*sampler.support, variance.N_BINS + 1)
    result = variance.mixture_pid("AND", n_images=4, n_samples=64, sampler=sampler)
    profiles = {p.quantity: p for p in variance.profiles_of(result, variance.subset_labels(("y1", "y2")), sampler, edges)}
    info = result.information
    assert "i_orth({y1,y2})" in profiles and "atom {12}" in profiles
    for p in profiles.values():
        assert math.isclose(p.variance_share.sum(), 1.0, rel_tol=1e-9), p.quantity
        assert p.counts.sum() == 4 * 64
        assert math.isclose(p.binned_estimate(), p.estimate, rel_tol=1e-9, abs_tol=1e-12), p.quantity
        assert math.isclose(p.proposal_mass.sum(), 1.0, rel_tol=1e-6)
        assert p.stratified_gain > 0 and p.ideal_gain > 0
    # the linear quantities are the pass's own numbers
    assert math.isclose(profiles["i_orth({y1,y2})"].estimate, info.mi_orthogonal[:, 3].mean(), rel_tol=1e-9)
    assert math.isclose(profiles["i_stan({y1})"].estimate, info.mi_standard[:, 1].mean(), rel_tol=1e-9)
    # the anchored form (the result's, the default): each word's value is the decomposition's own
    assert result.form == "anchored" and "i_anch({y1,y2})" not in profiles  # the joint is i_orth's
    for s, word in ((1, "{y1}"), (2, "{y2}")):
        assert math.isclose(profiles[f"i_anch({word})"].estimate, result.subset_information[:, s].mean(),
                            rel_tol=1e-9), word
    # the atoms' pseudo-values carry the jackknife errors of the result
    pseudo = variance.atom_pseudo_values(result)
    for name in result.names:
        stderr = pseudo[name].std(axis=1, ddof=1) / math.sqrt(64)
        np.testing.assert_allclose(stderr, result.atoms_stderr[name], rtol=1e-6, atol=1e-9)


def test_a_shifted_bin_changes_the_shares():
    # a profile that is not just bookkeeping: all the spread in one bin puts all the variance there
    sampler = LogisticSampler()
    edges = np.linspace(*sampler.support, variance.N_BINS + 1)
    logsnr = np.tile(np.linspace(-4.9, 6.9, 120), (2, 1))
    in_bin = (logsnr > 2) & (logsnr < 3)
    values = np.zeros_like(logsnr)
    values[in_bin] = np.resize([1.0, -1.0], in_bin.sum())  # rows alike: each row's bin count is even
    assert in_bin[0].sum() % 2 == 0
    p = variance.profile("toy", values, logsnr, sampler, edges)
    assert p.variance_share[7] == 1.0 and np.all(np.delete(p.variance_share, 7) == 0)
    assert p.estimate == 0.0 and p.binned_estimate() == 0.0


def test_sampler_comparison_reports_the_evaluations_ratio_of_each_quantity():
    """compare() on a mixture case: every reported quantity is present for every sampler, the
    ratio is the ratio of mean squared standard errors, and the estimates of all samplers agree
    (they estimate the same integral)."""
    labels = variance.subset_labels(("y1", "y2"))
    found = variance.compare(variance.mixture_job("AND", 8, 32), keys=2, labels=labels, minimum=1e-6)
    assert {c.quantity for c in found} == {"i({y1})", "i({y2})", "i({y1,y2})", "atom {1}{2}", "atom {1}", "atom {2}",
                                           "atom {12}"}
    for c in found:
        assert set(c.mean_variance) == set(variance.SAMPLERS)
        assert c.evals_ratio == c.mean_variance["logistic"] / c.mean_variance["default"] > 0
        spread = math.sqrt(c.mean_variance["logistic"] + c.mean_variance["default"])
        assert abs(c.estimate["logistic"] - c.estimate["default"]) < 4 * spread, c
        assert math.isfinite(c.honesty["default"])
        row = c.to_row()
        assert row["evals_ratio"] == round(c.evals_ratio, 6) and "evals_ratio_stratified-uniform" in row
    lines = []
    median = variance.print_comparison("AND", found, lines.append)
    assert median == float(np.median([c.evals_ratio for c in found]))
    assert lines[-1].split()[0] == "median"
