"""The studies' figures (returned, not saved: ``jaxpid.io.studies.save_study`` saves them).

- intervention: the scatter of each job's information against its image change, and examples
  (original, edited, change map, information map);
- retrieval: accuracy per group with its interval and the chance level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np


def _interval(ci) -> str:
    lo, hi = ci if ci is not None else (float("nan"), float("nan"))
    return f"[{lo:.2f}, {hi:.2f}]"


def intervention_scatter(information: Sequence[float], change: Sequence[float], summary: Mapping, *,
                         groups: Sequence[str | None] | None = None, xlabel: str = "i(x; word | rest), nats",
                         ylabel: str = "image change (mean squared difference per pixel)"):
    """Image-level information vs change, one point per job (coloured by group), with r and its CI."""
    x, y = np.asarray(information, float), np.asarray(change, float)
    fig, ax = plt.subplots(figsize=(6.0, 4.6))
    labels = list(groups) if groups is not None else [None] * len(x)
    for name in sorted(set(labels), key=str):
        keep = np.array([g == name for g in labels])
        ax.scatter(x[keep], y[keep], s=18, alpha=0.75, label=str(name) if name is not None else None)
    if len(set(labels)) > 1:
        ax.legend(fontsize=8, title="group")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"Pearson r = {summary['pearson_image']:.2f} {_interval(summary.get('pearson_image_ci'))}, "
                 f"Spearman ρ = {summary['spearman_image']:.2f}; {summary['n_items']} jobs", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def intervention_examples(examples: Sequence[Mapping]):
    """One row per job: original, edited, change map, information map (upsampled bilinearly for
    display only).

    Each example: ``original``, ``edited`` (H, W, 3) uint8, ``change`` (H, W), ``information``
    (h, w), ``title`` and ``information_label``.
    """
    rows = max(1, len(examples))
    fig, axes = plt.subplots(rows, 4, figsize=(11.0, 2.9 * rows + 0.4), squeeze=False)
    for r, example in enumerate(examples):
        height, width = example["original"].shape[:2]
        extent = (0, width, height, 0)
        panels = [("original", example["original"], {}), ("edited", example["edited"], {}),
                  ("change (squared difference)", example["change"], {"cmap": "magma", "vmin": 0}),
                  (example.get("information_label", "information"), example["information"],
                   {"cmap": "magma", "vmin": 0, "interpolation": "bilinear"})]
        for c, (title, value, style) in enumerate(panels):
            ax = axes[r, c]
            artist = ax.imshow(value, extent=extent, **{"interpolation": "nearest", **style})
            if value.ndim == 2:
                fig.colorbar(artist, ax=ax, fraction=0.046, pad=0.02)
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(example["title"], fontsize=8, rotation=0, ha="right", va="center", labelpad=6)
    for ax in axes[len(examples):].ravel():
        ax.set_visible(False)
    fig.suptitle("Prompt intervention: same initial noise, one word edited", fontsize=10)
    fig.tight_layout()
    return fig


def retrieval_bars(groups: Mapping[str, Mapping], overall: Mapping, chance: float):
    """Accuracy per group (lowest-NLL choice and orthogonal-MI choice) with 95 % Wilson intervals,
    the overall accuracy and the chance level."""
    names = list(groups) + ["all"]
    records = [groups[n] for n in groups] + [overall]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(names) + 2), 4.2))
    for offset, key, label in ((-0.2, "accuracy", "lowest NLL"), (0.2, "accuracy_mi", "largest i(x; caption)")):
        values = np.array([r.get(key, np.nan) for r in records], float)
        cis = np.array([r.get(f"{key}_ci") or (np.nan, np.nan) for r in records], float)
        errors = np.abs(np.stack([values - cis[:, 0], cis[:, 1] - values]))
        ax.bar(x + offset, values, 0.4, yerr=errors, capsize=3, label=label, edgecolor="black", linewidth=0.5)
    ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance {chance:.2f}")
    ax.set_xticks(x, [f"{n}\n(n={r.get('n_items', 0)})" for n, r in zip(names, records)], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (95 % Wilson interval)")
    ax.set_title("Caption choice by the diffusion model's likelihood", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
