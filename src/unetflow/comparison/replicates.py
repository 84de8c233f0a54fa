"""The replicates of the compare stage: one training seed over every selected cross-validation
fold, each fold trained, predicted and scored as train, infer and evaluate do a fixed-split run.

One job per dataset x model x seed (not per fold): several hundred fold jobs would make a no-op
`dvc status` take tens of seconds, since DVC re-reads params.yaml for every stage.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unetflow.evaluation.evaluate import evaluate
from unetflow.inference.infer import infer_dataset
from unetflow.training.trainer import job_config, train

log = logging.getLogger(__name__)


def fold_dir(runs: Path, fold: int) -> Path:
    """The folder of one fold's run under a seed's folder: model.pt, dvclive/, predictions/,
    metrics.json and per_image.csv."""
    return Path(runs) / f"fold{fold}"


def run_replicates(
    *,
    dataset: str,
    model: str,
    seed: int,
    folds: Sequence[int],
    params: dict[str, Any],
    processed: Path,
    augmented: Path,
    runs: Path,
    scores: Path,
    checkpoints: Path,
) -> None:
    """Train `model` with `seed` on each fold's training images, predict its validation and
    test images and score them: `runs`/fold<f>/ and `scores`/fold<f>.csv per fold.

    `params` are the job's (resolved for the preset); `checkpoints`/fold<f> lets a killed
    fold resume where its training stopped."""
    for fold in folds:
        run = fold_dir(runs, fold)
        log.info("replicate %s %s seed %d: fold %d of %s", dataset, model, seed, fold, list(folds))
        train_and_score(
            params=params,
            dataset=dataset,
            model=model,
            seed=seed,
            processed=processed,
            augmented=augmented,
            run=run,
            predictions=run / "predictions",
            scores=Path(scores) / f"fold{fold}.csv",
            checkpoints=Path(checkpoints) / f"fold{fold}",
            fold=fold,
        )
    shutil.rmtree(checkpoints, ignore_errors=True)


def train_and_score(
    *,
    params: dict[str, Any],
    dataset: str,
    model: str,
    seed: int,
    processed: Path,
    augmented: Path,
    run: Path,
    predictions: Path,
    scores: Path,
    checkpoints: Path,
    fold: int | None = None,
) -> None:
    """One run as train, infer and evaluate make it, in one process: `run`/model.pt,
    dvclive/, metrics.json and per_image.csv, the test scores in `scores` (a CSV) and the
    predictions in `predictions`; `checkpoints` lets a killed training resume."""
    device, amp = params["train"]["device"], params["train"]["amp"]
    train(
        **job_config(params, dataset, model),
        processed=processed,
        augmented=augmented,
        seed=seed,
        model_out=run / "model.pt",
        live_dir=run / "dvclive",
        checkpoint_dir=checkpoints,
        fold=fold,
    )
    infer_dataset(
        checkpoint=run / "model.pt",
        processed=processed,
        out=predictions,
        infer_cfg=params["infer"],
        device=device,
        amp=amp,
        fold=fold,
    )
    evaluate(
        dataset=dataset,
        kind=params["dataset_defs"][dataset]["kind"],
        processed=processed,
        predictions=predictions,
        out_metrics=run / "metrics.json",
        out_per_image=run / "per_image.csv",
        live_dir=run / "dvclive",
        fold=fold,
        out_scores=scores,
    )
