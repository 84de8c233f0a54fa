"""Reading and writing images with errors that name the file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile
from skimage import io as skio
from skimage.color import rgb2gray, rgba2rgb
from skimage.transform import resize

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF


class ImageError(ValueError):
    """An image file that cannot be used; the message names the file."""


def read_gray(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a PNG or TIFF as a 2-D array; RGB(A) and palette images become 8-bit grey."""
    path = Path(path)
    try:
        if path.suffix.lower() in {".tif", ".tiff"}:
            image = tifffile.imread(path)
        else:
            image = skio.imread(path)
    except Exception as exc:  # every reader has its own exception types
        raise ImageError(
            f"{path}: cannot read image; expected a PNG or TIFF file ({_unreadable(path, exc)})"
        ) from exc
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        # rgba2rgb and rgb2gray return floats in [0, 1] for integer input: scale back to the
        # input's integer range (RGBA is composited over white).
        dtype = image.dtype
        rgb = rgba2rgb(image) if image.shape[-1] == 4 else image
        gray = rgb2gray(rgb)
        if np.issubdtype(dtype, np.integer):
            image = np.round(gray * np.iinfo(dtype).max).astype(dtype)
        else:
            image = gray
    if image.ndim != 2:
        raise ImageError(f"{path}: expected a 2-D grey or RGB(A) image, got shape {image.shape}")
    return image


def _unreadable(path: Path, exc: Exception) -> str:
    """Why a file failed to read, in words: empty, not an image, or the reader's own reason."""
    # imageio appends install hints for other plugins on further lines: keep the first.
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError:
        return reason
    if not head:
        return "the file is empty"
    if head.startswith(PNG_SIGNATURE):
        return f"damaged or truncated PNG: {reason}"
    if head[:4] in TIFF_SIGNATURES:
        return f"damaged or truncated TIFF: {reason}"
    if "Could not find a backend" in reason:  # imageio: no plugin recognises the bytes
        return f"not a known image format; the file starts with {head!r}"
    return reason


def read_stack(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a multi-page TIFF as a (pages, height, width) array."""
    path = Path(path)
    try:
        stack = tifffile.imread(path)
    except Exception as exc:
        raise ImageError(f"{path}: cannot read TIFF stack ({exc})") from exc
    if stack.ndim == 2:
        stack = stack[None]
    if stack.ndim != 3:
        raise ImageError(f"{path}: expected a multi-page grey TIFF, got shape {stack.shape}")
    return stack


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write an 8-bit PNG (no low-contrast warning)."""
    skio.imsave(Path(path), np.asarray(image, dtype=np.uint8), check_contrast=False)


def write_float_tiff(
    path: str | os.PathLike[str], image: np.ndarray, *, level: int | None = None
) -> None:
    """Write a float32 TIFF (one page, or many for a 3-D array), zlib-compressed.

    `level` is the zlib level (None: zlib's default); 1 is about 4x faster than the
    default on 512x512 slices for ~10% larger files, which matters for bulk stage outputs.
    """
    args = {} if level is None else {"compressionargs": {"level": level}}
    tifffile.imwrite(Path(path), np.asarray(image, dtype=np.float32), compression="zlib", **args)


def read_float_tiff(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a float32 TIFF written by write_float_tiff."""
    return np.asarray(tifffile.imread(Path(path)), dtype=np.float32)


def read_processed_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a preprocessed image (2-D float32 TIFF of finite values); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: not found; expected a preprocessed image listed in split.csv")
    try:
        image = read_float_tiff(path)
    except Exception as exc:  # tifffile raises several types for damaged files
        raise ImageError(f"{path}: cannot read float TIFF ({exc})") from exc
    if image.ndim != 2:
        raise ImageError(f"{path}: expected a 2-D image, got shape {image.shape}")
    if not np.isfinite(image).all():
        raise ImageError(f"{path}: contains NaN or inf; expected finite intensities")
    return image


def resize_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize to `shape`, stretched (the aspect ratio is not kept), anti-aliased when
    shrinking, edge mode. Preprocessing, inference and `unetflow predict` all resize with it,
    so that they see the same pixels. Returns `image` itself when it has the shape already."""
    if image.shape == tuple(shape):
        return image
    return resize(image, shape, order=1, mode="edge", anti_aliasing=True, preserve_range=True)


def unit_intensities(image: np.ndarray, path: str | Path) -> np.ndarray:
    """A 2-D grey image scaled to [0, 1] in float64: integers divided by their dtype's maximum.

    The one scaling of every preprocessing kind and of `unetflow predict`, so that all
    images meet a model on the same scale; errors name `path`, the file the pixels came from.
    """
    if image.ndim != 2:
        raise ImageError(f"{path}: expected a 2-D grey image, got shape {image.shape}")
    if image.dtype == bool:
        return image.astype(np.float64)
    if np.issubdtype(image.dtype, np.integer):
        if image.min() < 0:
            raise ImageError(f"{path}: negative intensities; expected unsigned pixels")
        return image.astype(np.float64) / np.iinfo(image.dtype).max
    image = image.astype(np.float64)
    if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
        raise ImageError(
            f"{path}: float intensities outside [0, 1]; expected integer pixels or floats in [0, 1]"
        )
    return image
