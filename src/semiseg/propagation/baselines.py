"""What annotators use today to fill the slices between annotated ones: the baselines of the
propagation benchmark.

- :func:`nearest_slice`: every slice copies the nearest annotated slice;
- :func:`shape_interpolation`: shape-based interpolation (Raya & Udupa 1990; Herman et al. 1992):
  each class's in-plane signed distance map (physical units) is interpolated linearly between
  consecutive annotated slices and thresholded at zero; a class absent from one of the two slices
  shrinks to nothing half-way (the empty side's distance is the other side's deepest inside).

Neither knows where the object ends beyond the outermost annotated slices: both copy the outermost
annotation ``reach`` slices further (default half the mean gap between annotated slices, so the
copies cover what uniformly placed annotations stand for; 0 with a single annotated slice).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..utils import SemisegError


def _prepare(sparse: np.ndarray, slices, axis: int):
    sparse = np.moveaxis(np.asarray(sparse), axis, 0)
    slices = sorted({int(s) for s in slices})
    if not slices:
        raise SemisegError("no annotated slice given")
    if slices[0] < 0 or slices[-1] >= sparse.shape[0]:
        raise SemisegError(f"annotated slices {slices} outside 0..{sparse.shape[0] - 1}")
    return sparse, slices


def default_reach(slices) -> int:
    s = sorted(slices)
    return int(round((s[-1] - s[0]) / (len(s) - 1) / 2)) if len(s) > 1 else 0


def _extend(out: np.ndarray, sparse: np.ndarray, slices, reach: int) -> None:
    lo, hi = slices[0], slices[-1]
    for d in range(1, reach + 1):
        if lo - d >= 0:
            out[lo - d] = sparse[lo]
        if hi + d < out.shape[0]:
            out[hi + d] = sparse[hi]


def nearest_slice(sparse: np.ndarray, slices, axis: int = 0, reach: int | None = None) -> np.ndarray:
    """Each slice between the outermost annotated ones copies the nearest annotated slice (ties: the
    lower one); ``reach`` slices beyond them copy the outermost."""
    sp, slices = _prepare(sparse, slices, axis)
    out = np.zeros_like(sp)
    ks = np.array(slices)
    for s in range(slices[0], slices[-1] + 1):
        out[s] = sp[ks[np.argmin(np.abs(ks - s))]]
    _extend(out, sp, slices, default_reach(slices) if reach is None else reach)
    return np.moveaxis(out, 0, axis)


def signed_distance(mask: np.ndarray, spacing) -> np.ndarray:
    """In-plane signed distance (negative inside, positive outside, in the spacing's units); an
    empty mask is far outside everywhere."""
    if not mask.any():
        return np.full(mask.shape, float(np.sum(np.array(mask.shape) * np.asarray(spacing))), np.float32)
    if mask.all():
        return np.full(mask.shape, -float(np.sum(np.array(mask.shape) * np.asarray(spacing))), np.float32)
    out = ndimage.distance_transform_edt(~mask, sampling=spacing)
    inside = ndimage.distance_transform_edt(mask, sampling=spacing)
    return (out - inside).astype(np.float32)


def shape_interpolation(sparse: np.ndarray, slices, axis: int = 0, spacing=(1.0, 1.0),
                        reach: int | None = None) -> np.ndarray:
    """Shape-based interpolation of every class between consecutive annotated slices; a voxel that
    two classes claim goes to the one it is deepest inside. ``spacing``: the in-plane spacing."""
    sp, slices = _prepare(sparse, slices, axis)
    classes = [int(c) for c in np.unique(sp[slices]) if c > 0]
    out = np.zeros_like(sp)
    for k in slices:
        out[k] = sp[k]
    if classes:
        sdf = {k: np.stack([signed_distance(sp[k] == c, spacing) for c in classes]) for k in slices}
        for a, b in zip(slices[:-1], slices[1:]):
            da, db = sdf[a].copy(), sdf[b].copy()
            for i, c in enumerate(classes):  # a class on one side only shrinks to nothing half-way
                ea, eb = not (sp[a] == c).any(), not (sp[b] == c).any()
                if ea != eb:
                    full = db[i] if ea else da[i]
                    (da if ea else db)[i] = max(0.0, -float(full.min()))
            for s in range(a + 1, b):
                t = (s - a) / (b - a)
                d = (1 - t) * da + t * db
                best = np.argmin(d, axis=0)
                out[s] = np.where(np.min(d, axis=0) < 0, np.array(classes)[best], 0)
    _extend(out, sp, slices, default_reach(slices) if reach is None else reach)
    return np.moveaxis(out, 0, axis)
