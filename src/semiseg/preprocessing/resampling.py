"""Resampling to a target spacing (nnU-Net's rules): third-order for images, one-hot linear for
labels, and the coarse axis of an anisotropic grid interpolated separately ("separate z")."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..planning.spacing import ANISOTROPY_THRESHOLD


def new_shape(shape, old_spacing, new_spacing) -> list[int]:
    return [max(1, int(round(s * o / n))) for s, o, n in zip(shape, old_spacing, new_spacing)]


def _aniso_axis(old_spacing, new_spacing, threshold: float) -> int | None:
    """Axis to resample separately (nearest) when either grid is anisotropic (nnU-Net rule)."""
    for sp in (old_spacing, new_spacing):
        sp = np.asarray(sp, float)
        if sp.max() / sp.min() > threshold:
            ax = np.flatnonzero(sp == sp.max())
            if len(ax) == 1:
                return int(ax[0])
    return None


def _zoom(a: np.ndarray, shape, order: int) -> np.ndarray:
    factors = [n / o for n, o in zip(shape, a.shape)]
    if all(f == 1 for f in factors):
        return a
    return ndimage.zoom(a, factors, order=order, mode="nearest", grid_mode=True, prefilter=order > 1)


def resample_image(data: np.ndarray, shape, old_spacing, new_spacing, order: int = 3,
                   order_z: int = 0, aniso_threshold: float = ANISOTROPY_THRESHOLD) -> np.ndarray:
    """Resample (C, z, y, x) ``data`` to spatial ``shape``. With anisotropic spacing the coarse
    axis is interpolated separately with ``order_z`` (nnU-Net's 'separate z')."""
    shape = list(shape)
    if list(data.shape[1:]) == shape:
        return data
    ax = _aniso_axis(old_spacing, new_spacing, aniso_threshold)
    out = []
    for c in range(data.shape[0]):
        a = data[c].astype(np.float32, copy=False)
        if ax is None:
            a = _zoom(a, shape, order)
        else:
            inplane = list(a.shape)
            inplane[ax] = a.shape[ax]
            for i in range(3):
                if i != ax:
                    inplane[i] = shape[i]
            a = _zoom(a, inplane, order)
            a = _zoom(a, shape, order_z)
        out.append(a.astype(np.float32, copy=False))
    return np.stack(out)


def resample_label(seg: np.ndarray, shape, old_spacing, new_spacing,
                   aniso_threshold: float = ANISOTROPY_THRESHOLD) -> np.ndarray:
    """Resample a label map to ``shape``: linear interpolation of each class's one-hot mask then
    argmax (nearest along a separately treated anisotropic axis). Keeps the dtype."""
    shape = list(shape)
    if list(seg.shape) == shape:
        return seg
    ax = _aniso_axis(old_spacing, new_spacing, aniso_threshold)
    inplane = list(shape)
    if ax is not None:
        inplane[ax] = seg.shape[ax]
    classes = np.unique(seg)
    best = np.full(inplane, -1.0, np.float32)
    out = np.zeros(inplane, seg.dtype)
    for c in classes:
        p = _zoom((seg == c).astype(np.float32), inplane, 1)
        upd = p > best
        out[upd] = c
        best[upd] = p[upd]
    if ax is not None:
        out = _zoom(out, shape, 0)
    return out
