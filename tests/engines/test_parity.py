"""Snakemake and DVC define the same jobs: same commands, deps, outs and tracked params; and
each stage's declared deps are exactly the code it imports and the params entries of its job."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from code_deps import code_closure
from engine_jobs import dvc_jobs, snakemake_jobs
from project import ROOT, copy_project

ALL_DATASETS = ["isbi2012", "shenzhen", "synth_em", "synth_cxr"]
ALL_MODELS = ["unet_paper", "unet_delft", "unet_andersen", "unet_modern", "baseline_mean"]


def folder_deps(smk_deps: list[str], dvc_deps: list[str], dvc: dict) -> list[str]:
    """Snakemake's deps with the files under a DVC folder dep replaced by that folder, where
    they are exactly the DVC outs of other stages under it (DVC depends on `results/rows`
    because dvc.yaml cannot list the datasets x models row files one by one)."""
    deps = set(smk_deps)
    for folder in set(dvc_deps) - deps:
        under = {dep for dep in deps if dep.startswith(folder + "/")}
        produced = {
            out for job in dvc.values() for out in job["outs"] if out.startswith(folder + "/")
        }
        if under and under == produced:
            deps = (deps - under) | {folder}
    return sorted(deps)


# The selection Snakemake's summarize, compare, replicates and noise study commands append
# (`--models a b --folds 0 1 ...`); a key may have no values (`--folds` when none are selected).
SELECTION = re.compile(r"(?:\s+--(?:datasets|models|folds|seeds|noise_\w+)(?: +\w+)*)+\s*$")
SELECTS = ("summarize", "compare@", "replicates@", "noise@", "noise_scores@")


def without_selection(cmd: str, project: Path | None) -> str:
    """A command without the selection it appends (DVC cannot put a list in a command; its
    script reads them from params.yaml, which `dvc exp run -S` edits, while Snakemake's
    `--config` does not): each must be the selection of `project`'s params.yaml."""
    match = SELECTION.search(cmd)
    assert match, f"no selection passed: {cmd!r}"
    if project is not None:
        params = yaml.safe_load((project / "params.yaml").read_text())
        for key, values in re.findall(r"--(\w+)((?: +\w+)*)", match[0]):
            assert values.split() == [str(v) for v in params[key]], (key, cmd)
    return cmd[: match.start()]


def differences(snakemake: dict, dvc: dict, project: Path | None = None) -> list[str]:
    """Human-readable differences between the two engines' job tables (`project`: whose
    params.yaml DVC read, to check Snakemake's selection against)."""
    problems = [f"only in Snakemake: {name}" for name in sorted(set(snakemake) - set(dvc))]
    problems += [f"only in DVC: {name}" for name in sorted(set(dvc) - set(snakemake))]
    for name in sorted(set(snakemake) & set(dvc)):
        smk = {**snakemake[name]}
        smk["deps"] = folder_deps(smk["deps"], dvc[name]["deps"], dvc)
        if name.startswith(SELECTS):
            smk["cmd"] = without_selection(smk["cmd"], project)
        for field in ("cmd", "deps", "outs", "params"):
            if smk[field] != dvc[name][field]:
                problems.append(
                    f"{name} {field}: Snakemake {smk[field]!r} != DVC {dvc[name][field]!r}"
                )
    return problems


def code_problems(project: Path) -> list[str]:
    """Where a dvc.yaml stage's src/ deps differ from what its script imports, transitively."""
    problems = []
    for name, stage in yaml.safe_load((project / "dvc.yaml").read_text())["stages"].items():
        script = project / next(dep for dep in stage["deps"] if dep.startswith("scripts/"))
        declared = {dep for dep in stage["deps"] if dep.startswith("src/")}
        imported = {str(f.relative_to(project)) for f in code_closure(script, project / "src")}
        problems += [f"{name} code: misses {dep}" for dep in sorted(imported - declared)]
        problems += [f"{name} code: {dep} is not imported" for dep in sorted(declared - imported)]
    return problems


ENTRY = re.compile(r"^(?P<defs>dataset_defs|model_defs)\.(?P<item>\$\{item\.(dataset|model)\})")
PRESET_ENTRY = re.compile(
    r"^presets\.\$\{preset\}\.(?P<entry>(dataset_defs|model_defs)\.\$\{item\.\w+\})$"
)


# Keys no preset may change (unetflow.config refuses it): tracked without the preset entry.
PRESET_PROOF = (
    "dataset_defs.${item.dataset}.kind",
    "dataset_defs.${item.dataset}.source",
    "model_defs.${item.model}.kind",
)


def param_problems(project: Path) -> list[str]:
    """Tracked params that are broader or narrower than one job's own entries: keys under
    dataset_defs/model_defs name the job's own dataset/model; the active preset is tracked
    by exactly the entries (`presets.${preset}.<defs>.${item.*}`) whose base keys are."""
    problems = []
    for name, stage in yaml.safe_load((project / "dvc.yaml").read_text())["stages"].items():
        keys = stage.get("params", [])
        entries = {
            m.group(0) for key in keys if (m := ENTRY.match(key)) and key not in PRESET_PROOF
        }
        presets = set()
        for key in keys:
            section = key.split(".")[0]
            if section == "presets":
                match = PRESET_ENTRY.match(key)
                if match is None or match["entry"] not in entries:
                    problems.append(f"{name} params: {key} is broader than the job's entries")
                presets.add(match["entry"] if match else key)
            elif section in ("dataset_defs", "model_defs") and not ENTRY.match(key):
                problems.append(f"{name} params: {key} is not the job's own entry")
        problems += [
            f"{name} params: presets.${{preset}}.{entry} missing (the preset can change it)"
            for entry in sorted(entries - presets)
        ]
    return problems


def test_each_stage_declares_the_code_it_imports_and_its_own_params_entries():
    assert code_problems(ROOT) == []
    assert param_problems(ROOT) == []


@pytest.mark.parametrize("preset", ["quick", "full"])
@pytest.mark.e2e
def test_both_engines_define_the_same_jobs(tmp_path, preset):
    project = copy_project(tmp_path / "p", preset=preset, datasets=ALL_DATASETS, models=ALL_MODELS)
    snakemake, dvc = snakemake_jobs(project), dvc_jobs(project)
    assert differences(snakemake, dvc, project) == []
    per_stage = Counter(name.split("@")[0] for name in dvc)
    assert per_stage == {
        **{stage: len(ALL_DATASETS) for stage in ("download", "preprocess", "augment", "compare")},
        **{
            stage: len(ALL_DATASETS) * len(ALL_MODELS)
            for stage in ("train", "infer", "evaluate", "explain")
        },
        "summarize": 1,
    }
    assert all(job["params"] for job in dvc.values()), "every stage tracks some params"
    assert f"--preset {preset} " in dvc["augment@isbi2012"]["cmd"]
    train = dvc["train@shenzhen-unet_paper"]
    assert "model_defs.unet_paper" in train["params"]
    assert "results/shenzhen/unet_paper/dvclive/metrics.json" in train["outs"]


@pytest.mark.e2e
def test_command_line_selection_matches(tmp_path):
    """`--config datasets=[...]` in Snakemake selects what `-S datasets=[...]` does in DVC."""
    project = copy_project(tmp_path / "p", preset="full", datasets=["isbi2012"])
    snakemake = snakemake_jobs(
        copy_project(tmp_path / "s"), {"preset": "full", "datasets": ["isbi2012"]}
    )
    assert differences(snakemake, dvc_jobs(project), project) == []
    assert sorted(snakemake) == [
        "augment@isbi2012",
        "compare@isbi2012",
        "download@isbi2012",
        "evaluate@isbi2012-baseline_mean",
        "evaluate@isbi2012-unet_modern",
        "explain@isbi2012-baseline_mean",
        "explain@isbi2012-unet_modern",
        "infer@isbi2012-baseline_mean",
        "infer@isbi2012-unet_modern",
        "preprocess@isbi2012",
        "summarize",
        "train@isbi2012-baseline_mean",
        "train@isbi2012-unet_modern",
    ]


@pytest.mark.e2e
def test_replicates_are_the_same_jobs_in_both_engines(tmp_path):
    """Folds x seeds selected from the command line: one replicates job per model x seed in
    both engines, running every fold, and compare reads every seed's folder of test scores."""
    selection = {"datasets": ["synth_em"], "folds": [0, 2], "seeds": [1, 7]}
    project = copy_project(tmp_path / "p", **selection)
    snakemake = snakemake_jobs(copy_project(tmp_path / "s"), selection)
    dvc = dvc_jobs(project)
    assert differences(snakemake, dvc, project) == []
    per_stage = Counter(name.split("@")[0] for name in dvc)
    models = yaml.safe_load((project / "params.yaml").read_text())["models"]
    assert per_stage["replicates"] == len(models) * 2, per_stage
    job = dvc["replicates@synth_em-unet_modern-7"]
    assert " --seed 7 " in job["cmd"] and "folds" in job["params"]
    assert "seed" not in job["params"], "the replicate's own seed is in its command"
    scores = "results/scores/synth_em/unet_modern/seed7"
    assert set(job["outs"]) == {"results/synth_em/unet_modern/replicates/seed7", scores}
    assert scores in snakemake["compare@synth_em"]["deps"]


@pytest.mark.e2e
def test_the_noise_study_is_the_same_jobs_in_both_engines(tmp_path):
    """The study selected from the command line: a corrupt job per family x level x seed, a
    noise run per model on each, the noisy tests per model, and the report per dataset."""
    selection = {
        "datasets": ["synth_em", "synth_cxr"],
        "noise_datasets": ["synth_cxr"],
        "noise_families": ["bias", "mixed"],
        "noise_levels": [1, 3],
        "noise_seeds": [4],
    }
    project = copy_project(tmp_path / "p", **selection)
    snakemake = snakemake_jobs(copy_project(tmp_path / "s"), selection)
    dvc = dvc_jobs(project)
    assert differences(snakemake, dvc, project) == []
    per_stage = Counter(name.split("@")[0] for name in dvc)
    models = len(yaml.safe_load((project / "params.yaml").read_text())["models"])
    assert per_stage["corrupt"] == 4 and per_stage["noise_runs"] == 4 * models
    assert per_stage["noise_scores"] == models and per_stage["noise"] == 1
    job = dvc["corrupt@synth_cxr-mixed-3-4"]
    assert "dataset_defs.synth_cxr.noise.mixed" in job["params"]
    assert "data/noisy/synth_cxr/mixed/level3/seed4" in job["outs"]


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


MUTATIONS = [
    (
        "workflow/rules/data.smk",
        '"logs/{dataset}/preprocess.log"',
        '"logs/{dataset}/pp.log"',
        None,
    ),  # logs are Snakemake's own: not a difference
    (
        "workflow/rules/data.smk",
        'raw="data/raw/{dataset}",',
        'raw="data/raw/{dataset}",\n        manifest="data/manifests/{dataset}.tsv",',
        r"preprocess@\w+ deps",
    ),
    (
        "workflow/rules/data.smk",
        'tracked=tracked("preprocess")',
        'tracked=tracked("augment")',
        r"preprocess@\w+ params",
    ),
    (
        "dvc.yaml",
        "      - dataset_defs.${item.dataset}.split\n",
        "",
        None,
    ),  # params are declared once, in dvc.yaml: Snakemake follows
    (
        "dvc.yaml",
        "--out data/raw/${item.dataset}",
        "--out data/raw/${item.dataset} --verbose",
        r"download@\w+ cmd",
    ),
    ("dvc.yaml", "      - scripts/augment.py\n", "", r"augment@\w+ deps"),
    ("workflow/rules/training.smk", "gpu=1,", "gpu=2,", None),  # resources are Snakemake's own
    (
        "workflow/rules/training.smk",
        '--live {params.live} "',
        '--live {params.live} --tta "',
        r"train@[\w-]+ cmd",
    ),
    (
        "workflow/rules/inference.smk",
        'tracked("infer")',
        'tracked("train")',
        r"infer@[\w-]+ params",
    ),
    (
        "workflow/rules/evaluation.smk",
        'row="results/rows/{dataset}/{model}.json",',
        'row="results/rows/{dataset}/{model}.json",\n'
        '        extra="results/rows/{dataset}/{model}.txt",',
        r"evaluate@[\w-]+ outs",
    ),
    (
        "workflow/rules/summary.smk",
        'model=config["models"],\n        ),\n        comparisons=',
        'model=config["models"][:1],\n        ),\n        comparisons=',
        r"summarize deps",
    ),  # the rows Snakemake collects must be exactly those DVC's results/rows holds
    (
        "dvc.yaml",
        "      - data/augmented/${item.dataset}",
        "      - data/augmented/v2_${item.dataset}",
        r"augment@\w+ outs",
    ),
]


CONTRACT_MUTATIONS = [
    # a code dep missing from both engines (Snakemake reads dvc.yaml's list)
    (
        "dvc.yaml",
        "      - src/unetflow/training/losses.py\n",
        "",
        r"(train|explain) code: misses src/unetflow/training/losses\.py",
    ),
    # a code dep the stage does not import
    (
        "dvc.yaml",
        "      - scripts/infer.py\n",
        "      - scripts/infer.py\n      - src/unetflow/training/trainer.py\n",
        r"infer code: src/unetflow/training/trainer\.py is not imported",
    ),
    # a new import that dvc.yaml does not declare
    (
        "scripts/summarize.py",
        "from unetflow.summary.summarize import summarize\n",
        "from unetflow.summary.summarize import summarize\nimport unetflow.data.download  # noqa\n",
        r"summarize code: misses src/unetflow/(data|io)/",
    ),
    # over-broad params: the whole preset, another job's entries, a preset entry not read
    (
        "dvc.yaml",
        "      - presets.${preset}.model_defs.${item.model}\n",
        "      - presets.${preset}\n",
        r"train params: (presets\.\$\{preset\} is broader|presets\.\$\{preset\}\.model_defs)",
    ),
    (
        "dvc.yaml",
        "      - dataset_defs.${item.dataset}.kind\n      # the shift test",
        "      - dataset_defs.${item.dataset}.kind\n      - model_defs\n      # the shift test",
        r"evaluate params: model_defs is not the job's own entry",
    ),
    (
        "dvc.yaml",
        "      - train.amp\n",
        "      - train.amp\n      - presets.${preset}.dataset_defs.${item.dataset}\n",
        r"infer params: presets\.\$\{preset\}\.dataset_defs\.\$\{item\.dataset\} is broader",
    ),
    # an entry tracked without the preset's overlay of it
    (
        "dvc.yaml",
        "      - presets.${preset}.dataset_defs.${item.dataset}\n    outs:\n      - data/augmented",
        "    outs:\n      - data/augmented",
        r"augment params: presets\.\$\{preset\}\.dataset_defs\.\$\{item\.dataset\} missing",
    ),
]


@pytest.mark.parametrize(("path", "old", "new", "reported"), CONTRACT_MUTATIONS)
def test_contract_check_reports_a_missing_or_extra_dep(tmp_path, path, old, new, reported):
    project = copy_project(tmp_path / "p")
    assert code_problems(project) == [] and param_problems(project) == []
    _edit(project / path, old, new)
    problems = code_problems(project) + param_problems(project)
    assert problems, "the contract check missed a change"
    assert all(re.match(reported, p) for p in problems), problems


@pytest.mark.parametrize(("path", "old", "new", "reported"), MUTATIONS)
@pytest.mark.e2e
def test_parity_check_reports_a_one_sided_change(tmp_path, path, old, new, reported):
    project = copy_project(tmp_path / "p", datasets=["synth_em", "isbi2012"])
    _edit(project / path, old, new)
    problems = differences(snakemake_jobs(project), dvc_jobs(project))
    if reported is None:
        assert problems == []
    else:
        assert problems, "the parity check missed a one-sided change"
        assert all(re.match(reported, p) for p in problems), problems
