"""Seconds per case and peak RSS: `semiseg predict` vs `nnUNetv2_predict` on the LA validation
cases, side by side in one run, with and without mirroring TTA.

nnU-Net v2 lives in its own venv (it pulls another torch): create it with
    python3 -m venv /work/nnunet_venv && /work/nnunet_venv/bin/pip install torch==2.13.0 &&
    /work/nnunet_venv/bin/pip install -c <(echo torch==2.13.0) nnunetv2
and pass `--nnunet-venv`. Its model is its default `3d_fullres` plan for LA (fingerprint and plan
made by `nnUNetv2_extract_fingerprint` / `nnUNetv2_plan_experiment`), with a checkpoint written by
its own `nnUNetTrainer` right after `initialize()`: prediction cost does not depend on the weights
(the same windows, network, resampling and export), so no 30-minute nnU-Net training is needed
to time it. semiseg predicts with a trained run (`--run`, default the LA-8 bound of
`train_bounds.py`). Each command runs as a child process under a 0.1 s sampler of the process
tree's RSS; wall time per case = command wall time / cases (start-up included, as a user sees it).
Median of `--repeats` runs per setting.

    python benchmarks/predict_vs_nnunet.py --nnunet-venv /work/nnunet_venv [--repeats 3]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from _common import DATA, HERE, append_rows

MAKE_CKPT = r"""
import json, sys, torch, os
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
plans = json.load(open(sys.argv[1])); ds = json.load(open(sys.argv[2]))
plans["continue_training"] = False  # nnU-Net 2.8 sets this in its run_training entry point
t = nnUNetTrainer(plans, "3d_fullres", 0, ds, device=torch.device("cpu"))
t.initialize()
os.makedirs(t.output_folder, exist_ok=True)
t.inference_allowed_mirroring_axes = (0, 1, 2)  # set by on_train_start in a real training
t.save_checkpoint(os.path.join(t.output_folder, "checkpoint_final.pth"))
print(t.output_folder_base)
"""


def timed(cmd, env=None):
    from semiseg.utils.profile import ResourceSampler

    with ResourceSampler() as s:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{p.stderr[-3000:]}")
    return s.result()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nnunet-venv", default="/work/nnunet_venv")
    ap.add_argument("--run", default=str(HERE / "_work" / "runs" / "LA-labeled_8-3d-s0"))
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    nv = Path(a.nnunet_venv) / "bin"
    root = HERE / "_work" / "nnunet"
    raw, pre, res = root / "raw", root / "preprocessed", root / "results"
    env = dict(os.environ, nnUNet_raw=str(raw), nnUNet_preprocessed=str(pre), nnUNet_results=str(res))
    ds_dir = raw / "Dataset101_LA"
    la = DATA / "LA"
    if not ds_dir.exists():
        ds_dir.mkdir(parents=True)
        for n in ("imagesTr", "labelsTr", "dataset.json"):
            (ds_dir / n).symlink_to(la / n)
    plans_f = pre / "Dataset101_LA" / "nnUNetPlans.json"
    if not plans_f.exists():
        subprocess.run([nv / "nnUNetv2_extract_fingerprint", "-d", "101", "-np", "2"], check=True, env=env)
        subprocess.run([nv / "nnUNetv2_plan_experiment", "-d", "101"], check=True, env=env)
    base = res / "Dataset101_LA" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    if not (base / "fold_0" / "checkpoint_final.pth").exists():
        # initialize() only looks at the file endings of the preprocessed folder; nothing is trained
        stub = pre / "Dataset101_LA" / "nnUNetPlans_3d_fullres"
        stub.mkdir(parents=True, exist_ok=True)
        (stub / "unused.npz").touch()
        p = subprocess.run([nv / "python", "-c", MAKE_CKPT, plans_f, la / "dataset.json"], env=env,
                           capture_output=True, text=True)
        if p.returncode:
            sys.exit(p.stderr[-3000:])
        shutil.copy(plans_f, base / "plans.json")
        shutil.copy(la / "dataset.json", base / "dataset.json")
        shutil.copy(pre / "Dataset101_LA" / "dataset_fingerprint.json", base / "dataset_fingerprint.json")
    nn_plan = json.loads(plans_f.read_text())["configurations"]["3d_fullres"]

    split = json.loads((la / "splits.json").read_text())[0]
    imgs = root / "val_images"
    imgs.mkdir(exist_ok=True)
    for cid in split["val"]:
        f = la / "imagesTr" / f"{cid}_0000.nii.gz"
        if not (imgs / f.name).exists():
            (imgs / f.name).symlink_to(f)
    n = len(split["val"])
    settings = {
        "semiseg": lambda o: [sys.executable, "-m", "semiseg", "predict", a.run, "-i", imgs, "-o", o, "-q"],
        "semiseg_tta": lambda o: [sys.executable, "-m", "semiseg", "predict", a.run, "-i", imgs, "-o", o, "-q", "--tta"],
        "nnunet": lambda o: [nv / "nnUNetv2_predict", "-i", imgs, "-o", o, "-d", "101", "-c", "3d_fullres", "-f", "0",
                             "-device", "cpu", "--disable_tta", "--disable_progress_bar"],
        "nnunet_tta": lambda o: [nv / "nnUNetv2_predict", "-i", imgs, "-o", o, "-d", "101", "-c", "3d_fullres", "-f",
                                 "0", "-device", "cpu", "--disable_progress_bar"],
    }
    out = {k: [] for k in settings}
    for r in range(a.repeats):
        for k, mk in settings.items():  # interleaved, so drifts in machine load hit all alike
            o = root / f"out_{k}"
            shutil.rmtree(o, ignore_errors=True)
            m = timed([str(x) for x in mk(o)], env=env)
            out[k].append(m)
            print(k, r, f"{m['wall_s'] / n:.2f} s/case, peak RSS {m['peak_rss_mb']:.0f} MB", flush=True)
    med = {k: (statistics.median(m["wall_s"] / n for m in v), statistics.median(m["peak_rss_mb"] for m in v))
           for k, v in out.items()}
    cfg = json.loads((Path(a.run) / "plans.json").read_text())["configurations"]["3d"]
    rows = []
    for tta in ("", "_tta"):
        s, u = med["semiseg" + tta], med["nnunet" + tta]
        rows.append({"benchmark": "predict_vs_nnunet", "dataset": "LA", "method": "predict" + (" + TTA" if tta else ""),
                     "networks": f"semiseg dynunet patch {cfg['patch_size']} vs nnU-Net 3d_fullres patch "
                                 f"{nn_plan['patch_size']}",
                     "split": f"splits.json val ({n} cases)", "predict_s_per_case": f"{s[0]:.2f}",
                     "predict_peak_rss_mb": f"{s[1]:.0f}",
                     "notes": f"nnUNetv2_predict (2.x, -device cpu{'' if tta else ', --disable_tta'}): {u[0]:.2f} s/case, "
                              f"peak RSS {u[1]:.0f} MB; ratio nnU-Net/semiseg time {u[0] / s[0]:.2f}x, "
                              f"RSS {u[1] / s[1]:.2f}x; median of {a.repeats} interleaved runs; wall of the whole "
                              f"command / cases (start-up included)"})
    append_rows(rows)
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
