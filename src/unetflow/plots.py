"""Every figure unetflow draws, and the display choices they share (one intensity stretch,
bare axes). Matplotlib's object API only (no pyplot state), so that figures can be drawn in
worker processes and tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

CELL_COLOURS = {
    "female / normal": "tab:orange",
    "female / abnormal": "tab:red",
    "male / normal": "tab:cyan",
    "male / abnormal": "tab:blue",
}


def display_range(image: np.ndarray) -> np.ndarray:
    """`image` scaled to [0, 1] between its 1st and 99th percentiles (constant: zeros), in
    float64: the one intensity stretch of every figure that shows an input image."""
    image = np.asarray(image, dtype=np.float64)
    lo, hi = np.percentile(image, [1, 99])
    if not hi > lo:
        return np.zeros_like(image)
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0)


def bare_axes(ax: Any) -> None:
    """No ticks: the axes of an image panel."""
    ax.set_xticks([])
    ax.set_yticks([])


def occlusion_figure(group: str, cases: list[dict[str, Any]]) -> Figure:
    """Rows best / worst image of `group`; columns the input with the truth outlined, and the
    occlusion map (loss increase) overlaid on it. Each case: id, case, iou, image, truth, map."""
    if not cases:
        return notice(f"no test images in group '{group}'")
    fig = Figure(figsize=(7.5, 3.4 * len(cases)), layout="constrained")
    axes = fig.subplots(len(cases), 2, squeeze=False)
    for row, case in enumerate(cases):
        grey = display_range(case["image"])
        left, right = axes[row]
        left.imshow(grey, cmap="gray", vmin=0, vmax=1)
        left.contour(case["truth"] > 0, levels=[0.5], colors="lime", linewidths=0.8)
        left.set_ylabel(f"{case['case']}: {case['id']}\nIoU {case['iou']:.4f}")
        right.imshow(grey, cmap="gray", vmin=0, vmax=1)
        heat = case["map"]
        limit = float(np.abs(heat).max()) or 1.0
        shown = right.imshow(heat, cmap="magma", alpha=0.6, vmin=0, vmax=limit)
        fig.colorbar(shown, ax=right, shrink=0.8, label="loss increase")
        for ax in (left, right):
            bare_axes(ax)
        if row == 0:
            left.set_title("input, ground truth outlined")
            right.set_title("occlusion sensitivity")
    fig.suptitle(f"{group}: best and worst test image by IoU")
    return fig


def features_figure(
    sid: str,
    image: np.ndarray,
    truth: np.ndarray,
    probability: np.ndarray,
    maps: dict[str, np.ndarray],
) -> Figure:
    """Input, prediction (probability), ground truth, then the mean activation of every block
    (`maps`, resized to the image), one panel each."""
    panels = [("input", display_range(image), "gray"), ("prediction", probability, "gray")]
    panels.append(("ground truth", (truth > 0).astype(np.float32), "gray"))
    panels += [(label, m, "viridis") for label, m in maps.items()]
    ncols = min(4, len(panels))
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(3 * ncols, 3 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (title, data, cmap) in zip(axes, panels, strict=False):
        ax.imshow(data, cmap=cmap)
        ax.set_title(title)
        bare_axes(ax)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(f"{sid}: mean activation over channels of each block")
    return fig


def latent_figure(
    scores: np.ndarray, ratio: np.ndarray, labels: np.ndarray, cells: Sequence[str]
) -> Figure:
    """The first two principal components of the bottleneck activations, coloured by
    sex x finding (left) and by k-means cluster (right)."""
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    by_cell, by_cluster = fig.subplots(1, 2)
    x = scores[:, 0]
    y = scores[:, 1] if scores.shape[1] > 1 else np.zeros(len(scores))
    cells = np.asarray(cells)
    for cell in sorted(set(cells), key=lambda c: (c not in CELL_COLOURS, c)):
        chosen = cells == cell
        by_cell.scatter(x[chosen], y[chosen], s=12, label=cell, c=CELL_COLOURS.get(cell, "grey"))
    for cluster in range(int(labels.max()) + 1 if len(labels) else 0):
        chosen = labels == cluster
        by_cluster.scatter(x[chosen], y[chosen], s=12, label=f"cluster {cluster}")
    for ax, title in ((by_cell, "sex / finding"), (by_cluster, "k-means cluster")):
        ax.set_xlabel(f"PC 1 ({ratio[0]:.1%} of the variance)")
        if len(ratio) > 1:
            ax.set_ylabel(f"PC 2 ({ratio[1]:.1%} of the variance)")
        ax.set_title(f"bottleneck activations by {title}")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return fig


FP_COLOUR = (1.0, 0.0, 0.0)


FN_COLOUR = (0.0, 0.3, 1.0)


def error_overlay(image: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """RGB float image: the input in grey (scaled to its 1st-99th percentiles), false
    positives (pred and not truth) red, false negatives (truth and not pred) blue."""
    grey = display_range(image)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    pred, truth = np.asarray(pred) > 0, np.asarray(truth) > 0
    rgb[pred & ~truth] = FP_COLOUR
    rgb[truth & ~pred] = FN_COLOUR
    return rgb


def curves_figure(curves: dict[str, pd.DataFrame], where: Path) -> Figure:
    """One axis per logged curve (loss, val/dice, lr, ...; columns step, value) against the
    epoch step; a notice naming `where` when there are none."""
    if not curves:
        return notice(f"no DVCLive curves in {where}")
    ncols = min(3, len(curves))
    nrows = math.ceil(len(curves) / ncols)
    fig = Figure(figsize=(4 * ncols, 3 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (name, curve) in zip(axes, curves.items(), strict=False):
        ax.plot(curve["step"], curve["value"], marker="." if len(curve) < 30 else None)
        ax.set_title(name)
        ax.set_xlabel("step (epoch)")
        ax.grid(alpha=0.3)
    for ax in axes[len(curves) :]:
        ax.set_visible(False)
    return fig


def preflight_figure(rows: list[dict[str, Any]]) -> Figure:
    """One axis per dataset: each recipe's loss per step of the preflight (log scale), a cross
    where a loss was not finite."""
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    if not datasets:
        return notice("no preflight probes")
    fig = Figure(figsize=(5.5 * len(datasets), 3.6), layout="constrained")
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    for ax, dataset in zip(axes, datasets, strict=True):
        for r in (r for r in rows if r["dataset"] == dataset):
            losses = np.array([float(v) for v in r["losses"]])
            steps = np.arange(1, len(losses) + 1)
            finite = np.isfinite(losses)
            (line,) = ax.plot(steps[finite], losses[finite], lw=0.9, label=r["model"])
            if not finite.all():
                top = losses[finite].max() if finite.any() else 1.0
                ax.plot(steps[~finite][:1], [top], "x", ms=9, color=line.get_color())
        ax.set_yscale("log")
        ax.set_title(dataset)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return fig


def notice(text: str) -> Figure:
    """A small figure that only says `text` (a stand-in for a plot with no data)."""
    fig = Figure(figsize=(4, 1.5))
    fig.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    return fig


def age_figure(subgroups: pd.DataFrame, metric: str = "iou") -> Figure | None:
    """Group size against mean `metric` per age group (each point labelled with its group);
    None when the run has no age groups with images."""
    ages = subgroups[(subgroups["grouping"] == "age") & (subgroups["n"] > 0)]
    if ages.empty:
        return None
    fig = Figure(figsize=(5, 3.5), layout="constrained")
    ax = fig.subplots()
    ax.scatter(ages["n"], ages[metric])
    for _, row in ages.iterrows():
        ax.annotate(
            row["group"], (row["n"], row[metric]), textcoords="offset points", xytext=(4, 4)
        )
    ax.set_xlabel("images in the age group (test split)")
    ax.set_ylabel(f"mean {metric}")
    ax.set_title(f"{metric} by age group")
    ax.grid(alpha=0.3)
    return fig


def weight_map_figure(mask: np.ndarray, weights: np.ndarray, title: str = "") -> Figure:
    """A mask beside its weight map (with a colour bar), to check the map by eye."""
    fig = Figure(figsize=(9, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    left.imshow(np.asarray(mask) > 0, cmap="gray")
    left.set_title(f"mask {title}".strip())
    shown = right.imshow(weights, cmap="viridis")
    right.set_title("weight map w(x)")
    fig.colorbar(shown, ax=right, shrink=0.8)
    for ax in (left, right):
        bare_axes(ax)
    return fig


def examples_figure(examples: list[tuple[Any, ...]]) -> Figure:
    """A grid of original/augmented image+mask pairs; each example is (image, mask,
    augmented image, augmented mask, id, augmented id)."""
    n = max(1, len(examples))
    fig = Figure(figsize=(10, 2.6 * n), layout="constrained")
    axes = fig.subplots(n, 4, squeeze=False)
    titles = ("original image", "original mask", "augmented image", "augmented mask")
    for row, example in enumerate(examples):
        *arrays, sid, aid = example
        for col, array in enumerate(arrays):
            ax = axes[row, col]
            limits = {"vmin": 0, "vmax": 1} if col % 2 else {}
            ax.imshow(array, cmap="gray", interpolation="nearest", **limits)
            ax.set_title(f"{titles[col]}\n{aid if col >= 2 else sid}", fontsize=8)
    for ax in axes.flat:
        ax.set_axis_off()
    if not examples:
        axes[0, 0].text(0, 0.5, "no augmented pairs (copies = 0)", fontsize=10)
    return fig


def panels_figure(rows: list[tuple[str, str, float, np.ndarray, np.ndarray, np.ndarray]]) -> Figure:
    """One row per (label, id, Dice, image, truth, prediction); columns input, truth,
    prediction and errors (:func:`error_overlay`)."""
    if not rows:
        return notice("no test images to show")
    columns = ("input", "ground truth", "prediction", "errors (FP red, FN blue)")
    fig = Figure(figsize=(3 * len(columns), 3 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), len(columns), squeeze=False)
    for row, (label, sid, dice, image, truth, pred) in enumerate(rows):
        shown = (display_range(image), truth, pred, error_overlay(image, pred, truth))
        for col, (ax, data) in enumerate(zip(axes[row], shown, strict=True)):
            ax.imshow(data, cmap="gray", vmin=0, vmax=1)
            bare_axes(ax)
            if row == 0:
                ax.set_title(columns[col])
        axes[row][0].set_ylabel(f"{label}: {sid}\nDice {dice:.4f}")
    return fig


def shifts_figure(table: pd.DataFrame, labels: dict[str, str]) -> Figure:
    """Mean test Dice per acquisition shift (bars, with the 95 % confidence interval of the
    mean, 1.96 SD/√n), the clean Dice and the clean Dice − 0.02 as lines: a shift table
    (``id, shift, dice, ...``) at a glance."""
    stats = table.groupby("shift", sort=False)["dice"].agg(["mean", "std", "count"])
    clean = float(stats.loc["clean", "mean"])
    shifted = stats.drop(index="clean")
    half = 1.96 * shifted["std"].fillna(0.0) / np.sqrt(shifted["count"])
    fig = Figure(figsize=(7.5, 0.35 * len(shifted) + 1.9), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(shifted))
    ax.barh(y, shifted["mean"], xerr=half, color="tab:blue", alpha=0.8, capsize=2)
    ax.axvline(clean, color="black", linewidth=1.2, label=f"clean {clean:.3f}")
    ax.axvline(clean - 0.02, color="tab:red", linestyle="--", linewidth=1, label="clean − 0.02")
    ax.set_yticks(y, [labels.get(name, name) for name in shifted.index])
    ax.invert_yaxis()
    low = float(min((shifted["mean"] - half).min(), clean - 0.02))
    ax.set_xlim(max(0.0, low - 0.02), min(1.0, clean + 0.03))
    n = int(table["id"].nunique())
    ax.set_xlabel(f"test Dice (mean of {n} images, 95 % CI of the mean)")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    return fig


def comparison_figure(result: dict[str, Any]) -> Figure:
    """One row per metric of a comparison (``unetflow.comparison.compare``'s dict): left,
    each variant's mean with its 95 % CI; right, each pair's mean difference a − b with its
    CI, a zero line, filled where the difference holds up (Holm) and hollow where it does not."""
    metrics = list(result["metrics"])
    if not metrics or not result["variants"]:
        return notice("no variants to compare")
    rows = max(len(result["variants"]), len(result["pairs"]), 1)
    fig = Figure(figsize=(11, len(metrics) * (0.35 * rows + 1.4)), layout="constrained")
    axes = fig.subplots(len(metrics), 2, squeeze=False)
    for (means, diffs), metric in zip(axes, metrics, strict=True):
        _comparison_means(means, result, metric)
        _comparison_pairs(diffs, result, metric)
    return fig


def _interval_errors(centre: float, low: float | None, high: float | None) -> list[float]:
    """Distances from `centre` to an interval's bounds for errorbar (0 where it has none)."""
    return [0.0 if low is None else centre - low, 0.0 if high is None else high - centre]


def _comparison_means(ax: Any, result: dict[str, Any], metric: str) -> None:
    """Each variant's mean and 95 % CI of `metric`, in the comparison's order, top down."""
    variants = result["variants"]
    entries = [result["per_variant"][v][metric] for v in variants]
    for y, entry in enumerate(entries):
        errors = _interval_errors(entry["mean"], entry["ci_low"], entry["ci_high"])
        ax.errorbar(entry["mean"], y, xerr=np.array([errors]).T, fmt="o", capsize=3)
    ax.set_yticks(range(len(variants)), variants)
    ax.set_ylim(len(variants) - 0.5, -0.5)
    ax.set_title(f"{metric}: mean and 95 % CI ({result['metrics'][metric]} is better)")
    ax.grid(axis="x", alpha=0.3)


def _comparison_pairs(ax: Any, result: dict[str, Any], metric: str) -> None:
    """Each pair's mean difference a − b of `metric` with its CI and a zero line."""
    pairs = list(result["pairs"].values())
    if not pairs:
        ax.set_axis_off()
        return
    for y, pair in enumerate(pairs):
        entry = pair["metrics"][metric]
        errors = _interval_errors(entry["mean_diff"], entry["ci_low"], entry["ci_high"])
        face = "tab:red" if entry["significant"] else "white"
        ax.errorbar(
            entry["mean_diff"], y, xerr=np.array([errors]).T, fmt="o", capsize=3,
            color="tab:red", markerfacecolor=face,
        )  # fmt: skip
    ax.axvline(0.0, color="black", linewidth=1)
    ax.set_yticks(range(len(pairs)), [f"{p['a']} − {p['b']}" for p in pairs])
    ax.set_ylim(len(pairs) - 0.5, -0.5)
    better = "a better →" if result["metrics"][metric] == "higher" else "← a better"
    alpha = result["settings"]["alpha"]
    ax.set_title(f"{metric}: a − b, 95 % CI\n(filled: Holm p < {alpha})", fontsize="medium")
    ax.set_xlabel(better)
    ax.grid(axis="x", alpha=0.3)


def noise_figure(study: dict[str, Any]) -> Figure:
    """The noise study at a glance: one row per test metric, one column per model; each
    family a line from the clean run through its levels (mean ± SD over seeds) against the
    training labels' Dice, the clean run a dashed line (and a star at label Dice 1), and for
    Dice the labels' own Dice (y = x) as a dotted line: points above it beat their labels."""
    metrics, models = study["metrics"], study["models"]
    if not models:
        return notice("no models in the noise study")
    fig = Figure(figsize=(4.2 * len(models), 2.6 * len(metrics)), layout="constrained")
    axes = fig.subplots(len(metrics), len(models), squeeze=False)
    for row, metric in zip(axes, metrics, strict=True):
        for ax, model in zip(row, models, strict=True):
            _noise_axis(ax, study, model, metric)
    axes[0][0].legend(fontsize=7, frameon=False)
    return fig


def _noise_axis(ax: Any, study: dict[str, Any], model: str, metric: str) -> None:
    """One metric of one model: a line per family, the clean run and (Dice) y = x."""
    clean = study["clean"][model][metric]
    for family, by_level in study["runs"][model].items():
        # from the clean run down in label quality: levels need not follow it (bias: erosion
        # at level 1, dilation at level 3), and a line in level order would double back
        entries = sorted(by_level.values(), key=lambda e: -e["label_dice"]["mean"])
        x = [1.0, *(e["label_dice"]["mean"] for e in entries)]
        y = [clean, *(e[metric]["mean"] for e in entries)]
        ax.errorbar(
            x,
            y,
            xerr=[0.0, *(e["label_dice"]["sd"] for e in entries)],
            yerr=[0.0, *(e[metric]["sd"] for e in entries)],
            fmt="o-",
            capsize=2,
            label=family,
        )
    ax.axhline(clean, color="black", linestyle="--", linewidth=1, label="clean run")
    ax.plot([1.0], [clean], marker="*", color="black", markersize=9)
    if metric == "dice":
        low = min([*ax.get_xlim(), *ax.get_ylim()])
        ax.plot([low, 1.0], [low, 1.0], color="grey", linestyle=":", label="labels' Dice")
    ax.set_title(f"{model}: test {metric}", fontsize=9)
    ax.set_xlabel("Dice of the training labels", fontsize=8)
    ax.grid(alpha=0.3)
