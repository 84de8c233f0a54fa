"""Overlap-tile inference: coverage, exactness against whole-image inference, blending, TTA.

Which models can be compared exactly with whole-image inference, and why:

- A *valid*-convolution model only ever sees real (mirror-padded) context, so each output tile
  equals the matching window of the model applied to the whole mirror-padded image. For a
  pooling-free conv stack this holds at any image size and tile grid. A valid U-Net also
  max-pools, so it holds when every tile starts on its pooling grid (offsets multiples of
  2**depth) and the padded image is itself a size the network accepts; the test picks sizes
  and a stride for which that is true.
- A *same*-padding model zero-pads at every tile border, where the whole image has real
  context, so tiling and whole-image inference differ within the receptive-field radius r of
  the seams (the tile edges inside the image), and nowhere else. The test uses a conv stack of
  known radius and compares every pixel farther than r from all seams; the image border itself
  is zero-padded in both, because the tiles are flush with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from torch import nn

from project import UNET_CFG
from unetflow.config import load_params
from unetflow.config.geometry import output_size, valid_input_sizes
from unetflow.inference.infer import infer_dataset
from unetflow.inference.tiling import (
    InferenceError,
    blend_window,
    dihedral,
    dihedral_inverse,
    predict_probability,
    tile_starts,
)
from unetflow.io.images import ImageError, read_float_tiff, read_gray, write_float_tiff
from unetflow.model.checkpoint import save_model
from unetflow.model.unet import MeanMask, UNet, build_model

torch.set_num_threads(1)
CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[3]


class ConvStack(nn.Module):
    """3x3 convolutions with tanh between them, random weights from a numpy seed.

    `padding` "same" keeps the size (radius = number of convs), "valid" shrinks by 2 per conv.
    `kernel` 1 makes a pointwise model (invariant under flips and rotations of the input).
    """

    def __init__(self, *, convs: int = 2, padding: str = "same", kernel: int = 3, seed: int = 0):
        super().__init__()
        rng = np.random.default_rng(seed)
        pad = kernel // 2 if padding == "same" else 0
        channels = [1] + [4] * (convs - 1) + [1]
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, kernel, padding=pad)
            for a, b in zip(channels, channels[1:], strict=False)
        )
        with torch.no_grad():
            for conv in self.convs:
                std = 1.0 / np.sqrt(conv.weight[0].numel())
                conv.weight.copy_(torch.from_numpy(rng.normal(0, std, conv.weight.shape)))
                conv.bias.copy_(torch.from_numpy(rng.normal(0, 0.1, conv.bias.shape)))
        self.shrink = 0 if padding == "same" else convs * (kernel - 1)

    def output_size(self, input_size: int) -> int:
        return input_size - self.shrink

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.convs) - 1:
                x = torch.tanh(x)
        return x


class Constant(nn.Module):
    """Logit `value` everywhere (a same-padding model that ignores its input)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def output_size(self, input_size: int) -> int:
        return input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, self.value)


def whole(model: nn.Module, image: np.ndarray) -> np.ndarray:
    """Foreground probability of the model applied to the whole image at once (1-channel)."""
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(np.ascontiguousarray(image))[None, None].float())
    return torch.sigmoid(logits)[0, 0].numpy()


def seeded_unet(**kwargs) -> UNet:
    with torch.random.fork_rng():
        torch.manual_seed(3)
        return UNet(in_channels=1, width=4, depth=2, norm="none", dropout=0.0, **kwargs).eval()


def random_image(shape: tuple[int, int], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def predict(model: nn.Module, image: np.ndarray, **kwargs) -> np.ndarray:
    settings = {"overlap": 0.25, "blend": "mean", "tta": False, "batch_size": 4, "device": CPU}
    settings.update(kwargs)
    return predict_probability(model, image, **settings)


def test_tile_grid_covers_the_axis_with_the_last_tile_flush() -> None:
    assert tile_starts(45, 16, 12) == [0, 12, 24, 29]
    assert tile_starts(37, 16, 12) == [0, 12, 21]
    assert tile_starts(16, 16, 12) == [0]
    assert tile_starts(5, 16, 12) == [0]
    assert tile_starts(40, 16, 12) == [0, 12, 24]  # 24 = 40 - 16: no duplicate last tile


@pytest.mark.parametrize("blend", ["mean", "gaussian"])
def test_valid_unet_tiles_equal_whole_image_inference(blend: str) -> None:
    # Depth 2, valid: a 72 px tile gives 32 px, margin 20. Stride floor(32 * 0.25) = 24 and
    # the flush last tiles (84 - 32 = 52, 100 - 32 = 68) are multiples of 4, and 84+40 and
    # 100+40 are sizes the network accepts, so tiling must be exact (module docstring).
    model = seeded_unet(padding="valid")
    assert model.output_size(72) == 32
    image = random_image((84, 100))
    tiled = predict(model, image, tile=72, overlap=0.25, blend=blend, batch_size=3)
    with torch.no_grad():
        padded = torch.from_numpy(np.pad(image, 20, mode="reflect"))[None, None]
        expected = torch.softmax(model(padded), dim=1)[0, 1].numpy()
    assert tiled.shape == expected.shape == (84, 100)
    assert tiled.dtype == np.float32
    np.testing.assert_allclose(tiled, expected, atol=1e-5)
    assert expected.std() > 1e-3  # a real, varying prediction, not a constant


@pytest.mark.parametrize("shape", [(45, 37), (16, 51), (9, 9)])
def test_valid_conv_stack_tiles_equal_whole_image_at_odd_sizes(shape: tuple[int, int]) -> None:
    model = ConvStack(convs=3, padding="valid", seed=2)  # margin 3, 22 px tile -> 16 px
    image = random_image(shape)
    tiled = predict(model, image, tile=22, overlap=0.25, blend="gaussian")
    expected = whole(model, np.pad(image, 3, mode="reflect"))
    assert tiled.shape == shape
    np.testing.assert_allclose(tiled, expected, atol=1e-5)


def test_same_padding_model_equals_whole_image_away_from_tile_seams() -> None:
    radius = 2  # two 3x3 convolutions
    model = ConvStack(convs=2, padding="same", seed=4)
    image = random_image((45, 37))  # not a multiple of the 16 px tile in either direction
    tiled = predict(model, image, tile=16, overlap=0.25, blend="mean")
    expected = whole(model, image)
    # Tiles start at rows 0, 12, 24, 29 and columns 0, 12, 21 (stride 12, last tile flush).
    # Seams are the tile edges inside the image: starts > 0 and ends < the image size.
    away = np.ones(image.shape, dtype=bool)
    for axis, starts, size in ((0, [0, 12, 24, 29], 45), (1, [0, 12, 21], 37)):
        edges = [s for s in starts if s > 0] + [s + 16 for s in starts if s + 16 < size]
        for edge in edges:
            band = slice(max(0, edge - radius), edge + radius)
            if axis == 0:
                away[band, :] = False
            else:
                away[:, band] = False
    assert away.mean() > 0.25  # the comparison covers a good part of the image
    np.testing.assert_allclose(tiled[away], expected[away], atol=1e-5)
    # ... and the seams do differ: zero padding inside tiles is not the image's context.
    assert np.abs(tiled - expected)[~away].max() > 1e-4


@pytest.mark.parametrize("blend", ["mean", "gaussian"])
@pytest.mark.parametrize("shape", [(45, 37), (5, 3), (1, 1), (16, 16)])
def test_pointwise_model_is_exact_everywhere(blend: str, shape: tuple[int, int]) -> None:
    model = ConvStack(convs=2, padding="same", kernel=1, seed=5)
    image = random_image(shape)
    tiled = predict(model, image, tile=16, blend=blend)
    np.testing.assert_allclose(tiled, whole(model, image), atol=1e-5)


@pytest.mark.parametrize("blend", ["mean", "gaussian"])
@pytest.mark.parametrize("shape", [(45, 37), (3, 70), (1, 1)])
def test_every_pixel_is_covered(blend: str, shape: tuple[int, int]) -> None:
    # A pixel no tile covered would have zero total weight: NaN, or 0 instead of the constant.
    tiled = predict(Constant(0.7), random_image(shape), tile=16, blend=blend, overlap=0.5)
    np.testing.assert_allclose(tiled, 1 / (1 + np.exp(-0.7)), atol=1e-6)


def test_gaussian_window_is_positive_and_peaks_in_the_centre() -> None:
    window = blend_window(32, "gaussian")
    assert window.min() > 0
    assert np.unravel_index(window.argmax(), window.shape) in {(15, 15), (15, 16), (16, 15)}
    np.testing.assert_allclose(window, window.T)
    # sigma = 32 / 8 = 4 px around the centre 15.5: row 0 is 15.5 px out, row 16 is 0.5 px out.
    expected = np.exp(-0.5 * ((15.5 / 4) ** 2 - (0.5 / 4) ** 2))
    np.testing.assert_allclose(window[0, 16] / window[16, 16], expected, rtol=1e-9)
    assert (blend_window(8, "mean") == 1).all()


@pytest.mark.parametrize("shape", [(100, 77), (300, 513), (77, 100), (5, 7)])
def test_valid_unet_gives_full_size_output(shape: tuple[int, int]) -> None:
    model = seeded_unet(padding="valid")
    prob = predict(model, random_image(shape), tile=72, batch_size=16)
    assert prob.shape == shape
    assert np.isfinite(prob).all()
    assert prob.min() >= 0 and prob.max() <= 1
    assert prob.std() > 0  # the model's output varies with the image


@pytest.mark.parametrize("shape", [(10, 3), (31, 17)])
def test_images_smaller_than_a_tile(shape: tuple[int, int]) -> None:
    # A same-padding U-Net with a 32 px tile: the image is mirror-padded up to the tile.
    model = seeded_unet(padding="same", up="upsample")
    image = random_image(shape)
    prob = predict(model, image, tile=32)
    assert prob.shape == shape and np.isfinite(prob).all()
    with torch.no_grad():
        pad = ((0, 32 - shape[0]), (0, 32 - shape[1]))
        padded = torch.from_numpy(np.pad(image, pad, mode="reflect"))[None, None]
        expected = torch.softmax(model(padded), dim=1)[0, 1, : shape[0], : shape[1]].numpy()
    np.testing.assert_allclose(prob, expected, atol=1e-5)


def test_gaussian_blending_is_finite_and_closer_to_whole_image_than_mean() -> None:
    # A same-padding U-Net is wrong near tile seams (zero padding instead of context); the
    # Gaussian window lowers the weight of tile borders, so its blend is closer to the
    # whole-image prediction (72 x 44 is a size the depth-2 network accepts whole).
    model = seeded_unet(padding="same")
    image = random_image((72, 44))
    with torch.no_grad():
        reference = torch.softmax(model(torch.from_numpy(image)[None, None]), dim=1)[0, 1].numpy()
    errors = {}
    for blend in ("mean", "gaussian"):
        prob = predict(model, image, tile=32, blend=blend, overlap=0.5)
        assert prob.shape == (72, 44) and np.isfinite(prob).all()
        assert prob.min() >= 0 and prob.max() <= 1
        errors[blend] = np.abs(prob - reference).mean()
    assert 0 < errors["gaussian"] < 0.75 * errors["mean"]


def test_dihedral_transforms_are_eight_distinct_invertible_maps() -> None:
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    seen = set()
    for k in range(8):
        y = dihedral(x, k)
        torch.testing.assert_close(dihedral_inverse(y, k), x)
        seen.add(tuple(y.flatten().tolist()) + tuple(y.shape))
    assert len(seen) == 8


def test_tta_is_exact_for_an_invariant_model() -> None:
    model = ConvStack(convs=2, padding="same", kernel=1, seed=6)
    image = random_image((45, 37))
    plain = predict(model, image, tile=16)
    np.testing.assert_allclose(predict(model, image, tile=16, tta=True), plain, atol=1e-6)


def numpy_dihedral(image: np.ndarray, k: int) -> np.ndarray:
    return np.rot90(np.flip(image, axis=1) if k >= 4 else image, k % 4)


def numpy_dihedral_inverse(image: np.ndarray, k: int) -> np.ndarray:
    image = np.rot90(image, -(k % 4))
    return np.flip(image, axis=1) if k >= 4 else image


def test_tta_is_the_average_of_the_eight_transforms() -> None:
    # A valid-conv model tiles exactly (see the module docstring), so predicting each
    # transformed image whole and averaging the inverted results must equal TTA per tile.
    model = ConvStack(convs=2, padding="valid", seed=7)
    image = random_image((23, 30))
    tta = predict(model, image, tile=14, tta=True)
    outputs = [
        numpy_dihedral_inverse(predict(model, numpy_dihedral(image, k).copy(), tile=14), k)
        for k in range(8)
    ]
    np.testing.assert_allclose(tta, np.mean(outputs, axis=0), atol=1e-5)
    # The model is not invariant: TTA really changes the prediction.
    assert np.abs(tta - outputs[0]).max() > 1e-3


def test_mean_mask_is_applied_to_the_whole_image() -> None:
    mean_mask = torch.from_numpy(np.linspace(0.1, 0.9, 40 * 24).reshape(40, 24).astype(np.float32))
    model = MeanMask(mean_mask)
    same_size = predict(model, random_image((40, 24)), tile=16)
    np.testing.assert_allclose(same_size, mean_mask.numpy(), atol=1e-5)
    resized = predict(model, random_image((20, 12)), tile=16)
    assert resized.shape == (20, 12)
    assert resized[0, 0] < 0.2 and resized[-1, -1] > 0.8  # stretched, not tiled


def test_training_mode_is_restored() -> None:
    model = seeded_unet(padding="same").train()
    predict(model, random_image((32, 32)), tile=32)
    assert model.training
    model.eval()
    predict(model, random_image((32, 32)), tile=32)
    assert not model.training


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"overlap": 1.0}, "overlap"),
        ({"overlap": -0.1}, "overlap"),
        ({"blend": "max"}, "blend"),
        ({"batch_size": 0}, "batch_size"),
        ({"amp": "fp8"}, "amp"),
    ],
)
def test_bad_settings_name_the_key(settings: dict, match: str) -> None:
    with pytest.raises(InferenceError, match=match):
        predict(Constant(0.0), random_image((8, 8)), tile=8, **settings)


def test_a_tile_the_model_rejects_raises_with_the_size() -> None:
    with pytest.raises(ValueError, match="73"):
        predict(seeded_unet(padding="valid"), random_image((50, 50)), tile=73)


# --- the infer stage -------------------------------------------------------------------------

INFER_CFG = {"overlap": 0.25, "blend": "gaussian", "tta": False, "batch_size": 4, "threshold": 0.5}


def write_checkpoint(path: Path, kind: str) -> UNet:
    model = seeded_unet(padding="same")
    meta = {
        "model": UNET_CFG,
        "dataset": {"name": f"toy_{kind}", "kind": kind, "preprocess": {}},
        "normalisation": {"mean": 0.5, "std": 0.25},
        "tile": 32,
        "train": {},
    }
    save_model(path, model, meta)
    return model


def write_processed(folder: Path) -> dict[str, np.ndarray]:
    """A processed dataset: train/val/test slices and three predict slices whose id order is
    not their slice order (the ISBI stack must follow the slice index)."""
    rows = [
        ("slice_0", "train", 0, (40, 36)),
        ("slice_1", "val", 1, (40, 36)),
        ("slice_2", "test", 2, (33, 50)),
        ("testslice_a", "predict", 2, (40, 36)),
        ("testslice_b", "predict", 0, (40, 36)),
        ("testslice_c", "predict", 1, (40, 36)),
    ]
    (folder / "images").mkdir(parents=True)
    images = {}
    for i, (sid, _, _, shape) in enumerate(rows):
        images[sid] = random_image(shape, seed=10 + i)
        write_float_tiff(folder / "images" / f"{sid}.tif", images[sid])
    table = pd.DataFrame(
        [
            {"id": sid, "split": split, "source": "x", "index": idx, "height": s[0], "width": s[1]}
            for sid, split, idx, s in rows
        ]
    )
    table.to_csv(folder / "split.csv", index=False)
    return images


def test_infer_dataset_writes_every_val_test_predict_image(tmp_path: Path) -> None:
    model = write_checkpoint(tmp_path / "model.pt", "em")
    images = write_processed(tmp_path / "processed")
    out = tmp_path / "predictions"
    summary = infer_dataset(
        checkpoint=tmp_path / "model.pt",
        processed=tmp_path / "processed",
        out=out,
        infer_cfg=INFER_CFG,
        device="cpu",
    )
    inferred = ["slice_1", "slice_2", "testslice_a", "testslice_b", "testslice_c"]
    assert summary["images"] == 5 and summary["seconds"] > 0 and summary["megapixels_per_s"] > 0
    assert sorted(p.stem for p in (out / "probabilities").iterdir()) == inferred
    assert sorted(p.stem for p in (out / "masks").iterdir()) == inferred
    index = pd.read_csv(out / "index.csv")
    assert list(index.columns) == ["id", "split", "height", "width", "foreground_fraction"]
    assert list(index["id"]) == inferred
    assert list(index["split"]) == ["val", "test", "predict", "predict", "predict"]
    probs = {}
    for row in index.itertuples():
        image = images[row.id]
        prob = read_float_tiff(out / "probabilities" / f"{row.id}.tif")
        mask = read_gray(out / "masks" / f"{row.id}.png")
        expected = predict(model, image, tile=32, blend="gaussian")
        np.testing.assert_allclose(prob, expected, atol=1e-6)
        np.testing.assert_array_equal(mask, np.where(expected > 0.5, 255, 0))
        assert (row.height, row.width) == image.shape
        assert row.foreground_fraction == pytest.approx((mask == 255).mean())
        probs[row.id] = prob
    assert 0 < index["foreground_fraction"].mean() < 1
    # ISBI submission: 32-bit float pages of membrane probability, in slice-index order b, c, a.
    with tifffile.TiffFile(out / "isbi_submission.tif") as tif:
        assert len(tif.pages) == 3
        assert all(page.dtype == np.float32 and page.compression == 1 for page in tif.pages)
        stack = tif.asarray()
    assert stack.shape == (3, 40, 36)
    for page, sid in zip(stack, ["testslice_b", "testslice_c", "testslice_a"], strict=True):
        np.testing.assert_allclose(page, 1 - probs[sid], atol=1e-6)


def test_infer_dataset_of_a_fold_predicts_its_val_and_test_images_only(tmp_path: Path) -> None:
    """Fold 2 of 3 (one labelled slice each) tests slice_2 and validates on slice_0; the
    replicate runs predict nothing else, and write no ISBI stack."""
    write_checkpoint(tmp_path / "model.pt", "em")
    write_processed(tmp_path / "processed")
    folds = pd.DataFrame({"id": ["slice_0", "slice_1", "slice_2"], "fold": [0, 1, 2]})
    folds.to_csv(tmp_path / "processed" / "folds.csv", index=False)
    out = tmp_path / "predictions"
    summary = infer_dataset(
        checkpoint=tmp_path / "model.pt",
        processed=tmp_path / "processed",
        out=out,
        infer_cfg=INFER_CFG,
        device="cpu",
        fold=2,
    )
    index = pd.read_csv(out / "index.csv")
    assert summary["images"] == 2
    assert list(zip(index["id"], index["split"], strict=True)) == [
        ("slice_0", "val"),
        ("slice_2", "test"),
    ]
    assert not (out / "isbi_submission.tif").exists()


def test_infer_dataset_of_a_cxr_set_has_no_isbi_stack(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "model.pt", "cxr")
    write_processed(tmp_path / "processed")
    out = tmp_path / "predictions"
    cfg = {**INFER_CFG, "tta": True, "blend": "mean", "threshold": 0.9}
    infer_dataset(
        checkpoint=tmp_path / "model.pt",
        processed=tmp_path / "processed",
        out=out,
        infer_cfg=cfg,
        device="cpu",
    )
    assert not (out / "isbi_submission.tif").exists()
    assert len(list((out / "masks").iterdir())) == 5
    prob = read_float_tiff(out / "probabilities" / "slice_1.tif")
    np.testing.assert_array_equal(
        read_gray(out / "masks" / "slice_1.png"), np.where(prob > 0.9, 255, 0)
    )


def test_interrupted_inference_leaves_the_previous_output_untouched(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "model.pt", "em")
    write_processed(tmp_path / "processed")
    (tmp_path / "processed" / "images" / "testslice_c.tif").unlink()
    out = tmp_path / "predictions"
    out.mkdir()
    (out / "old.txt").write_text("previous run\n")
    with pytest.raises(ImageError, match="testslice_c.tif: not found"):
        infer_dataset(
            checkpoint=tmp_path / "model.pt",
            processed=tmp_path / "processed",
            out=out,
            infer_cfg=INFER_CFG,
            device="cpu",
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "predictions", "processed"]
    assert [p.name for p in out.iterdir()] == ["old.txt"]


def test_unet_delft_geometry_pads_512_to_one_700_tile_and_crops_back() -> None:
    """unet_delft as params.yaml defines it: a 512² slice is one 700² mirror-padded tile.

    A depth-4 valid U-Net maps 700 px to 516 (700 = 16·36 + 124, output 16·36 − 60); the 514
    the TU Delft write-up names is not an output size of this architecture (docs/design.md).
    """
    cfg = load_params(ROOT / "params.yaml")["model_defs"]["unet_delft"]
    assert (cfg["tile"], cfg["padding"], cfg["up"], cfg["depth"]) == (700, "valid", "upsample", 4)
    assert output_size(700, 4, "valid") == 516
    assert 514 not in {output_size(s, 4, "valid") for s in valid_input_sizes(4, "valid", 600, 800)}
    model = build_model({**cfg, "width": 2, "dropout": 0.0}, out_channels=2).eval()
    seen: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    image = random_image((512, 512))
    prob = predict(model, image, tile=cfg["tile"])
    assert seen == [(1, 1, 700, 700)] and prob.shape == (512, 512)
    padded = np.pad(image, ((92, 96), (92, 96)), mode="reflect")  # 92 + 512 + 96 = 700
    with torch.no_grad():
        logits = model(torch.from_numpy(padded)[None, None])
    expected = torch.softmax(logits, dim=1)[0, 1, :512, :512].numpy()
    assert np.allclose(prob, expected, atol=1e-6)
