"""Do folders and model files written by an older semiseg still load, predict and continue?

Two steps, through the command line only (so ``--make`` runs on any version of the package):

    git worktree add /tmp/old OLD
    PYTHONPATH=/tmp/old/src python benchmarks/compat_check.py --make /tmp/compat     # the old version
    python benchmarks/compat_check.py --check /tmp/compat                             # this version

``--make`` writes, on the demo's synthetic dataset (planned and preprocessed): a supervised run, a
model file exported from it, a fit in steps and a self-training of one round, each small. ``--check``
then, with this version: predicts with the run and with the model file; continues the fit with the
same command (a finished fit publishes its model again) and predicts with it; raises the
self-training to two rounds (a new round trains from the old folder's saved configuration); resumes
the old run with ``train --resume`` after its summary is removed (it reads the old config.json and
latest.pt). Each step prints ok or the error; exit status 1 when one failed. No rows go to
results.csv: this is a check, not a measurement.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from _common import sh

SMALL = ["--labeled", "2", "--patch-size", "16", "48", "48", "--seed", "0", "--workers", "1", "--amp", "off"]


def semiseg(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = sh([*args, "-q"], check=False, capture_output=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"semiseg {' '.join(map(str, args[:2]))}: exit {p.returncode}: {p.stderr.strip()[-400:]}")
    return p


def make(d: Path) -> None:
    code = ("try:\n from semiseg.data.synthetic import make_synthetic_dataset\n"
            "except ImportError:\n from semiseg.synthetic import make_synthetic_dataset\n"
            f"make_synthetic_dataset({str(d / 'ds')!r})")
    subprocess.run([sys.executable, "-c", code], check=True)
    semiseg("plan", d / "ds", "-o", d / "work", "--workers", "2")
    semiseg("preprocess", d / "work", "--workers", "2")
    semiseg("train", d / "work", "-o", d / "run", "--iterations", "6", "--val-every", "3", "--base-features", "8",
            "--no-report", *SMALL)
    semiseg("export", d / "run", "-o", d / "model.zip")
    semiseg("fit", d / "work", "-o", d / "fit", "--iterations", "12", "--no-report", *SMALL)
    semiseg("selftrain", d / "work", "-o", d / "self", "--iterations", "4", "--rounds", "1", "--base-features", "8",
            "--no-report", *SMALL)
    print(f"made {d} (run, model.zip, fit, self)")


def check(d: Path) -> int:
    images = d / "images"
    images.mkdir(exist_ok=True)
    for f in sorted((d / "ds" / "imagesTr").glob("*_0000.nii.gz"))[:2]:
        if not (images / f.name).exists():
            os.symlink(f, images / f.name)
    steps = {
        "predict with the old run": ["predict", d / "run", "-i", images, "-o", d / "pred_run"],
        "predict with the old model file": ["predict", "-m", d / "model.zip", "-i", images, "-o", d / "pred_model"],
        "continue the old fit (same command)": ["fit", d / "work", "-o", d / "fit", "--iterations", "12",
                                                "--no-report", *SMALL],
        "predict with the old fit": ["predict", d / "fit", "-i", images, "-o", d / "pred_fit"],
        "one more round of the old self-training": ["selftrain", d / "work", "-o", d / "self", "--rounds", "2",
                                                    "--no-report"],
    }
    failed = 0
    for what, args in steps.items():
        try:
            semiseg(*args)
            print(f"ok: {what}")
        except RuntimeError as e:
            failed += 1
            print(f"FAILED: {what}: {e}")
    (d / "run" / "summary.json").unlink(missing_ok=True)  # the old run, as if killed after its last checkpoint
    try:
        semiseg("train", d / "work", "-o", d / "run", "--resume", "--no-report")
        print("ok: resume the old run")
    except RuntimeError as e:
        failed += 1
        print(f"FAILED: resume the old run: {e}")
    return 1 if failed else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--make", type=Path, metavar="DIR", help="write the folders (run this with the old version)")
    g.add_argument("--check", type=Path, metavar="DIR", help="load, predict and continue them with this version")
    a = ap.parse_args()
    if a.make:
        a.make.mkdir(parents=True, exist_ok=True)
        make(a.make)
        return 0
    return check(a.check)


if __name__ == "__main__":
    sys.exit(main())
