"""`unetflow predict`: a trained model applied to arbitrary PNG/TIFF images (see
:func:`predict_files` for the pre- and post-processing).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from unetflow.data.intensity import normalise
from unetflow.inference.tiling import (
    InferenceError,
    check_settings,
    predict_probability,
    resized_probability,
    to_mask,
)
from unetflow.io.images import (
    ImageError,
    read_gray,
    resize_image,
    unit_intensities,
    write_float_tiff,
    write_png,
)
from unetflow.io.outputs import atomic_file
from unetflow.io.progress import progress
from unetflow.model.checkpoint import load_model
from unetflow.model.device import resolve_device

IMAGE_SUFFIXES = (".png", ".tif", ".tiff")


# Defaults of `unetflow predict`, the same as params.yaml `infer:`.
PREDICT_DEFAULTS = {"overlap": 0.25, "blend": "gaussian", "batch_size": 4, "threshold": 0.5}


def list_inputs(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Image files named by `inputs`: files as given, folders by their PNG/TIFF files (sorted).

    Output files are named by the input stem, so two inputs with the same stem are an error.
    """
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(
                p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not found:
                raise FileNotFoundError(f"{item}: no .png/.tif/.tiff images in this folder")
            files.extend(found)
        elif item.is_file():
            if item.suffix.lower() not in IMAGE_SUFFIXES:
                raise ImageError(f"{item}: unsupported file type; expected .png, .tif or .tiff")
            files.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder")
    if not files:
        raise FileNotFoundError("--input: no images given")
    seen: dict[str, Path] = {}
    for path in files:
        if path.stem in seen:
            raise ImageError(
                f"{path}: same name as {seen[path.stem]}; outputs are named by the input name, "
                f"expected distinct names"
            )
        seen[path.stem] = path
    return files


def prepare_image(raw: np.ndarray, path: Path, meta: dict) -> np.ndarray:
    """A raw image as the model saw its training data: [0, 1], resized (CXR), normalised as
    the checkpoint's ``normalisation`` record says (:mod:`unetflow.data.intensity`)."""
    image = unit_intensities(raw, path).astype(np.float32)
    size = (meta.get("dataset", {}).get("preprocess") or {}).get("size")
    if size:
        image = resize_image(image, (int(size), int(size))).astype(np.float32)
    return normalise(image, meta["normalisation"])


def predict_files(
    *,
    model_path: Path,
    inputs: Sequence[str | os.PathLike[str]],
    output: Path,
    device: str = "auto",
    tta: bool = False,
    threshold: float = PREDICT_DEFAULTS["threshold"],
    overlap: float = PREDICT_DEFAULTS["overlap"],
    blend: str = PREDICT_DEFAULTS["blend"],
    batch_size: int = PREDICT_DEFAULTS["batch_size"],
    amp: str = "none",
) -> dict:
    """Apply a checkpoint to arbitrary images; write ``<output>/masks/<stem>.png`` (0/255) and
    ``<output>/probabilities/<stem>.tif`` (float32) at each input's own size.

    Each image is read as grey (RGB/RGBA/palette converted), scaled to [0, 1] by its dtype
    maximum, and, when the checkpoint's dataset was resized in preprocessing
    (``preprocess.size``, the chest X-rays), stretched to size×size without keeping the aspect
    ratio, as the 512×512 Shenzhen copies were made, and normalised as the model's training
    data were (its ``normalisation`` record: the train split's z-score or each image's own
    percentile window and z-score). The probability is stretched back to the
    input size (bilinear) before thresholding. Every file is written atomically, so an error
    (which names the bad file) leaves only complete outputs of the images before it.
    """
    files = list_inputs(inputs)
    torch_device = resolve_device(device)
    check_settings(overlap=overlap, blend=blend, batch_size=batch_size, amp=amp)
    model, meta = load_model(model_path, torch_device)
    output = _output_folder(Path(output))
    started = time.perf_counter()
    for path in progress(files, desc="predict", unit="image"):
        raw = read_gray(path)
        image = prepare_image(raw, path, meta)
        prob = predict_probability(
            model,
            image,
            tile=int(meta["tile"]),
            overlap=overlap,
            blend=blend,
            tta=tta,
            batch_size=batch_size,
            device=torch_device,
            amp=amp,
        )
        prob = resized_probability(prob, raw.shape)
        with atomic_file(output / "probabilities" / f"{path.stem}.tif") as tmp:
            write_float_tiff(tmp, prob)
        with atomic_file(output / "masks" / f"{path.stem}.png") as tmp:
            write_png(tmp, to_mask(prob, threshold))
    return {"images": len(files), "seconds": time.perf_counter() - started, "output": str(output)}


def _output_folder(output: Path) -> Path:
    """`output` with its masks/ and probabilities/ folders made; an InferenceError when a file
    is in the way."""
    for folder in (output / "masks", output / "probabilities"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            blocker = next(p for p in (folder, *folder.parents) if p.exists() and not p.is_dir())
            raise InferenceError(
                f"--output {output}: {blocker} is a file; expected a folder (made if missing)"
            ) from exc
    return output
