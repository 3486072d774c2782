"""Supervised training of one network on the labeled patches: the lower and upper bounds, and the
pre-training stage of BCP (Bai et al. 2023) with ``mix="copy-paste"``: each labeled patch gets a
box (``box`` of the patch per axis) of the next patch of the batch pasted in, and is supervised by
the two true labels pasted alike.

Patches of pseudo-labeled scans (``--pseudo-labels``) are supervised like true labels, except that
with ``pseudo_classes`` (``semiseg fit`` sets it to the classes its teacher learned) the classes
the teacher did not learn are merged with background on them (partial labels,
:func:`~.losses.partial_dice_ce`): a teacher that never predicts a class does not teach the
student that the class is background."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..utils import SemisegError
from .base import Method, StepContext, register_method
from .losses import heads, partial_seg_loss, seg_loss
from .mixing import masks, paste


@dataclass
class SupervisedOptions:
    mix: str = field(default="none", metadata={"choices": ["none", "copy-paste"],
                                               "help": "copy-paste between the labeled patches of a batch (BCP's "
                                                       "pre-training)"})
    box: float = field(default=2 / 3, metadata={"help": "side of the pasted box as a share of the patch per axis"})

    def __post_init__(self):
        if self.mix not in ("none", "copy-paste") or not 0 < self.box < 1:
            raise SemisegError(f"supervised mix must be none or copy-paste and box in (0, 1), not {self.mix!r}, "
                               f"{self.box}")


@register_method("supervised")
class Supervised(Method):
    Options = SupervisedOptions

    def losses(self, nets: dict, batch: dict, ctx: StepContext) -> dict:
        image, label = batch["image"], batch["label"]
        if self.opts.mix == "copy-paste" and image.shape[0] > 1:
            m = masks(image.shape[0], image.shape[2:], self.opts.box, ctx.iteration, self.config.seed,
                      image.device)
            other = torch.roll(torch.arange(image.shape[0], device=image.device), -1)
            image, label = paste(image, image[other], m), paste(label, label[other], m)
        out = nets["net"](image)
        pseudo = batch.get("pseudo")
        if self.config.pseudo_classes is None or pseudo is None or not bool(pseudo.any()):
            return {"loss": seg_loss(out, label, self.config.loss)}
        n = image.shape[0]
        hs = heads(out)
        admitted = np.zeros(hs[0].shape[1], bool)
        admitted[[c for c in self.config.pseudo_classes if c < len(admitted)]] = True
        loss = pseudo.sum() / n * partial_seg_loss([h[pseudo] for h in hs], label[pseudo], admitted=admitted,
                                                   kind=self.config.loss)
        if not bool(pseudo.all()):
            loss = loss + (~pseudo).sum() / n * seg_loss([h[~pseudo] for h in hs], label[~pseudo], self.config.loss)
        return {"loss": loss}
