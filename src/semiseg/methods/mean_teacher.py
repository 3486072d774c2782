"""Mean teacher (Tarvainen and Valpola 2017) with bidirectional copy-paste (BCP, Bai et al. 2023).

Two networks of one architecture: the student ``net`` (trained by gradient) and the ``teacher``, an
exponential moving average of the student's weights (``decay``; no optimizer, updated in
``after_step``), which starts as a copy of the student (of the warm-start run's network with
``--init``, the way BCP starts from its supervised pre-training). The teacher labels the unlabeled
patches with its argmax (no gradient, one forward pass), optionally only where its confidence
reaches ``threshold``, and keeps each class's largest connected component (``largest_component``,
BCP). The teacher validates and predicts. A class enters the pseudo-label terms only once the
teacher predicts it on the labeled patches (``--class-gate``, :mod:`.classaware`).

- ``mix="none"``: loss = Dice+CE(student(labeled), labels) + ``pseudo_weight`` *
  Dice+CE(student(unlabeled), teacher's pseudo-labels).
- ``mix="copy-paste"`` (BCP): each labeled patch ``a`` is paired with an unlabeled patch ``u``; a
  box of ``box`` (2/3) of the patch per axis is pasted both ways, ``u`` into ``a`` and ``a`` into
  ``u``; each mixed patch is supervised by the true label where its voxels came from ``a``
  (weight 1) and by the pseudo-label where they came from ``u`` (weight ``pseudo_weight``, 0.5),
  each term (Dice + CE) / 2 (BCP's ``mix_loss``).

A step costs the student's forward and backward on twice the labeled batch and a teacher forward
on the unlabeled batch, about 1.3 supervised steps at the same batch, against CPS's two networks.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..inference.sliding_window import keep_largest_component
from ..utils import SemisegError
from .base import Method, NetworkSpec, StepContext, register_method
from .classaware import ClassGate, rank_world
from .losses import main_output, partial_seg_loss, seg_loss
from .mixing import masks, paste


@dataclass
class MeanTeacherOptions:
    decay: float = field(default=0.99, metadata={"help": "EMA decay of the teacher's weights"})
    mix: str = field(default="copy-paste", metadata={
        "flag": "--mix", "choices": ["none", "copy-paste"],
        "help": "copy-paste: BCP's bidirectional boxes between labeled and unlabeled patches; none: the "
                "unlabeled patches alone"})
    box: float = field(default=2 / 3, metadata={"help": "side of the pasted box as a share of the patch per axis"})
    pseudo_weight: float = field(default=0.5, metadata={"help": "weight of pseudo-labeled voxels (true labels 1)"})
    threshold: float = field(default=0.0, metadata={
        "help": "use a pseudo-labeled voxel only where the teacher's probability reaches this (0: every voxel)"})
    largest_component: bool = field(default=True, metadata={
        "flag": "--mean-teacher-all-components",
        "help": "keep every connected component of the teacher's map (default: each class's largest, as BCP)"})

    def __post_init__(self):
        if not 0 <= self.decay < 1:
            raise SemisegError(f"mean-teacher decay must be in [0, 1), not {self.decay}")
        if self.mix not in ("none", "copy-paste"):
            raise SemisegError(f"mean-teacher mix must be none or copy-paste, not {self.mix!r}")
        if not 0 < self.box < 1:
            raise SemisegError(f"mean-teacher box must be a share in (0, 1), not {self.box}")
        if self.pseudo_weight < 0 or not 0 <= self.threshold < 1:
            raise SemisegError("mean-teacher pseudo_weight must be >= 0 and threshold in [0, 1)")


@register_method("mean-teacher")
class MeanTeacher(Method):
    Options = MeanTeacherOptions

    def __init__(self, config):
        super().__init__(config)
        self.gate = ClassGate(config.class_gate, config.class_weights)

    def state_dict(self) -> dict:
        return {"class_gate": self.gate.state_dict()}

    def load_state_dict(self, st: dict) -> None:
        self.gate.load_state_dict(st.get("class_gate", {}))

    def networks(self) -> dict:
        spec = NetworkSpec(self.config.network, dict(self.config.network_options))
        return {"net": spec, "teacher": NetworkSpec(spec.network, dict(spec.options), trainable=False)}

    def predict_with(self) -> list[str]:
        return ["teacher"]

    def unlabeled_batch(self, labeled_batch: int) -> int:
        return labeled_batch  # BCP pairs each labeled patch with an unlabeled one

    def setup(self, nets: dict) -> None:
        nets["teacher"].load_state_dict(nets["net"].state_dict())
        for p in nets["teacher"].parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def after_step(self, nets: dict, ctx: StepContext) -> None:
        d = self.opts.decay
        for t, s in zip(nets["teacher"].parameters(), nets["net"].parameters()):
            t.mul_(d).add_(s.detach(), alpha=1 - d)
        for t, s in zip(nets["teacher"].buffers(), nets["net"].buffers()):
            t.copy_(s)

    @torch.no_grad()
    def pseudo_labels(self, teacher, image_u: torch.Tensor, image: torch.Tensor,
                      label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's argmax on unlabeled patches and where to trust it (1/0 per voxel). While a
        class is not admitted yet (:mod:`.classaware`), the teacher also predicts the labeled
        patches (same forward pass) to measure its per-class Dice."""
        teacher.eval()
        n_u = image_u.shape[0]
        check = self.gate.needs_labeled_predictions
        probs = main_output(teacher(torch.cat([image_u, image]) if check else image_u)).float().softmax(1)
        conf, pred = probs.max(1)
        if check:
            self.gate.update(pred[n_u:], label, probs.shape[1])
        conf, label_u = conf[:n_u], pred[:n_u]
        if self.opts.largest_component:
            lab = label_u.cpu().numpy().astype(np.int32)
            classes = list(range(1, probs.shape[1]))
            label_u = torch.from_numpy(np.stack([keep_largest_component(x, classes) for x in lab])).to(pred.device)
        self.gate.observe(label_u, probs.shape[1])
        trust = (conf >= self.opts.threshold).float()
        return label_u, trust

    def losses(self, nets: dict, batch: dict, ctx: StepContext) -> dict:
        image, label = batch["image"], batch["label"]
        if "image_u" not in batch:
            raise SemisegError("mean-teacher needs unlabeled patches (--unlabeled-batch > 0 and unlabeled cases)")
        image_u = batch["image_u"]
        plab, trust = self.pseudo_labels(nets["teacher"], image_u, image, label)
        student, w = nets["net"], self.opts.pseudo_weight
        if self.opts.mix == "none":
            sup = seg_loss(student(image), label, self.config.loss)
            unsup = self.gate.loss(student(image_u), plab, trust)
            return {"loss": sup + w * unsup, "loss_sup": sup.detach(), "loss_pseudo": unsup.detach(),
                    "trusted": float(trust.mean()), **self.gate.log()}
        n = min(image.shape[0], image_u.shape[0])
        rank, world = rank_world()
        m = masks(n * world, image.shape[2:], self.opts.box, ctx.iteration, self.config.seed,
                  image.device)[rank * n:(rank + 1) * n]
        a, la, u, pu, tu = image[:n], label[:n], image_u[:n], plab[:n], trust[:n]
        x = torch.cat([paste(a, u, m), paste(u, a, m)])  # u into a's box; a into u's box
        out = student(x)
        # where each mixed voxel's target came from: the labeled patch (weight 1) or the teacher (w)
        target = torch.cat([paste(la, pu, m), paste(pu, la, m)])
        from_label = torch.cat([m, 1 - m])
        weight_u = torch.cat([paste(torch.zeros_like(m), tu, m), paste(tu, torch.zeros_like(m), m)])
        # each term (Dice + CE) / 2, BCP's mix_loss; the teacher's part only over admitted classes
        l_lab = partial_seg_loss(out, target, from_label) / 2
        l_u = self.gate.loss(out, target, weight_u) / 2
        return {"loss": l_lab + w * l_u, "loss_labeled": l_lab.detach(), "loss_pseudo": l_u.detach(),
                "trusted": float(tu.mean()), **self.gate.log()}
