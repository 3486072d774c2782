"""Is behaviour unchanged? A fingerprint of training and planning to compare two commits.

It runs, through the command line only (so it works on any version of the package):

- the demo's synthetic dataset -> ``plan`` -> ``preprocess``;
- a fixed-seed supervised 3D run of 60 iterations (validation at 30 and 60) and a cross pseudo
  supervision run of 30 iterations (``--log-every 1``: every iteration's losses), in float32
  (``--amp off``: a measured precision could differ between two runs of a busy host);
- a fixed-seed ``fit`` of the default recipe in 40 steps (``--iterations``, ``--amp off``), stage by
  stage: each training stage's metrics and weights, the pseudo-labels' voxels;
- ``plan`` of every dataset in ``../shared/data`` (default and ``--student``).

and writes one JSON: every metrics.csv row of both runs, a SHA-256 of each network's final
weights, and a SHA-256 of each ``plans.json`` with its time stamp left out. Two commits behave the
same when their JSON files are equal::

    python benchmarks/behaviour_check.py -o /tmp/new.json
    git worktree add /tmp/base OLD && PYTHONPATH=/tmp/base/src python benchmarks/behaviour_check.py -o /tmp/old.json
    python benchmarks/behaviour_check.py --compare /tmp/old.json /tmp/new.json

(``--data`` points at the shared datasets when the script runs from another checkout.)

No rows go to results.csv: this is a check of equality, not a measurement.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import DATA, sh

TRAIN = ["--labeled", "2", "--base-features", "8", "--patch-size", "16", "48", "48", "--seed", "0",
         "--log-every", "1", "--workers", "1", "--amp", "off"]
FIT = ["--iterations", "40", "--labeled", "2", "--patch-size", "16", "48", "48", "--seed", "0", "--workers", "1",
       "--amp", "off"]  # flags every version of fit takes


def semiseg(*args: str) -> None:
    sh([*args, "-q"])


def synthetic(out: Path) -> Path:
    code = ("try:\n from semiseg.data.synthetic import make_synthetic_dataset\n"
            "except ImportError:\n from semiseg.synthetic import make_synthetic_dataset\n"
            f"make_synthetic_dataset({str(out)!r})")
    subprocess.run([sys.executable, "-c", code], check=True)
    return out


def weights_sha(ckpt: Path) -> dict:
    import torch

    st = torch.load(ckpt, map_location="cpu", weights_only=True)
    out = {}
    for name, sd in sorted(st["nets"].items()):
        h = hashlib.sha256()
        for k in sorted(sd):
            h.update(k.encode())
            h.update(sd[k].contiguous().numpy().tobytes())
        out[name] = h.hexdigest()
    return out


def run_fingerprint(run: Path) -> dict:
    with open(run / "metrics.csv", newline="") as f:
        rows = [{k: v for k, v in r.items() if k not in ("elapsed_s", "it_per_s")} for r in csv.DictReader(f)]
    return {"metrics": rows, "final_weights": weights_sha(run / "checkpoints" / "final.pt"),
            "best_weights": weights_sha(run / "checkpoints" / "best.pt")}


MOVED = ("split",)  # plans.json fields moved out of it (the split lives in split.json alone)


def plans_sha(work: Path) -> dict:
    """SHA-256 of plans.json without its time stamp and dataset path (where the dataset lies, not how it
    is planned): of the whole and of all but the fields moved out of it (MOVED), with its keys."""
    p = json.loads((work / "plans.json").read_text())
    p.pop("created", None)
    p.pop("dataset_path", None)
    kept = {k: v for k, v in p.items() if k not in MOVED}
    return {"keys": sorted(p), "all": hashlib.sha256(json.dumps(p, sort_keys=True).encode()).hexdigest(),
            "without_moved": hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--out", help="write the fingerprint JSON here")
    ap.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"), help="compare two fingerprint files")
    ap.add_argument("--no-plans", action="store_true", help="skip planning the shared datasets")
    ap.add_argument("--plans-only", action="store_true", help="only the plans (no training)")
    ap.add_argument("--data", default=str(DATA), help=f"the shared datasets (default {DATA})")
    a = ap.parse_args()
    if a.compare:
        old, new = (json.loads(Path(p).read_text()) for p in a.compare)
        diff = []
        for k in sorted(set(old) | set(new)):
            o, n = old.get(k), new.get(k)
            if k.startswith("plans_") and isinstance(o, dict) and isinstance(n, dict) and o != n:
                same = o["without_moved"] == n["without_moved"]
                gone, added = sorted(set(o["keys"]) - set(n["keys"])), sorted(set(n["keys"]) - set(o["keys"]))
                print(f"{k}: {'identical but for the fields moved out' if same else 'DIFFERENT'} (removed: "
                      f"{', '.join(gone) or 'none'}; added: {', '.join(added) or 'none'})")
                diff += [] if same else [k]
            else:
                print(f"{k}: {'identical' if o == n else 'DIFFERENT'}")
                diff += [] if o == n else [k]
        return 1 if diff else 0
    if not a.out:
        ap.error("give -o FILE or --compare OLD NEW")
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ds = synthetic(tmp / "ds")
        semiseg("plan", str(ds), "-o", str(tmp / "work"), "--workers", "2")
        semiseg("preprocess", str(tmp / "work"), "--workers", "2")
        res["plans_synthetic"] = plans_sha(tmp / "work")
        if not a.plans_only:
            train_both(tmp, res)
        data = Path(a.data)
        if not a.no_plans and data.is_dir():
            for d in sorted(p for p in data.iterdir() if (p / "dataset.json").exists()):
                for extra in ([], ["--student"]):
                    w = tmp / f"plan_{d.name}{'_student' if extra else ''}"
                    semiseg("plan", str(d), "-o", str(w), "--workers", "2", *extra)
                    res[f"plans_{d.name}{'_student' if extra else ''}"] = plans_sha(w)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {a.out}")
    return 0


def labels_sha(folder: Path) -> str:
    import SimpleITK as sitk  # noqa: PLC0415 - heavy, only for the pseudo-labels

    h = hashlib.sha256()
    for f in sorted(folder.rglob("*.nii.gz")):
        h.update(f.name.encode())
        h.update(sitk.GetArrayFromImage(sitk.ReadImage(str(f))).tobytes())
    return h.hexdigest()


def train_both(tmp: Path, res: dict) -> None:
    semiseg("train", str(tmp / "work"), "-o", str(tmp / "sup"), "--iterations", "60", "--val-every", "30", *TRAIN)
    res["supervised_60"] = run_fingerprint(tmp / "sup")
    semiseg("train", str(tmp / "work"), "-o", str(tmp / "cps"), "--method", "cps", "--iterations", "30",
            "--val-every", "30", *TRAIN)
    res["cps_30"] = run_fingerprint(tmp / "cps")
    semiseg("fit", str(tmp / "work"), "-o", str(tmp / "fit"), *FIT)
    stages = json.loads((tmp / "fit" / "fit.json").read_text())["stages"]
    for name, st in stages.items():
        key = f"fit_40_{name}"
        if st.get("run"):
            res[key] = dict(run_fingerprint(Path(st["run"])), iterations=st["iterations"],
                            schedule_span=st.get("schedule_span"), give_up=st.get("give_up"),
                            pseudo_classes=st.get("pseudo_classes"))
        elif (tmp / "fit" / "stages").glob(f"*-{name}"):
            for d in (tmp / "fit" / "stages").glob(f"*-{name}"):
                res[key] = {"labels": labels_sha(d), "scans": st.get("scans")}


if __name__ == "__main__":
    sys.exit(main())
