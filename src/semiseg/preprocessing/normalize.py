"""Intensity normalisation of a case, per channel, by the schemes of ``plans.json``."""
from __future__ import annotations

import numpy as np

from ..utils import SemisegError


def normalize(data: np.ndarray, schemes: list[dict], mask: np.ndarray | None) -> np.ndarray:
    """Apply each channel's scheme from ``plans.json`` ``normalization``; returns float32 (C', ...)."""
    out = []
    for c, sch in enumerate(schemes):
        a = data[c].astype(np.float32)
        kind = sch["scheme"]
        if kind == "zscore":
            m = mask if (sch.get("use_mask") and mask is not None and mask.any()) else None
            vals = a[m] if m is not None else a
            mean, std = float(vals.mean()), float(vals.std())
            a = (a - mean) / max(std, 1e-8)
            if m is not None:
                a[~m] = 0
            out.append(a)
        elif kind == "ct":
            lo, hi = sch["clip"]
            a = (np.clip(a, lo, hi) - sch["mean"]) / max(sch["std"], 1e-8)
            out.append(a)
        elif kind == "ct_windows":
            for w in sch["windows"]:
                lo = w["level"] - w["width"] / 2
                out.append(np.clip((a - lo) / w["width"], 0, 1))
        elif kind in ("rescale_to_0_1", "rgb_to_0_1"):
            if kind == "rgb_to_0_1":
                a = a / 255.0
            else:
                mn, mx = float(a.min()), float(a.max())
                a = (a - mn) / max(mx - mn, 1e-8)
            out.append(a)
        elif kind == "none":
            out.append(a)
        else:
            raise SemisegError(f"plans.json: unknown normalisation scheme {kind!r}")
    return np.stack(out).astype(np.float32, copy=False)
