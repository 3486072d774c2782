"""Seed 000's Table 5 ablation of the 2D slice pipeline on one dataset (issue 12, 5(ii)).

Every row trains for the same ``--minutes`` on the same labeled subset and work folder, and is scored
on the split's validation cases in the original geometry (``semiseg evaluate``, NSD 2 mm):

1. 2D baseline: TransUNet (``--network transunet``, Pham et al.'s baseline), supervised;
2. + positional encoding (``--slice-position``);
3. + CPS: TransUNet with a DeepLabV3+ partner (``--method cps --partner deeplabv3plus``);
4. + uncertainty-selected pseudo-labels: one ``semiseg selftrain`` round from row 3 (the unlabeled
   training cases pseudo-labeled by row 3's pair, the best ``--select`` by consensus train as labels);
5. + mask propagation: ``semiseg propagate --reference`` (row 4 segments ``--k`` sampled slices,
   the references are propagated by the STCN run ``--stcn-run``, e.g. the one
   ``propagation_interactive.py`` trained on this subset; its budget is stated in the row).

    python benchmarks/slice_ablation.py --dataset ACDC --subset labeled_7 --minutes 15
Every row uses the same 2D patch (default 160 x 160) and labeled batch (default 8; CPS adds 8 unlabeled).
Finished rows are reused when the script is run again (delete a run folder to retrain it).
"""
import argparse
import csv
import json
import shutil
import statistics
import time

from _common import DATA, HERE, append_rows, predict_and_score, prepared_work, sh, val_images


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="ACDC")
    ap.add_argument("--subset", default="labeled_7")
    ap.add_argument("--minutes", type=float, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--select", default="top:0.5")
    ap.add_argument("--stcn-run", default=None, help="default: _work/runs/DATASET-SUBSET-stcn-s0")
    ap.add_argument("--k", type=int, default=9)
    ap.add_argument("--ref-rule", default="largest")
    ap.add_argument("--ref-count", type=int, default=3)
    ap.add_argument("--rows", default="1,2,3,4,5")
    ap.add_argument("--patch-size", default="160,160", help="2D patch (in-plane) of every row")
    ap.add_argument("--batch-size", type=int, default=8, help="labeled slices per batch (CPS adds as many unlabeled)")
    a = ap.parse_args()
    from semiseg.data.checking import load_dataset

    ds_dir = DATA / a.dataset
    work = prepared_work(a.dataset)
    runs = HERE / "_work" / "runs"
    base = f"{a.dataset}-{a.subset}-ablation"
    sub = ["--labeled-list", ds_dir / "ssl_labeled_subsets.json", "--labeled-key", a.subset] if a.subset != "all" else []
    common = ["--config", "2d", "--minutes", a.minutes, "--seed", a.seed, "--patch-size", *a.patch_size.split(","),
              "--batch-size", a.batch_size, "-q", *sub]
    pe = ["--slice-position"]
    cps = ["--method", "cps", "--partner", "deeplabv3plus"]
    specs = {1: ("2D baseline (TransUNet)", ["--network", "transunet"]),
             2: ("+ positional encoding", ["--network", "transunet", *pe]),
             3: ("+ CPS (TransUNet + DeepLabV3+)", ["--network", "transunet", *pe, *cps])}
    imgs = val_images(a.dataset, work)
    want = {int(r) for r in a.rows.split(",")}
    rows = []

    def train(name, args):
        run = runs / f"{base}-{name}-s{a.seed}"
        if not (run / "summary.json").exists():
            shutil.rmtree(run, ignore_errors=True)
            sh(["train", work, "-o", run, *common, *args])
        return run

    def row(n, label, run, ev, summ, extra=""):
        rows.clear()  # each row is written as soon as it is measured
        rows.append({"benchmark": "slice_ablation", "dataset": a.dataset, "labeled": summ["labeled"],
                     "unlabeled": summ.get("unlabeled", ""), "method": f"row {n}: {label}",
                     "networks": "transunet" + ("+deeplabv3plus" if n >= 3 else ""), "budget_min": a.minutes,
                     "iterations": summ["iterations"], "seed": a.seed, "split": "val", "dsc": round(ev["mean_over_regions"]["dsc"], 4),
                     "nsd": round(ev["mean_over_regions"]["nsd"], 4), "hd95": round(ev["mean_over_regions"]["hd95"], 2),
                     "train_peak_rss_mb": summ.get("peak_rss_mb", ""),
                     "predict_s_per_case": round(ev["predict_s_per_case"], 3),
                     "predict_peak_rss_mb": round(ev["predict_peak_rss_mb"]),
                     "notes": f"subset {a.subset}; {ev['per_class_text']}; run {run.name}{extra}"})
        print(f"row {n} {label}: DSC {ev['mean_over_regions']['dsc']:.4f} ({ev['per_class_text']})", flush=True)
        append_rows(rows)

    done = {}
    for n, (label, args) in specs.items():
        if n in want or (n == 3 and want & {4, 5}):
            done[n] = train(f"r{n}", args)
        if n in want:
            summ = json.loads((done[n] / "summary.json").read_text())
            ev = predict_and_score([done[n]], a.dataset, imgs, runs / f"{done[n].name}-pred",
                                   runs / f"{done[n].name}-profile.csv")
            row(n, label, done[n], ev, summ)
    if want & {4, 5}:
        st = runs / f"{base}-r4-selftrain-s{a.seed}"
        if not (st / "report.csv").exists() or len(list(csv.DictReader(open(st / "report.csv")))) < 2:
            sh(["selftrain", work, "-o", st, "--init-run", done[3], "--rounds", 1, "--select", a.select,
                *common, "--network", "transunet", *pe, *cps])
        rep = list(csv.DictReader(open(st / "report.csv")))[-1]
        r4 = st / "round1" / "run"
        summ = json.loads((r4 / "summary.json").read_text())
        extra = (f"; round 1 of semiseg selftrain from row 3: {rep['selected']} pseudo-labeled scans ({a.select} by "
                 f"consensus), pseudo-labelling {float(rep['pseudolabel_s']) / 60:.1f} min")
        if 4 in want:
            ev = predict_and_score([r4], a.dataset, imgs, runs / f"{st.name}-pred", runs / f"{st.name}-profile.csv")
            row(4, "+ uncertainty-selected pseudo-labels", r4, ev, summ, extra)
        if 5 in want:
            stcn = a.stcn_run or runs / f"{a.dataset}-{a.subset}-stcn-s0"
            ss = json.loads(open(f"{stcn}/summary.json").read())
            dataset = load_dataset(ds_dir)
            val = json.loads((r4 / "split.json").read_text())["val"]
            pred = runs / f"{base}-r5-pred"
            shutil.rmtree(pred, ignore_errors=True)
            pred.mkdir(parents=True)
            secs = []
            from semiseg.data.dataset import read_case_image
            from semiseg.data.io import write_image
            from semiseg.inference import load_run
            from semiseg.propagation.files import propagate_auto
            from semiseg.utils.profile import ResourceSampler

            with ResourceSampler() as sampler:
                stcn_model, refs = load_run(stcn), [load_run(r4)]  # once: seconds per case are propagation's
                for cid in val:
                    image, geom = read_case_image(dataset.cases[cid])
                    t0 = time.perf_counter()
                    full, _ = propagate_auto(stcn_model, refs, image, geom, k=a.k, rule=a.ref_rule, count=a.ref_count)
                    secs.append(time.perf_counter() - t0)
                    write_image(full.astype("uint8"), geom, pred / f"{cid}{dataset.file_ending}")
            sh(["evaluate", pred, ds_dir / "labelsTr", "--only-predicted", "--tolerance", "2", "-q"])
            ev = json.loads((pred / "summary.json").read_text())
            ev["predict_s_per_case"] = statistics.median(secs)
            ev["predict_peak_rss_mb"] = sampler.result()["peak_rss_mb"]
            ev["per_class_text"] = "; ".join(f"{k} DSC {v['dsc']['mean']:.4f} NSD {v['nsd']['mean']:.4f} HD95 "
                                             f"{v['hd95']['mean']:.2f}" for k, v in ev["per_region"].items())
            row(5, "+ mask propagation", r4, ev, summ,
                extra + f"; references: {a.k} sampled slices, rule {a.ref_rule} ({a.ref_count}), propagated by "
                f"{stcn.name if hasattr(stcn, 'name') else stcn} ({ss['iterations']} it, "
                f"{ss['elapsed_s'] / 60:.0f} min, trained apart)")


if __name__ == "__main__":
    main()
