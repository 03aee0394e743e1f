"""Figures: the image next to its information maps, on one shared, labelled colour scale, and
the bias report's bar chart and heat map. Figures are returned, not saved (``jaxpid.io.results``
saves them).

Maps stay at latent resolution; ``imshow(..., interpolation="bilinear")`` over the image's
extent upsamples them for display only. Signed quantities (PID atoms can be negative) use a
diverging colour map centred at 0 so a negative atom never looks like a small positive one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# The backend is left to matplotlib (Agg on a headless machine, inline in a notebook): the
# figures are saved with savefig and closed by the caller, and notebooks can show them.
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import Normalize, TwoSlopeNorm, is_color_like

MAX_PANELS = 8  # atoms per row; larger lattices show the largest atoms


def shared_norm(maps: Sequence[np.ndarray]) -> tuple[Normalize, str]:
    """One colour scale for all maps: diverging around 0 if any value is negative."""
    values = np.concatenate([np.ravel(m) for m in maps]) if maps else np.zeros(1)
    lo, hi = float(np.min(values)), float(np.max(values))
    if lo < 0:
        bound = max(abs(lo), abs(hi), 1e-12)
        return TwoSlopeNorm(vcenter=0.0, vmin=-bound, vmax=bound), "RdBu_r"
    return Normalize(vmin=0.0, vmax=max(hi, 1e-12)), "magma"


def map_panel(
    pixels: np.ndarray,
    maps: Sequence[Sequence[np.ndarray]],
    titles: Sequence[Sequence[str]],
    *,
    row_labels: Sequence[str],
    suptitle: str,
    colorbar_label: str = "nats per latent pixel",
):
    """A figure with one row per image: the image, then its maps (one shared colour scale).

    Args:
      pixels: (I, H, W, 3) uint8.
      maps: per image, a list of (h, w) maps.
      titles: per image, a title per map.
    """
    n_rows, n_maps = len(maps), max(len(m) for m in maps)
    norm, cmap = shared_norm([m for row in maps for m in row])
    fig, axes = plt.subplots(n_rows, n_maps + 1, figsize=(2.6 * (n_maps + 1) + 0.8, 3.0 * n_rows + 0.6), squeeze=False)
    height, width = pixels.shape[1:3]
    extent = (0, width, height, 0)
    image_artist = None
    for r in range(n_rows):
        axes[r, 0].imshow(pixels[r], extent=extent, interpolation="nearest")
        axes[r, 0].set_title(row_labels[r], fontsize=9)
        for c in range(n_maps):
            ax = axes[r, c + 1]
            if c < len(maps[r]):
                image_artist = ax.imshow(maps[r][c], extent=extent, interpolation="bilinear", norm=norm, cmap=cmap)
                ax.set_title(titles[r][c], fontsize=9)
            else:
                ax.set_visible(False)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.92, 0.95), h_pad=1.5)
    cax = fig.add_axes((0.93, 0.12, 0.015, 0.72))
    bar = fig.colorbar(image_artist, cax=cax)
    bar.set_label(colorbar_label)
    return fig


def pid_panel(analysis) -> "plt.Figure":
    """Image, then one map per PID atom (the largest ``MAX_PANELS`` atoms beyond k = 3)."""
    res = analysis.result
    names = list(res.names)
    if len(names) > MAX_PANELS:
        strength = {n: float(np.mean(np.abs(res.atoms[n]))) for n in names}
        names = sorted(names, key=lambda n: -strength[n])[:MAX_PANELS]
    unit = "nats" if res.level == "sum" else "nats/pixel"
    maps, titles, labels = [], [], []
    for i in range(len(analysis.images.pixels)):
        maps.append([res.atom_maps[n][i] for n in names])
        titles.append([f"{analysis.atom_label(n)}\n{res.atoms[n][i]:.3f} ± {res.atoms_stderr[n][i]:.3f} {unit}" for n in names])
        labels.append(analysis.images.label(i)[-28:])
    words = " + ".join(s.word for s in analysis.subsets.sources)
    kind = "conditional PID" if analysis.subsets.conditional else "PID"
    suptitle = (f"{kind} of {words} in “{analysis.subsets.prompt}” — {res.measure}, {res.form} form, "
                f"{res.config['n_samples']} log-SNR samples")
    if len(names) < len(res.names):
        suptitle += f" (largest {len(names)} of {len(res.names)} atoms)"
    return map_panel(analysis.images.pixels, maps, titles, row_labels=labels, suptitle=suptitle)


def mi_panel(info) -> "plt.Figure":
    """Image, the prompt's MI map, then each word's CMI map."""
    maps, titles, labels = [], [], []
    for i in range(len(info.images.pixels)):
        maps.append([info.mi_map[i]] + [info.cmi_maps[i, j] for j in range(len(info.words))])
        titles.append([f"MI(prompt)\n{info.mi[i]:.3f} ± {info.mi_stderr[i]:.3f} nats"] + [
            f"CMI({w.word} | rest)\n{info.cmi[i, j]:.3f} ± {info.cmi_stderr[i, j]:.3f} nats"
            for j, w in enumerate(info.words)
        ])
        labels.append(info.images.label(i)[-28:])
    return map_panel(info.images.pixels, maps, titles, row_labels=labels,
                     suptitle=f"Information of “{info.prompt}” and its words")


# ---------------------------------------------------------------------------------------------
# Bias reports (jaxpid.sweeps.BiasReport)


def bias_bar_chart(report, top: int = 15):
    """Grouped bars: normalised redundancy per attribute for the ``top`` most biased
    occupations of each group (error bars: Monte-Carlo standard errors)."""
    groups = report.groups()
    fig, axes = plt.subplots(len(groups), 1, figsize=(max(7.0, 0.55 * top + 2), 3.4 * len(groups)), squeeze=False)
    lookup = {(c["group"], c["row"], c["column"]): c for c in report.cells}
    for ax, group in zip(axes[:, 0], groups):
        rows = [r["row"] for r in report.ranking if r["group"] == group][:top]
        attributes = report.attributes(group)
        width = 0.8 / max(1, len(attributes))
        x = np.arange(len(rows))
        for a, attribute in enumerate(attributes):
            cells = [lookup.get((group, row, attribute)) for row in rows]
            values = [c["normalised"] if c else np.nan for c in cells]
            errors = [c["normalised_stderr"] if c else 0.0 for c in cells]
            colour = {"color": attribute} if is_color_like(attribute) else {}  # colour words draw in their colour
            ax.bar(x + (a - (len(attributes) - 1) / 2) * width, values, width, yerr=errors, capsize=2,
                   label=attribute, edgecolor="black", linewidth=0.5, **colour)
        ax.set_xticks(x, rows, rotation=45, ha="right")
        ax.set_ylabel("normalised redundancy")
        ax.set_title(f"{group}: {report.keys['row']}s ranked by bias (largest interaction first)")
        ax.legend(title=report.keys["column"], fontsize=8, ncols=min(4, len(attributes)))
        ax.set_ylim(0, 1.1 if report.normalisation["kind"] != "none" else None)
    fig.suptitle(f"Redundancy of {report.keys['column']} and {report.keys['row']} words "
                 f"({report.label}, min-max normalised over the {report.normalisation['kind']})", fontsize=10)
    fig.tight_layout()
    return fig


def bias_heatmap(report):
    """Occupations (rows, most biased first) × attributes (columns, grouped): normalised redundancy."""
    columns = [(g, a) for g in report.groups() for a in report.attributes(g)]
    order = list(dict.fromkeys(r["row"] for r in report.ranking))
    lookup = {(c["group"], c["row"], c["column"]): c["normalised"] for c in report.cells}
    grid = np.array([[lookup.get((g, row, a), np.nan) for g, a in columns] for row in order], float)
    fig, ax = plt.subplots(figsize=(2.0 + 0.75 * len(columns), 1.4 + 0.22 * len(order)))
    image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=np.nanmin(grid), vmax=np.nanmax(grid))
    ax.set_xticks(range(len(columns)), [f"{a}\n({g})" if len(report.groups()) > 1 else a for g, a in columns],
                  fontsize=8)
    ax.set_yticks(range(len(order)), order, fontsize=7 if len(order) > 40 else 9)
    if grid.size <= 400:
        for (i, j), value in np.ndenumerate(grid):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if value < 0.6 * np.nanmax(grid) else "black")
    fig.colorbar(image, ax=ax, label="normalised redundancy")
    ax.set_title(f"{report.label}: redundancy of {report.keys['column']} and {report.keys['row']}", fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Localization (jaxpid.studies.localize)


def localization_overlays(panels: Sequence[dict], methods: Sequence[str], suptitle: str):
    """One row per item: the image, its object mask, then per method the normalised map (upsampled
    to the mask's resolution) and its binarised mask at the held-out threshold, with the true mask's
    outline and the item's IoU.

    Args:
      panels: per item ``{"image": (H, W, 3) uint8 or float in [0, 1], "mask": (H, W) bool,
        "title": str, "maps": {method: (normalised (H, W), binary (H, W), iou)}}``.
    """
    n_rows, n_cols = max(1, len(panels)), 2 + 2 * len(methods)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.9 * n_cols, 2.1 * n_rows + 0.7), squeeze=False)
    for r, panel in enumerate(panels):
        image = np.asarray(panel["image"])
        image = image if image.dtype == np.uint8 else np.clip(image, 0, 1)
        height, width = image.shape[:2]
        extent = (0, width, height, 0)
        axes[r, 0].imshow(image, extent=extent, interpolation="nearest")
        axes[r, 0].set_ylabel(panel["title"], fontsize=7, rotation=0, ha="right", va="center")
        axes[r, 1].imshow(panel["mask"], extent=extent, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        for m, method in enumerate(methods):
            normalised, binary, iou = panel["maps"][method]
            ax_map, ax_bin = axes[r, 2 + 2 * m], axes[r, 3 + 2 * m]
            ax_map.imshow(normalised, extent=extent, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
            ax_bin.imshow(binary, extent=extent, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if np.any(panel["mask"]):  # the true mask's outline, pixel centres at (column + ½, row + ½)
                ax_bin.contour(np.arange(width) + 0.5, np.arange(height) + 0.5, np.asarray(panel["mask"], float),
                               levels=[0.5], colors="red", linewidths=0.8)
            ax_bin.set_xlabel(f"IoU {iou:.2f}", fontsize=7)
            if r == 0:
                ax_map.set_title(f"{method}\nmap", fontsize=8)
                ax_bin.set_title(f"{method}\nbinarised", fontsize=8)
        if r == 0:
            axes[r, 0].set_title("image", fontsize=8)
            axes[r, 1].set_title("object mask", fontsize=8)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    for ax in axes[len(panels):].ravel():
        ax.set_visible(False)
    fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout(rect=(0.12, 0, 1, 0.95))
    return fig


# ---------------------------------------------------------------------------------------------
# Word relations

_ATOM_KEYS = ("redundancy", "unique_1", "unique_2", "synergy")


def relation_shares(summary: dict):
    """The word-relations study's figure (``jaxpid.studies.words.summarise``): atom shares of
    the joint information by relation, one panel per (measure, form)."""
    relations = list(summary["relations"])
    cells = [m for r in summary["relations"].values() for m in r.items() if isinstance(m[1], dict)]
    measures = list(dict.fromkeys(measure for measure, _ in cells))
    forms = list(dict.fromkeys(form for _, by_form in cells for form in by_form))
    fig, axes = plt.subplots(len(measures), len(forms), figsize=(4.2 * len(forms), 2.8 * len(measures)),
                             squeeze=False, sharey="row")
    colours = {"redundancy": "#4c72b0", "unique_1": "#dd8452", "unique_2": "#55a868", "synergy": "#c44e52"}
    width = 0.8 / len(_ATOM_KEYS)
    for r, measure in enumerate(measures):
        for c, form in enumerate(forms):
            ax = axes[r, c]
            for a, key in enumerate(_ATOM_KEYS):
                means, errors = [], []
                for relation in relations:
                    share = summary["relations"][relation].get(measure, {}).get(form, {}).get("shares", {}).get(key)
                    means.append(np.nan if share is None else share["mean"])
                    errors.append(0.0 if share is None or not math.isfinite(share["stderr"]) else share["stderr"])
                ax.bar(np.arange(len(relations)) + (a - 1.5) * width, means, width, yerr=errors, capsize=2,
                       color=colours[key], label=key.replace("_", " "))
            ax.axhline(0, color="black", linewidth=0.6)
            ax.set_xticks(range(len(relations)), relations, fontsize=8)
            ax.set_title(f"{measure}, {form} form", fontsize=9)
            if c == 0:
                ax.set_ylabel("share of i(x; y1, y2)")
    axes[0, -1].legend(fontsize=7, loc="upper right")
    fig.suptitle("PID atoms as shares of the joint information, by word relation (mean over pairs ± s.e.)",
                 fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Monte-Carlo variance over log-SNR


def variance_profile_figure(panels: dict, proposal: str = "logistic"):
    """``jaxpid.bench.variance``'s figure: per data set (a column), the mean weighted integrand per
    log-SNR bin (top) and each bin's share of the Monte-Carlo variance (bottom, the proposal's
    mass per bin in grey), for the profiles given (objects with ``quantity``, ``edges``,
    ``proposal_mass``, ``mean``, ``variance_share``)."""
    names = list(panels)
    fig, axes = plt.subplots(2, len(names), figsize=(3.6 * len(names), 5.6), squeeze=False, sharex=True)
    for c, name in enumerate(names):
        top, bottom = axes[0, c], axes[1, c]
        profiles = panels[name]
        edges = profiles[0].edges
        centres, width = 0.5 * (edges[:-1] + edges[1:]), np.diff(edges)
        bottom.bar(centres, profiles[0].proposal_mass, width, color="0.85", label="proposal mass")
        for p in profiles:
            style = "--" if p.quantity.startswith("atom") else "-"
            top.plot(centres, p.mean, style, marker=".", linewidth=1, label=p.quantity)
            bottom.plot(centres, p.variance_share, style, marker=".", linewidth=1, label=p.quantity)
        top.axhline(0, color="black", linewidth=0.5)
        top.set_title(name, fontsize=9)
        bottom.set_xlabel("log-SNR α")
        if c == 0:
            top.set_ylabel("mean ½w·(…) per bin (nats)")
            bottom.set_ylabel("share of MC variance")
    axes[1, -1].legend(fontsize=6, loc="upper left")
    fig.suptitle(f"Where the estimate and its Monte-Carlo variance come from ({proposal} proposal)", fontsize=10)
    fig.tight_layout()
    return fig
