"""Segmentation metrics of binary masks and of EM cell segmentations.

Overlap metrics (``dice``, ``iou``, ``precision``, ``recall``, ``pixel_error``) take two masks of
the same shape; anything non-zero is foreground. Conventions for empty masks: when both the
prediction and the truth are empty the masks agree perfectly (1.0); when exactly one is empty
they share nothing (0.0). This keeps per-image means defined for images without foreground
(some Shenzhen images, EM crops of one cell). ``precision`` and ``recall`` follow the same rule
whenever their denominator is zero: a blank prediction of a blank truth scores 1.0, a blank
prediction of a non-blank truth has precision 0.0, and any prediction of a blank truth has
recall 0.0 unless it is blank too. ``pixel_error`` is 1 - accuracy and needs no convention.

Boundary metrics (``hd95``, ``assd``) follow MedPy's ``hd95``/``assd`` definitions: the
boundary of a mask is the mask minus its erosion by the 4-connected cross (pixels on the image
edge count as boundary), distances are Euclidean (``scipy.ndimage.distance_transform_edt``,
scaled by ``spacing``) from each boundary pixel of one mask to the nearest boundary pixel of
the other. HD95 is the 95th percentile (numpy's linear interpolation) of both directed sets
pooled; ASSD is the mean of the two directed mean distances. Both masks empty: 0.0. Exactly one
empty: the image diagonal (``sqrt(sum((shape * spacing) ** 2))``), the largest distance the
image can hold, so the value is finite and ranks such images as the worst.

ISBI 2012 scores (``rand_and_info_scores``) follow Arganda-Carreras et al. 2015, "Crowdsourcing
the creation of image segmentation algorithms for connectomics", Front. Neuroanat. 9:142
(equations 3 and 6), as implemented by the challenge's Fiji scorer (trainableSegmentation
``RandError`` / ``VariationOfInformation``, "Segmentation evaluation after border thinning")
and the organisers' Python scorer (``thin_boundaries`` + ``segmentation_metrics``):

- Segmentation: the cell probability ``1 - membrane_prob`` is binarised with ``> t`` for
  t = 0.0, 0.1, ..., 0.9 and its cells are labelled as 4-connected components (as Fiji's
  ``connectedComponents(..., 4)``); the truth cells (non-zero pixels) are labelled the same way.
- Foreground restriction: only pixels that are cells in the truth are counted; truth membrane
  pixels are dropped. Predicted membrane pixels that remain inside the truth foreground are
  singletons, each its own segment (Fiji's ``sum(p_i0)/n`` terms).
- Border thinning: before scoring, every predicted membrane pixel is given the label of the
  nearest predicted segment (exact Euclidean distance transform), so predicted borders have zero
  width and their thickness cannot be penalised; the organisers' Python scorer grows segments
  with a 3x3 maximum filter to the same end (it differs only in tie-breaking on the border).
  A prediction without any cell keeps its membrane pixels as singletons.
- With n_ij the contingency table (truth segment i, predicted segment j), a_i and b_j its row
  and column sums: Rand split = sum n_ij^2 / sum a_i^2 (penalises splitting a truth cell;
  Fiji's "recall"), Rand merge = sum n_ij^2 / sum b_j^2 (penalises merging truth cells; Fiji's
  "precision"), V_Rand = their harmonic mean = 2 sum n_ij^2 / (sum a_i^2 + sum b_j^2).
  With entropies H(T) of the truth, H(S) of the prediction and mutual information I(S;T):
  Info split = I / H(S), Info merge = I / H(T), V_Info = 2 I / (H(S) + H(T)). A zero entropy
  leaves nothing to split (or merge) and that ratio is 1.0; V_Info is 1.0 when both are zero.
- ``vrand`` and ``vinfo`` are the maxima over thresholds of the thinned scores (each with its
  own best threshold, the lowest on ties, as Fiji's ``getMaximal...AfterThinning``).
  ``rand_error`` is the foreground-restricted Rand error of the original 2012 leaderboard that
  the U-Net paper's Table 1 reports: 1 - the maximal foreground-restricted Rand F-score
  *without* border thinning (the same formula as V_Rand, predicted border pixels kept as
  singletons), i.e. the adapted Rand error at the best threshold.
- A truth without cells leaves no pixel to score: vrand = vinfo = 1.0 and rand_error = 0.0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from skimage.measure import label as _label_components

ISBI_THRESHOLDS: tuple[float, ...] = tuple(round(0.1 * k, 1) for k in range(10))
"""Thresholds of the ISBI 2012 scores on the cell probability: 0.0, 0.1, ..., 0.9."""


def _pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as bool arrays of the same shape (anything non-zero is foreground)."""
    pred, truth = np.asarray(pred).astype(bool), np.asarray(truth).astype(bool)
    if pred.shape != truth.shape:
        raise ValueError(
            f"prediction shape {pred.shape} differs from truth shape {truth.shape}; "
            "expected masks of the same size"
        )
    return pred, truth


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient 2|P∩T| / (|P| + |T|); 1.0 when both are empty."""
    pred, truth = _pair(pred, truth)
    total = int(pred.sum()) + int(truth.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, truth).sum()) / total


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union |P∩T| / |P∪T| (Jaccard); 1.0 when both are empty."""
    pred, truth = _pair(pred, truth)
    union = int(np.logical_or(pred, truth).sum())
    if union == 0:
        return 1.0
    return int(np.logical_and(pred, truth).sum()) / union


def pixel_error(pred: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of pixels whose class differs (1 - accuracy), as the ISBI pixel error."""
    pred, truth = _pair(pred, truth)
    if pred.size == 0:
        raise ValueError("masks have no pixels; expected at least one pixel")
    return float(np.count_nonzero(pred != truth)) / pred.size


def precision(pred: np.ndarray, truth: np.ndarray) -> float:
    """Foreground precision |P∩T| / |P|; 1.0 when both are empty, 0.0 when only P is."""
    pred, truth = _pair(pred, truth)
    tp = int(np.logical_and(pred, truth).sum())
    n_pred = int(pred.sum())
    if n_pred == 0:
        return 1.0 if not truth.any() else 0.0
    return tp / n_pred


def recall(pred: np.ndarray, truth: np.ndarray) -> float:
    """Foreground recall (sensitivity) |P∩T| / |T|; 1.0 when both are empty, 0.0 when only T is."""
    pred, truth = _pair(pred, truth)
    tp = int(np.logical_and(pred, truth).sum())
    n_truth = int(truth.sum())
    if n_truth == 0:
        return 1.0 if not pred.any() else 0.0
    return tp / n_truth


# --- boundary distances ------------------------------------------------------------------------


def _spacing(spacing: float | Sequence[float], ndim: int) -> np.ndarray:
    """Pixel spacing as one positive float per axis."""
    values = np.broadcast_to(np.asarray(spacing, dtype=float), (ndim,)).copy()
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"spacing {spacing!r} must be positive and finite (one value per axis)")
    return values


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Inner boundary: mask pixels with a 4-neighbour outside the mask or off the image."""
    cross = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=cross, border_value=0)


def _directed_distances(
    pred: np.ndarray, truth: np.ndarray, spacing: float | Sequence[float]
) -> tuple[np.ndarray, np.ndarray] | float:
    """Distances pred-boundary -> truth-boundary and back, or the empty-mask value."""
    pred, truth = _pair(pred, truth)
    sampling = _spacing(spacing, pred.ndim)
    if not pred.any() and not truth.any():
        return 0.0
    if not pred.any() or not truth.any():
        return float(np.sqrt(np.sum((np.asarray(pred.shape) * sampling) ** 2)))
    pred_edge, truth_edge = _boundary(pred), _boundary(truth)
    to_truth = ndimage.distance_transform_edt(~truth_edge, sampling=sampling)[pred_edge]
    to_pred = ndimage.distance_transform_edt(~pred_edge, sampling=sampling)[truth_edge]
    return to_truth, to_pred


def hd95(pred: np.ndarray, truth: np.ndarray, spacing: float | Sequence[float] = 1.0) -> float:
    """95th percentile Hausdorff distance between mask boundaries (in units of ``spacing``)."""
    distances = _directed_distances(pred, truth, spacing)
    if isinstance(distances, float):
        return distances
    return float(np.percentile(np.concatenate(distances), 95))


def assd(pred: np.ndarray, truth: np.ndarray, spacing: float | Sequence[float] = 1.0) -> float:
    """Average symmetric surface distance: mean of the two directed mean boundary distances."""
    distances = _directed_distances(pred, truth, spacing)
    if isinstance(distances, float):
        return distances
    return float((distances[0].mean() + distances[1].mean()) / 2.0)


# --- ISBI 2012 foreground-restricted Rand and information scores -------------------------------


def thin_borders(pred_labels: np.ndarray) -> np.ndarray:
    """Give every unlabelled (0) pixel the label of its nearest segment: zero-width borders.

    Ties between equally near segments go to the one scipy's exact Euclidean distance
    transform returns. An image without any segment is returned unchanged (all zero).
    """
    pred_labels = np.asarray(pred_labels)
    border = pred_labels == 0
    if border.all() or not border.any():
        return pred_labels.copy()
    _, nearest = ndimage.distance_transform_edt(border, return_indices=True)
    return pred_labels[tuple(nearest)]


def _restricted_counts(
    truth_labels: np.ndarray, pred_labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contingency over truth-foreground pixels: joint counts n_ij, truth sizes a_i, predicted
    sizes b_j (non-zero entries only). Predicted 0 pixels count as singletons."""
    truth_labels = np.asarray(truth_labels)
    pred_labels = np.asarray(pred_labels)
    if truth_labels.shape != pred_labels.shape:
        raise ValueError(
            f"prediction labels shape {pred_labels.shape} differs from truth labels shape "
            f"{truth_labels.shape}; expected label images of the same size"
        )
    inside = truth_labels != 0
    if not inside.any():
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    t = _compact(truth_labels[inside])
    p = _compact(pred_labels[inside])  # label 0 (if any) stays 0
    singles = p == 0
    if singles.any():
        start = int(p.max()) + 1
        p[singles] = np.arange(start, start + int(singles.sum()), dtype=np.int64)
    key = t * (int(p.max()) + 1) + p
    if key.max() < 4 * key.size + 1024:
        joint = np.bincount(key)
        joint = joint[joint > 0]
    else:
        _, joint = np.unique(key, return_counts=True)
    a = np.bincount(t)
    b = np.bincount(p)
    return joint.astype(np.int64), a[a > 0], b[b > 0]


def _compact(labels: np.ndarray) -> np.ndarray:
    """Labels as int64 in 0..k (0 kept as 0 when present): small values are used as they are."""
    if labels.dtype.kind in "iub" and labels.size and labels.min() >= 0 and labels.max() < 2**24:
        return labels.astype(np.int64)
    values, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.ravel().astype(np.int64)
    return inverse if values[0] == 0 else inverse + 1


def _rand_from_counts(joint: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Rand F-score, split and merge from contingency counts (see the module docstring)."""
    if joint.size == 0:
        return {"f": 1.0, "split": 1.0, "merge": 1.0}
    sum_joint, sum_a, sum_b = (int(np.dot(v, v)) for v in (joint, a, b))
    return {
        "f": 2.0 * sum_joint / (sum_a + sum_b),
        "split": sum_joint / sum_a,
        "merge": sum_joint / sum_b,
    }


def _entropy(counts: np.ndarray, total: int) -> float:
    """Shannon entropy (nats) of a distribution given by positive counts."""
    p = counts / total
    return float(-np.sum(p * np.log(p)))


def _info_from_counts(joint: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Information F-score, split I/H(S) and merge I/H(T) from contingency counts."""
    if joint.size == 0:
        return {"f": 1.0, "split": 1.0, "merge": 1.0}
    total = int(joint.sum())
    h_joint, h_truth, h_pred = (_entropy(v, total) for v in (joint, a, b))
    mutual = max(h_truth + h_pred - h_joint, 0.0)
    split = min(mutual / h_pred, 1.0) if h_pred > 0 else 1.0
    merge = min(mutual / h_truth, 1.0) if h_truth > 0 else 1.0
    denom = h_pred + h_truth
    f = min(2.0 * mutual / denom, 1.0) if denom > 0 else 1.0
    return {"f": f, "split": split, "merge": merge}


def rand_scores(truth_labels: np.ndarray, pred_labels: np.ndarray) -> dict[str, float]:
    """Foreground-restricted Rand F-score, split and merge scores of two label images.

    Truth label 0 is excluded; predicted label 0 inside the truth foreground counts as
    singletons. No thresholding or thinning here (see ``rand_and_info_scores``).
    """
    return _rand_from_counts(*_restricted_counts(truth_labels, pred_labels))


def info_scores(truth_labels: np.ndarray, pred_labels: np.ndarray) -> dict[str, float]:
    """Foreground-restricted information-theoretic F-score, split and merge scores.

    Same pixel set and singleton rule as ``rand_scores``; split = I/H(S), merge = I/H(T).
    """
    return _info_from_counts(*_restricted_counts(truth_labels, pred_labels))


def _cell_labels(cells: np.ndarray) -> np.ndarray:
    """4-connected components of a cell mask (0 = membrane)."""
    return _label_components(np.asarray(cells).astype(bool), connectivity=1)


def rand_and_info_scores(
    membrane_prob: np.ndarray,
    truth_cells: np.ndarray,
    thresholds: Sequence[float] = ISBI_THRESHOLDS,
) -> dict[str, float]:
    """ISBI 2012 V_Rand and V_Info after border thinning, and the unthinned Rand error.

    ``membrane_prob`` is the predicted membrane probability in [0, 1] (2-D); a pixel is a cell
    where ``1 - membrane_prob > t``. ``truth_cells`` is the truth mask, non-zero = cell. Returns
    ``vrand``, ``vinfo``, ``rand_error`` and, at their best thresholds, ``vrand_threshold``,
    ``vrand_split``, ``vrand_merge``, ``vinfo_threshold``, ``vinfo_split``, ``vinfo_merge``,
    ``rand_error_threshold`` (definitions in the module docstring).
    """
    prob = np.asarray(membrane_prob, dtype=np.float64)
    truth = np.asarray(truth_cells)
    if prob.ndim != 2:
        raise ValueError(f"membrane_prob has shape {prob.shape}; expected a 2-D image")
    if prob.shape != truth.shape:
        raise ValueError(
            f"membrane_prob shape {prob.shape} differs from truth_cells shape {truth.shape}; "
            "expected images of the same size"
        )
    if not np.all(np.isfinite(prob)) or prob.min() < 0.0 or prob.max() > 1.0:
        raise ValueError("membrane_prob must hold finite probabilities in [0, 1]")
    if len(thresholds) == 0:
        raise ValueError("thresholds is empty; expected at least one threshold")

    truth_labels = _cell_labels(truth)
    cell_prob = 1.0 - prob
    best = {
        "vrand": (-1.0, 0.0, {}),
        "vinfo": (-1.0, 0.0, {}),
        "rand_unthinned": (-1.0, 0.0, {}),
    }
    for t in thresholds:
        pred_labels = _cell_labels(cell_prob > t)
        thinned = _restricted_counts(truth_labels, thin_borders(pred_labels))
        candidates = {
            "vrand": _rand_from_counts(*thinned),
            "vinfo": _info_from_counts(*thinned),
            "rand_unthinned": rand_scores(truth_labels, pred_labels),
        }
        for key, scores in candidates.items():
            if scores["f"] > best[key][0]:
                best[key] = (scores["f"], float(t), scores)

    vrand, vinfo, unthinned = best["vrand"], best["vinfo"], best["rand_unthinned"]
    return {
        "vrand": float(vrand[0]),
        "vrand_threshold": vrand[1],
        "vrand_split": float(vrand[2]["split"]),
        "vrand_merge": float(vrand[2]["merge"]),
        "vinfo": float(vinfo[0]),
        "vinfo_threshold": vinfo[1],
        "vinfo_split": float(vinfo[2]["split"]),
        "vinfo_merge": float(vinfo[2]["merge"]),
        "rand_error": float(1.0 - unthinned[0]),
        "rand_error_threshold": unthinned[1],
    }
