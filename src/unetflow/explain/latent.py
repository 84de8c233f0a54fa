"""The latent space: the bottleneck output of every image, flattened, and its clusters.

k-means (scikit-learn's ``KMeans``: the best of ``KMEANS_STARTS`` k-means++ starts drawn from
``seed``, on one thread) runs on the principal-component scores of *all* components, which keep
every distance between the flattened vectors, so it is k-means on the activations at the cost of
an n x n problem; clusters are numbered by size (largest first). The table of how sex x finding
distribute over the clusters is the study's Table 4 layout.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from unetflow.evaluation.subgroups import FINDINGS, SEXES
from unetflow.explain.network import ExplainError, network_input
from unetflow.model.unet import UNet, evaluating

TABLE_COLUMNS = (
    "cluster",
    "sex",
    *FINDINGS,
    "all",
    *(f"{f}_ratio" for f in (*FINDINGS, "all")),
)
# k-means++ starts; the clustering with the least inertia is kept, so it does not hang on one draw
KMEANS_STARTS = 10


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
    """Cluster labels 0..k-1 of each row by k-means: the least-inertia result of
    ``KMEANS_STARTS`` k-means++ starts (random state `seed`), each run until no label changes
    (300 iterations at most), renumbered by cluster size (largest first; ties by first member).
    One thread: scikit-learn's threads add their partial sums in no fixed order, which could
    move a centre by a last bit."""
    scores = np.asarray(scores, dtype=np.float64)
    if not 1 <= int(k) <= len(scores):
        raise ExplainError(f"explain.clusters: {k}; expected 1 to {len(scores)} (the images)")
    model = KMeans(int(k), n_init=KMEANS_STARTS, max_iter=300, tol=0.0, random_state=int(seed))
    with threadpool_limits(limits=1):
        labels = model.fit(scores).labels_
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
