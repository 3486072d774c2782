"""Cross pseudo supervision (Chen et al. 2021; Huang et al. 2022, 3D-CPS; Luque et al. 2021; Pham et al.
2022 for the heterogeneous 2D pair).

Two networks, ``net1`` and ``net2``, see the same batch of labeled and unlabeled patches. Each is
trained on the labels (``L_sup``) and on the other network's hard pseudo-labels (its argmax,
detached) on the unlabeled and the labeled patches (``L_cps = L_cps^u + L_cps^l``, Huang et al. eq. 1-3,
Luque et al. eq. 2-4):

    L = L_sup(net1) + L_sup(net2) + lambda * (l(net1, argmax net2) + l(net2, argmax net1))

``l`` is Dice + CE (Huang et al.) or Dice (Luque et al.). ``lambda`` is 0 for a supervised-only wait
(Luque et al.: 15 epochs), then ramps linearly to ``lambda_max`` (0.5) over ``ramp`` of the budget and
stays (Huang et al.); both are fractions of the budget's progress so they fit minutes and iterations alike.

Quality gate (``gate``, off by default). Huang et al. ramp lambda "to prevent the model from low-quality
pseudo-labels in the early training process", but a share of a short budget can end before the
networks predict anything: on ACDC-7 in 30 CPU minutes the ramp was over after ~70 CPS steps, both
networks predicted background everywhere (agreement 1.0 on unlabeled patches) and cross-supervised
each other into it (RV and MYO never learned). With ``gate = Q`` the ramp starts only once the pair's
pseudo-labels are good where that can be checked: the running mean (EMA, 0.9) of both networks'
hard Dice against the labels on the labeled patches of each batch (counted over the global batch
under DDP) must reach ``Q``; until then the step is supervised only (the unlabeled patches are not even
computed). The running mean and the moment the gate opened are checkpointed (exact resume).

The pair is the same architecture with different initialisations (default: the engine builds the
two networks one after the other from one seeded RNG, so their weights differ), or a different
``partner`` network (3D U-Net + UNETR as Luque et al.; in 2D a CNN with a Transformer hybrid).
Validation and prediction sum both networks' softmax; ``semiseg predict --nets net1`` uses one.

Per class (``--class-gate``, :mod:`.classaware`): a class enters the cross-pseudo loss of one network
only once the other predicts it on the labeled patches; before, it is merged with background.

Memory. ``memory="joint"`` runs each network once on the labeled+unlabeled batch and keeps both
graphs until the backward pass (two networks at twice the batch: about 4x the activations of
supervised training). ``memory="sequential"`` computes net2's pseudo-labels without a graph, then
net1's forward and backward, then net2's: only one graph is alive at a time, for one extra forward
pass of net2 without gradients. The pseudo-labels are the same (same weights, same input), so both
modes take the same steps.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..evaluation.metrics import counts_dice, dice_counts
from ..utils import SemisegError, class_argmax
from .base import Method, NetworkSpec, StepContext, register_method
from .classaware import ClassGate, all_reduce_sum
from .losses import heads, main_output, seg_loss


@dataclass
class CPSOptions:
    partner: str | None = field(default=None, metadata={
        "flag": "--partner", "metavar": "NET", "help": "net2's network (default: the same as --network, other "
        "weights); e.g. unetr for Luque et al.'s CNN + Transformer pair"})
    partner_options: dict | None = field(default=None, metadata={
        "flag": "--partner-options", "metavar": "JSON", "help": "net2's network options (JSON object; default: "
        "net1's when the same network)"})
    cps_loss: str = field(default="dice_ce", metadata={
        "flag": "--cps-loss", "choices": ["dice_ce", "dice"],
        "help": "loss on pseudo-labels: dice_ce (Huang et al.) or dice (Luque et al.)"})
    lambda_max: float = field(default=0.5, metadata={"flag": "--cps-lambda", "help": "weight of the CPS loss "
                                                     "after the ramp"})
    ramp: float = field(default=0.2, metadata={"help": "share of the budget over which lambda rises from 0"})
    wait: float = field(default=0.0, metadata={"help": "share of the budget trained supervised only first"})
    on_labeled: bool = field(default=True, metadata={
        "flag": "--cps-unlabeled-only", "help": "cross-supervise on unlabeled patches only (both papers also "
        "do it on labeled ones)"})
    memory: str = field(default="joint", metadata={
        "choices": ["joint", "sequential"], "help": "joint (fastest) or sequential: one network's graph at a "
        "time, less memory, one extra forward pass"})
    gate: float = field(default=0.0, metadata={
        "metavar": "DICE", "help": "start the lambda ramp only once both networks' running Dice against the "
        "labels on the labeled patches reaches DICE (e.g. 0.5): no cross supervision from pseudo-labels that "
        "are still all background; 0 = off"})

    def __post_init__(self):
        if self.cps_loss not in ("dice_ce", "dice", "ce"):
            raise SemisegError(f"CPS loss must be dice_ce, dice or ce, not {self.cps_loss!r}")
        if self.memory not in ("joint", "sequential"):
            raise SemisegError(f"CPS memory mode must be joint or sequential, not {self.memory!r}")
        if self.lambda_max < 0:
            raise SemisegError(f"CPS lambda must be >= 0, not {self.lambda_max}")
        if not 0 <= self.gate < 1:
            raise SemisegError(f"CPS gate must be a Dice in [0, 1), not {self.gate}")
        if not (0 <= self.wait < 1 and 0 <= self.ramp <= 1):
            raise SemisegError(f"CPS wait ({self.wait}) and ramp ({self.ramp}) are shares of the budget in [0, 1)")


def cps_weight(o: CPSOptions, progress: float, opened: float | None = None) -> float:
    """lambda at a point of the budget: 0 during the wait (and, with a gate, until ``opened``, the
    progress at which the gate opened), then a linear ramp, then lambda_max."""
    start = o.wait if opened is None else max(o.wait, opened)
    if progress < start:
        return 0.0
    if o.ramp <= 0:
        return o.lambda_max
    return o.lambda_max * min(1.0, (progress - start) / o.ramp)


def hard_agreement(a: torch.Tensor, b: torch.Tensor, n_classes: int) -> float:
    """Mean foreground Dice between two label maps (classes present in either; 1.0 if none is)."""
    d = counts_dice(dice_counts(a, b, n_classes), either=True)
    return 1.0 if d is None else d


def _slice(out, sl):
    return [h[sl] for h in heads(out)]


def _no_ddp(net):
    return getattr(net, "module", net)


@register_method("cps")
class CPS(Method):
    Options = CPSOptions

    def __init__(self, config):
        super().__init__(config)
        # the quality gate's state: running labeled-patch Dice, progress at which the gate opened
        self.quality, self.opened = 0.0, (None if self.opts.gate > 0 else 0.0)
        # per-class admission of each network's pseudo-labels (keyed by the network that makes them)
        self.classes = {k: ClassGate(config.class_gate, config.class_weights) for k in ("net1", "net2")}

    def state_dict(self) -> dict:
        return {"quality": self.quality, "opened": self.opened,
                "classes": {k: g.state_dict() for k, g in self.classes.items()}}

    def load_state_dict(self, st: dict) -> None:
        self.quality, self.opened = float(st["quality"]), st["opened"]
        for k, g in self.classes.items():
            g.load_state_dict(st.get("classes", {}).get(k, {}))

    def _update_gate(self, p1, p2, label, n_lab: int, n_cls: int, progress: float) -> None:
        """Fold this step's labeled-patch Dice of both networks into the running mean; open the gate
        when it reaches ``gate`` (after the wait). Summed over ranks, so every rank opens together."""
        if self.opened is not None:
            return
        counts = np.concatenate([dice_counts(p1[:n_lab], label, n_cls), dice_counts(p2[:n_lab], label, n_cls)])
        q = counts_dice(all_reduce_sum(counts, label.device))
        if q is not None:
            self.quality = 0.9 * self.quality + 0.1 * q
        if self.quality >= self.opts.gate and progress >= self.opts.wait:
            self.opened = progress

    def unlabeled_batch(self, labeled_batch: int) -> int:
        return labeled_batch  # Luque et al.: 2 labeled + 2 unlabeled

    def networks(self) -> dict:
        c, o = self.config, self.opts
        partner = o.partner or c.network
        popts = o.partner_options if o.partner_options is not None else \
            (dict(c.network_options) if partner == c.network else {})
        return {"net1": NetworkSpec(c.network, dict(c.network_options)), "net2": NetworkSpec(partner, dict(popts))}

    def predict_with(self) -> list[str]:
        return ["net1", "net2"]

    def _terms(self, out, n_lab, label, pseudo, lam, maker: str):
        """Supervised and cross-pseudo terms of one network's output on [labeled; unlabeled]; the
        pseudo-labels come from network ``maker`` and teach only the classes it has admitted."""
        kind = self.config.loss
        sup = seg_loss(_slice(out, slice(0, n_lab)), label, kind)
        cps = torch.zeros((), device=label.device)
        if lam > 0:
            ck, gate = self.opts.cps_loss, self.classes[maker]
            if pseudo.shape[0] > n_lab:
                gate.observe(pseudo[n_lab:], heads(out)[0].shape[1])
                cps = cps + gate.loss(_slice(out, slice(n_lab, None)), pseudo[n_lab:], kind=ck)
            if self.opts.on_labeled:
                cps = cps + gate.loss(_slice(out, slice(0, n_lab)), pseudo[:n_lab], kind=ck)
        return sup, cps

    def _admit(self, maker: str, pred, label, n_lab: int, n_cls: int) -> None:
        if self.classes[maker].needs_labeled_predictions:
            self.classes[maker].update(pred[:n_lab], label, n_cls)

    def losses(self, nets: dict, batch: dict, ctx: StepContext) -> dict:
        lam = cps_weight(self.opts, ctx.progress, self.opened) if self.opened is not None else 0.0
        image, label = batch["image"], batch["label"]
        n_lab = image.shape[0]
        # during the supervised-only wait the unlabeled patches would be computed for nothing
        x = torch.cat([image, batch["image_u"]]) if ("image_u" in batch and lam > 0) else image
        n1, n2 = nets["net1"], nets["net2"]
        if self.opts.memory == "joint":
            out1, out2 = n1(x), n2(x)
            p1, p2 = class_argmax(main_output(out1).detach(), 1), class_argmax(main_output(out2).detach(), 1)
            n_cls = main_output(out1).shape[1]
            self._admit("net1", p1, label, n_lab, n_cls)
            self._admit("net2", p2, label, n_lab, n_cls)
            sup1, cps1 = self._terms(out1, n_lab, label, p2, lam, "net2")
            sup2, cps2 = self._terms(out2, n_lab, label, p1, lam, "net1")
            loss = sup1 + sup2 + lam * (cps1 + cps2)
        else:
            p2 = None
            if lam > 0:
                with torch.no_grad():
                    p2 = class_argmax(main_output(_no_ddp(n2)(x)), 1)
            out1 = n1(x)
            n_cls = main_output(out1).shape[1]
            p1 = class_argmax(main_output(out1).detach(), 1)
            if p2 is not None:
                self._admit("net2", p2, label, n_lab, n_cls)
            sup1, cps1 = self._terms(out1, n_lab, label, p2, lam, "net2")
            l1 = sup1 + lam * cps1
            ctx.backward(l1)
            del out1
            out2 = n2(x)
            p2 = class_argmax(main_output(out2).detach(), 1)
            self._admit("net1", p1, label, n_lab, n_cls)
            sup2, cps2 = self._terms(out2, n_lab, label, p1, lam, "net1")
            l2 = sup2 + lam * cps2
            ctx.backward(l2)
            del out2
            loss = (l1 + l2).detach()
        agree = hard_agreement(p1[n_lab:], p2[n_lab:], n_cls) if x.shape[0] > n_lab else float("nan")
        out = {"loss": loss, "loss_sup_net1": sup1.detach(), "loss_sup_net2": sup2.detach(),
               "loss_cps_net1": cps1.detach(), "loss_cps_net2": cps2.detach(), "lambda": lam, "agreement_u": agree,
               **{f"{k}_{m}": v for m, g in self.classes.items() for k, v in g.log().items()}}
        if self.opts.gate > 0:
            self._update_gate(p1, p2, label, n_lab, n_cls, ctx.progress)
            out["labeled_dice"] = self.quality
        return out
