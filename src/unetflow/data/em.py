"""Preprocessing of the EM membrane datasets (isbi2012, synth_em).

Raw input (``data/raw/<dataset>/``) comes in one of two layouts, detected automatically:

- PNG slices: ``train/images/NN.png``, ``train/labels/NN.png`` and, optionally,
  ``test/images/NN.png`` (the unlabeled stack). Slices are ordered by their numeric name.
  This layout is used when ``train/images`` exists.
- TIFF stacks, as the challenge published them: ``train-volume.tif``, ``train-labels.tif``
  and, optionally, ``test-volume.tif``.

Every slice of a dataset, labelled or not, must have the same height and width (a stack of
serial sections; the ISBI submission is one multi-page TIFF): a slice of another size is an
error naming its file.

Output (``data/processed/<dataset>/``), identical for both layouts except the ``source``
column of split.csv:

- ``images/<id>.tif``: float32. Intensities are scaled to [0, 1] (integer images divided by
  their dtype's maximum) and then z-scored with the mean and standard deviation of the
  *train* split only, so that no statistic leaks from validation or test slices.
- ``masks/<id>.png``: uint8 with values {0, 1}. **1 = cell (raw label 255), 0 = membrane
  (raw label 0)**, the challenge's own polarity. Labels must be strictly binary: {0, 255},
  {0, 1}, or one of those values alone; anything else is an error, not thresholded.
- ``split.csv``: ``id,split,source,index,height,width`` sorted by id. Labelled slices are
  ``slice_NN`` and split into contiguous blocks of slice indices (neighbouring EM sections
  are correlated, so a random split would leak); the unlabeled test stack's slices are
  ``testslice_NN`` with split ``predict``.
- ``stats.json``: the normalisation statistics, the label convention and the split counts.
- ``folds.csv``: the cross-validation fold of every labelled slice (contiguous blocks).
- ``weights/<id>.tif`` (float32, every labelled slice: each trains in some fold) and
  ``weight_map.png`` (the first train mask beside its map), when ``preprocess.weight_map``
  is set: the U-Net paper's border weight map (:mod:`unetflow.data.weightmaps`; keys ``w0``,
  ``sigma``, ``where``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from unetflow.data.folds import contiguous_folds, folds_k, write_folds
from unetflow.io.images import (
    ImageError,
    read_gray,
    read_stack,
    unit_intensities,
    write_float_tiff,
    write_png,
)
from unetflow.io.outputs import staged_dir
from unetflow.io.processed import PREDICT_SPLIT, SPLIT_COLUMNS, DataError
from unetflow.io.progress import progress

LABEL_NAMES = {"0": "membrane", "1": "cell"}


@dataclass(frozen=True)
class _Slice:
    """One 2-D slice of a stack: where it comes from and how to read it."""

    source: str  # raw relative path of the image, with "#page" for a TIFF page
    index: int
    image: Any  # Path of a PNG, or a 2-D array (TIFF page)
    label: Any = None  # Path, 2-D array, or None (unlabeled)
    label_source: str = ""  # raw relative path of the label, like `source`


def preprocess_em(raw: Path, out: Path, cfg: dict) -> None:
    """Turn a raw EM dataset folder into the processed layout described in the module docstring.

    `cfg` is the resolved ``dataset_defs.<name>`` dict; its ``split`` maps ``train``/``val``/
    ``test`` to half-open ``[start, stop]`` ranges of labelled slice indices.
    """
    raw, out = Path(raw), Path(out)
    ranges = {name: (int(start), int(stop)) for name, (start, stop) in cfg["split"].items()}
    labelled, unlabelled, layout = _find_slices(raw)
    n = len(labelled)
    _check_ranges(ranges, n, raw)
    split_of = {i: name for name, (start, stop) in ranges.items() for i in range(start, stop)}
    width = max(2, len(str(max(n, len(unlabelled)) - 1)))

    with staged_dir(out) as work:
        (work / "images").mkdir()
        (work / "masks").mkdir()
        rows: list[dict[str, Any]] = []
        kept: list[tuple[_Slice, np.ndarray, np.ndarray]] = []
        stack = _StackShape(raw)
        for sl in progress(labelled, desc="read labelled slices", unit="slice"):
            if sl.index not in split_of:
                continue
            image = stack.check(_scaled_image(sl.image, raw, sl.source), sl.source)
            mask = _binary_mask(sl.label, raw, sl.label_source)
            if mask.shape != image.shape:
                raise DataError(
                    f"{raw / sl.label_source}: label size {mask.shape} does not match image "
                    f"{sl.source} size {image.shape}; expected the same height and width"
                )
            kept.append((sl, image, mask))

        mean, std = _train_stats([img for sl, img, _ in kept if split_of[sl.index] == "train"])
        if not std > 0:
            raise DataError(
                f"{raw}: train slices are constant (std 0); expected varying intensities"
            )

        weight_cfg = cfg["preprocess"].get("weight_map")  # absent: no weight maps
        if weight_cfg is not None:
            (work / "weights").mkdir()
        for sl, image, mask in kept:
            sid = f"slice_{sl.index:0{width}d}"
            write_float_tiff(work / "images" / f"{sid}.tif", (image - mean) / std, level=1)
            write_png(work / "masks" / f"{sid}.png", mask)
            rows.append(_row(sid, split_of[sl.index], sl, image.shape))
            if weight_cfg is not None:  # every labelled slice trains in some fold
                _write_weight_map(work, sid, mask, weight_cfg)

        for sl in progress(unlabelled, desc="normalise test slices", unit="slice"):
            image = stack.check(_scaled_image(sl.image, raw, sl.source), sl.source)
            sid = f"testslice_{sl.index:0{width}d}"
            write_float_tiff(work / "images" / f"{sid}.tif", (image - mean) / std, level=1)
            rows.append(_row(sid, PREDICT_SPLIT, sl, image.shape))

        table = pd.DataFrame(rows, columns=SPLIT_COLUMNS).sort_values("id", ignore_index=True)
        table.to_csv(work / "split.csv", index=False)
        labelled = [row["id"] for row in rows if row["split"] != PREDICT_SPLIT]
        k = folds_k(cfg, len(labelled), raw)
        if k is not None:
            write_folds(work, contiguous_folds(labelled, k))
        counts = {name: int((table["split"] == name).sum()) for name in ranges}
        counts[PREDICT_SPLIT] = len(unlabelled)
        stats = {
            "mean": mean,
            "std": std,
            "computed_on": "train",
            "scaling": "intensities divided by the dtype maximum to [0, 1], then z-scored",
            "labels": LABEL_NAMES,
            "label_convention": "mask 1 = cell (raw label 255), 0 = membrane (raw label 0)",
            "counts": counts,
            "left_out": n - len(kept),
            "layout": layout,
        }
        (work / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")


class _StackShape:
    """The height and width every slice of a stack must share: those of the first one read."""

    def __init__(self, raw: Path) -> None:
        self.raw = raw
        self.shape: tuple[int, ...] | None = None
        self.first = ""

    def check(self, image: np.ndarray, source: str) -> np.ndarray:
        """`image` (read from `source`) if it has the stack's size, else a DataError naming it."""
        if self.shape is None:
            self.shape, self.first = image.shape, source
        elif image.shape != self.shape:
            raise DataError(
                f"{self.raw / source}: size {image.shape} differs from the rest of the stack "
                f"({self.shape}, e.g. {self.first}); expected every slice to have the same "
                f"height and width"
            )
        return image


def _write_weight_map(work: Path, sid: str, mask: np.ndarray, weight_cfg: dict) -> None:
    """``weights/<id>.tif``: the paper's border weight map of a train mask; the first one is
    also drawn beside its mask in ``weight_map.png``."""
    from unetflow.data.weightmaps import border_weight_map
    from unetflow.plots import weight_map_figure

    weights = border_weight_map(mask, **weight_cfg)
    write_float_tiff(work / "weights" / f"{sid}.tif", weights, level=1)
    if not (work / "weight_map.png").exists():
        weight_map_figure(mask, weights, sid).savefig(work / "weight_map.png", dpi=100)


def _check_ranges(ranges: dict[str, tuple[int, int]], n: int, raw: Path) -> None:
    """Ranges must lie within the stack of `n` labelled slices, train non-empty, all disjoint."""
    for name, (start, stop) in ranges.items():
        if not 0 <= start <= stop <= n:
            raise DataError(
                f"split.{name}: range [{start}, {stop}] is outside the stack of {n} labelled "
                f"slices in {raw}; expected 0 <= start <= stop <= {n}"
            )
    start, stop = ranges["train"]
    if stop <= start:
        raise DataError(
            f"split.train: range [{start}, {stop}] is empty; expected at least one of the "
            f"{n} labelled slices"
        )
    names = list(ranges)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            (a0, a1), (b0, b1) = ranges[a], ranges[b]
            if max(a0, b0) < min(a1, b1):
                raise DataError(
                    f"split.{a} [{a0}, {a1}] and split.{b} [{b0}, {b1}] overlap; expected "
                    f"disjoint ranges of the {n} labelled slices"
                )


def _find_slices(raw: Path) -> tuple[list[_Slice], list[_Slice], str]:
    """Detect the raw layout and list labelled and unlabelled slices in stack order."""
    if (raw / "train" / "images").is_dir():
        return _png_slices(raw) + ("png",)
    if (raw / "train-volume.tif").is_file():
        return _tiff_slices(raw) + ("tiff",)
    raise DataError(
        f"{raw}: no images found; expected train/images/NN.png (+ train/labels/NN.png) "
        f"or train-volume.tif (+ train-labels.tif)"
    )


def _sorted_pngs(folder: Path) -> list[Path]:
    """PNGs of a folder, in numeric order when every name is a number."""
    files = [p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file()]
    if all(p.stem.isdigit() for p in files):
        return sorted(files, key=lambda p: (int(p.stem), p.name))
    return sorted(files)


def _png_slices(raw: Path) -> tuple[list[_Slice], list[_Slice]]:
    images = _sorted_pngs(raw / "train" / "images")
    if not images:
        raise DataError(f"{raw / 'train' / 'images'}: no images found; expected NN.png slices")
    label_dir = raw / "train" / "labels"
    labelled = []
    for i, path in enumerate(images):
        label = label_dir / path.name
        if not label.is_file():
            raise DataError(f"{path}: missing label; expected {label.relative_to(raw)} in {raw}")
        labelled.append(
            _Slice(str(path.relative_to(raw)), i, path, label, str(label.relative_to(raw)))
        )
    image_names = {p.name for p in images}
    extra = sorted(p.name for p in _sorted_pngs(label_dir) if p.name not in image_names)
    if extra:
        raise DataError(
            f"{label_dir}: label(s) {extra[:5]} have no image; expected train/images/<same name>"
        )
    test_dir = raw / "test" / "images"
    tests = _sorted_pngs(test_dir) if test_dir.is_dir() else []
    unlabelled = [_Slice(str(p.relative_to(raw)), i, p) for i, p in enumerate(tests)]
    return labelled, unlabelled


def _tiff_slices(raw: Path) -> tuple[list[_Slice], list[_Slice]]:
    volume = _read_stack(raw / "train-volume.tif")
    labels_path = raw / "train-labels.tif"
    if not labels_path.is_file():
        raise DataError(
            f"{raw / 'train-volume.tif'}: missing label; expected train-labels.tif beside it"
        )
    labels = _read_stack(labels_path)
    if len(labels) != len(volume):
        raise DataError(
            f"{labels_path}: {len(labels)} pages but train-volume.tif has {len(volume)}; "
            f"expected one label page per image page"
        )
    labelled = [
        _Slice(f"train-volume.tif#{i}", i, volume[i], labels[i], f"train-labels.tif#{i}")
        for i in range(len(volume))
    ]
    test_path = raw / "test-volume.tif"
    tests = _read_stack(test_path) if test_path.is_file() else []
    unlabelled = [_Slice(f"test-volume.tif#{i}", i, page) for i, page in enumerate(tests)]
    return labelled, unlabelled


def _read_stack(path: Path) -> np.ndarray:
    try:
        stack = read_stack(path)
    except ImageError as exc:
        raise DataError(str(exc)) from exc
    if len(stack) == 0:
        raise DataError(f"{path}: no images found; expected at least one page")
    return stack


def _load(item: Any) -> np.ndarray:
    """A slice's pixels: read a PNG path, or take a TIFF page as it is."""
    if isinstance(item, Path):
        try:
            return read_gray(item)
        except ImageError as exc:
            raise DataError(str(exc)) from exc
    return np.asarray(item)


def _scaled_image(item: Any, raw: Path, source: str) -> np.ndarray:
    """Image intensities scaled to [0, 1], in float64 (cast to float32 only when written)."""
    return unit_intensities(_load(item), raw / source)


def _binary_mask(item: Any, raw: Path, source: str) -> np.ndarray:
    """Label slice -> uint8 mask, 1 = cell (raw 255 or 1), 0 = membrane (raw 0)."""
    label = _load(item)
    values = np.unique(label)
    allowed = {0, 255} if values.max(initial=0) > 1 else {0, 1}
    if not set(values.tolist()) <= allowed:
        shown = values[:10].tolist()
        more = f" ... ({len(values)} distinct)" if len(values) > 10 else ""
        raise DataError(
            f"{raw / source}: label is not binary, found values {shown}{more}; expected only "
            f"{{0, 255}} (or {{0, 1}}): 0 membrane, 255 cell"
        )
    return (label > 0).astype(np.uint8)


def _train_stats(images: list[np.ndarray]) -> tuple[float, float]:
    """Mean and (population) std over every pixel of the train slices, in float64."""
    total = sum(img.size for img in images)
    mean = sum(float(img.sum(dtype=np.float64)) for img in images) / total
    var = sum(float(np.square(img - mean, dtype=np.float64).sum()) for img in images) / total
    return mean, float(np.sqrt(var))


def _row(sid: str, split: str, sl: _Slice, shape: tuple[int, ...]) -> dict[str, Any]:
    return {
        "id": sid,
        "split": split,
        "source": sl.source,
        "index": sl.index,
        "height": shape[0],
        "width": shape[1],
    }
