"""What a trained U-Net looks at (the explain stage): occlusion sensitivity, the mean feature
map of every block and the clusters of the bottleneck activations, after the Shenzhen study.

Every function is deterministic on the CPU: the noise comes from ``seed``, k-means from
``seed``, and images are processed in a fixed order.

- **Occlusion sensitivity** (:func:`occlusion_map`): every ``patch`` x ``patch`` square
  (``stride`` px apart, the last one flush with the border) is replaced by the same square of
  one seeded Gaussian noise field (mean 0, ``noise_std``: the images are z-scored, so 1.0 has
  the data's spread), and the *training loss* of the model against the ground truth is
  recorded; the map holds, per pixel, the mean increase over the unoccluded image's loss of
  the patches covering it. ``batch_size`` occluded copies go through the network at once
  (channels-last memory format, about twice as fast on the CPU).
- **Feature maps** (:func:`block_activations`): the mean over channels of the output of every
  encoder block, the bottleneck and every decoder block (forward hooks on
  :func:`unet_blocks`), at each block's own resolution; :func:`resized` brings them to one
  size (``skimage.transform.resize``, bilinear).
- **Latent space** (:func:`latent_vectors`, :func:`pca`, :func:`kmeans`, :func:`latent_table`):
  the bottleneck output of every image, flattened; k-means (SciPy's ``kmeans2``, k-means++
  seeding from ``seed``) on the principal-component scores of *all* components, which keep
  every distance between the flattened vectors, so it is k-means on the activations at the
  cost of an n x n problem; clusters are numbered by size (largest first). The table of how
  sex x finding distribute over the clusters is the study's Table 4 layout.

Networks are applied to whole images: an image is mirror-padded to the smallest input size
the network takes whose output covers it (for a valid-convolution U-Net, with the margin it
loses on the top/left), and the output is cropped back to the image. For valid padding the
feature maps therefore include the mirrored margin.

The stage (:func:`explain_run`) applies to chest X-ray datasets (kind ``cxr``, whose
metadata give the groups) and U-Net models; for other runs (EM data, the mean-mask baseline)
it writes only ``summary.json`` saying why, so that both engines can run one job per
dataset x model. Its outputs are listed in :func:`explain_run`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from scipy.cluster.vq import kmeans2
from skimage.transform import resize
from torch import Tensor, nn

from unetflow.config.geometry import output_size, valid_input_sizes
from unetflow.evaluation.subgroups import FINDINGS, SEXES
from unetflow.inference.infer import tile_starts
from unetflow.io.images import read_gray, read_processed_image, write_float_tiff
from unetflow.io.outputs import staged_dir
from unetflow.io.processed import read_split
from unetflow.io.progress import progress
from unetflow.model.checkpoint import load_model
from unetflow.model.device import resolve_device
from unetflow.model.unet import UNet, evaluating, foreground_probability
from unetflow.training.losses import loss_value

#: The test-split groups whose best and worst image (by IoU) are explained, in this order.
GROUPS = ("male", "female", "normal", "abnormal")
GROUP_COLUMN = {"male": "sex", "female": "sex", "normal": "finding", "abnormal": "finding"}
CASES = ("best", "worst")
TABLE_COLUMNS = (
    "cluster",
    "sex",
    *FINDINGS,
    "all",
    *(f"{f}_ratio" for f in (*FINDINGS, "all")),
)
CELL_COLOURS = {
    "female / normal": "tab:orange",
    "female / abnormal": "tab:red",
    "male / normal": "tab:cyan",
    "male / abnormal": "tab:blue",
}


class ExplainError(ValueError):
    """Explain settings or inputs that cannot be used; the message names the key or file."""


# --------------------------------------------------------------------------- the network


def input_geometry(model: nn.Module, height: int, width: int) -> tuple[int, int]:
    """(input size, margin): the smallest square input the network takes whose output covers
    an image of `height` x `width`, and the margin its output loses on each side. Models other
    than `UNet` must map an image to an output of the same size (size, 0)."""
    size = max(int(height), int(width))
    if not isinstance(model, UNet):
        return size, 0
    for low in range(size, size + 4096, 64):
        for candidate in valid_input_sizes(model.depth, model.padding, low, low + 63):
            out = output_size(candidate, model.depth, model.padding)
            if out >= size:
                return candidate, (candidate - out) // 2
    raise ExplainError(f"no input size up to {size + 4096} px covers a {size} px image")


def network_input(model: nn.Module, images: np.ndarray, device: torch.device | str) -> Tensor:
    """N x 1 x S x S input of N x H x W images (float32), mirror-padded to the size S of
    :func:`input_geometry`, channels-last (about twice as fast convolutions on the CPU)."""
    n, height, width = images.shape
    size, margin = input_geometry(model, height, width)
    pad = ((0, 0), (margin, size - height - margin), (margin, size - width - margin))
    padded = np.pad(images, pad, mode="reflect") if size != height or size != width else images
    x = torch.from_numpy(np.ascontiguousarray(padded, dtype=np.float32))[:, None].to(device)
    return x.contiguous(memory_format=torch.channels_last)


def full_logits(model: nn.Module, images: np.ndarray, device: torch.device | str) -> Tensor:
    """N x C x H x W logits of N x H x W images (float32) at their own size (module docstring)."""
    n, height, width = images.shape
    x = network_input(model, images, device)
    size = x.shape[-1]
    logits = model(x)
    if logits.shape[-2] < height or logits.shape[-1] < width:
        raise ExplainError(
            f"model: output {tuple(logits.shape[-2:])} for a {size} px input does not cover "
            f"a {height} x {width} image"
        )
    return logits[..., :height, :width].float()


def per_image_losses(
    logits: Tensor, truth: Tensor, loss: str, pos_weight: Tensor | None = None
) -> np.ndarray:
    """The training loss (`loss_value`) of each image of a batch against one H x W truth."""
    return np.array(
        [
            float(loss_value(loss, logits[i : i + 1], truth[None], None, pos_weight))
            for i in range(logits.shape[0])
        ],
        dtype=np.float64,
    )


def occlusion_map(
    model: nn.Module,
    image: np.ndarray,
    truth: np.ndarray,
    *,
    loss: str,
    patch: int,
    stride: int | None = None,
    noise_std: float = 1.0,
    seed: int = 0,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    pos_weight: float | None = None,
) -> tuple[np.ndarray, float]:
    """(H x W float32 map of the loss increase when the patches covering each pixel are
    replaced by noise, the unoccluded image's loss); see the module docstring."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2 or np.asarray(truth).shape != image.shape:
        raise ExplainError(
            f"image {image.shape} and truth {np.asarray(truth).shape}: expected one H x W shape"
        )
    stride = int(stride or patch)
    if int(patch) < 1 or stride < 1 or int(batch_size) < 1:
        raise ExplainError(
            f"explain: patch {patch}, stride {stride}, batch_size {batch_size}; expected >= 1"
        )
    patch = int(patch)
    device = torch.device(device)
    height, width = image.shape
    noise = np.random.default_rng(seed).normal(0.0, noise_std, image.shape).astype(np.float32)
    target = torch.from_numpy(np.asarray(truth) > 0).float().to(device)
    weight = None if pos_weight is None else torch.tensor(float(pos_weight), device=device)
    positions = [
        (y, x)
        for y in tile_starts(height, patch, stride)
        for x in tile_starts(width, patch, stride)
    ]
    total = np.zeros(image.shape, dtype=np.float64)
    count = np.zeros(image.shape, dtype=np.float64)
    with evaluating(model), torch.inference_mode():
        base = float(
            per_image_losses(full_logits(model, image[None], device), target, loss, weight)[0]
        )
        for start in range(0, len(positions), int(batch_size)):
            batch = positions[start : start + int(batch_size)]
            copies = np.repeat(image[None], len(batch), axis=0)
            for i, (y, x) in enumerate(batch):
                copies[i, y : y + patch, x : x + patch] = noise[y : y + patch, x : x + patch]
            losses = per_image_losses(full_logits(model, copies, device), target, loss, weight)
            for (y, x), value in zip(batch, losses, strict=True):
                total[y : y + patch, x : x + patch] += value - base
                count[y : y + patch, x : x + patch] += 1
    return (total / np.maximum(count, 1)).astype(np.float32), base


def unet_blocks(model: UNet) -> list[tuple[str, nn.Module]]:
    """(label, module) of every encoder block, the bottleneck and every decoder block, in
    forward order: ``encoder 1`` (``inc``) ... ``encoder <depth>`` (``downs``),
    ``bottleneck`` (the last of ``downs``), ``decoder <depth>`` ... ``decoder 1`` (``ups``)."""
    if not isinstance(model, UNet):
        raise ExplainError(f"model: {type(model).__name__} has no U-Net blocks to explain")
    encoders = [model.inc, *model.downs]
    bottleneck = encoders.pop()
    blocks = [(f"encoder {i + 1}", block) for i, block in enumerate(encoders)]
    blocks.append(("bottleneck", bottleneck))
    depth = len(model.ups)
    blocks += [(f"decoder {depth - i}", block) for i, block in enumerate(model.ups)]
    return blocks


@contextmanager
def _recording(modules: Sequence[tuple[str, nn.Module]]) -> Iterator[dict[str, Tensor]]:
    """Forward hooks that keep the latest output of each module under its label."""
    outputs: dict[str, Tensor] = {}
    handles = [
        module.register_forward_hook(
            lambda _m, _i, out, label=label: outputs.__setitem__(label, out.detach())
        )
        for label, module in modules
    ]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def block_activations(
    model: UNet, image: np.ndarray, device: torch.device | str = "cpu"
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({label: mean over channels of the block's output, at its own resolution}, the H x W
    foreground probability), for one image; labels as in :func:`unet_blocks`."""
    image = np.asarray(image, dtype=np.float32)
    with evaluating(model), torch.inference_mode(), _recording(unet_blocks(model)) as outputs:
        logits = full_logits(model, image[None], device)
        maps = {label: out[0].float().mean(0).cpu().numpy() for label, out in outputs.items()}
    probability = foreground_probability(logits)[0].cpu().numpy()
    return {label: maps[label] for label, _ in unet_blocks(model)}, probability


def resized(maps: dict[str, np.ndarray], shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Every map brought to `shape` by ``skimage.transform.resize`` (bilinear, edge mode)."""
    return {
        label: resize(m, shape, order=1, mode="edge", preserve_range=True).astype(np.float32)
        for label, m in maps.items()
    }


def latent_vectors(
    model: UNet,
    images: Iterator[np.ndarray] | Sequence[np.ndarray],
    *,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """N x D float32: the flattened bottleneck output of each image (all of one size); only
    the contracting path runs."""
    if not isinstance(model, UNet):
        raise ExplainError(f"model: {type(model).__name__} has no U-Net bottleneck to explain")
    rows: list[np.ndarray] = []
    batch: list[np.ndarray] = []

    def flush() -> None:
        bottleneck = model.encode(network_input(model, np.stack(batch), device))[-1]
        rows.append(bottleneck.float().flatten(1).cpu().numpy())
        batch.clear()

    with evaluating(model), torch.inference_mode():
        for image in images:
            if batch and np.shape(image) != batch[0].shape:
                raise ExplainError(
                    f"images of sizes {batch[0].shape} and {np.shape(image)}: the latent space "
                    f"needs one size"
                )
            batch.append(np.asarray(image, dtype=np.float32))
            if len(batch) == int(batch_size):
                flush()
        if batch:
            flush()
    if not rows:
        raise ExplainError("no images for the latent space")
    return np.concatenate(rows).astype(np.float32)


# --------------------------------------------------------------------------- the latent space


def pca(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N x r scores on every principal component with non-zero variance, the fraction of the
    variance each explains), from the eigenvectors of the n x n Gram matrix of the centred
    vectors (accumulated in float64 over column blocks). Each component's sign puts its
    largest-magnitude score positive."""
    x = np.asarray(vectors)
    n = x.shape[0]
    mean = x.mean(axis=0, dtype=np.float64)
    gram = np.zeros((n, n), dtype=np.float64)
    for start in range(0, x.shape[1], 16384):
        block = x[:, start : start + 16384].astype(np.float64) - mean[start : start + 16384]
        gram += block @ block.T
    values, vectors_ = np.linalg.eigh(gram)
    order = np.argsort(values)[::-1]
    values, vectors_ = values[order], vectors_[:, order]
    keep = values > max(values[0], 0.0) * 1e-10 if n else np.zeros(0, dtype=bool)
    if not keep.any():
        keep[:1] = True
    scores = vectors_[:, keep] * np.sqrt(np.clip(values[keep], 0.0, None))
    signs = np.sign(scores[np.abs(scores).argmax(axis=0), np.arange(scores.shape[1])])
    scores *= np.where(signs == 0, 1.0, signs)
    total = values[values > 0].sum()
    ratio = np.clip(values[keep], 0.0, None) / total if total > 0 else np.zeros(keep.sum())
    return scores, ratio


def kmeans(scores: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Cluster labels 0..k-1 of each row by k-means (k-means++ seeding from `seed`, 100
    iterations), renumbered by cluster size (largest first; ties by first member)."""
    scores = np.asarray(scores, dtype=np.float64)
    if not 1 <= int(k) <= len(scores):
        raise ExplainError(f"explain.clusters: {k}; expected 1 to {len(scores)} (the images)")
    _, labels = kmeans2(
        scores, int(k), iter=100, minit="++", missing="warn", seed=np.random.default_rng(seed)
    )
    sizes = np.bincount(labels, minlength=int(k))
    first = [int(np.flatnonzero(labels == c)[0]) if sizes[c] else len(labels) for c in range(k)]
    order = sorted(range(int(k)), key=lambda c: (-sizes[c], first[c]))
    renumber = np.empty(int(k), dtype=np.int64)
    renumber[order] = np.arange(int(k))
    return renumber[labels]


def latent_table(labels: Sequence[int], metadata: pd.DataFrame, k: int) -> pd.DataFrame:
    """How sex x finding distribute over the clusters (the study's Table 4 layout).

    For every cluster and ``all`` clusters, one row per sex and ``all`` sexes: the number of
    images of each finding and ``all`` findings, and ``<finding>_ratio``: that count divided
    by the number of images of the same sex x finding cell in all clusters (the cell's share
    that falls in the cluster; each ratio column sums to 1 over the clusters). Images whose
    sex or finding is none of the known values count only under ``all``.
    """
    labels = np.asarray(labels)
    if len(labels) != len(metadata):
        raise ExplainError(f"{len(labels)} cluster labels for {len(metadata)} images")
    sex = metadata["sex"].astype(str).to_numpy() if "sex" in metadata else np.full(len(labels), "")
    finding = (
        metadata["finding"].astype(str).to_numpy()
        if "finding" in metadata
        else np.full(len(labels), "")
    )

    def count(cluster: int | None, s: str, f: str) -> int:
        chosen = np.ones(len(labels), dtype=bool) if cluster is None else labels == cluster
        if s != "all":
            chosen &= sex == s
        if f != "all":
            chosen &= finding == f
        return int(chosen.sum())

    records = []
    for cluster in [*range(int(k)), None]:
        for s in (*SEXES, "all"):
            record: dict[str, Any] = {"cluster": "all" if cluster is None else cluster, "sex": s}
            for f in (*FINDINGS, "all"):
                record[f] = count(cluster, s, f)
                cell = count(None, s, f)
                record[f"{f}_ratio"] = record[f] / cell if cell else None
            records.append(record)
    return pd.DataFrame(records, columns=list(TABLE_COLUMNS))


def cell_of(row: pd.Series) -> str:
    """``<sex> / <finding>`` of a metadata row (the group a point is coloured by)."""
    return f"{row.get('sex', '')} / {row.get('finding', '')}"


# --------------------------------------------------------------------------- choosing images


def select_cases(per_image: pd.DataFrame, split: str = "test") -> list[tuple[str, str, str, float]]:
    """(group, best|worst, id, IoU) of the best and worst `split` image by IoU of each group
    of :data:`GROUPS` (ties by id); ``all`` when the table has no sex/finding columns."""
    rows = per_image[per_image["split"] == split]
    groups = [(g, rows[rows[GROUP_COLUMN[g]] == g]) for g in GROUPS if GROUP_COLUMN[g] in rows]
    if not groups:
        groups = [("all", rows)]
    cases = []
    for group, members in groups:
        if members.empty:
            continue
        ordered = sorted(zip(members["iou"].astype(float), members["id"].astype(str), strict=True))
        for case, (iou, sid) in zip(CASES, (ordered[-1], ordered[0]), strict=True):
            cases.append((group, case, sid, iou))
    return cases


# --------------------------------------------------------------------------- figures


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
    (resized to the image), one panel each."""
    panels = [("input", _display(image), "gray"), ("prediction", probability, "gray")]
    panels.append(("ground truth", (truth > 0).astype(np.float32), "gray"))
    panels += [(label, m, "viridis") for label, m in resized(maps, image.shape).items()]
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


# --------------------------------------------------------------------------- the stage


def explain_run(
    *,
    dataset: str,
    model_name: str,
    checkpoint: Path,
    processed: Path,
    per_image: Path,
    out: Path,
    cfg: dict[str, Any],
    seed: int,
) -> dict[str, Any]:
    """Explain one run into the folder `out`, atomically; return its summary.

    ``summary.json`` always (dataset, model, ``applicable`` and, when not, the ``reason``).
    For a CXR U-Net run also: ``selection.csv`` (group, case, id, IoU, loss, mean and maximum
    loss increase of each explained test image), ``maps/<id>.tif`` (the occlusion maps, float32),
    ``occlusion_<group>.png`` per group of :data:`GROUPS`, ``features_<id>.png`` per explained
    image, ``latent.csv`` (id, split, sex, finding, cluster, pc1, pc2 of every image),
    ``clusters.csv`` (:func:`latent_table`) and ``latent.png`` (:func:`latent_figure`).
    """
    processed, per_image, out = Path(processed), Path(per_image), Path(out)
    device = resolve_device(str(cfg["device"]))
    model, meta = load_model(checkpoint, device)
    kind = (meta.get("dataset") or {}).get("kind")
    summary: dict[str, Any] = {"dataset": dataset, "model": model_name, "applicable": True}
    if not isinstance(model, UNet):
        summary.update(applicable=False, reason="the model has no network to explain")
    elif kind != "cxr":
        summary.update(
            applicable=False,
            reason=f"kind {kind}: the groups (sex, finding) exist for chest X-rays (cxr) only",
        )
    with staged_dir(out) as work:
        if summary["applicable"]:
            summary.update(_explain_cxr(model, meta, processed, per_image, work, cfg, seed, device))
        (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _explain_cxr(
    model: UNet,
    meta: dict[str, Any],
    processed: Path,
    per_image: Path,
    work: Path,
    cfg: dict[str, Any],
    seed: int,
    device: torch.device,
) -> dict[str, Any]:
    """The occlusion maps, feature maps and latent space of a CXR U-Net (see explain_run)."""
    loss = ((meta.get("model") or {}).get("train") or {}).get("loss")
    if loss is None:
        raise ExplainError("checkpoint: model.train.loss is missing; expected a unetflow model.pt")
    pos_weight = (meta.get("train") or {}).get("pos_weight")
    model = model.to(memory_format=torch.channels_last)
    batch_size = int(cfg["batch_size"])
    try:
        scores_table = pd.read_csv(per_image, dtype={"id": str, "split": str})
    except FileNotFoundError as exc:
        raise ExplainError(f"{per_image}: not found; expected the evaluate stage's table") from exc
    if not {"id", "split", "iou"} <= set(scores_table.columns):
        raise ExplainError(f"{per_image}: expected the columns id, split and iou")
    cases = select_cases(scores_table)

    def image_of(sid: str) -> np.ndarray:
        return read_processed_image(processed / "images" / f"{sid}.tif")

    def truth_of(sid: str) -> np.ndarray:
        return read_gray(processed / "masks" / f"{sid}.png")

    occlusion: dict[str, tuple[np.ndarray, float]] = {}
    (work / "maps").mkdir()
    for sid in progress(sorted({sid for *_, sid, _ in cases}), desc="occlusion", unit="image"):
        occlusion[sid] = occlusion_map(
            model,
            image_of(sid),
            truth_of(sid),
            loss=loss,
            patch=int(cfg["patch"]),
            stride=int(cfg["stride"]),
            noise_std=float(cfg["noise_std"]),
            seed=seed,
            batch_size=batch_size,
            device=device,
            pos_weight=pos_weight,
        )
        write_float_tiff(work / "maps" / f"{sid}.tif", occlusion[sid][0])
    selection = []
    for group, case, sid, iou in cases:
        heat, base = occlusion[sid]
        selection.append(
            {
                "group": group,
                "case": case,
                "id": sid,
                "iou": iou,
                "loss": base,
                "mean_increase": float(heat.mean()),
                "max_increase": float(heat.max()),
            }
        )
    pd.DataFrame(
        selection,
        columns=["group", "case", "id", "iou", "loss", "mean_increase", "max_increase"],
    ).to_csv(work / "selection.csv", index=False)
    groups = [g for g in GROUPS if GROUP_COLUMN[g] in scores_table] or ["all"]
    for group in groups:
        chosen = [
            {
                "id": sid,
                "case": case,
                "iou": iou,
                "image": image_of(sid),
                "truth": truth_of(sid),
                "map": occlusion[sid][0],
            }
            for g, case, sid, iou in cases
            if g == group
        ]
        occlusion_figure(group, chosen).savefig(work / f"occlusion_{group}.png", dpi=80)
    for sid in sorted(occlusion):
        image = image_of(sid)
        maps, probability = block_activations(model, image, device)
        features_figure(sid, image, truth_of(sid), probability, maps).savefig(
            work / f"features_{sid}.png", dpi=80
        )

    table = read_split(processed)
    images = (image_of(sid) for sid in progress(list(table["id"]), desc="latent", unit="image"))
    vectors = latent_vectors(model, images, batch_size=batch_size, device=device)
    scores, ratio = pca(vectors)
    k = int(cfg["clusters"])
    labels = kmeans(scores, k, seed)
    latent = table[[c for c in ("id", "split", "sex", "finding") if c in table]].copy()
    latent["cluster"] = labels
    latent["pc1"] = scores[:, 0]
    latent["pc2"] = scores[:, 1] if scores.shape[1] > 1 else 0.0
    latent.to_csv(work / "latent.csv", index=False)
    latent_table(labels, table, k).to_csv(work / "clusters.csv", index=False)
    cells = [cell_of(row) for _, row in table.iterrows()]
    latent_figure(scores, ratio, labels, cells).savefig(work / "latent.png", dpi=80)
    return {
        "loss": loss,
        "explained": sorted(occlusion),
        "images": len(table),
        "latent_dims": int(vectors.shape[1]),
        "cluster_sizes": np.bincount(labels, minlength=k).tolist(),
        "pc_variance": [float(r) for r in ratio[:2]],
    }
