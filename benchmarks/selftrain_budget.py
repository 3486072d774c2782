"""Self-training rounds in a wall-clock budget per round, scored on the validation cases (issue 11).

Runs ``semiseg selftrain`` on the benchmark work folder with a finished run as round 0 (for example
the supervised lower bound of ``train_bounds.py``): each round pseudo-labels the unlabeled training
cases with the previous round's model, keeps ``--select`` of them by consensus, and trains a fresh
model for ``--minutes`` on the labels plus those pseudo-labels. Every round's run is predicted and
scored like the bounds (original geometry, NSD 2 mm); the row states the round's total compute
(round 0's training, every round's training and pseudo-labelling), since a round-2 model used three
trainings.

    python benchmarks/selftrain_budget.py --dataset LA --subset labeled_8 --init-run RUN --rounds 2 --minutes 30
Arguments after `--` go to `semiseg selftrain` (the training options of every round).
"""
import argparse
import csv
import json
import shutil

from _common import DATA, HERE, append_rows, predict_and_score, prepared_work, sh, val_images


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="LA")
    ap.add_argument("--subset", default="labeled_8")
    ap.add_argument("--init-run", required=True, help="finished run used as round 0")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--select", default="top:0.5")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="")
    ap.add_argument("--fresh", action="store_true", help="delete an earlier self-training folder of this name")
    ap.add_argument("train_args", nargs="*")
    a = ap.parse_args()
    ds = DATA / a.dataset
    work = prepared_work(a.dataset)
    out = HERE / "_work" / "runs" / f"{a.dataset}-{a.subset}-selftrain{('-' + a.tag) if a.tag else ''}-s{a.seed}"
    if a.fresh:
        shutil.rmtree(out, ignore_errors=True)
    cmd = ["selftrain", work, "-o", out, "--init-run", a.init_run, "--rounds", a.rounds, "--minutes", a.minutes,
           "--select", a.select, "--seed", a.seed, "-q", *a.train_args]
    if a.subset != "all":
        cmd += ["--labeled-list", ds / "ssl_labeled_subsets.json", "--labeled-key", a.subset]
    sh(cmd)
    report = list(csv.DictReader(open(out / "report.csv")))
    imgs = val_images(a.dataset, work)
    r0 = json.loads(open(f"{a.init_run}/summary.json").read())
    compute_s = float(r0["elapsed_s"])
    rows = []
    for r in report[1:]:
        compute_s += float(r["train_s"] or 0) + float(r["pseudolabel_s"] or 0)
        if not r["run"]:
            continue
        run = r["run"]
        summ = json.loads(open(f"{run}/summary.json").read())
        ev = predict_and_score([run], a.dataset, imgs, HERE / "_work" / "runs" / f"{out.name}-r{r['round']}-pred",
                               HERE / "_work" / "runs" / f"{out.name}-r{r['round']}-profile.csv")
        m = ev["mean_over_regions"]
        rows.append({"benchmark": "selftrain_budget", "dataset": a.dataset, "labeled": summ["labeled"],
                     "unlabeled": summ["unlabeled"], "method": f"selftrain round {r['round']}",
                     "networks": "dynunet (3d)", "budget_min": a.minutes, "iterations": summ["iterations"],
                     "seed": a.seed, "split": f"splits.json fold 0 val ({summ['val']} cases)",
                     "dsc": f"{m['dsc']:.4f}", "nsd": f"{m['nsd']:.4f}", "hd95": f"{m['hd95']:.2f}",
                     "train_peak_rss_mb": summ["peak_rss_mb"], "predict_s_per_case": f"{ev['predict_s_per_case']:.2f}",
                     "predict_peak_rss_mb": f"{ev['predict_peak_rss_mb']:.0f}",
                     "notes": f"{summ['pseudo_labeled']} pseudo-labeled scans ({a.select} by consensus, "
                              f"{r['new']} new; selected consensus >= {float(r['selected_score_min']):.3f}); round 0 = "
                              f"{a.init_run.rstrip('/').split('/')[-1]}; TOTAL compute to this model "
                              f"{compute_s / 60:.1f} min (round 0 training {float(r0['elapsed_s']) / 60:.1f} min + "
                              f"every round's pseudo-labelling and {a.minutes:g}-min training); best val (pseudo) Dice "
                              f"{summ['best_val_dice']:.4f}; CPU use {summ['mean_cpu_util']} cores; {ev['per_class_text']}; "
                              f"train args: {' '.join(a.train_args) or 'defaults'}"})
    append_rows(rows)
    for r in rows:
        print(r["method"], r["dsc"], r["notes"])


if __name__ == "__main__":
    main()
