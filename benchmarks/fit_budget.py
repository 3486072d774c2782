"""``semiseg fit`` in a total wall-clock budget, scored on the validation cases, one row per run.

Runs ``semiseg fit WORK -o RUN --minutes M --labeled-list ssl_labeled_subsets.json --labeled-key
SUBSET`` on the work folder of ``train_bounds.py`` (planned and preprocessed once, so planning and
preprocessing are not in the budget, as for the supervised rows it is compared with; every other
stage is: training stages, pseudo-labelling, checkpoints), then predicts the validation cases with
the final model and scores them in the original geometry. The row's notes give every stage's
minutes and iterations; the validation Dice of every training stage against the minutes of the
whole fit goes to ``benchmarks/fit_curves/NAME.csv`` (committed, small), and ``--plot`` draws the
curves of every saved fit of one dataset/subset into one figure beside the mean supervised result
of results.csv.

    python benchmarks/fit_budget.py --dataset LA --subset labeled_8 --student --minutes 30 --seed 1
    python benchmarks/fit_budget.py --dataset ACDC --subset labeled_7 --minutes 30 --seed 0 -- --config 2d
    python benchmarks/fit_budget.py --dataset ACDC --subset labeled_7 --minutes 30 --tag adamw -- --optimizer adamw --lr 3e-3
    python benchmarks/fit_budget.py --dataset LA --subset labeled_8 --student --minutes 30 --seed 2 --resume
    python benchmarks/fit_budget.py --dataset LA --subset labeled_8 --student --iterations 3000 -- --amp bf16
    python benchmarks/fit_budget.py --dataset LA --subset labeled_8 --student --plot benchmarks/fit_la8.png

``--recipe`` runs fit's other recipes (``supervised`` is the baseline in the same budget). This
machine's speed changes from day to day (the ``machine`` column), so recipes are compared side by
side: two fits at once, each pinned to one core, e.g.
``OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/fit_budget.py --recipe supervised ... &`` and
``... taskset -c 1 ... --recipe offline-continued``. When the run chose a postprocessing step on its
validation cases, the row's notes also give the score without it.
"""
import argparse
import csv
import json
import os
import shutil
import statistics
from pathlib import Path

from _common import CSV, DATA, HERE, append_rows, predict_and_score, prepared_work, score_columns, sh, val_images

from semiseg.inference.postprocessing import describe
from semiseg.planning.plans import load_plans
from semiseg.workflows.fit import DEFAULT_RECIPE

CURVES = HERE / "fit_curves"


def stage_curves(run: Path) -> list[dict]:
    """(stage, minutes since the fit began, validation Dice) of every training stage's validation."""
    fitj = json.loads((run / "fit.json").read_text())
    rows, offset = [], 0.0
    for name, st in fitj["stages"].items():
        if st.get("run") and (Path(st["run"]) / "metrics.csv").exists():
            for r in csv.DictReader(open(Path(st["run"]) / "metrics.csv")):
                if r.get("val_dice"):
                    rows.append({"stage": name, "minutes": f"{offset + float(r['elapsed_s']) / 60:.3f}",
                                 "iteration": r["iteration"], "val_dice": r["val_dice"]})
        offset += st.get("seconds", 0.0) / 60
    return rows


def plot(dataset: str, subset: str, student: bool, out: Path, tag: str = "") -> None:
    """Validation Dice against the fit's minutes of every saved curve of dataset/subset (``tag``: only the
    runs whose name ends in one of its comma-separated tags, e.g. one seed's pair and the other seeds')."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prefix = f"{dataset}-{subset}-"
    tags = [t for t in tag.split(",") if t]

    def label(f: Path) -> str:  # the run's name less the dataset/subset (and the tag, when only one was given)
        name = f.stem[len(prefix):]
        return name.removesuffix("-" + tags[0]) if len(tags) == 1 else name

    files = sorted(f for f in CURVES.glob(prefix + "*.csv") if not tags or any(f.stem.endswith("-" + t) for t in tags))
    if not files:
        raise SystemExit(f"no curves {CURVES}/{prefix}*{'-' + tag if tag else ''}.csv")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for k, f in enumerate(files):  # one colour per fit; its first stage dotted, the later ones solid
        rows = list(csv.DictReader(open(f)))
        for j, stage in enumerate(dict.fromkeys(r["stage"] for r in rows)):
            pts = [r for r in rows if r["stage"] == stage]
            ax.plot([float(r["minutes"]) for r in pts], [float(r["val_dice"]) for r in pts], lw=1.2,
                    color=f"C{k % 10}", ls=":" if j == 0 and stage != "supervised" else "-",
                    label=f"{label(f)} {stage}")
    n_lab = subset.split("_")[-1]
    sup = [float(r["dsc"]) for r in csv.DictReader(open(CSV)) if r["benchmark"] == "supervised_bounds"
           and r["dataset"] == dataset and r["labeled"] == n_lab and float(r["budget_min"] or 0) == 30
           and ("student plan" in r["networks"]) == student and "--iterations" not in r["notes"]]
    if sup and not tag:  # a tagged (side-by-side) set has its own supervised fit among its curves
        ax.axhline(statistics.mean(sup), color="k", ls="--", lw=1,
                   label=f"supervised 30 min, mean of {len(sup)} (original geometry)")
    ax.set_xlabel("minutes of the whole fit (wall clock; cores: see the rows' notes)")
    ax.set_ylabel("validation Dice (training grid)")
    ax.set_title(f"semiseg fit, {dataset} {subset}{', ' + tag if len(tags) == 1 else ''}")  # names are in the legend
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="LA")
    ap.add_argument("--subset", default="labeled_8", help="key of ssl_labeled_subsets.json")
    ap.add_argument("--minutes", type=float, default=30, help="total budget of every stage together")
    ap.add_argument("--iterations", type=int, metavar="N", help="instead of --minutes: a budget of N training steps "
                    "(fit --iterations): a fit's teacher and its supervised twin of one seed then train on the same "
                    "batches at learning rates equal but for rounding, so the comparison is free of the wall "
                    "clock's noise (pin --amp in the fit args for the same precision too)")
    ap.add_argument("--recipe", default=DEFAULT_RECIPE, help=f"a fit recipe (default fit's: {DEFAULT_RECIPE})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--student", action="store_true", help="the work folder of the student plan")
    ap.add_argument("--tolerance", default="2", help="NSD tolerance in mm")
    ap.add_argument("--tag", default="", help="appended to the run's name (for runs with extra fit flags)")
    ap.add_argument("--resume", action="store_true",
                    help="finish an interrupted run of the same name (fit resumes it) instead of starting afresh")
    ap.add_argument("--plot", type=Path, metavar="PNG", help="only draw the saved curves of this dataset/subset "
                    "(with --tag: only the runs of that tag; several tags comma-separated)")
    ap.add_argument("fit_args", nargs="*", help="extra `semiseg fit` flags (after --), e.g. --config 2d")
    a = ap.parse_args()
    if a.plot:
        return plot(a.dataset, a.subset, a.student, a.plot, a.tag)
    from semiseg.utils.profile import ResourceSampler

    work = prepared_work(a.dataset, student=a.student)
    config = a.fit_args[a.fit_args.index("--config") + 1] if "--config" in a.fit_args else "auto"
    budget = f"{a.iterations}it" if a.iterations else f"{a.minutes:g}min"
    name = (f"{a.dataset}-{a.subset}-{config}{'-student' if a.student else ''}-fit-{a.recipe}-{budget}-s{a.seed}"
            f"{'-' + a.tag if a.tag else ''}")
    run = HERE / "_work" / "runs" / name
    resumed = a.resume and (run / "fit.json").exists()
    if not resumed:
        shutil.rmtree(run, ignore_errors=True)
    with ResourceSampler(interval=0.5) as s:
        sh(["fit", work, "-o", run, *(["--iterations", a.iterations] if a.iterations else ["--minutes", a.minutes]),
            "--recipe", a.recipe, "--seed", a.seed,
            "--labeled-list", DATA / a.dataset / "ssl_labeled_subsets.json", "--labeled-key", a.subset, "-q",
            *a.fit_args])
    tr = s.result()
    summ = json.loads((run / "summary.json").read_text())
    stages = summ["fit"]["stages"]
    done = []
    for k, st in stages.items():
        what = (f"{st['iterations']} it (best val Dice {st['best_val_dice']:.4f} at {st['best_iteration']})"
                if "iterations" in st else f"{st['scans']} scans" if "scans" in st else "")
        done.append(f"{k} {st['seconds'] / 60:.1f} min {what}".strip())
    ev = predict_and_score([run], a.dataset, val_images(a.dataset, work), HERE / "_work" / "runs" / f"{name}-pred",
                           HERE / "_work" / "runs" / f"{name}-predict_profile.csv", a.tolerance)
    pp = json.loads((run / "postprocessing.json").read_text()) if (run / "postprocessing.json").exists() else {}
    chosen = pp.get("largest_component_classes") or []
    names = load_plans(run).class_names()
    post = f"postprocessing chosen on validation: {describe(chosen, names)} {chosen}"
    if chosen:  # the same model without it, to show what the choice gave
        raw = predict_and_score([run], a.dataset, val_images(a.dataset, work),
                                HERE / "_work" / "runs" / f"{name}-pred-raw",
                                HERE / "_work" / "runs" / f"{name}-predict_profile-raw.csv", a.tolerance,
                                ["--no-largest-component"])
        post += (f" (without it: DSC {raw['mean_over_regions']['dsc']:.4f} NSD {raw['mean_over_regions']['nsd']:.4f} "
                 f"HD95 {raw['mean_over_regions']['hd95']:.2f})")
    CURVES.mkdir(exist_ok=True)
    with open(CURVES / f"{name}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["stage", "minutes", "iteration", "val_dice"])
        w.writeheader()
        w.writerows(stage_curves(run))
    cfg = json.loads((run / "config.json").read_text())
    row = {"benchmark": "fit_budget", "dataset": a.dataset, "labeled": summ["labeled"],
           "unlabeled": summ["unlabeled"] + summ.get("pseudo_labeled", 0), "method": f"fit {a.recipe}",
           "networks": f"{cfg['network']} ({cfg['configuration']}{', chosen by --config auto' if config == 'auto' else ''}"
                       f"{', student plan' if a.student else ''})",
           "budget_min": "" if a.iterations else a.minutes, "iterations": summ["iterations"], "seed": a.seed,
           "split": f"splits.json fold 0 val ({summ['val']} cases)",
           **score_columns(ev, tr),
           "notes": f"subset {a.subset}; used {summ['fit']['used_minutes']} min"
                    f"{f' for a budget of {a.iterations} steps' if a.iterations else f' of {a.minutes:g} min'} (plan+preprocess "
                    f"done before, not counted); stages: {' -> '.join(done)}; NSD tol {a.tolerance} mm; "
                    f"{ev['per_class_text']}; {post}; fit args: {' '.join(a.fit_args) or 'defaults'}; "
                    f"{len(os.sched_getaffinity(0))} core(s) for the fit and its scoring"
                    f"{'; interrupted, then resumed by the same command (wall_s: the resumed part only)' if resumed else ''}"}
    append_rows([row])
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
