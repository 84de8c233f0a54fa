"""Bad params.yaml, met through both engines: refused before any job, the key named.

One git + DVC copy of the project serves every case: each writes a broken params.yaml, runs
`snakemake --cores 1` and `dvc repro`, and checks the message and that no stage wrote
anything. Snakemake checks the config when it parses the workflow (common.smk). DVC has no
hook before its stages: the first stage script validates the whole params.yaml before it
touches its output, and a few names DVC itself refuses while it builds the stage graph.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from project import copy_project, run

pytestmark = pytest.mark.e2e  # every test here runs Snakemake or DVC

Params = dict[str, Any]

# Everything a stage writes (outputs, logs, DVC's lock file); data/manifests is the project's.
STAGE_OUTPUTS = ("data/raw", "data/processed", "data/augmented", "results", "logs", "dvc.lock")
KNOWN_DATASETS = "['isbi2012', 'shenzhen', 'synth_cxr', 'synth_em']"
KNOWN_MODELS = "['baseline_mean', 'unet_andersen', 'unet_delft', 'unet_modern', 'unet_paper']"


def define(name: str, listed: bool) -> Callable[[Params], None]:
    """Define dataset `name` as a copy of synth_em, and select it alone if `listed`."""

    def change(params: Params) -> None:
        params["dataset_defs"][name] = copy.deepcopy(params["dataset_defs"]["synth_em"])
        if listed:
            params["datasets"] = [name]

    return change


def setting(*path: str, value: Any) -> Callable[[Params], None]:
    """Set params[path...] = value."""

    def change(params: Params) -> None:
        *parents, leaf = path
        node = params
        for key in parents:
            node = node[key]
        node[leaf] = value

    return change


def bad_split(params: Params) -> None:
    params["datasets"] = ["synth_cxr"]
    params["dataset_defs"]["synth_cxr"]["split"]["val"] = 0.3


def schema_violations(params: Params) -> None:
    """Several mistakes the schema catches at once: each gets its own line, its key named."""
    for change in (
        setting("dataset_defs", "synth_em", "colour", value="grey"),  # unknown key
        setting("model_defs", "unet_modern", "width", value="wide"),  # wrong type
        setting("model_defs", "unet_modern", "train", "lr", value=-0.1),  # out of range
        setting("seed", value=-1),  # out of range
        define("../evil", listed=False),  # a dataset key that is not a plain name
    ):
        change(params)


SCHEMA_MESSAGES = [
    "dataset_defs: '../evil' does not match '^[a-z0-9_]+$'",
    "dataset_defs.synth_em: Additional properties are not allowed ('colour' was unexpected)",
    "model_defs.unet_modern.width: 'wide' is not of type 'integer'",
    "model_defs.unet_modern.train.lr: -0.1 is less than or equal to the minimum of 0",
    "seed: -1 is less than the minimum of 0",
]

# id -> (change, the lines both engines give, or (Snakemake's, DVC's) where they differ)
CASES: dict[str, tuple[Callable[[Params], None], list[str] | tuple[list[str], list[str]]]] = {
    "unknown dataset listed": (
        setting("datasets", value=["nope"]),
        (
            [f"datasets: 'nope' is not defined under dataset_defs ({KNOWN_DATASETS})"],
            [
                "ERROR: failed to reproduce 'download@nope': [Errno 2] No such file or "
                "directory: '{project}/data/manifests/nope.tsv'"
            ],
        ),
    ),
    "unknown model listed": (
        setting("models", value=["unet_nope"]),
        [f"models: 'unet_nope' is not defined under model_defs ({KNOWN_MODELS})"],
    ),
    "unknown key, wrong type, out of range, bad dataset key": (
        schema_violations,
        SCHEMA_MESSAGES,
    ),
    "split fractions not summing to 1": (
        bad_split,
        [
            "dataset_defs.synth_cxr.split: train 0.6 + val 0.3 + test 0.2 = 1.1; "
            "expected the fractions to sum to 1"
        ],
    ),
    "augmentation shift beyond the padding": (
        setting("dataset_defs", "synth_em", "augment", "shift_px", value=100),
        [
            "dataset_defs.synth_em.augment.shift_px: 100 > pad_px 64; expected shift_px <= "
            "pad_px (the shift is taken from the mirror padding)"
        ],
    ),
    "plateau patience of 0": (
        setting("model_defs", "unet_modern", "train", "plateau_patience", value=0),
        ["model_defs.unet_modern.train.plateau_patience: 0 is less than the minimum of 1"],
    ),
    "a tile the U-Net cannot take": (
        setting("model_defs", "unet_paper", "tile", value=570),
        [
            "model_defs.unet_paper.tile: input size 570 px does not fit a depth-4 'valid' U-Net: "
            "the max-pool of level 1 would see an odd size (279 px); nearest valid sizes: "
            "[540, 556, 572, 588]"
        ],
    ),
    "a preset that leaves out a model": (
        setting("presets", "tiny", "model_defs", value={"unet_modern": {}}),
        [
            "presets.tiny.model_defs: ['baseline_mean', 'unet_andersen', 'unet_delft', "
            "'unet_paper'] missing; every preset lists every entry of model_defs ({} for no "
            "change), so that each job can track its own"
        ],
    ),
    "dataset key with .. listed": (
        define("../evil", listed=True),
        (
            [
                "datasets.0: '../evil' does not match '^[a-z0-9_]+$'",
                "dataset_defs: '../evil' does not match '^[a-z0-9_]+$'",
            ],
            [  # the stages in any order
                "ERROR: output 'data/evil' is specified in:\n",
                "\t- download@../evil\n",
                "\t- preprocess@../evil\n",
            ],
        ),
    ),
    "dataset key with / listed": (
        define("sub/evil", listed=True),
        (
            [
                "datasets.0: 'sub/evil' does not match '^[a-z0-9_]+$'",
                "dataset_defs: 'sub/evil' does not match '^[a-z0-9_]+$'",
            ],
            [
                "ERROR: failed to reproduce 'download@sub/evil': [Errno 2] No such file or "
                "directory: '{project}/data/manifests/sub/evil.tsv'"
            ],
        ),
    ),
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Iterator[tuple[Path, str]]:
    """A git + DVC copy of the project (tiny preset) and its valid params.yaml text."""
    project = copy_project(tmp_path_factory.mktemp("bad_params") / "p", git=True, tiny=True)
    yield project, (project / "params.yaml").read_text()


@pytest.fixture
def project(pristine) -> Iterator[Path]:
    """The shared copy, given back with its valid params.yaml and no engine state."""
    project, text = pristine
    yield project
    (project / "params.yaml").write_text(text)
    shutil.rmtree(project / ".snakemake", ignore_errors=True)


def break_params(project: Path, change: Callable[[Params], None]) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    change(params)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def assert_nothing_written(project: Path) -> None:
    written = [name for name in STAGE_OUTPUTS if (project / name).exists()]
    assert written == []
    assert sorted(p.name for p in (project / "data").iterdir()) == ["manifests"]
    assert sorted(p.name for p in project.parent.iterdir()) == ["p"]  # nothing beside it


@pytest.mark.parametrize("case", list(CASES))
def test_bad_params_are_refused_before_any_job(project, case):
    change, messages = CASES[case]
    by_script = isinstance(messages, list)  # else DVC refuses it itself, with its own words
    smk_lines, dvc_lines = (messages, messages) if by_script else messages
    break_params(project, change)

    smk = run(["snakemake", "--cores", "1"], project, check=False)
    assert smk.returncode != 0
    assert [line for line in smk_lines if f"  {line}\n" not in smk.stderr] == []
    assert "Building DAG of jobs" not in smk.stderr  # refused while parsing the workflow
    assert_nothing_written(project)

    dvc = run(["dvc", "repro"], project, check=False)
    output = dvc.stdout + dvc.stderr
    assert dvc.returncode != 0
    if by_script:
        # the first stage's script refused it before writing anything; no other stage ran
        assert "error: params.yaml is invalid:\n" in dvc.stderr
        assert [line for line in dvc_lines if f"  {line}\n" not in dvc.stderr] == []
        assert output.count("Running stage") == 1
        assert "Running stage 'download@" in output
    else:
        assert [
            line.format(project=project)
            for line in dvc_lines
            if line.format(project=project) not in output
        ] == []
        assert "Running stage" not in output  # refused while DVC built the stage graph
    assert_nothing_written(project)


def test_bad_params_after_a_complete_stage_lose_nothing(project):
    """From a finished download: Snakemake leaves it untouched; DVC removes a stage's outputs
    before running its command, so it may take it off the workspace, but never half-written,
    and after the fix it comes back from DVC's cache without the stage running again."""
    run(["dvc", "repro", "download@synth_em"], project)
    raw = project / "data" / "raw" / "synth_em"
    sums = (raw / "SHA256SUMS").read_text()
    listing = sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*"))
    valid = (project / "params.yaml").read_text()
    break_params(project, setting("seed", value=-1))  # tracked by the download stage

    smk = run(["snakemake", "--cores", "1"], project, check=False)
    assert "  seed: -1 is less than the minimum of 0\n" in smk.stderr
    assert sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*")) == listing

    dvc = run(["dvc", "repro", "download@synth_em"], project, check=False)
    assert dvc.returncode != 0
    assert "  seed: -1 is less than the minimum of 0\n" in dvc.stderr
    if raw.exists():
        assert sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*")) == listing
    assert {p.name for p in raw.parent.iterdir()} <= {".gitignore", "synth_em"}  # no partial
    assert not (project / "data" / "processed").exists()

    (project / "params.yaml").write_text(valid)
    again = run(["dvc", "repro", "download@synth_em"], project)
    assert (
        "Stage 'download@synth_em' is cached - skipping run, checking out outputs" in again.stdout
    )
    assert (raw / "SHA256SUMS").read_text() == sums
    assert sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*")) == listing
    shutil.rmtree(raw.parent)
    (project / "dvc.lock").unlink()
