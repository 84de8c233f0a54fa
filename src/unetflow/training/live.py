"""Per-epoch training curves in DVCLive's layout.

DVCLive (``dvcyaml=None``) when importable, otherwise a writer of the same files:
``metrics.json`` (latest values, nested by ``/``) and ``plots/metrics/<name>.tsv``. One step
per epoch (0-based): train/loss, val/loss, val/dice, val/iou, lr, img_per_s.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any


class LiveLog:
    """Per-epoch metrics in DVCLive's layout: DVCLive itself, or an equivalent writer.

    The fallback (for machines without dvclive) writes what ``Live(dir, dvcyaml=None,
    save_dvc_exp=False, report=None)`` with ``log_metric`` + ``next_step`` writes: one
    ``plots/metrics/<name>.tsv`` per metric (header ``step\\t<last name part>``) and
    ``metrics.json`` with the latest values nested by ``/`` plus ``step``, indented by 4.
    """

    def __init__(self, live_dir: Path, *, use_dvclive: bool | None = None) -> None:
        self.dir = Path(live_dir)
        self.live: Any = None
        if use_dvclive is not False:
            try:
                from dvclive import Live
            except ImportError:
                if use_dvclive:
                    raise
            else:
                self.live = Live(str(self.dir), dvcyaml=None, save_dvc_exp=False, report=None)
                return
        self.summary: dict[str, Any] = {}
        self.step: int | None = None
        shutil.rmtree(self.dir / "plots" / "metrics", ignore_errors=True)
        (self.dir / "metrics.json").unlink(missing_ok=True)
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def backend(self) -> str:
        """``dvclive`` or ``builtin``."""
        return "dvclive" if self.live is not None else "builtin"

    def replay(self, history: list[dict[str, Any]]) -> None:
        """Log again the steps of a resumed run (rows of ``step`` and ``metrics``)."""
        for row in history:
            self.log(int(row["step"]), dict(row["metrics"]))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Log one step's metrics and close the step."""
        if self.live is not None:
            self.live.step = step
            for name, value in metrics.items():
                self.live.log_metric(name, value)
            self.live.next_step()
            return
        self.step = step
        for name, value in metrics.items():
            self._write_metric(step, name, value)
        self._write_summary()

    def _write_metric(self, step: int, name: str, value: float) -> None:
        """One row of plots/metrics/<name>.tsv, and the latest value in the summary."""
        cell = str(value) if math.isnan(value) or math.isinf(value) else value
        path = self.dir / "plots" / "metrics" / f"{name}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists()
        leaf = os.path.basename(name)
        with open(path, "a", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(
                handle, ["step", leaf], delimiter="\t", lineterminator=os.linesep
            )
            if not existed:
                writer.writeheader()
            writer.writerow({"step": step, leaf: cell})
        node = self.summary
        *parents, last = os.path.normpath(name).split(os.sep)
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = cell

    def _write_summary(self) -> None:
        summary = dict(self.summary)
        if self.step is not None:
            summary["step"] = self.step
        text = json.dumps(summary, indent=4) + "\n"
        (self.dir / "metrics.json").write_text(text, encoding="utf-8")

    def end(self) -> None:
        """Close the log (DVCLive's end; the fallback's summary once more)."""
        if self.live is not None:
            self.live.end()
        else:
            self._write_summary()
