"""Sweeps: job tables, fixed batches, resumable part files, shards, multi-process runners.

End-to-end runs use a tiny random pixel-space pipeline (no torch). The kill test starts a real
``jaxpid sweep`` process, SIGKILLs it once a part file exists, restarts it and compares the
table with an uninterrupted run; the multi-host (2 JAX processes) and Ray tests compare with a
one-process run and are slow (each process compiles the programs itself).
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.dataset
import pyarrow.parquet
import pytest

import jaxpid
from jaxpid.errors import ConfigError, PromptError
from jaxpid.sweeps import (
    SweepConfig,
    SweepStore,
    bias_data,
    bias_jobs,
    plan_batches,
    plan_sweep,
    read_jobs,
    read_sweep,
    run_sweep,
    shard_batches,
)

CONFIG = SweepConfig.from_options(n_samples=4, steps=2, batch_size=2, chunk_size=2, measures=("mmi", "ppid", "ccs"))
CLI_FAST = ["--samples", "4", "--steps", "2", "--batch-size", "2", "--chunk-size", "2", "--no-progress"]


def colour_jobs(n_seeds: int = 2, template: str = "a {colour} {thing} on the beach") -> list[dict]:
    """k = 2 jobs over the test tokenizer's words, with pass-through columns."""
    rows = []
    for colour in ("red", "blue"):
        for thing in ("car", "dog"):
            for seed in range(n_seeds):
                rows.append({"prompt": template.format(colour=colour, thing=thing), "sources": [colour, thing], "seed": seed,
                             "colour": colour, "thing": thing})
    return rows


@pytest.fixture(scope="module")
def folder(sd1_pixel_folder):
    return sd1_pixel_folder


@pytest.fixture(scope="module")
def pipeline(folder):
    return jaxpid.load_pipeline(folder)


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """A persistent compilation cache the sweep processes of these tests share."""
    return tmp_path_factory.mktemp("compile_cache")


@contextlib.contextmanager
def persistent_cache(path):
    """Save this process's compilations to ``path`` inside the block (then back as it was), so
    that the sweep processes started later load them instead of compiling."""
    from jax.experimental.compilation_cache import compilation_cache

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    before = {name: getattr(jax.config, name) for name in names}
    for name, value in zip(names, (str(path), 0.0, 0)):
        jax.config.update(name, value)
    compilation_cache.reset_cache()
    try:
        yield
    finally:
        for name, value in before.items():
            jax.config.update(name, value)
        compilation_cache.reset_cache()


@pytest.fixture(scope="module")
def reference(pipeline, tmp_path_factory, compile_cache):
    """An uninterrupted one-process sweep over colour_jobs(): 8 jobs, 4 batches."""
    out = tmp_path_factory.mktemp("reference") / "sweep"
    with persistent_cache(compile_cache):
        run_sweep(pipeline, colour_jobs(), out, CONFIG)
    return read_sweep(out)


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------------------------------------
# Job tables and batches (no model)


def test_job_tables_read_alike_from_jsonl_csv_parquet_and_rows(tmp_path):
    rows = [
        {"prompt": "a red car on the beach", "sources": ["red", "car"], "seed": 3, "occupation": "x", "template": 0},
        {"prompt": "a photo of a woman doctor", "sources": ["woman", "doctor"], "seed": 4, "occupation": "y",
         "template": 1, "conditional": True},
    ]
    _write_jsonl(tmp_path / "jobs.jsonl", rows)
    table = pa.Table.from_pylist([{**r, "conditional": r.get("conditional", False)} for r in rows])
    pyarrow.parquet.write_table(table, tmp_path / "jobs.parquet")
    csv_rows = [{**r, "sources": " ".join(r["sources"]), "conditional": str(r.get("conditional", False)).lower()}
                for r in rows]
    pyarrow.csv.write_csv(pa.Table.from_pylist(csv_rows), tmp_path / "jobs.csv")

    read = [read_jobs(tmp_path / name) for name in ("jobs.jsonl", "jobs.csv", "jobs.parquet")] + [read_jobs(rows)]
    assert all(r.jobs == read[0].jobs for r in read)
    assert len({r.digest for r in read}) == 1
    assert read[0].jobs[1].conditional and not read[0].jobs[0].conditional
    assert read[0].extras.column_names == ["occupation", "template"]
    both = read_jobs(rows, analysis="both")  # rows without a 'conditional' value give PID and CPID jobs
    assert [(j.row, j.conditional) for j in both.jobs] == [(0, False), (0, True), (1, True)]


@pytest.mark.parametrize(
    "row, error, message",
    [
        ({"prompt": "a red car", "sources": ["red", "boat"]}, PromptError, "row 2: source word 'boat' is not in the prompt"),
        ({"sources": ["red"]}, ConfigError, "row 2: needs a non-empty 'prompt'"),
        ({"prompt": "a red car", "sources": ["red", "car"], "seed": -1}, ConfigError, "row 2: seed"),
        ({"prompt": "a red car", "sources": ["red", "car"], "log_prior": [0.5, -1]}, ConfigError, "row 2: log_prior"),
        ({"prompt": "a red car", "sources": ["red", "car"], "alternatives": {"blue": ["x"]}}, ConfigError,
         "alternatives given for ['blue']"),
    ],
)
def test_bad_rows_are_named(row, error, message):
    with pytest.raises(error, match=None) as info:
        read_jobs([{"prompt": "a red car", "sources": ["red", "car"]}, row])
    assert message in str(info.value)


def test_job_table_files_name_the_line_a_fault_is_on(tmp_path):
    """1-based file lines, as the studies' manifests name them (a blank line still counts)."""
    good = json.dumps({"prompt": "a red car", "sources": ["red", "car"]})
    path = tmp_path / "jobs.jsonl"
    path.write_text(good + "\n\n" + "{not json\n")
    with pytest.raises(ConfigError, match="jobs.jsonl line 3: not valid JSON"):
        read_jobs(path)
    path.write_text(good + "\n" + json.dumps({"prompt": "a red car", "sources": ["red", "boat"]}) + "\n")
    with pytest.raises(PromptError, match="jobs.jsonl line 2: source word 'boat'"):
        read_jobs(path)
    csv = tmp_path / "jobs.csv"
    csv.write_text('prompt,sources,seed\n"a red car","red car",0\n"a red car","red car",-1\n')
    with pytest.raises(ConfigError, match="jobs.csv line 3: seed"):
        read_jobs(csv)


def test_sweep_level_checks_name_the_job():
    model = {"name": "m", "fingerprint": "f", "dtype": "float32"}
    with pytest.raises(ConfigError, match="'k'.* names of result columns"):
        plan_sweep([{"prompt": "a red car", "sources": ["red", "car"], "k": 1}], CONFIG, model)
    with pytest.raises(ConfigError, match="imin' needs alternatives .* job 0"):
        plan_sweep([{"prompt": "a red car", "sources": ["red", "car"]}], SweepConfig.from_options(measures=("imin",)), model)
    with pytest.raises(ConfigError, match="job 0 .*ppid"):
        plan_sweep([{"prompt": "a red car on the beach", "sources": ["red", "car", "beach"]}], CONFIG, model)


def test_batches_are_fixed_slices_by_shape_and_shards_partition_them():
    rows = colour_jobs(1) + [{"prompt": "a red car on the beach", "sources": ["red", "car", "beach"], "seed": s}
                             for s in range(3)] + colour_jobs(1)[:1]
    table = read_jobs(rows)
    config = SweepConfig.from_options(batch_size=2, measures=("mmi",))
    batches = plan_batches(table, config)
    assert [(b.k, b.jobs) for b in batches] == [(2, (0, 1)), (2, (2, 3)), (2, (7,)), (3, (4, 5)), (3, (6,))]
    assert plan_batches(read_jobs(rows), config) == batches
    shards = [shard_batches(batches, (i, 3)) for i in range(3)]
    assert sorted(b.index for s in shards for b in s) == list(range(5))
    assert [b.index for b in shards[1]] == [1, 4]
    imin = SweepConfig.from_options(batch_size=2, measures=("imin",))
    alt = read_jobs([{**r, "alternatives": {r["sources"][0]: ["blue"], r["sources"][1]: ["dog", "man"]}}
                     for r in colour_jobs(1)[:2]] + [{**colour_jobs(1)[2], "alternatives": [["red"], ["cat"]]}])
    assert [b.candidates for b in plan_batches(alt, imin)] == [(1, 1), (1, 2)]


def test_bias_preset_data_and_jobs():
    data = bias_data()
    occupations = data["occupations"]
    assert len(occupations) == 188 and len(set(occupations)) == 188
    assert all(o.isalpha() and o == o.lower() for o in occupations)
    assert data["attributes"] == {"gender": ["male", "female"], "ethnicity": ["caucasian", "black", "asian", "hispanic"]}
    rows = bias_jobs()
    assert len(rows) == 188 * 6
    assert {"prompt": "a photo of an asian doctor", "sources": ["asian", "doctor"], "seed": 42, "occupation": "doctor",
            "attribute": "asian", "group": "ethnicity", "template": 0} in rows
    table = read_jobs(rows)  # every prompt resolves its two source words
    assert len(table) == 188 * 6 and table.extras.column_names == ["occupation", "attribute", "group", "template"]
    assert len(bias_jobs(occupations=["nurse"], templates=data["templates"], seeds=[0, 1])) == 6 * 4 * 2
    with pytest.raises(ConfigError, match="single words"):
        bias_jobs(occupations=["mail carrier"])


def test_a_changed_configuration_or_table_is_refused(tmp_path):
    model = {"name": "m", "fingerprint": "f", "dtype": "float32", "param_dtype": "float32", "attention": "auto"}
    store = SweepStore(tmp_path / "s")
    store.open(plan_sweep(colour_jobs(), CONFIG, model).manifest)
    store.open(plan_sweep(colour_jobs(), CONFIG, {**model, "name": "moved"}).manifest)  # same sweep: fine
    changed = SweepConfig.from_options(n_samples=8, steps=2, batch_size=2, chunk_size=2, measures=("mmi",))
    with pytest.raises(ConfigError) as info:
        store.open(plan_sweep(colour_jobs(), changed, model).manifest)
    assert "config.estimator.n_samples: 4 there, 8 now" in str(info.value)
    assert "config.decompositions: [{'measure': 'mmi'" in str(info.value)
    with pytest.raises(ConfigError, match="model.fingerprint: 'f' there, 'g' now"):
        store.open(plan_sweep(colour_jobs(), CONFIG, {**model, "fingerprint": "g"}).manifest)
    # every setting of the model's numerics is part of the sweep's identity
    for setting, value in (("dtype", "bfloat16"), ("param_dtype", "bfloat16"), ("attention", "xla")):
        with pytest.raises(ConfigError, match=f"model.{setting}: .* there, '{value}' now"):
            store.open(plan_sweep(colour_jobs(), CONFIG, {**model, setting: value}).manifest)
    with pytest.raises(ConfigError, match="another job table .*8 jobs .* 4 jobs"):
        store.open(plan_sweep(colour_jobs(1), CONFIG, model).manifest)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a sweep directory"):
        SweepStore(tmp_path / "other").open(plan_sweep(colour_jobs(), CONFIG, model).manifest)
    # a directory whose rows have another layout (an older jaxpid) is not mixed with new rows
    manifest = json.loads((tmp_path / "s" / "_sweep.json").read_text())
    (tmp_path / "s" / "_sweep.json").write_text(json.dumps({**manifest, "jaxpid_sweep": 1}))
    with pytest.raises(ConfigError, match="format 1 there, 3 now"):
        store.open(plan_sweep(colour_jobs(), CONFIG, model).manifest)


def test_cli_options_defaults_and_presets():
    from jaxpid.cli.parsers import build_parser
    from jaxpid.cli.sweeps import sweep_config

    parser = build_parser()

    def resolved(*argv):
        return sweep_config(parser.parse_args(["sweep", "bias", "--out", "x", *argv]))

    config = resolved()
    level = {d.level for d in config.decompositions}
    assert (config.measures, config.estimator.n_samples, level, config.prior) == (
        ("mmi", "ppid", "ccs"), 100, {"sum"}, "uniform")
    assert {d.form for d in config.decompositions} == {"anchored"}  # the default form
    config = resolved("--preset", "diffusionpid", "--samples", "8")
    level = {d.level for d in config.decompositions}
    assert (config.measures, config.estimator.n_samples, level, config.prior) == (
        ("ppid",), 8, {"mean"}, "bert:bert-base-uncased")
    config = resolved("--measure", "mmi", "ccs", "--form", "orthogonal", "standard")
    assert [(d.measure, d.form) for d in config.decompositions] == [
        ("mmi", "orthogonal"), ("mmi", "standard"), ("ccs", "orthogonal"), ("ccs", "standard")]
    with pytest.raises(ConfigError, match="n_samples"):
        resolved("--samples", "1")
    with pytest.raises(ConfigError, match="retired.*anchored"):  # the chain form is no more
        SweepConfig.from_options(forms=("chain",))


# ---------------------------------------------------------------------------------------------
# Running sweeps in this process


def test_rows_of_a_sweep(reference, tmp_path):
    table = reference
    assert table.num_rows == 8 * 3
    assert sorted(zip(table["job"].to_pylist(), table["measure"].to_pylist())) == [
        (j, m) for j in range(8) for m in sorted(("mmi", "ppid", "ccs"))]
    rows = table.to_pylist()
    for row in rows:
        assert row["atom_names"] == ["{1}{2}", "{1}", "{2}", "{12}"]
        assert np.isclose(sum(row["atoms"]), row["joint"], atol=1e-9)
        assert row["redundancy"] == row["atoms"][0] and row["synergy_stderr"] == row["atoms_stderr"][3]
        assert row["colour"] == row["sources"][0] and row["thing"] == row["sources"][1]
        assert row["subset_prompts"][0] == "" and row["fingerprint"] == rows[0]["fingerprint"]
        assert len(row["conditional_information"]) == 2 and len(row["conditional_stderr"]) == 2
    by_measure = {r["measure"]: r for r in rows if r["job"] == 0}
    mmi, ppid, ccs = by_measure["mmi"], by_measure["ppid"], by_measure["ccs"]
    assert mmi["redundancy"] == pytest.approx(min(mmi["subset_information"][1:3]))
    assert ppid["prior"] == "uniform" and ppid["redundancy"] == pytest.approx(max(ppid["subset_information"][1:3]))
    i, cond = ccs["subset_information"], ccs["conditional_information"]
    co = 0.5 * ((i[1] - cond[0]) + (i[2] - cond[1]))
    agree = np.sign(i[1]) == np.sign(i[2]) == np.sign(i[3]) == np.sign(co)  # anchored form: an i may be < 0
    assert ccs["form"] == "anchored" and ccs["redundancy"] == pytest.approx(co if agree else 0.0)
    assert ccs["conditional_information"] == mmi["conditional_information"]  # one pass for all measures


def test_a_row_is_the_pid_of_its_job(pipeline, reference):
    """The same numbers through the public API: generate, encode the subsets, jaxpid.pid with
    the job keys fold_in(key(0), job)."""
    from jaxpid.sd.ddim import generate
    from jaxpid.sd.prompts import subset_prompts

    jobs = colour_jobs()[2:4]  # batch 1
    images = generate(pipeline, [j["prompt"] for j in jobs], seeds=[j["seed"] for j in jobs], steps=2)
    conds = pipeline.encode_prompt([p for j in jobs for p in subset_prompts(j["prompt"], j["sources"], conditional=False).prompts])
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(np.array([2, 3], np.uint32))
    res = jaxpid.pid(pipeline.denoiser, images.latents, conds.reshape((2, 4) + conds.shape[1:]), key=keys, n_samples=4,
                     chunk_size=2, conds_per_image=True, measure="mmi")  # the sweep's default form, anchored
    rows = [r for r in reference.to_pylist() if r["job"] in (2, 3) and r["measure"] == "mmi"]
    for i, row in enumerate(rows):
        np.testing.assert_allclose(row["atoms"], [res.atoms[n][i] for n in res.names], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(row["conditional_information"], res.conditional_information[i], rtol=1e-6, atol=1e-9)
    ccs = jaxpid.decompose(res.information, 2, measure="ccs")
    rows = [r for r in reference.to_pylist() if r["job"] in (2, 3) and r["measure"] == "ccs"]
    for i, row in enumerate(rows):
        np.testing.assert_allclose(row["atoms"], [ccs.atoms[n][i] for n in ccs.names], rtol=1e-6, atol=1e-9)


def test_one_compilation_per_shape_and_resume_computes_only_missing(pipeline, reference, tmp_path, compilations):
    other = colour_jobs(template="the photo of a {colour} {thing}")  # new prompts, same k and batch shape
    with compilations() as count:
        run_sweep(pipeline, other, tmp_path / "other", CONFIG)
    assert count[0] == 0

    out = tmp_path / "resumed"
    run_sweep(pipeline, colour_jobs(), out, CONFIG, shard=(1, 2))
    assert SweepStore(out).done() == {1, 3}
    summary = run_sweep(pipeline, colour_jobs(), out, CONFIG)
    assert summary.computed == (0, 2) and summary.skipped == 2
    assert read_sweep(out).equals(reference)
    assert pyarrow.dataset.dataset(out).to_table().num_rows == 24  # _sweep.json is not read as data


def test_damaged_parts_are_named_set_aside_and_recomputed(pipeline, reference, tmp_path):
    """A truncated part, a part whose bytes changed and a deleted one: read_sweep names the bad
    part and how to repair it; the same sweep again sets it aside, computes those batches and
    ends with the uninterrupted table."""
    out = tmp_path / "sweep"
    run_sweep(pipeline, colour_jobs(), out, CONFIG)
    store = SweepStore(out)
    whole = store.part_path(0).read_bytes()
    store.part_path(0).write_bytes(whole[:3000])  # truncated
    changed = bytearray(store.part_path(1).read_bytes())
    changed[len(changed) // 2] ^= 0xFF  # one flipped byte: caught by the checksum whatever it hits
    store.part_path(1).write_bytes(bytes(changed))
    store.part_path(3).unlink()  # deleted
    with pytest.raises(ConfigError, match=r"part-000000.parquet: .*Run the same `jaxpid sweep`"):
        read_sweep(out)
    summary = run_sweep(pipeline, colour_jobs(), out, CONFIG)
    assert summary.computed == (0, 1, 3) and summary.skipped == 1
    assert [d.split(":")[0] for d in summary.damaged] == ["part-000000.parquet", "part-000001.parquet"]
    assert "checksum" in summary.damaged[1]
    assert sorted(p.name for p in (out / "_damaged").iterdir()) == ["part-000000.parquet", "part-000001.parquet"]
    assert read_sweep(out).equals(reference)
    with pytest.raises(ConfigError, match="no such sweep"):
        read_sweep(tmp_path / "missing")


def test_cli_bias_sweep_then_report(folder, reference, tmp_path, capsys):
    from jaxpid.cli import main

    out = tmp_path / "bias"
    assert main(["sweep", "bias", "--occupations", "doctor", "nurse", "--groups", "gender", "--seeds", "0",
                 "--model", str(folder), "--out", str(out), *CLI_FAST]) == 0
    assert "4 jobs in 2 batches" in capsys.readouterr().out
    table = read_sweep(out)
    assert sorted(set(table["prompt"].to_pylist())) == ["a photo of a female doctor", "a photo of a female nurse",
                                                        "a photo of a male doctor", "a photo of a male nurse"]
    assert set(table["group"].to_pylist()) == {"gender"} and table.num_rows == 4 * 3
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr().out
    assert "PID ccs redundancy" in printed and "doctor" in printed and "nurse" in printed
    assert main(["report", str(out), "--measure", "mmi", "--out", str(tmp_path / "report_mmi")]) == 0
    assert "PID mmi redundancy" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["bar_chart.png", "cells.csv", "heatmap.png",
                                                                      "ranking.csv"]
    assert main(["sweep", "bias", "--occupations", "doctor", "--model", str(folder), "--out", str(out), *CLI_FAST]) == 2
    assert "another job table" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Real processes


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "jaxpid.cli", *map(str, args)]


def _env(cache) -> dict:
    # The processes share a persistent compilation cache, so only the first one compiles.
    return {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def _assert_same_table(out, reference):
    table = read_sweep(out)
    keys = list(zip(table["job"].to_pylist(), table["measure"].to_pylist(), table["form"].to_pylist()))
    assert len(keys) == len(set(keys)) == reference.num_rows  # no duplicate, no missing row
    assert table.equals(reference)


@pytest.mark.e2e  # two `jaxpid sweep` processes; resume is also pinned in-process (test_adaptive, test_faults)
def test_a_killed_sweep_resumes_to_the_same_table(folder, reference, tmp_path, compile_cache):
    jobs = _write_jsonl(tmp_path / "jobs.jsonl", colour_jobs())
    out = tmp_path / "sweep"
    command = _cli("sweep", jobs, "--model", folder, "--out", out, *CLI_FAST)
    process = subprocess.Popen(command, env=_env(compile_cache), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while not SweepStore(out).done() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    output = process.communicate()[0].decode()
    finished_before_kill = SweepStore(out).done()
    assert process.returncode == -signal.SIGKILL, output
    assert 1 <= len(finished_before_kill) < 4, "the kill should land mid-way"

    done = subprocess.run(command, env=_env(compile_cache), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"{4 - len(finished_before_kill)} batches" in done.stdout and f"{len(finished_before_kill)} were done" in done.stdout
    _assert_same_table(out, reference)


@pytest.mark.slow
def test_two_jax_processes_give_the_one_process_table(folder, reference, tmp_path, compile_cache):
    jobs = _write_jsonl(tmp_path / "jobs.jsonl", colour_jobs())
    out = tmp_path / "sweep"
    port = 20000 + os.getpid() % 20000
    processes = [
        subprocess.Popen(_cli("sweep", jobs, "--model", folder, "--out", out, *CLI_FAST, "--backend", "distributed",
                              "--coordinator", f"localhost:{port}", "--num-processes", 2, "--process-id", i),
                         env=_env(compile_cache), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=900)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert "4 batches (8 jobs) computed now" in outputs[0] and "computed now" not in outputs[1]  # process 0 reports
    _assert_same_table(out, reference)


@pytest.mark.slow
def test_a_local_ray_runtime_gives_the_one_process_table(folder, reference, tmp_path, compile_cache):
    ray = pytest.importorskip("ray")
    from jaxpid.sd import ModelSpec
    from jaxpid.sweeps import run_sweep_ray

    workers = {k: v for k, v in _env(compile_cache).items() if k.startswith(("JAX_", "XLA_"))}
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": workers})
    try:
        summary = run_sweep_ray(ModelSpec(str(folder)), colour_jobs(), tmp_path / "sweep", CONFIG, max_retries=2)
    finally:
        ray.shutdown()
    assert summary.computed == (0, 1, 2, 3)
    _assert_same_table(tmp_path / "sweep", reference)
