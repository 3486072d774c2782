"""A multi-stage training recipe in one total wall-clock budget, scored on the validation cases.

The budget is the whole recipe: every stage's minutes add up to ``--minutes`` (GUIDE section 6).
Recipes:

- ``bcp``: supervised pre-training with copy-paste between labeled patches for ``--share`` of the
  budget, then ``--method mean-teacher --mix copy-paste`` warm-started from it (``--init``) for the
  rest (Bai et al. 2023's two stages);
- ``mt``: the same with ``--mix none`` (a plain mean teacher after supervised pre-training);
- ``cps-warm``: supervised pre-training, then CPS with both networks warm-started from it;
- ``offline``: a supervised teacher for ``--share`` of the budget, ``semiseg pseudolabel`` of every
  unlabeled scan of the split with it (mirrorings as members; its minutes are counted), then a
  student warm-started from the teacher on the labels plus every pseudo-label for the rest.

Each stage is a ``semiseg train`` run on the work folder of ``train_bounds.py`` (``--student`` for
the student plan); the last stage's networks predict the validation cases, scored in the original
geometry. One row per recipe in results.csv (budget_min is the total; the notes give each stage's
minutes and iterations).

    python benchmarks/recipe_budget.py --dataset LA --subset labeled_8 --student --recipe bcp --minutes 30
    python benchmarks/recipe_budget.py --dataset ACDC --subset labeled_7 --recipe bcp --minutes 30
"""
import argparse
import json
import shutil
import time

from _common import (
    DATA,
    HERE,
    append_rows,
    case_images,
    predict_and_score,
    prepared_work,
    score_columns,
    sh,
    val_images,
)

RECIPES = {
    "bcp": [("supervised", ["--supervised-mix", "copy-paste"]), ("mean-teacher", ["--mix", "copy-paste"])],
    "mt": [("supervised", []), ("mean-teacher", ["--mix", "none"])],
    "cps-warm": [("supervised", []), ("cps", [])],
    "offline": [("supervised", []), ("pseudolabel", []), ("supervised", ["--select", "all"])],
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="LA")
    ap.add_argument("--subset", default="labeled_8", help="key prefix of ssl_labeled_subsets.json")
    ap.add_argument("--recipe", choices=sorted(RECIPES), default="bcp")
    ap.add_argument("--minutes", type=float, default=30, help="total budget of every stage together")
    ap.add_argument("--share", type=float, default=0.5, help="share of the budget for the pre-training stage")
    ap.add_argument("--config", default="3d")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--student", action="store_true", help="train on the student plan")
    ap.add_argument("--tolerance", default="2", help="NSD tolerance in mm")
    ap.add_argument("train_args", nargs="*", help="extra `semiseg train` flags for every stage (after --)")
    a = ap.parse_args()
    from semiseg.utils.profile import ResourceSampler

    ds = DATA / a.dataset
    work = prepared_work(a.dataset, student=a.student)
    name = f"{a.dataset}-{a.subset}-{a.config}{'-student' if a.student else ''}-recipe-{a.recipe}-s{a.seed}"
    root = HERE / "_work" / "runs" / name
    shutil.rmtree(root, ignore_errors=True)
    stages, prev, done, spent, pl = RECIPES[a.recipe], None, [], 0.0, None
    trainings = sum(m != "pseudolabel" for m, _ in stages)
    with ResourceSampler(interval=0.5) as s:
        for i, (method, extra) in enumerate(stages):
            t0 = time.time()
            if method == "pseudolabel":
                split = json.loads((prev / "split.json").read_text())
                imgs = case_images(a.dataset, split["unlabeled"], root / "unlabeled_images")
                pl = root / f"stage{i}-pseudolabel"
                sh(["pseudolabel", prev, "-i", imgs, "-o", pl, "--tta-members", "-q"])
                spent += time.time() - t0
                done.append(f"pseudolabel {len(split['unlabeled'])} scans {(time.time() - t0) / 60:.1f} min")
                continue
            left = a.minutes - spent / 60
            minutes = a.minutes * a.share if i == 0 else left / (trainings - sum(
                1 for m, _ in stages[:i] if m != "pseudolabel"))
            run = root / f"stage{i}-{method}"
            sh(["train", work, "-o", run, "--config", a.config, "--minutes", f"{minutes:g}", "--seed", a.seed,
                "--method", method, "--labeled-list", ds / "ssl_labeled_subsets.json", "--labeled-key", a.subset,
                "-q", *(["--init", f"{prev}@best"] if prev else []), *(["--pseudo-labels", pl] if pl else []),
                *extra, *a.train_args])
            spent += time.time() - t0
            summ = json.loads((run / "summary.json").read_text())
            done.append(f"{method} {' '.join(extra)} {minutes:g} min {summ['iterations']} it "
                        f"(best val Dice {summ['best_val_dice']:.4f} at {summ['best_iteration']})")
            prev = run
    tr = s.result()
    summ = json.loads((prev / "summary.json").read_text())
    ev = predict_and_score([prev], a.dataset, val_images(a.dataset, work), root / "pred_val",
                           root / "predict_profile.csv", a.tolerance)
    cfg = json.loads((prev / "config.json").read_text())
    row = {"benchmark": "recipe_budget", "dataset": a.dataset, "labeled": summ["labeled"],
           "unlabeled": summ["unlabeled"], "method": f"recipe {a.recipe}",
           "networks": f"{cfg['network']} ({a.config}{', student plan' if a.student else ''})",
           "budget_min": a.minutes, "iterations": summ["iterations"], "seed": a.seed,
           "split": f"splits.json fold 0 val ({summ['val']} cases)",
           **score_columns(ev, tr),
           "notes": f"subset {a.subset}; stages: {' -> '.join(done)}; NSD tol {a.tolerance} mm; "
                    f"{ev['per_class_text']}; train args: {' '.join(a.train_args) or 'defaults'}"}
    append_rows([row])
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
