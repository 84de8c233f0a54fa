"""tools/benchmark.py: a CPU smoke run with a tiny model, and how settings are chosen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from benchmark import (
    BenchmarkError,
    Options,
    configs_for,
    load_config,
    run_benchmark,
)

ROOT = Path(__file__).resolve().parents[3]
# Runs tools/benchmark.py as on a GPU machine that lacks the workflow tools.
BLOCKED_RUN = (
    "import runpy, sys\n"
    "for name in ('jsonschema', 'dvclive', 'snakemake', 'dvc', 'elasticdeform'):\n"
    "    sys.modules[name] = None\n"
    f"sys.argv[0] = {str(ROOT / 'tools' / 'benchmark.py')!r}\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)
TRAIN = {"amp": "bf16", "channels_last": True, "compile": False, "cudnn_benchmark": True}


def _tiny_params(path: Path) -> Path:
    params = {
        "preset": "full",
        "seed": 3,
        "train": {**TRAIN, "threads": 1},
        "infer": {"overlap": 0.25, "blend": "mean", "batch_size": 8},
        "model_defs": {
            "unet_modern": {
                "kind": "unet",
                "padding": "same",
                "width": 4,
                "depth": 2,
                "norm": "batch",
                "up": "transposed",
                "dropout": 0.1,
                "init": "he",
                "tile": 256,
                "train": {"loss": "dice_ce", "batch_size": 8},
            },
            "tiny_valid": {
                "kind": "unet",
                "padding": "valid",
                "width": 4,
                "depth": 1,
                "tile": 60,
                "train": {"loss": "bce", "batch_size": 2},
            },
            "baseline_mean": {"kind": "mean_mask"},
        },
        "presets": {"full": {}, "quick": {"model_defs": {"unet_modern": {"width": 2}}}},
    }
    path.write_text(yaml.safe_dump(params))
    return path


def test_smoke_run_writes_report_without_workflow_tools(tmp_path):
    params = _tiny_params(tmp_path / "params.yaml")
    out = tmp_path / "bench" / "report.json"
    cmd = [
        sys.executable,
        "-c",
        BLOCKED_RUN,
        "--params",
        str(params),
        "--models",
        "unet_modern",
        "--tile",
        "64",
        "--batch-size",
        "1",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--infer-repeats",
        "1",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "unet_modern" in done.stderr and "x eager" in done.stderr  # the table
    report = json.loads(out.read_text())
    assert report["device"]["type"] == "cpu"
    assert report["device"]["torch"] == torch.__version__
    assert report["device"]["threads"] == 1
    assert report["settings"]["steps"] == 2
    assert [c["name"] for c in report["settings"]["configs"]] == ["eager", "optimised"]
    optimised = report["settings"]["configs"][1]
    assert optimised["channels_last"] is True and optimised["amp"] == "none"  # amp: CUDA only
    model = report["models"]["unet_modern"]
    assert (model["tile"], model["batch_size"], model["output_size"]) == (64, 1, 64)
    assert model["out_channels"] == 2  # dice_ce: softmax over 2 channels
    assert model["parameters"] > 0
    for name in ("eager", "optimised"):
        numbers = model["train"][name]
        assert numbers["step_s_median"] > 0 and numbers["images_per_s"] > 0
        assert numbers["megapixels_per_s"] == pytest.approx(numbers["images_per_s"] * 64 * 64 / 1e6)
        assert numbers["peak_memory_mb"] > 0
        inference = model["inference"]["results"][name]
        assert inference["seconds_median"] > 0
        assert inference["megapixels_per_s"] == pytest.approx(
            512 * 512 / 1e6 / inference["seconds_median"]
        )
    assert model["train_speedup"]["eager"] == 1.0
    assert model["train_speedup"]["optimised"] == pytest.approx(
        model["train"]["optimised"]["images_per_s"] / model["train"]["eager"]["images_per_s"]
    )
    assert model["inference"]["speedup"]["eager"] == 1.0


def test_valid_model_with_bce_and_explore_in_process(tmp_path):
    params = load_config(_tiny_params(tmp_path / "params.yaml"), None)
    params["train"]["threads"] = 0  # leave this process's thread count alone
    opts = Options(
        models=["tiny_valid"], steps=1, warmup=0, device="cpu", explore=True, infer=False
    )
    report = run_benchmark(params, opts)
    model = report["models"]["tiny_valid"]
    assert (model["tile"], model["output_size"], model["out_channels"]) == (60, 44, 1)
    assert set(model["train"]) == {"eager", "optimised", "bf16", "bf16_channels_last"}
    assert all(r["images_per_s"] > 0 for r in model["train"].values())
    assert "inference" not in model


def test_configs_follow_the_train_section():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    configs = configs_for(TRAIN, cpu, Options())
    assert [(c.name, c.amp, c.channels_last) for c in configs] == [
        ("eager", "none", False),
        ("optimised", "none", True),
    ]
    assert configs_for(TRAIN, cpu, Options(cpu_amp=True))[1].amp == "bf16"
    on_gpu = configs_for(TRAIN, cuda, Options(compile=True))
    assert [(c.name, c.amp, c.compile, c.cudnn_benchmark) for c in on_gpu] == [
        ("eager", "none", False, False),
        ("optimised", "bf16", False, True),
        ("compiled", "bf16", True, True),
    ]
    # explore adds only combinations not measured already
    explored = configs_for(TRAIN, cpu, Options(explore=True))
    assert [c.name for c in explored] == ["eager", "optimised", "bf16", "bf16_channels_last"]
    with pytest.raises(BenchmarkError, match="train.amp: 'fp8'"):
        configs_for({"amp": "fp8"}, cpu, Options())


def test_unknown_preset_is_named(tmp_path):
    with pytest.raises(BenchmarkError, match="preset: 'nope' is not defined"):
        load_config(_tiny_params(tmp_path / "params.yaml"), "nope")


def test_quick_preset_applies(tmp_path):
    params = load_config(_tiny_params(tmp_path / "params.yaml"), "quick")
    assert params["model_defs"]["unet_modern"]["width"] == 2


@pytest.mark.parametrize(
    ("models", "message"),
    [(["resnet"], "--models: 'resnet'"), (["baseline_mean"], "model_defs.baseline_mean")],
)
def test_bad_model_names_are_errors(tmp_path, models, message):
    params = load_config(_tiny_params(tmp_path / "params.yaml"), None)
    with pytest.raises(BenchmarkError, match=message):
        run_benchmark(params, Options(models=models, device="cpu"))


def test_missing_tile_is_named(tmp_path):
    params = load_config(_tiny_params(tmp_path / "params.yaml"), None)
    del params["model_defs"]["tiny_valid"]["tile"]
    with pytest.raises(BenchmarkError, match=r"model_defs.tiny_valid.tile"):
        run_benchmark(params, Options(models=["tiny_valid"], device="cpu", steps=1))
