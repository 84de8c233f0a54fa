"""Per-image random generators that depend on the image's id, never on processing order."""

from __future__ import annotations

import hashlib

import numpy as np


def image_key(sid: str) -> int:
    """A stable 64-bit integer for an image id (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(sid.encode()).digest()[:8], "little")


def image_rng(seed: int, sid: str) -> np.random.Generator:
    """The generator of image `sid` under `seed`: the same whatever other images exist."""
    return np.random.default_rng([int(seed), image_key(sid)])
