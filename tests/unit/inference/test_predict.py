"""`unetflow predict`: PNG/TIFF images in, masks and probabilities at the input size out."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from skimage import io as skio
from skimage.color import rgb2gray

from project import UNET_CFG
from unetflow.cli import main
from unetflow.inference.tiling import predict_probability
from unetflow.io.images import read_float_tiff, read_gray
from unetflow.model.checkpoint import save_model
from unetflow.model.unet import MeanMask, UNet

torch.set_num_threads(1)
NORMALISATION = {"mean": 0.4, "std": 0.2}


def unet_checkpoint(path: Path, preprocess: dict | None = None) -> UNet:
    """A random depth-2 same-padding U-Net saved as model.pt (tile 32); returns the model."""
    with torch.random.fork_rng():
        torch.manual_seed(11)
        model = UNet(width=4, depth=2, padding="same", dropout=0.0).eval()
    meta = {
        "model": UNET_CFG,
        "dataset": {"name": "synth_em", "kind": "em", "preprocess": preprocess or {}},
        "normalisation": NORMALISATION,
        "tile": 32,
        "train": {},
    }
    save_model(path, model, meta)
    return model


def mean_mask_checkpoint(path: Path, size: int) -> None:
    """A mean-mask model of a CXR-like dataset resized to size x size: left 0.9, right 0.1."""
    mask = np.full((size, size), 0.1, dtype=np.float32)
    mask[:, : size // 2] = 0.9
    meta = {
        "model": {"kind": "mean_mask"},
        "dataset": {"name": "synth_cxr", "kind": "cxr", "preprocess": {"size": size}},
        "normalisation": NORMALISATION,
        "tile": size,
        "train": {},
        "mean_mask_shape": [size, size],
    }
    save_model(path, MeanMask(torch.from_numpy(mask)), meta)


def odd_images(folder: Path) -> dict[str, tuple[int, int]]:
    """Grey, RGB, RGBA and palette PNGs and a 16-bit TIFF of odd sizes; name -> (H, W)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    shapes = {
        "grey.png": (37, 53),
        "colour.png": (45, 29),
        "alpha.png": (20, 71),
        "palette.png": (33, 33),
        "scan.tif": (41, 19),
    }
    skio.imsave(folder / "grey.png", rng.integers(0, 256, (37, 53), dtype=np.uint8))
    skio.imsave(folder / "colour.png", rng.integers(0, 256, (45, 29, 3), dtype=np.uint8))
    rgba = rng.integers(0, 256, (20, 71, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    skio.imsave(folder / "alpha.png", rgba)
    from PIL import Image

    palette = Image.fromarray(rng.integers(0, 256, (33, 33), dtype=np.uint8)).convert("P")
    palette.save(folder / "palette.png")
    tifffile.imwrite(folder / "scan.tif", rng.integers(0, 65536, (41, 19), dtype=np.uint16))
    (folder / "notes.txt").write_text("not an image; skipped when a folder is given\n")
    return shapes


def run_predict(model: Path, inputs: list, output: Path, *options: str) -> None:
    """`unetflow predict` in this process."""
    args = ["--model", str(model), "--input", *map(str, inputs), "--output", str(output)]
    main(["predict", *args, *options])


def test_predict_folder_writes_masks_of_the_input_sizes(tmp_path: Path) -> None:
    model = unet_checkpoint(tmp_path / "model.pt")
    shapes = odd_images(tmp_path / "in")
    out = tmp_path / "out"
    run_predict(tmp_path / "model.pt", [tmp_path / "in"], out, "--device", "cpu")
    for name, shape in shapes.items():
        stem = Path(name).stem
        mask = read_gray(out / "masks" / f"{stem}.png")
        prob = read_float_tiff(out / "probabilities" / f"{stem}.tif")
        assert mask.shape == prob.shape == shape, name
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        assert prob.dtype == np.float32 and prob.min() >= 0 and prob.max() <= 1
        np.testing.assert_array_equal(mask, np.where(prob > 0.5, 255, 0))
    assert sorted(p.name for p in (out / "masks").iterdir()) == sorted(
        f"{Path(n).stem}.png" for n in shapes
    )
    assert not [p for p in out.rglob(".*")]  # no temporary files left behind

    # The numbers: scaled by the dtype maximum, normalised with the checkpoint's statistics,
    # overlap-tiled with the defaults (gaussian blend, overlap 0.25).
    for name, scale in (("grey.png", 255), ("scan.tif", 65535)):
        raw = read_gray(tmp_path / "in" / name).astype(np.float64) / scale
        image = ((raw - 0.4) / 0.2).astype(np.float32)
        expected = predict_probability(
            model,
            image,
            tile=32,
            overlap=0.25,
            blend="gaussian",
            tta=False,
            batch_size=4,
            device=torch.device("cpu"),
        )
        got = read_float_tiff(tmp_path / "out" / "probabilities" / f"{Path(name).stem}.tif")
        np.testing.assert_allclose(got, expected, atol=1e-5)  # float32 rounding


def test_rgba_and_rgb_read_as_the_same_grey(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    skio.imsave(tmp_path / "rgb.png", rgb)
    skio.imsave(tmp_path / "rgba.png", np.dstack([rgb, np.full((9, 11), 255, np.uint8)]))
    expected = np.round(rgb2gray(rgb) * 255).astype(np.uint8)
    for name in ("rgb.png", "rgba.png"):
        grey = read_gray(tmp_path / name)
        assert grey.dtype == np.uint8
        np.testing.assert_array_equal(grey, expected)
    assert len(np.unique(expected)) > 20  # not binarised


def test_predict_files_and_tta_flag(tmp_path: Path) -> None:
    unet_checkpoint(tmp_path / "model.pt")
    shapes = odd_images(tmp_path / "in")
    files = [str(tmp_path / "in" / "grey.png"), str(tmp_path / "in" / "scan.tif")]
    for flag, out in (([], "plain"), (["--tta"], "tta")):
        run_predict(tmp_path / "model.pt", files, tmp_path / out, "--threshold", "0.3", *flag)
        assert sorted(p.name for p in (tmp_path / out / "masks").iterdir()) == [
            "grey.png",
            "scan.png",
        ]
    plain = read_float_tiff(tmp_path / "plain" / "probabilities" / "grey.tif")
    tta = read_float_tiff(tmp_path / "tta" / "probabilities" / "grey.tif")
    assert plain.shape == tta.shape == shapes["grey.png"]
    assert np.abs(plain - tta).max() > 1e-4  # a random net is not flip-invariant
    mask = read_gray(tmp_path / "plain" / "masks" / "grey.png")
    np.testing.assert_array_equal(mask, np.where(plain > 0.3, 255, 0))


def test_cxr_images_are_stretched_to_the_training_size_and_back(tmp_path: Path) -> None:
    # The mean mask (32 x 32: left half 0.9, right half 0.1) stretched to any input size
    # must stay left 0.9 / right 0.1, whatever the aspect ratio.
    mean_mask_checkpoint(tmp_path / "model.pt", 32)
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(2)
    skio.imsave(folder / "wide.png", rng.integers(0, 256, (50, 130), dtype=np.uint8))
    skio.imsave(folder / "tiny.png", rng.integers(0, 256, (7, 5), dtype=np.uint8))
    run_predict(tmp_path / "model.pt", [folder], tmp_path / "out")
    for stem, (h, w) in (("wide", (50, 130)), ("tiny", (7, 5))):
        prob = read_float_tiff(tmp_path / "out" / "probabilities" / f"{stem}.tif")
        mask = read_gray(tmp_path / "out" / "masks" / f"{stem}.png")
        assert prob.shape == mask.shape == (h, w)
        np.testing.assert_allclose(prob[:, : w // 3], 0.9, atol=1e-4)
        np.testing.assert_allclose(prob[:, w - w // 3 :], 0.1, atol=1e-4)
        assert (mask[:, : w // 3] == 255).all() and (mask[:, w - w // 3 :] == 0).all()


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a user runs it."""
    exe = Path(sys.executable).with_name("unetflow")
    assert exe.is_file(), f"{exe}: console script missing; run pip install -e ."
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [str(exe), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=120
    )


def test_a_bad_input_file_is_named_without_a_traceback(tmp_path: Path) -> None:
    unet_checkpoint(tmp_path / "model.pt")
    odd_images(tmp_path / "in")
    (tmp_path / "in" / "zz_broken.png").write_bytes(b"this is not a PNG")
    result = run_cli(
        "predict", "--model", "model.pt", "--input", "in", "--output", "out", cwd=tmp_path
    )
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "zz_broken.png" in last
    assert "Traceback" not in result.stderr
    # The images before the bad one (sorted order) were written completely.
    assert (tmp_path / "out" / "masks" / "scan.png").is_file()
    assert not (tmp_path / "out" / "masks" / "zz_broken.png").exists()
    assert not [p for p in (tmp_path / "out").rglob(".*")]


@pytest.mark.parametrize(
    ("setup", "args", "named"),
    [
        ("none", ["--input", "missing.png"], "missing.png"),
        ("none", ["--input", "empty"], "empty"),
        ("none", ["--input", "notes.txt"], "notes.txt"),
        ("dup", ["--input", "in/a.png", "in/a.tif"], "a.tif"),
        ("badmodel", ["--input", "in"], "model.pt"),
        ("none", ["--input", "in", "--overlap", "1.5"], "overlap"),
    ],
)
def test_user_errors_exit_1_and_name_the_culprit(
    tmp_path: Path, setup: str, args: list[str], named: str, capsys: pytest.CaptureFixture
) -> None:
    unet_checkpoint(tmp_path / "model.pt")
    (tmp_path / "in").mkdir()
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello\n")
    skio.imsave(tmp_path / "in" / "a.png", np.zeros((8, 8), np.uint8), check_contrast=False)
    if setup == "dup":
        tifffile.imwrite(tmp_path / "in" / "a.tif", np.zeros((8, 8), np.uint8))
    if setup == "badmodel":
        (tmp_path / "model.pt").write_bytes(b"not a checkpoint")
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(["predict", "--model", "model.pt", "--output", "out", *args])
    finally:
        os.chdir(old)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and named in err, err


def test_an_output_path_that_is_a_file_is_one_error_line(tmp_path: Path, capsys) -> None:
    unet_checkpoint(tmp_path / "model.pt")
    odd_images(tmp_path / "in")
    blocker = tmp_path / "taken.txt"
    blocker.write_text("not a folder\n")
    for output in (blocker, blocker / "below"):
        args = ["--model", str(tmp_path / "model.pt"), "--input", str(tmp_path / "in")]
        with pytest.raises(SystemExit) as exit_info:
            main(["predict", *args, "--output", str(output)])
        assert exit_info.value.code == 1
        assert capsys.readouterr().err == (
            f"error: --output {output}: {blocker} is a file; expected a folder (made if missing)\n"
        )
    assert blocker.read_text() == "not a folder\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "error: unetflow: the following arguments are required: COMMAND"),
        (["bogus"], "error: unetflow: argument COMMAND: invalid choice: 'bogus'"),
        (["predict"], "error: unetflow predict: the following arguments are required: --model"),
        (
            ["predict", "--model", "m", "--input", "i", "--output", "o", "--threshold", "abc"],
            "error: unetflow predict: argument --threshold: invalid float value: 'abc'",
        ),
        (["predict", "--nope"], "error: unetflow predict: the following arguments are required"),
        (["sync"], "error: unetflow sync: the following arguments are required: --to"),
        (["sync", "--to", "git"], "error: unetflow sync: argument --to: invalid choice: 'git'"),
        (["sync", "--to", "snakemake", "--config", "preset=quick"], "error: unetflow sync: "),
        (["config", "list"], "error: unetflow config: argument action: invalid choice: 'list'"),
    ],
)
def test_argument_errors_are_one_error_line_and_exit_1(args, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and "usage:" not in err, err
    assert err.rstrip().endswith("--help)")


def test_help_lists_every_subcommand(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("predict", "sync", "config"):
        assert re.search(rf"^\s+{command}\s+\S", out, re.M), out
