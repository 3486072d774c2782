"""Interactive mask propagation (issue 12, 5(i)): fill a volume from 1, 3 and 5 annotated slices.

Trains the Propagation module (``semiseg train --method stcn --config 2d``, class-agnostic, on the
labeled subset) for ``--minutes`` unless the run exists, then for every validation case of the
split and every n in ``--slices``: takes n ground-truth slices along the run's slice axis spread
uniformly over the foreground's extent (``semiseg.propagate.uniform_slices``), fills the volume
with STCN propagation (``semiseg.propagate.propagate_case``, in the image's own geometry, as
``semiseg propagate`` does), with copying the nearest annotated slice, and with shape-based
(signed-distance) interpolation, and scores each against the full ground truth (Dice per class,
annotated slices included: they are exact for all three). Seconds per volume and peak RSS are
measured around each propagation. Rows go to results.csv, per-case values to
``propagation_cases.csv``.

    python benchmarks/propagation_interactive.py --dataset LA --subset labeled_8 --minutes 25
    python benchmarks/propagation_interactive.py --dataset ACDC --subset labeled_7 --minutes 25 -- --method-options '{"crop": 96}'
"""
import argparse
import json
import statistics
import time

import numpy as np
from _common import DATA, HERE, append_csv, append_rows, prepared_work, sh


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="LA")
    ap.add_argument("--subset", default="labeled_8", help="key of ssl_labeled_subsets.json, or 'all'")
    ap.add_argument("--minutes", type=float, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--slices", default="1,3,5")
    ap.add_argument("--eval-only", action="store_true", help="score the existing run again")
    ap.add_argument("--max-cases", type=int, default=None)
    ap.add_argument("train_args", nargs="*", help="after --: more `semiseg train` arguments")
    a = ap.parse_args()

    from semiseg.data.checking import load_dataset
    from semiseg.data.dataset import read_case_image, read_case_label
    from semiseg.evaluation.metrics import dice_per_class
    from semiseg.inference import load_run
    from semiseg.propagation.baselines import nearest_slice, shape_interpolation
    from semiseg.propagation.core import uniform_slices
    from semiseg.propagation.files import propagate_case
    from semiseg.utils.profile import ResourceSampler

    ds_dir = DATA / a.dataset
    work = prepared_work(a.dataset)
    run = HERE / "_work" / "runs" / f"{a.dataset}-{a.subset}-stcn-s{a.seed}"
    if not a.eval_only and not (run / "summary.json").exists():
        cmd = ["train", work, "-o", run, "--config", "2d", "--method", "stcn", "--minutes", a.minutes,
               "--seed", a.seed, "--optimizer", "adamw", "--lr", "2e-4", "-q", *a.train_args]
        if a.subset != "all":
            cmd += ["--labeled-list", ds_dir / "ssl_labeled_subsets.json", "--labeled-key", a.subset]
        if (run / "config.json").exists():
            cmd = ["train", work, "-o", run, "--resume", "-q"]
        sh(cmd)
    summ = json.loads((run / "summary.json").read_text())
    model = load_run(run, "best")
    axis = model.cfg["slice_axis"]
    params = sum(p.numel() for p in model.nets[0].parameters())
    dataset = load_dataset(ds_dir)
    names = {v: k for k, v in dataset.labels.items() if isinstance(v, int) and v > 0}
    n_cls = dataset.num_classes
    val = json.loads((run / "split.json").read_text())["val"][: a.max_cases]
    ns = [int(v) for v in a.slices.split(",")]
    per = {(m, n): [] for m in ("stcn", "nearest_slice", "shape_interpolation") for n in ns}
    secs, rss, slices_per_vol, case_rows = {n: [] for n in ns}, {n: [] for n in ns}, [], []
    for cid in val:
        case = dataset.cases[cid]
        image, geom = read_case_image(case)
        gt = read_case_label(case, geom, dataset.label_values)
        inplane = [s for i, s in enumerate(geom.spacing_zyx) if i != axis]
        slices_per_vol.append(gt.shape[axis])
        for n in ns:
            ks = uniform_slices(gt, n, axis)
            sparse = np.zeros_like(gt)
            idx = [slice(None)] * 3
            idx[axis] = ks
            sparse[tuple(idx)] = gt[tuple(idx)]
            with ResourceSampler() as s:
                t0 = time.perf_counter()
                pred, _ = propagate_case(model, image, geom, sparse, ks)
                secs[n].append(time.perf_counter() - t0)
            rss[n].append(s.result()["peak_rss_mb"])
            outs = {"stcn": pred, "nearest_slice": nearest_slice(sparse, ks, axis),
                    "shape_interpolation": shape_interpolation(sparse, ks, axis, inplane)}
            for m, o in outs.items():
                d = dice_per_class(o, gt, n_cls)
                per[(m, n)].append(d)
                case_rows.append({"dataset": a.dataset, "case": cid, "method": m, "slices": n,
                                  "annotated": " ".join(map(str, ks)), "dsc": float(np.nanmean(d)),
                                  "dsc_per_class": " ".join(f"{v:.4f}" for v in d),
                                  "seconds": round(secs[n][-1], 3) if m == "stcn" else ""})
        print(cid, {f"{m}@{n}": round(float(np.nanmean(per[(m, n)][-1])), 3) for (m, n) in per}, flush=True)
    append_csv(HERE / "propagation_cases.csv", ["date", "commit", "machine", "dataset", "case", "method", "slices",
                                                 "annotated", "dsc", "dsc_per_class", "seconds"], case_rows)
    rows = []
    for (m, n), v in per.items():
        arr = np.array(v)
        cls_means = [float(np.nanmean(arr[:, i])) for i in range(arr.shape[1])]
        case_means = np.nanmean(arr, axis=1)
        dsc = float(np.mean(case_means))
        note = (f"{n} annotated slice(s) per volume (axis {axis}, uniform over the foreground's extent); "
                f"DSC over the whole volume, mean of {len(v)} val cases (sd {np.std(case_means):.3f}); per class "
                + ", ".join(f"{names.get(i + 1, i + 1)} {c:.4f}" for i, c in enumerate(cls_means)))
        if m == "stcn":
            note += (f"; STCN {params / 1e6:.2f} M parameters trained {summ['iterations']} it "
                     f"({summ['elapsed_s'] / 60:.0f} min) on {summ['labeled']} labeled; "
                     f"{statistics.median(secs[n]):.2f} s per volume (median, {statistics.median(slices_per_vol)} "
                     f"slices), {statistics.median(secs[n]) / statistics.median(slices_per_vol):.3f} s per slice")
        rows.append({"benchmark": "propagation_interactive", "dataset": a.dataset, "labeled": summ["labeled"],
                     "unlabeled": 0, "method": m, "networks": "stcn" if m == "stcn" else "",
                     "budget_min": round(summ["elapsed_s"] / 60, 1) if m == "stcn" else "",
                     "iterations": summ["iterations"] if m == "stcn" else "", "seed": a.seed, "split": f"val@{n}",
                     "dsc": round(dsc, 4), "train_peak_rss_mb": summ["peak_rss_mb"] if m == "stcn" else "",
                     "predict_s_per_case": round(statistics.median(secs[n]), 3) if m == "stcn" else "",
                     "predict_peak_rss_mb": round(max(rss[n])) if m == "stcn" else "", "notes": note})
        print(f"{a.dataset} {m:20s} {n} slices: DSC {dsc:.4f}  ({note})")
    append_rows(rows)


if __name__ == "__main__":
    main()
