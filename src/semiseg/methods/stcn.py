"""``--method stcn``: training of the Propagation module (Pham et al. 2022, Table 3): an STCN (Cheng
et al. 2021) on triplets of neighbouring slices, class-agnostic and binary, with bootstrapped
cross-entropy ("OhemCE") + Lovasz hinge.

``semiseg train WORK -o RUN --method stcn --config 2d`` (the slice axis is the 2D
configuration's: the plan's lowest-resolution axis). The network reads the first slice with its
mask, predicts the second, then reads both (the second with its predicted mask) and predicts the
third; the loss covers both predictions. The bootstrapped CE keeps all pixels for the first
``warm`` of the budget, then the hardest share falls linearly to ``top_p`` (0.15, STCN's) by the
middle of the budget. Selected pseudo-labels (``--pseudo-labels``) train as labels.

Validation is the interactive benchmark in small: on each validation case every class is
propagated from ``val_slices`` ground-truth slices spread over the foreground's extent and the
Dice of the rest is scored, on the first ``val_cases`` (10) validation cases. Options (``--stcn-*``
flags or ``--method-options``): see :class:`STCNOptions`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..evaluation.metrics import dice_per_class, mean_dice
from ..nets import PROPAGATION, network_kind
from ..preprocessing.cache import load_case
from ..propagation.core import propagate, uniform_slices
from ..propagation.triplets import TripletBatches
from ..utils import SemisegError
from .base import DataContext, Method, NetworkSpec, StepContext, ValidationContext, register_method
from .losses import bootstrapped_bce, lovasz_hinge


@dataclass
class STCNOptions:
    crop: int = field(default=128, metadata={"help": "in-plane crop of the training triplets (pixels)"})
    max_skip: int = field(default=5, metadata={"help": "largest gap between the slices of a triplet"})
    top_p: float = field(default=0.15, metadata={"help": "final share of hardest pixels in the bootstrapped CE"})
    warm: float = field(default=0.1, metadata={"help": "share of the budget with every pixel in the CE"})
    lovasz_weight: float = field(default=1.0, metadata={"help": "weight of the Lovasz hinge"})
    val_slices: int = field(default=3, metadata={"help": "ground-truth slices propagated per validation case"})
    recent: int = field(default=3, metadata={"help": "predicted slices kept in memory while propagating"})
    batch: int | None = field(default=None, metadata={"help": "triplets per global batch (default 4 on a CPU, "
                                                      "8 on a GPU as Pham et al.)"})
    val_cases: int = field(default=10, metadata={"help": "validation cases scored"})

    def __post_init__(self):
        if not 0 < self.top_p <= 1:
            raise SemisegError(f"stcn top_p must be in (0, 1], not {self.top_p}")
        if not 0 <= self.warm < 0.5:
            raise SemisegError(f"stcn warm is a share of the budget in [0, 0.5), not {self.warm}")
        if self.val_cases < 1:
            raise SemisegError(f"stcn val_cases must be >= 1, not {self.val_cases}")
        if self.val_slices < 1:
            raise SemisegError(f"stcn val_slices must be >= 1, not {self.val_slices}")


def hard_share(o: STCNOptions, progress: float) -> float:
    """The bootstrapped CE's share of hardest pixels at a point of the budget."""
    if progress <= o.warm:
        return 1.0
    t = min(1.0, (progress - o.warm) / max(0.5 - o.warm, 1e-9))
    return 1.0 - t * (1.0 - o.top_p)


@register_method("stcn")
class STCNMethod(Method):
    Options = STCNOptions

    def __init__(self, config):
        super().__init__(config)
        net = config.network
        self.network = "stcn" if net in ("dynunet", "stcn") else net
        if network_kind(self.network) != PROPAGATION:
            raise SemisegError(f"--method stcn trains a propagation network (stcn), not {net!r}")

    def networks(self) -> dict:
        return {"stcn": NetworkSpec(self.network, dict(self.config.network_options))}

    def batches(self, data: DataContext):
        if "slice_axis" not in data.cfg:
            raise SemisegError("--method stcn trains on slices: use --config 2d")
        if data.cfg.get("slice_position"):
            raise SemisegError("--method stcn propagates along the slices; it takes no --slice-position")
        b = self.config.batch_size or self.opts.batch or (8 if torch.cuda.is_available() else 4)
        return TripletBatches(data.work, data.cases, data.cfg["slice_axis"], b, self.config.seed, self.opts.crop,
                              self.opts.max_skip, data.rank, data.world, data.label_dirs)

    def losses(self, nets: dict, batch: dict, ctx: StepContext) -> dict:
        logits = nets["stcn"](batch["frames"], batch["masks"][:, 0])
        target = batch["masks"][:, 1:].float()
        p = hard_share(self.opts, ctx.progress)
        ce = bootstrapped_bce(logits.flatten(0, 1), target.flatten(0, 1), p)
        lov = lovasz_hinge(logits.flatten(0, 1).float(), target.flatten(0, 1))
        with torch.no_grad():
            pred = logits > 0
            inter = (pred & (target > 0)).flatten(2).sum(-1).float()
            union = (pred | (target > 0)).flatten(2).sum(-1).float()
            iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)).mean()
        return {"loss": ce + self.opts.lovasz_weight * lov, "loss_ce": ce.detach(), "loss_lovasz": lov.detach(),
                "hard_share": p, "iou": iou}

    @torch.no_grad()
    def validate(self, nets: list, ctx: ValidationContext):
        """Mean Dice per class of propagation from ``val_slices`` ground-truth slices per volume."""
        work, val_ids, n_classes, device = ctx.work, ctx.val_ids, ctx.n_classes, ctx.device
        net, ax, per = nets[0], ctx.cfg["slice_axis"], []
        net.eval()
        for cid in val_ids[:self.opts.val_cases]:
            data, seg, _ = load_case(work, cid)
            seg = np.moveaxis(np.asarray(seg), ax, 0)
            ks = uniform_slices(seg, self.opts.val_slices, 0)
            if not ks:
                continue
            vol = np.moveaxis(np.asarray(data), 1 + ax, 1)
            lab = propagate(net, vol, {k: seg[k] for k in ks}, recent=self.opts.recent, device=device)
            rest = np.ones(seg.shape[0], bool)
            rest[ks] = False
            per.append(dice_per_class(lab[rest], seg[rest], n_classes))
        if not per:
            return float("nan"), [float("nan")] * (n_classes - 1)
        return mean_dice(per)
