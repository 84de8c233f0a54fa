"""The explain stage's pieces: occlusion, block activations, the latent space, and the stage."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from project import ROOT
from unetflow.evaluation.cases import GROUPS, select_cases
from unetflow.explain.explain import explain_run
from unetflow.explain.features import block_activations
from unetflow.explain.latent import kmeans, latent_table, latent_vectors, pca
from unetflow.explain.network import full_logits
from unetflow.explain.occlusion import occlusion_map
from unetflow.io.images import read_float_tiff, write_float_tiff, write_png
from unetflow.model.checkpoint import save_model
from unetflow.model.unet import MeanMask, UNet

SETTINGS = {
    "patch": 8,
    "stride": 8,
    "noise_std": 1.0,
    "clusters": 2,
    "batch_size": 5,
    "device": "cpu",
}


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: these tiny networks run fastest so on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class RegionModel(nn.Module):
    """Logits that depend only on the mean of one region of the image (rows, cols)."""

    def __init__(self, rows: slice, cols: slice) -> None:
        super().__init__()
        self.rows, self.cols = rows, cols

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        level = x[:, :, self.rows, self.cols].mean(dim=(1, 2, 3))
        return (5.0 * level)[:, None, None, None].expand(-1, 1, *x.shape[-2:])


def unet(padding: str = "same", depth: int = 3, seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    return UNet(out_channels=2, width=2, depth=depth, padding=padding, norm="batch").eval()


def test_occlusion_finds_the_only_region_the_output_depends_on():
    model = RegionModel(slice(28, 42), slice(14, 28))
    image = np.full((56, 56), 2.0, dtype=np.float32)
    heat, base = occlusion_map(
        model, image, np.ones((56, 56)), loss="bce", patch=14, noise_std=1.0, seed=3, batch_size=3
    )
    assert heat.shape == (56, 56) and heat.dtype == np.float32
    assert base == pytest.approx(float(torch.nn.functional.softplus(torch.tensor(-10.0))))
    region = np.zeros((56, 56), dtype=bool)
    region[28:42, 14:28] = True
    assert heat[region].min() > 0.5  # noise around 0 instead of 2: logit ~0, loss ~log 2
    assert np.abs(heat[~region]).max() < 1e-6
    assert np.unravel_index(heat.argmax(), heat.shape) in {
        (r, c) for r in range(28, 42) for c in range(14, 28)
    }


def test_occlusion_with_overlapping_patches_marks_every_patch_touching_the_region():
    model = RegionModel(slice(20, 24), slice(20, 24))
    image = np.full((40, 40), 2.0, dtype=np.float32)
    heat, _ = occlusion_map(model, image, np.ones((40, 40)), loss="bce", patch=8, stride=4)
    touched = heat > 1e-6
    rows, cols = np.nonzero(touched)
    # Patches start every 4 px; those overlapping rows/cols 20..23 start at 16 and 20 (and 12
    # ends at 19): pixels 16..27 are covered by some patch that hits the region.
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (16, 27, 16, 27)
    assert heat[20:24, 20:24].min() == pytest.approx(heat.max())


def test_occlusion_is_deterministic_and_depends_on_the_seed():
    model = unet()
    rng = np.random.default_rng(0)
    image = rng.normal(size=(32, 32)).astype(np.float32)
    truth = (rng.random((32, 32)) > 0.5).astype(np.uint8)
    runs = [
        occlusion_map(model, image, truth, loss="dice_ce", patch=8, seed=seed, batch_size=bs)[0]
        for seed, bs in ((1, 4), (1, 4), (2, 4))
    ]
    assert np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


@pytest.mark.parametrize(("padding", "depth", "size"), [("same", 3, 32), ("valid", 2, 30)])
def test_block_activations_have_one_map_per_encoder_bottleneck_and_decoder_block(
    padding, depth, size
):
    model = unet(padding, depth)
    image = np.random.default_rng(1).normal(size=(size, size)).astype(np.float32)
    maps, probability = block_activations(model, image)
    expected = [f"encoder {i}" for i in range(1, depth + 1)]
    expected += ["bottleneck"] + [f"decoder {i}" for i in range(depth, 0, -1)]
    assert list(maps) == expected
    assert all(m.ndim == 2 for m in maps.values())
    assert probability.shape == (size, size) and 0 <= probability.min() <= probability.max() <= 1
    if padding == "same":
        sides = [m.shape[0] for m in maps.values()]
        assert sides == [32, 16, 8, 4, 8, 16, 32]
    assert not model.training


def test_full_logits_cover_the_image_for_valid_and_same_padding():
    for model in (unet("valid", 2), unet("same", 3)):
        images = np.random.default_rng(2).normal(size=(3, 30, 30)).astype(np.float32)
        with torch.inference_mode():
            logits = full_logits(model, images, "cpu")
            one = full_logits(model, images[1:2], "cpu")
        assert logits.shape == (3, 2, 30, 30)
        torch.testing.assert_close(logits[1:2], one)


def test_latent_table_counts_match_a_hand_made_clustering():
    metadata = pd.DataFrame(
        {
            "sex": ["male", "male", "female", "female", "male", "female", "male"],
            "finding": ["normal", "abnormal", "normal", "normal", "abnormal", "abnormal", "normal"],
        }
    )
    labels = [0, 0, 1, 1, 2, 0, 1]
    table = latent_table(labels, metadata, k=3)
    cell = table.set_index(["cluster", "sex"])
    assert cell.loc[(0, "male"), ["normal", "abnormal", "all"]].tolist() == [1, 1, 2]
    assert cell.loc[(0, "female"), ["normal", "abnormal", "all"]].tolist() == [0, 1, 1]
    assert cell.loc[(1, "female"), "normal"] == 2 and cell.loc[(1, "male"), "normal"] == 1
    assert cell.loc[(2, "male"), "abnormal"] == 1 and cell.loc[(2, "all"), "all"] == 1
    clusters = table[table["cluster"] != "all"]
    assert clusters[clusters["sex"] == "all"]["all"].sum() == len(metadata)
    assert cell.loc[("all", "all"), "all"] == len(metadata)
    assert cell.loc[(0, "male"), "abnormal_ratio"] == pytest.approx(0.5)  # 1 of 2 male/abnormal
    for sex in ("female", "male", "all"):
        rows = clusters[clusters["sex"] == sex]
        for column in ("normal_ratio", "abnormal_ratio", "all_ratio"):
            assert rows[column].sum() == pytest.approx(1.0)


def test_kmeans_recovers_separated_groups_numbered_by_size():
    rng = np.random.default_rng(0)
    centres = {0: (0.0, 0.0), 1: (50.0, 0.0), 2: (0.0, 50.0)}
    truth = np.array([1, 0, 2, 0, 1, 0, 0, 2, 1, 0])  # sizes 5, 3, 2
    points = np.array([centres[t] for t in truth]) + rng.normal(0, 0.5, (len(truth), 2))
    vectors = np.hstack([points, np.zeros((len(truth), 30))]).astype(np.float32)
    scores, ratio = pca(vectors)
    assert scores.shape[1] <= len(truth) - 1 and ratio.sum() == pytest.approx(1.0)
    distances = np.linalg.norm(vectors[:, None] - vectors[None], axis=-1)
    assert np.allclose(np.linalg.norm(scores[:, None] - scores[None], axis=-1), distances)
    labels = kmeans(scores, 3, seed=7)
    assert labels.tolist() == truth.tolist()
    assert np.array_equal(kmeans(scores, 3, seed=7), labels)


def test_kmeans_keeps_the_best_of_several_starts_so_the_seed_barely_matters():
    # five groups of 12, 8, 6, 3 and 1 points: one k-means++ draw (SciPy's kmeans2) lands in
    # 9 different partitions over these 20 seeds; the best of KMEANS_STARTS draws in one
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 4, (5, 2))
    truth = np.repeat(np.arange(5), [12, 8, 6, 3, 1])
    points = centres[truth] + rng.normal(0, 1, (len(truth), 2))
    labels = kmeans(points, 5, seed=0)
    assert np.bincount(labels).tolist() == sorted(np.bincount(labels).tolist(), reverse=True)
    for seed in range(1, 20):
        assert np.array_equal(kmeans(points, 5, seed=seed), labels), seed


def test_latent_vectors_are_the_flattened_bottleneck_and_independent_of_the_batch_size():
    model = unet("same", 3)
    images = list(np.random.default_rng(3).normal(size=(5, 32, 32)).astype(np.float32))
    small = latent_vectors(model, images, batch_size=2)
    large = latent_vectors(model, iter(images), batch_size=5)
    assert small.shape == (5, 16 * 4 * 4)  # width 2 * 2**3 channels at 32 / 2**3 px
    np.testing.assert_allclose(small, large, rtol=1e-4, atol=1e-5)
    assert np.array_equal(latent_vectors(model, images, batch_size=2), small)


def test_select_cases_takes_best_and_worst_test_image_of_each_group():
    table = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d", "e"],
            "split": ["test", "test", "test", "val", "test"],
            "sex": ["male", "male", "female", "male", "female"],
            "finding": ["normal", "abnormal", "normal", "normal", "normal"],
            "iou": [0.9, 0.5, 0.7, 0.99, 0.7],
        }
    )
    cases = select_cases(table)
    assert cases == [
        ("male", "best", "a", 0.9),
        ("male", "worst", "b", 0.5),
        ("female", "best", "e", 0.7),  # ties by id: e after c
        ("female", "worst", "c", 0.7),
        ("normal", "best", "a", 0.9),
        ("normal", "worst", "c", 0.7),
        ("abnormal", "best", "b", 0.5),
        ("abnormal", "worst", "b", 0.5),
    ]


def _cxr_run(root, n: int = 12, size: int = 32) -> dict:
    """A processed CXR-like set, a per_image.csv and an untrained U-Net checkpoint."""
    rng = np.random.default_rng(5)
    processed = root / "processed"
    (processed / "images").mkdir(parents=True)
    (processed / "masks").mkdir()
    rows = []
    for i in range(n):
        sid = f"img_{i:02d}"
        image = rng.normal(size=(size, size)).astype(np.float32)
        mask = np.zeros((size, size), dtype=np.uint8)
        mask[4 + i % 5 : 20, 6:26] = 1
        write_float_tiff(processed / "images" / f"{sid}.tif", image)
        write_png(processed / "masks" / f"{sid}.png", mask)
        split = ("train", "val", "test")[i % 3]
        rows.append(
            {
                "id": sid,
                "split": split,
                "sex": ("female", "male")[i % 2],
                "age": 30 + i,
                "finding": ("normal", "abnormal")[(i // 2) % 2],
            }
        )
    table = pd.DataFrame(rows)
    table.to_csv(processed / "split.csv", index=False)
    scored = table[table["split"] != "train"].copy()
    scored["iou"] = np.linspace(0.5, 0.9, len(scored))
    scored.to_csv(root / "per_image.csv", index=False)
    model = unet("same", 2)
    meta = {
        "model": {
            "kind": "unet",
            "width": 2,
            "depth": 2,
            "padding": "same",
            "norm": "batch",
            "up": "transposed",
            "dropout": 0.0,
            "init": "he",
            "out_channels": 2,
            "train": {"loss": "dice_ce"},
        },
        "dataset": {"name": "synth_cxr", "kind": "cxr", "preprocess": {"size": size}},
        "normalisation": {"mean": 0.5, "std": 0.25},
        "tile": size,
        "train": {"pos_weight": None},
    }
    save_model(root / "model.pt", model, meta)
    return {
        "processed": processed,
        "per_image": root / "per_image.csv",
        "checkpoint": root / "model.pt",
        "table": table,
    }


def test_explain_run_writes_every_output_of_a_cxr_unet(tmp_path):
    run = _cxr_run(tmp_path)
    out = tmp_path / "explain"
    summary = explain_run(
        dataset="synth_cxr",
        model_name="unet_modern",
        checkpoint=run["checkpoint"],
        processed=run["processed"],
        per_image=run["per_image"],
        out=out,
        cfg=SETTINGS,
        seed=1,
    )
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["applicable"] and summary["images"] == 12 and summary["loss"] == "dice_ce"
    selection = pd.read_csv(out / "selection.csv", dtype={"id": str})
    assert list(selection["group"]) == [g for g in GROUPS for _ in range(2)]
    assert set(selection["id"]) == set(summary["explained"])
    for sid in summary["explained"]:
        assert read_float_tiff(out / "maps" / f"{sid}.tif").shape == (32, 32)
        assert (out / f"features_{sid}.png").stat().st_size > 5_000
    for group in GROUPS:
        assert (out / f"occlusion_{group}.png").stat().st_size > 5_000
    assert (out / "latent.png").is_file()
    latent = pd.read_csv(out / "latent.csv", dtype={"id": str})
    assert list(latent["id"]) == list(run["table"]["id"])
    assert sorted(latent["cluster"].unique()) == [0, 1]
    assert summary["cluster_sizes"] == latent["cluster"].value_counts().sort_index().tolist()
    clusters = pd.read_csv(out / "clusters.csv", dtype={"cluster": str})
    per_cluster = clusters[(clusters["cluster"] != "all") & (clusters["sex"] == "all")]
    assert per_cluster["all"].tolist() == summary["cluster_sizes"]
    assert not list(tmp_path.glob(".explain*"))

    again = tmp_path / "again"
    explain_run(
        dataset="synth_cxr",
        model_name="unet_modern",
        checkpoint=run["checkpoint"],
        processed=run["processed"],
        per_image=run["per_image"],
        out=again,
        cfg=SETTINGS,
        seed=1,
    )
    for name in ("selection.csv", "latent.csv", "clusters.csv", "summary.json"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    for sid in summary["explained"]:
        assert np.array_equal(
            read_float_tiff(again / "maps" / f"{sid}.tif"),
            read_float_tiff(out / "maps" / f"{sid}.tif"),
        )


def test_explain_run_says_why_it_does_not_apply_to_a_baseline_or_em(tmp_path):
    run = _cxr_run(tmp_path)
    baseline = tmp_path / "baseline.pt"
    meta = {
        "model": {"kind": "mean_mask", "out_channels": 1},
        "dataset": {"kind": "cxr"},
        "normalisation": {"mean": 0.0, "std": 1.0},
        "tile": 32,
        "mean_mask_shape": [32, 32],
    }
    save_model(baseline, MeanMask(torch.full((32, 32), 0.5)), meta)
    out = tmp_path / "explain_baseline"
    summary = explain_run(
        dataset="synth_cxr",
        model_name="baseline_mean",
        checkpoint=baseline,
        processed=run["processed"],
        per_image=run["per_image"],
        out=out,
        cfg=SETTINGS,
        seed=1,
    )
    assert summary == {
        "dataset": "synth_cxr",
        "model": "baseline_mean",
        "applicable": False,
        "reason": "the model has no network to explain",
    }
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]

    checkpoint = torch.load(run["checkpoint"], weights_only=True)
    checkpoint["dataset"]["kind"] = "em"
    torch.save(checkpoint, tmp_path / "em.pt")
    summary = explain_run(
        dataset="synth_em",
        model_name="unet_modern",
        checkpoint=tmp_path / "em.pt",
        processed=run["processed"],
        per_image=run["per_image"],
        out=tmp_path / "em",
        cfg=SETTINGS,
        seed=1,
    )
    assert (
        summary["reason"] == "kind em: the groups (sex, finding) exist for chest X-rays (cxr) only"
    )
    assert sorted(p.name for p in (tmp_path / "em").iterdir()) == ["summary.json"]


@pytest.mark.parametrize(
    ("dataset", "model", "reason"),
    [
        ("synth_cxr", "baseline_mean", "the model has no network to explain"),
        ("isbi2012", "unet_modern", "kind em: the groups (sex, finding) exist for chest X-rays"),
    ],
)
def test_the_stage_skips_other_runs_from_params_without_importing_torch(
    tmp_path, dataset, model, reason
):
    """No checkpoint, no data: the kinds in params.yaml decide, and torch is never imported."""
    out = tmp_path / "explain"
    probe = (
        "import runpy, sys\n"
        f"sys.argv = ['explain.py', '--params', 'params.yaml', '--dataset', '{dataset}', "
        f"'--model', '{model}', '--checkpoint', 'none.pt', '--processed', 'none', "
        f"'--per-image', 'none.csv', '--out', '{out}']\n"
        "runpy.run_path('scripts/explain.py', run_name='__main__')\n"
        "print('torch' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert proc.stdout.splitlines()[-1] == "False", proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["applicable"] is False and summary["reason"].startswith(reason)
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]
