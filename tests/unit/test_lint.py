"""The code and the workflow are lint clean: ruff, snakefmt and `snakemake --lint`."""

from __future__ import annotations

import pytest

from project import ROOT, run

PYTHON_PATHS = ["src", "scripts", "tests", "tools"]


@pytest.mark.parametrize(
    "cmd",
    [
        ["ruff", "check", *PYTHON_PATHS],
        ["ruff", "format", "--check", *PYTHON_PATHS],
        ["snakefmt", "--check", "Snakefile", "workflow"],
    ],
    ids=["ruff", "ruff-format", "snakefmt"],
)
def test_linters_are_clean(cmd):
    run(cmd, ROOT)


@pytest.mark.e2e
def test_snakemake_lint_is_clean():
    out = run(["snakemake", "--lint"], ROOT)
    assert "Congratulations, your workflow is in a good condition!" in out.stdout + out.stderr
