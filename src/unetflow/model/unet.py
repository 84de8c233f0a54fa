"""The U-Net family (Ronneberger et al. 2015) and the mean-mask baseline.

One configurable `UNet` built from named parts, read top to bottom:

- `DoubleConv`: two 3x3 convolutions, each followed by optional batch norm and ReLU;
  `valid` padding shrinks the map by 4 pixels, `same` keeps its size.
- `Down`: 2x2 max-pool, then a `DoubleConv` doubling the channels.
- `Up`: 2x up-sampling that halves the channels (a 2x2 transposed convolution, or nearest
  up-sampling followed by a size-keeping 2x2 convolution: the paper's "up-convolution" read
  both ways), the skip connection centre-cropped to the same size and concatenated, then a
  `DoubleConv`.
- `OutConv`: a 1x1 convolution to the class logits.

Dropout (element-wise, as in the paper's Caffe model) sits at the end of the contracting path,
after the bottleneck convolutions. `output_size` gives the size a tile maps to and rejects sizes
for which some max-pool would see an odd size, so that crops stay centred.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unetflow.config.geometry import PADDINGS, check_choice, output_size

NORMS = ("none", "batch")
UPS = ("transposed", "upsample")
INITS = ("he", "xavier", "default")
ARCHITECTURE_KEYS = (
    "in_channels",
    "width",
    "depth",
    "padding",
    "norm",
    "up",
    "dropout",
    "init",
)


def center_crop(x: Tensor, size: tuple[int, int]) -> Tensor:
    """The centre `size` (h, w) of an N x C x H x W tensor."""
    h, w = size
    top = (x.shape[-2] - h) // 2
    left = (x.shape[-1] - w) // 2
    return x[..., top : top + h, left : left + w]


class DoubleConv(nn.Module):
    """(3x3 conv -> [batch norm] -> ReLU) twice."""

    def __init__(self, in_channels: int, out_channels: int, padding: str, norm: str) -> None:
        super().__init__()
        pad = 0 if padding == "valid" else 1
        batch = norm == "batch"
        layers: list[nn.Module] = []
        for channels in (in_channels, out_channels):
            # A conv bias before batch norm is cancelled by the norm's mean: leave it out.
            layers.append(nn.Conv2d(channels, out_channels, 3, padding=pad, bias=not batch))
            if batch:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class Down(nn.Module):
    """2x2 max-pool, then a DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int, padding: str, norm: str) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.conv = DoubleConv(in_channels, out_channels, padding, norm)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.pool(x))


class UpConv(nn.Module):
    """Nearest 2x up-sampling, then a 2x2 conv padded on the bottom/right to keep the size."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv = nn.Conv2d(in_channels, out_channels, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(self.up(x), (0, 1, 0, 1)))


class Up(nn.Module):
    """2x up-sampling halving the channels, crop-and-concatenate with the skip, DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int, padding: str, norm: str, up: str):
        super().__init__()
        half = in_channels // 2
        if up == "transposed":
            self.up: nn.Module = nn.ConvTranspose2d(in_channels, half, 2, stride=2)
        else:
            self.up = UpConv(in_channels, half)
        self.conv = DoubleConv(half + out_channels, out_channels, padding, norm)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.up(x)
        skip = center_crop(skip, (x.shape[-2], x.shape[-1]))
        return self.conv(torch.cat([skip, x], dim=1))


class OutConv(nn.Module):
    """1x1 convolution to the class logits."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class UNet(nn.Module):
    """A configurable U-Net: N x in_channels x H x W -> N x out_channels x h x w logits.

    `width` channels at the top level, doubled at each of `depth` levels down. With `valid`
    padding h = output_size(H) < H (the skip connections are centre-cropped); with `same`, h = H.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int = 2,
        width: int = 64,
        depth: int = 4,
        padding: str = "valid",
        norm: str = "none",
        up: str = "transposed",
        dropout: float = 0.0,
        init: str = "he",
    ) -> None:
        super().__init__()
        check_choice("padding", padding, PADDINGS)
        check_choice("norm", norm, NORMS)
        check_choice("up", up, UPS)
        check_choice("init", init, INITS)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: {dropout} must be in [0, 1)")
        if depth < 0 or width < 1 or in_channels < 1 or out_channels < 1:
            raise ValueError(
                f"depth ({depth}) must be >= 0 and width ({width}), in_channels ({in_channels}), "
                f"out_channels ({out_channels}) >= 1"
            )
        self.depth = depth
        self.padding = padding
        channels = [width * 2**level for level in range(depth + 1)]
        self.inc = DoubleConv(in_channels, channels[0], padding, norm)
        self.downs = nn.ModuleList(
            Down(channels[i], channels[i + 1], padding, norm) for i in range(depth)
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.ups = nn.ModuleList(
            Up(channels[i + 1], channels[i], padding, norm, up) for i in reversed(range(depth))
        )
        self.outc = OutConv(channels[0], out_channels)
        initialise(self, init)

    def output_size(self, input_size: int) -> int:
        """The output size for a square input tile of `input_size` px (see `output_size`)."""
        return output_size(input_size, self.depth, self.padding)

    def encode(self, x: Tensor) -> list[Tensor]:
        """The output of every block of the contracting path, the bottleneck last."""
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        return skips

    def forward(self, x: Tensor) -> Tensor:
        skips = self.encode(x)
        x = self.dropout(skips.pop())
        for up in self.ups:
            x = up(x, skips.pop())
        return self.outc(x)


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """The model in eval mode for the block; its previous mode restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _fan_in(module: nn.Conv2d | nn.ConvTranspose2d) -> int:
    """Inputs feeding one output unit: k*k*in for a conv; in*(k/stride)^2 for a transposed conv."""
    kernel = math.prod(module.kernel_size)
    if isinstance(module, nn.ConvTranspose2d):
        return max(1, module.in_channels * kernel // math.prod(module.stride))
    return module.in_channels // module.groups * kernel


def initialise(model: nn.Module, init: str) -> None:
    """Initialise every conv: "he" normal std sqrt(2/N), "xavier" normal, or torch's default.

    N is the number of inputs of one unit (the paper's rule); biases start at zero.
    """
    check_choice("init", init, INITS)
    if init == "default":
        return
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
            if init == "he":
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / _fan_in(module)))
            else:
                nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class MeanMask(nn.Module):
    """The mean training mask as a model (the Shenzhen study's baseline); nothing to train.

    Predicts, for every image, the logit of the mean mask resized (bilinear) to the image size.
    """

    def __init__(self, mean_mask: Tensor, eps: float = 1e-4) -> None:
        super().__init__()
        mean_mask = torch.as_tensor(mean_mask, dtype=torch.float32)
        if mean_mask.ndim != 2:
            raise ValueError(
                f"mean_mask: expected an H x W tensor, got shape {tuple(mean_mask.shape)}"
            )
        if mean_mask.min() < 0 or mean_mask.max() > 1:
            raise ValueError("mean_mask: values must lie in [0, 1]")
        self.eps = eps
        self.register_buffer("mean_mask", mean_mask)

    def output_size(self, input_size: int) -> int:
        """Same size as the input."""
        return int(input_size)

    def forward(self, x: Tensor) -> Tensor:
        mask = self.mean_mask[None, None]
        if mask.shape[-2:] != x.shape[-2:]:
            mask = F.interpolate(mask, size=x.shape[-2:], mode="bilinear", align_corners=False)
        logit = torch.logit(mask.clamp(self.eps, 1.0 - self.eps))
        return logit.expand(x.shape[0], 1, -1, -1)


def build_model(model_cfg: dict[str, Any], out_channels: int) -> nn.Module:
    """The network a params.yaml `model_defs` entry describes (kind unet).

    Non-architecture keys (`kind`, `tile`, `train`, ...) are ignored; kind mean_mask raises,
    because that model is computed by training from the masks.
    """
    kind = model_cfg.get("kind")
    if kind == "unet":
        arch = {key: model_cfg[key] for key in ARCHITECTURE_KEYS if key in model_cfg}
        return UNet(out_channels=out_channels, **arch)
    if kind == "mean_mask":
        raise ValueError(
            "kind mean_mask: build it with MeanMask(mean of the training masks), not build_model"
        )
    raise ValueError(f"kind: '{kind}' is not one of ['unet', 'mean_mask']")


def foreground_probability(logits: Tensor) -> Tensor:
    """N x H x W foreground probability: sigmoid of 1-channel logits, softmax[:, 1] of 2-channel."""
    if logits.ndim != 4 or logits.shape[1] not in (1, 2):
        raise ValueError(
            f"logits: expected N x 1 x H x W or N x 2 x H x W, got shape {tuple(logits.shape)}"
        )
    if logits.shape[1] == 1:
        return torch.sigmoid(logits[:, 0].float())
    return torch.softmax(logits.float(), dim=1)[:, 1]


def count_parameters(model: nn.Module) -> int:
    """Number of learnable parameters (buffers such as batch-norm statistics excluded)."""
    return sum(p.numel() for p in model.parameters())
