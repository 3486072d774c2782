"""Does `semiseg evaluate` agree with DeepMind's surface-distance on real labels?

For the validation cases of LA (isotropic 1 mm), ACDC (1.5625 x 1.5625 x 5/10 mm) and CHAOS-MR
(2 x 2 x 7.7 mm, four organs), a "prediction" is made from the reference by a realistic
perturbation (a 1-voxel shift along x, one erosion, and a removed 6-voxel ball), written as NIfTI,
scored with `semiseg.metrics.evaluate`, and compared with direct calls to `surface_distance`
(spacing from the reference header, in array order). Reports the largest absolute difference of
DSC, NSD (2 mm), HD95 and ASD over all cases and classes, and the evaluate time per case.

    python benchmarks/evaluate_agreement.py
"""
import argparse
import csv
import json
import shutil
import time

import numpy as np
from _common import DATA, HERE, append_rows
from scipy import ndimage
from surface_distance import metrics as sd

from semiseg.data.io import read_image, write_image
from semiseg.evaluation.metrics import evaluate


def perturb(lab: np.ndarray, rng) -> np.ndarray:
    out = np.roll(lab, 1, axis=2)
    for c in np.unique(lab):
        if c == 0:
            continue
        m = out == c
        er = ndimage.binary_erosion(m)
        out[m & ~er] = 0
        idx = np.argwhere(er)
        if len(idx):
            z, y, x = idx[rng.integers(len(idx))]
            zz, yy, xx = np.ogrid[:lab.shape[0], :lab.shape[1], :lab.shape[2]]
            out[((zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2 <= 36) & (out == c)] = 0
    return out


def main():
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for name in ("LA", "ACDC", "CHAOS-MR"):
        root = DATA / name
        val = json.loads((root / "splits.json").read_text())[0]["val"]
        work = HERE / "_work" / f"agree_{name}"
        shutil.rmtree(work, ignore_errors=True)
        (work / "pred").mkdir(parents=True)
        labels = json.loads((root / "dataset.json").read_text())["labels"]
        classes = {k: v for k, v in labels.items() if v != 0}
        for cid in val:
            lab, g = read_image(root / "labelsTr" / f"{cid}.nii.gz")
            write_image(perturb(lab, rng), g, work / "pred" / f"{cid}.nii.gz")
        t = time.perf_counter()
        evaluate(work / "pred", root / "labelsTr", tolerance=2.0, only_predicted=True, out=work, progress=False)
        per_case = (time.perf_counter() - t) / len(val)
        ours = {(r["case"], r["region"]): r for r in csv.DictReader(open(work / "metrics.csv"))}
        diff = {"dsc": 0.0, "nsd": 0.0, "hd95": 0.0, "asd": 0.0}
        n = 0
        for cid in val:
            gt, g = read_image(root / "labelsTr" / f"{cid}.nii.gz")
            pr, _ = read_image(work / "pred" / f"{cid}.nii.gz")
            for cname, v in classes.items():
                a, b = gt == v, pr == v
                if not a.any() or not b.any():
                    continue
                d = sd.compute_surface_distances(a, b, g.spacing_zyx)
                ref = {"dsc": sd.compute_dice_coefficient(a, b), "nsd": sd.compute_surface_dice_at_tolerance(d, 2.0),
                       "hd95": sd.compute_robust_hausdorff(d, 95),
                       "asd": float(np.mean(sd.compute_average_surface_distance(d)))}
                o = ours[(cid, cname)]
                for k in diff:
                    diff[k] = max(diff[k], abs(float(o[k]) - ref[k]))
                n += 1
        print(name, n, "case-class pairs; max |diff|", diff, f"{per_case:.2f} s/case")
        rows.append({"benchmark": "evaluate_agreement", "dataset": name, "split": "val",
                     "wall_s": f"{per_case:.2f}",
                     "notes": f"{n} case-class pairs vs surface-distance, max abs diff: "
                              + ", ".join(f"{k} {v:.2e}" for k, v in diff.items()) + "; wall_s is evaluate s/case"})
    append_rows(rows)


if __name__ == "__main__":
    main()
