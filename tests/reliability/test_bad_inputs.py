"""Bad input data met through the real engines: a user points a dataset at a folder of their
own images (the `folder` source) and one file in it is broken.

One Snakemake run (`--until preprocess --keep-going`) carries every case, one dataset per
case, so each test reads the outcome of its own dataset: a clear
error naming the file and nothing published under data/processed/<dataset>, or the
documented behaviour (CXR masks binarised at label_threshold, CXR images without a mask left
out and counted). DVC runs two of the cases too.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml

from project import copy_project, run
from unetflow.data.synthetic import generate_synth_cxr, generate_synth_em
from unetflow.io.images import read_gray, write_png
from unetflow.io.outputs import PARTIAL_MARK

pytestmark = pytest.mark.e2e  # every test here runs Snakemake or DVC

EM_SIZE = 128
CXR_SIZE = 128
N_IMAGES = 22
N_UNMASKED = 2  # images of the synthetic CXR folder that come without a mask
GARBAGE = b"garbage bytes, not an image"


def em_folder(root: Path) -> Path:
    """A user's EM folder: train/images, train/labels and test/images PNG slices."""
    root.mkdir(parents=True)
    generate_synth_em(root, n_train=12, n_test=4, size=EM_SIZE, seed=3)
    return root


def cxr_folder(root: Path) -> Path:
    """A user's chest X-ray folder: CXR_png/, masks/ and shenzhen_metadata.csv."""
    root.mkdir(parents=True)
    generate_synth_cxr(root, n_images=N_IMAGES, n_unmasked=N_UNMASKED, size=CXR_SIZE, seed=3)
    return root


def masked_ids(folder: Path) -> list[str]:
    """Ids of the CXR images that have a mask, sorted."""
    return sorted(p.name.removesuffix("_mask.png") for p in (folder / "masks").iterdir())


def unmasked_ids(folder: Path) -> list[str]:
    """Ids of the CXR images without a mask, sorted."""
    images = {p.stem for p in (folder / "CXR_png").iterdir()}
    return sorted(images - set(masked_ids(folder)))


# --- the breakers: each changes one thing of a sound folder ------------------------------


def em_unreadable_image(folder: Path) -> None:
    (folder / "train/images/03.png").write_bytes(GARBAGE)


def em_grey_label(folder: Path) -> None:
    path = folder / "train/labels/05.png"
    label = read_gray(path)
    label[:8, :8] = 128
    write_png(path, label)


def em_missing_label(folder: Path) -> None:
    (folder / "train/labels/04.png").unlink()


def em_test_slice_size(folder: Path) -> None:
    path = folder / "test/images/01.png"
    write_png(path, read_gray(path)[:96, :96])


def em_short_label_stack(folder: Path) -> None:
    """The challenge's TIFF layout, with one label page fewer than image pages."""
    for name, sub in (("train-volume.tif", "train/images"), ("train-labels.tif", "train/labels")):
        pages = [read_gray(p) for p in sorted((folder / sub).iterdir())]
        if name == "train-labels.tif":
            pages = pages[:-1]
        tifffile.imwrite(folder / name, np.stack(pages))
    shutil.rmtree(folder / "train")
    shutil.rmtree(folder / "test")


def cxr_unreadable_image(folder: Path) -> None:
    (folder / "CXR_png" / f"{masked_ids(folder)[3]}.png").write_bytes(GARBAGE)


def cxr_mask_size(folder: Path) -> None:
    """An image of another size than its mask (and than every other image)."""
    path = folder / "CXR_png" / f"{masked_ids(folder)[2]}.png"
    write_png(path, read_gray(path)[:100, :90])


GREY_LEVELS = (100, 128, 200)  # below, at and above label_threshold 128


def cxr_grey_mask(folder: Path) -> None:
    """A mask with grey values: three bands of 100, 128 and 200 across the lung."""
    path = folder / "masks" / f"{masked_ids(folder)[1]}_mask.png"
    mask = read_gray(path)
    band = CXR_SIZE // 3
    for i, level in enumerate(GREY_LEVELS):
        rows = mask[i * band : (i + 1) * band]
        rows[rows > 0] = level
    write_png(path, mask)


def cxr_missing_mask(folder: Path) -> None:
    (folder / "masks" / f"{masked_ids(folder)[5]}_mask.png").unlink()


CASES: dict[str, tuple[str, Callable[[Path], None]]] = {
    "em_unreadable_image": ("em", em_unreadable_image),
    "em_grey_label": ("em", em_grey_label),
    "em_missing_label": ("em", em_missing_label),
    "em_test_slice_size": ("em", em_test_slice_size),
    "em_short_label_stack": ("em", em_short_label_stack),
    "cxr_unreadable_image": ("cxr", cxr_unreadable_image),
    "cxr_mask_size": ("cxr", cxr_mask_size),
    "cxr_grey_mask": ("cxr", cxr_grey_mask),
    "cxr_missing_mask": ("cxr", cxr_missing_mask),
}
DVC_CASES = ["em_test_slice_size", "cxr_unreadable_image"]


def add_folder_datasets(project: Path, folders: dict[str, Path]) -> None:
    """Define one dataset per user folder in params.yaml (a copy of synth_em or synth_cxr with a
    `folder` source), select them all, and give each the manifest the download rule names."""
    params_path = project / "params.yaml"
    values = yaml.safe_load(params_path.read_text())
    for name, folder in folders.items():
        kind = CASES[name][0]
        template = "synth_em" if kind == "em" else "synth_cxr"
        definition = copy.deepcopy(values["dataset_defs"][template])
        definition["source"] = {"type": "folder", "path": str(folder)}
        if kind == "cxr":  # trained at 64 px, scored at the 128 px of the user's masks
            definition["preprocess"].update(size=64, score_size=CXR_SIZE)
        else:
            definition["split"] = {"train": [0, 6], "val": [6, 9], "test": [9, 12]}
        values["dataset_defs"][name] = definition
        for preset in values["presets"].values():  # every preset lists every dataset
            preset["dataset_defs"][name] = {}
        manifests = project / "data" / "manifests"
        shutil.copy(manifests / f"{template}.tsv", manifests / f"{name}.tsv")
    values["datasets"] = list(folders)
    params_path.write_text(yaml.safe_dump(values, sort_keys=False))


@pytest.fixture(scope="module")
def user_folders(tmp_path_factory) -> dict[str, Path]:
    """One user folder per case: a sound synthetic folder with one thing broken."""
    root = tmp_path_factory.mktemp("user_data")
    bases = {"em": em_folder(root / "base_em"), "cxr": cxr_folder(root / "base_cxr")}
    folders = {}
    for name, (kind, breaker) in CASES.items():
        folders[name] = root / name
        shutil.copytree(bases[kind], folders[name])
        breaker(folders[name])
    return folders


@pytest.fixture(scope="module")
def smk(tmp_path_factory, user_folders) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The project after `snakemake --until preprocess --keep-going` over every case."""
    project = copy_project(tmp_path_factory.mktemp("bad_inputs") / "project", tiny=True)
    add_folder_datasets(project, user_folders)
    proc = run(
        ["snakemake", "--cores", "2", "--keep-going", "--until", "preprocess"],
        project,
        check=False,
    )
    return project, proc


def preprocess_log(project: Path, dataset: str) -> str:
    return (project / "logs" / dataset / "preprocess.log").read_text()


def assert_nothing_published(project: Path, dataset: str) -> None:
    """No data/processed/<dataset>, no partial sibling of it, and the raw copy kept."""
    processed = project / "data" / "processed"
    assert not (processed / dataset).exists()
    assert not list(processed.glob(f".{dataset}{PARTIAL_MARK}*"))
    assert (project / "data" / "raw" / dataset / "SHA256SUMS").is_file()


def raw(dataset: str, rel: str = "") -> str:
    """The path of a raw file as the stage names it (relative to the project)."""
    return f"data/raw/{dataset}/{rel}" if rel else f"data/raw/{dataset}"


def expected_error(dataset: str, folder: Path) -> str:
    """The exact error line the preprocess stage gives for each broken case."""
    same = "expected the same height and width"
    if dataset.startswith("cxr"):
        ids = masked_ids(folder)
        return {
            "cxr_unreadable_image": f"{raw(dataset, f'CXR_png/{ids[3]}.png')}: cannot read "
            f"image; expected a PNG or TIFF file (not a known image format; the file starts "
            f"with {GARBAGE[:8]!r})",
            "cxr_mask_size": f"{raw(dataset, f'masks/{ids[2]}_mask.png')}: mask size 128x128 "
            f"does not match image {raw(dataset, f'CXR_png/{ids[2]}.png')} size 100x90; {same}",
        }[dataset]
    return {
        "em_unreadable_image": f"{raw(dataset, 'train/images/03.png')}: cannot read image; "
        f"expected a PNG or TIFF file (not a known image format; the file starts with "
        f"{GARBAGE[:8]!r})",
        "em_grey_label": f"{raw(dataset, 'train/labels/05.png')}: label is not binary, found "
        f"values [0, 128, 255]; expected only {{0, 255}} (or {{0, 1}}): 0 membrane, 255 cell",
        "em_missing_label": f"{raw(dataset, 'train/images/04.png')}: missing label; expected "
        f"train/labels/04.png in {raw(dataset)}",
        "em_test_slice_size": f"{raw(dataset, 'test/images/01.png')}: size (96, 96) differs "
        f"from the rest of the stack ((128, 128), e.g. train/images/00.png); expected every "
        f"slice to have the same height and width",
        "em_short_label_stack": f"{raw(dataset, 'train-labels.tif')}: 11 pages but "
        f"train-volume.tif has 12; expected one label page per image page",
    }[dataset]


BROKEN = [
    "em_unreadable_image",
    "em_grey_label",
    "em_missing_label",
    "em_test_slice_size",
    "em_short_label_stack",
    "cxr_unreadable_image",
    "cxr_mask_size",
]


def test_the_run_fails_in_preprocess_of_the_broken_folders_only(smk):
    project, proc = smk
    assert proc.returncode != 0
    assert "Exiting because a job execution failed" in proc.stderr
    failed = re.findall(
        r"Error in rule (\w+):\n(?:[ \t]+.*\n)*?[ \t]+output: data/\w+/(\w+)\n", proc.stderr
    )
    assert sorted(failed) == sorted(("preprocess", name) for name in BROKEN)
    published = sorted(p.name for p in (project / "data" / "processed").iterdir())
    assert published == sorted(set(CASES) - set(BROKEN))


@pytest.mark.parametrize("dataset", BROKEN)
def test_broken_file_is_named_and_nothing_is_published(smk, user_folders, dataset):
    project, proc = smk
    message = f"error: {expected_error(dataset, user_folders[dataset])}"
    log = preprocess_log(project, dataset)
    assert message in log
    assert "Traceback" not in log
    assert message in proc.stderr  # Snakemake shows the failed job's log
    assert_nothing_published(project, dataset)


def test_grey_cxr_mask_is_binarised_at_label_threshold(smk, user_folders):
    """Documented: masks are on the 0-255 scale and thresholded at >= label_threshold (128)."""
    project, _ = smk
    folder = user_folders["cxr_grey_mask"]
    sid = masked_ids(folder)[1]
    user_mask = read_gray(folder / "masks" / f"{sid}_mask.png")
    assert set(np.unique(user_mask).tolist()) == {0, *GREY_LEVELS}
    processed = project / "data" / "processed" / "cxr_grey_mask"
    stats = json.loads((processed / "stats.json").read_text())
    assert stats["label_threshold"] == 128 and stats["score_size"] == CXR_SIZE
    # scored at the masks' own size: exactly the raw mask thresholded, 100 -> 0, 128/200 -> 1
    score_mask = read_gray(processed / "score_masks" / f"{sid}.png")
    np.testing.assert_array_equal(score_mask, (user_mask >= 128).astype(np.uint8))
    assert set(np.unique(read_gray(processed / "masks" / f"{sid}.png")).tolist()) == {0, 1}
    assert "error" not in preprocess_log(project, "cxr_grey_mask")


def test_cxr_image_without_mask_is_left_out_and_counted(smk, user_folders):
    project, _ = smk
    folder = user_folders["cxr_missing_mask"]
    unmasked = unmasked_ids(folder)
    dropped = (set(unmasked) - set(unmasked_ids(user_folders["cxr_grey_mask"]))).pop()
    assert len(unmasked) == N_UNMASKED + 1 and dropped in unmasked
    log = preprocess_log(project, "cxr_missing_mask")
    assert (
        f"data/raw/cxr_missing_mask: left out {N_UNMASKED + 1} image(s) without a mask "
        f"(e.g. {', '.join(unmasked[:3])})"
    ) in log
    stats = json.loads(
        (project / "data" / "processed" / "cxr_missing_mask" / "stats.json").read_text()
    )
    assert stats["n_unmasked"] == N_UNMASKED + 1 and stats["unmasked"] == unmasked
    assert stats["n_pairs"] == len(masked_ids(folder)) == N_IMAGES - N_UNMASKED - 1
    split = pd.read_csv(project / "data" / "processed" / "cxr_missing_mask" / "split.csv")
    assert dropped not in set(split["id"]) and len(split) == stats["n_pairs"]


def test_dvc_names_the_broken_file_and_publishes_nothing(tmp_path, user_folders):
    project = copy_project(tmp_path / "project", tiny=True)
    add_folder_datasets(project, {name: user_folders[name] for name in DVC_CASES})
    stages = [f"preprocess@{name}" for name in DVC_CASES]
    proc = run(["dvc", "repro", "--keep-going", *stages], project, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    failed = re.search(r"ERROR: failed to reproduce stages: '(\S+)' and '(\S+)'", output)
    assert failed and sorted(failed.groups()) == sorted(stages), output  # DVC's order varies
    for name in DVC_CASES:
        assert f"error: {expected_error(name, user_folders[name])}" in output
        assert (
            f"failed to run: python scripts/preprocess.py --params params.yaml --preset tiny "
            f"--dataset {name} --raw data/raw/{name} --out data/processed/{name}, exited with 1"
        ) in output
        assert_nothing_published(project, name)
