"""Training of the Propagation module (seed 000 Table 3): an STCN on triplets of neighbouring
slices, class-agnostic and binary, with bootstrapped cross-entropy ("OhemCE") + Lovasz hinge.

``semiseg train WORK -o RUN --method stcn --configuration 2d`` (the slice axis is the 2D
configuration's: the plan's lowest-resolution axis). The network reads the first slice with its
mask, predicts the second, then reads both (the second with its predicted mask) and predicts the
third; the loss covers both predictions. The bootstrapped CE keeps all pixels for the first
``warm`` of the budget, then the hardest share falls linearly to ``top_p`` (0.15, STCN's) by the
middle of the budget. Selected pseudo-labels (``--pseudo-labels``) train as labels.

Validation is the interactive benchmark in small: on each validation case every class is
propagated from ``val_slices`` ground-truth slices spread over the foreground's extent and the
Dice of the rest is scored, on the first ``val_cases`` (10) validation cases. Options
(``--method-options``): crop, max_skip, top_p, warm, lovasz_weight, val_slices, val_cases, recent,
batch (triplets per global batch, default 4 on the CPU, 8 on a GPU as the seed).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..losses import bootstrapped_bce, lovasz_hinge
from ..metrics import dice_per_class, mean_dice
from ..utils import SemisegError
from . import register_method


@dataclass
class STCNOptions:
    crop: int = 128
    max_skip: int = 5
    top_p: float = 0.15
    warm: float = 0.1
    lovasz_weight: float = 1.0
    val_slices: int = 3
    recent: int = 3
    batch: int | None = None
    val_cases: int = 10

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
class STCNMethod:
    def __init__(self, config):
        self.config = config
        try:
            self.opts = STCNOptions(**config.method_options)
        except TypeError as e:
            raise SemisegError(f"stcn method options: {e}") from None
        net = config.network
        self.network = "stcn" if net in ("dynunet", "stcn") else net
        if not self.network.startswith("stcn"):
            raise SemisegError(f"--method stcn trains a propagation network (stcn), not {net!r}")

    def unlabeled_batch(self, labeled_batch: int) -> int:
        return 0

    def networks(self) -> dict:
        return {"stcn": {"network": self.network, "options": dict(self.config.network_options)}}

    def predict_with(self) -> list[str]:
        return ["stcn"]

    def batches(self, work, labeled, net_cfg: dict, plans: dict, rank: int, world: int, label_dirs: dict):
        from ..propagate.triplets import TripletBatches

        if "slice_axis" not in net_cfg:
            raise SemisegError("--method stcn trains on slices: use --config 2d")
        if net_cfg.get("slice_position"):
            raise SemisegError("--method stcn propagates along the slices; it takes no --slice-position")
        b = self.config.batch_size or self.opts.batch or (8 if torch.cuda.is_available() else 4)
        return TripletBatches(work, labeled, net_cfg["slice_axis"], b, self.config.seed, self.opts.crop,
                              self.opts.max_skip, rank, world, label_dirs)

    def losses(self, nets: dict, batch: dict, state: dict) -> dict:
        logits = nets["stcn"](batch["frames"], batch["masks"][:, 0])
        target = batch["masks"][:, 1:].float()
        p = hard_share(self.opts, state["progress"])
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
    def validate(self, nets: list, work, val_ids: list[str], net_cfg: dict, n_classes: int, device):
        """Mean Dice per class of propagation from ``val_slices`` ground-truth slices per volume."""
        from ..preprocessing import load_case
        from ..propagate import propagate, uniform_slices

        net, ax, per = nets[0], net_cfg["slice_axis"], []
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
