"""The noise_scores stage: a fixed-split model's test predictions scored against noisy test
masks, each selected noise family at each selected level, the masks corrupted with the study's
own test seed (``noise.test_seed``), used only here. The noise stage compares the models on them, to
show which differences of the clean-label ranking label noise in the test set can flip.

The masks are those the clean test is scored on (``score_masks/`` where preprocessing wrote
them), so the family's pixel levels are scaled to their size (levels are in px of a 512-px
image).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from unetflow.data.corrupt import LEVEL_PX, corrupt_masks, level_value, scaled_level
from unetflow.evaluation.metrics import dice
from unetflow.evaluation.scoring import image_metrics, load_pair, metric_names
from unetflow.io.outputs import write_text_atomic
from unetflow.io.processed import read_split
from unetflow.io.progress import progress


def score_noisy_tests(
    *,
    kind: str,
    families: Sequence[str],
    levels: Sequence[int],
    noise: dict[str, Any],
    seed: int,
    processed: Path,
    predictions: Path,
    out: Path,
) -> pd.DataFrame:
    """Score every test image's prediction against its mask corrupted by each of `families`
    at each of `levels` (1-based into the dataset's `noise` definition); write and return the
    table (id, family, level, label_dice, every metric of the kind)."""
    split = read_split(processed)
    ids = list(split.loc[split["split"] == "test", "id"])
    loaded = {sid: load_pair(Path(processed), Path(predictions), sid) for sid in ids}
    truths = {sid: truth.astype("uint8") for sid, (_, truth, _) in loaded.items()}
    width = next(iter(truths.values())).shape[1] if truths else LEVEL_PX
    rows = []
    for family, level in ((f, level) for f in families for level in levels):
        value, mixed = scaled_level(family, level_value(noise, family, level), width, noise)
        noisy = corrupt_masks(truths, kind, family, value, seed, mixed)
        for sid in progress(ids, desc=f"score {family} level {level}", unit="image"):
            pred, truth, prob = loaded[sid]
            mask = noisy[sid][0]
            values = image_metrics(pred, mask, prob, kind)
            label = {"label_dice": dice(mask, truth)}
            rows.append({"id": sid, "family": family, "level": level, **label, **values})
    columns = ["id", "family", "level", "label_dice", *metric_names(kind)]
    table = pd.DataFrame(rows, columns=columns)
    write_text_atomic(Path(out), table.to_csv(index=False))
    return table
