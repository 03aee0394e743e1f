"""PID atoms against closed-form ground truth (docs/method.md#partial-information-decomposition, #ground-truth), the lattice and the measures."""

import itertools

import jax
import numpy as np
import pytest

import jaxpid
from jaxpid.core.ground_truth import CANONICAL_CASES, MixtureDenoiser, canonical_case, mixture_log_density
from jaxpid.core.lattice import redundancy_lattice
from jaxpid.core.measures import ppid_redundancy, redundancies, specific_information

N_IMAGES = 48


def _setup(name: str, n_images: int = N_IMAGES):
    case = canonical_case(name)
    pairs, x = case.sample(jax.random.key(100 + CANONICAL_CASES.index(name)), n_images)
    subset = np.stack([case.subset_log_weights(*p) for p in pairs]).astype(np.float32)  # (I, 4, M)
    # imin candidates: for each source the other value of its bit (the true value is subset 1<<j)
    alternatives = [
        np.stack([case.single_source_log_weights(j, 1 - p[j]) for p in pairs])[:, None].astype(np.float32)
        for j in range(2)
    ]
    return case, pairs, x, subset, alternatives


def _exact_atoms(case, pairs, x, measure):
    lattice = redundancy_lattice(2)
    info = case.exact_information(x, pairs)  # (I, 4)
    kwargs = {}
    if measure == "imin":
        kwargs["candidate_info"] = [
            np.stack([info[:, 1 << j], _exact_alt(case, x, pairs, j)], axis=1) for j in range(2)
        ]
    return lattice.atoms(redundancies(lattice, info, measure, **kwargs))  # (I, A)


def _exact_alt(case, x, pairs, j):
    return np.array([case.exact_single_source_information(x[i : i + 1], j, 1 - pairs[i][j])[0] for i in range(len(x))])


def _run(case, x, subset, alternatives, measure, form, n_samples, seed):
    kwargs = {"alternatives": alternatives} if measure == "imin" else {}
    return jaxpid.pid(
        case.denoiser, x, subset, key=jax.random.key(seed), n_samples=n_samples, measure=measure,
        form=form, conds_per_image=True, **kwargs,
    )


@pytest.mark.parametrize("measure", ["mmi", "imin", "ccs"])
@pytest.mark.parametrize("name", CANONICAL_CASES)
def test_standard_form_atoms_match_exact_atoms_on_average(name, measure):
    case, pairs, x, subset, alternatives = _setup(name)
    res = _run(case, x, subset, alternatives, measure, "standard", 256, seed=1)
    exact = _exact_atoms(case, pairs, x, measure).mean(axis=0)
    for a, node in enumerate(res.names):
        est = res.atoms[node].mean()
        se = np.sqrt(np.sum(res.atoms_stderr[node] ** 2)) / N_IMAGES
        assert abs(est - exact[a]) < 4 * se + 0.02, (name, measure, node, est, exact[a], se)


@pytest.mark.parametrize("form", ["orthogonal", "anchored"])
@pytest.mark.parametrize("measure", ["mmi", "imin", "ccs"])
@pytest.mark.parametrize("name", CANONICAL_CASES)
def test_gap_form_atoms_match_high_sample_truth(name, measure, form):
    """Per image, the gap forms' atoms differ from log-density atoms; their truth is the same
    integral with the exact denoiser and many samples (docs/method.md#ground-truth)."""
    case, pairs, x, subset, alternatives = _setup(name, 24)
    truth = _run(case, x, subset, alternatives, measure, form, 4096, seed=7)
    runs = [_run(case, x, subset, alternatives, measure, form, 128, seed=seed) for seed in (2, 3)]
    for node in truth.names:
        diffs, ses = [], []
        for res in runs:
            diff = res.atoms[node] - truth.atoms[node]
            se = np.sqrt(res.atoms_stderr[node] ** 2 + truth.atoms_stderr[node] ** 2)
            assert abs(diff.mean()) < 4 * np.sqrt(np.sum(se**2)) / len(x) + 0.01, (name, measure, node)
            diffs.append(diff)
            ses.append(se)
        # per image too (the high-sample truth is tight): few images beyond 3.5 standard errors,
        # over two keys. imin's errors are heavy-tailed, more so with the stratified sampler's
        # jackknife: on AND's unique atoms 4 % of images (logistic) and 10-15 % (stratified) lie
        # beyond 3.5 s.e. (measured; docs/method.md#stratified-log-snr-samples says so)
        diff, se = np.concatenate(diffs), np.concatenate(ses)
        allowed = 0.2 if measure == "imin" else 0.1
        assert np.mean(np.abs(diff) > 3.5 * se + 1e-6) <= allowed, (name, measure, node, diff / (se + 1e-12))


def test_anchored_form_subtracts_gaps_that_end_at_the_full_prompt():
    """i(x; y_S) = gap(∅ → full) − gap(S → full) per image and pixel, the joint is the orthogonal
    joint, a word's conditional information is its gap to the full prompt, imin's candidates get
    the same construction, and the chain form is refused with a message naming its replacement."""
    case, pairs, x, subset, alternatives = _setup("AND", 6)
    res = _run(case, x, subset, alternatives, "imin", "anchored", 32, seed=4)
    info = res.information
    gap = {p: info.pair_mi_orthogonal[:, n] for n, p in enumerate(info.pairs)}
    gap_maps = {p: info.pair_maps_orthogonal[:, n] for n, p in enumerate(info.pairs)}
    assert set(jaxpid.core.anchored_pairs(2, 6)) <= set(info.pairs)
    top, top_map = info.mi_orthogonal[:, 3], info.maps_orthogonal[:, 3]
    i = res.subset_information
    for s in (1, 2):
        np.testing.assert_allclose(i[:, s], top - gap[(3, s)], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(res.subset_maps[:, s], top_map - gap_maps[(3, s)], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(i[:, 3], top, rtol=1e-12)
    np.testing.assert_allclose(res.conditional_information, np.stack([gap[(3, 2)], gap[(3, 1)]], 1), rtol=1e-6,
                               atol=1e-9)
    candidates = jaxpid.decompose(info, 2, measure="mmi", form="anchored")  # the same values feed any measure
    np.testing.assert_allclose(candidates.subset_information, i, rtol=1e-12)
    total = sum(res.atom_maps[n] for n in res.names)
    np.testing.assert_allclose(total, top_map, rtol=1e-5, atol=1e-6)  # atoms add up per pixel
    with pytest.raises(jaxpid.ConfigError, match="anchored"):
        jaxpid.decompose(info, 2, form="chain")
    with pytest.raises(jaxpid.ConfigError, match="anchored_pairs"):
        jaxpid.decompose(jaxpid.information(case.denoiser, x, subset, key=jax.random.key(1), n_samples=8,
                                            conds_per_image=True), 2, form="anchored", measure="mmi")


def test_canonical_cases_have_their_labels_on_average():
    """The Shannon labels as a sanity check. With orthogonal-form information they hold per image
    here, because a source that adds nothing leaves the mixture weights, hence ε̂, unchanged."""
    means = {}
    for name in CANONICAL_CASES:
        case, pairs, x, subset, _ = _setup(name)
        means[name] = {n: v.mean() for n, v in _run(case, x, subset, None, "mmi", "orthogonal", 128, 3).atoms.items()}
    assert means["RDN"]["{1}{2}"] > 0.4 and abs(means["RDN"]["{1}"]) < 0.03 and abs(means["RDN"]["{12}"]) < 0.03
    assert means["UNQ"]["{1}"] > 0.4 and abs(means["UNQ"]["{2}"]) < 0.03 and abs(means["UNQ"]["{1}{2}"]) < 0.03
    assert means["XOR"]["{12}"] > 0.4 and abs(means["XOR"]["{1}"]) < 0.03 and abs(means["XOR"]["{2}"]) < 0.03
    assert means["AND"]["{1}{2}"] > 0.1 and means["AND"]["{12}"] > 0.1  # a mix


def test_atoms_sum_to_joint_information_per_image_and_per_pixel():
    case, pairs, x, subset, alternatives = _setup("AND", 6)
    for measure in ("mmi", "imin"):
        res = _run(case, x, subset, alternatives, measure, "orthogonal", 32, seed=4)
        np.testing.assert_allclose(sum(res.atoms.values()), res.joint, rtol=1e-9, atol=1e-9)
        joint_map = res.information.maps_orthogonal[:, 3]
        np.testing.assert_allclose(sum(res.atom_maps.values()), joint_map, rtol=1e-9, atol=1e-9)
        assert res.redundancy.shape == (6,) and res.unique.shape == (6, 2) and res.synergy.shape == (6,)


def _three_source_gmm():
    """y1, y2, y3 uniform bits; x's mean is one of 4 points chosen by (y1 ∧ y2, y2 ⊕ y3)."""
    shape = (1, 2, 2)
    rng = np.random.default_rng(0)
    means = rng.normal(size=(4,) + shape).astype(np.float32) * 1.5
    outcomes = {y: 2 * (y[0] & y[1]) + (y[1] ^ y[2]) for y in itertools.product((0, 1), repeat=3)}

    def log_weights(mask, y):
        w = np.zeros(4)
        for other, comp in outcomes.items():
            if all(other[j] == y[j] for j in range(3) if mask >> j & 1):
                w[comp] += 1
        with np.errstate(divide="ignore"):
            return np.log(w / w.sum())

    return means, outcomes, log_weights


def test_three_sources_18_atoms_sum_to_joint_and_match_exact():
    means, outcomes, log_weights = _three_source_gmm()
    rng = np.random.default_rng(1)
    ys = [tuple(rng.integers(0, 2, 3)) for _ in range(32)]
    x = np.stack([means[outcomes[y]] + 0.5 * rng.normal(size=means.shape[1:]) for y in ys]).astype(np.float32)
    subset = np.stack([[log_weights(m, y) for m in range(8)] for y in ys]).astype(np.float32)
    res = jaxpid.pid(
        MixtureDenoiser(means, std=0.5), x, subset, key=jax.random.key(0), n_samples=256,
        measure="mmi", form="standard", conds_per_image=True,
    )
    assert len(res.names) == 18 and res.k == 3
    np.testing.assert_allclose(sum(res.atoms.values()), res.joint, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(sum(res.atom_maps.values()), res.information.maps_standard[:, 7], atol=1e-9)
    lattice = redundancy_lattice(3)
    log_p = np.stack([mixture_log_density(x[i : i + 1], means, 0.5, subset[i])[0] for i in range(len(x))])
    exact = lattice.atoms(redundancies(lattice, log_p - log_p[:, :1], "mmi")).mean(axis=0)
    for a, node in enumerate(res.names):
        se = np.sqrt(np.sum(res.atoms_stderr[node] ** 2)) / len(x)
        assert abs(res.atoms[node].mean() - exact[a]) < 4 * se + 0.02, (node, res.atoms[node].mean(), exact[a])


def test_level_mean_divides_image_level_information_by_pixels():
    case, pairs, x, subset, _ = _setup("AND", 4)
    total = _run(case, x, subset, None, "mmi", "orthogonal", 16, 5)
    mean = jaxpid.pid(case.denoiser, x, subset, key=jax.random.key(5), n_samples=16, measure="mmi", form="orthogonal",
                      level="mean", conds_per_image=True)
    np.testing.assert_allclose(mean.atoms["{12}"], total.atoms["{12}"] / 4, rtol=1e-9)
    np.testing.assert_allclose(mean.atom_maps["{12}"], total.atom_maps["{12}"], rtol=1e-9)
    assert mean.config["level"] == "mean" and total.config["level"] == "sum"


# --- lattice ---------------------------------------------------------------------------------


@pytest.mark.parametrize("k, size", [(1, 1), (2, 4), (3, 18), (4, 166)])
def test_lattice_sizes_and_mobius_inversion(k, size):
    lattice = redundancy_lattice(k)
    assert lattice.size == size
    atoms = np.random.default_rng(k).normal(size=(3, size))
    red = np.einsum("ab,ib->ia", lattice.order.astype(float), atoms)  # R(α) = Σ_{β≤α} π(β)
    np.testing.assert_allclose(lattice.atoms(red), atoms, atol=1e-12)
    assert lattice.names[lattice.top] == "{" + "".join(str(j + 1) for j in range(k)) + "}"


def test_lattice_names_and_order():
    assert redundancy_lattice(2).names == ("{1}{2}", "{1}", "{2}", "{12}")
    names3 = redundancy_lattice(3).names
    assert "{1}{23}" in names3 and "{13}{2}" in names3 and names3[0] == "{1}{2}{3}" and names3[-1] == "{123}"


def test_more_than_four_sources_needs_opt_in():
    with pytest.raises(jaxpid.ConfigError, match="allow_large=True"):
        redundancy_lattice(5)
    case = canonical_case("AND")
    _, x = case.sample(jax.random.key(0), 1)
    conds = np.zeros((32, 2), np.float32)
    with pytest.raises(jaxpid.ConfigError, match="k=5"):
        jaxpid.pid(case.denoiser, x, conds, key=jax.random.key(0))


# --- measures --------------------------------------------------------------------------------


def test_mmi_is_the_minimum_and_imin_uses_specific_information():
    lattice = redundancy_lattice(2)
    info = np.array([0.0, 0.7, 0.3, 1.2])
    red = redundancies(lattice, info, "mmi")
    assert red[lattice.bottom] == 0.3 and red[lattice.top] == 1.2
    cands = [np.array([0.7, -0.2]), np.array([0.3, 0.1, -1.0])]
    red = redundancies(lattice, info, "imin", candidate_info=cands)
    post = np.exp(cands[0]) / np.exp(cands[0]).sum()
    assert np.isclose(specific_information(cands[0]), (post * cands[0]).sum())
    assert np.isclose(red[lattice.bottom], min(specific_information(c) for c in cands))


def test_ccs_counts_co_information_only_where_its_sign_agrees():
    lattice = redundancy_lattice(2)
    # subsets {}, {1}, {2}, {12}
    shared = np.array([0.0, 1.0, 1.5, 1.8])  # co-information 0.7 > 0, all positive: redundancy
    synergistic = np.array([0.0, 0.2, 0.3, 1.5])  # co-information -1.0 < 0 with positive i: none
    misinformative = np.array([0.0, -0.4, 0.6, 0.5])  # i1 < 0 disagrees with c = -0.3: none
    both_negative = np.array([0.0, -0.5, -0.6, -0.8])  # c = -0.3, all negative: counted
    red = redundancies(lattice, np.stack([shared, synergistic, misinformative, both_negative]), "ccs")
    np.testing.assert_allclose(red[:, lattice.bottom], [0.7, 0.0, 0.0, -0.3])
    atoms = lattice.atoms(red)
    np.testing.assert_allclose(atoms.sum(axis=1), [1.8, 1.5, 0.5, -0.8])  # atoms sum to the joint
    assert atoms[0, lattice.index("{12}")] == pytest.approx(0.0)  # shared: no synergy left
    # given conditional informations (the orthogonal form) replace i12 - i_other
    cond = np.array([[0.2, 0.4]])  # c = ((1.0 - 0.2) + (1.5 - 0.4)) / 2 = 0.95
    red = redundancies(lattice, shared[None], "ccs", conditional_info=cond)
    assert red[0, lattice.bottom] == pytest.approx(0.95)
    with pytest.raises(jaxpid.ConfigError, match="exactly 2 sources"):
        redundancies(redundancy_lattice(3), np.zeros(8), "ccs")


def test_ppid_equal_priors_give_max_and_atoms_can_be_negative():
    i = np.array([[0.4, 0.9], [1.3, -0.2]])
    np.testing.assert_allclose(ppid_redundancy(i, np.log([0.3, 0.3])), i.max(axis=1))
    lattice = redundancy_lattice(2)
    info = np.array([0.0, 0.4, 0.9, 1.0])
    atoms = lattice.atoms(redundancies(lattice, info, "ppid", log_prior=np.log([0.5, 0.5])))
    assert atoms[lattice.index("{1}")] < 0  # U1 = i1 − max(i1, i2) = −0.5


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"subset": 3}, jaxpid.ShapeError, "2\\*\\*k"),
        ({"measure": "bogus"}, jaxpid.ConfigError, "unknown redundancy measure"),
        ({"measure": "imin"}, jaxpid.ConfigError, "alternatives"),
        ({"measure": "ppid"}, jaxpid.ConfigError, "log_prior"),
        ({"measure": "ppid", "log_prior": [0.1, -1.0]}, jaxpid.ConfigError, "log probabilities"),
        ({"measure": "ppid", "log_prior": [-1.0, -1.0, -1.0]}, jaxpid.ShapeError, "log_prior must have shape"),
        ({"form": "neither"}, jaxpid.ConfigError, "form"),
        ({"level": "max"}, jaxpid.ConfigError, "level"),
    ],
)
def test_pid_input_errors(kwargs, error, message):
    case = canonical_case("AND")
    _, x = case.sample(jax.random.key(0), 2)
    n_subsets = kwargs.pop("subset", 4)
    conds = np.zeros((n_subsets, 2), np.float32)
    with pytest.raises(error, match=message):
        jaxpid.pid(case.denoiser, x, conds, key=jax.random.key(0), n_samples=4, **kwargs)


def test_ppid_pid_matches_exact_finn_lizier_atoms_with_non_uniform_priors():
    """Standard-form ppid atoms averaged over images equal the exact ones from log-densities."""
    case, pairs, x, subset, _ = _setup("AND")
    log_prior = np.stack([[np.log(case.marginal(j)[p[j]]) for j in range(2)] for p in pairs]) - np.array([0.3, 1.1])
    res = jaxpid.pid(
        case.denoiser, x, subset, key=jax.random.key(8), n_samples=256, measure="ppid", form="standard",
        log_prior=log_prior, conds_per_image=True,
    )
    lattice = redundancy_lattice(2)
    info = case.exact_information(x, pairs)
    exact = lattice.atoms(redundancies(lattice, info, "ppid", log_prior=log_prior)).mean(axis=0)
    for a, node in enumerate(res.names):
        se = np.sqrt(np.sum(res.atoms_stderr[node] ** 2)) / len(x)
        assert abs(res.atoms[node].mean() - exact[a]) < 4 * se + 0.02, (node, res.atoms[node].mean(), exact[a])


def test_decompose_reuses_one_pass_for_several_measures():
    case, pairs, x, subset, _ = _setup("AND", 4)
    kwargs = dict(key=jax.random.key(3), n_samples=16, conds_per_image=True)
    res = jaxpid.information(case.denoiser, x, subset, **kwargs)
    prior = np.log([0.3, 0.6])
    for measure, extra in (("mmi", {}), ("ppid", {"log_prior": prior})):
        direct = jaxpid.pid(case.denoiser, x, subset, measure=measure, form="standard", level="mean", **extra, **kwargs)
        reused = jaxpid.decompose(res, 2, measure=measure, form="standard", level="mean", **extra)
        for name in direct.names:
            np.testing.assert_allclose(reused.atoms[name], direct.atoms[name], rtol=1e-12)
            np.testing.assert_allclose(reused.atoms_stderr[name], direct.atoms_stderr[name], rtol=1e-12)
    with pytest.raises(jaxpid.ConfigError, match="candidate indices"):
        jaxpid.decompose(res, 2, measure="imin")
    # ccs in the orthogonal form needs the conditional gaps, which this pass did not measure
    with pytest.raises(jaxpid.ConfigError, match="conditional_pairs"):
        jaxpid.decompose(res, 2, measure="ccs", form="orthogonal")
    standard = jaxpid.decompose(res, 2, measure="ccs", form="standard")
    direct = jaxpid.pid(case.denoiser, x, subset, measure="ccs", form="standard", **kwargs)
    for name in direct.names:
        np.testing.assert_allclose(standard.atoms[name], direct.atoms[name], rtol=1e-9, atol=1e-12)


def test_consistency_sum_is_one_for_an_exact_model_and_detects_missing_options():
    """Σ_y' p(y') exp(i(x; y')) = 1 per image when the candidates are every value of the source
    and p its true prior (docs/method.md#the-consistency-check): exactly for the closed-form
    log-density ratios, within its errors for the standard-form estimates, with any measure."""
    case, pairs, x, subset, alternatives = _setup("AND", 24)
    priors = [np.log(case.marginal(j)) for j in range(2)]  # uniform bits: [log ½, log ½]
    exact = case.exact_information(x, pairs)
    for j in range(2):
        exact_alt = _exact_alt(case, x, pairs, j)
        total = np.logaddexp(priors[j][0] + exact[:, 1 << j], priors[j][1] + exact_alt)
        np.testing.assert_allclose(total, 0.0, atol=1e-9)
    res = jaxpid.pid(case.denoiser, x, subset, key=jax.random.key(5), n_samples=256, measure="mmi",
                     conds_per_image=True, alternatives=alternatives,
                     alternatives_log_prior=[np.array([p[0], p[1]]) for p in priors])
    # in magnitude: near 0 nats on every image (a sum near 1); the jackknife error of a log-sum-exp
    # is optimistic on a few images, hence the 0.05-nat allowance (measured: |log sum| <= 0.22)
    log_sum, se = res.log_consistency, res.log_consistency_stderr
    assert log_sum.shape == (24, 2) and np.all(np.abs(log_sum) < 0.3) and abs(log_sum.mean()) < 0.05
    assert np.mean(np.abs(log_sum) < 3.5 * se + 0.05) >= 0.9
    # leave the other value out (the true word alone, prior 1): the sum is exp(i(x; y_j)), not 1
    alone = jaxpid.decompose(res.information, 2, measure="mmi", candidates=[[1], [2]],
                             candidates_log_prior=[np.zeros(1), np.zeros(1)])
    np.testing.assert_allclose(alone.log_consistency, res.information.mi_standard[:, [1, 2]], rtol=1e-9)
    assert jaxpid.pid(case.denoiser, x, subset, key=jax.random.key(5), n_samples=8, measure="mmi",
                      conds_per_image=True).log_consistency is None
