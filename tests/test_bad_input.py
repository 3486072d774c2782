"""Bad input everywhere: for each command, each fault a new user makes (a wrong channel count, NaN
voxels, a truncated or corrupt file, 2D/4D images, labels with undeclared values or another
geometry, empty folders, case IDs that escape a folder, a disk that fills up during a write), the
command exits with code 2, its message names the file, and no output is left under a final name.

``FAULTS`` is also what ``benchmarks/bad_input_table.py`` runs to print the table of messages."""
import contextlib
import io
import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_dataset, train_config

from semiseg.cli import main
from semiseg.data.io import read_image, write_image


def _copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _rewrite(path, fn):
    arr, g = read_image(path)
    arr, g = fn(arr, g)
    write_image(arr, g, path)


def _truncate(p: Path):
    b = p.read_bytes()
    p.write_bytes(b[: len(b) // 2])


def _nan(p: Path):
    _rewrite(p, lambda a, g: (np.where(np.arange(a.size).reshape(a.shape) == 5, np.nan, a).astype(np.float32), g))


def _as_2d(p: Path):
    import SimpleITK as sitk

    arr, _ = read_image(p)
    sitk.WriteImage(sitk.GetImageFromArray(arr[0].astype(np.float32)), str(p))


def _as_4d(p: Path):
    import nibabel as nib

    arr, _ = read_image(p)
    nib.save(nib.Nifti1Image(np.stack([arr.T, arr.T], -1).astype(np.float32), np.eye(4)), str(p))


class World:
    """What the faults start from: a dataset, its planned and preprocessed work folder, a trained
    run, its predictions and a pseudo-label folder (made once per module)."""

    def __init__(self, root: Path):
        from semiseg.inference.predict import predict_folder
        from semiseg.planning import plan
        from semiseg.preprocessing import preprocess
        from semiseg.pseudolabels.pseudolabel import pseudolabel_folder
        from semiseg.training import train

        self.root = root
        self.ds = make_dataset(root / "ds", n=6, shape=(12, 24, 24), n_labeled=4)
        plan(self.ds, root / "work", progress=False, workers=1)
        preprocess(root / "work", workers=1, progress=False)
        self.work = root / "work"
        self.run = root / "run"
        train(self.work, self.run, train_config(iterations=2), progress=False)
        self.imgs = root / "imgs"
        self.imgs.mkdir()
        for f in sorted((self.ds / "imagesTr").iterdir())[:2]:
            shutil.copy(f, self.imgs / f.name)
        self.pred = root / "pred"
        predict_folder([str(self.run)], self.imgs, self.pred, progress=False)
        self.pl = root / "pl"
        unl = root / "unl"
        unl.mkdir()
        for f in sorted((self.ds / "imagesTr").iterdir())[4:]:
            shutil.copy(f, unl / f.name)
        pseudolabel_folder([str(self.run)], unl, self.pl, tta_members=True, progress=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return World(tmp_path_factory.mktemp("bad_input"))


# each fault: (command, fault, function(world, tmp) -> (argv, the path the message must name, paths that must not exist))
def plan_fault(kind):
    def f(w, tmp):
        ds = _copy_tree(w.ds, tmp / "ds")
        img, lab = ds / "imagesTr" / "CASE_001_0000.nii.gz", ds / "labelsTr" / "CASE_001.nii.gz"
        named = img
        if kind == "extra channel":
            shutil.copy(img, ds / "imagesTr" / "CASE_001_0001.nii.gz")
            named = ds / "imagesTr" / "CASE_001_0001.nii.gz"
        elif kind in ("missing channel", "channel geometry"):  # a second channel declared, one file off
            meta = json.loads((ds / "dataset.json").read_text())
            meta["channel_names"]["1"] = "T2"
            (ds / "dataset.json").write_text(json.dumps(meta))
            for f in sorted((ds / "imagesTr").glob("*_0000.nii.gz")):
                shutil.copy(f, f.with_name(f.name.replace("_0000", "_0001")))
            named = ds / "imagesTr" / "CASE_001_0001.nii.gz"
            if kind == "missing channel":
                named.unlink()
            else:
                _rewrite(named, lambda a, g: (a, type(g)(g.spacing, (g.origin[0] + 4, *g.origin[1:]), g.direction)))
        elif kind == "NaN voxels":
            _nan(img)
        elif kind == "Inf voxels":
            _rewrite(img, lambda a, g: (np.where(np.arange(a.size).reshape(a.shape) == 7, -np.inf, a)
                                        .astype(np.float32), g))
        elif kind == "truncated file":
            _truncate(img)
        elif kind == "corrupt file":
            img.write_bytes(b"\x1f\x8b" + bytes(300))
        elif kind == "2D image":
            _as_2d(img)
        elif kind == "4D image":
            _as_4d(img)
        elif kind == "undeclared label":
            _rewrite(lab, lambda a, g: (np.where(a == 1, 7, a).astype(a.dtype), g))
            named = lab
        elif kind == "label geometry":
            _rewrite(lab, lambda a, g: (a, type(g)(g.spacing, (g.origin[0] + 5, *g.origin[1:]), g.direction)))
            named = lab
        elif kind == "empty folder":
            for p in (ds / "imagesTr").iterdir():
                p.unlink()
            for p in (ds / "labelsTr").iterdir():
                p.unlink()
            named = ds / "imagesTr"
        elif kind == "case ID escapes":
            s = json.loads((ds / "splits.json").read_text())
            s[0]["val"].append("../../etc/passwd")
            (ds / "splits.json").write_text(json.dumps(s))
            named = ds / "splits.json"
        return ["plan", str(ds), "-o", str(tmp / "w"), "-q"], named, [tmp / "w" / "plans.json"]
    return f


def preprocess_truncated(w, tmp):
    work = tmp / "w"
    work.mkdir()
    for f in ("plans.json", "fingerprint.json", "split.json"):
        shutil.copy(w.work / f, work / f)
    ds = _copy_tree(w.ds, tmp / "ds")
    p = json.loads((work / "plans.json").read_text())
    p["dataset_path"] = str(ds)
    (work / "plans.json").write_text(json.dumps(p))
    img = ds / "imagesTr" / "CASE_002_0000.nii.gz"
    _truncate(img)
    return ["preprocess", str(work), "-q"], img, [work / "preprocessed" / "CASE_002.npy",
                                                   work / "preprocessed" / "CASE_002.json"]


def train_pseudo(kind):
    def f(w, tmp):
        pl = _copy_tree(w.pl, tmp / "pl")
        lab = sorted(pl.glob("*.nii.gz"))[0]
        named = lab
        if kind == "missing pseudo-label":
            lab.unlink()
            named = pl
        elif kind == "foreign case":  # a pseudo-label for a scan the work folder does not hold
            named = pl / "FOREIGN_007.nii.gz"
            shutil.copy(lab, named)
            rows = (pl / "scores.csv").read_text().splitlines()
            case = lab.name[: -len(".nii.gz")]
            row = next(r for r in rows if r.startswith(case + ","))
            (pl / "scores.csv").write_text("\n".join(rows + [row.replace(case, "FOREIGN_007", 1)]) + "\n")
        else:
            _rewrite(lab, lambda a, g: (a[:, :-2], type(g)(g.spacing, g.origin, g.direction)))
        return (["train", str(w.work), "-o", str(tmp / "r"), "--iterations", "1", "--pseudo-labels", str(pl),
                 "--no-report", "-q"], named, [tmp / "r" / "checkpoints" / "final.pt"])
    return f


def predict_fault(kind, command="predict"):
    def f(w, tmp):
        d = _copy_tree(w.imgs, tmp / "in")
        img = sorted(d.iterdir())[0]
        named = img
        if kind == "extra channel":
            named = d / img.name.replace("_0000", "_0001")
            shutil.copy(img, named)
        elif kind == "NaN voxels":
            _nan(img)
        elif kind == "truncated file":
            _truncate(img)
        elif kind == "4D image":
            _as_4d(img)
        elif kind == "empty folder":
            for p in d.iterdir():
                p.unlink()
            named = d
        extra = ["--tta-members"] if command == "pseudolabel" else []
        out = tmp / "o"
        return [command, str(w.run), "-i", str(d), "-o", str(out), "-q", *extra], named, \
            [out / img.name.replace("_0000", "")]
    return f


def propagate_fault(kind):
    def f(w, tmp):
        img = w.imgs / sorted(p.name for p in w.imgs.iterdir())[0]
        sparse = tmp / "sparse.nii.gz"
        arr, g = read_image(img)
        if kind == "label geometry":
            write_image(np.zeros(arr.shape[:2] + (arr.shape[2] - 1,), np.uint8), type(g)(g.spacing, g.origin,
                                                                                          g.direction), sparse)
        run = w.run  # not a propagation run
        named = sparse if kind == "label geometry" else run
        if kind == "label geometry":
            run = w.root / "stcn"
            if not run.exists():
                from semiseg.training import TrainConfig, train

                train(w.work, run, TrainConfig(configuration="2d", method="stcn", iterations=1, workers=0,
                                               method_options={"crop": 16, "val_slices": 1},
                                               network_options={"width": 8}), progress=False)
        else:
            write_image(np.zeros(arr.shape, np.uint8), g, sparse)
        return ["propagate", str(run), "-i", str(img), "--labels", str(sparse), "-o", str(tmp / "o.nii.gz"), "-q"], \
            named, [tmp / "o.nii.gz"]
    return f


def evaluate_fault(kind):
    def f(w, tmp):
        pred = _copy_tree(w.pred, tmp / "pred")
        p = sorted(pred.glob("*.nii.gz"))[0]
        if kind == "truncated file":
            _truncate(p)
        elif kind == "undeclared label":
            _rewrite(p, lambda a, g: (np.full_like(a, 9), g))
        return ["evaluate", str(pred), str(w.ds / "labelsTr"), "--only-predicted", "-o", str(tmp / "e"), "-q"], p, \
            [tmp / "e" / "summary.json"]
    return f


def model_file_fault(kind):
    def f(w, tmp):
        m = tmp / "m.zip"
        if kind == "truncated file":
            main(["export", str(w.run), "-o", str(m), "--no-onnx"])
            _truncate(m)
        else:
            m.write_text("not a model")
        return ["predict", "-m", str(m), "-i", str(w.imgs), "-o", str(tmp / "o"), "-q"], m, [tmp / "o"]
    return f


def export_not_a_run(w, tmp):
    d = tmp / "notarun"
    d.mkdir()
    (d / "best.pt").write_bytes(b"\x80\x04not a checkpoint")
    return ["export", str(d), "-o", str(tmp / "m.zip"), "--no-onnx"], d, [tmp / "m.zip"]


def disk_full(w, tmp):
    return ["predict", str(w.run), "-i", str(w.imgs), "-o", str(tmp / "o"), "-q"], tmp / "o", []


FAULTS = [("plan", k, plan_fault(k)) for k in ("extra channel", "missing channel", "channel geometry",
                                               "NaN voxels", "Inf voxels", "truncated file", "corrupt file",
                                               "2D image", "4D image", "undeclared label", "label geometry",
                                               "empty folder", "case ID escapes")]
FAULTS += [("preprocess", "truncated file (after planning)", preprocess_truncated)]
FAULTS += [("train", f"--pseudo-labels: {k}", train_pseudo(k)) for k in ("missing pseudo-label",
                                                                         "foreign case", "pseudo-label geometry")]
FAULTS += [(c, k, predict_fault(k, c)) for c in ("predict", "pseudolabel")
           for k in ("extra channel", "NaN voxels", "truncated file", "4D image", "empty folder")]
FAULTS += [("propagate", k, propagate_fault(k)) for k in ("not a propagation run", "label geometry")]
FAULTS += [("evaluate", k, evaluate_fault(k)) for k in ("truncated file", "undeclared label")]
FAULTS += [("predict -m", k, model_file_fault(k)) for k in ("truncated file", "not a zip")]
FAULTS += [("export", "not a run folder", export_not_a_run)]


def run_fault(world, tmp, fn, limit_bytes=None):
    """Run one fault's command through the command line's entry point (in a subprocess, as a user
    does, when a file-size limit is to be set); (exit code, stderr, argv, named, absent)."""
    argv, named, absent = fn(world, tmp)
    if limit_bytes is None:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(argv)
        return rc, err.getvalue(), argv, named, absent

    def lim():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    p = subprocess.run([sys.executable, "-m", "semiseg", *argv], capture_output=True, text=True, preexec_fn=lim)
    return p.returncode, p.stderr, argv, named, absent


@pytest.mark.parametrize("command,fault,fn", FAULTS, ids=[f"{c}: {k}" for c, k, _ in FAULTS])
def test_bad_input_is_refused_by_name(world, tmp_path, command, fault, fn):
    rc, err, argv, named, absent = run_fault(world, tmp_path, fn)
    assert rc == 2, (argv, err[-1500:])
    assert "Traceback" not in err, err[-1500:]
    assert str(named) in err or named.name in err, (str(named), err[-1500:])
    for p in absent:
        assert not p.exists(), p


def test_a_disk_that_fills_up_leaves_nothing_half_written(world, tmp_path):
    """predict under a 64-byte file-size limit (as a full disk): exit 2 with a clear message, no
    label file under its final name, no temporary file left; the same command with room finishes."""
    rc, err, argv, named, _ = run_fault(world, tmp_path, disk_full, limit_bytes=64)
    assert rc == 2 and "full" in err and "Traceback" not in err, err[-1500:]
    out = tmp_path / "o"
    assert not list(out.glob("*.nii.gz")) and not list(out.glob(".*")), list(out.iterdir())
    assert main(argv) == 0 and len(list(out.glob("*.nii.gz"))) == 2
