"""Atomic outputs: a file, a folder or a report appears whole or not at all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from unetflow.io.outputs import atomic_file, staged_dir, write_report


def _paths(tmp_path: Path) -> dict[str, Path]:
    return {
        "json_path": tmp_path / "out" / "report.json",
        "md_path": tmp_path / "out" / "report.md",
        "figure_path": tmp_path / "out" / "report.png",
    }


def test_write_report_writes_the_three_outputs(tmp_path: Path) -> None:
    figure = Figure(figsize=(2, 1))
    paths = _paths(tmp_path)
    write_report({"dice": 0.5, "n": 3}, "# report\n", figure, **paths)
    assert json.loads(paths["json_path"].read_text()) == {"dice": 0.5, "n": 3}
    assert paths["md_path"].read_text() == "# report\n"
    assert paths["figure_path"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "report.json",
        "report.md",
        "report.png",
    ]


def test_write_report_refuses_nan_before_writing_anything(tmp_path: Path) -> None:
    figure = Figure(figsize=(2, 1))
    paths = _paths(tmp_path)
    with pytest.raises(ValueError, match="not JSON compliant"):
        write_report({"dice": float("nan")}, "# report\n", figure, **paths)
    assert not (tmp_path / "out").exists()


def test_atomic_file_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    final = tmp_path / "table.csv"
    final.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_file(final) as tmp:
        assert tmp.suffix == ".csv" and tmp.parent == tmp_path
        tmp.write_text("half")
        raise RuntimeError("writer died")
    assert final.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_staged_dir_publishes_whole_or_keeps_the_old_folder(tmp_path: Path) -> None:
    final = tmp_path / "run"
    with staged_dir(final) as work:
        (work / "a.txt").write_text("first")
    with pytest.raises(RuntimeError), staged_dir(final) as work:
        (work / "a.txt").write_text("second, never finished")
        raise RuntimeError("killed")
    assert [p.name for p in final.iterdir()] == ["a.txt"]
    assert (final / "a.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    with staged_dir(final) as work:
        (work / "b.txt").write_text("replaced")
    assert [p.name for p in final.iterdir()] == ["b.txt"]
