"""Supervised training of one network on the labeled patches: the lower and upper bounds, and the
pre-training stage of BCP (Bai et al. 2023) with ``mix="copy-paste"``: each labeled patch gets a
box (``box`` of the patch per axis) of the next patch of the batch pasted in, and is supervised by
the two true labels pasted alike."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..utils import SemisegError
from .base import Method, register_method
from .losses import seg_loss
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

    def losses(self, nets: dict, batch: dict, state: dict) -> dict:
        image, label = batch["image"], batch["label"]
        if self.opts.mix == "copy-paste" and image.shape[0] > 1:
            m = masks(image.shape[0], image.shape[2:], self.opts.box, state["iteration"], self.config.seed,
                      image.device)
            other = torch.roll(torch.arange(image.shape[0], device=image.device), -1)
            image, label = paste(image, image[other], m), paste(label, label[other], m)
        return {"loss": seg_loss(nets["net"](image), label, self.config.loss)}
