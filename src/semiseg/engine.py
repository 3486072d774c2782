"""The training engine: one loop for every method.

It owns the loop, the budget (iterations or wall-clock minutes) and the schedule fitted to it,
optimizers (one per network), mixed precision on CUDA, DistributedDataParallel under
``torchrun``, validation with full sliding-window prediction, checkpoints and exact resume,
logging (``log.txt``, ``metrics.csv``) and ``progress.png``. Methods (``semiseg.methods``) only
name their networks and return their losses.

Run folder: ``config.json`` (resolved), ``plans.json`` (copy), ``split.json`` (the cases used),
``checkpoints/{latest,best,final}.pt``, ``log.txt``, ``metrics.csv``, ``progress.png``,
``summary.json``.

Exact resume: a batch is a pure function of (seed, iteration, rank) (see ``sampling``), the
checkpoint holds networks, optimizers, scaler, torch RNG, iteration and elapsed time, and the
learning rate is a function of the budget's progress; so a run killed (even with ``kill -9``)
and resumed from ``latest.pt`` takes the same steps as one that was never interrupted. With a
wall-clock budget the time lost after the last checkpoint is not counted again.
"""
from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from .config import TrainConfig
from .metrics import dice_per_class, mean_dice
from .utils import SemisegError, atomic_path, class_argmax, read_json, write_json


# --------------------------------------------------------------------------- distributed
def dist_setup() -> tuple[int, int, int]:
    """(rank, world size, local rank); initialises torch.distributed under torchrun."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    return dist.get_rank(), dist.get_world_size(), local


def _barrier(world: int):
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def cpu_bf16_supported() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001 - older torch or no oneDNN
        return False


def autocast_dtype(amp: str, device: torch.device):
    """Mixed precision: "auto" is fp16 on CUDA and bf16 on a CPU with native bf16 (AVX512-BF16/AMX:
    ~2.7x faster 3D convolutions on this machine), else none."""
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if cpu_bf16_supported() else None


# --------------------------------------------------------------------------- schedule
def learning_rate(cfg: TrainConfig, progress: float) -> float:
    p = min(max(progress, 0.0), 1.0)
    if cfg.optimizer == "sgd":  # nnU-Net's poly decay
        return cfg.lr0 * (1 - p) ** 0.9
    warm = 0.02  # AdamW: short linear warm-up, then cosine
    if p < warm:
        return cfg.lr0 * (p + 1e-3) / warm
    return cfg.lr0 * 0.5 * (1 + math.cos(math.pi * (p - warm) / (1 - warm)))


def make_optimizer(cfg: TrainConfig, params):
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr0, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.wd)
    return torch.optim.AdamW(params, lr=cfg.lr0, weight_decay=cfg.wd)


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, obj: dict) -> None:
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a bad file, whatever the unpickler says
        raise SemisegError(f"{path}: cannot read the checkpoint ({type(e).__name__}: {e})") from None


# --------------------------------------------------------------------------- validation
@torch.no_grad()
def validate(nets: list, work: Path, val_ids: list[str], cfg: dict, n_classes: int, step: float,
             device) -> tuple[float, list[float]]:
    """Mean foreground Dice over the validation cases (on the preprocessed grid), and per class."""
    from .infer import sliding_window_probs
    from .preprocessing import load_case

    per = []
    for cid in val_ids:
        data, seg, _props = load_case(work, cid)
        probs = sliding_window_probs(nets, data, cfg, step=step, device=device)
        per.append(dice_per_class(class_argmax(probs, 0).numpy(), np.asarray(seg), n_classes))
    return mean_dice(per)


def validation_gap(budget_s: float, last_cost_s: float) -> float:
    """Seconds of training between the end of one validation and the next in a time budget: a
    tenth of the budget, longer when validating is slow so that it takes at most a fifth of the
    time (ACDC's 20 cases through a CPS pair take a minute: 10 of them would be a third of 30 min)."""
    return max(budget_s / 10, 4 * last_cost_s)


# --------------------------------------------------------------------------- logging
class RunLog:
    """log.txt lines, metrics.csv rows (columns fixed by the first row) and progress.png."""

    def __init__(self, run: Path, rank: int, class_names: list[str], bar=None):
        self.run, self.rank, self.names, self.bar = run, rank, class_names, bar
        self.rows: list[dict] = []
        self.columns: list[str] | None = None
        self.last_plot = 0.0

    def log(self, msg: str) -> None:
        if self.rank:
            return
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}"
        with open(self.run / "log.txt", "a") as f:
            f.write(line + "\n")
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def reload(self, upto_iteration: int) -> None:
        """On resume: keep the rows up to the checkpoint, rewrite metrics.csv with them."""
        f = self.run / "metrics.csv"
        if not f.exists() or self.rank:
            return
        with open(f, newline="") as fh:
            r = csv.DictReader(fh)
            self.columns = r.fieldnames
            self.rows = [row for row in r if int(row["iteration"]) <= upto_iteration]
        with atomic_path(f, suffix=".csv") as tmp, open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self.columns)
            w.writeheader()
            w.writerows(self.rows)

    def row(self, r: dict) -> None:
        if self.rank:
            return
        f = self.run / "metrics.csv"
        if self.columns is None:
            losses = sorted(k for k in r if k not in ("iteration", "elapsed_s", "lr", "it_per_s") and not k.startswith("val_"))
            self.columns = ["iteration", "elapsed_s", "lr", "it_per_s"] + losses + \
                ["val_dice"] + [f"val_dice_{n}" for n in self.names]
        new = not f.exists()
        with open(f, "a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        self.rows.append({k: str(v) for k, v in r.items()})

    def plot(self, force: bool = False) -> None:
        if self.rank or not self.rows or (not force and time.time() - self.last_plot < 60):
            return
        self.last_plot = time.time()
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        def series(key):
            pts = [(float(r["iteration"]), float(r[key])) for r in self.rows if r.get(key) not in (None, "", "nan")]
            return ([p[0] for p in pts], [p[1] for p in pts]) if pts else ([], [])

        scalars = [k for k in (self.columns or []) if k not in ("iteration", "elapsed_s", "lr", "it_per_s")
                   and not k.startswith("val_")]
        others = [k for k in scalars if not k.startswith("loss")]  # e.g. CPS lambda and agreement
        fig, ax = plt.subplots(2, 3 if others else 2, figsize=(16 if others else 11, 7), squeeze=False)
        for k in scalars:
            if k.startswith("loss"):
                ax[0, 0].plot(*series(k), label=k)
        ax[0, 0].set_title("training losses")
        ax[0, 0].legend(fontsize=7)
        if others:
            for k in others:
                ax[0, 2].plot(*series(k), label=k)
            ax[0, 2].set_title("method: " + ", ".join(others))
            ax[0, 2].legend(fontsize=7)
            ax[1, 2].axis("off")
        ax[0, 1].plot(*series("val_dice"), "o-", label="mean")
        for n in self.names if len(self.names) > 1 else []:
            ax[0, 1].plot(*series(f"val_dice_{n}"), ".--", label=n)
        ax[0, 1].set_title("validation Dice")
        ax[0, 1].legend(fontsize=7)
        ax[1, 0].plot(*series("lr"))
        ax[1, 0].set_title("learning rate")
        ax[1, 1].plot(*series("it_per_s"))
        ax[1, 1].set_title("iterations per second")
        for a in ax.flat:
            a.set_xlabel("iteration")
        fig.tight_layout()
        with atomic_path(self.run / "progress.png", suffix=".png") as tmp:
            fig.savefig(tmp, dpi=80)
        plt.close(fig)


# --------------------------------------------------------------------------- the loop
def class_names(labels: dict, n_classes: int) -> list[str]:
    """Names of classes 1..n-1 from dataset.json ``labels``; class<i> where they are not one int each."""
    by_value = {v: k for k, v in labels.items() if isinstance(v, int)}
    names = [by_value.get(c) for c in range(1, n_classes)]
    return names if all(names) else [f"class{c}" for c in range(1, n_classes)]


def _cases(plans: dict, work: Path, cfg: TrainConfig) -> tuple[list[str], list[str], list[str]]:
    split = read_json(work / "split.json", "split.json (run `semiseg plan` first)")
    labeled, unlabeled, val = list(split["labeled"]), list(split["unlabeled"]), list(split["val"])
    if cfg.labeled is not None:
        sub = list(cfg.labeled)
        missing = [c for c in sub if c not in labeled]
        if missing:
            raise SemisegError(f"labeled cases {', '.join(missing[:5])} are not labeled in {work / 'split.json'}; "
                               "plan with a split that labels them")
        unlabeled = [c for c in labeled if c not in sub] + unlabeled
        labeled = sub
    return labeled, unlabeled, val


def _pseudo_selection(cfg: TrainConfig, unlabeled: list[str], run: Path, resume: bool) -> tuple[list[str], dict]:
    """The pseudo-labeled scans this run trains on (among its unlabeled ones) and their scores. A
    resumed run keeps the selection it started with."""
    from .selection import read_scores, select_cases

    if resume:
        sp = read_json(run / "split.json", "run split")
        if "pseudo" in sp:
            return list(sp["pseudo"]), dict(sp.get("pseudo_scores", {}))
    scores = read_scores(cfg.pseudo_labels, cfg.select_score)
    cand = [c for c in unlabeled if c in scores]
    if not cand:
        raise SemisegError(f"{cfg.pseudo_labels}: none of its scored scans is an unlabeled case of this run")
    chosen = select_cases(scores, cfg.select, cfg.select_score, cand)
    return chosen, {c: scores[c] for c in cand}


def train(work: str | Path, out: str | Path, cfg: TrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train ``cfg.method`` on the cached cases of ``work`` into the run folder ``out``."""
    from tqdm import tqdm

    from .methods import create_method
    from .nets import create_network
    from .planning import load_plans
    from .profile import ResourceSampler
    from .sampling import PatchBatches, batch_loader

    work, run = Path(work), Path(out)
    rank, world, local = dist_setup()
    plans = load_plans(work)
    net_cfg = cfg.resolved_configuration(plans)
    labeled, unlabeled, val = _cases(plans, work, cfg)
    ck_dir = run / "checkpoints"
    if rank == 0:
        if (run / "config.json").exists() and not resume:
            raise SemisegError(f"{run}: already holds a run; use --resume to continue it or choose another -o")
        if resume and not (ck_dir / "latest.pt").exists():
            raise SemisegError(f"{run}: nothing to resume (no checkpoints/latest.pt)")
        if run.resolve() == work.resolve() or run.resolve() == Path(plans["dataset_path"]).resolve():
            raise SemisegError(f"{run}: the run folder must not be the work or dataset folder")
    if resume:  # the run's own configuration wins
        cfg = TrainConfig.from_dict(read_json(run / "config.json", "run configuration"))
        net_cfg = cfg.resolved_configuration(plans)
        labeled, unlabeled, val = _cases(plans, work, cfg)
    pseudo, label_dirs, pseudo_scores = [], {}, {}
    if cfg.pseudo_labels:
        pseudo, pseudo_scores = _pseudo_selection(cfg, unlabeled, run, resume)
        unlabeled = [c for c in unlabeled if c not in set(pseudo)]
        if rank == 0:
            import shutil

            from .selection import cache_pseudo_labels

            if not resume:  # left by a start that failed before config.json: maybe other pseudo-labels
                shutil.rmtree(run / "pseudo_labels", ignore_errors=True)
            cache_pseudo_labels(work, cfg.pseudo_labels, pseudo, run / "pseudo_labels", plans, progress=progress)
        _barrier(world)
        label_dirs = {c: run / "pseudo_labels" for c in pseudo}

    device = torch.device(cfg.device) if cfg.device else \
        torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    amp_dtype = autocast_dtype(cfg.amp, device)
    method = create_method(cfg.method, cfg)
    torch.manual_seed(cfg.seed)
    nets, optims = {}, {}
    from .config import input_channels

    n_in, n_cls = input_channels(plans, net_cfg), plans["num_classes"]
    for name, spec in method.networks().items():
        net = create_network(spec["network"], net_cfg, n_in, n_cls, **spec.get("options", {})).to(device)
        nets[name] = net
        optims[name] = make_optimizer(cfg, net.parameters())
    batch = net_cfg["batch_size"]
    ubatch = cfg.unlabeled_batch if cfg.unlabeled_batch is not None else method.unlabeled_batch(batch)
    notes = []
    if ubatch and not unlabeled and cfg.unlabeled_batch is None:
        notes.append(f"{cfg.method}: no unlabeled cases in this split, so no unlabeled patches")
        ubatch = 0
    if hasattr(method, "batches"):  # a method with its own samples (the propagation network's triplets)
        ds = method.batches(work, labeled + pseudo, net_cfg, plans, rank, world, label_dirs)
        batch, ubatch = ds.B, 0
    else:
        ds = PatchBatches(work, labeled + pseudo, net_cfg, plans["target_spacing"], batch, cfg.seed, cfg.aug,
                          cfg.fg_oversample, unlabeled, ubatch, rank, world, label_dirs=label_dirs)
    if rank == 0 and not resume:  # only once networks and data are known good: no half-made run folders
        ck_dir.mkdir(parents=True, exist_ok=True)
        write_json(cfg.to_dict(), run / "config.json")
        write_json(plans, run / "plans.json")
        sp = {"labeled": labeled, "unlabeled": unlabeled, "val": val}
        if cfg.pseudo_labels:
            sp.update(pseudo=pseudo, pseudo_labels=str(Path(cfg.pseudo_labels).resolve()), select=cfg.select,
                      select_score=cfg.select_score, pseudo_scores=pseudo_scores)
        write_json(sp, run / "split.json")
    _barrier(world)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    it, elapsed, best = 0, 0.0, {"val_dice": -1.0, "iteration": -1}
    if resume:
        st = load_checkpoint(ck_dir / "latest.pt")
        for k in nets:
            nets[k].load_state_dict(st["nets"][k])
            optims[k].load_state_dict(st["optims"][k])
        if "scaler" in st and st["scaler"]:
            scaler.load_state_dict(st["scaler"])
        torch.set_rng_state(st["torch_rng"])
        if st.get("method_state") is not None and hasattr(method, "load_state_dict"):
            method.load_state_dict(st["method_state"])
        it, elapsed = int(st["iteration"]), float(st["elapsed"])
        best = {"val_dice": float(st["best_val_dice"]), "iteration": int(st["best_iteration"])}
    train_nets = nets
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_nets = {k: DDP(v, device_ids=[local] if device.type == "cuda" else None) for k, v in nets.items()}

    ncpu = os.cpu_count() or 1
    workers = cfg.workers if cfg.workers is not None else (1 if ncpu <= 4 else min(8, ncpu - 2))
    loader = batch_loader(ds, it, workers)

    budget_s = cfg.minutes * 60 if cfg.minutes else None
    if cfg.val_every == 0:  # no validation: best.pt is the final network
        val_every = val_every_s = None
        val = []
    else:
        val_every = cfg.val_every or (max(1, cfg.iterations // 10) if cfg.iterations else None)
        val_every_s = validation_gap(budget_s, 0.0) if (budget_s and not cfg.val_every) else None
    names = class_names(plans["labels"], n_cls)
    total = cfg.iterations or None
    bar = tqdm(total=total or int(budget_s), initial=it if total else int(elapsed), disable=not progress or rank > 0,
               unit="it" if total else "s", dynamic_ncols=True)
    rl = RunLog(run, rank, names, bar if progress else None)
    if resume:
        rl.reload(it)
        rl.log(f"resumed at iteration {it} ({elapsed:.0f} s of the budget used)")
    else:
        nets_used = "/".join(dict.fromkeys(spec["network"] for spec in method.networks().values()))
        rl.log(f"train {cfg.method} / {nets_used} ({cfg.configuration}): {len(labeled)} labeled"
               + (f" + {len(pseudo)} pseudo-labeled ({cfg.select} by {cfg.select_score} of "
                  f"{len(pseudo_scores)} scored)" if cfg.pseudo_labels else "") + ", "
               f"{len(unlabeled)} unlabeled, {len(val)} validation cases; patch {getattr(ds, 'patch', net_cfg['patch_size'])} "
               f"batch {batch}{f' + {ubatch} unlabeled' if ubatch else ''}; {world} process(es) on {device}; "
               f"{workers} loader worker(s); budget "
               + (f"{cfg.minutes:g} min" if cfg.minutes else "") + (f" {cfg.iterations} it" if cfg.iterations else ""))
        for n in notes:
            rl.log(n)
        if cfg.method_options:
            rl.log(f"method options: {cfg.method_options}")
        rl.log("parameters: " + ", ".join(f"{k} {sum(p.numel() for p in v.parameters()) / 1e6:.2f} M"
                                            for k, v in nets.items()))

    def progress_of(i, el):
        p = 0.0
        if cfg.iterations:
            p = max(p, i / cfg.iterations)
        if budget_s:
            p = max(p, el / budget_s)
        return p

    def checkpoint(kind: str):
        if rank:
            return
        obj = {"iteration": it, "elapsed": elapsed, "nets": {k: v.state_dict() for k, v in nets.items()},
               "best_val_dice": best["val_dice"], "best_iteration": best["iteration"]}
        if kind == "latest":
            obj.update(optims={k: o.state_dict() for k, o in optims.items()}, scaler=scaler.state_dict(),
                       torch_rng=torch.get_rng_state(),
                       method_state=method.state_dict() if hasattr(method, "state_dict") else None)
        save_checkpoint(ck_dir / f"{kind}.pt", obj)

    def run_validation():
        if rank == 0 and val:
            use = [nets[k] for k in method.predict_with()]
            if hasattr(method, "validate"):  # a method that scores itself (propagation from a few slices)
                return method.validate(use, work, val, net_cfg, n_cls, device)
            return validate(use, work, val, net_cfg, n_cls, cfg.val_step, device)
        return None, None

    def backward(part):  # the loop checks the (summed) loss is finite before any optimizer step
        scaler.scale(part).backward()

    sampler = ResourceSampler() if rank == 0 else None
    if sampler:
        sampler.__enter__()
    t_start = time.time() - elapsed
    last_ck = time.time()
    last_val_t = elapsed
    window, wt0, wit0 = {}, time.time(), it
    # a run killed after its last step but before summary.json resumes straight to the end
    stop = (cfg.iterations is not None and it >= cfg.iterations) or (budget_s is not None and elapsed >= budget_s)
    try:
        while not stop:
            b = next(loader)
            b = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in b.items()}
            lr = learning_rate(cfg, progress_of(it, elapsed))
            for o in optims.values():
                for g in o.param_groups:
                    g["lr"] = lr
                o.zero_grad(set_to_none=True)
            for n in nets.values():
                n.train()
            state = {"iteration": it, "progress": progress_of(it, elapsed), "backward": backward}
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                losses = method.losses(train_nets, b, state)
            loss = losses["loss"]
            if not torch.isfinite(loss):
                raise SemisegError(f"iteration {it}: the loss is {loss.item()} (diverged); lower --lr or check the data")
            if loss.requires_grad:
                backward(loss)
            for k, o in optims.items():
                scaler.unscale_(o)
                torch.nn.utils.clip_grad_norm_(nets[k].parameters(), cfg.grad_clip)
                scaler.step(o)
            scaler.update()
            it += 1
            for k, v in losses.items():
                window.setdefault(k, []).append(float(v.detach()) if torch.is_tensor(v) else float(v))
            elapsed = time.time() - t_start
            if world > 1:  # rank 0's clock decides, so every rank stops at the same iteration
                import torch.distributed as dist

                t = torch.tensor([elapsed], dtype=torch.float64, device=device if device.type == "cuda" else "cpu")
                dist.broadcast(t, 0)
                elapsed = float(t.item())
            done = (cfg.iterations is not None and it >= cfg.iterations) or (budget_s is not None and elapsed >= budget_s)
            bar.update(1 if total else int(elapsed) - bar.n)
            do_val = (done and bool(val)) or (val_every and it % val_every == 0) or (val_every_s and elapsed - last_val_t >= val_every_s)
            if it % cfg.log_every == 0 or do_val or done:
                row = {"iteration": it, "elapsed_s": round(elapsed, 2), "lr": lr,
                       "it_per_s": (it - wit0) / max(time.time() - wt0, 1e-9)}
                row.update({k: (float(np.nanmean(v)) if not np.all(np.isnan(v)) else float("nan"))
                            for k, v in window.items()})
                window, wt0, wit0 = {}, time.time(), it
                if do_val:
                    val_t0 = time.time()
                    d, per = run_validation()
                    if d is not None:
                        row["val_dice"] = d
                        row.update({f"val_dice_{n}": v for n, v in zip(names, per)})
                        if d > best["val_dice"]:
                            best = {"val_dice": d, "iteration": it}
                            checkpoint("best")
                        extra = "".join(f" {k} {v:.3f}" for k, v in row.items() if k not in
                                        ("iteration", "elapsed_s", "lr", "it_per_s", "loss")
                                        and not k.startswith(("loss", "val_")) and isinstance(v, float))
                        rl.log(f"it {it}: loss {row['loss']:.4f}{extra} val Dice {d:.4f} "
                               f"({', '.join(f'{n} {v:.3f}' for n, v in zip(names, per))}) best {best['val_dice']:.4f} "
                               f"@ {best['iteration']}; {row['it_per_s']:.2f} it/s")
                    _barrier(world)
                    if world > 1:  # every rank needs the best score in its checkpoint state
                        import torch.distributed as dist

                        t = torch.tensor([best["val_dice"], best["iteration"]], dtype=torch.float64)
                        dist.broadcast(t, 0)
                        best = {"val_dice": float(t[0]), "iteration": int(t[1])}
                    elapsed = time.time() - t_start
                    last_val_t = elapsed  # the next one counts from the end of this one
                    if budget_s and not cfg.val_every:
                        val_every_s = validation_gap(budget_s, time.time() - val_t0)
                rl.row(row)
                bar.set_postfix(loss=f"{row['loss']:.3f}", best=f"{best['val_dice']:.3f}")
                if do_val or time.time() - last_ck > cfg.checkpoint_minutes * 60:
                    checkpoint("latest")
                    last_ck = time.time()
                rl.plot(force=do_val)
            stop = done
    finally:
        bar.close()
        if sampler:
            sampler.__exit__(None, None, None)
    checkpoint("final")
    if not val:
        checkpoint("best")
        rl.log("no validation: best.pt is the final network")
    rl.plot(force=True)
    res = sampler.result() if sampler else {}
    summary = {"iterations": it, "elapsed_s": round(elapsed, 1), "best_val_dice": best["val_dice"],
               "best_iteration": best["iteration"], "seconds_per_iteration": round(elapsed / max(it, 1), 3),
               "peak_rss_mb": round(res.get("peak_rss_mb", 0.0)), "mean_cpu_util": round(res.get("mean_cpu_util", 0.0), 2),
               "peak_gpu_mb": round(res.get("peak_gpu_mb", 0.0)), "processes": world, "loader_workers": workers,
               "labeled": len(labeled), "pseudo_labeled": len(pseudo), "unlabeled": len(unlabeled), "val": len(val)}
    if rank == 0:
        write_json(summary, run / "summary.json")
        rl.log(f"done: {it} iterations in {elapsed:.0f} s; best validation Dice {best['val_dice']:.4f} at iteration "
               f"{best['iteration']}; peak RSS {summary['peak_rss_mb']} MB; mean CPU use {summary['mean_cpu_util']} cores")
    _barrier(world)
    return summary
