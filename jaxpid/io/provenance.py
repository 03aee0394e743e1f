"""Where a number came from: the machine, the software, the model and the key.

``environment()`` is recorded with every result folder, sweep manifest and benchmark row, so a
number is never separated from the device, package versions and checkout it was made with.
``provenance_record()`` adds the model's identity (``Pipeline.identity()``) and the estimator's key.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

import jax

PACKAGES = ("jaxpid", "jax", "jaxlib", "flax", "numpy", "transformers", "safetensors", "pyarrow", "torch", "diffusers")
_CHECKOUT = Path(__file__).resolve().parents[2]  # the repository, when jaxpid runs from a clone


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    if not (_CHECKOUT / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, check=False, cwd=_CHECKOUT, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def environment() -> dict:
    """Devices, package versions, Python, platform, CPU, the git commit (from a clone), the load
    average and the time."""
    devices = jax.devices()
    commit = _git("rev-parse", "--short", "HEAD")
    return {
        "device": f"{devices[0].platform}:{devices[0].device_kind}",
        "n_devices": len(devices),
        "devices": [f"{d.platform}:{d.device_kind}" for d in devices],
        "versions": {name: _version(name) for name in PACKAGES},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "git_commit": commit,
        "git_dirty": None if commit is None else bool(_git("status", "--porcelain", "--untracked-files=no")),
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def provenance_record(model: dict | None = None, key: dict | None = None) -> dict:
    """environment() + the model's identity (``Pipeline.identity()``) + the estimator's key record."""
    return {"environment": environment(), "model": model, "estimator_key": key}
