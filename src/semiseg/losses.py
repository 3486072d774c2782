"""Segmentation losses: Dice + cross-entropy, with nnU-Net's deep-supervision weighting.

Soft Dice is computed per sample and averaged (``batch=False``), without the background class,
so a loss over a global batch is the mean of the losses over its parts: N DDP ranks with B/N
samples each give the gradient of one process with B samples.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5,
                   include_background: bool = False) -> torch.Tensor:
    """1 - mean soft Dice over samples and classes. ``target``: class indices (B, *spatial)."""
    probs = logits.float().softmax(1)
    onehot = F.one_hot(target.long(), probs.shape[1]).movedim(-1, 1).to(probs.dtype)
    if not include_background:
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    dims = tuple(range(2, probs.dim()))
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    return 1 - ((2 * inter + smooth) / (denom + smooth)).mean()


def dice_ce(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0, ce_weight: float = 1.0) -> torch.Tensor:
    out = 0.0
    if ce_weight:
        out = out + ce_weight * F.cross_entropy(logits.float(), target.long())
    if dice_weight:
        out = out + dice_weight * soft_dice_loss(logits, target)
    return out


def deep_supervision_weights(n_heads: int) -> list[float]:
    """nnU-Net's weights: 1, 1/2, 1/4, ... for full to coarse resolution, normalised to sum 1."""
    w = [0.5 ** i for i in range(n_heads)]
    s = sum(w)
    return [x / s for x in w]


def main_output(out: torch.Tensor | list) -> torch.Tensor:
    """The full-resolution prediction of a network output (deep supervision stacked on dim 1)."""
    if isinstance(out, (list, tuple)):
        return out[0]
    return out


def heads(out) -> list[torch.Tensor]:
    """Every prediction head of a network output, full resolution first. DynUNet stacks them as
    (B, heads, C, *patch) in training mode."""
    if isinstance(out, (list, tuple)):
        return list(out)
    return [out]


def seg_loss(out, target: torch.Tensor, kind: str = "dice_ce") -> torch.Tensor:
    """Loss of a (possibly deep-supervised) output against class indices."""
    hs = heads(out)
    w = deep_supervision_weights(len(hs))
    fn = {"dice_ce": dice_ce, "dice": lambda l, t: soft_dice_loss(l, t), "ce": lambda l, t: F.cross_entropy(l.float(), t)}[kind]
    return sum(wi * fn(h, target) for wi, h in zip(w, hs))
