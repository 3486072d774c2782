"""``semiseg train | selftrain | fit | demo``: training runs and the workflows built on them.

The training options are the run's :class:`~semiseg.training.TrainConfig`; each registered
method adds its own option group (generated from its options dataclass), and the choices of
``--method`` and ``--network`` come from the registries."""
from __future__ import annotations

import argparse
import os

from ..data.dataset import read_case_list
from ..methods import add_option_flags, available_methods, create_method, method_class, options_from_args
from ..nets import available as available_networks
from ..planning import load_plans
from ..training import OPTIMIZERS, TrainConfig, best_validation, train
from ..utils import SemisegError, json_object, read_json
from ..utils.device import AMP_CHOICES
from ..workflows.demo import DEMO_STEPS, run_demo
from ..workflows.fit import DEFAULT_RECIPE, RECIPES, fit
from ..workflows.selftrain import selftrain
from .common import progress, write_run_report


def train_config(a) -> TrainConfig:
    """The TrainConfig of ``semiseg train``/``selftrain`` flags; the method checks its options
    before anything is read or written."""
    labeled = None
    if a.labeled_list:
        labeled = read_case_list(a.labeled_list, a.labeled_key)
    elif a.labeled is not None:
        load_plans(a.work)
        split = read_json(f"{a.work}/split.json", "split.json")
        if not 0 < a.labeled <= len(split["labeled"]):
            raise SemisegError(f"--labeled {a.labeled}: the plan has {len(split['labeled'])} labeled cases")
        labeled = split["labeled"][:a.labeled]
    opts = {k: v for k, v in (("base_features", a.base_features), ("depth", a.depth)) if v}
    if a.network_options:
        opts.update(json_object(a.network_options, "--network-options"))
    mopts = options_from_args(a, a.method)
    if a.method_options:
        mopts.update(json_object(a.method_options, "--method-options"))
    aug = {"enabled": not a.no_augment}
    if a.elastic is not None:
        aug["p_elastic"] = a.elastic
    cfg = TrainConfig(configuration=a.config, method=a.method, method_options=mopts, network=a.network,
                      network_options=opts, init=a.init, patch_size=a.patch_size, slice_position=a.slice_position,
                      batch_size=a.batch_size, unlabeled_batch=a.unlabeled_batch, labeled=labeled,
                      pseudo_labels=getattr(a, "pseudo_labels", None), class_gate=a.class_gate,
                      class_weights=a.class_weights, pseudo_share=a.pseudo_share,
                      pseudo_classes=a.pseudo_classes,
                      select="all" if a.cmd == "selftrain" else a.select, select_score=a.select_score,
                      minutes=a.minutes, iterations=a.iterations, schedule_span=a.schedule_span,
                      optimizer=a.optimizer, lr=a.lr,
                      weight_decay=a.weight_decay, loss=a.loss, fg_oversample=a.fg_oversample, aug=aug,
                      val_every=a.val_every, val_minutes=a.val_minutes, val_step=a.val_step, log_every=a.log_every,
                      seed=a.seed,
                      workers=a.workers, amp=a.amp, device=a.device)
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
    cfg = None if os.path.exists(os.path.join(a.out, "selftrain.json")) else train_config(a)
    rows = selftrain(a.work, a.out, cfg, rounds=a.rounds, select=a.select, select_score=a.select_score,
                     init_run=a.init_run, tta_members=a.tta_members, pl_step=a.pl_step, progress=progress(a))
    for r in rows:
        print(f"round {r['round']}: {r['selected']} pseudo-labeled scans ({r['new']} new); best validation Dice "
              f"{r['best_val_dice']:.4f}" + (" (stopped: no new scan)" if r["stopped"] else ""))
    print(f"report in {a.out}/report.csv and report.png")
    if rows and not a.no_report:
        write_run_report(os.path.join(a.out, f"round{rows[-1]['round']}"), a.quiet)
    return 0


def cmd_fit(a) -> int:
    labeled = read_case_list(a.labeled_list, a.labeled_key) if a.labeled_list else a.labeled
    opts = {k: v for k, v in (("amp", a.amp), ("device", a.device), ("optimizer", a.optimizer), ("lr", a.lr),
                              ("network", a.network), ("patch_size", a.patch_size), ("batch_size", a.batch_size)) if v}
    s = fit(a.dataset, a.out, a.minutes, iterations=a.iterations, recipe=a.recipe, configuration=a.config,
            labeled=labeled, seed=a.seed,
            student_plan=a.student, train_options=opts, workers=a.workers, progress=progress(a),
            teacher_share=a.teacher_share,
            log=(lambda m: None) if a.quiet else print)
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


def add_shape_args(p: argparse.ArgumentParser) -> None:
    """The plan's patch and batch overrides, shared by train, selftrain and fit."""
    p.add_argument("--patch-size", type=int, nargs="+", help="override the plan's patch (z y x, or y x for 2d)")
    p.add_argument("--batch-size", type=int, help="override the plan's labeled batch size (global, over all processes)")


def add_train_args(p: argparse.ArgumentParser, selftrain: bool = False) -> None:
    """The training options, shared by train and selftrain (which chooses its pseudo-labels itself)."""
    p.add_argument("work", metavar="WORK")
    p.add_argument("-o", "--out", required=True, metavar="OUT" if selftrain else "RUN",
                   help="self-training folder (created; give it again to continue)" if selftrain else
                   "run folder (created)")
    p.add_argument("--config", default="3d", help="plans.json configuration: 3d or 2d (default 3d)")
    p.add_argument("--method", default="supervised", choices=available_methods(),
                   help="supervised (default), cps (cross pseudo supervision of two networks), stcn (the "
                        "mask-propagation network, with --config 2d), or any other registered method")
    p.add_argument("--method-options", metavar="JSON",
                   help="the method's own options as JSON, e.g. '{\"crop\": 96}' for stcn (the flags below too)")
    p.add_argument("--network", default="dynunet",
                   help="registered network: " + ", ".join(available_networks()) + " (default dynunet, nnU-Net's "
                        "U-Net; 2d only: deeplabv3plus, transunet)")
    p.add_argument("--base-features", type=int, help="network width (first-stage features)")
    p.add_argument("--depth", type=int, help="network depth (stages)")
    p.add_argument("--network-options", metavar="JSON", help="other network options, e.g. '{\"hidden_size\": 384}' "
                   "(an option the network does not have is an error)")
    add_shape_args(p)
    p.add_argument("--slice-position", action="store_true",
                   help="2d: give the networks each slice's position PE(k) = k / T (Pham et al. 2022, eq. 1); "
                        "deeplabv3plus and transunet embed it before their head, other networks take it as one "
                        "more input channel")
    p.add_argument("--init", metavar="RUN[@CKPT]", help="warm start: every network starts from that finished run's "
                   "weights (same plan and network; the schedule starts fresh; default checkpoint best)")
    p.add_argument("--unlabeled-batch", type=int,
                   help="unlabeled patches per global batch (default: the method's; cps: as many as labeled)")
    g = p.add_argument_group("pseudo-labels made during training (cps, mean-teacher)")
    g.add_argument("--class-gate", type=float, default=0.5, metavar="DICE",
                   help="a class enters the pseudo-label loss only once the network that makes the pseudo-labels "
                        "(teacher, CPS partner) predicts it on the labeled patches with running Dice >= DICE; "
                        "before, it is merged with background (neither taught nor suppressed); 0 = every class "
                        "from the start (default 0.5)")
    g.add_argument("--class-weights", action="store_true",
                   help="distribution-aware class weights on the pseudo-label CE (Wang and Li 2023, DHC): rare "
                        "classes weigh more, from the running class counts of the pseudo-labels")
    for name in available_methods():
        add_option_flags(p, method_class(name))
    g = p.add_argument_group("labeled cases (default: the plan's; the others become unlabeled)")
    g.add_argument("--labeled", type=int, metavar="N", help="the first N labeled cases of the plan's split")
    g.add_argument("--labeled-list", metavar="FILE", help="case IDs (text or JSON; with --labeled-key for an object)")
    g.add_argument("--labeled-key", metavar="KEY")
    if not selftrain:
        g.add_argument("--pseudo-labels", metavar="PL_DIR", help="a `semiseg pseudolabel` folder: its selected scans "
                       "train as labeled, the other unlabeled scans stay unlabeled input")
    g.add_argument("--select", default="top:0.5" if selftrain else "all", metavar="RULE",
                   help="which pseudo-labels: threshold:T (score >= T), top:FRACTION (the best share) or all "
                        f"(default {'top:0.5' if selftrain else 'all'})")
    g.add_argument("--select-score", default="consensus", metavar="COLUMN",
                   help="scores.csv column to select by (default consensus; entropy: lower is better)")
    g.add_argument("--pseudo-share", type=float, metavar="F", help="share of labeled patches drawn from "
                   "pseudo-labeled scans (default: in proportion to their number; fit's student uses 0.5)")
    g.add_argument("--pseudo-classes", type=int, nargs="+", metavar="C", help="classes trusted in the "
                   "pseudo-labels; the others are merged with background on pseudo-labeled patches, neither taught "
                   "nor suppressed (default: all; fit sets the classes its teacher learned)")
    g = p.add_argument_group("budget and schedule")
    g.add_argument("--minutes", type=float, help="wall-clock budget in minutes (the learning-rate schedule fits "
                   "it, so a method with slower steps decays its rate faster per step)")
    g.add_argument("--iterations", type=int, help="iteration budget (the schedule fits it; with --minutes, whichever "
                   "ends first); to compare methods step for step, give them the same --iterations")
    g.add_argument("--schedule-span", type=float, nargs=2, metavar=("A", "B"),
                   help="the budget runs the part A..B (0 <= A < B <= 1) of one longer learning-rate schedule, e.g. "
                   "--init RUN --schedule-span 0.6 1 continues a run that ran 0 0.6 (default 0 1: a fresh schedule)")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd",
                   help="sgd: Nesterov, poly decay (nnU-Net); adamw: cosine")
    g.add_argument("--lr", type=float, help="initial learning rate (default 1e-2 sgd, 1e-3 adamw)")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--loss", choices=["dice_ce", "dice", "ce"], default="dice_ce")
    g.add_argument("--fg-oversample", type=float, default=0.33, help="share of patches centred on foreground")
    g.add_argument("--no-augment", action="store_true", help="plain crops, no augmentation")
    g.add_argument("--elastic", type=float, metavar="P", help="probability of elastic deformation (default 0)")
    g.add_argument("--val-every", type=int, help="iterations between validations (default: 10 per budget; 0 = no "
                   "validation, best.pt = final)")
    g.add_argument("--val-minutes", type=float, metavar="M", help="with --minutes: minutes of training between "
                   "validations (default a tenth of the budget; longer when validating is slow, so that it takes "
                   "at most a tenth of the time)")
    g.add_argument("--val-step", type=float, default=0.5, help="sliding-window step for validation (default 0.5)")
    g.add_argument("--log-every", type=int, default=10, help="iterations per metrics.csv row (default 10)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--amp", choices=AMP_CHOICES, default="auto",
                   help="mixed precision in training and validation (auto: fp16 on CUDA; on a CPU, bf16 only where "
                        "a probe of the run's first step finds it faster than float32 (emulated bf16 is 2-3x "
                        "slower), recorded in RUN/precision.json; off: float32; bf16: forced)")
    g.add_argument("--device", help="torch device (default cuda when available)")


def register(add) -> None:
    loader_help = "data-loading processes (default: 1 on up to 4 cores, else cores - 2; 0 = in the training process)"
    p = add("train", "Train a model on a preprocessed work folder (supervised or semi-supervised).", cmd_train,
            loader_help)
    add_train_args(p)
    p.add_argument("--resume", action="store_true", help="continue the run in RUN from checkpoints/latest.pt")
    p.add_argument("--no-report", action="store_true", help="do not write report.html at the end (`semiseg report`)")

    p = add("selftrain", "Self-training (Pham et al. 2022): train, pseudo-label the unlabeled scans, keep those "
            "the ensemble agrees on, retrain; round by round, resumable.", cmd_selftrain,
            "data-loading processes of each training (as for train)")
    add_train_args(p, selftrain=True)
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
                        "teacher that continues its learning-rate schedule and must overtake the teacher by 35% "
                        "of its time, else the teacher continues for the rest); offline (the student restarts the "
                        "schedule); bcp, mean-teacher, cps: supervised "
                        "pre-training then that method; supervised (the labels alone, the baseline; "
                        "docs/benchmarks.md compares them)")
    p.add_argument("--teacher-share", type=float, metavar="F", help="share of the training budget for the first "
                   "training stage (the teacher, or the pre-training; default the recipe's: offline 0.4, "
                   "offline-continued 0.6, bcp/mean-teacher/cps 0.5)")
    p.add_argument("--config", default="auto", choices=["auto", "3d", "2d"],
                   help="plans.json configuration; auto (default): 2d for thick-slice scans (target spacing's "
                        "coarsest axis > 3x its finest), else 3d")
    p.add_argument("--student", action="store_true", help="plan the small fast student plan (coarser spacing, "
                   "narrower network; Chen et al. 2023) instead of nnU-Net's")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--labeled", type=int, metavar="N", help="the first N labeled cases of the plan's split (others "
                   "become unlabeled; default all)")
    g.add_argument("--labeled-list", metavar="FILE", help="labeled case IDs (text or JSON; --labeled-key for an "
                   "object)")
    p.add_argument("--labeled-key", metavar="KEY")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--amp", choices=AMP_CHOICES, help="mixed precision of every stage (default auto: measured "
                   "per stage, as train --amp)")
    p.add_argument("--device", help="torch device (default cuda when available)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="of every training stage (default sgd: Nesterov, "
                   "poly decay, nnU-Net; adamw, cosine, learns rare classes sooner in short budgets)")
    p.add_argument("--lr", type=float, help="initial learning rate of every training stage (default 1e-2 sgd, "
                   "1e-3 adamw)")
    p.add_argument("--network", help="registered network of every training stage (default dynunet)")
    add_shape_args(p)

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
