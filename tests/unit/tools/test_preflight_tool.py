"""tools/preflight.py: probes every selected recipe, writes its reports after each, and says
by its exit status whether all trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from preflight import main
from project import copy_project
from unetflow.data.em import preprocess_em
from unetflow.data.synthetic import generate_synth_em


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project at its tiny preset, with synth_em processed at 64 px."""
    root = copy_project(tmp_path_factory.mktemp("preflight"), tiny=True)
    (root / "raw").mkdir()
    generate_synth_em(root / "raw", n_train=6, n_test=1, size=64, seed=1)
    split = {"train": [0, 4], "val": [4, 5], "test": [5, 6]}
    preprocess_em(root / "raw", root / "processed" / "synth_em", {"split": split, "preprocess": {}})
    return root


def args(project: Path, *extra: str) -> list[str]:
    return [
        "--params", str(project / "params.yaml"), "--preset", "tiny", "--datasets", "synth_em",
        "--processed-root", str(project / "processed"), "--out", str(project / "out"), *extra,
    ]  # fmt: skip


def test_reports_every_probe_and_exits_by_the_verdicts(project: Path, capsys) -> None:
    status = main(args(project, "--models", "unet_modern", "--batched", "3"))
    rows = json.loads((project / "out" / "preflight.json").read_text())["recipes"]
    assert [(r["dataset"], r["model"], r["steps"], len(r["losses"])) for r in rows] == [
        ("synth_em", "unet_modern", 3, 3)
    ]
    assert (rows[0]["batch_size"], rows[0]["tile"]) == (2, 64)  # the tiny preset's recipe
    assert status == (0 if rows[0]["ok"] else 1)
    table = (project / "out" / "preflight.md").read_text()
    assert "| synth_em | unet_modern | adamw | 0.002 | 2 | 64 | 3/3 |" in table
    assert table in capsys.readouterr().out
    assert (project / "out" / "preflight.png").read_bytes()[:4] == b"\x89PNG"


def test_names_what_is_missing(project: Path) -> None:
    with pytest.raises(SystemExit, match=r"model_defs has no unet_nope"):
        main(args(project, "--models", "unet_nope"))
    bad = args(project, "--models", "unet_modern")
    bad[bad.index("--processed-root") + 1] = str(project / "nowhere")
    with pytest.raises(SystemExit, match=r"nowhere/synth_em: no processed data"):
        main(bad)


def test_merge_joins_reports_and_judges_them_again(tmp_path: Path) -> None:
    def report(name: str, losses: list[float]) -> Path:
        row = {"dataset": name, "model": "m", "optimizer": "sgd", "lr": 0.01, "batch_size": 1,
               "tile": 572, "device": "cpu", "steps": len(losses), "losses": losses,
               "step_seconds": [1.0] * len(losses), "verdict": "fell", "ok": True}  # fmt: skip
        path = tmp_path / name / "preflight.json"
        path.parent.mkdir()
        path.write_text(json.dumps({"recipes": [row]}))
        return path

    a = report("a", [2.0, 1.0, 0.5, 0.4, 0.3])
    b = report("b", [2.0, 2.0, 2.0, 2.0, 2.0])  # recorded as fell; the rules say flat
    c = report("c", [1.0, 1.0, 2.0, 3.0, 3.0])  # recorded as fell; the rules say rose
    out = ["--out", str(tmp_path / "out")]
    assert main(["--merge", str(a), str(b), *out]) == 0  # flat is reported, not stopped
    assert main(["--merge", str(a), str(b), str(c), *out]) == 1
    rows = json.loads((tmp_path / "out" / "preflight.json").read_text())["recipes"]
    assert [(r["dataset"], r["verdict"], r["ok"]) for r in rows] == [
        ("a", "fell", True),
        ("b", "flat", True),
        ("c", "rose", False),
    ]
    with pytest.raises(SystemExit, match=r"nothing\.json: expected a preflight\.json"):
        main(["--merge", str(tmp_path / "nothing.json"), "--out", str(tmp_path / "out")])
