"""The CUDA paths of training and inference; skipped on machines without a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unetflow.inference.tiling import predict_probability
from unetflow.model.checkpoint import load_model
from unetflow.model.unet import UNet
from unetflow.training.trainer import train

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("amp", ["bf16", "fp16", "none"])
def test_training_on_cuda_lowers_the_loss(em, tmp_path, amp, run_kwargs):
    kwargs = run_kwargs(em, tmp_path, workers=2, epochs=3, steps_per_epoch=8)
    kwargs["train_cfg"] = {
        **kwargs["train_cfg"],
        "device": "cuda",
        "amp": amp,
        "channels_last": True,
        "cudnn_benchmark": True,
    }
    summary = train(**kwargs)
    losses = [
        float(line.split("\t")[1])
        for line in (tmp_path / "dvclive/plots/metrics/train/loss.tsv").read_text().splitlines()[1:]
    ]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert summary["device"].startswith("cuda")
    model, meta = load_model(tmp_path / "model.pt")
    assert next(model.parameters()).device.type == "cpu"


def test_cuda_inference_matches_cpu():
    torch.manual_seed(0)
    model = UNet(width=8, depth=2, padding="same", norm="batch").eval()
    image = np.random.default_rng(0).normal(size=(100, 77)).astype(np.float32)
    settings = {"tile": 64, "overlap": 0.25, "blend": "gaussian", "tta": True, "batch_size": 4}
    cpu = predict_probability(model, image, device="cpu", **settings)
    gpu = predict_probability(model.cuda(), image, device="cuda", **settings)
    assert np.abs(cpu - gpu).max() < 1e-3
