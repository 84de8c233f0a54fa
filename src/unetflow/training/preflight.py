"""The preflight: the first steps of a full recipe, to learn whether it trains before an hour
is spent on it.

A probe runs the train stage's own `Trainer` (same model, optimizer, lr schedule, loss, weight
maps and seeded batches) for a few optimizer steps on the processed training images, without
validation, and keeps every step's loss. Its verdict compares the median loss of the last fifth
of the steps with the first fifth's (medians, so that the large loss of the first steps from a
random start, or one noisy batch, does not decide it): ``diverged`` at the first non-finite
loss, ``rose`` when the last is above 1.5 × the first, ``fell`` when it is below 0.98 × the
first, else ``flat``. A recipe is `ok` (safe to run in full) unless it diverged or rose; a flat
one is reported but not stopped, since a few steps cannot tell a slow start from a stall.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from unetflow.training.settings import torch_settings
from unetflow.training.trainer import Job, Trainer, job_config, new_job

RISE = 1.5  # last fifth's median loss above RISE x the first fifth's: the recipe is unstable
FALL = 0.98  # below FALL x the first fifth's: the loss fell


@dataclass
class Probe:
    """The first steps of one recipe on one dataset: its losses and its verdict."""

    dataset: str
    model: str
    optimizer: str
    lr: float
    batch_size: int
    tile: int
    device: str
    steps: int  # asked for
    losses: list[float] = field(default_factory=list)  # one per step run
    step_seconds: list[float] = field(default_factory=list)  # wall time of each step

    @property
    def diverged_at(self) -> int | None:
        """The first step (from 1) whose loss is not finite, or None."""
        for k, value in enumerate(self.losses, start=1):
            if not math.isfinite(value):
                return k
        return None

    def fifths(self) -> tuple[float, float]:
        """Median loss of the first and of the last fifth of the steps (at least one step)."""
        k = max(1, len(self.losses) // 5)
        return float(np.median(self.losses[:k])), float(np.median(self.losses[-k:]))

    @property
    def verdict(self) -> str:
        """diverged, rose, flat or fell (module docstring)."""
        if self.diverged_at is not None:
            return "diverged"
        first, last = self.fifths()
        if last > RISE * first:
            return "rose"
        return "fell" if last < FALL * first else "flat"

    @property
    def ok(self) -> bool:
        """Whether the recipe is safe to run in full: its loss stayed finite and did not rise."""
        return self.verdict in ("fell", "flat")

    def record(self) -> dict[str, Any]:
        """The probe as JSON-ready values, verdict included (non-finite losses as strings)."""
        row = asdict(self)
        row["losses"] = [v if math.isfinite(v) else str(v) for v in self.losses]
        first, last = self.fifths() if self.diverged_at is None else (None, None)
        row.update(
            diverged_at=self.diverged_at,
            first_fifth=first,
            last_fifth=last,
            s_per_step=float(np.median(self.step_seconds)) if self.step_seconds else None,
            verdict=self.verdict,
            ok=self.ok,
        )
        return row


def from_record(row: dict[str, Any]) -> Probe:
    """A probe back from its record (as :meth:`Probe.record` wrote it), to judge it again."""
    names = {f.name for f in fields(Probe)}
    probe = Probe(**{k: v for k, v in row.items() if k in names})
    probe.losses = [float(v) for v in probe.losses]
    return probe


def steps_for(batch_size: int, single: int, batched: int) -> int:
    """Steps to probe: `single` for a batch-1 recipe (the noisiest), else `batched`."""
    return single if batch_size == 1 else batched


def probe(job: Job, steps: int, on_step: Callable[[int, float], None] | None = None) -> Probe:
    """Run the first `steps` optimizer steps of `job`'s recipe (at most the recipe's own
    count); stop at the first non-finite loss. `on_step(step, loss)` is called after each."""
    s = job.settings
    steps = min(steps, s.epochs * s.steps)
    with torch_settings(s, job.device):
        trainer = Trainer(job)
        trainer.set_up()
        result = Probe(
            dataset=job.dataset,
            model=job.model_name,
            optimizer=s.optimizer,
            lr=s.lr,
            batch_size=s.batch_size,
            tile=trainer.parts.tile,
            device=str(job.device),
            steps=steps,
        )
        trainer.parts.net.train()
        for k in range(steps):
            if k % s.steps == 0:
                trainer.parts.schedule.start_epoch(k // s.steps)
            started = time.perf_counter()
            value = float(trainer.step())  # float() waits for the step on a GPU too
            result.step_seconds.append(time.perf_counter() - started)
            result.losses.append(value)
            if on_step is not None:
                on_step(k + 1, value)
            if not math.isfinite(value):
                break
    return result


def probe_recipe(
    params: dict[str, Any],
    dataset: str,
    model: str,
    processed: Path,
    steps: int,
    on_step: Callable[[int, float], None] | None = None,
) -> Probe:
    """Probe `model`'s recipe on `dataset` as the train stage would run it with `params` (a
    train job's view: dataset_defs, model_defs, train, infer, seed), from `processed`."""
    with tempfile.TemporaryDirectory(prefix="unetflow-preflight-") as scratch:
        job = new_job(
            **job_config(params, dataset, model),
            processed=processed,
            augmented=None,
            seed=params["seed"],
            model_out=Path(scratch) / "model.pt",
            live_dir=Path(scratch) / "live",
            checkpoint_dir=Path(scratch) / "checkpoints",
        )
        return probe(job, steps, on_step)


def table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of probe records: one line per recipe and dataset."""
    lines = [
        "| dataset | model | optimizer | lr | batch | tile | steps | s/step (median) | first fifth "
        "| last fifth | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        first = f"{r['first_fifth']:.4f}" if r["first_fifth"] is not None else "—"
        last = f"{r['last_fifth']:.4f}" if r["last_fifth"] is not None else "—"
        per_step = f"{r['s_per_step']:.3g}" if r["s_per_step"] is not None else "—"
        verdict = r["verdict"]
        if r["diverged_at"] is not None:
            verdict = f"diverged at step {r['diverged_at']}"
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['optimizer']} | {r['lr']:g} "
            f"| {r['batch_size']} | {r['tile']} | {len(r['losses'])}/{r['steps']} "
            f"| {per_step} | {first} | {last} | {verdict} |"
        )
    return "\n".join(lines) + "\n"
