"""The config layer: params.yaml against the schema and cross-key rules; presets; config show."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from unetflow.cli import main
from unetflow.config import (
    ParamsError,
    check_params,
    load_params,
    load_yaml,
    resolve,
    schema_for,
)

ROOT = Path(__file__).resolve().parents[3]
PARAMS = ROOT / "params.yaml"


@pytest.fixture(scope="module")
def params() -> dict:
    return yaml.safe_load(PARAMS.read_text())


@pytest.fixture(scope="module")
def schema() -> dict:
    return schema_for(PARAMS)


def test_shipped_params_are_valid_for_every_preset(params, schema):
    assert load_params(PARAMS) == params
    for preset in params["presets"]:
        check_params(resolve(params, preset), schema)
    assert set(params["models"]) <= set(params["model_defs"])
    assert {"unet_paper", "unet_delft", "unet_andersen", "unet_modern", "baseline_mean"} == set(
        params["model_defs"]
    )
    assert {"isbi2012", "shenzhen", "synth_em", "synth_cxr"} == set(params["dataset_defs"])
    assert {"quick", "full"} <= set(params["presets"])


def test_preset_merges_over_the_base(params):
    quick = resolve(params, "quick")
    assert quick["model_defs"]["unet_modern"]["width"] == 16
    assert (
        quick["model_defs"]["unet_modern"]["depth"] == params["model_defs"]["unet_modern"]["depth"]
    )
    full = resolve(params, "full")
    assert (
        full["model_defs"]["unet_modern"]["width"] == params["model_defs"]["unet_modern"]["width"]
    )
    assert params["model_defs"]["unet_modern"]["width"] != 16, "resolve must not mutate the input"
    with pytest.raises(ParamsError, match="preset: 'nope' is not defined"):
        resolve(params, "nope")


def test_a_preset_may_repeat_a_kind_it_does_not_change(params, schema):
    """Only a change of kind is refused: explain tracks the base kind."""
    values = copy.deepcopy(params)
    values["presets"]["quick"]["model_defs"]["baseline_mean"] = {"kind": "mean_mask"}
    values["presets"]["quick"]["dataset_defs"]["isbi2012"]["kind"] = "em"
    check_params(values, schema)


def _set(tree: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        tree = tree[part]
    tree[last] = value


PAPER_RECIPE = yaml.safe_load(PARAMS.read_text())["model_defs"]["unet_paper"]["train"]
BROKEN = [
    ("model_defs.unet_modern.widht", 16, r"model_defs\.unet_modern: .*'widht' was unexpected"),
    ("model_defs.unet_modern.train", {"epochs": -3}, r"model_defs\.unet_modern\.train\.epochs: -3"),
    ("augmnt", {"example_pairs": 4}, r"\(top level\): .*'augmnt' was unexpected"),
    ("dataset_defs.a/b", None, r"dataset_defs: 'a/b' does not match"),
    ("dataset_defs...", None, r"dataset_defs: '\.\.' does not match"),
    ("datasets", ["../etc"], r"datasets\.0: '\.\./etc' does not match"),
    ("seed", "forty-two", r"seed: 'forty-two' is not of type 'integer'"),
    ("download.retries", -1, r"download\.retries: -1 is less than the minimum of 0"),
    ("dataset_defs.isbi2012.augment.rotation_deg", 400, r"rotation_deg: 400 is greater than"),
    ("dataset_defs.isbi2012.split.val", [25, 20], r"dataset_defs\.isbi2012\.split\.val: .*empty"),
    ("models", ["unet_nope"], r"models: 'unet_nope' is not defined under model_defs"),
    ("preset", "fast", r"preset: 'fast' is not one of"),
    (
        "presets.quick.model_defs.unet_modern",
        {"depth": 0},
        r"presets\.quick -> model_defs\.unet_modern\.depth: 0 is less than",
    ),
    (
        "presets.quick.dataset_defs.isbi2012",
        {"source": {"type": "synthetic"}},
        r"presets\.quick\.dataset_defs\.isbi2012\.source: a preset may not change where",
    ),
    (
        "presets.quick.dataset_defs.isbi2012",
        {"kind": "cxr"},
        r"presets\.quick\.dataset_defs\.isbi2012\.kind: a preset may not change a dataset's kind",
    ),
    (
        "presets.quick.model_defs.baseline_mean",
        {"kind": "unet"},
        r"presets\.quick\.model_defs\.baseline_mean\.kind: a preset may not change a model's kind",
    ),
    (
        "presets.full.model_defs",
        {"unet_modern": {}},
        r"presets\.full\.model_defs: \['baseline_mean', 'unet_andersen', 'unet_delft', "
        r"'unet_paper'\] missing; every preset lists every entry of model_defs \(\{\} for no",
    ),
    (
        "presets.full.dataset_defs.isbi2013",
        {},
        r"presets\.full\.dataset_defs\.isbi2013: not defined under dataset_defs \(\['isbi2012'",
    ),
    ("presets.quick.trian", {}, r"presets\.quick: .*'trian' was unexpected"),
    ("model_defs.unet_modern.train.loss", "focal", r"unet_modern\.train\.loss: 'focal' is not"),
    ("model_defs.unet_modern.train.epochs", 0, r"unet_modern\.train\.epochs: 0 is less than the"),
    ("train.amp", "fp8", r"train\.amp: 'fp8' is not one of"),
    (
        "model_defs.unet_paper.tile",
        570,
        r"model_defs\.unet_paper\.tile: input size 570 px does not fit a depth-4 'valid' U-Net: "
        r"the max-pool of level 1 would see an odd size \(279 px\); nearest valid sizes: "
        r"\[540, 556, 572, 588\]",
    ),
    (
        "model_defs.unet_paper.tile",
        "image",
        r"model_defs\.unet_paper\.tile: 'image' \(the whole processed image as the tile\) needs "
        r"padding: same",
    ),
    (
        "model_defs.unet_paper.train",
        {**PAPER_RECIPE, "nesterov": True, "momentum": 0.0},
        r"model_defs\.unet_paper\.train\.nesterov: true needs momentum > 0",
    ),
    (
        "dataset_defs.isbi2012.augment.shift_px",
        100,
        r"dataset_defs\.isbi2012\.augment\.shift_px: 100 > pad_px 64; expected shift_px <= pad_px",
    ),
    (
        "dataset_defs.isbi2012.augment.gamma",
        [1.2, 0.8],
        r"dataset_defs\.isbi2012\.augment\.gamma: \[1\.2, 0\.8\]; expected \[low, high\], low <=",
    ),
    (
        "model_defs.unet_delft.train.plateau_patience",
        0,
        r"model_defs\.unet_delft\.train\.plateau_patience: 0 is less than the minimum of 1",
    ),
    (
        "presets.quick.dataset_defs.isbi2012",
        {"augment": {"pad_px": 8}},
        r"presets\.quick -> dataset_defs\.isbi2012\.augment\.shift_px: 16 > pad_px 8",
    ),
    (
        "dataset_defs.shenzhen.preprocess.normalise",
        "histogram",
        r"dataset_defs\.shenzhen\.preprocess\.normalise: 'histogram' is not one of "
        r"\['train_zscore', 'image_zscore', 'image_window', 'image_histeq'\]",
    ),
    (
        "dataset_defs.shenzhen.preprocess.window_pct",
        [99.0, 1.0],
        r"dataset_defs\.shenzhen\.preprocess\.window_pct: \[99\.0, 1\.0\]; expected \[low, high\]",
    ),
    (
        "dataset_defs.isbi2012.preprocess.normalise",
        "image_window",
        r"dataset_defs\.isbi2012\.preprocess\.normalise: only for kind cxr",
    ),
    (
        "dataset_defs.isbi2012.augment.acquisition",
        yaml.safe_load(PARAMS.read_text())["dataset_defs"]["shenzhen"]["augment"]["acquisition"],
        r"dataset_defs\.isbi2012\.augment\.acquisition: only for kind cxr",
    ),
    (
        "dataset_defs.shenzhen.augment.acquisition.zoom",
        [1.25, 0.7],
        r"dataset_defs\.shenzhen\.augment\.acquisition\.zoom: \[1\.25, 0\.7\]; expected low",
    ),
    (
        "dataset_defs.shenzhen.augment.acquisition.marker_p",
        1.5,
        r"acquisition\.marker_p: 1\.5 is greater than the maximum of 1",
    ),
    (
        "presets.quick.dataset_defs.shenzhen",
        {"preprocess": {"normalise": None}},
        r"presets\.quick -> dataset_defs\.shenzhen\.preprocess\.normalise: None is not one of",
    ),
    (
        "noise_datasets",
        ["synth_em"],
        r"noise_families, noise_levels, noise_seeds: empty; the study on noise_datasets needs",
    ),
    (
        "dataset_defs.synth_em.noise.omission",
        [0.1, 1.5],
        r"dataset_defs\.synth_em\.noise\.omission\.1: 1\.5 is greater than the maximum of 1",
    ),
    (
        "dataset_defs.synth_em.noise.bias",
        [2.5],
        r"dataset_defs\.synth_em\.noise\.bias\.0: 2\.5 is not of type 'integer'",
    ),
]


@pytest.mark.parametrize(("key", "value", "message"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_copies_name_the_key(params, schema, tmp_path, key, value, message):
    broken = copy.deepcopy(params)
    if key.startswith("dataset_defs.") and value is None:
        broken["dataset_defs"][key.removeprefix("dataset_defs.")] = broken["dataset_defs"][
            "synth_em"
        ]
    else:
        _set(broken, key, value)
    with pytest.raises(ParamsError, match=message):
        check_params(broken, schema)
    # The scripts' loader gives the same error for the file, naming it.
    (tmp_path / "workflow").symlink_to(ROOT / "workflow")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(broken))
    with pytest.raises(ParamsError, match=message) as info:
        load_params(path)
    assert str(path) in str(info.value)


def test_unparsable_and_missing_files_are_named(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("datasets: [unclosed\n")
    with pytest.raises(ParamsError, match=rf"{bad}: not valid YAML"):
        load_params(bad)
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "missing.yaml")


def test_yaml_reads_as_pyyamls_safe_loader_and_quotes_the_bad_line():
    for name in ("params.yaml", "dvc.yaml", "workflow/schemas/params.schema.yaml"):
        text = (ROOT / name).read_text()
        assert load_yaml(text) == yaml.safe_load(text), name
    with pytest.raises(yaml.YAMLError, match=r"line 2, column 7:\n    seed: \[1, 2\n"):
        load_yaml("preset: quick\nseed: [1, 2\nmodels: []\n")
    with pytest.raises(yaml.YAMLError, match="could not determine a constructor"):
        load_yaml("model: !!python/object:os.system ls\n")  # never builds Python objects


def test_config_show_marks_each_value_with_its_source(capsys):
    main(["config", "show", "--params", str(ROOT / "params.yaml"), "--model", "unet_paper"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("# ") and "preset quick" in lines[0]
    assert "model_defs.unet_paper.train.lr: 0.0005  # presets.quick (base: 0.001)" in lines
    assert "model_defs.unet_paper.train.momentum: 0.99  # base" in lines
    assert "seed: 2015  # base" in lines
    assert not any(line.startswith("model_defs.unet_modern.") for line in lines)
    main(["config", "show", "--params", str(ROOT / "params.yaml"), "--preset", "full"])
    lines = capsys.readouterr().out.splitlines()
    assert not any("# presets." in line for line in lines)  # full changes nothing
    with pytest.raises(SystemExit):
        main(["config", "show", "--params", str(ROOT / "params.yaml"), "--dataset", "nope"])
    assert "error: dataset_defs: ['nope'] not defined" in capsys.readouterr().err


# The rules the stages used to check themselves, each now refused by the config layer before
# any job runs: (the stage module that held it, the key, a bad value, the message).
STAGE_RULES = [
    ("augmentation", "dataset_defs.isbi2012.augment.shift_px", 100, r"shift_px: 100 > pad_px"),
    ("augmentation", "dataset_defs.isbi2012.augment.contrast", [1.2, 0.9], r"contrast: \[1\.2"),
    ("augmentation", "dataset_defs.isbi2012.augment.elastic_grid", 1, r"elastic_grid: 1 is less"),
    ("augmentation", "dataset_defs.isbi2012.augment.copies", -1, r"copies: -1 is less"),
    ("training", "model_defs.unet_modern.train.loss", "focal", r"loss: 'focal' is not one of"),
    ("training", "model_defs.unet_modern.train.optimizer", "lion", r"optimizer: 'lion' is not"),
    ("training", "model_defs.unet_modern.train.epochs", 0, r"epochs: 0 is less than"),
    ("training", "model_defs.unet_modern.train.plateau_patience", 0, r"plateau_patience: 0 is"),
    ("training", "model_defs.unet_modern.train.pos_weight", 2.5, r"pos_weight: 2\.5 is not one"),
    ("training", "train.amp", "fp8", r"train\.amp: 'fp8' is not one of"),
    ("training", "model_defs.unet_modern.tile", 100, r"unet_modern\.tile: input size 100 px"),
    ("training", "model_defs.unet_modern.kind", "vit", r"unet_modern(\.kind)?: .*vit"),
    ("cxr", "dataset_defs.shenzhen.split.val", 0.3, r"shenzhen\.split: .* = 1\.1; expected"),
    ("cxr", "dataset_defs.shenzhen.preprocess.label_threshold", 0, r"label_threshold: 0 is less"),
    ("cxr", "dataset_defs.shenzhen.preprocess.size", "big", r"size: 'big' is not of type"),
    ("datasets", "dataset_defs.isbi2012.split.train", [5, 5], r"split\.train: \[5, 5\] is empty"),
    ("datasets", "dataset_defs.isbi2012.split.holdout", [5, 6], r"'holdout' was unexpected"),
    ("sources", "dataset_defs.isbi2012.source.type", "ftp", r"source\.type: 'ftp' is not one of"),
    ("sources", "download.retries", -1, r"download\.retries: -1 is less than"),
    (
        "sources",
        "dataset_defs.synth_em.source",
        {"type": "synthetic"},
        r"source\.n_train: required",
    ),
    ("inference", "infer.overlap", 0.95, r"infer\.overlap: 0\.95 is greater than"),
    ("inference", "infer.blend", "max", r"infer\.blend: 'max' is not one of"),
]


@pytest.mark.parametrize(("module", "key", "value", "message"), STAGE_RULES)
def test_rules_the_stages_held_are_the_config_layers(params, schema, module, key, value, message):
    broken = copy.deepcopy(params)
    _set(broken, key, value)
    with pytest.raises(ParamsError, match=message):
        check_params(broken, schema)


def test_stages_hold_no_checks_or_defaults_of_their_own():
    import unetflow.data.augment as augmentation
    import unetflow.data.cxr as cxr
    import unetflow.data.download as sources
    import unetflow.data.em as datasets
    import unetflow.training.trainer as training

    gone = {
        augmentation: ["_check_cfg", "CFG_KEYS"],
        training: ["MODEL_TRAIN_DEFAULTS", "RUN_DEFAULTS", "INFER_DEFAULTS", "_choice", "_number"],
        cxr: ["DEFAULT_SIZE", "DEFAULT_THRESHOLD", "SUM_TOLERANCE"],
        datasets: ["_parse_split"],
        sources: ["_require"],
    }
    left = [f"{m.__name__}.{n}" for m, names in gone.items() for n in names if hasattr(m, n)]
    assert left == []


@pytest.mark.parametrize(
    ("study", "message"),
    [
        (
            {"noise_datasets": ["shenzhen"]},
            r"noise_datasets: 'shenzhen' is not among the selected datasets \['synth_em'\]",
        ),
        (
            {"noise_levels": [1, 4]},
            r"noise_levels: \[4\] beyond the 3 levels of dataset_defs\.synth_em\.noise\.bias",
        ),
        (
            {"noise_families": ["mixed"]},
            r"noise_families: 'mixed' is not defined under dataset_defs\.synth_em\.noise",
        ),
    ],
)
def test_a_noise_study_must_fit_its_datasets_definitions(params, schema, study, message):
    selected = {
        **params,
        "datasets": ["synth_em"],
        "noise_datasets": ["synth_em"],
        "noise_families": ["bias"],
        "noise_levels": [1, 3],
        "noise_seeds": [1],
    }
    check_params(selected, schema)
    with pytest.raises(ParamsError, match=message):
        check_params({**selected, **study}, schema)
