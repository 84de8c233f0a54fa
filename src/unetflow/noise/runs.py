"""The noise_runs stage: one model trained on one noisy dataset (the corrupt stage's copy, its
training masks corrupted, its validation and test masks clean), predicted and scored on the
clean test masks, in one process."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from unetflow.comparison.replicates import train_and_score


def run_noisy(
    *,
    dataset: str,
    model: str,
    seed: int,
    params: dict[str, Any],
    processed: Path,
    augmented: Path,
    run: Path,
    scores: Path,
    work: Path,
) -> None:
    """Train `model` with `seed` on the noisy `processed` / `augmented` data and score it on
    the clean test masks: `run`/model.pt, dvclive/, metrics.json, per_image.csv and the test
    scores in `scores`. The predictions and the resume checkpoints live in `work`, which is
    removed at the end (a killed run resumes from its checkpoint there)."""
    work = Path(work)
    train_and_score(
        params=params,
        dataset=dataset,
        model=model,
        seed=seed,
        processed=processed,
        augmented=augmented,
        run=Path(run),
        predictions=work / "predictions",
        scores=Path(scores),
        checkpoints=work / "checkpoints",
    )
    shutil.rmtree(work, ignore_errors=True)
