"""tools/noop_timing.py --strip: drops exactly the code deps or the params lists of every stage."""

from __future__ import annotations

from pathlib import Path

import yaml

from noop_timing import strip_stages

ROOT = Path(__file__).resolve().parents[3]


def deps_and_params(text: str) -> tuple[list[str], list[str], int]:
    """Every stage's deps and params, in order, and the number of stages."""
    stages = yaml.safe_load(text)["stages"]
    deps = [d for stage in stages.values() for d in stage.get("deps", [])]
    params = [str(p) for stage in stages.values() for p in stage.get("params", [])]
    return deps, params, len(stages)


def test_strip_removes_only_what_it_names() -> None:
    text = (ROOT / "dvc.yaml").read_text()
    deps, params, n = deps_and_params(text)
    code = [d for d in deps if d.startswith(("scripts/", "src/"))]
    assert code and params  # the shipped dvc.yaml has both

    no_code = deps_and_params(strip_stages(text, ["code"]))
    assert no_code == ([d for d in deps if d not in code], params, n)
    no_params = deps_and_params(strip_stages(text, ["params"]))
    assert no_params == (deps, [], n)
    assert deps_and_params(strip_stages(text, ["code", "params"])) == (no_code[0], [], n)
    assert strip_stages(text, []) == text
