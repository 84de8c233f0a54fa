"""Benchmark the U-Net variants (a developer tool, not a stage): training and inference
throughput, optimised against plain eager fp32.

    python tools/benchmark.py --params params.yaml --preset full --out bench.json

Writes a JSON report (device, torch version, settings, per-model numbers) to --out or stdout
and a table to stderr.

Training and inference throughput of the U-Net variants, optimised against plain eager fp32.

For each model (a params.yaml `model_defs` entry of kind unet) at its `tile` and train
`batch_size`, on one device, several *configurations* of the same model (identical initial
weights) are measured in the same run:

- `eager`: plain eager fp32, NCHW, cudnn.benchmark off: the baseline every ratio divides by;
- `optimised`: what the train stage does with params.yaml's top-level `train` section (autocast
  `amp` on CUDA only, `channels_last`, `compile`, `cudnn_benchmark`);
- `compiled` (`--compile`): the optimised configuration under torch.compile;
- with `--explore`, the other combinations of channels_last and bf16 autocast (also on CPU,
  where the train stage ignores `amp`) to find out what helps on this device.

One training step is forward + loss + backward + SGD step (lr 1e-3, momentum 0.9) on a fixed
random batch already on the device (data loading is not part of it); the loss is cross-entropy
for 2-channel models (train.loss ce or dice_ce) and BCE for 1-channel ones (bce, dice). After
`warmup` steps per configuration, the configurations take turns step by step (so that noise from
other processes hits all of them alike) and a step's time is the median over `steps` (CUDA
synchronised before and after). Images/s = batch / median step time; megapixels/s counts input
pixels.

Peak memory, from one more untimed step per configuration after the timed ones: on CUDA the
allocator's peak during the step (`torch.cuda.max_memory_allocated`) above what was allocated
before it, plus the configuration's own weights, momentum buffers and input batch; on CPU the
same with the resident set size (`/proc/self/statm`) sampled every millisecond instead of the
allocator's peak, after `malloc_trim` has returned freed heap memory to the system: approximate
(sampling can miss short peaks; memory a library caches between steps is not seen again).

Inference: `predict_probability` (unetflow.inference) on one 512x512 image with overlap-tile
at the model's tile and params.yaml `infer` settings (tta off), median seconds over `infer_repeats`
interleaved runs, megapixels/s of the image.

Needs only torch, numpy and yaml (plus what unetflow.inference imports), so that it runs on a
GPU machine without the workflow tools.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import gc
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from unetflow.config import ParamsError, resolve
from unetflow.inference.tiling import InferenceError
from unetflow.io.outputs import write_text_atomic
from unetflow.model.device import AMP_DTYPES, DeviceError, resolve_device
from unetflow.model.unet import build_model, count_parameters

ONE_CHANNEL_LOSSES = ("bce", "dice")
INFER_IMAGE = 512
LR, MOMENTUM = 1e-3, 0.9


class BenchmarkError(ValueError):
    """A setting the benchmark cannot use; the message names the key or option."""


@dataclass(frozen=True)
class Config:
    """How one copy of the model runs."""

    name: str
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    cudnn_benchmark: bool = False

    def key(self) -> tuple[str, bool, bool]:
        return (self.amp, self.channels_last, self.compile)


@dataclass
class Options:
    """What to measure; None for tile/batch_size means the model's own from params.yaml."""

    models: list[str] | None = None
    steps: int = 10
    warmup: int = 3
    batch_size: int | None = None
    tile: int | None = None
    device: str = "auto"
    compile: bool = False
    explore: bool = False
    cpu_amp: bool = False
    infer: bool = True
    infer_repeats: int = 3
    infer_warmup: int = 1
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def load_config(path: str | os.PathLike[str], preset: str | None) -> dict[str, Any]:
    """params.yaml with `preset` (default: its `preset` key) applied; not schema-validated here."""
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise BenchmarkError(f"{path}: file not found") from exc
    if not isinstance(params, dict) or "model_defs" not in params:
        raise BenchmarkError(f"{path}: expected a params.yaml mapping with model_defs")
    try:
        return resolve(params, preset)
    except ParamsError as exc:
        raise BenchmarkError(f"{path}: {exc}") from exc


def configs_for(train_cfg: dict[str, Any], device: torch.device, opts: Options) -> list[Config]:
    """The baseline, the train stage's configuration and the optional extra ones, deduplicated."""
    amp = str(train_cfg.get("amp", "none"))
    if amp not in ("none", *AMP_DTYPES):
        raise BenchmarkError(f"train.amp: '{amp}' is not one of none, bf16, fp16")
    if device.type == "cpu" and not (opts.cpu_amp and amp == "bf16"):
        amp = "none"  # the train stage uses autocast on CUDA only
    cudnn = bool(train_cfg.get("cudnn_benchmark", False)) and device.type == "cuda"
    optimised = Config(
        "optimised",
        amp=amp,
        channels_last=bool(train_cfg.get("channels_last", False)),
        compile=bool(train_cfg.get("compile", False)),
        cudnn_benchmark=cudnn,
    )
    configs = [Config("eager"), optimised]
    if opts.compile and not optimised.compile:
        configs.append(Config("compiled", amp, optimised.channels_last, True, cudnn))
    if opts.explore:
        for name, cfg_amp, cl in (
            ("channels_last", "none", True),
            ("bf16", "bf16", False),
            ("bf16_channels_last", "bf16", True),
        ):
            configs.append(Config(name, cfg_amp, cl, False, cudnn))
    unique: dict[tuple[str, bool, bool], Config] = {}
    for cfg in configs:
        unique.setdefault(cfg.key(), cfg)
    return list(unique.values())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager[Any]:
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def _release_free_memory() -> None:
    """Hand memory that glibc keeps after free back to the system, so that RSS tracks use."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _peak_above_start(device: torch.device) -> Iterator[dict[str, int | None]]:
    """Yields a dict whose "bytes" becomes the peak memory of the block above its start."""
    result: dict[str, int | None] = {"bytes": None}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        yield result
        result["bytes"] = torch.cuda.max_memory_allocated(device) - start
        return
    gc.collect()
    _release_free_memory()
    start_rss = _rss_bytes()
    if start_rss is None:
        yield result
        return
    peak = [start_rss]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.001):
            peak[0] = max(peak[0], _rss_bytes() or 0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield result
    finally:
        done.set()
        sampler.join()
        result["bytes"] = max(peak[0], _rss_bytes() or 0) - start_rss


def _tensor_bytes(tensors: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))


class _Runner:
    """One configuration's copy of the model, optimiser and batch, stepping on demand."""

    def __init__(
        self,
        cfg: Config,
        base: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        device: torch.device,
    ) -> None:
        self.cfg, self.device, self.loss_fn = cfg, device, loss_fn
        fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.module = copy.deepcopy(base).to(device).to(memory_format=fmt).train()
        self.model: Callable[[torch.Tensor], torch.Tensor] = (
            torch.compile(self.module) if cfg.compile else self.module
        )
        self.x = x.to(device).contiguous(memory_format=fmt)
        self.y = y.to(device)
        self.optimizer = torch.optim.SGD(self.module.parameters(), lr=LR, momentum=MOMENTUM)
        self.scaler = torch.amp.GradScaler(device.type) if cfg.amp == "fp16" else None
        self.times: list[float] = []

    def persistent_bytes(self) -> int:
        """Weights, momentum buffers and the input batch: what lives between steps."""
        state = [t for s in self.optimizer.state.values() for t in s.values()]
        return _tensor_bytes(self.module.parameters()) + _tensor_bytes([*state, self.x, self.y])

    def step(self) -> float:
        """One timed training step; returns its seconds."""
        torch.backends.cudnn.benchmark = self.cfg.cudnn_benchmark
        _sync(self.device)
        start = time.perf_counter()
        with _autocast(self.device, self.cfg.amp):
            logits = self.model(self.x)
        loss = self.loss_fn(logits.float(), self.y)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        _sync(self.device)
        return time.perf_counter() - start

    def peak_bytes(self) -> int | None:
        """Peak memory of one more (untimed) step: its working memory plus persistent state."""
        with _peak_above_start(self.device) as mem:
            self.step()
        return None if mem["bytes"] is None else mem["bytes"] + self.persistent_bytes()


def _loss_for(train_cfg: dict[str, Any]) -> tuple[int, Callable[..., torch.Tensor]]:
    """Output channels and a loss of the same kind as the model's recipe."""
    if train_cfg.get("loss", "ce") in ONE_CHANNEL_LOSSES:
        return 1, lambda logits, y: F.binary_cross_entropy_with_logits(logits[:, 0], y.float())
    return 2, F.cross_entropy


def _throughput(seconds: float, images: int, pixels: int) -> dict[str, float]:
    return {
        "images_per_s": images / seconds,
        "megapixels_per_s": images * pixels / seconds / 1e6,
    }


def _train_numbers(
    name: str,
    cfg_model: dict[str, Any],
    configs: list[Config],
    device: torch.device,
    opts: Options,
) -> dict[str, Any]:
    """Training throughput and memory of every configuration of one model."""
    if "tile" not in cfg_model and opts.tile is None:
        raise BenchmarkError(f"model_defs.{name}.tile: missing (or pass --tile)")
    if cfg_model["tile"] == "image" and opts.tile is None:
        raise BenchmarkError(
            f"model_defs.{name}.tile: image takes the size of the processed images, which the "
            "benchmark does not read; pass --tile (e.g. 512)"
        )
    train_cfg = cfg_model.get("train") or {}
    tile = int(opts.tile or cfg_model["tile"])
    batch = int(opts.batch_size or train_cfg.get("batch_size", 1))
    out_channels, loss_fn = _loss_for(train_cfg)
    torch.manual_seed(opts.seed)
    base = build_model(cfg_model, out_channels)
    out = base.output_size(tile)
    rng = np.random.default_rng(opts.seed)
    x = torch.from_numpy(rng.standard_normal((batch, 1, tile, tile), dtype=np.float32))
    classes = 2 if out_channels == 1 else out_channels
    y = torch.from_numpy(rng.integers(0, classes, (batch, out, out)))
    runners = []
    errors: dict[str, str] = {}
    for cfg in configs:
        try:
            runner = _Runner(cfg, base, x, y, loss_fn, device)
            for _ in range(max(opts.warmup, int(cfg.compile))):  # compile errors surface here
                runner.step()
            runners.append(runner)
        except Exception as exc:  # a configuration this device cannot run (compiler, memory)
            errors[cfg.name] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    for i in range(opts.steps if runners else 0):
        for runner in runners[i % len(runners) :] + runners[: i % len(runners)]:
            runner.times.append(runner.step())
    results: dict[str, Any] = {}
    for runner in runners:
        median = statistics.median(runner.times)
        peak = runner.peak_bytes()
        results[runner.cfg.name] = {
            "step_s_median": median,
            "step_s_mean": statistics.fmean(runner.times),
            **_throughput(median, batch, tile * tile),
            "peak_memory_mb": None if peak is None else peak / 2**20,
        }
    results.update({name: {"error": msg} for name, msg in errors.items()})
    return {
        "tile": tile,
        "batch_size": batch,
        "output_size": out,
        "out_channels": out_channels,
        "parameters": count_parameters(base),
        "train": results,
        "train_speedup": _ratios(results, "images_per_s"),
        "_base": base,
    }


def _ratios(results: dict[str, Any], key: str) -> dict[str, float]:
    """Each configuration's `key` divided by the eager baseline's."""
    if key not in results.get("eager", {}):
        return {}
    base = results["eager"][key]
    return {name: r[key] / base for name, r in results.items() if key in r}


def _infer_numbers(
    base: nn.Module,
    tile: int,
    infer_cfg: dict[str, Any],
    configs: list[Config],
    device: torch.device,
    opts: Options,
) -> dict[str, Any]:
    """Overlap-tile inference on a 512x512 image for each non-compiled configuration."""
    try:
        from unetflow.inference.tiling import predict_probability
    except ImportError as exc:
        return {"error": f"unetflow.inference.infer unavailable: {exc}"}
    image = np.random.default_rng(opts.seed).standard_normal((INFER_IMAGE, INFER_IMAGE))
    image = image.astype(np.float32)
    runs: list[tuple[Config, nn.Module]] = []
    for cfg in configs:
        if cfg.compile:
            continue
        fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        runs.append((cfg, copy.deepcopy(base).to(device).to(memory_format=fmt).eval()))
    times: dict[str, list[float]] = {cfg.name: [] for cfg, _ in runs}

    def once(cfg: Config, model: nn.Module) -> float:
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
        # predict_probability applies amp on CUDA; on CPU bf16 comes from this outer autocast
        outer = _autocast(device, cfg.amp) if device.type == "cpu" else contextlib.nullcontext()
        _sync(device)
        start = time.perf_counter()
        with outer:
            predict_probability(
                model,
                image,
                tile=tile,
                overlap=float(infer_cfg.get("overlap", 0.25)),
                blend=str(infer_cfg.get("blend", "gaussian")),
                tta=False,
                batch_size=int(infer_cfg.get("batch_size", 4)),
                device=device,
                amp=cfg.amp if device.type == "cuda" else "none",
            )
        _sync(device)
        return time.perf_counter() - start

    for cfg, model in runs:
        for _ in range(opts.infer_warmup):
            once(cfg, model)
    for i in range(opts.infer_repeats):
        for cfg, model in runs[i % len(runs) :] + runs[: i % len(runs)]:
            times[cfg.name].append(once(cfg, model))
    results = {}
    for name, values in times.items():
        median = statistics.median(values)
        results[name] = {
            "seconds_median": median,
            "megapixels_per_s": INFER_IMAGE**2 / median / 1e6,
        }
    return {"results": results, "speedup": _ratios(results, "megapixels_per_s")}


def device_info(device: torch.device) -> dict[str, Any]:
    """Name of the device and the versions that the numbers depend on."""
    info: dict[str, Any] = {
        "type": device.type,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
        info["tf32_conv"] = torch.backends.cudnn.allow_tf32
        info["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    else:
        info["name"] = _cpu_name()
        info["cpu_count"] = os.cpu_count()
    return info


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def run_benchmark(params: dict[str, Any], opts: Options) -> dict[str, Any]:
    """Measure every selected model; returns the JSON-ready report."""
    device = resolve_device(opts.device)
    train_cfg = params.get("train") or {}
    infer_cfg = params.get("infer") or {}
    defs = params["model_defs"]
    names = opts.models or [n for n, d in defs.items() if d.get("kind") == "unet"]
    for name in names:
        if name not in defs:
            raise BenchmarkError(f"--models: '{name}' is not under model_defs ({sorted(defs)})")
        if defs[name].get("kind") != "unet":
            raise BenchmarkError(f"model_defs.{name}: kind '{defs[name].get('kind')}' has no net")
    if int(train_cfg.get("threads", 0) or 0) > 0:
        torch.set_num_threads(int(train_cfg["threads"]))
    configs = configs_for(train_cfg, device, opts)
    models = {}
    for name in names:
        numbers = _train_numbers(name, defs[name], configs, device, opts)
        base = numbers.pop("_base")
        if opts.infer:
            numbers["inference"] = _infer_numbers(
                base, numbers["tile"], infer_cfg, configs, device, opts
            )
        models[name] = numbers
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {
        "device": device_info(device),
        "settings": {
            "preset": params.get("preset"),
            "steps": opts.steps,
            "warmup": opts.warmup,
            "infer_repeats": opts.infer_repeats,
            "infer_warmup": opts.infer_warmup,
            "optimizer": f"SGD lr {LR} momentum {MOMENTUM}",
            "timing": "median step time, configurations interleaved step by step",
            "memory": (
                "cuda.max_memory_allocated above the step's start + persistent state"
                if device.type == "cuda"
                else "sampled RSS above the step's start (after malloc_trim) + persistent state"
                " (approximate)"
            ),
            "train": train_cfg,
            "infer": {**infer_cfg, "tta": False, "image": [INFER_IMAGE, INFER_IMAGE]},
            "configs": [asdict(c) for c in configs],
            **opts.extra,
        },
        "models": models,
    }


def format_table(report: dict[str, Any]) -> str:
    """A readable table of the report: one row per model and configuration."""
    head = (
        f"{'model':<14} {'tile':>4} {'bs':>3} {'config':<20} {'step s':>8} {'img/s':>8} "
        f"{'MP/s':>7} {'peak MB':>8} {'x eager':>7} {'inf MP/s':>8} {'x eager':>7}"
    )
    dev = report["device"]
    lines = [f"device: {dev['name']} ({dev['type']}), torch {dev['torch']}", head, "-" * len(head)]
    for name, m in report["models"].items():
        inference = m.get("inference", {})
        inf_results, inf_speed = inference.get("results", {}), inference.get("speedup", {})
        for cfg, r in m["train"].items():
            prefix = f"{name:<14} {m['tile']:>4} {m['batch_size']:>3} {cfg:<20}"
            if "error" in r:
                lines.append(f"{prefix} error: {r['error']}")
                continue
            peak = "-" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}"
            inf = inf_results.get(cfg)
            inf_mp = f"{inf['megapixels_per_s']:.3f}" if inf else "-"
            inf_x = f"{inf_speed[cfg]:.2f}" if cfg in inf_speed else "-"
            lines.append(
                f"{prefix} {r['step_s_median']:>8.3f} {r['images_per_s']:>8.2f} "
                f"{r['megapixels_per_s']:>7.3f} {peak:>8} {m['train_speedup'].get(cfg, 0):>7.2f} "
                f"{inf_mp:>8} {inf_x:>7}"
            )
        if "error" in inference:
            lines.append(f"{name:<14} inference: {inference['error']}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--preset", help="a name under presets (default: params.yaml preset)")
    parser.add_argument("--models", nargs="+", help="model_defs names (default: every unet)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--steps", type=int, help="timed training steps per configuration")
    parser.add_argument("--warmup", type=int, help="untimed steps per configuration first")
    parser.add_argument("--batch-size", type=int, help="override every model's train batch size")
    parser.add_argument("--tile", type=int, help="override every model's tile size")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile")
    parser.add_argument(
        "--explore",
        action="store_true",
        help="also measure channels_last alone, bf16 autocast, and both (CPU too)",
    )
    parser.add_argument(
        "--cpu-amp", action="store_true", help="apply train.amp (bf16) on CPU in 'optimised'"
    )
    parser.add_argument("--no-infer", action="store_true", help="skip the inference timing")
    parser.add_argument("--infer-repeats", type=int, help="timed 512x512 predictions")
    parser.add_argument("--quick", action="store_true", help="few steps: a CPU smoke run")
    parser.add_argument("--out", type=Path, help="JSON report path (default: stdout)")
    args = parser.parse_args(argv)
    for key in ("steps", "warmup", "batch_size", "tile", "infer_repeats"):
        value = getattr(args, key)
        if value is not None and value < (0 if key == "warmup" else 1):
            parser.error(f"--{key.replace('_', '-')}: {value} is too small")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    quick = args.quick
    opts = Options(
        models=args.models,
        steps=args.steps or (2 if quick else 10),
        warmup=args.warmup if args.warmup is not None else (1 if quick else 3),
        batch_size=args.batch_size,
        tile=args.tile,
        device=args.device,
        compile=args.compile,
        explore=args.explore,
        cpu_amp=args.cpu_amp,
        infer=not args.no_infer,
        infer_repeats=args.infer_repeats or (1 if quick else 3),
        infer_warmup=0 if quick else 1,
        extra={
            "params": str(args.params),
            "overrides": {"tile": args.tile, "batch_size": args.batch_size},
        },
    )
    try:
        params = load_config(args.params, args.preset)
        opts.seed = int(params.get("seed", 0))
        report = run_benchmark(params, opts)
    except (BenchmarkError, DeviceError, InferenceError) as exc:
        sys.exit(f"benchmark: {exc}")
    text = json.dumps(report, indent=2)
    if args.out:
        write_text_atomic(args.out, text + "\n")
    else:
        print(text)
    print(format_table(report), file=sys.stderr)


if __name__ == "__main__":
    main()
