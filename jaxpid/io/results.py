"""Result folders of ``jaxpid pid`` / ``jaxpid mi``: written atomically, complete or absent.

A folder holds ``result.json`` (every image-level value with its standard error in nats and
bits, the run's full record — configuration with the estimator's key, prompt, images, model
identity — timings and provenance), ``maps.npz`` (all maps at latent resolution), the image(s)
and ``panel.png``. It is filled in a hidden sibling directory that is renamed into place at the
end, so an interrupted or failed run leaves nothing partial behind. ``result.json`` is enough to
run the analysis again (``jaxpid.analysis.rerun``).
"""

from __future__ import annotations

import datetime
import io as stdlib_io
import json
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from jaxpid.core.config import NATS_TO_BITS
from jaxpid.core.measures import decomposition_notes
from jaxpid.io.atomic import json_default, npz_bytes, save_images, staged_directory, write_file
from jaxpid.io.plots import mi_panel, pid_panel
from jaxpid.io.provenance import provenance_record

RESULT_FORMAT = 2  # 2: the record holds the run configuration ("run") and the estimator's key


CONSISTENCY_MEANING = (
    "sum over the word and its alternatives y' of p(y') exp(i(x; y' | c)), standard form, uniform p: 1 for a "
    "model whose predictions are those of one distribution when the alternatives are every option; above 1, "
    "the model's word-conditional predictions claim more information than its context-only prediction allows "
    "(docs/method.md#the-consistency-check)")


def value_record(nats: float, stderr: float | None = None) -> dict:
    """A value in nats and bits, with its standard error."""
    record = {"nats": float(nats), "bits": float(nats * NATS_TO_BITS)}
    if stderr is not None:
        record["stderr_nats"] = float(stderr)
        record["stderr_bits"] = float(stderr * NATS_TO_BITS)
    return record


def pid_record(analysis) -> dict:
    """The JSON record of a prompt PID (a ``jaxpid.analysis.PromptPID``)."""
    res = analysis.result
    baseline = analysis.baseline()
    fixed = analysis.fixed_atoms
    rows = []
    for i, name in enumerate(analysis.images.names()):
        rows.append({
            "image": name,
            "atoms": {
                atom: {"label": analysis.atom_label(atom), **value_record(res.atoms[atom][i], res.atoms_stderr[atom][i]),
                       **({"fixed_by": fixed[i][atom]} if atom in fixed[i] else {})}
                for atom in res.names
            },
            **({} if analysis.forms is None else {"forms": _forms_record(analysis, i)}),
            **({} if res.log_consistency is None else {"consistency": {
                s.word: {"alternatives": list(analysis.alternatives_of(j)),
                         "sum": float(np.exp(res.log_consistency[i, j])),
                         "log_sum_nats": float(res.log_consistency[i, j]),
                         "stderr_log_sum_nats": float(res.log_consistency_stderr[i, j])}
                for j, s in enumerate(analysis.subsets.sources)}}),
            "subset_information": {
                prompt: value_record(res.subset_information[i, b], res.subset_stderr[i, b])
                for b, prompt in enumerate(analysis.subsets.prompts)
            },
            "joint_information": value_record(res.joint[i], res.subset_stderr[i, -1]),
            **({} if res.conditional_information is None else {"conditional_information": {
                f"{s.word} | other sources": value_record(res.conditional_information[i, j], res.conditional_stderr[i, j])
                for j, s in enumerate(analysis.subsets.sources)
            }}),
            **({} if baseline is None else {"baseline_redundancy": {
                "pixels": int(baseline[0][i].sum()),
                "iou_with_redundancy_map": None if not np.isfinite(baseline[1][i]) else float(baseline[1][i]),
                "definition": "MI/CMI maps of the two sources thresholded at mean + 1.5 std, intersected "
                              "(DiffusionPID App. 6.5); IoU with the redundancy map thresholded the same way",
            }}),
        })
    return {
        "kind": "pid",
        "level": res.level,
        "level_meaning": "sum of the pixel map (nats per image)" if res.level == "sum"
        else "mean of the pixel map (nats per latent pixel)",
        "measure": res.measure,
        "form": res.form,
        "notes": decomposition_notes(res.measure, res.form),
        **({} if res.log_consistency is None else {"consistency_meaning": CONSISTENCY_MEANING}),
        "results": rows,
        "config": analysis.config,
        "timings_s": analysis.timings,
    }


def _forms_record(analysis, i: int) -> dict:
    """Image i's subset and conditional informations in every form from the same pass, and the
    quantities on which two forms disagree beyond their paired standard errors."""
    forms, words = analysis.forms, [s.word for s in analysis.subsets.sources]
    record = {form: {
        "subset_information": {prompt: value_record(forms.subset_information[form][i, b], forms.subset_stderr[form][i, b])
                               for b, prompt in enumerate(analysis.subsets.prompts)},
        "conditional_information": {f"{w} | other sources": value_record(forms.conditional_information[form][i, j],
                                                                          forms.conditional_stderr[form][i, j])
                                    for j, w in enumerate(words)},
    } for form in forms.forms}
    record["disagreements"] = [
        {"quantity": _quantity_name(d["quantity"], analysis.subsets.prompts, words), "forms": list(d["forms"]),
         "values_nats": list(d["values"]), "difference_nats": d["difference"], "paired_stderr_nats": d["stderr"]}
        for d in forms.disagreements if d["image"] == i]
    return record


def _quantity_name(quantity, prompts, words) -> str:
    kind, index = quantity
    return f"subset: {prompts[index]}" if kind == "subset" else f"{words[index]} | other sources"


def mi_record(info) -> dict:
    """The JSON record of a word-information analysis (a ``jaxpid.analysis.WordInformation``)."""
    rows = []
    for i, name in enumerate(info.images.names()):
        rows.append({
            "image": name,
            "mi_prompt": value_record(info.mi[i], info.mi_stderr[i]),
            "cmi": {w.word: value_record(info.cmi[i, j], info.cmi_stderr[i, j]) for j, w in enumerate(info.words)},
        })
    return {"kind": "mi", "results": rows, "config": info.config, "timings_s": info.timings}


def save_pid(analysis, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write a prompt PID's result folder (see the module docstring)."""
    res = analysis.result
    arrays = {f"atom_{name}": res.atom_maps[name] for name in res.names}
    # (I, 2**k, h, w): per-pixel i(x; y_S | c) of every subset, bitmask order
    arrays["subset_maps"] = res.subset_maps
    arrays["latents"] = analysis.images.latents
    arrays["logsnr"] = res.information.logsnr
    baseline = analysis.baseline()
    if baseline is not None:
        arrays["baseline_redundancy"] = baseline[0]
    return _write_run(out, pid_record(analysis), arrays, analysis.images.pixels, lambda: pid_panel(analysis), overwrite)


def save_mi(info, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write a word-information analysis' result folder."""
    arrays = {"mi_map": info.mi_map, "cmi_maps": info.cmi_maps, "latents": info.images.latents,
              "logsnr": info.information.logsnr}
    return _write_run(out, mi_record(info), arrays, info.images.pixels, lambda: mi_panel(info), overwrite)


def _write_run(out, record: dict, arrays: dict, pixels: np.ndarray, panel: Callable, overwrite: bool) -> Path:
    with staged_directory(out, overwrite) as staging:
        record = {
            "jaxpid_result": RESULT_FORMAT,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **record,
            "provenance": provenance_record(record["config"].get("model"), record["config"].get("estimator", {}).get("key")),
        }
        write_file(staging / "result.json", json.dumps(record, indent=2, default=json_default))
        write_file(staging / "maps.npz", npz_bytes(compressed=True, **arrays))
        save_images(pixels, [staging / f"image_{i}.png" for i in range(len(pixels))])
        write_figure(panel(), staging / "panel.png")
    return Path(out)


def write_figure(figure, path: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG (atomically) and close it."""
    buffer = stdlib_io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(figure)
    return write_file(path, buffer.getvalue())
