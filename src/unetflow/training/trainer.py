"""Training of the U-Net family and of the mean-mask baseline (the train stage).

Data. The training pairs are the processed ``train`` rows plus every augmented copy (loaded
into memory: float32 images, {0, 1} masks and, for cross-entropy, ``weights/<id>.tif`` beside
``images/`` when every pair has one). Validation uses the processed ``val`` rows as whole
images, predicted by overlap-tile inference exactly as the infer stage does.

Sampling. Every batch is drawn from ``numpy.random.default_rng([seed, epoch, step, index])``
(pair, crop position and, with ``flips``, one of the 8 flips/rotations; only where the
dataset's ``augment.flip`` allows flips, so never for chest X-rays), so the data never
depend on DataLoader workers, and a resumed run sees the batches an uninterrupted one would.
Images are mirror-padded by the margin a valid-convolution model loses (``(tile - out) / 2``),
so border pixels are targets too; the target is the centred ``out`` x ``out`` crop. Images
smaller than the output tile are mirror-padded up to it.

Losses (:mod:`unetflow.training.losses`): ``ce`` (weighted by the border weight map where there is
one), ``bce`` with ``pos_weight`` (``auto`` = background / foreground pixel ratio of the
training masks), ``dice`` and ``dice_ce``.

Schedules are set per epoch: ``constant``; ``cosine`` from ``lr`` to ``min_lr``; ``poly``
(``lr * (1 - epoch/epochs) ** poly_power``, floored at ``min_lr``); ``plateau`` (lr times
``plateau_factor`` once ``plateau_patience`` epochs pass without a better ``select`` metric,
not below ``min_lr``).

Resume. Every ``checkpoint_every`` epochs ``<checkpoint_dir>/last.pt`` is written atomically
with the weights, optimizer, schedule, scaler, best weights, logged history and torch RNG
states, and a fingerprint of the configuration (without the keys that only change speed:
workers, threads, checkpoint_every), the seed and the data files with their sizes. A new run
with the same fingerprint continues after the saved epoch, having re-logged the history into
a fresh DVCLive folder; on CPU its final weights equal an uninterrupted run's. After success
``model_out`` holds the best weights (by ``select``) and the checkpoint folder is removed.

Logging. DVCLive (``dvcyaml=None``) when importable, otherwise a writer of the same files:
``metrics.json`` (latest values, nested by ``/``) and ``plots/metrics/<name>.tsv``. One step
per epoch (0-based): train/loss, val/loss, val/dice, val/iou, lr, img_per_s.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unetflow.evaluation.metrics import dice, iou
from unetflow.inference.infer import infer_settings, predict_probability
from unetflow.io.images import read_float_tiff, read_gray, read_processed_image
from unetflow.io.processed import read_split
from unetflow.io.progress import progress
from unetflow.model.checkpoint import (
    CheckpointError,
    atomic_torch_save,
    read_checkpoint,
    save_model,
)
from unetflow.model.device import DeviceError, amp_dtype, resolve_device
from unetflow.model.unet import MeanMask, build_model
from unetflow.training.losses import loss_value, out_channels_for, probability_bce

SPEED_ONLY_KEYS = ("workers", "threads", "checkpoint_every")
LAST = "last.pt"
CHECKPOINT_FORMAT = 1


class TrainingError(RuntimeError):
    """Training cannot start or diverged; the message names the key, file or step."""


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class _RunSettings:
    """How a train job runs, whatever the model: the `train` and `infer` sections."""

    device: str
    amp: str
    channels_last: bool
    compile: bool
    cudnn_benchmark: bool
    workers: int
    threads: int
    checkpoint_every: int
    infer: dict[str, Any]
    threshold: float


@dataclass(frozen=True)
class _Settings(_RunSettings):
    """A U-Net's run settings and its recipe (`model_defs.<model>.train`)."""

    loss: str
    pos_weight: str
    optimizer: str
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    schedule: str
    plateau_factor: float
    plateau_patience: int
    min_lr: float
    poly_power: float
    batch_size: int
    epochs: int
    steps: int
    select: str
    early_stop: int
    flips: bool
    weight_map: bool


def _run_settings(train_cfg: dict, infer_cfg: dict) -> dict[str, Any]:
    """The fields of `_RunSettings`, from the `train` and `infer` sections as the config layer
    (`unetflow.config`) checked them: the `train` keys are exactly its first fields."""
    threshold = float(infer_cfg["threshold"])
    return {**train_cfg, "infer": infer_settings(infer_cfg), "threshold": threshold}


def _settings(model_cfg: dict, train_cfg: dict, infer_cfg: dict) -> _Settings:
    """A U-Net's settings: its checked recipe with the run settings."""
    recipe = {**model_cfg["train"]}
    recipe["steps"] = recipe.pop("steps_per_epoch")
    return _Settings(**_run_settings(train_cfg, infer_cfg), **recipe)


# --------------------------------------------------------------------------- data


@dataclass
class _Pairs:
    """Images (float32), masks ({0, 1} uint8) and optional weight maps, with their ids."""

    ids: list[str] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    weights: list[np.ndarray | None] = field(default_factory=list)
    weight_paths: list[Path] = field(default_factory=list)


def _read_mask(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    if not path.is_file():
        raise TrainingError(f"{path}: not found; expected the mask of a training/val image")
    mask = read_gray(path)
    if mask.shape != shape:
        raise TrainingError(f"{path}: size {mask.shape} differs from its image {shape}")
    if mask.max(initial=0) > 1:
        raise TrainingError(
            f"{path}: values up to {int(mask.max())}; expected a {{0, 1}} mask (processed layout)"
        )
    return mask.astype(np.uint8)


def _load_pairs(folder: Path, ids: list[str], files: list[tuple[str, int]], label: str) -> _Pairs:
    """Read images/<id>.tif, masks/<id>.png and weights/<id>.tif (when present) of `ids`."""
    pairs = _Pairs()
    for sid in progress(ids, desc=f"load {label}", unit="image"):
        image_path = folder / "images" / f"{sid}.tif"
        mask_path = folder / "masks" / f"{sid}.png"
        image = read_processed_image(image_path)
        mask = _read_mask(mask_path, image.shape)
        weight_path = folder / "weights" / f"{sid}.tif"
        weight = None
        if weight_path.is_file():
            weight = read_float_tiff(weight_path)
            if weight.shape != image.shape or not np.isfinite(weight).all() or weight.min() < 0:
                raise TrainingError(
                    f"{weight_path}: expected finite non-negative weights of size {image.shape}"
                )
            files.append((f"{label}/weights/{sid}.tif", weight_path.stat().st_size))
        files.append((f"{label}/images/{sid}.tif", image_path.stat().st_size))
        files.append((f"{label}/masks/{sid}.png", mask_path.stat().st_size))
        pairs.ids.append(sid)
        pairs.images.append(image)
        pairs.masks.append(mask)
        pairs.weights.append(weight)
        pairs.weight_paths.append(weight_path)
    return pairs


@dataclass
class _Data:
    train: _Pairs
    val: _Pairs
    files: list[tuple[str, int]]
    normalisation: dict[str, float]
    n_processed_train: int


def _load_data(processed: Path, augmented: Path | None, *, need_train: bool = True) -> _Data:
    files: list[tuple[str, int]] = []
    table = read_split(processed)
    files.append(("processed/split.csv", (processed / "split.csv").stat().st_size))
    stats_path = processed / "stats.json"
    try:
        stats = json.loads(stats_path.read_text())
        normalisation = {"mean": float(stats["mean"]), "std": float(stats["std"])}
    except FileNotFoundError as exc:
        raise TrainingError(f"{stats_path}: not found; expected the normalisation stats") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise TrainingError(
            f"{stats_path}: expected JSON with numbers 'mean' and 'std' ({exc})"
        ) from exc
    train_ids = list(table.loc[table["split"] == "train", "id"])
    val_ids = list(table.loc[table["split"] == "val", "id"])
    if not train_ids:
        raise TrainingError(f"{processed / 'split.csv'}: no train rows; expected at least one")
    if not val_ids:
        raise TrainingError(
            f"{processed / 'split.csv'}: no val rows; expected at least one for validation "
            "and the choice of the best checkpoint"
        )
    train = _load_pairs(processed, train_ids, files, "processed")
    n_processed = len(train.ids)
    if augmented is not None and need_train:
        index_path = augmented / "index.csv"
        try:
            aug_ids = list(pd.read_csv(index_path, dtype={"id": str})["id"])
        except FileNotFoundError as exc:
            raise TrainingError(
                f"{index_path}: not found; expected the index of an augmented set"
            ) from exc
        except (KeyError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise TrainingError(f"{index_path}: expected a CSV with an 'id' column") from exc
        files.append(("augmented/index.csv", index_path.stat().st_size))
        copies = _load_pairs(augmented, aug_ids, files, "augmented")
        for name in ("ids", "images", "masks", "weights", "weight_paths"):
            getattr(train, name).extend(getattr(copies, name))
    val = _load_pairs(processed, val_ids, files, "processed")
    return _Data(train, val, files, normalisation, n_processed)


def _use_weights(pairs: _Pairs, loss: str) -> bool:
    """Weight maps apply to cross-entropy when every training pair has one."""
    have = [w is not None for w in pairs.weights]
    if loss not in ("ce", "dice_ce") or not any(have):
        return False
    if not all(have):
        missing = pairs.weight_paths[have.index(False)]
        raise TrainingError(
            f"{missing}: missing while other training pairs have a weight map; expected one "
            "for every training pair (processed and augmented) or none"
        )
    return True


def mirror_pad(array: np.ndarray, pad: tuple[tuple[int, int], tuple[int, int]]) -> np.ndarray:
    """numpy reflect padding (repeated reflection when the pad exceeds the size)."""
    if not any(p for side in pad for p in side):
        return array
    return np.pad(array, pad, mode="reflect")


class TileBatches(torch.utils.data.Dataset):
    """Seeded training batches: item k is step k % steps of epoch first_epoch + k // steps.

    Each batch holds ``image`` (B x 1 x tile x tile float32), ``mask`` (B x out x out uint8) and,
    with weight maps, ``weight`` (B x out x out float32). Sample b of a step comes from
    ``default_rng([seed, epoch, step, b])``, so any worker computes the same batch.
    """

    def __init__(
        self,
        pairs: _Pairs,
        *,
        tile: int,
        out: int,
        batch_size: int,
        steps: int,
        first_epoch: int,
        epochs: int,
        seed: int,
        flips: bool,
        weights: bool,
    ) -> None:
        self.tile, self.out, self.margin = tile, out, (tile - out) // 2
        self.batch_size, self.steps = batch_size, steps
        self.first_epoch, self.epochs = first_epoch, epochs
        self.seed, self.flips = seed, flips
        self.images, self.masks, self.weights, self.shapes = [], [], [], []
        for k, (image, mask) in enumerate(zip(pairs.images, pairs.masks, strict=True)):
            pad = self._pad(image.shape)
            self.images.append(mirror_pad(image, pad))
            self.masks.append(mirror_pad(mask, pad))
            self.weights.append(mirror_pad(pairs.weights[k], pad) if weights else None)
            self.shapes.append(tuple(max(s, out) for s in image.shape))

    def _pad(self, shape: tuple[int, ...]) -> tuple[tuple[int, int], tuple[int, int]]:
        """Mirror pad up to the output tile, then by the margin on every side."""
        up = [max(0, self.out - s) for s in shape]
        return (
            (self.margin + up[0] // 2, self.margin + up[0] - up[0] // 2),
            (self.margin + up[1] // 2, self.margin + up[1] - up[1] // 2),
        )

    def __len__(self) -> int:
        return (self.epochs - self.first_epoch) * self.steps

    def __getitem__(self, k: int) -> dict[str, Tensor]:
        epoch, step = divmod(int(k), self.steps)
        return self.batch(self.first_epoch + epoch, step)

    def batch(self, epoch: int, step: int) -> dict[str, Tensor]:
        """The batch of `step` (0-based) in `epoch` (0-based)."""
        images, masks, weights = [], [], []
        t, o, m = self.tile, self.out, self.margin
        for b in range(self.batch_size):
            rng = np.random.default_rng([self.seed, epoch, step, b])
            i = int(rng.integers(len(self.images)))
            height, width = self.shapes[i]
            y = int(rng.integers(height - o + 1))
            x = int(rng.integers(width - o + 1))
            turns, flip = (int(rng.integers(4)), bool(rng.integers(2))) if self.flips else (0, 0)
            crops = [
                self.images[i][y : y + t, x : x + t],
                self.masks[i][y + m : y + m + o, x + m : x + m + o],
            ]
            if self.weights[i] is not None:
                crops.append(self.weights[i][y + m : y + m + o, x + m : x + m + o])
            crops = [_dihedral(c, turns, flip) for c in crops]
            images.append(crops[0])
            masks.append(crops[1])
            if len(crops) == 3:
                weights.append(crops[2])
        batch = {
            "image": torch.from_numpy(np.stack(images)[:, None].astype(np.float32)),
            "mask": torch.from_numpy(np.stack(masks)),
        }
        if weights:
            batch["weight"] = torch.from_numpy(np.stack(weights).astype(np.float32))
        return batch


def _dihedral(a: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    a = np.rot90(a, turns)
    return np.ascontiguousarray(a[:, ::-1] if flip else a)


# --------------------------------------------------------------------------- schedule


class LrSchedule:
    """Per-epoch learning rate: constant, cosine, poly or plateau (stateful)."""

    def __init__(self, s: _Settings, maximise: bool) -> None:
        self.s, self.maximise = s, maximise
        self.state: dict[str, Any] = {"lr": s.lr, "best": None, "bad": 0}

    def lr(self, epoch: int) -> float:
        s = self.s
        fraction = epoch / s.epochs
        if s.schedule == "cosine":
            return s.min_lr + (s.lr - s.min_lr) * 0.5 * (1.0 + math.cos(math.pi * fraction))
        if s.schedule == "poly":
            return max(s.min_lr, s.lr * (1.0 - fraction) ** s.poly_power)
        if s.schedule == "plateau":
            return float(self.state["lr"])
        return s.lr

    def observe(self, value: float) -> None:
        """After validation: count epochs without improvement; reduce lr after the patience."""
        if self.s.schedule != "plateau":
            return
        if _better(value, self.state["best"], self.maximise):
            self.state["best"], self.state["bad"] = value, 0
            return
        self.state["bad"] += 1
        if self.state["bad"] >= self.s.plateau_patience:
            self.state["lr"] = max(self.s.min_lr, self.state["lr"] * self.s.plateau_factor)
            self.state["bad"] = 0


def _better(value: float, best: float | None, maximise: bool) -> bool:
    """Is `value` strictly better than `best` (None or NaN counts as worst)?"""
    if best is None or math.isnan(best):
        return not math.isnan(value) or best is None
    if math.isnan(value):
        return False
    return value > best if maximise else value < best


def _optimizer(s: _Settings, params: Any) -> torch.optim.Optimizer:
    if s.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=s.lr, momentum=s.momentum, nesterov=s.nesterov, weight_decay=s.weight_decay
        )
    if s.optimizer == "adam":
        return torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)
    return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)


# --------------------------------------------------------------------------- logging


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
        return "dvclive" if self.live is not None else "builtin"

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
            value = str(value) if math.isnan(value) or math.isinf(value) else value
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
                writer.writerow({"step": step, leaf: value})
            node = self.summary
            *parents, last = os.path.normpath(name).split(os.sep)
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
        self._write_summary()

    def _write_summary(self) -> None:
        summary = dict(self.summary)
        if self.step is not None:
            summary["step"] = self.step
        text = json.dumps(summary, indent=4) + "\n"
        (self.dir / "metrics.json").write_text(text, encoding="utf-8")

    def end(self) -> None:
        if self.live is not None:
            self.live.end()
        else:
            self._write_summary()


# --------------------------------------------------------------------------- resume


def fingerprint(configs: dict[str, Any], seed: int, files: list[tuple[str, int]]) -> str:
    """sha256 of the configs, the seed and the data files with their sizes."""
    blob = json.dumps(
        {"configs": configs, "seed": seed, "files": sorted(files)}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _cpu_copy(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def _read_resume(path: Path, expected: str, model_state: dict[str, Tensor]) -> dict | None:
    """The resume checkpoint at `path` when it exists and matches; None (and why) otherwise.

    A match needs the same fingerprint and weights that fit the model (the model code may
    have changed since the checkpoint was written).
    """
    if not path.is_file():
        return None
    try:
        state = read_checkpoint(path)
    except CheckpointError as exc:
        print(f"train: ignoring {path}: {exc}; starting fresh", flush=True)
        return None
    if state.get("format") != CHECKPOINT_FORMAT or state.get("fingerprint") != expected:
        print(
            f"train: {path} was written for other settings or data (fingerprint differs); "
            "starting fresh",
            flush=True,
        )
        return None
    saved = state.get("model")
    if not isinstance(saved, dict) or {k: tuple(v.shape) for k, v in saved.items()} != {
        k: tuple(v.shape) for k, v in model_state.items()
    }:
        print(f"train: {path} holds weights of another architecture; starting fresh", flush=True)
        return None
    return state


# --------------------------------------------------------------------------- training


@contextlib.contextmanager
def _torch_settings(s: _RunSettings, device: torch.device) -> Iterator[None]:
    """Thread count and cuDNN autotuning for the run; the previous values come back after."""
    threads, benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
    if s.threads > 0:
        torch.set_num_threads(s.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = s.cudnn_benchmark
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.benchmark = benchmark


def _validate(
    model: nn.Module, val: _Pairs, s: _RunSettings, tile: int, device: torch.device
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


def train(
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
) -> dict[str, Any]:
    """Train `model_name` on `dataset` (module docstring); write model_out and live_dir.

    Returns the training summary (also stored as ``train`` in model.pt) and prints it on one
    line; its ``images_per_s`` is the median of the per-epoch training throughputs (the first
    epoch carries the warm-up: cuDNN autotuning, worker start, compilation). Raises
    TrainingError for unusable settings or data and for a non-finite loss, in which case no
    model_out is written.
    """
    processed, model_out = Path(processed), Path(model_out)
    live_dir, checkpoint_dir = Path(live_dir), Path(checkpoint_dir)
    augmented = Path(augmented) if augmented is not None else None
    kind = model_cfg["kind"]
    s = (
        _RunSettings(**_run_settings(train_cfg, infer_cfg))
        if kind == "mean_mask"
        else _settings(model_cfg, train_cfg, infer_cfg)
    )
    try:
        device = resolve_device(s.device)
    except DeviceError as exc:
        raise TrainingError(f"train.{exc}") from exc
    model_out.unlink(missing_ok=True)
    run = _Run(
        dataset=dataset,
        dataset_cfg=dataset_cfg,
        model_name=model_name,
        model_cfg=model_cfg,
        train_cfg=train_cfg,
        infer_cfg=infer_cfg,
        seed=int(seed),
        settings=s,
        device=device,
    )
    with _torch_settings(s, device):
        if kind == "mean_mask":
            summary = run.mean_mask(processed, model_out, live_dir)
        else:
            summary = run.unet(processed, augmented, model_out, live_dir, checkpoint_dir)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    print(summary_line(summary), flush=True)
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


def dataset_allows_flips(dataset_cfg: dict) -> bool:
    """Whether training may flip and rotate a dataset's tiles (its ``augment.flip``): EM
    sections look alike in any orientation, chest X-rays have a left and a right, a top and a
    bottom."""
    return bool((dataset_cfg.get("augment") or {}).get("flip", True))


@dataclass
class _Run:
    """One training run: the configs and the device."""

    dataset: str
    dataset_cfg: dict
    model_name: str
    model_cfg: dict
    train_cfg: dict
    infer_cfg: dict
    seed: int
    settings: _RunSettings
    device: torch.device

    def _meta(self, data: _Data, tile: int, out_channels: int, summary: dict) -> dict[str, Any]:
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

    def _summary(self, **values: Any) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "model": self.model_name,
            "device": str(self.device),
            "torch": str(torch.__version__),
            **values,
        }

    def mean_mask(self, processed: Path, model_out: Path, live_dir: Path) -> dict[str, Any]:
        """The baseline: the mean of the processed training masks, validated once."""
        started = time.perf_counter()
        data = _load_data(processed, None, need_train=False)
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
        model = MeanMask(stack.mean(0)).to(self.device)
        tile = max(shape)
        metrics = _validate(model, data.val, self.settings, tile, self.device)
        live = LiveLog(live_dir)
        live.log(0, metrics)
        live.end()
        seconds = time.perf_counter() - started
        select = "dice"  # nothing to select among: the baseline's summary reports val Dice
        summary = self._summary(
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
        meta = self._meta(data, tile, 1, summary)
        meta["mean_mask_shape"] = [int(shape[0]), int(shape[1])]
        save_model(model_out, model, meta)
        return summary

    def unet(
        self,
        processed: Path,
        augmented: Path | None,
        model_out: Path,
        live_dir: Path,
        checkpoint_dir: Path,
    ) -> dict[str, Any]:
        """Train a U-Net with resume, validation, best-checkpoint selection and early stopping."""
        s, device, name = self.settings, self.device, self.model_name
        assert isinstance(s, _Settings)  # a U-Net: run settings and recipe
        started = time.perf_counter()
        data = _load_data(processed, augmented)
        folders = f"{processed}" + (f" and {augmented}" if augmented else "")
        use_weights = s.weight_map and _use_weights(data.train, s.loss)
        out_channels = out_channels_for(s.loss)
        pos_weight = None
        if s.loss == "bce" and s.pos_weight == "auto":
            foreground = sum(int(m.sum()) for m in data.train.masks)
            total = sum(m.size for m in data.train.masks)
            if foreground == 0:
                raise TrainingError(
                    f"model_defs.{name}.train.pos_weight: auto needs foreground pixels; "
                    f"the training masks in {folders} have none"
                )
            pos_weight = torch.tensor((total - foreground) / foreground, device=device)

        torch.manual_seed(self.seed)
        if device.type == "cuda":
            torch.cuda.manual_seed_all(self.seed)
        try:
            net = build_model(self.model_cfg, out_channels)
        except (ValueError, TypeError) as exc:
            raise TrainingError(f"model_defs.{name}: {exc}") from exc
        tile = int(self.model_cfg["tile"])
        out = int(net.output_size(tile))
        net = net.to(device)
        if s.channels_last:
            net = net.to(memory_format=torch.channels_last)
        forward = torch.compile(net) if s.compile else net
        optimizer = _optimizer(s, net.parameters())
        maximise = s.select != "loss"
        schedule = LrSchedule(s, maximise)
        dtype = amp_dtype(device, s.amp)
        scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None

        configs = {
            "dataset": self.dataset,
            "dataset_cfg": self.dataset_cfg,
            "model": name,
            "model_cfg": self.model_cfg,
            "train_cfg": {
                k: v for k, v in (self.train_cfg or {}).items() if k not in SPEED_ONLY_KEYS
            },
            "infer_cfg": self.infer_cfg,
        }
        expected = fingerprint(configs, self.seed, data.files)
        last = checkpoint_dir / LAST
        resume = _read_resume(last, expected, net.state_dict())

        first_epoch, history = 0, []
        best: dict[str, Any] = {"value": None, "epoch": -1, "state_dict": None, "metrics": {}}
        since_best, seconds_before, images_before = 0, 0.0, 0
        if resume is not None:
            net.load_state_dict(resume["model"])
            optimizer.load_state_dict(resume["optimizer"])
            if scaler is not None and resume["scaler"]:
                scaler.load_state_dict(resume["scaler"])
            schedule.state = dict(resume["schedule"])
            best = dict(resume["best"])
            since_best = int(resume["since_best"])
            history = list(resume["history"])
            first_epoch = int(resume["epoch"])
            seconds_before = float(resume["seconds"])
            images_before = int(resume["images"])
            torch.set_rng_state(resume["rng"]["torch"])
            if device.type == "cuda" and resume["rng"]["cuda"]:
                torch.cuda.set_rng_state_all(list(resume["rng"]["cuda"]))
            self._print(f"resuming from {last} after epoch {first_epoch} of {s.epochs}")
        elif last.exists():
            last.unlink()

        live = LiveLog(live_dir)
        for row in history:
            live.log(int(row["step"]), dict(row["metrics"]))

        batches = TileBatches(
            data.train,
            tile=tile,
            out=out,
            batch_size=s.batch_size,
            steps=s.steps,
            first_epoch=first_epoch,
            epochs=s.epochs,
            seed=self.seed,
            flips=s.flips and dataset_allows_flips(self.dataset_cfg),
            weights=use_weights,
        )
        data.train = _Pairs(ids=data.train.ids)  # training reads the padded copies in `batches`
        loader = torch.utils.data.DataLoader(
            batches,
            batch_size=None,
            shuffle=False,
            num_workers=s.workers,
            pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(self.seed),
        )
        check_every = 16 if device.type == "cuda" else 1
        stopped_early = False
        images = 0
        epoch = first_epoch - 1
        stream = iter(loader)
        for epoch in range(first_epoch, s.epochs):
            lr = schedule.lr(epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            net.train()
            epoch_start = time.perf_counter()
            losses: list[float] = []
            pending: list[Tensor] = []
            bar = progress(total=s.steps, desc=f"{name} epoch {epoch + 1}/{s.epochs}", unit="step")
            for step in range(s.steps):
                batch = next(stream)
                x = batch["image"].to(device, non_blocking=True)
                if s.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = batch["mask"].to(device, non_blocking=True)
                w = batch["weight"].to(device, non_blocking=True) if "weight" in batch else None
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    logits = forward(x)
                loss = loss_value(s.loss, logits, y, w, pos_weight)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                pending.append(loss.detach())
                if len(pending) >= check_every or step == s.steps - 1:
                    values = torch.stack(pending).cpu().tolist()
                    for j, value in enumerate(values, start=step - len(values) + 1):
                        if not math.isfinite(value):
                            raise TrainingError(
                                f"non-finite loss ({value}) at step {epoch * s.steps + j + 1} "
                                f"(epoch {epoch + 1}, iteration {j + 1}) of {name} on "
                                f"{self.dataset} (lr {lr:g}); no model written"
                            )
                    losses.extend(values)
                    pending = []
                    rate = (step + 1) * s.batch_size / (time.perf_counter() - epoch_start)
                    bar.set_postfix(loss=f"{values[-1]:.4f}", img_s=f"{rate:.1f}")
                bar.update(1)
            bar.close()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            epoch_seconds = time.perf_counter() - epoch_start
            images += s.steps * s.batch_size

            metrics = {"train/loss": float(np.mean(losses))}
            metrics.update(_validate(net, data.val, s, tile, device))
            metrics["lr"] = float(lr)
            metrics["img_per_s"] = s.steps * s.batch_size / epoch_seconds
            live.log(epoch, metrics)
            history.append({"step": epoch, "metrics": metrics})
            self._print(
                f"epoch {epoch + 1}/{s.epochs}: "
                + ", ".join(f"{key} {value:.4g}" for key, value in metrics.items())
            )

            value = metrics[f"val/{s.select}"]
            if _better(value, best["value"], maximise):
                best = {
                    "value": value,
                    "epoch": epoch,
                    "state_dict": _cpu_copy(net.state_dict()),
                    "metrics": metrics,
                }
                since_best = 0
            else:
                since_best += 1
            schedule.observe(value)
            stopped_early = s.early_stop > 0 and since_best >= s.early_stop
            done = stopped_early or epoch == s.epochs - 1
            if (epoch + 1) % s.checkpoint_every == 0 and not done:
                atomic_torch_save(
                    {
                        "format": CHECKPOINT_FORMAT,
                        "fingerprint": expected,
                        "epoch": epoch + 1,
                        "model": _cpu_copy(net.state_dict()),
                        "optimizer": optimizer.state_dict(),
                        "scaler": scaler.state_dict() if scaler is not None else {},
                        "schedule": dict(schedule.state),
                        "best": best,
                        "since_best": since_best,
                        "history": history,
                        "rng": {
                            "torch": torch.get_rng_state(),
                            "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
                        },
                        "seconds": seconds_before + time.perf_counter() - started,
                        "images": images_before + images,
                    },
                    last,
                )
            if stopped_early:
                self._print(
                    f"early stop after epoch {epoch + 1}: no better val {s.select} since "
                    f"epoch {best['epoch'] + 1}"
                )
                break
        del stream
        live.end()

        seconds = seconds_before + time.perf_counter() - started
        total_images = images_before + images
        bm = best["metrics"]
        summary = self._summary(
            epochs=epoch + 1,
            epochs_planned=s.epochs,
            steps_per_epoch=s.steps,
            batch_size=s.batch_size,
            select=s.select,
            best_epoch=int(best["epoch"]) + 1,
            best_value=float(best["value"]),
            val_dice=float(bm["val/dice"]),
            val_iou=float(bm["val/iou"]),
            val_loss=float(bm["val/loss"]),
            seconds=seconds,
            images=total_images,
            images_per_s=float(np.median([row["metrics"]["img_per_s"] for row in history])),
            resumed_after_epoch=first_epoch if resume is not None else None,
            stopped_early=stopped_early,
            weight_maps=use_weights,
            pos_weight=float(pos_weight) if pos_weight is not None else None,
            train_images=len(data.train.ids),
        )
        net.load_state_dict(best["state_dict"])
        save_model(model_out, net, self._meta(data, tile, out_channels, summary))
        return summary

    def _print(self, message: str) -> None:
        print(f"train {self.dataset}/{self.model_name}: {message}", flush=True)
