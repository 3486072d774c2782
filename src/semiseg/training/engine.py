"""The training engine: one loop for every method.

It owns the loop, the budget and the schedule fitted to it (:mod:`.budget`), optimizers (one per
trainable network), mixed precision, DistributedDataParallel under ``torchrun``
(:mod:`.distributed`), validation with full sliding-window prediction, checkpoints and exact resume
(:mod:`.state`), logging (:mod:`.runlog`). Methods (:mod:`semiseg.methods`) name their networks and
return their losses; the engine calls their hooks directly.

Run folder: ``config.json`` (resolved), ``plans.json`` (copy), ``split.json`` (the cases used),
``networks.json`` (what inference needs), ``checkpoints/{latest,best,final}.pt``, ``log.txt``,
``metrics.csv``, ``progress.png``, ``summary.json``.

Exact resume: a batch is a pure function of (seed, iteration, rank) (see :mod:`.sampling`), the
checkpoint holds networks, optimizers, scaler, torch RNG, iteration and elapsed time, and the
learning rate is a function of the budget's progress; so a run killed (even with ``kill -9``)
and resumed from ``latest.pt`` takes the same steps as one that was never interrupted. With a
wall-clock budget the time lost after the last checkpoint is not counted again.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..evaluation.metrics import dice_per_class, mean_dice
from ..inference import postprocessing
from ..inference.runs import write_record
from ..inference.sliding_window import keep_largest_component, sliding_window_probs
from ..methods import DataContext, Method, StepContext, ValidationContext, create_method
from ..nets import create_network
from ..planning import Plans, load_plans, split_cases
from ..preprocessing.cache import load_case
from ..pseudolabels.selection import cache_pseudo_labels, read_scores, select_cases
from ..utils import SemisegError, class_argmax, read_json, write_json
from ..utils.device import RESOLVED, autocast, default_device, static_amp
from ..utils.profile import ResourceSampler
from . import distributed, precision
from .budget import RunBudget, learning_rate, make_optimizer
from .config import TrainConfig, input_channels
from .runlog import RunLog
from .sampling import PatchBatches, batch_loader
from .state import TrainState, restore_state, save_state
from .warmstart import warm_start


@dataclass
class Setup:
    """Everything about a run that is fixed once it starts."""
    work: Path
    run: Path
    cfg: TrainConfig
    plans: Plans
    net_cfg: dict
    labeled: list
    unlabeled: list
    val: list
    rank: int = 0
    world: int = 1
    local: int = 0
    device: torch.device = torch.device("cpu")
    pseudo: list = field(default_factory=list)
    pseudo_scores: dict = field(default_factory=dict)
    label_dirs: dict = field(default_factory=dict)
    resume: bool = False
    warm: dict = field(default_factory=dict)  # network -> the --init run's network it started from
    precision: dict = field(default_factory=dict)  # the resolved precision (RUN/precision.json)

    @property
    def amp(self) -> str:
        """The precision training and validation run in (``off``, ``bf16``, ``fp16``)."""
        return self.precision["amp"]

    @property
    def checkpoints(self) -> Path:
        return self.run / "checkpoints"


@dataclass
class Parts:
    """The run's working parts: method, networks (and the DDP-wrapped trainable ones), optimizers,
    AMP scaler, batches and the loader over them."""
    method: Method
    nets: dict
    train_nets: dict
    optims: dict
    scaler: torch.amp.GradScaler
    data: object
    batch: int
    ubatch: int
    workers: int
    notes: list


def train(work: str | Path, out: str | Path, cfg: TrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train ``cfg.method`` on the cached cases of ``work`` into the run folder ``out``."""
    s = prepare(Path(work), Path(out), cfg, resume, progress)
    p = build(s)
    if s.rank == 0 and not resume:  # only once networks and data are known good: no half-made run folders
        write_run_folder(s, p.method)
    distributed.barrier(s.world)
    st = restore_state(s.checkpoints / "latest.pt", p.nets, p.optims, p.scaler, p.method) if resume else TrainState()
    budget = RunBudget(s.cfg.iterations, s.cfg.minutes, s.cfg.val_every, s.cfg.val_minutes)
    val = s.val if budget.validates else []
    loader = batch_loader(p.data, st.iteration, p.workers)
    bar = tqdm(total=s.cfg.iterations or int(budget.seconds), initial=st.iteration if s.cfg.iterations else
               int(st.elapsed), disable=not progress or s.rank > 0, unit="it" if s.cfg.iterations else "s",
               dynamic_ncols=True)
    log = RunLog(s.run, s.rank, s.plans.class_names(), bar if progress else None)
    start_log(s, p, st, log, resume, val)
    sampler = ResourceSampler() if s.rank == 0 else None
    if sampler:
        sampler.__enter__()
    t_start = time.time() - st.elapsed
    choose_precision(s, p, st, log)  # on the run's clock: a probe's seconds count in a time budget
    last_ck, last_row = time.time(), (time.time(), st.iteration)
    # a run killed after its last step (or after giving up) but before summary.json resumes straight to the end
    gave_up = resume and gives_up(s.cfg, st, budget)
    done = budget.done(st.iteration, st.elapsed) or gave_up
    try:
        while not done:
            lr = step(s, p, st, next(loader), budget)
            st.elapsed = distributed.broadcast_floats([time.time() - t_start], s.world, s.device)[0]
            done = budget.done(st.iteration, st.elapsed)
            bar.update(1 if s.cfg.iterations else int(st.elapsed) - bar.n)
            do_val = budget.validation_due(st.iteration, st.elapsed, st.last_validation, done and bool(val))
            if st.iteration % s.cfg.log_every == 0 or do_val or done:
                row, last_row = metrics_row(st, lr, last_row), (time.time(), st.iteration)
                if do_val:
                    validate_and_log(s, p, st, budget, val, row, log)
                    st.elapsed = time.time() - t_start
                    st.last_validation = st.elapsed  # the next one counts from the end of this one
                    if not done and gives_up(s.cfg, st, budget):
                        done = gave_up = True
                        log.log(f"giving up at iteration {st.iteration}: best validation Dice {st.best_val_dice:.4f} "
                                f"is below {float(s.cfg.give_up[1]):.4f} past {float(s.cfg.give_up[0]):.0%} of the "
                                "budget (--give-up)")
                log.row(row)
                bar.set_postfix(loss=f"{row['loss']:.3f}", best=f"{st.best_val_dice:.3f}")
                if do_val or time.time() - last_ck > s.cfg.checkpoint_minutes * 60:
                    save(s, p, st, "latest")
                    last_ck = time.time()
                log.plot(force=do_val)
    finally:
        bar.close()
        if sampler:
            sampler.__exit__(None, None, None)
    return finish(s, p, st, log, sampler, val, gave_up)


# --------------------------------------------------------------------------- preparation
def prepare(work: Path, run: Path, cfg: TrainConfig, resume: bool, progress: bool = True) -> Setup:
    """Check the run folder, read plans and split, select and cache pseudo-labels; nothing else written."""
    rank, world, local = distributed.setup()
    plans = load_plans(work)
    if rank == 0:
        if (run / "config.json").exists() and not resume:
            raise SemisegError(f"{run}: already holds a run; use --resume to continue it or choose another -o")
        if resume and not (run / "checkpoints" / "latest.pt").exists():
            raise SemisegError(f"{run}: nothing to resume (no checkpoints/latest.pt)")
        if run.resolve() == work.resolve() or run.resolve() == plans.dataset_path.resolve():
            raise SemisegError(f"{run}: the run folder must not be the work or dataset folder")
    if resume:  # the run's own configuration wins
        cfg = TrainConfig.from_dict(read_json(run / "config.json", "run configuration"))
    s = Setup(work, run, cfg, plans, cfg.resolved_configuration(plans), *split_cases(work, cfg.labeled), rank, world,
              local, resume=resume)
    if cfg.pseudo_labels:
        s.pseudo, s.pseudo_scores = pseudo_selection(cfg, s.unlabeled, run, resume,
                                                      known=s.labeled + s.unlabeled + s.val)
        s.unlabeled = [c for c in s.unlabeled if c not in set(s.pseudo)]
        if rank == 0:
            if not resume:  # left by a start that failed before config.json: maybe other pseudo-labels
                shutil.rmtree(run / "pseudo_labels", ignore_errors=True)
            cache_pseudo_labels(work, cfg.pseudo_labels, s.pseudo, run / "pseudo_labels", plans, progress=progress)
        distributed.barrier(world)
        s.label_dirs = {c: run / "pseudo_labels" for c in s.pseudo}
    s.device = default_device(cfg.device) if (cfg.device or not torch.cuda.is_available()) else \
        torch.device(f"cuda:{local}")
    return s


def best_validation(summary: dict) -> str:
    """How a run's best validation reads in its log and on the command line."""
    if summary.get("best_iteration", -1) < 0:
        return "not validated (--val-every 0 or no validation cases)"
    return f"best validation Dice {summary['best_val_dice']:.4f} at iteration {summary['best_iteration']}"


def pseudo_selection(cfg: TrainConfig, unlabeled: list[str], run: Path, resume: bool,
                     known: list[str]) -> tuple[list[str], dict]:
    """The pseudo-labeled scans this run trains on (among its unlabeled ones) and their scores. A
    resumed run keeps the selection it started with. Scans the work folder does not hold at all
    (``known``: all its cases) are refused: they were never preprocessed, so they could not be
    trained on, and silently leaving them out would hide that; labeled and validation scans are
    left out (a validation scan's pseudo-label would leak into training)."""
    if resume:
        sp = read_json(run / "split.json", "run split")
        if "pseudo" in sp:
            return list(sp["pseudo"]), dict(sp.get("pseudo_scores", {}))
    scores = read_scores(cfg.pseudo_labels, cfg.select_score)
    foreign = sorted(set(scores) - set(known))
    if foreign:
        pl = Path(cfg.pseudo_labels)
        names = [next((str(f) for f in pl.glob(f"{c}.*") if f.is_file()), f"{pl / 'scores.csv'} ({c})")
                 for c in foreign[:3]]
        many = len(foreign) > 1
        raise SemisegError(f"{', '.join(names)}{' and %d more' % (len(foreign) - 3) if len(foreign) > 3 else ''}: "
                           f"{'scans' if many else 'a scan'} the work folder does not hold (not in its split.json, "
                           f"never preprocessed); put {'them' if many else 'it'} "
                           "among the dataset's images and run `semiseg plan` and `preprocess` again, or pseudo-label "
                           "this dataset's unlabeled scans")
    cand = [c for c in unlabeled if c in scores]
    if not cand:
        raise SemisegError(f"{cfg.pseudo_labels}: none of its scored scans is an unlabeled case of this run")
    chosen = select_cases(scores, cfg.select, cfg.select_score, cand)
    return chosen, {c: scores[c] for c in cand}


def build(s: Setup) -> Parts:
    """The method, its networks (seeded; an optimizer for each trainable one) and the batches."""
    cfg = s.cfg
    method = create_method(cfg.method, cfg)
    torch.manual_seed(cfg.seed)
    specs = method.networks()
    n_in, n_cls = input_channels(s.plans, s.net_cfg), s.plans.num_classes
    nets = {k: create_network(v.network, s.net_cfg, n_in, n_cls, **v.options).to(s.device) for k, v in specs.items()}
    if cfg.init and not s.resume:  # on resume the checkpoint brings the weights
        s.warm = warm_start(nets, specs, cfg.init, s.plans)
    method.setup(nets)
    optims = {k: make_optimizer(cfg, nets[k].parameters()) for k, v in specs.items() if v.trainable}
    train_nets = {k: distributed.wrap(n, s.world, s.local, s.device) if k in optims else n for k, n in nets.items()}
    batch = s.net_cfg.batch_size
    ubatch = cfg.unlabeled_batch if cfg.unlabeled_batch is not None else method.unlabeled_batch(batch)
    notes = []
    if ubatch and not s.unlabeled and cfg.unlabeled_batch is None:
        notes.append(f"{cfg.method}: no unlabeled cases in this split, so no unlabeled patches")
        ubatch = 0
    data = method.batches(DataContext(s.work, s.labeled + s.pseudo, s.net_cfg, s.plans, s.rank, s.world,
                                      s.label_dirs))
    if data is not None:  # a method with its own samples (the propagation network's triplets)
        batch, ubatch = data.B, 0
    else:
        data = PatchBatches(s.work, s.labeled + s.pseudo, s.net_cfg, s.plans.target_spacing, batch, cfg.seed,
                            cfg.aug, cfg.fg_oversample, s.unlabeled, ubatch, s.rank, s.world, label_dirs=s.label_dirs,
                            pseudo_share=cfg.pseudo_share)
    ncpu = os.cpu_count() or 1
    workers = cfg.workers if cfg.workers is not None else (1 if ncpu <= 4 else min(8, ncpu - 2))
    scaler = torch.amp.GradScaler("cuda", enabled=static_amp(cfg.amp, s.device) == "fp16")
    return Parts(method, nets, train_nets, optims, scaler, data, batch, ubatch, workers, notes)


def write_run_folder(s: Setup, method: Method) -> None:
    s.checkpoints.mkdir(parents=True, exist_ok=True)
    write_json(s.cfg.to_dict(), s.run / "config.json")
    write_json(s.plans, s.run / "plans.json")
    sp = {"labeled": s.labeled, "unlabeled": s.unlabeled, "val": s.val}
    if s.cfg.pseudo_labels:
        sp.update(pseudo=s.pseudo, pseudo_labels=str(Path(s.cfg.pseudo_labels).resolve()), select=s.cfg.select,
                  select_score=s.cfg.select_score, pseudo_scores=s.pseudo_scores)
    write_json(sp, s.run / "split.json")
    write_record(s.run, s.net_cfg, input_channels(s.plans, s.net_cfg), s.plans.num_classes, method.networks(),
                 method.predict_with())


def start_log(s: Setup, p: Parts, st: TrainState, log: RunLog, resume: bool, val: list) -> None:
    if resume:
        log.reload(st.iteration)
        log.log(f"resumed at iteration {st.iteration} ({st.elapsed:.0f} s of the budget used)")
        return
    cfg = s.cfg
    nets_used = "/".join(dict.fromkeys(v.network for v in p.method.networks().values()))
    log.log(f"train {cfg.method} / {nets_used} ({cfg.configuration}): {len(s.labeled)} labeled"
            + (f" + {len(s.pseudo)} pseudo-labeled ({cfg.select} by {cfg.select_score} of "
               f"{len(s.pseudo_scores)} scored)" if cfg.pseudo_labels else "") + ", "
            f"{len(s.unlabeled)} unlabeled, {len(val)} validation cases; patch "
            f"{getattr(p.data, 'patch', s.net_cfg.patch_size)} batch {p.batch}"
            f"{f' + {p.ubatch} unlabeled' if p.ubatch else ''}; {s.world} process(es) on {s.device}; "
            f"{p.workers} loader worker(s); budget " + (f"{cfg.minutes:g} min" if cfg.minutes else "")
            + (f" {cfg.iterations} it" if cfg.iterations else ""))
    for n in p.notes:
        log.log(n)
    if cfg.method_options:
        log.log(f"method options: {cfg.method_options}")
    if s.warm:
        log.log(f"warm start from {cfg.init}: " + ", ".join(f"{k} <- {v}" for k, v in s.warm.items()))
    log.log("parameters: " + ", ".join(f"{k} {sum(q.numel() for q in v.parameters()) / 1e6:.2f} M"
                                        for k, v in p.nets.items()))


def choose_precision(s: Setup, p: Parts, st: TrainState, log: RunLog) -> None:
    """Resolve ``--amp`` once per run (:mod:`.precision`): kept on resume, else measured by rank 0 on
    the first batch when it must be, shared with every rank, written to ``RUN/precision.json``."""
    def measure():
        batch = p.data[st.iteration]
        batch = {k: (v.to(s.device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        return precision.probe(p.method, p.nets, batch, s.device)

    rec = precision.decide(s.run, s.cfg.amp, s.device, s.resume, measure if s.rank == 0 else
                           lambda: {"amp": "off", "how": "probe (rank 0's)"})
    if s.world > 1 and rec.get("how", "").startswith("probe"):  # every rank runs rank 0's choice
        k = distributed.broadcast_floats([float(RESOLVED.index(rec["amp"]))], s.world, s.device)[0]
        rec["amp"] = RESOLVED[int(k)]
    s.precision = rec
    if s.rank == 0 and not s.resume:
        precision.save(s.run, rec)
        log.log(precision.describe(rec))


# --------------------------------------------------------------------------- one step
def step(s: Setup, p: Parts, st: TrainState, batch: dict, budget: RunBudget) -> float:
    """One optimizer step of every trainable network, then the method's ``after_step``. Returns the
    learning rate used."""
    batch = {k: (v.to(s.device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
    progress = budget.progress(st.iteration, st.elapsed)
    lr = learning_rate(s.cfg, progress)
    for o in p.optims.values():
        for g in o.param_groups:
            g["lr"] = lr
        o.zero_grad(set_to_none=True)
    for n in p.nets.values():
        n.train()

    def backward(part):  # the (summed) loss is checked finite below, before any optimizer step
        p.scaler.scale(part).backward()

    ctx = StepContext(st.iteration, progress, backward, s.device, s.amp, s.rank, s.world)
    with autocast(s.device, s.amp):
        losses = p.method.losses(p.train_nets, batch, ctx)
    loss = losses["loss"]
    if not torch.isfinite(loss):
        raise SemisegError(f"iteration {st.iteration}: the loss is {loss.item()} (diverged); lower --lr or check "
                           "the data")
    if loss.requires_grad:
        backward(loss)
    for k, o in p.optims.items():
        p.scaler.unscale_(o)
        torch.nn.utils.clip_grad_norm_(p.nets[k].parameters(), s.cfg.grad_clip)
        p.scaler.step(o)
    p.scaler.update()
    p.method.after_step(p.nets, ctx)
    st.iteration += 1
    st.record(losses)
    return lr


# --------------------------------------------------------------------------- validation, logging, checkpoints
@torch.no_grad()
def validate(nets: list, work: Path, val_ids: list[str], cfg: dict, n_classes: int, step: float, device,
             amp: str = "auto") -> tuple[float, list[float], dict[str, list[float]]]:
    """Mean foreground Dice over the validation cases (on the preprocessed grid), per class, and per
    class after each postprocessing variant (:data:`.postprocessing.VARIANTS`, the choice)."""
    steps = postprocessing.variant_steps(n_classes)
    per, per_variant = [], {k: [] for k in steps}
    for cid in val_ids:
        data, seg, _props = load_case(work, cid)
        probs = sliding_window_probs(nets, data, cfg, step=step, device=device, amp=amp)
        pred, gt = class_argmax(probs, 0).numpy(), np.asarray(seg)
        per.append(dice_per_class(pred, gt, n_classes))
        for k, variant in steps.items():
            per_variant[k].append(dice_per_class(keep_largest_component(pred, variant), gt, n_classes))
    return (*mean_dice(per), {k: mean_dice(v)[1] for k, v in per_variant.items()})


def metrics_row(st: TrainState, lr: float, last_row: tuple[float, int]) -> dict:
    """A metrics.csv row: the mean of every logged value since the last row."""
    t0, it0 = last_row
    row = {"iteration": st.iteration, "elapsed_s": round(st.elapsed, 2), "lr": lr,
           "it_per_s": (st.iteration - it0) / max(time.time() - t0, 1e-9)}
    row.update({k: (float(np.nanmean(v)) if not np.all(np.isnan(v)) else float("nan")) for k, v in st.window.items()})
    st.window = {}
    return row


def validate_and_log(s: Setup, p: Parts, st: TrainState, budget: RunBudget, val: list, row: dict, log: RunLog) -> None:
    """Validate (rank 0), keep the best checkpoint, log a line; every rank learns the best score."""
    t0 = time.time()
    if s.rank == 0 and val:
        use = [p.nets[k] for k in p.method.predict_with()]
        n_cls = s.plans.num_classes
        r = p.method.validate(use, ValidationContext(s.work, val, s.net_cfg, n_cls, s.device, s.amp, st.iteration))
        d, per, variants = (*r, None) if r is not None else validate(use, s.work, val, s.net_cfg, n_cls,
                                                                    s.cfg.val_step, s.device, s.amp)
        names = s.plans.class_names()
        row["val_dice"] = d
        row.update({f"val_dice_{n}": v for n, v in zip(names, per)})
        if d > st.best_val_dice:
            st.best_val_dice, st.best_iteration = d, st.iteration
            save(s, p, st, "best")
            if variants is not None:
                postprocessing.write_choice(s.run, st.iteration, names, per, variants, len(val))
        extra = "".join(f" {k} {v:.3f}" for k, v in row.items() if k not in ("iteration", "elapsed_s", "lr", "it_per_s",
                        "loss") and not k.startswith(("loss", "val_")) and isinstance(v, float))
        log.log(f"it {st.iteration}: loss {row['loss']:.4f}{extra} val Dice {d:.4f} "
                f"({', '.join(f'{n} {v:.3f}' for n, v in zip(names, per))}) best {st.best_val_dice:.4f} "
                f"@ {st.best_iteration}; {row['it_per_s']:.2f} it/s")
    distributed.barrier(s.world)
    best = distributed.broadcast_floats([st.best_val_dice, st.best_iteration], s.world, torch.device("cpu"))
    st.best_val_dice, st.best_iteration = best[0], int(best[1])
    budget.validated(time.time() - t0)


def save(s: Setup, p: Parts, st: TrainState, kind: str) -> None:
    """``checkpoints/<kind>.pt`` (rank 0); ``latest`` also holds what exact resume needs."""
    if s.rank:
        return
    full = kind == "latest"
    save_state(s.checkpoints / f"{kind}.pt", st, p.nets, p.optims if full else None, p.scaler,
               p.method.state_dict() if full else None)


def gives_up(cfg: TrainConfig, st: TrainState, budget: RunBudget) -> bool:
    """``cfg.give_up = [P, D]``: past P of the budget, the best validation Dice is still below D."""
    if not cfg.give_up or st.best_iteration < 0:
        return False
    share, dice = (float(x) for x in cfg.give_up)
    return budget.progress(st.iteration, st.elapsed) >= share and st.best_val_dice < dice


def finish(s: Setup, p: Parts, st: TrainState, log: RunLog, sampler, val: list, gave_up: bool = False) -> dict:
    """Final checkpoints, the last plot and ``summary.json``."""
    save(s, p, st, "final")
    if not val:
        save(s, p, st, "best")
        log.log("no validation: best.pt is the final network")
    log.plot(force=True)
    res = sampler.result() if sampler else {}
    summary = {"iterations": st.iteration, "elapsed_s": round(st.elapsed, 1), "best_val_dice": st.best_val_dice,
               "best_iteration": st.best_iteration,
               "seconds_per_iteration": round(st.elapsed / max(st.iteration, 1), 3),
               "peak_rss_mb": round(res.get("peak_rss_mb", 0.0)),
               "mean_cpu_util": round(res.get("mean_cpu_util", 0.0), 2),
               "peak_gpu_mb": round(res.get("peak_gpu_mb", 0.0)), "processes": s.world, "loader_workers": p.workers,
               "labeled": len(s.labeled), "pseudo_labeled": len(s.pseudo), "unlabeled": len(s.unlabeled),
               "val": len(val), "amp": s.amp, "gave_up": bool(gave_up)}
    if s.rank == 0:
        write_json(summary, s.run / "summary.json")
        log.log(f"done: {st.iteration} iterations in {st.elapsed:.0f} s; {best_validation(summary)}; "
                f"peak RSS {summary['peak_rss_mb']} MB; "
                f"mean CPU use {summary['mean_cpu_util']} cores")
        chosen = postprocessing.run_choice(s.run, st.best_iteration) if val else None
        if chosen is not None:
            names = s.plans.class_names()
            log.log("postprocessing (chosen on the validation cases, applied by predict to best.pt): "
                    + postprocessing.describe(chosen, names))
    distributed.barrier(s.world)
    return summary
