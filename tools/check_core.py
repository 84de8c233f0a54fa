"""The light core install: `pip install -c requirements.lock .` (no extras) in a fresh virtualenv
runs `unetflow predict`, without the workflow engines, and predicts what the full install does.

Run with the full virtualenv's Python (`make check-core`): it writes a model.pt (a depth-2
U-Net, seeded) and a test image, predicts them here, builds the core virtualenv, predicts
there, and compares the probability maps and masks byte for byte. Then it installs
elasticdeform's PyPI wheel (built against numpy 1.x) there and checks that importing it through
unetflow fails in one line that gives the fix, and that the fix works.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from skimage import io as skio

from unetflow.data.elastic import ELASTICDEFORM_FIX
from unetflow.model.checkpoint import save_model
from unetflow.model.unet import UNet

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ("snakemake", "dvc", "dvclive", "elasticdeform")


def sh(cmd: list[str], cwd: Path = ROOT) -> str:
    """Run `cmd`; its output, or exit with it on failure."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def write_inputs(folder: Path) -> tuple[Path, Path]:
    """A seeded depth-2 U-Net as model.pt and a 96 x 80 grey PNG."""
    torch.manual_seed(0)
    model = UNet(width=4, depth=2, padding="same", dropout=0.0).eval()
    meta = {
        "model": {"kind": "unet", "padding": "same", "width": 4, "depth": 2, "norm": "none",
                  "up": "transposed", "dropout": 0.0, "init": "he", "out_channels": 2},
        "dataset": {"name": "synth_em", "kind": "em", "preprocess": {}},
        "normalisation": {"mean": 0.5, "std": 0.2},
        "tile": 64,
        "train": {},
    }  # fmt: skip
    save_model(folder / "model.pt", model, meta)
    image = np.random.default_rng(0).integers(0, 256, (96, 80), dtype=np.uint8)
    skio.imsave(folder / "image.png", image, check_contrast=False)
    return folder / "model.pt", folder / "image.png"


def digests(folder: Path) -> dict[str, str]:
    return {
        str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(folder.rglob("*"))
        if f.is_file()
    }


def check_elasticdeform_message(venv: Path) -> str:
    """A numpy-1 wheel of elasticdeform: one line naming the fix, which then works; the line."""
    pip, python = str(venv / "bin/pip"), str(venv / "bin/python")
    sh([pip, "install", "-q", "--no-deps", "--only-binary", ":all:", "elasticdeform==0.5.1"])
    call = "from unetflow.data.elastic import import_elasticdeform as f; f()"
    proc = subprocess.run([python, "-c", call], capture_output=True, text=True, check=False)
    last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    if proc.returncode == 0 or "NumPy 1.x cannot be run" in proc.stderr:
        sys.exit(f"the numpy-1 wheel imported, or numpy's warning leaked:\n{proc.stderr[-2000:]}")
    if not last.startswith("unetflow.data.elastic.InstallError: elasticdeform does not import") or (
        ELASTICDEFORM_FIX not in last
    ):
        sys.exit(f"unexpected message: {last}")
    sh([pip, "install", "-q", *ELASTICDEFORM_FIX.split()[2:]])
    sh([python, "-c", call])
    return last


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="core-") as tmp:
        work = Path(tmp)
        model, image = write_inputs(work)
        predict = ["predict", "--model", str(model), "--input", str(image), "--device", "cpu"]
        full_cli = str(Path(sys.executable).parent / "unetflow")
        sh([full_cli, *predict, "--output", str(work / "full")])

        core = work / "venv"
        started = time.perf_counter()
        sh(["python3", "-m", "venv", str(core)])
        sh([str(core / "bin/pip"), "install", "-q", "-c", "requirements.lock", "."])
        seconds = time.perf_counter() - started
        found = sh([str(core / "bin/python"), "-c", (
            "import importlib.util as u; "
            f"print(' '.join(m for m in {ENGINES!r} if u.find_spec(m)))"
        )]).split()  # fmt: skip
        if found:
            sys.exit(f"the core install has {found}; expected none of {ENGINES}")
        sh([str(core / "bin/unetflow"), *predict, "--output", str(work / "core")])
        full, light = digests(work / "full"), digests(work / "core")
        if not full or full != light:
            sys.exit(f"core and full predictions differ:\n  full {full}\n  core {light}")
        message = check_elasticdeform_message(core)
        print(
            f"core install (pip install -c requirements.lock .) in {seconds:.0f} s, without "
            f"{', '.join(ENGINES)}; unetflow predict wrote the same {len(full)} files as the full "
            "install; a numpy-1 elasticdeform wheel is named in one line with its fix:\n  "
            + message
        )


if __name__ == "__main__":
    main()
