"""Fault injection for result folders (docs/architecture.md#writing-results): one writer per
--out, writability checked before compute, stale staging removed, clean interrupts."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxpid.cli.app import main
from jaxpid.errors import ConfigError, OutputBusyError
from jaxpid.io.atomic import (WRITE_DELAY_ENV, check_output_dir, lock_output, release_output, staged_directory,
                              write_file)

PROMPT = ["pid", "a red circle and a blue square", "--sources", "circle", "square"]


def _holder(out: Path) -> subprocess.Popen:
    """Another process that holds ``out``'s lock until killed."""
    code = ("import sys, time; from jaxpid.io.atomic import lock_output; lock_output(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_fails_at_once_naming_the_first(tmp_path, capsys):
    out = tmp_path / "run"
    holder = _holder(out)
    try:
        with pytest.raises(OutputBusyError, match=rf"pid {holder.pid}"):
            check_output_dir(out)
        t0 = time.perf_counter()
        assert main([*PROMPT, "--out", str(out)]) == 2  # before any model loads
        assert time.perf_counter() - t0 < 5
        assert "being written by another jaxpid run" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    # the lock dies with its process: the folder is free again
    check_output_dir(out)
    release_output(out)
    assert not (tmp_path / ".run.lock").exists()


def test_the_same_process_may_take_its_own_lock_again_and_library_writes_release_it(tmp_path):
    out = tmp_path / "run"
    lock_output(out)
    lock_output(out)  # held already: a no-op, not a deadlock
    release_output(out)
    with staged_directory(out) as staging:
        write_file(staging / "a.txt", "x")
    assert (out / "a.txt").read_text() == "x" and not (tmp_path / ".run.lock").exists()


@pytest.mark.parametrize("target", ["folder", "image.png"])
def test_generate_takes_the_lock_and_checks_its_place_before_the_model_loads(tmp_path, capsys, target):
    out = tmp_path / target
    holder = _holder(out)
    try:
        t0 = time.perf_counter()
        assert main(["generate", "a red circle", "--out", str(out)]) == 2
        assert time.perf_counter() - t0 < 5 and "being written by another jaxpid run" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    (tmp_path / "file").write_bytes(b"not a folder")
    blocked = tmp_path / "file" / target
    assert main(["generate", "a red circle", "--out", str(blocked)]) == 2
    assert "cannot write in" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["proc", "file"])
def test_an_unwritable_out_fails_before_the_compute(tmp_path, capsys, where):
    if where == "proc":
        out = Path("/proc/jaxpid-test/run")
        if os.geteuid() == 0 and not Path("/proc").exists():
            pytest.skip("no /proc here")
    else:
        (tmp_path / "file.png").write_bytes(b"not a folder")
        out = tmp_path / "file.png" / "sub"
    with pytest.raises(ConfigError, match="cannot write in"):
        check_output_dir(out)
    t0 = time.perf_counter()
    assert main([*PROMPT, "--out", str(out)]) == 2
    assert time.perf_counter() - t0 < 5 and "cannot write in" in capsys.readouterr().err


def test_a_killed_runs_staging_folder_is_removed_by_the_next_run(tmp_path):
    stale = tmp_path / ".run.k2j3h4"
    (stale / "part").mkdir(parents=True)
    (tmp_path / ".other.x1").mkdir()  # another folder's staging is not touched
    check_output_dir(tmp_path / "run")
    release_output(tmp_path / "run")
    assert not stale.exists() and (tmp_path / ".other.x1").exists()


# Where to interrupt `jaxpid pid`, read from the lines it prints on stderr (not a terminal: one
# line per stage and note): the stage line to wait for, the options, the environment.
STAGES = {
    # without --image the run generates first; no compilation cache: generating compiles for seconds
    "generation": ("generating 1 image(s)", ["--samples", "64"], {"JAXPID_CACHE_DIR": "off"}),
    # the fused pass's program is lowered and compiled for seconds once its stage line is out
    "compilation": ("4/5 fused pass:", ["--samples", "40000"], {"JAXPID_CACHE_DIR": "off"}),
    # running: the estimate line comes after the first chunks (40,000 samples take minutes)
    "fused pass": ("evaluations in", ["--samples", "40000"], {}),
    # writing the result folder, each file held back a second (jaxpid.io.atomic.WRITE_DELAY_ENV)
    "writing": ("writing results", ["--samples", "64"], {WRITE_DELAY_ENV: "1"}),
}


def _interrupt(tmp_path: Path, stage: str, signum: int) -> tuple[int, str, str, Path]:
    """Run `jaxpid pid`, send ``signum`` once ``stage``'s line is out; (exit code, stderr before
    the signal, stderr after it, --out)."""
    marker, options, env = STAGES[stage]
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "jaxpid.cli", *PROMPT, *options, "--out", str(out), "--seed", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "JAXPID_CPU_DEVICES": "1", **env},
                            # a shell runs background jobs with SIGINT ignored, and Python keeps that:
                            # give the child the default disposition a terminal's Ctrl-C meets
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    while not any(marker in line for line in seen) and proc.poll() is None:
        seen.append(proc.stderr.readline())
    deadline = time.perf_counter() + 10
    while stage == "writing" and not list(tmp_path.glob(".run.*/")) and time.perf_counter() < deadline:
        time.sleep(0.01)  # until the staging folder is there
    proc.send_signal(signum)
    _, after = proc.communicate(timeout=120)
    return proc.returncode, "".join(seen), after, out


# Each case starts a `jaxpid pid` process (~10 s here): the default tier keeps one per signal, the
# e2e tier (CI runs it after the default suite) the rest of the matrix.
_DEFAULT_CASES = {("fused pass", "SIGINT"), ("writing", "SIGTERM")}
_CASES = [pytest.param(stage, signum, code, id=f"{signum.name}-{stage}",
                       marks=() if (stage, signum.name) in _DEFAULT_CASES else pytest.mark.e2e)
          for signum, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)) for stage in STAGES]


@pytest.mark.parametrize("stage, signum, code", _CASES)
def test_an_interrupted_run_exits_with_one_line_and_leaves_nothing(tmp_path, stage, signum, code):
    returncode, before, after, out = _interrupt(tmp_path, stage, signum)
    assert returncode == code, (returncode, before[-2000:], after[-2000:])  # -11 would be a segfault
    assert STAGES[stage][0] in before and "Traceback" not in before + after
    if stage == "generation":  # still generating
        assert "encoding" not in before + after
    if stage == "compilation":  # interrupted before the first chunk had run
        assert "evaluations in" not in before + after
    # progress lines may still come out before the signal is handled; then exactly one line
    lines = [line for line in after.splitlines() if line.strip() and not line.startswith("[")]
    word = "terminated" if code == 143 else "interrupted"
    assert lines == [f"jaxpid pid: {word}; nothing half-written was left (committed parts are kept)"], after
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []  # no staging, no lock file


@pytest.mark.parametrize("stop, signum", [(KeyboardInterrupt, signal.SIGINT), ("terminated", signal.SIGTERM)])
def test_a_signal_dropped_in_a_gc_callback_is_sent_again(monkeypatch, stop, signum):
    """Python drops an exception raised in a gc callback (JAX has one): a Ctrl-C that lands there
    would be lost and the run go on. The command's unraisable hook sends the signal again."""
    import functools
    import gc

    from jaxpid.cli import app

    stop = app.Terminated if stop == "terminated" else stop
    monkeypatch.setattr(sys, "unraisablehook", functools.partial(app._stop_again, sys.unraisablehook))
    previous = signal.signal(signal.SIGTERM, app._terminate)
    raised = []

    def callback(phase, info):
        if not raised:
            raised.append(phase)
            raise stop()

    gc.callbacks.append(callback)
    try:
        with pytest.raises(stop):
            gc.collect()  # the exception is dropped here ...
            deadline = time.perf_counter() + 5
            while time.perf_counter() < deadline:  # ... and raised again here, outside the callback
                pass
        assert raised
    finally:
        gc.callbacks.remove(callback)
        signal.signal(signal.SIGTERM, previous)


def test_fp16_on_the_cpu_is_refused_before_the_model_loads(tmp_path, capsys):
    t0 = time.perf_counter()
    assert main([*PROMPT, "--dtype", "fp16", "--out", str(tmp_path / "run")]) == 2
    assert time.perf_counter() - t0 < 5 and "--dtype fp16" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_study_refuses_a_folder_holding_something_else(tmp_path):
    from jaxpid.studies.base import check_study_folder, run_study

    mixed = tmp_path / "quickstart"
    (mixed / "result.json").parent.mkdir()
    (mixed / "result.json").write_text("{}")  # a pid result
    with pytest.raises(ConfigError, match="holds no study"):
        run_study(None, mixed)  # refused before any plan or model is used
    check_study_folder(tmp_path / "new")  # absent: fine
    (tmp_path / "own" / "parts").mkdir(parents=True)
    (tmp_path / "own" / "parts" / "_sweep.json").write_text("{}")
    (tmp_path / "own" / "summary.json").write_text("{}")
    check_study_folder(tmp_path / "own")  # its own folder: resumed (the manifest is checked by the run)


# ---------------------------------------------------------------------------------------------
# Progress inside the fused pass


def _progress(chunks: int, first_s: float, each_s: float):
    """The PassProgress a pass of ``chunks`` reports: 0 (compiled), then every finished chunk."""
    from jaxpid.core.estimator import PassProgress

    yield PassProgress(0, chunks, 64 * chunks, 0.0)
    for done in range(1, chunks + 1):
        yield PassProgress(done, chunks, 64 * chunks, first_s + each_s * (done - 1), first_s)


def test_a_long_pass_in_a_log_gets_an_estimate_and_a_line_per_tenth(capsys):
    from jaxpid.cli.analysis import Stages

    stages = Stages(total=5)  # stderr is captured: not a terminal
    stages("fused pass: 1 image(s) x 6400 log-SNR samples x 4 conditionings")
    for progress in _progress(100, first_s=1.0, each_s=0.5):
        stages.chunk(progress)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line.split("] ", 1)[1].strip() for line in err.splitlines()]
    assert lines[1] == ("fused pass: 6,400 evaluations in 100 chunks; first chunk 1.00 s, then 0.50 s each -> "
                        "about 50 s")
    assert lines[2:] == [f"chunk {10 * t}/100, {_clock(0.5 * (100 - 10 * t))} left ({10 * t} %)" for t in range(1, 11)]
    # a short pass says nothing more than its stage line
    for progress in _progress(100, first_s=0.05, each_s=0.05):
        stages.chunk(progress)
    assert capsys.readouterr().err == ""


def _clock(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


def test_a_pass_on_a_terminal_shows_chunks_and_time_left_after_its_stage(monkeypatch):
    import io

    from jaxpid.cli.analysis import Stages

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    stages = Stages(total=5)
    stages("fused pass")
    for progress in _progress(100, first_s=1.0, each_s=0.5):
        stages.chunk(progress)
    shown = terminal.getvalue()
    assert "compiled, running 100 chunks" in shown
    assert "fused pass: 6,400 evaluations in 100 chunks" in shown  # the estimate, above the bar
    assert "chunk 1/100, 1:39 left" in shown and "chunk 100/100, 0:00 left" in shown  # 99 x the first chunk
    assert shown.count("chunk ") < 10  # redrawn at most every REDRAW_S, not per chunk
    stages("writing results")  # the next stage drops the pass's postfix
    assert terminal.getvalue().rstrip().endswith("writing results [00:00] 1/5")
    stages.close()


def test_the_cli_shows_progress_without_changing_a_number(tmp_path, capsys, monkeypatch):
    """`jaxpid pid` reports the fused pass's chunks (a program with a host callback); the same
    record run again by the library, reporting nothing, gives every number bit for bit."""
    from jaxpid.analysis.records import read_record, rerun
    from jaxpid.cli.analysis import Stages, compare_records
    from jaxpid.io.results import save_pid
    from jaxpid.sd.pipeline import ModelSpec

    from jaxpid.core import estimator

    shown = []
    chunk = Stages.chunk
    monkeypatch.setattr(Stages, "chunk", lambda self, progress: shown.append(progress) or chunk(self, progress))
    monkeypatch.setattr(estimator, "SCOPED_PROGRESS_MIN_EVALUATIONS", 0)  # this short pass reports too
    out = tmp_path / "cli"
    assert main([*PROMPT, "--samples", "32", "--chunk-size", "2", "--out", str(out)]) == 0
    capsys.readouterr()
    assert shown and shown[-1].chunks_done == shown[-1].chunks > 1
    again = rerun(out, ModelSpec("demo").load())  # no on_chunk, no report_chunks_to: the plain program
    assert compare_records(read_record(out), read_record(save_pid(again, tmp_path / "library"))) == []


# ---------------------------------------------------------------------------------------------
# Messages that name the input at fault


def test_a_job_with_one_source_word_is_told_sources_are_a_list_of_words(tmp_path, capsys):
    from jaxpid.sweeps.jobs import read_jobs

    table = tmp_path / "jobs.jsonl"
    table.write_text('{"prompt": "a red circle and a blue square", "sources": "circle"}\n')
    with pytest.raises(ConfigError, match=r"jobs.jsonl line 1: 'sources' must be a list of two or more words"):
        read_jobs(table)
    with pytest.raises(ConfigError, match=r"row 1: 'sources' must be a list of two or more words"):
        read_jobs([{"prompt": "a red circle", "sources": 5}])
    assert main(["sweep", str(table), "--out", str(tmp_path / "sweep"), "--samples", "8"]) == 2
    assert "list of two or more words" in capsys.readouterr().err and not (tmp_path / "sweep").exists()
    # words separated by spaces (a CSV cell) stay a list of words
    assert read_jobs([{"prompt": "a red circle", "sources": "red circle"}]).jobs[0].sources == ("red", "circle")


def test_a_job_without_a_seed_uses_the_documented_seed_0(tmp_path):
    from jaxpid.sweeps import jobs

    assert "without one uses seed 0" in " ".join(jobs.__doc__.split())
    read = jobs.read_jobs([{"prompt": "a red car", "sources": ["red", "car"]},
                           {"prompt": "a red car", "sources": ["red", "car"], "seed": None}])
    assert [j.seed for j in read.jobs] == [0, 0]
    with pytest.raises(ConfigError, match=r"row 1: seed must be an integer in 0..2\*\*32-1 \(0 when absent\)"):
        jobs.read_jobs([{"prompt": "a red car", "sources": ["red", "car"], "seed": "x"}])


def test_report_on_a_missing_folder_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"jaxpid report: error: {tmp_path / 'nope'}: no such sweep or study folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_truncated_image_in_a_manifest_is_found_before_the_model_loads(tmp_path, capsys, monkeypatch):
    import json

    import numpy as np
    from PIL import Image

    from jaxpid.errors import ImageReadError
    from jaxpid.sd.pipeline import ModelSpec
    from jaxpid.studies.localize_items import manifest_items

    rng = np.random.default_rng(0)
    lines = []
    for i in range(3):  # random pixels: a PNG that does not compress to nothing
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"image{i}.png")
        Image.fromarray((rng.random((32, 32)) > 0.5).astype(np.uint8) * 255).save(tmp_path / f"mask{i}.png")
        lines.append(json.dumps({"image": f"image{i}.png", "mask": f"mask{i}.png", "prompt": "a red circle",
                                 "word": "circle"}))
    data = (tmp_path / "image2.png").read_bytes()
    (tmp_path / "image2.png").write_bytes(data[: len(data) // 2])  # the header still reads: 32x32
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    with pytest.raises(ImageReadError, match=r"manifest.jsonl line 3: .*image2.png cannot be read as an image"):
        manifest_items(manifest)
    monkeypatch.setattr(ModelSpec, "load", lambda self: pytest.fail("the model was loaded"))
    out = tmp_path / "study"
    assert main(["study", "localize", str(manifest), "--out", str(out), "--samples", "8"]) == 2
    err = capsys.readouterr().err
    assert "line 3" in err and "truncated" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".study*"))  # no parts/_sweep.json, no lock or staging
