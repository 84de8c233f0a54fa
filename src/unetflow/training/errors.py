"""The train stage's user error, in a module of its own so every unit of the stage can raise it."""

from __future__ import annotations


class TrainingError(RuntimeError):
    """Training cannot start or diverged; the message names the key, file or step."""
