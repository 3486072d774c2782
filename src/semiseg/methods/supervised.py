"""Supervised training of one network on the labeled patches: the lower and upper bounds."""
from __future__ import annotations

from .base import Method, register_method
from .losses import seg_loss


@register_method("supervised")
class Supervised(Method):
    def losses(self, nets: dict, batch: dict, state: dict) -> dict:
        return {"loss": seg_loss(nets["net"](batch["image"]), batch["label"], self.config.loss)}
