"""Segmentation losses: Dice + cross-entropy, with nnU-Net's deep-supervision weighting.

Soft Dice is computed per sample and averaged (``batch=False``), without the background class,
so a loss over a global batch is the mean of the losses over its parts: N DDP ranks with B/N
samples each give the gradient of one process with B samples.

Partial labels (:func:`partial_dice_ce`): pseudo-labels in which some classes are not trusted yet
(:mod:`.classaware`) and voxels weighted by where they came from (BCP's mixed patches).

The Propagation module's binary losses (Pham et al. 2022, Table 3): bootstrapped ("online hard example")
cross-entropy and the Lovasz hinge.
"""
from __future__ import annotations

import numpy as np
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


def dice_ce(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0,
            ce_weight: float = 1.0) -> torch.Tensor:
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
    """The full-resolution prediction of a network output (a tensor, or a list of deep-supervision
    heads, full resolution first: nets.unets.HeadsAsList)."""
    if isinstance(out, (list, tuple)):
        return out[0]
    return out


def heads(out) -> list[torch.Tensor]:
    """Every prediction head of a network output, full resolution first (a network with deep
    supervision returns them as a list in training mode, nets.unets.HeadsAsList)."""
    if isinstance(out, (list, tuple)):
        return list(out)
    return [out]


def seg_loss(out, target: torch.Tensor, kind: str = "dice_ce") -> torch.Tensor:
    """Loss of a (possibly deep-supervised) output against class indices."""
    hs = heads(out)
    w = deep_supervision_weights(len(hs))
    fn = {"dice_ce": dice_ce, "dice": lambda l, t: soft_dice_loss(l, t),
          "ce": lambda l, t: F.cross_entropy(l.float(), t)}[kind]
    return sum(wi * fn(h, target) for wi, h in zip(w, hs))


def partial_dice_ce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                    admitted: np.ndarray | None = None, class_weights: np.ndarray | None = None,
                    kind: str = "dice_ce") -> torch.Tensor:
    """Dice + CE (or one of them, ``kind``) of logits against partial labels: classes not
    ``admitted`` are merged with background (their probabilities summed, their voxels labeled
    background), so they are neither taught nor suppressed. ``mask`` (B, *spatial, in [0, 1])
    weights voxels (as BCP's ``mix_loss``: CE averaged over the masked voxels, soft Dice of the
    masked probabilities per sample over the admitted foreground classes); ``class_weights`` weight CE.
    With every class admitted, no mask and no weights it is :func:`dice_ce`."""
    probs = logits.float().softmax(1)
    n = probs.shape[1]
    keep = np.ones(n, bool) if admitted is None else np.asarray(admitted, bool).copy()
    keep[0] = True
    idx = torch.as_tensor(np.flatnonzero(keep), device=logits.device)
    if not keep.all():  # merge: background absorbs every class not admitted
        bg = probs[:, 0] + probs[:, torch.as_tensor(np.flatnonzero(~keep), device=logits.device)].sum(1)
        probs = torch.cat([bg[:, None], probs[:, idx[1:]]], 1)
        remap = torch.zeros(n, dtype=torch.long, device=logits.device)
        remap[idx] = torch.arange(len(idx), device=logits.device)
        target = remap[target.long()]
    m = torch.ones(target.shape, dtype=torch.float32, device=logits.device) if mask is None else \
        mask.to(torch.float32)
    out = torch.zeros((), device=logits.device)
    if kind in ("dice_ce", "ce"):
        nll = -probs.clamp_min(1e-8).log().gather(1, target.long()[:, None])[:, 0]
        if class_weights is not None:
            w = torch.as_tensor(np.asarray(class_weights)[keep], dtype=torch.float32, device=logits.device)
            nll = nll * w[target.long()]
        out = out + (nll * m).sum() / (m.sum() + 1e-16)
    if kind in ("dice_ce", "dice") and probs.shape[1] > 1:
        fg = probs[:, 1:] * m[:, None]
        onehot = F.one_hot(target.long(), probs.shape[1]).movedim(-1, 1)[:, 1:].to(fg.dtype) * m[:, None]
        dims = tuple(range(2, fg.dim()))
        out = out + 1 - ((2 * (fg * onehot).sum(dims) + 1e-5) / (fg.sum(dims) + onehot.sum(dims) + 1e-5)).mean()
    return out


def partial_seg_loss(out, target, mask=None, admitted=None, class_weights=None, kind: str = "dice_ce"):
    """:func:`partial_dice_ce` of a (possibly deep-supervised) output, nnU-Net's head weights."""
    hs = heads(out)
    return sum(wi * partial_dice_ce(h, target, mask, admitted, class_weights, kind)
               for wi, h in zip(deep_supervision_weights(len(hs)), hs))


# --------------------------------------------------------------------------- binary, for propagation
def bootstrapped_bce(logits: torch.Tensor, target: torch.Tensor, top_p: float = 1.0) -> torch.Tensor:
    """Binary cross-entropy averaged over the ``top_p`` fraction of the hardest pixels of each
    sample (STCN's bootstrapped CE, "OhemCE": top_p goes 1 -> 0.15 during training). logits and
    target (B, H, W)."""
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], not {top_p}")
    raw = F.binary_cross_entropy_with_logits(logits, target.float(), reduction="none").flatten(1)
    if top_p >= 1:
        return raw.mean()
    k = max(1, int(raw.shape[1] * top_p))
    return raw.topk(k, dim=1).values.mean()


def lovasz_hinge(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary Lovasz hinge (Berman et al., CVPR 2018), per image then averaged: a convex surrogate
    of 1 - IoU of the positive class. logits and target (B, H, W); an image without foreground
    still counts (its loss pushes the logits below zero)."""
    out = []
    for lg, tg in zip(logits.flatten(1), target.flatten(1).float()):
        signs = 2 * tg - 1
        errors = 1 - lg * signs
        errors_sorted, perm = torch.sort(errors, descending=True)
        gt = tg[perm]
        inter = gt.sum() - gt.cumsum(0)
        union = gt.sum() + (1 - gt).cumsum(0)
        jac = 1 - inter / union
        grad = torch.cat([jac[:1], jac[1:] - jac[:-1]])
        out.append(torch.dot(F.relu(errors_sorted), grad))
    return torch.stack(out).mean()
