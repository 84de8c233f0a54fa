"""The explain stage: what a trained U-Net looks at, after the Shenzhen study.

For the test images of each group (sex, finding) it writes the occlusion sensitivity
(:mod:`unetflow.explain.occlusion`), the mean feature map of every block
(:mod:`unetflow.explain.features`) and the clusters of the bottleneck activations
(:mod:`unetflow.explain.latent`). Every step is deterministic on the CPU: the noise and k-means
come from ``seed``, and images are processed in a fixed order.

The stage (:func:`explain_run`) applies to chest X-ray U-Nets (:mod:`unetflow.explain.scope`);
for other runs (EM data, the mean-mask baseline) it writes only ``summary.json`` saying why, so
that both engines can run one job per dataset x model. Its outputs are listed in
:func:`explain_run`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from unetflow.evaluation.cases import GROUP_COLUMN, GROUPS, select_cases
from unetflow.explain.features import block_activations, resized
from unetflow.explain.latent import (
    cell_of,
    kmeans,
    latent_table,
    latent_vectors,
    pca,
)
from unetflow.explain.network import ExplainError
from unetflow.explain.occlusion import occlusion_map
from unetflow.explain.scope import skip_reason, skipped_summary
from unetflow.io.images import read_gray, read_processed_image, write_float_tiff
from unetflow.io.outputs import staged_dir
from unetflow.io.processed import read_split
from unetflow.io.progress import progress
from unetflow.model.checkpoint import load_model
from unetflow.model.device import resolve_device
from unetflow.model.unet import UNet
from unetflow.plots import features_figure, latent_figure, occlusion_figure


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
    reason = skip_reason((meta.get("dataset") or {}).get("kind"), meta["model"]["kind"])
    if reason:
        return skipped_summary(dataset, model_name, reason, out)
    summary: dict[str, Any] = {"dataset": dataset, "model": model_name, "applicable": True}
    with staged_dir(out) as work:
        summary.update(_explain_cxr(model, meta, processed, per_image, work, cfg, seed, device))
        (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


@dataclass
class _Job:
    """One CXR U-Net run being explained: the model, where to read and write, the settings."""

    model: UNet
    processed: Path
    work: Path
    cfg: dict[str, Any]
    seed: int
    device: torch.device
    loss: str
    pos_weight: float | None

    def image(self, sid: str) -> np.ndarray:
        return read_processed_image(self.processed / "images" / f"{sid}.tif")

    def truth(self, sid: str) -> np.ndarray:
        return read_gray(self.processed / "masks" / f"{sid}.png")


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
    job = _Job(model, processed, work, cfg, seed, device, loss, pos_weight)
    scores_table = _read_scores(per_image)
    cases = select_cases(scores_table)
    occlusion = _occlusion(job, cases)
    groups = [g for g in GROUPS if GROUP_COLUMN[g] in scores_table] or ["all"]
    _occlusion_figures(job, cases, occlusion, groups)
    for sid in sorted(occlusion):
        image = job.image(sid)
        maps, probability = block_activations(model, image, device)
        figure = features_figure(
            sid, image, job.truth(sid), probability, resized(maps, image.shape)
        )
        figure.savefig(work / f"features_{sid}.png", dpi=80)
    return {"loss": loss, "explained": sorted(occlusion), **_latent(job)}


def _read_scores(per_image: Path) -> pd.DataFrame:
    """The evaluate stage's per-image table (id, split, iou, ...)."""
    try:
        table = pd.read_csv(per_image, dtype={"id": str, "split": str})
    except FileNotFoundError as exc:
        raise ExplainError(f"{per_image}: not found; expected the evaluate stage's table") from exc
    if not {"id", "split", "iou"} <= set(table.columns):
        raise ExplainError(f"{per_image}: expected the columns id, split and iou")
    return table


def _occlusion(
    job: _Job, cases: list[tuple[str, str, str, float]]
) -> dict[str, tuple[np.ndarray, float]]:
    """The occlusion map and unoccluded loss of every chosen image; writes maps/ and
    selection.csv."""
    occlusion: dict[str, tuple[np.ndarray, float]] = {}
    (job.work / "maps").mkdir()
    for sid in progress(sorted({sid for *_, sid, _ in cases}), desc="occlusion", unit="image"):
        occlusion[sid] = occlusion_map(
            job.model,
            job.image(sid),
            job.truth(sid),
            loss=job.loss,
            patch=int(job.cfg["patch"]),
            stride=int(job.cfg["stride"]),
            noise_std=float(job.cfg["noise_std"]),
            seed=job.seed,
            batch_size=int(job.cfg["batch_size"]),
            device=job.device,
            pos_weight=job.pos_weight,
        )
        write_float_tiff(job.work / "maps" / f"{sid}.tif", occlusion[sid][0])
    selection = [
        {
            "group": group,
            "case": case,
            "id": sid,
            "iou": iou,
            "loss": occlusion[sid][1],
            "mean_increase": float(occlusion[sid][0].mean()),
            "max_increase": float(occlusion[sid][0].max()),
        }
        for group, case, sid, iou in cases
    ]
    pd.DataFrame(
        selection,
        columns=["group", "case", "id", "iou", "loss", "mean_increase", "max_increase"],
    ).to_csv(job.work / "selection.csv", index=False)
    return occlusion


def _occlusion_figures(
    job: _Job,
    cases: list[tuple[str, str, str, float]],
    occlusion: dict[str, tuple[np.ndarray, float]],
    groups: list[str],
) -> None:
    """occlusion_<group>.png: the best and worst image of each group with its map."""
    for group in groups:
        chosen = [
            {
                "id": sid,
                "case": case,
                "iou": iou,
                "image": job.image(sid),
                "truth": job.truth(sid),
                "map": occlusion[sid][0],
            }
            for g, case, sid, iou in cases
            if g == group
        ]
        occlusion_figure(group, chosen).savefig(job.work / f"occlusion_{group}.png", dpi=80)


def _latent(job: _Job) -> dict[str, Any]:
    """The latent space of every image: latent.csv, clusters.csv, latent.png; its summary."""
    table = read_split(job.processed)
    images = (job.image(sid) for sid in progress(list(table["id"]), desc="latent", unit="image"))
    batch_size = int(job.cfg["batch_size"])
    vectors = latent_vectors(job.model, images, batch_size=batch_size, device=job.device)
    scores, ratio = pca(vectors)
    k = int(job.cfg["clusters"])
    labels = kmeans(scores, k, job.seed)
    latent = table[[c for c in ("id", "split", "sex", "finding") if c in table]].copy()
    latent["cluster"] = labels
    latent["pc1"] = scores[:, 0]
    latent["pc2"] = scores[:, 1] if scores.shape[1] > 1 else 0.0
    latent.to_csv(job.work / "latent.csv", index=False)
    latent_table(labels, table, k).to_csv(job.work / "clusters.csv", index=False)
    cells = [cell_of(row) for _, row in table.iterrows()]
    latent_figure(scores, ratio, labels, cells).savefig(job.work / "latent.png", dpi=80)
    return {
        "images": len(table),
        "latent_dims": int(vectors.shape[1]),
        "cluster_sizes": np.bincount(labels, minlength=k).tolist(),
        "pc_variance": [float(r) for r in ratio[:2]],
    }
