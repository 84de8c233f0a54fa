"""The U-Net family: sizes, parameter counts, parts, initialisation, dropout and the baseline."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from unetflow.config import resolve
from unetflow.config.geometry import output_size, valid_input_sizes
from unetflow.model.unet import (
    MeanMask,
    UNet,
    build_model,
    count_parameters,
    foreground_probability,
)

PARAMS = Path(__file__).resolve().parents[3] / "params.yaml"

PAPER = dict(width=64, depth=4, padding="valid", norm="none", up="transposed", dropout=0.5)
ANDERSEN = dict(width=32, depth=4, padding="same", norm="batch", up="transposed", init="default")


def _shape(model: nn.Module, size: int, batch: int = 2) -> tuple[int, ...]:
    model.eval()
    with torch.no_grad():
        return tuple(model(torch.randn(batch, 1, size, size)).shape)


@pytest.mark.parametrize(
    ("depth", "padding", "size", "expected"),
    [
        (1, "valid", 28, 12),  # 28-4=24, /2=12, -4=8, x2-4=12
        (2, "valid", 60, 20),  # 56, 28, 24, 12, 8, 12, 20
        (3, "valid", 124, 36),  # 120, 60, 56, 28, 24, 12, 8, 12, 20, 36
        (1, "same", 18, 18),
        (2, "same", 20, 20),
        (3, "same", 24, 24),
    ],
)
def test_output_shape_matches_output_size(depth, padding, size, expected):
    model = UNet(width=4, depth=depth, padding=padding, out_channels=3)
    assert model.output_size(size) == output_size(size, depth, padding) == expected
    assert _shape(model, size) == (2, 3, expected, expected)


def test_valid_arithmetic_by_hand():
    # depth 1: (20-4)/2 = 8 -> 8-4 = 4 -> 2*4-4 = 4
    assert output_size(20, 1, "valid") == 4
    # depth 0 is two 3x3 valid convs: -4
    assert output_size(10, 0, "valid") == 6
    assert output_size(700, 4, "valid") == 516


def test_paper_tile_572_gives_388():
    assert output_size(572, 4, "valid") == 388
    assert UNet(**PAPER).output_size(572) == 388
    # the real forward pass at 572 px, with a thin network to stay fast
    assert _shape(UNet(width=4, depth=4, padding="valid"), 572, batch=1) == (1, 2, 388, 388)


@pytest.mark.parametrize(
    ("size", "depth", "padding", "reason"),
    [
        (570, 4, "valid", "odd size (279 px)"),
        (100, 4, "same", "odd size (25 px)"),
        (60, 4, "valid", "level 3 leaves 0 px"),
        (14, 1, "valid", "up-path at level 0 leaves -2 px"),
        (3, 0, "valid", "bottleneck leaves -1 px"),
    ],
)
def test_invalid_sizes_are_rejected_naming_size_and_alternatives(size, depth, padding, reason):
    with pytest.raises(ValueError, match="nearest valid sizes") as info:
        output_size(size, depth, padding)
    message = str(info.value)
    assert f"input size {size} px" in message
    assert reason in message
    suggested = [int(s) for s in message.split("nearest valid sizes: [")[1].rstrip("]").split(",")]
    assert suggested
    for s in suggested:
        output_size(s, depth, padding)  # every suggestion is valid


def test_suggestions_are_the_nearest():
    with pytest.raises(ValueError, match=r"\[540, 556, 572, 588\]"):
        output_size(570, 4, "valid")


def test_unet_output_size_checks_the_size():
    with pytest.raises(ValueError, match="input size 30 px"):
        UNet(width=4, depth=3, padding="same").output_size(30)


def test_valid_input_sizes():
    sizes = valid_input_sizes(4, "valid", 100, 800)
    assert 572 in sizes and 700 in sizes
    assert 570 not in sizes and 571 not in sizes
    # depth-4 valid sizes are 16 b + 124 with at least 4 px at the bottom
    assert sizes == list(range(188, 801, 16))
    for s in range(100, 801):
        ok = s in sizes
        try:
            output_size(s, 4, "valid")
            assert ok, s
        except ValueError:
            assert not ok, s
    assert valid_input_sizes(3, "same", 1, 40) == [8, 16, 24, 32, 40]
    assert valid_input_sizes(4, "valid", 200, 199) == []


def _double_conv(cin: int, cout: int, batch: bool) -> int:
    """Two 3x3 convs: weights, then biases (no bias before batch norm) or norm scale and shift."""
    per_channel = 2 if batch else 1
    return 9 * cin * cout + per_channel * cout + 9 * cout * cout + per_channel * cout


def _unet_params(width: int, depth: int, batch: bool, in_ch: int = 1, out_ch: int = 2) -> int:
    ch = [width * 2**i for i in range(depth + 1)]
    total = _double_conv(in_ch, ch[0], batch)
    total += sum(_double_conv(ch[i], ch[i + 1], batch) for i in range(depth))
    for i in range(depth):  # 2x2 up-conv halving ch[i+1], then DoubleConv(2*ch[i] -> ch[i])
        total += 4 * ch[i + 1] * ch[i] + ch[i] + _double_conv(2 * ch[i], ch[i], batch)
    return total + ch[0] * out_ch + out_ch


def test_parameter_count_unet_paper():
    model = UNet(**PAPER)
    n = count_parameters(model)
    assert abs(n - 31.0e6) / 31.0e6 < 0.01
    assert n == _unet_params(64, 4, batch=False) == 31_030_658


def test_parameter_count_unet_andersen():
    n = count_parameters(UNet(**ANDERSEN))
    assert n == _unet_params(32, 4, batch=True) == 7_762_498


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_upsample_and_transposed_both_work_with_equal_sizes(padding):
    size = 44 if padding == "valid" else 32
    shapes = {}
    for up in ("transposed", "upsample"):
        model = UNet(width=4, depth=2, padding=padding, up=up)
        shapes[up] = _shape(model, size)
        assert sum(isinstance(m, nn.ConvTranspose2d) for m in model.modules()) == (
            2 if up == "transposed" else 0
        )
    assert shapes["transposed"] == shapes["upsample"]
    # both up-paths carry the same number of weights (2x2 kernels, halving the channels)
    counts = {up: count_parameters(UNet(width=4, depth=2, up=up)) for up in shapes}
    assert counts["transposed"] == counts["upsample"]


def test_he_init_std_is_sqrt_2_over_fan_in():
    torch.manual_seed(0)
    model = UNet(width=32, depth=2, init="he")
    checked = 0
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.weight.numel() >= 10_000:
            fan_in = module.in_channels * 9
            expected = math.sqrt(2.0 / fan_in)
            assert module.weight.std().item() == pytest.approx(expected, rel=0.05)
            assert abs(module.weight.mean().item()) < 0.05 * expected
            assert torch.all(module.bias == 0)
            checked += 1
        if isinstance(module, nn.ConvTranspose2d):
            # each output pixel of a stride-2 2x2 up-conv sees in_channels inputs
            expected = math.sqrt(2.0 / module.in_channels)
            assert module.weight.std().item() == pytest.approx(expected, rel=0.1)
    assert checked >= 4


def test_xavier_and_default_init_differ_from_he():
    torch.manual_seed(0)
    he = UNet(width=16, depth=1, init="he").inc.block[2].weight.std().item()
    torch.manual_seed(0)
    xavier = UNet(width=16, depth=1, init="xavier").inc.block[2].weight.std().item()
    torch.manual_seed(0)
    default = UNet(width=16, depth=1, init="default").inc.block[2].weight.std().item()
    fan_in, fan_out = 16 * 9, 16 * 9
    assert he == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)
    assert xavier == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.05)
    assert default == pytest.approx(1 / math.sqrt(3 * fan_in), rel=0.05)  # kaiming_uniform(a=√5)


def test_dropout_is_active_only_in_training():
    torch.manual_seed(0)
    model = UNet(width=4, depth=2, padding="same", dropout=0.5)
    assert isinstance(model.dropout, nn.Dropout) and model.dropout.p == 0.5
    x = torch.randn(1, 1, 16, 16)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    no_dropout = UNet(width=4, depth=2, padding="same", dropout=0.0).train()
    assert torch.equal(no_dropout(x), no_dropout(x))


def test_batch_norm_layers():
    model = UNet(width=4, depth=2, padding="same", norm="batch")
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 2 * (1 + 2 + 2)  # two per DoubleConv: inc, 2 downs, 2 ups
    convs3 = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert all(c.bias is None for c in convs3)


@pytest.mark.parametrize(
    "kwargs",
    [{"padding": "full"}, {"norm": "group"}, {"up": "bicubic"}, {"init": "orthogonal"}],
)
def test_bad_options_name_the_key(kwargs):
    key = next(iter(kwargs))
    with pytest.raises(ValueError, match=f"{key}: '{kwargs[key]}' is not one of"):
        UNet(**kwargs)


def test_mean_mask():
    mean = torch.tensor([[0.0, 0.5], [1.0, 0.25]])
    model = MeanMask(mean)
    assert model.output_size(123) == 123
    assert count_parameters(model) == 0
    out = model(torch.zeros(3, 1, 2, 2))
    assert out.shape == (3, 1, 2, 2)
    prob = torch.sigmoid(out[0, 0])
    assert prob[0, 1].item() == pytest.approx(0.5)
    assert prob[1, 1].item() == pytest.approx(0.25)
    assert prob[0, 0].item() == pytest.approx(1e-4, rel=1e-3)  # clamped: finite logits
    assert torch.isfinite(out).all()
    resized = model(torch.zeros(1, 1, 8, 6))
    assert resized.shape == (1, 1, 8, 6)
    assert model.state_dict()["mean_mask"].shape == (2, 2)
    with pytest.raises(ValueError, match="mean_mask"):
        MeanMask(torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match="mean_mask"):
        MeanMask(torch.full((2, 2), 2.0))


def test_foreground_probability():
    one = torch.tensor([[[[0.0, 2.0]]]])
    p1 = foreground_probability(one)
    assert p1.shape == (1, 1, 2)
    assert p1[0, 0, 1].item() == pytest.approx(1 / (1 + math.exp(-2)))
    two = torch.tensor([[[[0.0, 1.0]], [[0.0, 3.0]]]])
    p2 = foreground_probability(two)
    assert p2.shape == (1, 1, 2)
    assert p2[0, 0, 0].item() == pytest.approx(0.5)
    assert p2[0, 0, 1].item() == pytest.approx(1 / (1 + math.exp(-2)))
    with pytest.raises(ValueError, match="logits"):
        foreground_probability(torch.zeros(1, 3, 2, 2))


@pytest.mark.parametrize("preset", ["full", "quick"])
def test_build_model_from_params_yaml(preset):
    params = resolve(yaml.safe_load(PARAMS.read_text()), preset)
    defs = params["model_defs"]
    built = 0
    for name, cfg in defs.items():
        if cfg["kind"] != "unet":
            continue
        model = build_model(cfg, out_channels=2)
        assert isinstance(model, UNet), name
        assert model.depth == cfg["depth"] and model.padding == cfg["padding"]
        assert model.inc.block[0].out_channels == cfg["width"]
        assert model.outc.conv.out_channels == 2
        built += 1
    assert built == 4
    if preset == "full":
        assert count_parameters(build_model(defs["unet_paper"], 2)) == 31_030_658
        assert count_parameters(build_model(defs["unet_andersen"], 2)) == 7_762_498
    with pytest.raises(ValueError, match="mean_mask"):
        build_model(defs["baseline_mean"], out_channels=1)


def test_build_model_ignores_non_architecture_keys():
    cfg = {
        "kind": "unet",
        "padding": "same",
        "width": 4,
        "depth": 2,
        "norm": "batch",
        "up": "upsample",
        "dropout": 0.1,
        "init": "he",
        "tile": 256,
        "train": {"loss": "bce", "lr": 0.01},
    }
    model = build_model(cfg, out_channels=1)
    assert _shape(model, 16) == (2, 1, 16, 16)
    with pytest.raises(ValueError, match="kind: 'resnet'"):
        build_model({"kind": "resnet"}, out_channels=1)
