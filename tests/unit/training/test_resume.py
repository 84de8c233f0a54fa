"""The resume checkpoint: a killed run resumes to the uninterrupted weights; a checkpoint of
other settings, an unreadable one or one of another architecture is ignored with a warning."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from unetflow.model.unet import UNet
from unetflow.training.resume import CHECKPOINT_FORMAT, fingerprint, read_resume
from unetflow.training.settings import SPEED_ONLY_KEYS
from unetflow.training.trainer import Job, Trainer, train

RUNNER = """
import json, sys
from pathlib import Path
from unetflow.training.trainer import train
kwargs = json.loads(Path(sys.argv[1]).read_text())
for key in ("processed", "augmented", "model_out", "live_dir", "checkpoint_dir"):
    kwargs[key] = Path(kwargs[key])
train(**kwargs)
"""


def test_killed_run_resumes_to_the_uninterrupted_weights(
    em, tmp_path, capsys, logs, run_kwargs, same_weights, tsv
):
    # valid padding (mirror-padded tiles) and dropout: resume must restore the torch RNG too
    recipe = {"padding": "valid", "tile": 60, "dropout": 0.3, "optimizer": "sgd"}
    recipe.update(momentum=0.9, nesterov=True, schedule="plateau", plateau_patience=1)
    full = tmp_path / "full"
    train(**run_kwargs(em, full, **recipe))

    out = tmp_path / "killed"
    kwargs = run_kwargs(em, out, **recipe)
    (tmp_path / "kwargs.json").write_text(json.dumps(kwargs, default=str))
    (tmp_path / "runner.py").write_text(RUNNER)
    last = out / "checkpoints" / "last.pt"
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "runner.py"), str(tmp_path / "kwargs.json")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert last.exists() and not (out / "model.pt").exists()
    killed_after = torch.load(last, weights_only=True)["epoch"]
    assert killed_after in (1, 2)

    capsys.readouterr()
    summary = train(**kwargs)
    printed = capsys.readouterr().out
    assert f"train synth_em/tiny: resuming from {last} after epoch {killed_after} of 3\n" in printed
    assert f"epoch {killed_after}/3:" not in printed  # the epochs done are not trained again
    assert summary["resumed_after_epoch"] == killed_after
    assert same_weights(full / "model.pt", out / "model.pt")
    for name in ("train/loss", "val/loss", "val/dice", "val/iou", "lr"):
        assert tsv(out / "dvclive", name) == tsv(full / "dvclive", name), name
    assert [r[0] for r in tsv(out / "dvclive", "img_per_s")] == ["step", "0", "1", "2"]
    assert not (out / "checkpoints").exists()


def test_cosine_resumes_on_the_uninterrupted_lrs(
    em, tmp_path, monkeypatch, run_kwargs, same_weights, tsv
):
    # torch's cosine steps recursively: at 2e-3 -> 1e-5 over 12 epochs its lr of epochs 3, 7,
    # 10 and 11 differs from the closed formula in the last bits; a run that stops after
    # epoch 3 must go on with the recursion's lrs, not the formula's
    recipe = {"lr": 0.002, "min_lr": 1e-5, "epochs": 12, "steps_per_epoch": 1}
    train(**run_kwargs(em, tmp_path / "full", **recipe))

    out = tmp_path / "stopped"
    train_epoch = Trainer.train_epoch

    def crash_in_epoch_4(self, epoch):
        if epoch == 3:
            raise RuntimeError("power cut")
        return train_epoch(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", crash_in_epoch_4)
    with pytest.raises(RuntimeError, match="power cut"):
        train(**run_kwargs(em, out, **recipe))
    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)
    assert train(**run_kwargs(em, out, **recipe))["resumed_after_epoch"] == 3
    assert tsv(out / "dvclive", "lr") == tsv(tmp_path / "full" / "dvclive", "lr")
    assert same_weights(tmp_path / "full" / "model.pt", out / "model.pt")


def test_checkpoint_of_other_settings_is_not_resumed(
    em, tmp_path, capsys, logs, run_kwargs, same_weights
):
    one = {"epochs": 1, "steps_per_epoch": 1}
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    last = out / "checkpoints" / "last.pt"
    torch.save({"format": 1, "fingerprint": "other", "epoch": 5}, last)
    summary = train(**run_kwargs(em, out, **one))
    assert capsys.readouterr().err == (
        f"warning: train: {last} was written for other settings or data (fingerprint differs); "
        "starting fresh\n"
    )
    assert summary["resumed_after_epoch"] is None and summary["epochs"] == 1
    train(**run_kwargs(em, tmp_path / "fresh", **one))
    assert same_weights(out / "model.pt", tmp_path / "fresh" / "model.pt")


def test_unusable_checkpoints_are_ignored_with_a_warning(tmp_path, capsys, logs):
    net = UNet(width=4, depth=2, padding="same", norm="batch")
    path = tmp_path / "last.pt"
    assert read_resume(path, "abc", net.state_dict()) is None  # none there: no warning
    path.write_text("not a checkpoint")
    assert read_resume(path, "abc", net.state_dict()) is None
    assert capsys.readouterr().err.startswith(f"warning: train: ignoring {path}: {path}: ")
    other = UNet(width=8, depth=2, padding="same", norm="batch").state_dict()
    torch.save({"format": CHECKPOINT_FORMAT, "fingerprint": "abc", "model": other}, path)
    assert read_resume(path, "abc", net.state_dict()) is None
    assert capsys.readouterr().err == (
        f"warning: train: {path} holds weights of another architecture; starting fresh\n"
    )
    mine = {"format": CHECKPOINT_FORMAT, "fingerprint": "abc", "model": net.state_dict()}
    torch.save(mine, path)
    assert read_resume(path, "abc", net.state_dict())["fingerprint"] == "abc"
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("key", "value", "same"),
    [*((key, 7, True) for key in SPEED_ONLY_KEYS), ("amp", "bf16", False)],
)
def test_the_fingerprint_leaves_out_speed_only_keys(run_kwargs, key, value, same):
    def key_of(train_cfg: dict) -> str:
        kwargs = run_kwargs({"processed": Path("p"), "augmented": None}, Path("out"))
        job_args = {k: kwargs[k] for k in ("dataset", "dataset_cfg", "model_cfg", "infer_cfg")}
        job = Job(
            **job_args,
            model_name="tiny",
            train_cfg=train_cfg,
            seed=3,
            settings=None,
            device=torch.device("cpu"),
            processed=Path("p"),
            augmented=None,
            model_out=Path("m"),
            live_dir=Path("l"),
            checkpoint_dir=Path("c"),
        )
        return fingerprint(job.configs(), job.seed, [("processed/split.csv", 10)])

    train_cfg = run_kwargs({"processed": Path("p"), "augmented": None}, Path("o"))["train_cfg"]
    assert (key_of(train_cfg) == key_of({**train_cfg, key: value})) is same
