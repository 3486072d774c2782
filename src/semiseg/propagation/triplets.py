"""Training batches of the Propagation module: triplets of neighbouring slices (Pham et al. 2022,
section 3.2, after STCN's main training), one object at a time.

Each sample picks a labeled case, a class present in it and a slice holding that class (from the
cached class locations, so small classes are seen), then two more slices further along the slice
axis in one direction, each 1..``max_skip`` slices on. The three slices are cropped (``crop`` x
``crop`` in-plane, around the object with a random offset, zero-padded at the border), flipped and
rotated alike, and the object's binary mask goes with each; the object may vanish in the later
slices, which teaches the network where an organ ends. Deterministic in (seed, iteration, sample).
"""
from __future__ import annotations

import numpy as np
import torch

from ..preprocessing.cache import CaseCache
from ..utils import SemisegError


def _crop2d(a: np.ndarray, cy: int, cx: int, size: int) -> np.ndarray:
    """(..., H, W) -> (..., size, size) centred at (cy, cx), zero outside."""
    H, W = a.shape[-2:]
    out = np.zeros(a.shape[:-2] + (size, size), a.dtype)
    y0, x0 = cy - size // 2, cx - size // 2
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(H, y0 + size), min(W, x0 + size)
    if ye > ys and xe > xs:
        out[..., ys - y0:ye - y0, xs - x0:xe - x0] = a[..., ys:ye, xs:xe]
    return out


class TripletBatches(torch.utils.data.Dataset):
    def __init__(self, work, labeled: list[str], slice_axis: int, batch_size: int, seed: int, crop: int = 128,
                 max_skip: int = 5, rank: int = 0, world: int = 1, label_dirs: dict | None = None,
                 intensity: float = 0.1):
        if not labeled:
            raise SemisegError("no labeled training cases")
        if batch_size % world:
            raise SemisegError(f"batch size {batch_size} must be divisible by the number of processes ({world})")
        if crop < 16 or crop % 8:
            raise SemisegError(f"the triplet crop must be a multiple of 8 and >= 16, not {crop}")
        if max_skip < 1:
            raise SemisegError(f"max_skip must be >= 1, not {max_skip}")
        self.cache = CaseCache(work, labeled, True, label_dirs)
        self.axis, self.B, self.seed, self.crop, self.max_skip = int(slice_axis), batch_size, seed, crop, max_skip
        self.rank, self.world, self.intensity = rank, world, intensity
        self.patch = [crop, crop]

    def __len__(self):
        return 1 << 40

    def sample(self, it: int, j: int):
        rng = np.random.default_rng([self.seed, it, j, 2])
        for _ in range(50):
            cid = self.cache.ids[int(rng.integers(len(self.cache.ids)))]
            data, seg, locs = self.cache.get(cid)
            if locs is not None and len(locs):
                break
        else:
            raise SemisegError("no labeled training case holds any foreground to propagate")
        c = rng.choice(np.unique(locs[:, 0]))
        rows = locs[locs[:, 0] == c]
        v = rows[int(rng.integers(len(rows))), 1:]
        ax = self.axis
        n = data.shape[1 + ax]
        d = 1 if rng.random() < 0.5 else -1
        steps = rng.integers(1, self.max_skip + 1, 2)
        ks = [int(v[ax])]
        for s in steps:
            k = ks[-1] + d * int(s)
            if not 0 <= k < n:  # the other way at the volume's end
                k = ks[-1] - d * int(s)
            ks.append(int(np.clip(k, 0, n - 1)))
        inplane = [int(x) for a, x in enumerate(v) if a != ax]
        jit = rng.integers(-self.crop // 4, self.crop // 4 + 1, 2)
        cy, cx = inplane[0] + int(jit[0]), inplane[1] + int(jit[1])
        frames = np.stack([_crop2d(np.take(data, k, axis=1 + ax), cy, cx, self.crop) for k in ks])
        masks = np.stack([_crop2d(np.take(seg, k, axis=ax) == c, cy, cx, self.crop) for k in ks])
        for axis in (-1, -2):
            if rng.random() < 0.5:
                frames, masks = np.flip(frames, axis), np.flip(masks, axis)
        r = int(rng.integers(4))
        frames, masks = np.rot90(frames, r, (-2, -1)), np.rot90(masks, r, (-2, -1))
        frames = frames.astype(np.float32)
        if self.intensity:
            frames = frames * float(rng.uniform(1 - self.intensity, 1 + self.intensity)) + \
                float(rng.normal(0, self.intensity))
        return torch.from_numpy(np.ascontiguousarray(frames)), torch.from_numpy(np.ascontiguousarray(masks))

    def __getitem__(self, it: int) -> dict:
        b = self.B // self.world
        got = [self.sample(it, j) for j in range(self.rank * b, (self.rank + 1) * b)]
        return {"frames": torch.stack([g[0] for g in got]), "masks": torch.stack([g[1] for g in got]),
                "iteration": it}
