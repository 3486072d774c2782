"""Training in a wall-clock budget, scored on the validation cases (GUIDE section 6): the supervised
lower and upper bounds, and semi-supervised methods (`--method cps`) beside them.

Plans and preprocesses the dataset once (every labeled training case of splits.json fold 0
labeled, its `val` part for validation), trains `semiseg train` with the labeled subset from
`ssl_labeled_subsets.json` (or all) for `--minutes` on this machine, then predicts the validation
cases with `semiseg predict --profile` (best checkpoint, chosen on validation) and scores them with
`semiseg evaluate` against the original labels, in the original geometry. One row per run in
results.csv.

    python benchmarks/train_bounds.py --dataset LA --subset labeled_8 --minutes 30
    python benchmarks/train_bounds.py --dataset ACDC --subset labeled_7 --minutes 30
    python benchmarks/train_bounds.py --dataset LA --subset all --minutes 30 -- --batch-size 4
    python benchmarks/train_bounds.py --dataset ACDC --subset labeled_7 --predict-only --predict-args=--largest-component
    python benchmarks/train_bounds.py --dataset LA --subset labeled_8 --method cps --seed 1
    python benchmarks/train_bounds.py --dataset LA --subset labeled_8 --method cps --tag unetr -- --partner unetr
    python benchmarks/train_bounds.py --dataset LA --subset labeled_8 --method cps --student
`--student` trains on Chen et al.'s student plan (`semiseg plan --student`: 1.5x coarser spacing, half
the widths; its own work folder) instead of the default plan: about 4x cheaper steps on a CPU.
Arguments after `--` go to `semiseg train` (and are recorded in the row's notes). With a labeled
subset the other training cases of the split are the unlabeled ones a semi-supervised method uses.
"""
import argparse
import json
import shutil
import sys

from _common import DATA, HERE, append_rows, predict_and_score, prepared_work, sh, val_images


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="LA")
    ap.add_argument("--subset", default="labeled_8", help="key prefix of ssl_labeled_subsets.json, or 'all'")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--config", default="3d")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--method", default="supervised", help="semiseg train --method (supervised, cps)")
    ap.add_argument("--tag", default="", help="name suffix of the run folder")
    ap.add_argument("--student", action="store_true",
                    help="train on the student plan (semiseg plan --student) instead of the default plan")
    ap.add_argument("--tolerance", default="2", help="NSD tolerance in mm")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted run of the same name")
    ap.add_argument("--predict-only", action="store_true",
                    help="do not train: predict and score the existing run of this name again")
    ap.add_argument("--predict-args", default="", help="extra `semiseg predict` flags, e.g. '--largest-component --tta'")
    ap.add_argument("train_args", nargs="*", help="extra `semiseg train` flags (after --); with --predict-only "
                    "or --resume they only name the flags of a run whose folder has no bench_args.json")
    a = ap.parse_args()
    from semiseg.utils.profile import ResourceSampler

    ds = DATA / a.dataset
    work = prepared_work(a.dataset, student=a.student)
    method = "" if a.method == "supervised" else f"-{a.method}"
    name = f"{a.dataset}-{a.subset}-{a.config}{'-student' if a.student else ''}{method}{('-' + a.tag) if a.tag else ''}-s{a.seed}"
    run = HERE / "_work" / "runs" / name
    if run.exists() and not (a.resume or a.predict_only):
        shutil.rmtree(run)
    cmd = ["train", work, "-o", run, "--config", a.config, "--minutes", a.minutes, "--seed", a.seed, "--method", a.method, "-q",
           *a.train_args]
    if a.subset != "all":
        cmd += ["--labeled-list", ds / "ssl_labeled_subsets.json", "--labeled-key", a.subset]
    if a.resume:
        cmd = ["train", work, "-o", run, "--resume", "-q"]
    if a.predict_only:
        if not (run / "summary.json").exists():
            sys.exit(f"{run}: no finished run to predict with")
        tr = {"peak_rss_mb": float("nan"), "wall_s": float("nan")}
    else:
        if not a.resume:  # what --predict-only and --resume report as the run's train args
            run.mkdir(parents=True)  # the engine takes an existing folder without config.json
            (run / "bench_args.json").write_text(json.dumps({"train_args": a.train_args}))
        with ResourceSampler(interval=0.5) as s:
            sh(cmd)
        tr = s.result()
    saved = run / "bench_args.json"
    if (a.predict_only or a.resume) and not a.train_args and saved.exists():
        a.train_args = json.loads(saved.read_text())["train_args"]
    summ = json.loads((run / "summary.json").read_text())

    imgs = val_images(a.dataset, work)  # the student plan's split has the same validation cases
    ev = predict_and_score([run], a.dataset, imgs, run / "pred_val", run / "predict_profile.csv", a.tolerance,
                           a.predict_args.split())
    per_class = ev["per_class_text"]
    cfg = json.loads((run / "config.json").read_text())
    sup = cfg["method"] == "supervised"
    nets = cfg["network"] if sup else "+".join(
        [cfg["network"], cfg["method_options"].get("partner") or cfg["network"]])
    row = {"benchmark": "supervised_bounds" if sup else f"{cfg['method']}_budget", "dataset": a.dataset,
           "labeled": summ["labeled"], "unlabeled": 0 if sup else summ["unlabeled"], "method": cfg["method"],
           "networks": nets + f" ({a.config}{', student plan' if a.student else ''})",
           "budget_min": a.minutes, "iterations": summ["iterations"], "seed": a.seed,
           "split": f"splits.json fold 0 val ({summ['val']} cases)",
           "dsc": f"{ev['mean_over_regions']['dsc']:.4f}", "nsd": f"{ev['mean_over_regions']['nsd']:.4f}", "hd95": f"{ev['mean_over_regions']['hd95']:.2f}",
           "train_peak_rss_mb": "" if a.predict_only else f"{tr['peak_rss_mb']:.0f}",
           "predict_s_per_case": f"{ev['predict_s_per_case']:.2f}",
           "predict_peak_rss_mb": f"{ev['predict_peak_rss_mb']:.0f}",
           "wall_s": "" if a.predict_only else f"{tr['wall_s']:.0f}",
           "notes": f"subset {a.subset}; best val (pseudo) Dice {summ['best_val_dice']:.4f} at it "
                    f"{summ['best_iteration']}; {summ['seconds_per_iteration']} s/it; CPU use {summ['mean_cpu_util']} "
                    f"cores; NSD tol {a.tolerance} mm; {per_class}; train args: {' '.join(a.train_args) or 'defaults'}"
                    + (f"; predict args: {a.predict_args}" if a.predict_args else "")
                    + ("; re-predicted from the finished run (training not repeated)" if a.predict_only else "")}
    append_rows([row])
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
