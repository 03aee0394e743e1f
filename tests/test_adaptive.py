"""Per-item stopping with slot refill (jaxpid.core.adaptive), the sequential retrieval bound
(jaxpid.core.sequential) and sweeps with a target standard error — against the items' solo
results and the Gaussian mixtures' exact answers."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from jaxpid.core.adaptive import SlotItem, per_item_rounds, stack_results
from jaxpid.core.config import EstimatorConfig
from jaxpid.core.estimator import _COMPILED, FusedPass, information
from jaxpid.core.ground_truth import canonical_case
from jaxpid.core.sampling import StratifiedSampler
from jaxpid.core.sequential import look_alpha, sequential_choice
from jaxpid.errors import ConfigError

ROUND = 8  # samples per round (the stratified sampler's 4 strata divide it)


def _items(case, n_images: int, seed: int = 0):
    pairs, x = case.sample(jax.random.key(seed), n_images)
    conds = np.stack([case.subset_log_weights(*p) for p in pairs]).astype(np.float32)  # (I, 4, M)
    base = jax.random.key(42)
    keys = [jax.random.fold_in(base, i) for i in range(n_images)]
    return [SlotItem(i, x[i], conds[i], keys[i]) for i in range(n_images)], x, conds, keys


def test_slot_refill_gives_each_item_its_solo_result_in_one_compiled_program(compilations):
    """Items stop at different rounds (their own standard errors); each equals one pass of its own
    samples with its own key, alone — whatever slot and round it ran in."""
    case = canonical_case("UNQ")
    items, x, conds, keys = _items(case, 7)
    sampler = StratifiedSampler(strata=4)
    fused = FusedPass(case.denoiser, n_samples=ROUND, sampler=sampler, chunk_size=4)
    target = 0.35

    def done(tag, res):
        return float(res.stderr_standard[0].max()) <= target

    rounds = []
    programs = len(_COMPILED)
    finished = list(per_item_rounds(fused, items, slots=3, done=done, max_samples=6 * ROUND, on_round=rounds.append))
    assert len(_COMPILED) == programs + 1, "one fused program for every round and refill"
    others, *_ = _items(case, 5, seed=1)
    with compilations() as count:  # another run of the shape, other items: nothing compiles at all
        assert len(list(per_item_rounds(fused, others, slots=3, done=done, max_samples=6 * ROUND))) == 5
    assert count[0] == 0
    assert sorted(tag for tag, _ in finished) == list(range(7))
    used = {tag: res.config["rounds"] for tag, res in finished}
    assert len(set(used.values())) > 1, f"items should stop at different rounds: {used}"
    # every round costs one run of the program: slots x samples x conditionings (+ chunk padding)
    assert rounds[-1]["evaluations"] == len(rounds) * rounds[0]["evaluations"] >= len(rounds) * 3 * ROUND * 4
    for tag, res in finished:
        stopped = res.config["stopped"]
        assert (stopped == "target reached") == (res.stderr_standard[0].max() <= target)
        alone = information(case.denoiser, x[tag:tag + 1], conds[tag:tag + 1], key=keys[tag][None],
                            n_samples=used[tag] * ROUND, sampler=sampler, conds_per_image=True, chunk_size=4)
        np.testing.assert_allclose(res.mi_standard, alone.mi_standard, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(res.stderr_orthogonal, alone.stderr_orthogonal, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(res.logsnr, alone.logsnr, rtol=1e-6)
    # other slot counts share rounds and spare slots differently: each item's result is the same
    wider = dict(per_item_rounds(fused, items, slots=5, done=done, max_samples=6 * ROUND))
    for tag, res in finished:
        assert wider[tag].config["rounds"] == used[tag]
        np.testing.assert_allclose(wider[tag].mi_orthogonal, res.mi_orthogonal, rtol=1e-5, atol=1e-6)
    # results with the same samples stack into one (the rows of a batch are built from them)
    same = [res for _, res in finished if res.config["rounds"] == used[finished[0][0]]]
    stacked = stack_results(same)
    assert stacked.mi_standard.shape[0] == len(same)
    with pytest.raises(ConfigError, match="different numbers of samples"):
        stack_results([res for _, res in finished])


def test_rounds_need_strata_that_divide_them_and_a_cap_of_one_round():
    case = canonical_case("RDN")
    items, *_ = _items(case, 2)
    fused = FusedPass(case.denoiser, n_samples=10, sampler=StratifiedSampler(strata=4))
    with pytest.raises(ConfigError, match="strata"):
        list(per_item_rounds(fused, items, slots=2, done=lambda t, r: True, max_samples=20))
    fused = FusedPass(case.denoiser, n_samples=8, sampler=StratifiedSampler(strata=4))
    with pytest.raises(ConfigError, match="below the samples of one round"):
        list(per_item_rounds(fused, items, slots=2, done=lambda t, r: True, max_samples=4))


def test_the_sequential_bound_errs_less_often_than_its_confidence_allows():
    """Two "captions" (y1 = 0, y1 = 1) and the empty reference on images of the mixture: the
    exact answer is the conditioning of larger exact log-density. Among the items the bound
    decides, the share chosen wrongly stays within 1 − confidence (binomial slack), and the
    bound decides most items well before the cap."""
    case = canonical_case("UNQ", std=0.9)
    n_images, confidence = 160, 0.9
    _, x = case.sample(jax.random.key(3), n_images)
    conds = np.stack([case.single_source_log_weights(0, 0), case.single_source_log_weights(0, 1),
                      case.subset_log_weights(0, 0)[0]]).astype(np.float32)  # (3, M): captions, then ""
    exact = np.stack([case.exact_single_source_information(x, 0, v) for v in (0, 1)], axis=1)
    truth = exact.argmax(axis=1)
    base = jax.random.key(7)
    items = [SlotItem(i, x[i], conds, jax.random.fold_in(base, i)) for i in range(n_images)]
    fused = FusedPass(case.denoiser, n_samples=ROUND, sampler=StratifiedSampler(strata=4), reference=2, chunk_size=8)
    cap = 16 * ROUND

    def decided(tag, res):
        look = res.samples_standard.shape[1] // ROUND
        return sequential_choice(res, [0, 1], confidence=confidence, look=look)[1]

    results = dict(per_item_rounds(fused, items, slots=16, done=decided, max_samples=cap))
    by_bound = [i for i, r in results.items() if r.config["stopped"] == "target reached"]
    wrong = [i for i in by_bound
             if sequential_choice(results[i], [0, 1], confidence=confidence, look=1)[0] != truth[i]]
    alpha = 1 - confidence
    n = len(by_bound)
    assert n >= n_images // 2, f"the bound should decide most items: {n} of {n_images}"
    assert len(wrong) <= alpha * n + 3 * np.sqrt(alpha * (1 - alpha) * n), (len(wrong), n)
    samples = np.mean([r.samples_standard.shape[1] for r in results.values()])
    assert samples < cap / 2, f"mean samples {samples} of a cap of {cap}"


def test_alpha_spending_sums_to_the_error_allowed():
    total = sum(look_alpha(k, 0.99) for k in range(1, 200_000))
    assert total == pytest.approx(0.01, rel=1e-4) and total < 0.01
    with pytest.raises(ConfigError):
        look_alpha(0, 0.99)
    with pytest.raises(ConfigError):
        look_alpha(1, 1.0)


def test_estimator_config_target_runs_what_it_records():
    """FusedPass.from_config keeps a config's target: what is recorded is what runs."""
    case = canonical_case("RDN")
    config = EstimatorConfig(n_samples=ROUND, sampler=StratifiedSampler(strata=4), target_stderr=0.5, max_samples=32)
    fused = FusedPass.from_config(case.denoiser, config)
    assert fused.target_stderr == 0.5 and fused.max_samples == 32


# ---------------------------------------------------------------------------------------------
# Sweeps with a target standard error


@pytest.fixture(scope="module")
def tiny(sd1_pixel_pipeline):
    return sd1_pixel_pipeline


def _jobs() -> list[dict]:
    return [{"prompt": f"a {c} {t} on the beach", "sources": [c, t], "seed": s}
            for c in ("red", "blue") for t in ("car", "dog") for s in range(2)]


def test_a_sweep_to_a_target_gives_each_job_its_solo_rows_and_resumes_to_the_same_table(tiny, tmp_path):
    """Jobs stop at their own rounds; each job's rows equal a fixed-N sweep of that job alone at
    its number of samples; a run killed mid-way (some parts written) resumes to the same table."""
    from jaxpid.sweeps import SweepConfig, SweepStore, read_sweep, run_sweep

    target = SweepConfig.from_options(n_samples=4, steps=2, batch_size=3, chunk_size=2, measures=("mmi",),
                                      forms=("anchored",), target_stderr=1e-9, max_samples=12)
    config = SweepConfig.from_options(n_samples=4, steps=2, batch_size=3, chunk_size=2, measures=("mmi",),
                                      forms=("anchored",), target_stderr=0.5, max_samples=12)
    jobs = _jobs()
    whole = run_sweep(tiny, jobs, tmp_path / "whole", config)
    assert whole.evaluations is not None and whole.evaluations > 0
    table = read_sweep(tmp_path / "whole").to_pylist()
    rounds = {r["job"]: r["rounds"] for r in table}
    assert {r["n_samples"] for r in table} == {4 * k for k in rounds.values()}
    assert len(set(rounds.values())) > 1, f"jobs should stop at different rounds: {rounds}"
    for row in table:  # the reported errors reached the target, or the cap was hit
        largest = max([row["joint_stderr"], *row["atoms_stderr"], *row["subset_stderr"], *row["conditional_stderr"]])
        assert largest <= 0.5 or row["n_samples"] == 12
    # the fixed-N sweep at a job's samples (same key fold_in(key, job), same strata): the same rows
    most = max(rounds.values())
    fixed = dataclasses.replace(config, estimator=EstimatorConfig(
        n_samples=4 * most, sampler=StratifiedSampler(strata=2), chunk_size=2, key=config.estimator.key))
    run_sweep(tiny, jobs, tmp_path / "fixed", fixed)
    reference = {r["job"]: r for r in read_sweep(tmp_path / "fixed").to_pylist()}
    for row in table:
        if rounds[row["job"]] == most:
            for name in ("joint", "atoms", "atoms_stderr", "subset_information", "conditional_stderr"):
                np.testing.assert_allclose(row[name], reference[row["job"]][name], rtol=1e-5, atol=1e-7)
    # resume: drop one part (as if killed before writing it) and run again
    store = SweepStore(tmp_path / "whole")
    part = sorted(store.parts().items())[-1][1]
    part.unlink()
    again = run_sweep(tiny, jobs, tmp_path / "whole", config)
    assert len(again.computed) == 1 and again.skipped == len(whole.computed) - 1
    assert read_sweep(tmp_path / "whole").to_pylist() == table
    # a target no job reaches: every job runs to the cap
    run_sweep(tiny, jobs[:3], tmp_path / "capped", target)
    assert {r["n_samples"] for r in read_sweep(tmp_path / "capped").to_pylist()} == {12}


def test_sequential_retrieval_and_a_localization_target_through_the_cli(tmp_path, capsys):
    """`study retrieve --sequential` records each item's rounds and whether the bound decided it,
    and the evaluations against the fixed-N run's; `study localize --target-stderr` gives each item
    its own samples. Bad combinations are refused before any model work."""
    import json

    import pyarrow.parquet as pq

    from jaxpid.cli import main

    out = tmp_path / "retrieve"
    assert main(["study", "retrieve", "demo", "--n-per-group", "2", "--samples", "8", "--sequential",
                 "--max-samples", "32", "--batch-size", "4", "--chunk-size", "8", "--no-progress",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "decided by the bound" in printed and "UNet evaluations vs" in printed
    summary = json.loads((out / "summary.json").read_text())
    rows = pq.read_table(out / "items.parquet").to_pylist()
    assert summary["evaluations"] == sum(r["n_samples"] * (r["n_captions"] + 1) for r in rows)
    assert summary["evaluations_fixed"] == sum(32 * (r["n_captions"] + 1) for r in rows)
    assert summary["sequential"]["decided_by_bound"] == sum(r["decided"] for r in rows)
    for r in rows:
        assert r["n_samples"] == 8 * r["rounds"] and (r["decided"] or r["n_samples"] == 32)
    assert summary["config"]["sequential"]["confidence"] == 0.99

    out = tmp_path / "localize"
    assert main(["study", "localize", "demo", "--n", "4", "--samples", "4", "--target-stderr", "0.05",
                 "--max-samples", "12", "--methods", "cmi", "--batch-size", "2", "--chunk-size", "4",
                 "--no-progress", "--out", str(out)]) == 0
    rows = pq.read_table(out / "items.parquet").to_pylist()
    assert all(r["n_samples"] in (4, 8, 12) for r in rows)
    assert all(max(r["cmi_stderr"], r["mi_stderr"]) <= 0.05 or r["n_samples"] == 12 for r in rows)

    for bad, message in ((["--confidence", "0.9"], "give --sequential"),
                         (["--sequential", "--target-stderr", "0.1"], "choose one")):
        assert main(["study", "retrieve", "demo", *bad, "--out", str(tmp_path / "bad")]) == 2
        assert message in capsys.readouterr().err and not (tmp_path / "bad").exists()
