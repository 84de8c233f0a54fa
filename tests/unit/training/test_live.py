"""The DVCLive curves: the built-in writer writes what DVCLive writes."""

from __future__ import annotations

import json
import os

import pytest

from unetflow.training.live import LiveLog


@pytest.mark.parametrize("use_dvclive", [True, False])
def test_live_log_layout(tmp_path, use_dvclive):
    """The built-in writer writes byte for byte what DVCLive writes (checked when installed)."""
    if use_dvclive:
        pytest.importorskip("dvclive")
    rows = [
        {"train/loss": 0.5, "val/dice": 0.25, "lr": 0.001, "img_per_s": 12.5},
        {"train/loss": 0.125, "val/dice": float("nan"), "lr": 1e-05, "img_per_s": 3.0},
    ]
    live = LiveLog(tmp_path / "live", use_dvclive=use_dvclive)
    assert live.backend == ("dvclive" if use_dvclive else "builtin")
    for step, row in enumerate(rows):
        live.log(step, row)
    live.end()
    files = sorted(str(p.relative_to(tmp_path / "live")) for p in (tmp_path / "live").rglob("*.*"))
    assert files == [
        "metrics.json",
        "plots/metrics/img_per_s.tsv",
        "plots/metrics/lr.tsv",
        "plots/metrics/train/loss.tsv",
        "plots/metrics/val/dice.tsv",
    ]
    assert (tmp_path / "live" / "plots/metrics/train/loss.tsv").read_text() == (
        f"step\tloss{os.linesep}0\t0.5{os.linesep}1\t0.125{os.linesep}"
    )
    assert (tmp_path / "live" / "plots/metrics/val/dice.tsv").read_text().splitlines()[-1] == (
        "1\tnan"
    )
    assert (tmp_path / "live" / "metrics.json").read_text() == json.dumps(
        {
            "train": {"loss": 0.125},
            "val": {"dice": "nan"},
            "lr": 1e-05,
            "img_per_s": 3.0,
            "step": 1,
        },
        indent=4,
    ) + "\n"


@pytest.mark.parametrize("use_dvclive", [True, False])
def test_replay_writes_what_logging_wrote(tmp_path, use_dvclive):
    """A resumed run re-logs its history into a fresh folder: the same files as the first run."""
    if use_dvclive:
        pytest.importorskip("dvclive")
    rows = [{"train/loss": 0.5, "lr": 0.1}, {"train/loss": 0.25, "lr": 0.05}]
    first = LiveLog(tmp_path / "first", use_dvclive=use_dvclive)
    for step, row in enumerate(rows):
        first.log(step, row)
    first.end()
    again = LiveLog(tmp_path / "again", use_dvclive=use_dvclive)
    again.replay([{"step": step, "metrics": row} for step, row in enumerate(rows)])
    again.end()
    for name in ("metrics.json", "plots/metrics/train/loss.tsv", "plots/metrics/lr.tsv"):
        assert (tmp_path / "again" / name).read_text() == (tmp_path / "first" / name).read_text()
