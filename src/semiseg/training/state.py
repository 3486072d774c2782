"""What changes while a run trains (:class:`TrainState`), and its checkpoints.

``RUN/checkpoints/{latest,best,final}.pt`` hold the networks, the iteration, the budget used and
the best validation score; ``latest.pt`` also the optimizers, the AMP scaler, torch's RNG and the
method's own state, which with batches that are a pure function of (seed, iteration, rank) makes a
resumed run take exactly the steps of one that was never interrupted.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..utils.checkpoint import load_checkpoint, save_checkpoint


@dataclass
class TrainState:
    iteration: int = 0
    elapsed: float = 0.0            # seconds of the budget used
    best_val_dice: float = -1.0
    best_iteration: int = -1
    last_validation: float = 0.0    # ``elapsed`` at the end of the last validation
    window: dict = field(default_factory=dict)  # losses since the last metrics.csv row

    def record(self, losses: dict) -> None:
        for k, v in losses.items():
            self.window.setdefault(k, []).append(float(v.detach()) if torch.is_tensor(v) else float(v))


def save_state(path: Path, st: TrainState, nets: dict, optims: dict | None = None, scaler=None,
               method_state: dict | None = None) -> None:
    """A checkpoint: networks and scores; with ``optims`` also what exact resume needs."""
    obj = {"iteration": st.iteration, "elapsed": st.elapsed, "nets": {k: v.state_dict() for k, v in nets.items()},
           "best_val_dice": st.best_val_dice, "best_iteration": st.best_iteration}
    if optims is not None:
        obj.update(optims={k: o.state_dict() for k, o in optims.items()}, scaler=scaler.state_dict(),
                   torch_rng=torch.get_rng_state(), method_state=method_state)
    save_checkpoint(path, obj)


def restore_state(path: Path, nets: dict, optims: dict, scaler, method) -> TrainState:
    """Load ``latest.pt`` into networks, optimizers, scaler, RNG and method; return the state."""
    ck = load_checkpoint(path)
    for k in nets:
        nets[k].load_state_dict(ck["nets"][k])
    for k in optims:
        optims[k].load_state_dict(ck["optims"][k])
    if ck.get("scaler"):
        scaler.load_state_dict(ck["scaler"])
    torch.set_rng_state(ck["torch_rng"])
    if ck.get("method_state") is not None:
        method.load_state_dict(ck["method_state"])
    it, elapsed = int(ck["iteration"]), float(ck["elapsed"])
    return TrainState(it, elapsed, float(ck["best_val_dice"]), int(ck["best_iteration"]), last_validation=elapsed)


FRESH, RESUMED, FINISHED = "fresh", "resumed", "finished"


def run_state(run: Path) -> str:
    """The life cycle of a run folder that a command trains into and may have started before (fit's
    training stages, selftrain's rounds): ``finished`` (it has its ``summary.json``), ``resumed`` (a
    configuration and a ``latest.pt``: training continues from it), else ``fresh`` (a start that died
    before its first checkpoint is removed)."""
    run = Path(run)
    if (run / "summary.json").exists() and (run / "config.json").exists():
        return FINISHED
    if (run / "checkpoints" / "latest.pt").exists() and (run / "config.json").exists():
        return RESUMED
    if run.exists():
        shutil.rmtree(run)
    return FRESH

