"""The output layer: the only module that writes result files.

A run's directory holds ``result.json`` (every image-level value with its standard error in
nats and bits, the full configuration, model identity, versions), ``maps.npz`` (all maps at
latent resolution), the image(s) and a panel PNG. It is written into a temporary sibling
directory and renamed into place at the end, so an interrupted or failed run leaves nothing
partial behind.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from jaxpid.errors import ConfigError

NATS_TO_BITS = 1.0 / np.log(2.0)
_PACKAGES = ("jaxpid", "jax", "jaxlib", "flax", "numpy", "transformers", "safetensors")


def environment() -> dict:
    """Package versions, Python, platform and devices: saved with every result."""
    import jax

    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "devices": [f"{d.platform}:{d.device_kind}" for d in jax.devices()],
    }


def check_output_dir(out: Path, overwrite: bool = False) -> Path:
    """Refuse to mix a new run into an old one; call before any expensive work."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out} is not empty; choose a new directory or pass --overwrite")
    return out


def _value(nats: float, stderr: float | None = None) -> dict:
    record = {"nats": float(nats), "bits": float(nats * NATS_TO_BITS)}
    if stderr is not None:
        record["stderr_nats"] = float(stderr)
        record["stderr_bits"] = float(stderr * NATS_TO_BITS)
    return record


def pid_record(analysis) -> dict:
    """The JSON record of a prompt PID (see module docstring)."""
    res = analysis.result
    baseline = _baseline(analysis)
    rows = []
    for i in range(len(analysis.images.latents)):
        rows.append({
            "image": _image_name(analysis.images.origin, i),
            "atoms": {
                name: {"label": analysis.atom_label(name), **_value(res.atoms[name][i], res.atoms_stderr[name][i])}
                for name in res.names
            },
            "subset_information": {
                prompt: _value(res.subset_information[i, b], res.subset_stderr[i, b])
                for b, prompt in enumerate(analysis.subsets.prompts)
            },
            "joint_information": _value(res.joint[i], res.subset_stderr[i, -1]),
            **({} if res.conditional_information is None else {"conditional_information": {
                f"{s.word} | other sources": _value(res.conditional_information[i, j], res.conditional_stderr[i, j])
                for j, s in enumerate(analysis.subsets.sources)
            }}),
            **({} if baseline is None else {"baseline_redundancy": {
                "pixels": int(baseline[0][i].sum()),
                "iou_with_redundancy_map": _float_or_none(baseline[1][i]),
                "definition": "MI/CMI maps of the two sources thresholded at mean + 1.5 std, intersected "
                              "(DiffusionPID App. 6.5); IoU with the redundancy map thresholded the same way",
            }}),
        })
    return {
        "kind": "pid",
        "level": res.level,
        "level_meaning": "sum of the pixel map (nats per image)" if res.level == "sum" else "mean of the pixel map (nats per latent pixel)",
        "measure": res.measure,
        "form": res.form,
        "results": rows,
        "config": analysis.config,
        "timings_s": analysis.timings,
    }


def mi_record(info) -> dict:
    rows = []
    for i in range(len(info.images.latents)):
        rows.append({
            "image": _image_name(info.images.origin, i),
            "mi_prompt": _value(info.mi[i], info.mi_stderr[i]),
            "cmi": {w.word: _value(info.cmi[i, j], info.cmi_stderr[i, j]) for j, w in enumerate(info.words)},
        })
    return {"kind": "mi", "results": rows, "config": info.config, "timings_s": info.timings}


def save_pid(analysis, out: Path, *, overwrite: bool = False) -> Path:
    from jaxpid.plots import pid_panel

    res = analysis.result
    arrays = {f"atom_{name}": res.atom_maps[name] for name in res.names}
    # (I, 2**k, h, w): per-pixel i(x; y_S | c) of every subset, bitmask order
    arrays["subset_maps"] = res.information.maps(res.form)[:, : 1 << res.k]
    arrays["latents"] = analysis.images.latents
    arrays["logsnr"] = res.information.logsnr
    baseline = _baseline(analysis)
    if baseline is not None:
        arrays["baseline_redundancy"] = baseline[0]
    return _write_run(out, pid_record(analysis), arrays, analysis.images.pixels, lambda: pid_panel(analysis), overwrite)


def save_mi(info, out: Path, *, overwrite: bool = False) -> Path:
    from jaxpid.plots import mi_panel

    arrays = {"mi_map": info.mi_map, "cmi_maps": info.cmi_maps, "latents": info.images.latents,
              "logsnr": info.information.logsnr}
    return _write_run(out, mi_record(info), arrays, info.images.pixels, lambda: mi_panel(info), overwrite)


def save_images(pixels: np.ndarray, paths: list[Path]) -> list[Path]:
    """Write uint8 images (I, H, W, 3) as PNG files, each atomically."""
    from PIL import Image

    if len(paths) != len(pixels):
        raise ConfigError(f"{len(pixels)} images but {len(paths)} file names")
    for image, path in zip(pixels, paths):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".png")
        os.close(fd)
        Image.fromarray(np.asarray(image)).save(tmp, format="PNG")
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    return [Path(p) for p in paths]


@contextlib.contextmanager
def staged_directory(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden sibling directory to fill; on success it replaces ``out``, on any error it
    is removed, so ``out`` is never left half-written."""
    out = check_output_dir(Path(out), overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it private; results are not
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _write_run(out: Path, record: dict, arrays: dict, pixels: np.ndarray, panel: Callable, overwrite: bool) -> Path:
    with staged_directory(out, overwrite) as staging:
        record = {
            "jaxpid_result": 1,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **record,
            "environment": environment(),
        }
        (staging / "result.json").write_text(json.dumps(record, indent=2, default=_json_default))
        np.savez_compressed(staging / "maps.npz", **{k: np.asarray(v) for k, v in arrays.items()})
        save_images(pixels, [staging / f"image_{i}.png" for i in range(len(pixels))])
        figure = panel()
        figure.savefig(staging / "panel.png", dpi=110)
        import matplotlib.pyplot as plt

        plt.close(figure)
    return Path(out)


def _baseline(analysis):
    """k = 2: the thresholded-intersection baseline and its IoU with the redundancy map."""
    from jaxpid.analysis import baseline_redundancy_map, mask_iou, threshold_map

    res = analysis.result
    if res.k != 2:
        return None
    maps = res.information.maps(res.form)
    baseline = baseline_redundancy_map(maps[:, 1], maps[:, 2])
    return baseline, mask_iou(baseline, threshold_map(res.atom_maps["{1}{2}"]))


def _float_or_none(x) -> float | None:
    return None if not np.isfinite(x) else float(x)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _image_name(origin: dict, i: int) -> dict:
    if "generated" in origin:
        return {"seed": origin["generated"]["seeds"][i], "file": f"image_{i}.png"}
    return {"source": origin.get("image"), "file": f"image_{i}.png"}


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
