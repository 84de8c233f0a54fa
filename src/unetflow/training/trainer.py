"""Training of the U-Net family and of the mean-mask baseline (the train stage).

`train` is the stage's entry point. A U-Net is trained by a `Trainer`, whose `run` is a
short list of hooks over the units of this package: the data and seeded batches
(:mod:`~unetflow.training.sampling`), the losses (:mod:`~unetflow.training.losses`), the
optimizer and lr schedule (:mod:`~unetflow.training.schedules`), the resume checkpoint
(:mod:`~unetflow.training.resume`) and the DVCLive curves (:mod:`~unetflow.training.live`).
Each epoch is validated on the whole ``val`` images, predicted by overlap-tile inference
exactly as the infer stage does; ``model_out`` holds the best weights (by ``select``) and the
checkpoint folder is removed after success. The mean-mask baseline is the mean of the
processed training masks, validated once.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unetflow.config.geometry import output_size
from unetflow.evaluation.metrics import dice, iou
from unetflow.inference.tiling import predict_probability
from unetflow.io.progress import progress
from unetflow.model.checkpoint import save_model
from unetflow.model.device import DeviceError, amp_dtype, resolve_device
from unetflow.model.unet import MeanMask, build_model
from unetflow.training.errors import TrainingError
from unetflow.training.live import LiveLog
from unetflow.training.losses import loss_value, out_channels_for, probability_bce
from unetflow.training.resume import (
    LAST,
    Progress,
    cpu_copy,
    fingerprint,
    read_resume,
    restore,
    write_resume,
)
from unetflow.training.sampling import (
    Data,
    Pairs,
    TileBatches,
    dataset_allows_flips,
    load_data,
    use_weight_maps,
)
from unetflow.training.schedules import LrSchedule, better, build_optimizer
from unetflow.training.settings import (
    SPEED_ONLY_KEYS,
    RunSettings,
    Settings,
    settings_for,
    torch_settings,
)

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One train job: what it trains on and with, where it writes, its settings and device."""

    dataset: str
    dataset_cfg: dict
    model_name: str
    model_cfg: dict
    train_cfg: dict
    infer_cfg: dict
    seed: int
    settings: RunSettings
    device: torch.device
    processed: Path
    augmented: Path | None
    model_out: Path
    live_dir: Path
    checkpoint_dir: Path
    fold: int | None = None  # a cross-validation fold's split instead of split.csv's

    def say(self, message: str) -> None:
        """Log a progress line of this job."""
        log.info("train %s/%s: %s", self.dataset, self.model_name, message)

    def configs(self) -> dict[str, Any]:
        """The configuration a resume checkpoint must share (speed-only keys left out)."""
        return {
            "dataset": self.dataset,
            "dataset_cfg": self.dataset_cfg,
            "model": self.model_name,
            "model_cfg": self.model_cfg,
            "train_cfg": {
                k: v for k, v in (self.train_cfg or {}).items() if k not in SPEED_ONLY_KEYS
            },
            "infer_cfg": self.infer_cfg,
        } | ({} if self.fold is None else {"fold": self.fold})

    def meta(self, data: Data, tile: int, out_channels: int, summary: dict) -> dict[str, Any]:
        """The metadata of model_out: what inference needs to rebuild and feed the model."""
        return {
            "model": {**self.model_cfg, "name": self.model_name, "out_channels": out_channels},
            "dataset": {
                "name": self.dataset,
                "kind": self.dataset_cfg.get("kind"),
                "preprocess": dict(self.dataset_cfg.get("preprocess") or {}),
            },
            "normalisation": data.normalisation,
            "tile": int(tile),
            "infer": dict(self.infer_cfg or {}),
            "train": summary,
        }

    def summary(self, **values: Any) -> dict[str, Any]:
        """The training summary: the job's names, device and torch version, then `values`."""
        return {
            "dataset": self.dataset,
            "model": self.model_name,
            "device": str(self.device),
            "torch": str(torch.__version__),
            **values,
        }


def val_metrics(
    model: nn.Module, val: Pairs, s: RunSettings, tile: int, device: torch.device
) -> dict[str, float]:
    """val/loss, val/dice and val/iou of full-image overlap-tile inference (means over images)."""
    losses, dices, ious = [], [], []
    amp = s.amp if device.type == "cuda" else "none"
    for image, mask in zip(val.images, val.masks, strict=True):
        prob = predict_probability(model, image, tile=tile, device=device, amp=amp, **s.infer)
        pred = prob > s.threshold
        losses.append(probability_bce(prob, mask))
        dices.append(dice(pred, mask))
        ious.append(iou(pred, mask))
    return {
        "val/loss": float(np.mean(losses)),
        "val/dice": float(np.mean(dices)),
        "val/iou": float(np.mean(ious)),
    }


# --------------------------------------------------------------------------- U-Net


@dataclass
class _Parts:
    """A U-Net and what steps it: the optimizer, lr schedule, AMP dtype and gradient scaler."""

    net: nn.Module
    forward: Callable[[Tensor], Tensor]  # the net, compiled when the settings say so
    tile: int
    out: int
    out_channels: int
    optimizer: torch.optim.Optimizer
    schedule: LrSchedule
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None


def tile_for(job: Job, data: Data) -> int:
    """The training and inference tile: `model_defs.<m>.tile`, or with ``tile: image`` the
    side of the largest processed image (the whole image is one tile), checked against the
    network's depth."""
    tile = job.model_cfg["tile"]
    if tile != "image":
        return int(tile)
    side = max(max(a.shape) for a in [*data.train.images, *data.val.images])
    try:
        output_size(side, int(job.model_cfg["depth"]), job.model_cfg["padding"])
    except ValueError as exc:
        raise TrainingError(
            f"model_defs.{job.model_name}.tile: image means a {side} px tile for the processed "
            f"images in {job.processed}, which the network cannot take: {exc}"
        ) from exc
    return side


def _build(job: Job, s: Settings, out_channels: int, tile: int) -> _Parts:
    """The seeded model of `job` on its device, with its optimizer and schedule."""
    device = job.device
    torch.manual_seed(job.seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(job.seed)
    try:
        net = build_model(job.model_cfg, out_channels)
    except (ValueError, TypeError) as exc:
        raise TrainingError(f"model_defs.{job.model_name}: {exc}") from exc
    out = int(net.output_size(tile))
    net = net.to(device)
    if s.channels_last:
        net = net.to(memory_format=torch.channels_last)
    forward = torch.compile(net) if s.compile else net
    optimizer = build_optimizer(s, net.parameters())
    schedule = LrSchedule(s, optimizer, maximise=s.select != "loss")
    dtype = amp_dtype(device, s.amp)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return _Parts(net, forward, tile, out, out_channels, optimizer, schedule, dtype, scaler)


class _Trained(NamedTuple):
    """An epoch's training figures, logged beside its validation metrics."""

    loss: float  # mean over the steps
    lr: float
    img_per_s: float


class Trainer:
    """A U-Net run with resume, validation, best-checkpoint selection and early stopping."""

    started: float  # perf_counter at set-up
    data: Data
    use_weights: bool
    pos_weight: Tensor | None
    parts: _Parts
    expected: str  # the fingerprint a checkpoint of this run carries
    progress: Progress
    live: LiveLog
    stream: Iterator[dict[str, Tensor]]

    def __init__(self, job: Job) -> None:
        assert isinstance(job.settings, Settings)  # a U-Net: run settings and recipe
        self.job, self.s, self.device = job, job.settings, job.device
        self.last = job.checkpoint_dir / LAST
        self.check_every = 16 if self.device.type == "cuda" else 1  # steps per loss check

    def run(self) -> dict[str, Any]:
        """Set up; per epoch train, validate, record, keep the best, save for resume; finish."""
        self.set_up()
        for epoch in range(self.progress.epochs, self.s.epochs):
            trained = self.train_epoch(epoch)
            metrics = self.validate(trained)
            self.record(epoch, metrics)
            stop = self.keep_best(epoch, metrics)
            self.save_resume(epoch, done=stop or epoch == self.s.epochs - 1)
            if stop:
                self.job.say(
                    f"early stop after epoch {epoch + 1}: no better val {self.s.select} since "
                    f"epoch {self.progress.best['epoch'] + 1}"
                )
                break
        return self.finish()

    # ----------------------------------------------------------------------- set-up

    def set_up(self) -> None:
        """Load the data, build the model, resume when the checkpoint is this run's, open the
        log and start the batches."""
        self.started = time.perf_counter()
        job, s = self.job, self.s
        self.data = load_data(job.processed, job.augmented, fold=job.fold)
        self.use_weights = s.weight_map and use_weight_maps(self.data.train, s.loss)
        out_channels = out_channels_for(s.loss)
        self.pos_weight = self._pos_weight()
        self.parts = _build(job, s, out_channels, tile_for(job, self.data))
        self.progress = self._resume()
        self.live = LiveLog(job.live_dir)
        self.live.replay(self.progress.history)
        self.stream = self._batches()

    def _pos_weight(self) -> Tensor | None:
        """bce's ``pos_weight: auto``: the background / foreground pixel ratio of the training
        masks."""
        s, masks = self.s, self.data.train.masks
        if s.loss != "bce" or s.pos_weight != "auto":
            return None
        foreground = sum(int(m.sum()) for m in masks)
        total = sum(m.size for m in masks)
        if foreground == 0:
            augmented = self.job.augmented
            folders = f"{self.job.processed}" + (f" and {augmented}" if augmented else "")
            raise TrainingError(
                f"model_defs.{self.job.model_name}.train.pos_weight: auto needs foreground "
                f"pixels; the training masks in {folders} have none"
            )
        return torch.tensor((total - foreground) / foreground, device=self.device)

    def _resume(self) -> Progress:
        """The checkpoint's progress when it is this run's (weights, optimizer, schedule and
        RNG restored); a fresh start otherwise, without the stale checkpoint."""
        p = self.parts
        self.expected = fingerprint(self.job.configs(), self.job.seed, self.data.files)
        state = read_resume(self.last, self.expected, p.net.state_dict())
        if state is None:
            if self.last.exists():
                self.last.unlink()
            return Progress()
        kept = restore(
            state,
            net=p.net,
            optimizer=p.optimizer,
            scaler=p.scaler,
            schedule=p.schedule,
            device=self.device,
        )
        self.job.say(f"resuming from {self.last} after epoch {kept.epochs} of {self.s.epochs}")
        return kept

    def _batches(self) -> Iterator[dict[str, Tensor]]:
        """The seeded batches from the first epoch to run on; the padded copies they hold
        replace the training pairs in memory."""
        s, job = self.s, self.job
        batches = TileBatches(
            self.data.train,
            tile=self.parts.tile,
            out=self.parts.out,
            batch_size=s.batch_size,
            steps=s.steps,
            first_epoch=self.progress.epochs,
            epochs=s.epochs,
            seed=job.seed,
            flips=s.flips and dataset_allows_flips(job.dataset_cfg),
            weights=self.use_weights,
        )
        self.data.train = Pairs(ids=self.data.train.ids)
        loader = torch.utils.data.DataLoader(
            batches,
            batch_size=None,
            shuffle=False,
            num_workers=s.workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(job.seed),
        )
        return iter(loader)

    # ----------------------------------------------------------------------- per epoch

    def train_epoch(self, epoch: int) -> _Trained:
        """`steps` optimizer steps at the schedule's lr for `epoch`."""
        s = self.s
        lr = self.parts.schedule.start_epoch(epoch)
        self.parts.net.train()
        started = time.perf_counter()
        losses: list[float] = []
        pending: list[Tensor] = []
        desc = f"{self.job.model_name} epoch {epoch + 1}/{s.epochs}"
        bar = progress(total=s.steps, desc=desc, unit="step")
        for step in range(s.steps):
            pending.append(self.step())
            if len(pending) >= self.check_every or step == s.steps - 1:
                values = self._checked(pending, epoch, step, lr)
                losses.extend(values)
                pending = []
                rate = (step + 1) * s.batch_size / (time.perf_counter() - started)
                bar.set_postfix(loss=f"{values[-1]:.4f}", img_s=f"{rate:.1f}")
            bar.update(1)
        bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - started
        self.progress.images += s.steps * s.batch_size
        return _Trained(float(np.mean(losses)), lr, s.steps * s.batch_size / seconds)

    def step(self) -> Tensor:
        """One optimizer step on the next batch; the loss, detached (checked a few steps
        later, so that a GPU need not wait for each)."""
        s, p, device = self.s, self.parts, self.device
        batch = next(self.stream)
        x = batch["image"].to(device, non_blocking=True)
        if s.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = batch["mask"].to(device, non_blocking=True)
        w = batch["weight"].to(device, non_blocking=True) if "weight" in batch else None
        with torch.autocast(device.type, dtype=p.dtype, enabled=p.dtype is not None):
            logits = p.forward(x)
        loss = loss_value(s.loss, logits, y, w, self.pos_weight)
        p.optimizer.zero_grad(set_to_none=True)
        if p.scaler is not None:
            p.scaler.scale(loss).backward()
            p.scaler.step(p.optimizer)
            p.scaler.update()
        else:
            loss.backward()
            p.optimizer.step()
        return loss.detach()

    def _checked(self, pending: list[Tensor], epoch: int, step: int, lr: float) -> list[float]:
        """The pending losses (up to `step`) as floats; a non-finite one stops the run."""
        values = torch.stack(pending).cpu().tolist()
        for j, value in enumerate(values, start=step - len(values) + 1):
            if not math.isfinite(value):
                raise TrainingError(
                    f"non-finite loss ({value}) at step {epoch * self.s.steps + j + 1} "
                    f"(epoch {epoch + 1}, iteration {j + 1}) of {self.job.model_name} on "
                    f"{self.job.dataset} (lr {lr:g}); no model written"
                )
        return values

    def validate(self, trained: _Trained) -> dict[str, float]:
        """The epoch's metrics: train loss, validation metrics, lr and training throughput."""
        p = self.parts
        metrics = {"train/loss": trained.loss}
        metrics.update(val_metrics(p.net, self.data.val, self.s, p.tile, self.device))
        metrics["lr"] = float(trained.lr)
        metrics["img_per_s"] = trained.img_per_s
        return metrics

    def record(self, epoch: int, metrics: dict[str, float]) -> None:
        """Log the epoch's metrics: DVCLive, the history a resume re-logs, a progress line."""
        self.live.log(epoch, metrics)
        self.progress.history.append({"step": epoch, "metrics": metrics})
        self.progress.epochs = epoch + 1
        self.job.say(
            f"epoch {epoch + 1}/{self.s.epochs}: "
            + ", ".join(f"{key} {value:.4g}" for key, value in metrics.items())
        )

    def keep_best(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Keep the weights of the best `select` value so far, end the schedule's epoch, and
        say whether to stop early (`early_stop` epochs without a better value)."""
        s, p, schedule = self.s, self.progress, self.parts.schedule
        value = metrics[f"val/{s.select}"]
        if better(value, p.best["value"], schedule.maximise):
            state = cpu_copy(self.parts.net.state_dict())
            p.best = {"value": value, "epoch": epoch, "state_dict": state, "metrics": metrics}
            p.since_best = 0
        else:
            p.since_best += 1
        schedule.end_epoch(value)
        p.stopped_early = s.early_stop > 0 and p.since_best >= s.early_stop
        return p.stopped_early

    def save_resume(self, epoch: int, *, done: bool) -> None:
        """Every `checkpoint_every` epochs, unless the run is done: the checkpoint to resume
        from."""
        if (epoch + 1) % self.s.checkpoint_every != 0 or done:
            return
        p = self.parts
        write_resume(
            self.last,
            fingerprint=self.expected,
            net=p.net,
            optimizer=p.optimizer,
            scaler=p.scaler,
            schedule=p.schedule,
            progress=self.progress,
            started=self.started,
            device=self.device,
        )

    # ----------------------------------------------------------------------- finish

    def finish(self) -> dict[str, Any]:
        """Stop the batches, close the log, write the best weights to model_out; the summary."""
        del self.stream
        self.live.end()
        summary = self._summary()
        net = self.parts.net
        net.load_state_dict(self.progress.best["state_dict"])
        meta = self.job.meta(self.data, self.parts.tile, self.parts.out_channels, summary)
        save_model(self.job.model_out, net, meta)
        return summary

    def _summary(self) -> dict[str, Any]:
        s, p = self.s, self.progress
        seconds = p.seconds + time.perf_counter() - self.started
        best = p.best["metrics"]
        return self.job.summary(
            epochs=p.epochs,
            epochs_planned=s.epochs,
            steps_per_epoch=s.steps,
            batch_size=s.batch_size,
            select=s.select,
            best_epoch=int(p.best["epoch"]) + 1,
            best_value=float(p.best["value"]),
            val_dice=float(best["val/dice"]),
            val_iou=float(best["val/iou"]),
            val_loss=float(best["val/loss"]),
            seconds=seconds,
            images=p.images,
            images_per_s=float(np.median([row["metrics"]["img_per_s"] for row in p.history])),
            resumed_after_epoch=p.resumed_after,
            stopped_early=p.stopped_early,
            weight_maps=self.use_weights,
            pos_weight=float(self.pos_weight) if self.pos_weight is not None else None,
            train_images=len(self.data.train.ids),
        )


# --------------------------------------------------------------------------- baseline


def train_mean_mask(job: Job) -> dict[str, Any]:
    """The baseline: the mean of the processed training masks, validated once."""
    started = time.perf_counter()
    data = load_data(job.processed, None, need_train=False, fold=job.fold)
    masks = data.train.masks[: data.n_processed_train]
    shape = masks[0].shape
    stack = torch.stack(
        [
            F.interpolate(
                torch.from_numpy(m.astype(np.float32))[None, None],
                size=shape,
                mode="bilinear",
                align_corners=False,
            )[0, 0]
            for m in masks
        ]
    )
    model = MeanMask(stack.mean(0)).to(job.device)
    tile = max(shape)
    metrics = val_metrics(model, data.val, job.settings, tile, job.device)
    live = LiveLog(job.live_dir)
    live.log(0, metrics)
    live.end()
    seconds = time.perf_counter() - started
    select = "dice"  # nothing to select among: the baseline's summary reports val Dice
    summary = job.summary(
        epochs=0,
        select=select,
        best_epoch=0,
        best_value=metrics[f"val/{select}"],
        val_dice=metrics["val/dice"],
        val_iou=metrics["val/iou"],
        val_loss=metrics["val/loss"],
        seconds=seconds,
        images=0,
        images_per_s=0.0,
        train_images=len(masks),
    )
    meta = job.meta(data, tile, 1, summary)
    meta["mean_mask_shape"] = [int(shape[0]), int(shape[1])]
    save_model(job.model_out, model, meta)
    return summary


# --------------------------------------------------------------------------- entry point


def job_config(params: dict[str, Any], dataset: str, model: str) -> dict[str, Any]:
    """The keywords of :func:`new_job` and :func:`train` that a train job's params view
    (dataset_defs, model_defs, train, infer) sets for `dataset` x `model`."""
    return {
        "dataset": dataset,
        "dataset_cfg": params["dataset_defs"][dataset],
        "model_name": model,
        "model_cfg": params["model_defs"][model],
        "train_cfg": params["train"],
        "infer_cfg": params["infer"],
    }


def new_job(
    *,
    dataset: str,
    dataset_cfg: dict,
    processed: Path,
    augmented: Path | None,
    model_name: str,
    model_cfg: dict,
    train_cfg: dict,
    infer_cfg: dict,
    seed: int,
    model_out: Path,
    live_dir: Path,
    checkpoint_dir: Path,
    fold: int | None = None,
) -> Job:
    """The job of training `model_name` on `dataset`: its settings and resolved device."""
    s = settings_for(model_cfg, train_cfg, infer_cfg)
    try:
        device = resolve_device(s.device)
    except DeviceError as exc:
        raise TrainingError(f"train.{exc}") from exc
    return Job(
        dataset=dataset,
        dataset_cfg=dataset_cfg,
        model_name=model_name,
        model_cfg=model_cfg,
        train_cfg=train_cfg,
        infer_cfg=infer_cfg,
        seed=int(seed),
        settings=s,
        device=device,
        processed=Path(processed),
        augmented=Path(augmented) if augmented is not None else None,
        model_out=Path(model_out),
        live_dir=Path(live_dir),
        checkpoint_dir=Path(checkpoint_dir),
        fold=fold,
    )


def train(**job_args: Any) -> dict[str, Any]:
    """Train `model_name` on `dataset` (module docstring; the keyword arguments of
    :func:`new_job`); write model_out and live_dir.

    Returns the training summary (also stored as ``train`` in model.pt) and logs it on one
    line; its ``images_per_s`` is the median of the per-epoch training throughputs (the first
    epoch carries the warm-up: cuDNN autotuning, worker start, compilation). Raises
    TrainingError for unusable settings or data and for a non-finite loss, in which case no
    model_out is written.
    """
    job = new_job(**job_args)
    job.model_out.unlink(missing_ok=True)
    with torch_settings(job.settings, job.device):
        mean_mask = job.model_cfg["kind"] == "mean_mask"
        summary = train_mean_mask(job) if mean_mask else Trainer(job).run()
    shutil.rmtree(job.checkpoint_dir, ignore_errors=True)
    log.info("%s", summary_line(summary))
    return summary


def summary_line(summary: dict[str, Any]) -> str:
    """One line: epochs, best validation metric and Dice, seconds, img/s, device."""
    return (
        f"train {summary['dataset']}/{summary['model']}: {summary['epochs']} epochs, "
        f"best val {summary['select']} {summary['best_value']:.4f} "
        f"(epoch {summary['best_epoch']}), val dice {summary['val_dice']:.4f}, "
        f"{summary['seconds']:.1f} s, {summary['images_per_s']:.1f} img/s, "
        f"device {summary['device']}"
    )
