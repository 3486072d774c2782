"""The ``semiseg`` command line: thin wrappers around the Python API.

Exit codes: 0 success; 1 ``check`` found errors in the dataset; 2 bad input or options (the
message names the file and the problem); 130 interrupted.
"""
from __future__ import annotations

import argparse
import os
import sys

from . import __version__
from .utils import SemisegError


def _add_split_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("labeled cases (default: every training case with a label file)")
    g.add_argument("--labeled", type=int, metavar="N",
                   help="the first N labeled cases of the split's training list (splits.json order; "
                        "sorted IDs without splits.json)")
    g.add_argument("--labeled-list", metavar="FILE",
                   help="case IDs: text (one per line), JSON list, or JSON object of lists "
                        "(e.g. ssl_labeled_subsets.json, with --labeled-key)")
    g.add_argument("--labeled-key", metavar="KEY", help="which list of a JSON object (a unique prefix is enough)")
    g.add_argument("--fold", type=int, default=0, help="fold of splits.json (default 0)")


def _progress(a) -> bool:
    return not getattr(a, "quiet", False)


def cmd_check(a) -> int:
    from .checking import check_dataset

    rep = check_dataset(a.dataset, workers=a.workers, progress=_progress(a), tolerance=a.tolerance)
    for p in rep.problems:
        print(p)
    print(rep.summary())
    if a.json:
        from .utils import write_json

        write_json(rep.to_dict(), a.json)
    return 0 if rep.ok else 1


def cmd_plan(a) -> int:
    from .planning import plan

    p = plan(a.dataset, a.out, labeled=a.labeled, labeled_list=a.labeled_list, labeled_key=a.labeled_key,
             fold=a.fold, memory_gb=a.memory_gb, seconds_per_iteration=a.seconds_per_iteration or None,
             gpu_memory_gb=a.gpu_memory_gb, base_features=a.base_features, ct_stats=a.ct_stats,
             ct_windows=a.ct_windows, forced_spacing=a.forced_spacing, forced_spacing_rule=a.forced_spacing_rule,
             workers=a.workers, progress=_progress(a), student=a.student, spacing_factor=a.spacing_factor)
    s = p["split"]
    print(f"{p['dataset']}: {len(s['labeled'])} labeled, {len(s['unlabeled'])} unlabeled, {len(s['val'])} "
          f"validation cases ({s['how']})")
    print(f"target spacing (z, y, x) {[round(x, 4) for x in p['target_spacing']]} mm: {p['target_spacing_why']}")
    for n in p["normalization"]:
        print(f"channel {n['channel']}: {n['scheme']} - {n['why']}")
    for name, c in p["configurations"].items():
        g = c["gpu"]
        print(f"{name}: patch {c['patch_size']} batch {c['batch_size']} stages {c['n_stages']} "
              f"(~{c['estimated_memory_gb']} GB, ~{c['estimated_seconds_per_iteration']} s/it on this CPU); "
              f"on a {p['budget']['gpu']['memory_gb']:g} GB GPU: patch {g['patch_size']} batch {g['batch_size']} "
              f"stages {g['n_stages']}")
        print(f"    why: {c['why']}")
    print(f"wrote {a.out}/plans.json")
    return 0


def cmd_preprocess(a) -> int:
    from .preprocessing import preprocess

    c = preprocess(a.work, workers=a.workers, progress=_progress(a))
    print(f"preprocessed {c['done']} cases, skipped {c['skipped']} already done -> {a.work}/preprocessed")
    return 0


def cmd_evaluate(a) -> int:
    from .metrics import evaluate, format_table

    s = evaluate(a.pred, a.gt, dataset_json=a.dataset_json, tolerance=a.tolerance, out=a.out,
                 missing_as_empty=a.missing_as_empty, only_predicted=a.only_predicted, workers=a.workers,
                 progress=_progress(a))
    print(format_table(s))
    print(f"{s['n_cases']} cases; per-case metrics.csv and summary.json in {a.out or a.pred}")
    return 0


def _train_config(a):
    from .config import TrainConfig
    from .dataset import read_case_list
    from .planning import load_plans
    from .utils import read_json

    labeled = None
    if a.labeled_list:
        labeled = read_case_list(a.labeled_list, a.labeled_key)
    elif a.labeled is not None:
        load_plans(a.work)
        split = read_json(f"{a.work}/split.json", "split.json")
        if not 0 < a.labeled <= len(split["labeled"]):
            raise SemisegError(f"--labeled {a.labeled}: the plan has {len(split['labeled'])} labeled cases")
        labeled = split["labeled"][:a.labeled]
    opts = {}
    if a.base_features:
        opts["base_features"] = a.base_features
    if a.depth:
        opts["depth"] = a.depth
    if a.network_options:
        opts.update(_json_option(a.network_options, "--network-options"))
    mopts = {k: v for k, v in (("partner", a.partner), ("cps_loss", a.cps_loss), ("lambda_max", a.cps_lambda),
                               ("ramp", a.cps_ramp), ("wait", a.cps_wait), ("memory", a.cps_memory), ("gate", a.cps_gate)) if v is not None}
    if a.partner_options:
        mopts["partner_options"] = _json_option(a.partner_options, "--partner-options")
    if a.cps_unlabeled_only:
        mopts["on_labeled"] = False
    if a.method_options:
        mopts.update(_json_option(a.method_options, "--method-options"))
    aug = {"enabled": not a.no_augment}
    if a.elastic is not None:
        aug["p_elastic"] = a.elastic
    cfg = TrainConfig(configuration=a.config, method=a.method, method_options=mopts, network=a.network,
                      network_options=opts, patch_size=a.patch_size, slice_position=a.slice_position, batch_size=a.batch_size,
                      unlabeled_batch=a.unlabeled_batch, labeled=labeled, pseudo_labels=getattr(a, "pseudo_labels", None),
                      select="all" if a.cmd == "selftrain" else a.select, select_score=a.select_score,
                      minutes=a.minutes,
                      iterations=a.iterations, optimizer=a.optimizer, lr=a.lr, weight_decay=a.weight_decay,
                      loss=a.loss, fg_oversample=a.fg_oversample, aug=aug, val_every=a.val_every,
                      val_step=a.val_step, log_every=a.log_every, seed=a.seed, workers=a.workers, amp=a.amp, device=a.device)
    from .methods import create_method

    create_method(cfg.method, cfg)  # refuses unknown or misplaced method options before anything is read
    return cfg


def _add_train_args(p: argparse.ArgumentParser, selftrain: bool = False) -> None:
    """The training options, shared by train and selftrain (which chooses its pseudo-labels itself)."""
    p.add_argument("work", metavar="WORK")
    if selftrain:
        p.add_argument("-o", "--out", required=True, metavar="OUT",
                       help="self-training folder (created; give it again to continue)")
    else:
        p.add_argument("-o", "--out", required=True, metavar="RUN", help="run folder (created)")
    p.add_argument("--config", default="3d", help="plans.json configuration: 3d or 2d (default 3d)")
    p.add_argument("--method", default="supervised", choices=METHODS,
                   help="supervised (default), cps (cross pseudo supervision of two networks) or stcn "
                        "(the mask-propagation network, with --config 2d)")
    p.add_argument("--method-options", metavar="JSON",
                   help="the method's own options, e.g. '{\"crop\": 96}' for stcn (see its docs)")
    p.add_argument("--network", default="dynunet",
                   help="registered network: " + ", ".join(NETWORKS) + " (default dynunet, nnU-Net's U-Net; "
                        "2d only: deeplabv3plus, transunet)")
    p.add_argument("--base-features", type=int, help="network width (first-stage features)")
    p.add_argument("--depth", type=int, help="network depth (stages)")
    p.add_argument("--network-options", metavar="JSON", help="other network options, e.g. '{\"hidden_size\": 384}'")
    p.add_argument("--patch-size", type=int, nargs="+", help="override the plan's patch (z y x, or y x for 2d)")
    p.add_argument("--slice-position", action="store_true",
                   help="2d: give the networks each slice's position PE(k) = k / T (seed 000 eq. 1); deeplabv3plus "
                        "and transunet embed it before their head, other networks take it as one more input channel")
    p.add_argument("--batch-size", type=int, help="override the plan's labeled batch size (global, over all processes)")
    p.add_argument("--unlabeled-batch", type=int,
                   help="unlabeled patches per global batch (default: the method's; cps: as many as labeled)")
    g = p.add_argument_group("cross pseudo supervision (--method cps)")
    g.add_argument("--partner", metavar="NET", help="net2's network (default: the same as --network, other weights); "
                   "e.g. unetr for seed 004's CNN + Transformer pair")
    g.add_argument("--partner-options", metavar="JSON", help="net2's network options (JSON object)")
    g.add_argument("--cps-loss", choices=["dice_ce", "dice"], help="loss on pseudo-labels: dice_ce (seed 003, "
                   "default) or dice (seed 004)")
    g.add_argument("--cps-lambda", type=float, help="weight of the CPS loss after the ramp (default 0.5)")
    g.add_argument("--cps-ramp", type=float, help="share of the budget over which lambda rises from 0 (default 0.2)")
    g.add_argument("--cps-wait", type=float, help="share of the budget trained supervised only first (default 0)")
    g.add_argument("--cps-gate", type=float, metavar="DICE",
                   help="start the lambda ramp only once both networks' running Dice against the labels on the "
                        "labeled patches reaches DICE (e.g. 0.5): no cross supervision from pseudo-labels that "
                        "are still all background; 0 = off (default)")
    g.add_argument("--cps-memory", choices=["joint", "sequential"],
                   help="joint (default, fastest) or sequential: one network's graph at a time, less memory, "
                        "one extra forward pass")
    g.add_argument("--cps-unlabeled-only", action="store_true",
                   help="cross-supervise on unlabeled patches only (both seeds also do it on labeled ones)")
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
    g = p.add_argument_group("budget and schedule")
    g.add_argument("--minutes", type=float, help="wall-clock budget in minutes (the learning-rate schedule fits "
                   "it, so a method with slower steps decays its rate faster per step)")
    g.add_argument("--iterations", type=int, help="iteration budget (the schedule fits it; with --minutes, whichever "
                   "ends first); to compare methods step for step, give them the same --iterations")
    g.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd",
                   help="sgd: Nesterov, poly decay (nnU-Net); adamw: cosine")
    g.add_argument("--lr", type=float, help="initial learning rate (default 1e-2 sgd, 1e-3 adamw)")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--loss", choices=["dice_ce", "dice", "ce"], default="dice_ce")
    g.add_argument("--fg-oversample", type=float, default=0.33, help="share of patches centred on foreground")
    g.add_argument("--no-augment", action="store_true", help="plain crops, no augmentation")
    g.add_argument("--elastic", type=float, metavar="P", help="probability of elastic deformation (default 0)")
    g.add_argument("--val-every", type=int, help="iterations between validations (default: 10 per budget; 0 = no validation, best.pt = final)")
    g.add_argument("--val-step", type=float, default=0.5, help="sliding-window step for validation (default 0.5)")
    g.add_argument("--log-every", type=int, default=10, help="iterations per metrics.csv row (default 10)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--amp", choices=["auto", "off", "bf16"], default="auto", help="mixed precision (auto: fp16 on CUDA, bf16 on CPUs with native bf16)")
    g.add_argument("--device", help="torch device (default cuda when available)")


def _json_option(text: str, flag: str) -> dict:
    import json

    try:
        v = json.loads(text)
    except json.JSONDecodeError as e:
        raise SemisegError(f"{flag}: not JSON ({e}); e.g. '{{\"hidden_size\": 384}}'") from None
    if not isinstance(v, dict):
        raise SemisegError(f"{flag}: needs a JSON object of options, not {text!r}")
    return v


def cmd_train(a) -> int:
    from .engine import train

    if a.resume:
        from .config import TrainConfig
        from .utils import read_json

        cfg = TrainConfig.from_dict(read_json(f"{a.out}/config.json", "run configuration (nothing to resume?)"))
    else:
        cfg = _train_config(a)
    s = train(a.work, a.out, cfg, resume=a.resume, progress=_progress(a))
    if s and int(os.environ.get("RANK", "0")) == 0:
        print(f"{s['iterations']} iterations in {s['elapsed_s']:.0f} s; best validation Dice {s['best_val_dice']:.4f}; "
              f"run in {a.out}")
    return 0


def cmd_selftrain(a) -> int:
    from .selftrain import selftrain

    cfg = None
    if not os.path.exists(os.path.join(a.out, "selftrain.json")):
        cfg = _train_config(a)
    rows = selftrain(a.work, a.out, cfg, rounds=a.rounds, select=a.select, select_score=a.select_score,
                     init_run=a.init_run, tta_members=a.tta_members, pl_step=a.pl_step, progress=_progress(a))
    for r in rows:
        print(f"round {r['round']}: {r['selected']} pseudo-labeled scans ({r['new']} new); best validation Dice "
              f"{r['best_val_dice']:.4f}" + (" (stopped: no new scan)" if r["stopped"] else ""))
    print(f"report in {a.out}/report.csv and report.png")
    return 0


def cmd_predict(a) -> int:
    from .infer import predict_folder

    r = predict_folder(a.runs, a.input, a.out, checkpoint=a.checkpoint, nets=a.nets, step=a.step, tta=a.tta,
                       forced_spacing=a.forced_spacing, save_probabilities=a.save_probabilities,
                       largest_component=a.largest_component, overwrite=a.overwrite, profile=a.profile,
                       device=a.device, progress=_progress(a))
    print(f"predicted {r['done']} cases, skipped {r['skipped']} already done -> {r['out']}")
    if a.profile and r["rows"]:
        import statistics

        secs = [x["seconds"] for x in r["rows"]]
        print(f"median {statistics.median(secs):.2f} s per case, peak RSS {max(x['peak_rss_mb'] for x in r['rows']):.0f} MB "
              f"-> {a.profile}")
    return 0


def cmd_pseudolabel(a) -> int:
    from .pseudolabel import pseudolabel_folder

    r = pseudolabel_folder(a.runs, a.input, a.out, checkpoint=a.checkpoint, nets=a.nets, step=a.step,
                           tta_members=a.tta_members, num_parts=a.num_parts, part_id=a.part_id,
                           overwrite=a.overwrite, device=a.device, progress=_progress(a))
    print(f"part {r['part'] + 1}/{r['parts']}: pseudo-labeled {r['done']} scans with {r['members']} ensemble "
          f"members, skipped {r['skipped']} already done -> {a.out}; scores in {r['scores']}")
    return 0


def cmd_propagate(a) -> int:
    from .propagate import propagate_file

    run, _, ck = a.run.partition("@")
    slices = None
    if a.slices:
        try:
            slices = [int(v) for v in a.slices.split(",") if v.strip()]
        except ValueError:
            raise SemisegError(f"--slices {a.slices!r}: give slice indices separated by commas, e.g. 12,30,48") from None
    if a.reference and (a.slices or a.axis is not None):
        raise SemisegError("--slices and --axis are for --labels (interactive propagation)")
    r = propagate_file(run, a.image, a.out, a.labels, slices, a.axis, ck or "best", a.recent, a.reference, a.k,
                       a.ref_rule, a.ref_count, a.device)
    src = (f"slices {r['slices']}" if a.labels else
           f"the Reference module's slices {r['references']} (of {len(r['sampled'])} sampled)")
    print(f"propagated classes {r['classes']} from {src} (axis {r['axis']}) in {r['seconds']:.1f} s"
          + (f"; ignored slices outside the image's extent: {r['ignored_slices']}" if r.get("ignored_slices") else "")
          + f" -> {r['out']}")
    return 0


def cmd_demo(a) -> int:
    from .synthetic import run_demo

    run_demo(a.out, workers=a.workers, progress=_progress(a), train_iterations=a.iterations, demo_labeled=a.labeled)
    return 0


def _add_model_args(p: argparse.ArgumentParser, runs_help: str, input_help: str) -> None:
    """Arguments shared by the commands that run trained models (predict, pseudolabel)."""
    p.add_argument("runs", nargs="+", metavar="RUN", help=runs_help)
    p.add_argument("-i", "--input", required=True, metavar="IN_DIR", help=input_help)
    p.add_argument("-o", "--out", required=True, metavar="OUT_DIR")
    p.add_argument("--checkpoint", default="best", help="best (default), final, latest, or a .pt file")
    p.add_argument("--nets", nargs="+", help="only these networks of each run (e.g. one net of a CPS pair)")
    p.add_argument("--step", type=float, default=None,
                   help="sliding-window step as a fraction of the patch (default: the run's plan, 0.5; a student 0.8)")
    p.add_argument("--device", help="torch device (default cuda when available)")


# listed here so that `semiseg --help` does not import torch; tests/test_cli.py checks them against the registries
METHODS = ["supervised", "cps", "stcn"]
NETWORKS = ["dynunet", "unet", "unetr", "swinunetr", "vnet", "deeplabv3plus", "transunet", "stcn"]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="semiseg", description="Semi-supervised 3D medical image segmentation "
                                 "on nnU-Net v2 raw datasets.")
    ap.add_argument("--version", action="version", version=f"semiseg {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def add(name, help_, fn, workers_help="worker processes (default: all cores)"):
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(fn=fn)
        p.add_argument("--workers", type=int, default=None, help=workers_help)
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        return p

    p = add("check", "Check an nnU-Net v2 raw dataset; exit code 1 if it has errors.", cmd_check)
    p.add_argument("dataset")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="geometry tolerance: relative for spacing, x largest spacing for origin (default 1e-4)")

    p = add("plan", "Fingerprint a dataset and write WORK/plans.json (2D and 3D configurations).", cmd_plan)
    p.add_argument("dataset")
    p.add_argument("-o", "--out", required=True, metavar="WORK", help="work folder (created)")
    _add_split_args(p)
    p.add_argument("--memory-gb", type=float, default=8.0, help="training memory budget on this machine (default 8)")
    p.add_argument("--seconds-per-iteration", type=float, default=2.0,
                   help="compute budget per training iteration on the CPU (default 2; 0 = none)")
    p.add_argument("--gpu-memory-gb", type=float, default=10.0, help="GPU memory for the GPU variant (default 10)")
    p.add_argument("--base-features", type=int, default=None, help="U-Net base width (default 16 CPU, 32 GPU)")
    p.add_argument("--ct-stats", choices=["foreground", "all"], default=None,
                   help="CT normalisation statistics: labeled foreground (nnU-Net) or all voxels of all "
                        "scans (seed 003); default foreground, or all when nothing is labeled")
    p.add_argument("--ct-windows", metavar="SPEC",
                   help="CT windowing into channels: 'abdomen,chest,bone' or 'name:level:width,...'")
    p.add_argument("--forced-spacing", type=float, nargs=3, metavar=("Z", "Y", "X"),
                   help="forced inference spacing in mm (0 keeps the image's own on that axis; seed 003)")
    p.add_argument("--forced-spacing-rule", choices=["fixed", "slices"], default="fixed",
                   help="'slices': seed 003's slice-count rule for the z spacing")
    p.add_argument("--student", action="store_true",
                   help="plan seed 002's small fast student: 1.5x coarser spacing, half the widths (8 base "
                        "features on CPU, 16 on GPU), at most 256, inference step 0.8 and no TTA")
    p.add_argument("--spacing-factor", type=float, metavar="F",
                   help="target spacing F times coarser than nnU-Net's rule (default 1, student 1.5)")

    p = add("preprocess", "Crop, normalise, resample and cache every case of WORK (resumable).", cmd_preprocess)
    p.add_argument("work")

    p = add("evaluate", "DSC, NSD, HD95 and ASD per case and class; metrics.csv + summary.json.", cmd_evaluate)
    p.add_argument("pred", metavar="PRED_DIR")
    p.add_argument("gt", metavar="GT_DIR")
    p.add_argument("--dataset-json", help="class/region names (default: GT_DIR/../dataset.json if present)")
    p.add_argument("--tolerance", default="2", help="NSD tolerance in mm: '2' or 'liver=5,spleen=2' (default 2)")
    p.add_argument("-o", "--out", help="where to write metrics.csv and summary.json (default PRED_DIR)")
    p.add_argument("--missing-as-empty", action="store_true", help="score missing predictions as empty masks")
    p.add_argument("--only-predicted", action="store_true", help="score only references that have a prediction")

    p = add("train", "Train a model on a preprocessed work folder (supervised or semi-supervised).", cmd_train,
            "data-loading processes (default: 1 on up to 4 cores, else cores - 2; 0 = in the training process)")
    _add_train_args(p)
    p.add_argument("--resume", action="store_true", help="continue the run in RUN from checkpoints/latest.pt")

    p = add("selftrain", "Self-training (seed 000): train, pseudo-label the unlabeled scans, keep those the "
            "ensemble agrees on, retrain; round by round, resumable.", cmd_selftrain,
            "data-loading processes of each training (as for train)")
    _add_train_args(p, selftrain=True)
    g = p.add_argument_group("self-training rounds")
    g.add_argument("--rounds", type=int, default=2, help="rounds after round 0 (default 2); stops early when a "
                   "round adds no scan")
    g.add_argument("--init-run", metavar="RUN", help="a finished run to use as round 0 instead of training one")
    g.add_argument("--tta-members", action="store_true", default=None,
                   help="mirrorings as ensemble members (default: only when the previous round has one network)")
    g.add_argument("--pl-step", type=float, default=0.5, help="sliding-window step of the pseudo-labelling")

    p = add("predict", "Predict images with one or more trained runs (ensemble) into OUT_DIR.", cmd_predict,
            "unused (prediction runs in one process; torch uses every core)")
    _add_model_args(p, "run folder(s); several = an ensemble; RUN@final picks a checkpoint per run",
                    "images, nnU-Net naming CASE_0000.ext")
    p.add_argument("--tta", action="store_true", help="mirroring test-time augmentation (8x in 3D)")
    p.add_argument("--forced-spacing", type=float, nargs=3, metavar=("Z", "Y", "X"),
                   help="resample inputs to this spacing before prediction (default: the plan's)")
    p.add_argument("--save-probabilities", action="store_true", help="also write CASE.npz with the probabilities")
    p.add_argument("--largest-component", action="store_true", help="keep each class's largest component")
    p.add_argument("--overwrite", action="store_true", help="predict cases that already have an output")
    p.add_argument("--profile", metavar="CSV", help="write seconds, peak RSS (and GPU) memory per case")

    p = add("pseudolabel", "Pseudo-label scans with an ensemble and score each by the members' consensus "
            "(seed 000 eq. 2) into OUT_DIR/scores.csv (resumable, shardable).", cmd_pseudolabel,
            "unused (one process per shard; torch uses every core)")
    _add_model_args(p, "run folder(s), RUN@CHECKPOINT allowed; every network of every run is a member",
                    "unlabeled images, CASE_0000.ext")
    p.add_argument("--tta-members", action="store_true", help="each mirroring of each network is a member")
    p.add_argument("--num-parts", type=int, help="split the scans into this many shards (default: torchrun's WORLD_SIZE or 1)")
    p.add_argument("--part-id", type=int, help="this process's shard (default: torchrun's RANK or 0)")
    p.add_argument("--overwrite", action="store_true", help="redo scans that already have a pseudo-label")

    p = add("propagate", "Fill a volume from a few labeled slices with a mask-propagation run (seeds 000/001): "
            "slices a person annotated (--labels) or that a Reference module segmented (--reference); every "
            "class is carried through the volume, both ways.",
            cmd_propagate, "unused (torch uses every core)")
    p.add_argument("run", metavar="RUN", help="a `semiseg train --method stcn --config 2d` run (RUN@CHECKPOINT allowed)")
    p.add_argument("-i", "--image", required=True, nargs="+", metavar="FILE",
                   help="the image: one file per channel (CASE_0000.ext ...)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--labels", metavar="FILE",
                   help="interactive: a label map in the image's geometry in which some slices are annotated (any "
                        "classes); add or correct slices and run again to re-propagate")
    g.add_argument("--reference", nargs="+", metavar="RUN",
                   help="automatic: the Reference module, 2D run(s) on the same work folder (e.g. a 2D CPS pair; "
                        "RUN@CHECKPOINT allowed) that segment --k sampled slices; the chosen ones are propagated")
    p.add_argument("--k", type=int, default=9, help="automatic: slices sampled uniformly for the Reference module (default 9)")
    p.add_argument("--ref-rule", choices=["largest", "per_class"], default="largest",
                   help="automatic: which masks become references: the --ref-count with the largest organ area "
                        "(default) or, per class, the slice where it is largest")
    p.add_argument("--ref-count", type=int, default=3, help="automatic: references for --ref-rule largest (default 3)")
    p.add_argument("--slices", metavar="K,K,...", help="the annotated slice indices (default: every slice holding "
                   "a label; list a slice to say it is annotated as empty)")
    p.add_argument("--axis", type=int, choices=[0, 1, 2], help="slice axis of the arrays (z=0, y=1, x=2; default: "
                   "the run's, the plan's lowest-resolution axis)")
    p.add_argument("-o", "--out", required=True, metavar="FILE", help="the propagated label map (written atomically)")
    p.add_argument("--recent", type=int, default=3, help="predicted slices kept in memory beside the annotated ones "
                   "(default 3)")
    p.add_argument("--device", help="torch device (default cuda when available)")

    p = add("demo", "Run semiseg end to end on a generated synthetic dataset.", cmd_demo)
    p.add_argument("-o", "--out", default="semiseg_demo", help="output folder (default ./semiseg_demo)")
    p.add_argument("--iterations", type=int, default=1000, help="training iterations of each model (default 1000)")
    p.add_argument("--labeled", type=int, default=2, help="labeled cases to train on; the rest are unlabeled (default 2)")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    try:
        return a.fn(a)
    except SemisegError as e:
        print(f"semiseg {a.cmd}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"semiseg {a.cmd}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

