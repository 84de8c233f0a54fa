"""Benchmark the U-Net variants: training and inference throughput, optimised vs eager fp32.

    PYTHONPATH=src python scripts/benchmark.py --params params.yaml --preset full --out bench.json

Writes a JSON report (device, torch version, settings, per-model numbers) to --out or stdout and
a table to stderr. See unetflow.benchmark for what is measured and how.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from unetflow.benchmark import (
    BenchmarkError,
    Options,
    format_table,
    load_config,
    run_benchmark,
)
from unetflow.inference import InferenceError


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
    except (BenchmarkError, InferenceError) as exc:
        sys.exit(f"benchmark: {exc}")
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(args.out)
    else:
        print(text)
    print(format_table(report), file=sys.stderr)


if __name__ == "__main__":
    main()
