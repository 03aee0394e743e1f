"""The intervention study's summary and figures (docs/studies.md#prompt-intervention).

Image level: Pearson's r (Fisher interval) and Spearman's ρ of each job's information against
its image change, across jobs. Pixel level: per job, Pearson's r between the information map
(upsampled bilinearly to the image) and the change map, then the mean over jobs with its
standard error. The same for the attention baseline (the word's cross-attention, from the same
fused pass) when the model's denoiser returns its attention maps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jaxpid.io.study_plots import intervention_examples, intervention_scatter
from jaxpid.studies.base import StudyRun, StudySummary, finite, throughput
from jaxpid.studies.intervention_jobs import ATOM_COLUMNS, ATTENTION_NOTE
from jaxpid.studies.stats import mean_and_stderr, pearson, ranks, spearman

CHANGE_UNITS = "mean over pixels of the squared difference summed over RGB, pixels in [0, 1]"
DISAGREEMENTS = 3  # jobs listed each way where the information's rank and the change's rank differ most


def correlations(x: Sequence[float], y: Sequence[float]) -> dict:
    """Pearson's r and Spearman's ρ of x and y with their 95 % intervals and n."""
    r, r_ci, n = pearson(x, y)
    rho, rho_ci, _ = spearman(x, y)
    return {"pearson": r, "pearson_ci": list(r_ci), "spearman": rho, "spearman_ci": list(rho_ci), "n": n}


def _level(columns: Mapping[str, list], keep: np.ndarray, predictor: str, pixel: str) -> dict:
    """The headline numbers over the jobs in ``keep``: image-level and mean pixel-level correlation."""
    x = np.asarray(columns[predictor], float)[keep]
    image = correlations(x, np.asarray(columns["change_pixel"], float)[keep])
    latent = correlations(x, np.asarray(columns["change_latent"], float)[keep])
    pixel_mean, pixel_se = mean_and_stderr(np.asarray(columns[pixel], float)[keep])
    return {
        "pearson_image": image["pearson"], "pearson_image_ci": image["pearson_ci"],
        "spearman_image": image["spearman"], "spearman_image_ci": image["spearman_ci"],
        "pearson_image_latent": latent["pearson"], "pearson_image_latent_ci": latent["pearson_ci"],
        "pearson_pixel_mean": pixel_mean, "pearson_pixel_stderr": pixel_se,
        "pearson_pixel_n": int(np.isfinite(np.asarray(columns[pixel], float)[keep]).sum()),
        "n_items": int(keep.sum()),
    }


def intervention_summary(rows: pa.Table) -> dict:
    """The study's numbers from its rows (``items.parquet``)."""
    c = rows.select([name for name in rows.column_names if name not in ("original", "edited", "change_pixel_map",
                                                                         "information_map", "change_latent_map")])
    c = c.to_pydict()
    n = len(c["item"])
    every = np.ones(n, bool)
    summary = _level(c, every, "information", "pearson_pixel")
    latent_mean, latent_se = mean_and_stderr(np.asarray(c["pearson_latent"], float))
    summary.update({
        "pearson_latent_mean": latent_mean, "pearson_latent_stderr": latent_se,
        "information": ("i(x; prompt | edited prompt): the word's CMI i(x; word | rest) for a deletion, the "
                        "information of the prompt against the replaced prompt for a replacement"),
        "change": CHANGE_UNITS,
        "edits": {kind: int(sum(e == kind for e in c["edit"])) for kind in ("delete", "replace")},
        "mean_information": mean_and_stderr(c["information"])[0],
        "mean_change_pixel": mean_and_stderr(c["change_pixel"])[0],
        "unchanged_images": int(sum(v == 0 for v in c["change_pixel"])),
    })
    cmi = correlations(c["cmi"], c["change_pixel"])
    summary.update({"pearson_image_cmi": cmi["pearson"], "pearson_image_cmi_ci": cmi["pearson_ci"],
                    "spearman_image_cmi": cmi["spearman"]})
    if summary["edits"]["delete"] and summary["edits"]["replace"]:
        summary["by_edit"] = {kind: _level(c, np.array([e == kind for e in c["edit"]]), "information", "pearson_pixel")
                              for kind in ("delete", "replace")}
    groups = sorted({g for g in c["group"] if g is not None})
    if groups:
        summary["groups"] = {g: _level(c, np.array([x == g for x in c["group"]]), "information", "pearson_pixel")
                             for g in groups}
    summary.update(_attention(c))
    summary["pid"] = _pid(c)
    summary["disagreements"] = _disagreements(c)
    return summary


ATTENTION_DEFINITION = ("the word's DAAM-style cross-attention map under the prompt (probabilities averaged over "
                        "heads, upsampled to the latent grid, summed over layers and the word's tokens), averaged "
                        "over the same log-SNR samples as the information, in the same fused pass; image level: "
                        "its sum over the latent grid (the word's attention mass); pixel level: the map "
                        "upsampled bilinearly to the image")


def _attention(c: Mapping[str, list]) -> dict:
    have = np.array([v is not None for v in c["attention"]])
    if not have.any():
        return {"attention": None, "attention_note": ATTENTION_NOTE}
    return {"attention": _level({k: [np.nan if x is None else x for x in v] if k in ("attention",
                                 "pearson_pixel_attention") else v for k, v in c.items()},
                                have, "attention", "pearson_pixel_attention"),
            "attention_note": ATTENTION_DEFINITION}


def _pid(c: Mapping[str, list]) -> dict | None:
    """How each PID atom of (word, source) correlates with the change (jobs with one source)."""
    keep = np.array([v is not None for v in c["redundancy"]])
    if not keep.any():
        return None
    change = np.asarray(c["change_pixel"], float)[keep]
    out = {"measure": next(m for m in c["measure"] if m is not None), "n_items": int(keep.sum()),
           "note": "atoms of (word, first source) given the rest of the prompt, from the subset informations "
                   "(items.parquet: subset_information); under mmi unique_word + synergy = i(x; both | rest) − "
                   "i(x; source | rest), the word's CMI in the standard form", "correlations": {}}
    for name in ATOM_COLUMNS:
        values = np.asarray([np.nan if v is None else v for v in c[name]], float)[keep]
        out["correlations"][name] = correlations(values, change)
        out[f"mean_{name}"] = mean_and_stderr(values)[0]
    return out


def _disagreements(c: Mapping[str, list]) -> dict:
    """The jobs where the information predicts the change worst: largest rank differences."""
    info, change = np.asarray(c["information"], float), np.asarray(c["change_pixel"], float)
    if info.size < 2:
        return {}
    gap = (ranks(change) - ranks(info)) / info.size
    order = np.argsort(gap, kind="stable")

    def describe(i: int) -> dict:
        return {"item": c["item"][i], "prompt": c["prompt"][i], "word": c["word"][i], "edit": c["edit"][i],
                "edited_prompt": c["edited_prompt"][i], "seed": c["seed"][i], "group": c["group"][i],
                "information": c["information"][i], "change_pixel": c["change_pixel"][i],
                "rank_gap": float(gap[i])}

    return {"changed_more_than_predicted": [describe(i) for i in order[::-1][:DISAGREEMENTS] if gap[i] > 0],
            "changed_less_than_predicted": [describe(i) for i in order[:DISAGREEMENTS] if gap[i] < 0]}


def example_panels(rows: pa.Table) -> list[dict]:
    """The jobs whose images the rows kept, as ``intervention_examples`` takes them."""
    out = []
    for row in rows.filter(pc.is_valid(rows["original"])).to_pylist():
        shape = tuple(row["image_shape"])
        title = f"“{row['prompt']}”\n−{row['word']}" + (f" +{row['replacement']}" if row["replacement"] else "")
        label = "i(x; word | rest)" if row["edit"] == "delete" else "i(x; prompt | edited)"
        out.append({
            "original": np.frombuffer(row["original"], np.uint8).reshape(shape),
            "edited": np.frombuffer(row["edited"], np.uint8).reshape(shape),
            "change": np.frombuffer(row["change_pixel_map"], np.float32).reshape(shape[:2]),
            "information": np.asarray(row["information_map"], np.float32).reshape(row["map_shape"]),
            "title": f"{title}\nseed {row['seed']}", "information_label": f"{label}: {row['information']:.2f} nats",
        })
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class InterventionSummary(StudySummary):
    """The intervention study's summary (``summary.json``'s keys: ``intervention_summary``'s, plus
    ``config``, ``jobs`` and ``run``), its ``scatter.png`` and ``examples.png``."""

    @property
    def pearson_image(self) -> float | None:
        """Image-level Pearson r of information against change across jobs."""
        return self.record.get("pearson_image")

    @property
    def pearson_pixel_mean(self) -> float | None:
        """Mean over jobs of the per-job pixel-level r."""
        return self.record.get("pearson_pixel_mean")

    def text(self) -> str:
        s = self.record
        lines = [f"{s['n_items']} jobs ({s['edits']['delete']} deletions, {s['edits']['replace']} replacements); "
                 "information vs image change:",
                 f"  image level: Pearson r = {_num(s['pearson_image'])} {_ci(s['pearson_image_ci'])}, "
                 f"Spearman rho = {_num(s['spearman_image'])} {_ci(s['spearman_image_ci'])}",
                 f"  pixel level: mean per-job r = {_num(s['pearson_pixel_mean'])} ± "
                 f"{_num(s['pearson_pixel_stderr'])} (s.e., {s['pearson_pixel_n']} jobs whose image changed)"]
        for name, g in (s.get("groups") or {}).items():
            lines.append(f"  {name:>10s}: n = {g['n_items']:3d}, r = {_num(g['pearson_image'])} "
                         f"{_ci(g['pearson_image_ci'])}, pixel r = {_num(g['pearson_pixel_mean'])} ± "
                         f"{_num(g['pearson_pixel_stderr'])}")
        a = s.get("attention")
        if a is None:
            lines.append(f"  attention baseline: none ({s.get('attention_note')})")
        else:
            lines.append(f"  attention baseline: image level r = {_num(a['pearson_image'])} {_ci(a['pearson_image_ci'])}, "
                         f"pixel level r = {_num(a['pearson_pixel_mean'])} ± {_num(a['pearson_pixel_stderr'])}")
        pid = s.get("pid")
        if pid:
            atoms = ", ".join(f"{k} r = {_num(v['pearson'])}" for k, v in pid["correlations"].items())
            lines.append(f"  PID atoms ({pid['measure']}, {pid['n_items']} jobs) vs change: {atoms}")
        for d in ((s.get("disagreements") or {}).get("changed_less_than_predicted") or [])[:1]:
            lines.append(f"  least change for its information: −{d['word']} in “{d['prompt']}” (seed {d['seed']}): "
                         f"{d['information']:.2f} nats, change {d['change_pixel']:.4f}")
        return "\n".join(lines)


def intervention_study_summary(rows: pa.Table, *, config: Mapping, jobs: Mapping,
                               run: StudyRun | None = None) -> InterventionSummary:
    """The study's summary from its rows, with the study's ``config``, its ``jobs`` record and the
    run's throughput, and its figures (the scatter of information against change, examples)."""
    summary = intervention_summary(rows)
    record = {**summary, "config": dict(config), "jobs": dict(jobs)}
    if run is not None and run.summary.jobs_computed:
        record["run"] = throughput(run)
    columns = rows.select(["information", "change_pixel", "group"]).to_pydict()
    figures = {"scatter": intervention_scatter(columns["information"], columns["change_pixel"], summary,
                                               groups=columns["group"]),
               "examples": intervention_examples(example_panels(rows))}
    return InterventionSummary("intervention", finite(record), tables={"items": rows}, figures=figures)


def _ci(values) -> str:
    return "[n/a]" if values is None or None in values else f"[{values[0]:.2f}, {values[1]:.2f}]"


def _num(value, fmt: str = ".2f") -> str:
    return "n/a" if value is None else format(value, fmt)
