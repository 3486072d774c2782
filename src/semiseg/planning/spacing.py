"""Spacing rules, one home each: the anisotropy threshold, nnU-Net's target spacing, the slice axis
(lowest resolution) and the forced inference spacing (Huang et al. 2022)."""
from __future__ import annotations

import numpy as np

from ..utils import SemisegError

# nnU-Net's anisotropy rule: a grid is anisotropic when its coarsest spacing is more than this many
# times its finest (and for the target spacing, that axis also has < 1/this of the voxels). Used by
# planning, resampling ("separate z") and augmentation (in-plane only).
ANISOTROPY_THRESHOLD = 3.0


def is_anisotropic(spacing, threshold: float = ANISOTROPY_THRESHOLD) -> bool:
    return max(spacing) / min(spacing) > threshold


def lowest_resolution_axis(spacing_zyx) -> int:
    """The axis (z, y, x order) with the largest spacing; z on ties. The slice axis of the 2D
    configuration and of the consensus score."""
    sp = list(spacing_zyx)
    return int(max(range(len(sp)), key=lambda a: (sp[a], -a)))


def target_spacing(spacings: np.ndarray, shapes: np.ndarray) -> tuple[list[float], str]:
    """nnU-Net's full-resolution target spacing: the median, or for anisotropic data the 10th
    percentile along the coarse axis (never finer than the other axes)."""
    spacings, shapes = np.asarray(spacings, float), np.asarray(shapes, float)
    target = np.median(spacings, 0)
    sizes = np.median(shapes * spacings / target, 0)
    worst = int(np.argmax(target))
    other = [i for i in range(len(target)) if i != worst]
    aniso_spacing = target[worst] > ANISOTROPY_THRESHOLD * max(target[other])
    aniso_voxels = sizes[worst] * ANISOTROPY_THRESHOLD < min(sizes[other])
    why = "median spacing"
    if aniso_spacing and aniso_voxels:
        t = float(np.percentile(spacings[:, worst], 10))
        if t < max(target[other]):
            t = max(max(target[other]), t) + 1e-5
        target[worst] = t
        why = (f"anisotropic (axis {worst} spacing > 3x the others and < 1/3 of their voxels): "
               "10th percentile along that axis, median elsewhere")
    return [float(x) for x in target], why


def forced_inference_spacing(forced: list[float | None], original_zyx: list[float],
                             n_slices: int, rule: str = "fixed") -> list[float]:
    """Spacing to resample an inference image to (Huang et al. 2022, section 2.2), in (z, y, x).

    ``forced`` holds the default (s_z, s_y, s_x); ``None`` keeps the image's own spacing on that
    axis. ``rule="slices"`` applies Huang et al.'s slice-count rule: fewer than 150 slices -> only
    s_x and s_y are forced (s_z stays the original); 150..600 -> all forced; more than 600 ->
    s_x, s_y forced and s_z = max(0.8, 600 / S) * s_z(original).
    """
    out = [o if f is None else float(f) for f, o in zip(forced, original_zyx)]
    if rule == "slices":
        if n_slices < 150:
            out[0] = float(original_zyx[0])
        elif n_slices > 600:
            out[0] = float(max(0.8, 600.0 / n_slices) * original_zyx[0])
    elif rule != "fixed":
        raise SemisegError(f"unknown forced-spacing rule {rule!r} (use fixed or slices)")
    return out
