"""Atomic writes: a file or a folder appears whole or not at all.

Every writer in jaxpid goes through here. A file is written to a hidden sibling, flushed to disk
and renamed into place; a folder is filled in a hidden sibling directory that replaces the
target at the end (``staged_directory``), so an interrupted run never leaves half a result.
New files and folders get the usual permissions (0o666 / 0o777 minus the umask).

One writer per output folder: ``check_output_dir`` takes an exclusive lock on a hidden file
beside the folder (``.NAME.lock``, an OS lock, released when the process ends however it ends),
so a second run into the same ``--out`` fails at once naming the first; holding it, it removes
the staging folders a killed run left, and it proves the folder can be written before any
expensive work starts.

``JAXPID_TEST_WRITE_DELAY_S`` (a number of seconds, unset outside tests) makes every file write
wait that long before its rename: the fault-injection tests (tests/test_faults.py) use it to
interrupt a run while it writes. Unset, it does nothing.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import io as stdlib_io  # (this package is jaxpid.io; this is the standard library's)
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from jaxpid.errors import ConfigError, OutputBusyError

WRITE_DELAY_ENV = "JAXPID_TEST_WRITE_DELAY_S"  # seconds each file write waits (tests only; see above)


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_file(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (text is UTF-8) to ``path`` atomically: hidden sibling, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        _test_write_delay()
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def _test_write_delay() -> None:
    delay = os.environ.get(WRITE_DELAY_ENV)
    if delay:
        time.sleep(float(delay))


def npz_bytes(compressed: bool = False, **arrays) -> bytes:
    """Arrays as the bytes of an ``.npz`` file (``np.load`` reads them back)."""
    buffer = stdlib_io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    return buffer.getvalue()


@contextlib.contextmanager
def temporary_folder(prefix: str = "jaxpid-") -> Iterator[Path]:
    """A private scratch folder, removed with everything in it when the block ends."""
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        yield Path(folder)


def write_json(path: str | Path, value: Any) -> Path:
    return write_file(path, json.dumps(value, indent=2, default=json_default) + "\n")


def write_files(folder: str | Path, files: Mapping[str, bytes | str]) -> Path:
    """Write several files (relative path -> content) into ``folder``, each atomically."""
    folder = Path(folder)
    for name, data in files.items():
        write_file(folder / name, data)
    return folder


def append_lines(path: str | Path, lines: list[str]) -> Path:
    """Append whole lines to a log-like file (results tables): one write, flushed to disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(line.rstrip("\n") + "\n" for line in lines))
        handle.flush()
        os.fsync(handle.fileno())
    return path


def make_directory(path: str | Path) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def move_aside(path: str | Path, folder: str | Path) -> Path | None:
    """Move a damaged file into ``folder`` (kept for inspection, out of the way of readers);
    None if another process moved it first."""
    path, folder = Path(path), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target, n = folder / path.name, 1
    while target.exists():
        target, n = folder / f"{path.stem}.{n}{path.suffix}", n + 1
    try:
        os.replace(path, target)
    except FileNotFoundError:
        return None
    return target


def remove_file(path: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def remove_folder(path: str | Path) -> None:
    """Remove a folder jaxpid wrote (old checkpoints), whole."""
    shutil.rmtree(path)


_HELD: dict[Path, int] = {}  # output folder -> the open lock file this process holds


def lock_output(out: str | Path) -> Path:
    """Hold the exclusive lock of output folder ``out`` for the rest of this process (or until
    ``release_output``); a no-op when this process holds it already.

    Raises:
      OutputBusyError: another process holds it (the message names it).
      ConfigError: the folder's parent cannot be created or written.
    """
    out = Path(out).absolute()
    if out in _HELD:
        return out
    lock = out.parent / f".{out.name}.lock"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~umask())
    except OSError as error:
        raise ConfigError(f"--out {out}: cannot write in {out.parent} ({error.strerror or error})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "unknown"
        os.close(fd)
        raise OutputBusyError(f"--out {out} is being written by another jaxpid run ({holder}); wait for it to "
                              "finish or choose another --out") from None
    os.ftruncate(fd, 0)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    os.write(fd, f"pid {os.getpid()}, started {started}: {' '.join(sys.argv[:3])}\n".encode())
    _HELD[out] = fd
    return out


def holds_output(out: str | Path) -> bool:
    """Whether this process holds the lock of ``out`` or of a folder containing it."""
    out = Path(out).absolute()
    return any(out == held or held in out.parents for held in _HELD)


def release_output(out: str | Path) -> None:
    """Give up the lock of ``out`` (the process's end does so too)."""
    out = Path(out).absolute()
    fd = _HELD.pop(out, None)
    if fd is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(out.parent / f".{out.name}.lock")
        os.close(fd)


def release_all_outputs() -> None:
    """Give up every output lock this process holds (the ``jaxpid`` command does at its end)."""
    for out in list(_HELD):
        release_output(out)


def check_output_dir(out: str | Path, overwrite: bool = False) -> Path:
    """Before any expensive work: take ``out``'s lock (one writer per folder), remove staging
    folders a killed run left beside it, refuse to mix a new run into an old one, and prove the
    place can be written (a blocked or read-only ``--out`` fails now, not after the compute)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    lock_output(out)
    for stale in out.parent.glob(f".{glob_escape(out.name)}.*"):
        if stale.is_dir():  # a staging folder: ours come later, so this one is a dead run's
            shutil.rmtree(stale, ignore_errors=True)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out} is not empty; choose a new directory or pass --overwrite")
    try:
        with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent):
            pass
    except OSError as error:
        raise ConfigError(f"--out {out}: cannot write in {out.parent} ({error.strerror or error})") from None
    return out


def check_output_files(out: str | Path, folder: bool) -> Path:
    """Before any expensive work, for a command that writes files *into* an existing or new folder
    (``folder``) or *as* one file (``jaxpid generate``): take the lock of ``out`` and prove the
    place can be written.

    Raises:
      OutputBusyError: another process writes ``out``.
      ConfigError: ``out`` is the wrong kind of thing, or its place cannot be written.
    """
    out = Path(out)
    if folder and out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    if not folder and out.is_dir():
        raise ConfigError(f"--out {out} is a directory; give a .png file name or a folder without the suffix")
    lock_output(out)
    place = out if folder else out.parent
    try:
        place.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(prefix=f".{out.name}.", dir=place):
            pass
    except OSError as error:
        raise ConfigError(f"--out {out}: cannot write in {place} ({error.strerror or error})") from None
    return out


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


@contextlib.contextmanager
def staged_directory(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden sibling directory to fill; on success it replaces ``out``, on any error it
    is removed, so ``out`` is never left half-written."""
    held_before = Path(out).absolute() in _HELD
    out = check_output_dir(Path(out), overwrite)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield staging
        os.chmod(staging, 0o777 & ~umask())  # mkdtemp makes it private; results are not
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if not held_before:  # a library call's own lock; a command's lock lasts its whole run
            release_output(out)


def write_folder(out: str | Path, files: Mapping[str, bytes | str], *, overwrite: bool = True) -> Path:
    """A whole folder (relative path -> content) written atomically: staged, then renamed."""
    with staged_directory(out, overwrite) as staging:
        write_files(staging, files)
    return Path(out)


def save_images(pixels: np.ndarray, paths: list[str | Path]) -> list[Path]:
    """Write uint8 images (I, H, W, 3) as PNG files, each atomically."""
    if len(paths) != len(pixels):
        raise ConfigError(f"{len(pixels)} images but {len(paths)} file names")
    for image, path in zip(pixels, paths):
        buffer = stdlib_io.BytesIO()
        Image.fromarray(np.asarray(image)).save(buffer, format="PNG")
        write_file(path, buffer.getvalue())
    return [Path(p) for p in paths]


def json_default(value):
    """JSON for numpy scalars and arrays, paths, and dataclass-like configs with ``to_dict``."""
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
