"""Bidirectional copy-paste (BCP, Bai et al. 2023), shared by the methods that mix patches.

A box of ``size`` (a share of the patch per axis) at a random place is cut from one patch and
pasted into another. For a labeled patch ``a`` and an unlabeled ``u``, BCP trains on both
directions: ``u`` pasted into ``a`` (outside the box: ``a``'s true label; inside: ``u``'s
pseudo-label) and ``a`` pasted into ``u`` (outside: ``u``'s pseudo-label; inside: ``a``'s label).
Each voxel's loss weight says where its target came from (true labels 1.0, pseudo-labels
``pseudo_weight``). The boxes are drawn from a generator seeded by the iteration, so a resumed
run draws the same boxes.
"""
from __future__ import annotations

import torch


def box_mask(shape, size: float, generator: torch.Generator, device) -> torch.Tensor:
    """A (spatial ``shape``) mask: 1 everywhere but 0 in one box of ``size`` x each side."""
    m = torch.ones(tuple(shape), device=device)
    sl = []
    for s in shape:
        w = max(1, int(round(s * size)))
        lo = int(torch.randint(0, s - w + 1, (1,), generator=generator))
        sl.append(slice(lo, lo + w))
    m[tuple(sl)] = 0
    return m


def paste(outer: torch.Tensor, inner: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``outer`` where ``mask`` is 1, ``inner`` in the box (mask 0). Images (B, C, *s) or labels (B, *s)."""
    m = mask[:, None] if outer.dim() == mask.dim() + 1 else mask
    return outer * m + inner * (1 - m) if outer.is_floating_point() else torch.where(m.bool(), outer, inner)


def masks(n: int, spatial, size: float, iteration: int, seed: int, device) -> torch.Tensor:
    """``n`` box masks (n, *spatial), a pure function of (seed, iteration)."""
    g = torch.Generator().manual_seed(hash((int(seed), int(iteration), 7919)) % (2 ** 63))
    return torch.stack([box_mask(spatial, size, g, "cpu") for _ in range(n)]).to(device)
