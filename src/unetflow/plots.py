"""Every figure unetflow draws, and the display choices they share (one intensity stretch,
bare axes). Matplotlib's object API only (no pyplot state), so that figures can be drawn in
worker processes and tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

CELL_COLOURS = {
    "female / normal": "tab:orange",
    "female / abnormal": "tab:red",
    "male / normal": "tab:cyan",
    "male / abnormal": "tab:blue",
}


def _display(image: np.ndarray) -> np.ndarray:
    """`image` scaled to [0, 1] between its 1st and 99th percentiles (constant: zeros)."""
    lo, hi = np.percentile(image, [1, 99])
    if not hi > lo:
        return np.zeros_like(image, dtype=np.float64)
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0)


def _bare(ax: Any) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def occlusion_figure(group: str, cases: list[dict[str, Any]]) -> Figure:
    """Rows best / worst image of `group`; columns the input with the truth outlined, and the
    occlusion map (loss increase) overlaid on it. Each case: id, case, iou, image, truth, map."""
    if not cases:
        fig = Figure(figsize=(4, 1.5))
        fig.text(0.5, 0.5, f"no test images in group '{group}'", ha="center", va="center")
        return fig
    fig = Figure(figsize=(7.5, 3.4 * len(cases)), layout="constrained")
    axes = fig.subplots(len(cases), 2, squeeze=False)
    for row, case in enumerate(cases):
        grey = _display(case["image"])
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
            _bare(ax)
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
    panels = [("input", _display(image), "gray"), ("prediction", probability, "gray")]
    panels.append(("ground truth", (truth > 0).astype(np.float32), "gray"))
    panels += [(label, m, "viridis") for label, m in maps.items()]
    ncols = min(4, len(panels))
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(3 * ncols, 3 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (title, data, cmap) in zip(axes, panels, strict=False):
        ax.imshow(data, cmap=cmap)
        ax.set_title(title)
        _bare(ax)
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
