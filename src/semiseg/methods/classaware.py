"""Class-aware pseudo-supervision, shared by every method that learns from pseudo-labels.

Two parts, set by the training configuration (``--class-gate``, ``--class-weights``):

- **Per-class admission.** A class enters the pseudo-label loss only once the network that makes
  the pseudo-labels (a mean teacher, a CPS partner) predicts it on the labeled patches with a
  running Dice (EMA over steps, counted over the global batch under DDP) of at least ``gate``; once
  admitted it stays. Until then the pseudo-labels are *partial* labels: a voxel labeled background
  or a class not admitted means "background or one of the classes not admitted", and the loss
  compares it with the network's summed probability of those classes (the marginal loss of
  partially labeled segmentation, Shi et al. 2021). So a teacher that still predicts background
  everywhere gives a loss of exactly zero instead of teaching the student to forget a class (the
  collapse of rare classes under CPS that docs/benchmarks.md shows on ACDC-7).
- **Distribution-aware class weights** (DHC, Wang and Li 2023): an EMA of the pseudo-labels' class
  voxel counts gives each admitted class the CE weight ``log(n_max) / log(n_c)``, so rare
  structures are not drowned by large ones.
"""
from __future__ import annotations

import numpy as np
import torch

from ..evaluation.metrics import dice_counts
from .losses import heads, partial_seg_loss

MOMENTUM = 0.9          # EMA of the per-class Dice on labeled patches
COUNT_MOMENTUM = 0.99   # EMA of the pseudo-label class counts (DHC)


def rank_world() -> tuple[int, int]:
    """(rank, world size) of torch.distributed, (0, 1) outside it."""
    d = torch.distributed
    if d.is_available() and d.is_initialized():
        return d.get_rank(), d.get_world_size()
    return 0, 1


def all_reduce_sum(values: np.ndarray, device: torch.device) -> np.ndarray:
    """Sum an array over DDP ranks (itself outside torch.distributed)."""
    if rank_world()[1] == 1:
        return values
    t = torch.from_numpy(np.ascontiguousarray(values)).to(device if device.type == "cuda" else torch.device("cpu"))
    torch.distributed.all_reduce(t)
    return t.cpu().numpy()


class ClassGate:
    """Which classes the pseudo-labels may teach, and their weights. ``gate`` 0 admits every class
    from the start; ``weights`` turns on DHC's distribution-aware CE weights. Checkpointed through
    :meth:`state_dict` (exact resume)."""

    def __init__(self, gate: float = 0.0, weights: bool = False):
        self.gate, self.use_weights = float(gate), bool(weights)
        self.quality: np.ndarray | None = None   # running Dice per foreground class
        self.admitted: np.ndarray | None = None  # bool per class, background included
        self.counts: np.ndarray | None = None    # running voxel share per class

    def _init(self, n_classes: int) -> None:
        if self.admitted is None:
            self.quality = np.zeros(n_classes - 1)
            self.admitted = np.ones(n_classes, bool) if self.gate <= 0 else \
                np.array([True] + [False] * (n_classes - 1))
            self.counts = np.ones(n_classes) / n_classes

    @property
    def needs_labeled_predictions(self) -> bool:
        """Whether :meth:`update` still has a class to admit (callers may skip the forward pass)."""
        return self.admitted is None or not self.admitted.all()

    def update(self, pred: torch.Tensor, label: torch.Tensor, n_classes: int) -> None:
        """Fold the pseudo-labeller's hard prediction on labeled patches into the running Dice of
        each class; admit a class once its running Dice reaches the gate. A class absent from this
        global batch's labels and prediction leaves its running Dice as it was."""
        self._init(n_classes)
        if not self.needs_labeled_predictions:
            return
        c = all_reduce_sum(dice_counts(pred, label, n_classes), label.device)
        seen = c[:, 1] + c[:, 2] > 0
        d = np.where(seen, 2 * c[:, 0] / np.maximum(c[:, 1] + c[:, 2], 1e-9), 0.0)
        self.quality = np.where(seen, MOMENTUM * self.quality + (1 - MOMENTUM) * d, self.quality)
        self.admitted[1:] |= self.quality >= self.gate

    def observe(self, pseudo: torch.Tensor, n_classes: int) -> None:
        """Fold the class voxel counts of a batch of pseudo-labels into the running distribution."""
        self._init(n_classes)
        if self.use_weights:
            n = torch.bincount(pseudo.flatten().long(), minlength=n_classes)[:n_classes].double().cpu().numpy()
            n = all_reduce_sum(n, pseudo.device)
            if n.sum() > 0:
                self.counts = COUNT_MOMENTUM * self.counts + (1 - COUNT_MOMENTUM) * n / n.sum()

    def class_weights(self) -> np.ndarray | None:
        """DHC's CE weight per class, ``log(n_max) / log(n_c)`` on voxel counts per million (>= 1 for
        rare classes), or None when off."""
        if not self.use_weights or self.counts is None:
            return None
        n = np.log(np.maximum(self.counts * 1e6, np.e))
        return n.max() / n

    def state_dict(self) -> dict:
        if self.admitted is None:
            return {}
        return {"quality": self.quality.tolist(), "admitted": self.admitted.tolist(), "counts": self.counts.tolist()}

    def load_state_dict(self, st: dict) -> None:
        if st:
            self.quality, self.admitted = np.array(st["quality"], float), np.array(st["admitted"], bool)
            self.counts = np.array(st["counts"], float)

    def log(self) -> dict:
        """Loggable numbers: how many foreground classes are admitted, the lowest running Dice."""
        if self.admitted is None:
            return {}
        return {"classes_admitted": float(self.admitted[1:].sum()), "class_dice_min": float(self.quality.min())}

    def loss(self, out, target: torch.Tensor, mask: torch.Tensor | None = None, kind: str = "dice_ce"):
        """:func:`partial_seg_loss` with this gate's admitted classes and weights."""
        n = heads(out)[0].shape[1]
        self._init(n)
        return partial_seg_loss(out, target, mask, self.admitted, self.class_weights(), kind)
