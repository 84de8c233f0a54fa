"""The preflight: the first optimizer steps of every full recipe, at full width and tile, to
learn whether each trains (its loss stays finite and falls) before hours go into it.

Needs the processed data of each dataset at the preset, e.g.
`snakemake data/processed/isbi2012 --cores all --config preset=full`. For each dataset and
U-Net it runs the train stage's own trainer (unetflow.training.preflight) for `--single`
steps of a batch-1 recipe and `--batched` steps of the others, and writes to `--out`, after
each probe: preflight.json (every step's loss, verdict, ok), preflight.md (the table) and
preflight.png (the loss curves). The GPU run leaves out what is not ok (diverged or rose).
`--merge` judges earlier reports again (with the current verdict rules) and writes them as one.

    python tools/preflight.py --preset full --datasets isbi2012 shenzhen --out preflight
    python tools/preflight.py --merge a/preflight.json b/preflight.json --out preflight
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from unetflow.config import load_params
from unetflow.io.logs import configure_logging
from unetflow.io.outputs import atomic_file, write_text_atomic
from unetflow.pipeline.stage import job_params
from unetflow.plots import preflight_figure
from unetflow.training.preflight import Probe, from_record, probe_recipe, steps_for, table

log = logging.getLogger("unetflow.preflight")


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--preset", default="full")
    parser.add_argument("--datasets", nargs="+", default=["isbi2012", "shenzhen"])
    parser.add_argument("--models", nargs="+", help="U-Nets of model_defs (default: all)")
    parser.add_argument("--processed-root", type=Path, default=Path("data/processed"))
    parser.add_argument("--single", type=int, default=150, help="steps of a batch-1 recipe")
    parser.add_argument("--batched", type=int, default=30, help="steps of the other recipes")
    parser.add_argument("--every", type=int, default=10, help="log a loss every N steps")
    parser.add_argument("--out", type=Path, required=True, help="folder for the reports")
    parser.add_argument("--merge", type=Path, nargs="+", help="preflight.json files to join")
    return parser.parse_args(argv)


def unets(params_path: Path, models: list[str] | None) -> list[str]:
    """The U-Nets to probe: `models`, or every model_defs entry of kind unet."""
    defs = load_params(params_path)["model_defs"]
    if models:
        unknown = [m for m in models if m not in defs]
        if unknown:
            raise SystemExit(f"error: {params_path}: model_defs has no {', '.join(unknown)}")
        return models
    return [name for name, cfg in defs.items() if cfg["kind"] == "unet"]


def write_reports(out: Path, rows: list[dict]) -> None:
    """preflight.json, preflight.md and preflight.png for the probes so far."""
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "preflight.json", json.dumps({"recipes": rows}, indent=1) + "\n")
    write_text_atomic(out / "preflight.md", table(rows))
    with atomic_file(out / "preflight.png") as tmp:
        preflight_figure(rows).savefig(tmp, format="png", dpi=110)


def merged(paths: list[Path]) -> list[dict]:
    """The records of earlier reports, judged again."""
    rows = []
    for path in paths:
        try:
            records = json.loads(path.read_text())["recipes"]
        except (OSError, ValueError, KeyError) as exc:
            raise SystemExit(f"error: {path}: expected a preflight.json ({exc})") from exc
        rows.extend(from_record(r).record() for r in records)
    return rows


def probe_all(args: argparse.Namespace) -> list[dict]:
    """Probe every dataset x U-Net, writing the reports after each probe; their records."""
    rows: list[dict] = []
    models = unets(args.params, args.models)
    for dataset in args.datasets:
        processed = args.processed_root / dataset
        if not (processed / "split.csv").exists():
            raise SystemExit(f"error: {processed}: no processed data (run its preprocess stage)")
        for model in models:
            params = job_params(
                args.params, "train", preset=args.preset, dataset=dataset, model=model
            )
            batch = int(params["model_defs"][model]["train"]["batch_size"])
            steps = steps_for(batch, args.single, args.batched)

            def say(step: int, loss: float, name: str = f"{dataset}/{model}") -> None:
                if step % args.every == 0 or step == 1:
                    log.info("preflight %s: step %d loss %.4f", name, step, loss)

            result: Probe = probe_recipe(params, dataset, model, processed, steps, say)
            rows.append(result.record())
            write_reports(args.out, rows)
            log.info("preflight %s/%s: %s", dataset, model, rows[-1]["verdict"])
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Probe every dataset x U-Net (or join earlier reports); exit 1 when a recipe is not ok
    (diverged or rose)."""
    configure_logging()
    args = parse(argv)
    if args.merge:
        rows = merged(args.merge)
        write_reports(args.out, rows)
    else:
        rows = probe_all(args)
    print(table(rows), end="")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
