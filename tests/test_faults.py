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
from jaxpid.io.atomic import check_output_dir, lock_output, release_output, staged_directory, write_file

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


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_an_interrupted_run_exits_with_one_line_and_leaves_nothing(tmp_path, signum, code):
    out = tmp_path / "run"
    env = {**os.environ, "JAXPID_CPU_DEVICES": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "jaxpid.cli", *PROMPT, "--samples", "40000", "--out", str(out),
                             "--seed", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            # a shell runs background jobs with SIGINT ignored, and Python keeps that:
                            # give the child the default disposition a terminal's Ctrl-C meets
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []  # stderr is not a terminal: one line per stage; interrupt inside the fused pass
    while not any("fused pass" in line for line in seen) and proc.poll() is None:
        seen.append(proc.stderr.readline())
    time.sleep(1.5)  # compiling or running (40,000 samples take minutes)
    proc.send_signal(signum)
    stdout, rest = proc.communicate(timeout=120)
    stderr = "".join(seen) + rest
    assert proc.returncode == code, (proc.returncode, stderr[-2000:])
    assert "Traceback" not in stderr and ("terminated" if code == 143 else "interrupted") in stderr
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []  # no staging, no lock file


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
