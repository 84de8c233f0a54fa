"""Which images a figure shows: the best, median and worst test image by Dice (the evaluate
stage's panels) and the best and worst by IoU of each group (the explain stage). Ties are
broken by id, so the choice is the same on every run.
"""

from __future__ import annotations

import pandas as pd

PANEL_ROWS = ("best", "median", "worst")


def panel_cases(test: pd.DataFrame) -> list[tuple[str, str, float]]:
    """(label, id, dice) of the best, median and worst test image by Dice (ties: by id).

    Images are sorted by (Dice, id); worst is the first, best the last and median the one at
    index (n - 1) // 2. With fewer than three images a row repeats an image.
    """
    if len(test) == 0:
        return []
    ordered = ranked(test, "dice")
    pick = {"best": ordered[-1], "median": ordered[(len(ordered) - 1) // 2], "worst": ordered[0]}
    return [(label, pick[label][1], pick[label][0]) for label in PANEL_ROWS]


#: The test-split groups whose best and worst image (by IoU) are explained, in this order.
GROUPS = ("male", "female", "normal", "abnormal")
GROUP_COLUMN = {"male": "sex", "female": "sex", "normal": "finding", "abnormal": "finding"}
CASES = ("best", "worst")


def select_cases(per_image: pd.DataFrame, split: str = "test") -> list[tuple[str, str, str, float]]:
    """(group, best|worst, id, IoU) of the best and worst `split` image by IoU of each group
    of :data:`GROUPS` (ties by id); ``all`` when the table has no sex/finding columns."""
    rows = per_image[per_image["split"] == split]
    groups = [(g, rows[rows[GROUP_COLUMN[g]] == g]) for g in GROUPS if GROUP_COLUMN[g] in rows]
    if not groups:
        groups = [("all", rows)]
    cases = []
    for group, members in groups:
        if members.empty:
            continue
        ordered = ranked(members, "iou")
        for case, (iou, sid) in zip(CASES, (ordered[-1], ordered[0]), strict=True):
            cases.append((group, case, sid, iou))
    return cases


def ranked(table: pd.DataFrame, metric: str) -> list[tuple[float, str]]:
    """(value, id) of every row of `table`, sorted by `metric` then id: the worst first."""
    return sorted(zip(table[metric].astype(float), table["id"].astype(str), strict=True))
