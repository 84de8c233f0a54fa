"""The infer stage: predictions for every val/test/predict image of a processed dataset.

It writes (:func:`infer_dataset`, each image by :mod:`unetflow.inference.tiling`) into
``results/<dataset>/<model>/predictions/``:

- ``probabilities/<id>.tif``: float32 foreground probability in [0, 1] (cell for EM, lung for
  CXR), zlib-compressed single-page TIFF, the processed image's size, or the scoring size
  where preprocessing wrote ``score_masks/`` (a CXR set trained at a lower resolution than it
  is scored at): then the probability is resized bilinearly before thresholding.
- ``masks/<id>.png``: uint8, 255 where the probability is above ``infer.threshold``, else 0.
- ``index.csv``: ``id,split,height,width,foreground_fraction`` (fraction of mask pixels = 255).
- ``isbi_submission.tif`` (EM datasets with unlabeled ``predict`` slices only): an uncompressed
  32-bit float multi-page TIFF, one page per predict slice in slice order, holding the
  *membrane* probability (1 - cell probability), the layout the ISBI 2012 challenge server takes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from unetflow.inference.tiling import predict_probability, resized_probability, to_mask
from unetflow.io.images import (
    read_gray,
    read_processed_image,
    write_float_tiff,
    write_png,
)
from unetflow.io.outputs import staged_dir
from unetflow.io.processed import SCORE_MASKS, read_split
from unetflow.io.progress import progress
from unetflow.model.checkpoint import load_model
from unetflow.model.device import resolve_device

INFER_SPLITS = ("val", "test", "predict")


def infer_dataset(
    *,
    checkpoint: Path,
    processed: Path,
    out: Path,
    infer_cfg: dict,
    device: str = "auto",
    amp: str = "none",
    fold: int | None = None,
) -> dict:
    """Predict every val/test/predict image of a processed dataset into `out` (module docstring);
    with `fold`, the val and test images of that cross-validation fold only.

    Atomic: the files appear at `out` only once all are written. Returns a summary with the
    number of images, the seconds taken and the throughput in megapixels per second.
    """
    processed, out = Path(processed), Path(out)
    torch_device = resolve_device(device)
    settings = infer_settings(infer_cfg)
    model, meta = load_model(checkpoint, torch_device)
    table = read_split(processed, fold)
    rows = table[table["split"].isin(INFER_SPLITS if fold is None else ("val", "test"))]
    kind = meta.get("dataset", {}).get("kind")
    started = time.perf_counter()
    pixels = 0
    with staged_dir(out) as work:
        (work / "probabilities").mkdir()
        (work / "masks").mkdir()
        index = []
        submission: list[tuple[Any, str, np.ndarray]] = []  # (slice index, id, membrane)
        for row in progress(rows.to_dict("records"), desc="infer", unit="image"):
            sid, split = str(row["id"]), str(row["split"])
            image = read_processed_image(processed / "images" / f"{sid}.tif")
            prob = predict_probability(
                model, image, tile=int(meta["tile"]), device=torch_device, amp=amp, **settings
            )
            score_mask = processed / SCORE_MASKS / f"{sid}.png"
            if score_mask.is_file():  # scored at another resolution than trained at
                prob = resized_probability(prob, read_gray(score_mask).shape)
            mask = to_mask(prob, infer_cfg["threshold"])
            write_float_tiff(work / "probabilities" / f"{sid}.tif", prob, level=1)
            write_png(work / "masks" / f"{sid}.png", mask)
            index.append(
                {
                    "id": sid,
                    "split": split,
                    "height": prob.shape[0],
                    "width": prob.shape[1],
                    "foreground_fraction": float((mask > 0).mean()),
                }
            )
            if kind == "em" and split == "predict":
                submission.append((int(row.get("index", 0)), sid, 1.0 - prob))
            pixels += image.size
        columns = ["id", "split", "height", "width", "foreground_fraction"]
        pd.DataFrame(index, columns=columns).to_csv(work / "index.csv", index=False)
        if submission:
            submission.sort(key=lambda page: page[:2])
            _write_submission(work / "isbi_submission.tif", [page for *_, page in submission])
    seconds = time.perf_counter() - started
    return {
        "images": len(index),
        "seconds": seconds,
        "megapixels_per_s": pixels / 1e6 / seconds if seconds > 0 else float("nan"),
        "device": str(torch_device),
    }


def infer_settings(infer_cfg: dict) -> dict:
    """The predict_probability keywords of params.yaml `infer:` (checked by the config layer);
    the infer stage and the train stage's validation predict with them."""
    return {key: infer_cfg[key] for key in ("overlap", "blend", "tta", "batch_size")}


def _write_submission(path: Path, pages: list[np.ndarray]) -> None:
    """Uncompressed 32-bit float multi-page TIFF, one page per slice (ISBI 2012 server layout)."""
    import tifffile

    stack = np.stack(pages).astype(np.float32)
    tifffile.imwrite(path, stack, photometric="minisblack")
