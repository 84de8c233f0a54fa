"""The tile geometry of a U-Net: which square input sizes it takes and what size they map to.

Pure arithmetic, without torch, so that the config layer can refuse a tile a model cannot take
before any job runs, and the model itself checks the same way.
"""

from __future__ import annotations

from typing import Any

PADDINGS = ("valid", "same")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """ValueError naming `name` unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f"{name}: '{value}' is not one of {list(choices)}")


def _size_error(input_size: int, depth: int, padding: str) -> str | None:
    """Why `input_size` does not fit the network, or None when it does."""
    size = input_size
    shrink = 4 if padding == "valid" else 0
    for level in range(depth):
        size -= shrink
        if size < 2:
            return f"level {level} leaves {size} px before its max-pool"
        if size % 2:
            return f"the max-pool of level {level} would see an odd size ({size} px)"
        size //= 2
    size -= shrink
    if size < 1:
        return f"the bottleneck leaves {size} px"
    for level in reversed(range(depth)):
        size = 2 * size - shrink
        if size < 1:
            return f"the up-path at level {level} leaves {size} px"
    return None


def _nearest_valid(input_size: int, depth: int, padding: str, count: int = 2) -> list[int]:
    """Up to `count` valid sizes below and `count` above `input_size`."""
    step_limit = 2 ** (depth + 1) * (count + 1) + 256
    below = [
        s for s in range(input_size - 1, 0, -1)[:step_limit] if not _size_error(s, depth, padding)
    ][:count]
    above = [
        s
        for s in range(input_size + 1, input_size + 1 + step_limit)
        if not _size_error(s, depth, padding)
    ][:count]
    return sorted(below) + above


def output_size(input_size: int, depth: int, padding: str) -> int:
    """Output size of a U-Net for a square input of `input_size` px.

    Raises ValueError naming the size, the reason and the nearest valid sizes when some max-pool
    would see an odd size or the map would vanish (572 -> 388 for the paper's depth-4 valid net).
    """
    check_choice("padding", padding, PADDINGS)
    if depth < 0:
        raise ValueError(f"depth: {depth} must be >= 0")
    reason = _size_error(int(input_size), depth, padding)
    if reason:
        nearest = _nearest_valid(int(input_size), depth, padding)
        raise ValueError(
            f"input size {input_size} px does not fit a depth-{depth} '{padding}' U-Net: "
            f"{reason}; nearest valid sizes: {nearest}"
        )
    if padding == "same":
        return int(input_size)
    size = int(input_size)
    for _ in range(depth):
        size = (size - 4) // 2
    size -= 4
    for _ in range(depth):
        size = 2 * size - 4
    return size


def valid_input_sizes(depth: int, padding: str, lo: int, hi: int) -> list[int]:
    """Every input size in [lo, hi] that `output_size` accepts."""
    check_choice("padding", padding, PADDINGS)
    return [s for s in range(max(lo, 1), hi + 1) if not _size_error(s, depth, padding)]
