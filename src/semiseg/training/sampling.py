"""Training batches, drawn from the preprocessed cache by memory map.

A batch is a pure function of (seed, iteration, rank): :class:`PatchBatches` is a map-style
dataset whose item ``i`` is the batch of iteration ``i``, each sample drawn from its own
``numpy.random.default_rng([seed, i, j])`` (``j`` its index in the *global* batch). So

- a resumed run gets exactly the batches it would have had (the sampler state is the iteration),
- ``DataLoader`` workers can build batches in any order and number,
- under DDP rank ``r`` builds samples ``j`` in ``[r*b, (r+1)*b)`` of the global batch: N ranks see
  exactly the batch a single process with the global batch size sees.

Foreground oversampling is nnU-Net's: the last ``round(B * p)`` samples of a global labeled batch
are centred on a voxel of a class picked at random among those present in the case (from the
cached class locations), so small and rare classes are seen; the others are uniformly placed.
Batches are plain dicts of tensors: ``image`` (B, C, *patch), ``label`` (B, *patch), and with an
unlabeled share ``image_u`` (B_u, C, *patch).
"""
from __future__ import annotations

import numpy as np
import torch

from ..planning import Configuration
from ..planning.spacing import is_anisotropic
from ..preprocessing.cache import CaseCache
from ..utils import SemisegError
from .augmentation import AugmentConfig, draw, extract


def _center(rng, shape, patch_full, fg_voxel=None):
    """Patch centre in case voxels: on ``fg_voxel`` when given, else uniform; clipped so the patch
    stays inside the case where it fits (and centred with jitter where it does not)."""
    c = []
    for a, (s, p) in enumerate(zip(shape, patch_full)):
        lo, hi = (p - 1) / 2, s - 1 - (p - 1) / 2
        if hi < lo:  # the case is smaller than the patch on this axis
            mid, j = (s - 1) / 2, (p - s) / 2
            lo, hi = mid - j, mid + j
        v = float(fg_voxel[a]) if fg_voxel is not None else rng.uniform(lo, hi)
        c.append(min(max(v, lo), hi))
    return c


class PatchBatches(torch.utils.data.Dataset):
    def __init__(self, work, labeled: list[str], cfg: dict, spacing, batch_size: int, seed: int,
                 aug: AugmentConfig, fg_oversample: float = 0.33, unlabeled: list[str] | None = None,
                 unlabeled_batch: int = 0, rank: int = 0, world: int = 1, patch_size=None,
                 label_dirs: dict | None = None, pseudo_share: float | None = None):
        if batch_size % world or unlabeled_batch % world:
            raise SemisegError(f"batch sizes ({batch_size} labeled, {unlabeled_batch} unlabeled) must be "
                               f"divisible by the number of processes ({world})")
        if not labeled:
            raise SemisegError("no labeled training cases")
        self.lab = CaseCache(work, labeled, True, label_dirs)
        self.pseudo = set(label_dirs or ())  # cases whose labels are pseudo-labels
        self.true_ids = [c for c in labeled if c not in self.pseudo]
        self.pseudo_ids = [c for c in labeled if c in self.pseudo]
        # a labeled patch comes from a pseudo-labeled scan with this probability (None: uniform over scans)
        self.pseudo_share = pseudo_share if self.true_ids and self.pseudo_ids else None
        self.unl = CaseCache(work, unlabeled or [], False) if unlabeled_batch else None
        if unlabeled_batch and not unlabeled:
            raise SemisegError("an unlabeled batch share was asked for but the split has no unlabeled cases")
        self.patch = list(patch_size or cfg["patch_size"])
        self.slice_axis = Configuration(cfg, patch_size=self.patch).slice_axis
        self.slice_position = Configuration(cfg).slice_position and self.slice_axis is not None
        self.spacing = list(spacing)
        inplane_sp = [s for a, s in enumerate(self.spacing) if a != self.slice_axis] if self.slice_axis is not None \
            else self.spacing
        self.inplane_only = len(self.patch) == 3 and is_anisotropic(inplane_sp)
        self.B, self.Bu, self.seed, self.aug, self.p_fg = batch_size, unlabeled_batch, seed, aug, fg_oversample
        self.rank, self.world = rank, world

    def __len__(self):
        return 1 << 40

    def _patch_full(self):
        if self.slice_axis is None:
            return self.patch
        full = list(self.patch)
        full.insert(self.slice_axis, 1)
        return full

    def sample(self, it: int, j: int, labeled: bool):
        cache = self.lab if labeled else self.unl
        rng = np.random.default_rng([self.seed, it, j, 0 if labeled else 1])
        ids = cache.ids
        if labeled and self.pseudo_share is not None:
            ids = self.pseudo_ids if rng.random() < self.pseudo_share else self.true_ids
        cid = ids[int(rng.integers(len(ids)))]
        data, seg, locs = cache.get(cid)
        shape = data.shape[1:]
        fg = None
        if labeled and j >= round(self.B * (1 - self.p_fg)) and locs is not None and len(locs):
            classes = np.unique(locs[:, 0])
            c = classes[int(rng.integers(len(classes)))]
            rows = locs[locs[:, 0] == c]
            fg = rows[int(rng.integers(len(rows))), 1:]
        center = _center(rng, shape, self._patch_full(), fg)
        if self.slice_axis is not None and fg is None:
            center[self.slice_axis] = float(rng.integers(shape[self.slice_axis]))
        params = draw(rng, self.aug, len(self.patch), self.inplane_only)
        img, lab = extract(data, seg if labeled else None, center, self.patch, params, self.spacing,
                           self.inplane_only, self.aug, self.slice_axis)
        if self.slice_position:  # PE(k) = k / T of the patch's slice, a constant last channel
            T = shape[self.slice_axis]
            img = torch.cat([img, torch.full_like(img[:1], int(center[self.slice_axis]) / T)])
        return img, lab, cid

    def __getitem__(self, it: int) -> dict:
        b = self.B // self.world
        js = range(self.rank * b, (self.rank + 1) * b)
        got = [self.sample(it, j, True) for j in js]
        batch = {"image": torch.stack([g[0] for g in got]), "label": torch.stack([g[1] for g in got]),
                 "iteration": it}
        if self.pseudo:
            batch["pseudo"] = torch.tensor([g[2] in self.pseudo for g in got])
        if self.Bu:
            bu = self.Bu // self.world
            gu = [self.sample(it, j, False) for j in range(self.rank * bu, (self.rank + 1) * bu)]
            batch["image_u"] = torch.stack([g[0] for g in gu])
        return batch


def _worker_init(_):
    torch.set_num_threads(1)


class _From(torch.utils.data.Sampler):
    def __init__(self, start: int):
        self.start = start

    def __iter__(self):
        i = self.start
        while True:
            yield i
            i += 1

    def __len__(self):
        return 1 << 40


def batch_loader(ds: PatchBatches, start: int, workers: int, prefetch: int = 2):
    """An endless iterator over batches ``start, start+1, ...``, built by ``workers`` processes
    (0 = in this process) ahead of the training step."""
    kw = {}
    if workers > 0:
        kw = {"num_workers": workers, "prefetch_factor": prefetch, "persistent_workers": False,
              "worker_init_fn": _worker_init}
    return iter(torch.utils.data.DataLoader(ds, batch_size=None, sampler=_From(start), **kw))
