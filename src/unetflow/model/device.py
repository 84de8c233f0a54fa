"""Where a model runs: the device and mixed precision, one home for train, infer and explain.

Autocast applies on CUDA only (bf16, or fp16 with a GradScaler when training); on the CPU the
stages run in fp32, so that a CPU run is exact and deterministic.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class DeviceError(ValueError):
    """A device that is unknown or not present."""


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise DeviceError(f"device: unknown device '{name}'; expected auto, cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device: '{name}' requested but CUDA is not available")
    return torch.device(name)


def amp_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """The autocast dtype of `amp` (none/bf16/fp16) on `device`: None off CUDA or for none."""
    return AMP_DTYPES.get(amp) if device.type == "cuda" else None


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager[Any]:
    """Autocast to `amp` on CUDA; nothing on other devices or for ``none``."""
    dtype = amp_dtype(device, amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
