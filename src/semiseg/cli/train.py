"""``semiseg train | selftrain | fit | demo``: training runs and the workflows built on them.

The training options are the run's :class:`~semiseg.training.TrainConfig`; each registered
method adds its own option group (generated from its options dataclass), and the choices of
``--method`` and ``--network`` come from the registries."""
from __future__ import annotations

import argparse
import os

from ..methods import create_method
from ..planning import first_labeled, load_plans
from ..planning.choices import choose_configuration, slice_overrides
from ..training import TrainConfig, best_validation, train
from ..training.options import add_train_flags, given_options
from ..utils import read_json
from ..workflows.demo import DEMO_STEPS, run_demo
from ..workflows.fit import DEFAULT_RECIPE, PROBATION, RECIPES, fit
from ..workflows.selftrain import selftrain
from .common import progress, write_run_report

SELFTRAIN_SELECT = "top:0.5"  # selftrain's default rule for each round's pseudo-labels


def train_config(a, command: str = "train") -> TrainConfig:
    """The TrainConfig of ``semiseg train``/``selftrain`` flags (only those given; the dataclass has
    the defaults); the method checks its options before anything is read or written."""
    given = given_options(a, command)
    if isinstance(given.get("labeled"), int):
        load_plans(a.work)
        given["labeled"] = first_labeled(a.work, given["labeled"])
    if given.get("configuration") == "auto":  # decided on the plan, as fit does; config.json keeps the choice
        plans = load_plans(a.work)
        given["configuration"], why = choose_configuration(plans)
        caps = slice_overrides(plans.configuration("2d"), given) if given["configuration"] == "2d" else {}
        given.update(caps)
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"--config auto: {why}" + (f"; patch {caps['patch_size']} batch {caps['batch_size']}" if caps
                                             else ""))
    if command == "selftrain":  # --select/--select-score are selftrain's round rule; its trainings take
        given["select"] = "all"  # the selected scans whole
    cfg = TrainConfig(**given)
    create_method(cfg.method, cfg)  # refuses unknown or misplaced method options before anything is read
    return cfg


def cmd_train(a) -> int:
    if a.resume:
        cfg = TrainConfig.from_dict(read_json(f"{a.out}/config.json", "run configuration (nothing to resume?)"))
    else:
        cfg = train_config(a)
    s = train(a.work, a.out, cfg, resume=a.resume, progress=progress(a))
    if s and int(os.environ.get("RANK", "0")) == 0:
        print(f"{s['iterations']} iterations in {s['elapsed_s']:.0f} s; {best_validation(s)}; run in {a.out}")
        if not a.no_report:
            write_run_report(a.out, a.quiet)
    return 0


def cmd_selftrain(a) -> int:
    cfg = None if os.path.exists(os.path.join(a.out, "selftrain.json")) else train_config(a, "selftrain")
    rows = selftrain(a.work, a.out, cfg, rounds=a.rounds, select=a.select or SELFTRAIN_SELECT,
                     select_score=a.select_score or TrainConfig.select_score,
                     init_run=a.init_run, tta_members=a.tta_members, pl_step=a.pl_step, progress=progress(a))
    for r in rows:
        print(f"round {r['round']}: {r['selected']} pseudo-labeled scans ({r['new']} new); best validation Dice "
              f"{r['best_val_dice']:.4f}" + (" (stopped: no new scan)" if r["stopped"] else ""))
    print(f"report in {a.out}/report.csv and report.png")
    if rows and not a.no_report:
        write_run_report(os.path.join(a.out, f"round{rows[-1]['round']}"), a.quiet)
    return 0


def cmd_fit(a) -> int:
    given = given_options(a, "fit")
    labeled = given.pop("labeled", None)
    configuration, seed = given.pop("configuration", "auto"), given.pop("seed", 0)
    s = fit(a.dataset, a.out, a.minutes, iterations=a.iterations, recipe=a.recipe, configuration=configuration,
            labeled=labeled, seed=seed, student_plan=a.student, train_options=given, workers=a.workers,
            progress=progress(a), teacher_share=a.teacher_share, log=(lambda m: None) if a.quiet else print)
    f = s["fit"]
    budget = f"{f['minutes']:g} min" if f["minutes"] else f"a budget of {a.iterations} steps"
    print(f"fit {f['recipe']}: {f['used_minutes']:g} min, {budget}; best validation Dice "
          f"{s['best_val_dice']:.4f}; model in {a.out} (semiseg predict {a.out} -i IMAGES -o PRED)")
    if not a.no_report:
        write_run_report(a.out, a.quiet)
    return 0


def cmd_demo(a) -> int:
    run_demo(a.out, workers=a.workers, progress=progress(a), minutes=a.minutes, iterations=a.iterations,
             demo_labeled=a.labeled)
    return 0


def add_run_args(p: argparse.ArgumentParser, selftrain: bool = False) -> None:
    """WORK and the output folder of train and selftrain."""
    p.add_argument("work", metavar="WORK")
    p.add_argument("-o", "--out", required=True, metavar="OUT" if selftrain else "RUN",
                   help="self-training folder (created; give it again to continue)" if selftrain else
                   "run folder (created)")


def register(add) -> None:
    loader_help = "data-loading processes (default: 1 on up to 4 cores, else cores - 2; 0 = in the training process)"
    p = add("train", "Train a model on a preprocessed work folder (supervised or semi-supervised).", cmd_train,
            loader_help)
    add_run_args(p)
    add_train_flags(p, "train")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN from checkpoints/latest.pt")
    p.add_argument("--no-report", action="store_true", help="do not write report.html at the end (`semiseg report`)")

    p = add("selftrain", "Self-training (Pham et al. 2022): train, pseudo-label the unlabeled scans, keep those "
            "the ensemble agrees on, retrain; round by round, resumable.", cmd_selftrain,
            "data-loading processes of each training (as for train)")
    add_run_args(p, selftrain=True)
    add_train_flags(p, "selftrain", defaults={"select": SELFTRAIN_SELECT}, notes={
        "select": "selftrain's rule for each round's pseudo-labels", "select_score": "each round's too"})
    p.add_argument("--no-report", action="store_true", help="do not write report.html at the end (`semiseg report`)")
    g = p.add_argument_group("self-training rounds")
    g.add_argument("--rounds", type=int, default=2, help="rounds after round 0 (default 2); stops early when a "
                   "round adds no scan")
    g.add_argument("--init-run", metavar="RUN", help="a finished run to use as round 0 instead of training one")
    g.add_argument("--tta-members", action="store_true", default=None,
                   help="mirrorings as ensemble members (default: only when the previous round has one network)")
    g.add_argument("--pl-step", type=float, default=0.5, help="sliding-window step of the pseudo-labelling")

    p = add("fit", "From a dataset to a model in one wall-clock budget: plan, preprocess and the best measured "
            "semi-supervised recipe (stages printed first; resumable: run the same command again).", cmd_fit,
            "worker processes for planning/preprocessing and data loading (default: as train)")
    p.add_argument("dataset", metavar="DATASET", help="an nnU-Net v2 raw dataset folder, or a work folder already "
                   "planned and preprocessed (then planning costs nothing)")
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="fit folder; ends as the final model's run "
                   "folder (give it again to continue an interrupted fit)")
    b = p.add_mutually_exclusive_group(required=True)
    b.add_argument("--minutes", type=float, help="total wall-clock budget of every stage")
    b.add_argument("--iterations", type=int, metavar="N", help="instead of --minutes: N training steps shared by "
                   "the training stages as the minutes would be (pseudo-labelling is not counted), so that the "
                   "result does not depend on the host's speed")
    p.add_argument("--no-report", action="store_true", help="do not write report.html at the end (`semiseg report`)")
    p.add_argument("--recipe", choices=list(RECIPES), default=DEFAULT_RECIPE,
                   help=f"default {DEFAULT_RECIPE} (teacher -> pseudo-labels -> a student warm-started from the "
                        "teacher that continues its learning-rate schedule and must overtake the teacher by "
                        f"{PROBATION * 100:.0f}%% of its time, else the teacher continues for the rest); offline (the "
                        "student restarts the schedule); bcp, mean-teacher, cps: supervised "
                        "pre-training then that method; supervised (the labels alone, the baseline; "
                        "docs/benchmarks.md compares them)")
    p.add_argument("--teacher-share", type=float, metavar="F", help="share of the training budget for the first "
                   "training stage (the teacher, or the pre-training; default the recipe's: " + ", ".join(
                   f"{r} {st[0].share:g}" for r, st in RECIPES.items() if st[0].share) + ")")
    p.add_argument("--student", action="store_true", help="plan the small fast student plan (coarser spacing, "
                   "narrower network; Chen et al. 2023) instead of nnU-Net's")
    add_train_flags(p, "fit", defaults={"configuration": "auto"}, notes={
        "method": "a stage of the recipe that names its own method keeps it",
        "init": "the first training stage's (later stages start from the stage before)",
        "pseudo_labels": "for the stages that do not pseudo-label themselves",
        "amp": "measured per stage"})

    p = add("demo", "Run semiseg end to end on a generated synthetic dataset: supervised training against `fit` "
            "in the same number of training steps, evaluated per structure.", cmd_demo)
    p.add_argument("-o", "--out", default="semiseg_demo", help="output folder (default ./semiseg_demo)")
    b = p.add_mutually_exclusive_group()
    b.add_argument("--iterations", type=int, default=DEMO_STEPS, help="training steps of each model: the "
                   f"supervised training and fit's stages together, so that the answer does not depend on the "
                   f"host's speed (default {DEMO_STEPS})")
    b.add_argument("--minutes", type=float, help="instead: a wall-clock budget of each model (the supervised "
                   "training and the whole fit)")
    p.add_argument("--labeled", type=int, default=2,
                   help="labeled cases to train on; the rest are unlabeled (default 2)")
