"""Supervised training of one network on the labeled patches: the lower and upper bounds."""
from __future__ import annotations

from ..losses import seg_loss
from . import register_method


@register_method("supervised")
class Supervised:
    def __init__(self, config):
        self.config = config
        if config.method_options:
            from ..utils import SemisegError

            raise SemisegError(f"supervised training takes no method options (got {', '.join(config.method_options)})")

    def unlabeled_batch(self, labeled_batch: int) -> int:
        return 0

    def networks(self) -> dict:
        return {"net": {"network": self.config.network, "options": dict(self.config.network_options)}}

    def predict_with(self) -> list[str]:
        return ["net"]

    def losses(self, nets: dict, batch: dict, state: dict) -> dict:
        loss = seg_loss(nets["net"](batch["image"]), batch["label"], self.config.loss)
        return {"loss": loss}
