"""Annotation noise: seeded corruptions of binary training masks, to measure how much label
noise a U-Net tolerates.

Masks are 2-D uint8 arrays of {0, 1}. Every family acts on the mask's objects: for ``cxr`` the
lungs (8-connected components of 1), for ``em`` the cells (4-connected components of 1; 0 is
membrane). Levels are in processed pixels unless said otherwise:

- ``boundary`` (σ ≥ 0, px): each object gets its own radius ``round(N(0, σ))``; a positive
  radius dilates it, a negative one erodes it (zero-mean boundary noise).
- ``bias`` (k, signed integer px): every object dilated by k (k > 0) or eroded by -k.
- ``omission`` (p in [0, 1]): ``cxr``: each lung dropped with probability p; ``em``: each
  membrane segment between two adjacent cells removed with probability p (the cells merge).
- ``warp`` (σ ≥ 0, px): mis-registration, a label-only elastic warp (elasticdeform's
  ``deform_grid`` on a 3 x 3 grid of N(0, σ) displacements, nearest neighbour).
- ``mixed`` (α in [0, 1], dataset level): round(α · n) train images, each corrupted by one
  family drawn from a ``{family: level}`` mapping (``dataset_defs.<d>.noise.mixed.families``).

Dilation by r is Euclidean: the pixels within distance r of the object; erosion by r keeps
the object's pixels farther than r from the background (the image border is not background).
For ``em`` a grown cell only takes membrane pixels, and a 1-pixel membrane always separates
two different cells (4-connectivity), so cells never merge; an eroded cell keeps at least its
deepest pixel, so cells never vanish. Boundary and bias noise thus only change membrane width.

Level 0 of every family is the identity. Each image draws from
:func:`unetflow.data.seeding.image_rng`, so a result does not depend on processing order.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from skimage.measure import label, regionprops
from skimage.segmentation import expand_labels

from unetflow.data.augment import augment_dataset
from unetflow.data.elastic import import_elasticdeform
from unetflow.data.seeding import image_rng
from unetflow.data.weightmaps import border_weight_map
from unetflow.evaluation.metrics import dice
from unetflow.io.images import read_gray, write_float_tiff, write_png
from unetflow.io.outputs import staged_dir
from unetflow.io.processed import DataError, read_split

FAMILIES: tuple[str, ...] = ("boundary", "bias", "omission", "warp", "mixed")
KINDS = ("cxr", "em")
#: Seeds the choice of the images ``mixed`` corrupts, with the dataset seed ("mix").
MIXED_KEY = 0x6D6978
WARP_GRID = 3
#: Params give pixel levels in px of an image this wide (all four datasets' annotation size).
LEVEL_PX = 512
CSV_COLUMNS = ["id", "family", "level", "dice", "detail"]
Step = tuple[str, float] | None


def corrupt_mask(
    mask: np.ndarray, kind: str, family: str, level: float, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    """The mask corrupted by `family` at `level` (uint8 {0, 1}, same shape) and a
    JSON-serialisable record of what was drawn; `family` is one of the first four of
    :data:`FAMILIES` (``mixed`` is dataset-level, see :func:`corrupt_dataset`)."""
    _check_kind(kind)
    level = _checked_level(family, level)
    if family == "mixed":
        raise ValueError(f"family: 'mixed' corrupts a dataset; expected one of {FAMILIES[:4]}")
    mask = _binary(mask, "mask")
    out, detail = _APPLY[family](mask, kind, level, rng)
    return out.astype(np.uint8), {"family": family, "level": level, **detail}


def corrupt_masks(
    masks: Mapping[str, np.ndarray],
    kind: str,
    family: str,
    level: float,
    seed: int,
    mixed: Mapping[str, float] | None = None,
) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    """Each of `masks` (by image id) corrupted as :func:`corrupt_dataset` corrupts training
    masks (``mixed``: a fraction of them, the others returned as they are, recorded as
    ``{"family": "none"}``); the noisy evaluation's test masks go through here."""
    _check_kind(kind)
    plan = _plan(sorted(masks), family, _checked_level(family, level), seed, mixed)
    out = {}
    for sid, mask in masks.items():
        step = plan[sid]
        if step is None:
            out[sid] = (_binary(mask, sid), {"family": "none"})
        else:
            out[sid] = corrupt_mask(mask, kind, step[0], step[1], image_rng(seed, sid))
    return out


def level_value(noise: Mapping[str, Any], family: str, level: int) -> float:
    """The value of `family`'s level `level` (1-based) in a dataset's noise definition
    (``dataset_defs.<d>.noise``), in px of a 512-px image or as a probability."""
    levels = noise[family]
    return (levels["levels"] if family == "mixed" else levels)[level - 1]


def scaled_level(
    family: str, value: float, width: int, noise: Mapping[str, Any]
) -> tuple[float, dict[str, float] | None]:
    """A level of params (px of a LEVEL_PX-px image) on masks `width` px wide, and for
    ``mixed`` its families' levels likewise (from the dataset's `noise` definition): radii
    and sigmas scale, bias stays a whole number of pixels, probabilities do not change."""
    factor = width / LEVEL_PX

    def scaled(name: str, level: float) -> float:
        if name == "bias":
            return int(round(level * factor))
        return level * factor if name in ("boundary", "warp") else level

    if family != "mixed":
        return scaled(family, value), None
    return value, {name: scaled(name, v) for name, v in noise["mixed"]["families"].items()}


def noisy_dataset(
    *,
    dataset: Mapping[str, Any],
    family: str,
    level: int,
    seed: int,
    augment: Mapping[str, Any],
    processed: Path,
    out: Path,
    augmented: Path,
) -> pd.DataFrame:
    """The corrupt stage: `processed` copied to `out` with its training masks corrupted by
    `family` at `level` (1-based into `dataset`'s ``noise``, in px of a 512-px image, scaled
    to the processed size) with `seed`, then augmented into `augmented` with the same seed."""
    value = level_value(dataset["noise"], family, level)
    table = read_split(processed)
    first = Path(processed) / "masks" / f"{table['id'].iloc[0]}.png"
    value, mixed = scaled_level(family, value, read_gray(first).shape[1], dataset["noise"])
    weight_map = dataset["preprocess"].get("weight_map")
    result = corrupt_dataset(
        processed,
        out,
        kind=dataset["kind"],
        family=family,
        level=value,
        seed=seed,
        mixed=mixed,
        weight_map=weight_map,
    )
    augment_dataset(
        out,
        augmented,
        dataset["augment"],
        example_pairs=augment["example_pairs"],
        seed=seed,
        workers=augment["workers"],
    )
    return result


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind: unknown {kind!r}; expected one of {list(KINDS)}")


def _checked_level(family: str, level: float) -> float:
    """`level` as the family reads it (an int for ``bias``), once it is in range."""
    if family not in FAMILIES:
        raise ValueError(f"family: unknown {family!r}; expected one of {list(FAMILIES)}")
    try:
        value = float(level)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"{family} level: {level!r}; expected a finite number")
    if family == "bias":
        if value != round(value):
            raise ValueError(f"bias level: {level!r}; expected a signed integer (pixels)")
        return int(round(value))
    if family in ("omission", "mixed") and not 0.0 <= value <= 1.0:
        raise ValueError(f"{family} level: {level!r}; expected a probability in [0, 1]")
    if value < 0:
        raise ValueError(f"{family} level: {level!r}; expected sigma >= 0 (pixels)")
    return value


def _binary(mask: np.ndarray, where: str) -> np.ndarray:
    """`mask` as uint8 once it is 2-D with values in {0, 1}; errors name `where`."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{where}: expected a 2-D mask, got shape {mask.shape}")
    values = np.unique(mask)
    if not set(values.tolist()) <= {0, 1}:
        raise ValueError(f"{where}: found values {values[:10].tolist()}; expected {{0, 1}}")
    return mask.astype(np.uint8)


def _objects(mask: np.ndarray, kind: str) -> np.ndarray:
    """Labelled objects: 4-connected cells for ``em``, 8-connected lungs for ``cxr``."""
    return label(mask, connectivity=1 if kind == "em" else 2)


def _boundary(
    mask: np.ndarray, kind: str, sigma: float, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    """Each object grown or shrunk by its own radius round(N(0, sigma))."""
    labels = _objects(mask, kind)
    n = int(labels.max())
    radii = np.rint(rng.normal(0.0, sigma, size=n)).astype(int)
    return _morph(mask, labels, radii, kind), {"objects": n, "radii": radii.tolist()}


def _bias(
    mask: np.ndarray, kind: str, k: float, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    """Every object grown (k > 0) or shrunk (k < 0) by |k| pixels."""
    labels = _objects(mask, kind)
    n = int(labels.max())
    return _morph(mask, labels, np.full(n, int(k)), kind), {"objects": n}


def _morph(mask: np.ndarray, labels: np.ndarray, radii: np.ndarray, kind: str) -> np.ndarray:
    """Object i (label i + 1) dilated by radii[i] > 0 or eroded by -radii[i]; for ``em``
    grown cells take membrane only, stay separated and eroded cells keep a pixel."""
    if not np.any(radii):
        return mask.copy()
    em = kind == "em"
    depth = (
        ndimage.distance_transform_edt(mask)
        if not mask.all()
        else np.full(mask.shape, np.inf)  # no background: nothing to erode from
    )
    owner = np.zeros(labels.shape, dtype=np.int32)
    best = np.full(labels.shape, np.inf)
    for region, radius in zip(regionprops(labels), radii, strict=True):
        if radius < 0:
            _shrink(owner, best, depth, region, -int(radius), keep_one=em)
        else:
            _grow(owner, best, labels, region, int(radius), membrane_only=em)
    if em:
        owner = _separate(owner, labels)
    return (owner > 0).astype(np.uint8)


def _grow(
    owner: np.ndarray,
    best: np.ndarray,
    labels: np.ndarray,
    region: Any,
    radius: int,
    *,
    membrane_only: bool,
) -> None:
    """Claim for `region` the pixels within `radius` of it that no other object has nearer;
    the distance transform runs in its bounding box grown by `radius` only."""
    r0, c0, r1, c1 = region.bbox
    window = (
        slice(max(r0 - radius, 0), min(r1 + radius, labels.shape[0])),
        slice(max(c0 - radius, 0), min(c1 + radius, labels.shape[1])),
    )
    local = labels[window]
    dist = ndimage.distance_transform_edt(local != region.label)
    claim = (dist <= radius) & (dist < best[window])
    if membrane_only:
        claim &= (local == 0) | (local == region.label)
    owner[window][claim] = region.label
    best[window][claim] = dist[claim]


def _shrink(
    owner: np.ndarray,
    best: np.ndarray,
    depth: np.ndarray,
    region: Any,
    radius: int,
    *,
    keep_one: bool,
) -> None:
    """Keep the pixels of `region` deeper than `radius`; with `keep_one`, at least its deepest."""
    rows, cols = region.coords.T
    keep = depth[rows, cols] > radius
    if keep_one and not keep.any():
        keep[np.argmax(depth[rows, cols])] = True
    owner[rows[keep], cols[keep]] = region.label
    best[rows[keep], cols[keep]] = 0.0


def _separate(owner: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Zero one pixel of every 4-adjacent pair owned by different cells: the grown one, or
    (both grown) the one of the larger label, so a membrane always separates them; then the
    grown pieces that no longer touch their cell."""
    original = (owner > 0) & (owner == labels)
    drop = np.zeros(owner.shape, dtype=bool)
    for axis in (0, 1):
        head = (slice(None, -1), slice(None)) if axis == 0 else (slice(None), slice(None, -1))
        tail = (slice(1, None), slice(None)) if axis == 0 else (slice(None), slice(1, None))
        a, b, oa, ob = owner[head], owner[tail], original[head], original[tail]
        conflict = (a > 0) & (b > 0) & (a != b)
        drop_a = conflict & ((ob & ~oa) | ((oa == ob) & (a > b)))
        drop[head] |= drop_a
        drop[tail] |= conflict & ~drop_a
    owner = np.where(drop, 0, owner)
    # grown pixels cut off from their cell (specks at membrane junctions) go back to membrane
    pieces = label(owner > 0, connectivity=1)
    return np.where(np.isin(pieces, pieces[original & (owner > 0)]), owner, 0)


def _omission(
    mask: np.ndarray, kind: str, p: float, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    """``cxr``: each lung dropped with probability p; ``em``: each membrane segment."""
    if kind == "em":
        return _omit_membranes(mask, p, rng)
    labels = _objects(mask, kind)
    n = int(labels.max())
    dropped = rng.random(n) < p
    out = mask.copy()
    out[np.isin(labels, np.flatnonzero(dropped) + 1)] = 0
    return out, {"objects": n, "dropped": int(dropped.sum())}


def _omit_membranes(
    mask: np.ndarray, p: float, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    """Merge each pair of adjacent cells with probability p: a membrane pixel becomes cell
    when the cells near it (within the widest membrane's reach) all merged into one."""
    cells = label(mask, connectivity=1)
    n = int(cells.max())
    if n < 2:
        return mask.copy(), {"objects": n, "segments": 0, "dropped": 0}
    reach = int(np.ceil(ndimage.distance_transform_edt(mask == 0).max())) + 1
    nearest = expand_labels(cells, distance=reach)  # every pixel: its nearest cell
    pairs = _adjacent_pairs(nearest)
    merged = rng.random(len(pairs)) < p
    record = {"objects": n, "segments": len(pairs), "dropped": int(merged.sum())}
    if not merged.any():
        return mask.copy(), record
    a, b = pairs[merged].T
    graph = csr_matrix((np.ones(len(a)), (a, b)), shape=(n + 1, n + 1))
    grouped = connected_components(graph, directed=False)[1][nearest]
    size = 2 * reach + 1
    two_cells = ndimage.maximum_filter(nearest, size) != ndimage.minimum_filter(nearest, size)
    one_group = ndimage.maximum_filter(grouped, size) == ndimage.minimum_filter(grouped, size)
    out = mask.copy()
    out[(mask == 0) & two_cells & one_group] = 1
    return out, record


def _adjacent_pairs(labels: np.ndarray) -> np.ndarray:
    """The unique (smaller, larger) label pairs of 4-adjacent pixels, sorted, shape (m, 2)."""
    pairs = [
        np.stack([labels[:-1].ravel(), labels[1:].ravel()], axis=1),
        np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], axis=1),
    ]
    both = np.concatenate(pairs)
    both = np.sort(both[both[:, 0] != both[:, 1]], axis=1)
    return np.unique(both, axis=0).reshape(-1, 2)


def _warp(
    mask: np.ndarray, kind: str, sigma: float, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    """The mask alone resampled by an elastic deformation (nearest neighbour, so binary);
    its own displacement, since ``deform_random_grid`` draws from numpy's global RNG."""
    displacement = rng.normal(0.0, 1.0, size=(2, WARP_GRID, WARP_GRID)) * sigma
    record = {"displacement": np.round(displacement, 4).tolist()}
    if sigma == 0:
        return mask.copy(), record
    warped = import_elasticdeform().deform_grid(mask, displacement, order=0, mode="nearest")
    return (np.asarray(warped) > 0).astype(np.uint8), record


_APPLY: dict[str, Callable[..., tuple[np.ndarray, dict[str, Any]]]] = {
    "boundary": _boundary,
    "bias": _bias,
    "omission": _omission,
    "warp": _warp,
}


def corrupt_dataset(
    processed: Path,
    out: Path,
    *,
    kind: str,
    family: str,
    level: float,
    seed: int,
    mixed: Mapping[str, float] | None = None,
    weight_map: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Copy the processed set `processed` to `out` (atomically, every file byte-identical)
    with the masks of its train images corrupted; with `weight_map` (``preprocess.weight_map``)
    their weight maps are recomputed from the corrupted masks. Writes ``corruption.csv``
    (one row per train image: id, family, level, dice against the clean mask, detail as JSON)
    and ``corruption.json`` (the summary). Returns the per-image table."""
    processed, out = Path(processed), Path(out)
    _check_kind(kind)
    level = _checked_level(family, level)
    if not processed.is_dir():
        raise DataError(f"{processed}: not a folder; expected a processed dataset")
    table = read_split(processed)
    train = sorted(table.loc[table["split"] == "train", "id"])
    if not train:
        raise DataError(f"{processed / 'split.csv'}: no train rows; expected at least one")
    _check_weights(processed, train, weight_map)
    plan = _plan(train, family, level, seed, mixed)
    with staged_dir(out) as work:
        shutil.copytree(processed, work, dirs_exist_ok=True)
        rows = [
            _corrupt_one(processed, work, sid, kind, plan[sid], seed, weight_map) for sid in train
        ]
        result = pd.DataFrame(rows, columns=CSV_COLUMNS)
        result.to_csv(work / "corruption.csv", index=False)
        summary = _summary(result, family, level, seed, plan, mixed)
        (work / "corruption.json").write_text(json.dumps(summary, indent=2) + "\n")
    return result


def _check_weights(processed: Path, train: list[str], weight_map: Mapping | None) -> None:
    """Weight maps of train masks need `weight_map`, else they would go stale."""
    if weight_map is not None:
        return
    for sid in train:
        path = processed / "weights" / f"{sid}.tif"
        if path.is_file():
            raise DataError(
                f"{path}: weight map of a train mask to corrupt; expected weight_map "
                "(the dataset's preprocess.weight_map) to recompute it"
            )


def _plan(
    ids: list[str], family: str, level: float, seed: int, mixed: Mapping[str, float] | None
) -> dict[str, Step]:
    """The (family, level) each train image gets, None for untouched ones: all of them, or
    for ``mixed`` round(level · n) chosen by the dataset seed, each with a drawn family."""
    if family != "mixed":
        return {sid: (family, level) for sid in ids}
    steps = _mixed_steps(mixed)
    rng = np.random.default_rng([int(seed), MIXED_KEY])
    chosen = np.sort(rng.choice(len(ids), size=round(level * len(ids)), replace=False))
    picks = rng.integers(len(steps), size=len(chosen))
    plan: dict[str, Step] = dict.fromkeys(ids)
    for i, k in zip(chosen, picks, strict=True):
        plan[ids[i]] = steps[k]
    return plan


def _mixed_steps(mixed: Mapping[str, float] | None) -> list[tuple[str, float]]:
    """The checked (family, level) choices of ``mixed``, in the order of FAMILIES."""
    odd = sorted(set(mixed or {}) - set(FAMILIES[:4]))
    if odd or not mixed:
        raise ValueError(
            f"mixed: families {odd or 'none'}; expected a non-empty mapping of {FAMILIES[:4]}"
        )
    return [(name, _checked_level(name, mixed[name])) for name in FAMILIES[:4] if name in mixed]


def _corrupt_one(
    processed: Path,
    work: Path,
    sid: str,
    kind: str,
    step: Step,
    seed: int,
    weight_map: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Corrupt the mask of one train image in `work` (and recompute its weight map); its row."""
    path = processed / "masks" / f"{sid}.png"
    clean = _read_mask(path, sid)
    if step is None:
        detail = {"family": "none"}
        return _row(sid, "none", 0.0, 1.0, detail)
    noisy, detail = corrupt_mask(clean, kind, step[0], step[1], image_rng(seed, sid))
    if not np.array_equal(noisy, clean):
        write_png(work / "masks" / f"{sid}.png", noisy)
        if weight_map is not None and (processed / "weights" / f"{sid}.tif").is_file():
            weights = border_weight_map(noisy, **weight_map)
            write_float_tiff(work / "weights" / f"{sid}.tif", weights, level=1)
    return _row(sid, step[0], float(step[1]), dice(noisy, clean), detail)


def _row(sid: str, family: str, level: float, dice: float, detail: dict) -> dict[str, Any]:
    compact = json.dumps(detail, separators=(",", ":"))
    return {"id": sid, "family": family, "level": level, "dice": dice, "detail": compact}


def _read_mask(path: Path, sid: str) -> np.ndarray:
    """A train mask as uint8 {0, 1}; errors name the file."""
    if not path.is_file():
        raise DataError(f"{path}: missing; split.csv lists {sid} as a train image")
    try:
        return _binary(read_gray(path), str(path))
    except ValueError as exc:
        raise DataError(str(exc)) from exc


def _summary(
    result: pd.DataFrame,
    family: str,
    level: float,
    seed: int,
    plan: Mapping[str, Step],
    mixed: Mapping[str, float] | None,
) -> dict[str, Any]:
    """corruption.json: what was asked and how far the train masks moved (Dice)."""
    summary = {
        "family": family,
        "level": level,
        "seed": int(seed),
        "n_train": len(result),
        "n_corrupted": sum(step is not None for step in plan.values()),
        "mean_dice": float(result["dice"].mean()),
        "min_dice": float(result["dice"].min()),
    }
    if family == "mixed":
        summary["mixed"] = dict(_mixed_steps(mixed))
    return summary
