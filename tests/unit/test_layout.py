"""The codebase's layout (docs/layout.md): stage names lead to their files, layers point one
way, and functions stay short enough to read at once."""

from __future__ import annotations

import ast
import re

import yaml

from project import ROOT

SRC = ROOT / "src" / "unetflow"
# Each stage's package; its rule file is workflow/rules/<package>.smk and its unit tests are
# in tests/unit/<package>/.
STAGE_PACKAGE = {
    "download": "data",
    "preprocess": "data",
    "augment": "data",
    "train": "training",
    "infer": "inference",
    "evaluate": "evaluation",
    "summarize": "summary",
    "explain": "explain",
    "compare": "comparison",
    "replicates": "comparison",
    "corrupt": "data",
    "noise_runs": "noise",
    "noise_scores": "noise",
    "noise": "noise",
}
# Lower layers never import higher ones: config/io/pipeline (and plots, which only draws) ->
# data/model -> training/inference -> evaluation/explain/summary/comparison -> the CLI.
LAYER = {
    "config": 0,
    "io": 0,
    "pipeline": 0,
    "plots": 0,
    "data": 1,
    "model": 1,
    "training": 2,
    "inference": 2,
    "evaluation": 3,
    "explain": 3,
    "summary": 3,
    "comparison": 3,
    "noise": 3,
    "cli": 4,
}
# The imports against the layers, and why: training validates with the Dice and IoU of the
# evaluation metrics, and the corrupt stage records the Dice of each corrupted mask (one
# definition of each), from a module that imports nothing of unetflow.
UPWARD = {("training.trainer", "evaluation.metrics"), ("data.corrupt", "evaluation.metrics")}
LONGEST = 80  # lines of the longest function or method


def modules() -> dict[str, ast.Module]:
    """Every module of the package by dotted name (relative to unetflow), parsed."""
    return {
        ".".join(path.relative_to(SRC).with_suffix("").parts): ast.parse(path.read_text())
        for path in sorted(SRC.rglob("*.py"))
        if path.name != "__init__.py"
    }


def imports(tree: ast.Module) -> set[str]:
    """The unetflow modules `tree` imports from, relative to unetflow."""
    return {
        node.module.removeprefix("unetflow.")
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("unetflow.")
    }


def test_every_stage_has_its_script_rule_file_package_and_tests():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert set(stages) == set(STAGE_PACKAGE)
    for stage, package in STAGE_PACKAGE.items():
        assert (ROOT / "scripts" / f"{stage}.py").is_file(), stage
        rules = (ROOT / "workflow" / "rules" / f"{package}.smk").read_text()
        assert re.search(rf"^rule {stage}:", rules, re.M), f"rule {stage} not in {package}.smk"
        assert (SRC / package / "__init__.py").is_file(), package
        assert list((ROOT / "tests" / "unit" / package).glob("test_*.py")), package


def test_layers_point_one_way():
    found = modules()
    upward = {
        (name, other)
        for name, tree in found.items()
        for other in imports(tree)
        if LAYER[other.split(".")[0]] > LAYER[name.split(".")[0]]
    }
    assert upward == UPWARD
    assert imports(found["evaluation.metrics"]) == set()


def test_no_function_is_longer_than_a_screen():
    long = [
        f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for name, tree in modules().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > LONGEST
    ]
    assert long == []
