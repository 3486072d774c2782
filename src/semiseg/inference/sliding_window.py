"""Sliding-window prediction of one preprocessed case with Gaussian blending, mirroring TTA, 2D
configurations slice by slice with the same code, and the way back to the original grid.

The window placement and blending are those of MONAI's ``sliding_window_inference`` (mode
"gaussian", sigma 1/8 of the patch; windows every ``int(step * patch)`` voxels, the last one flush
with the edge; a zero-padded image where it is smaller than the patch), reproduced here so that
predictions stay what they were, because ``import monai`` loads every MONAI submodule: 3 s of every
command's start-up on 2 CPU cores, more than predicting a student's ten validation cases.
Inference from a model file with an ONNX backend imports no MONAI at all.
"""
from __future__ import annotations

import functools
import itertools
import math
import time

import cc3d
import numpy as np
import torch
import torch.nn.functional as F

from ..planning import Configuration
from ..utils import SemisegError, bbox_slices
from ..utils.device import autocast, default_device
from .backends import Timed
from .ensemble import MeanProbs


class _SliceWindows(torch.nn.Module):
    """Runs a 2D network on windows one slice thick: (N, C, 1, y, x) -> (N, K, 1, y, x)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x[:, :, 0])[:, :, None]


def mirror_sets(axes) -> list[tuple]:
    """Every subset of ``axes`` to flip, the identity first (8 in 3D, 4 in 2D)."""
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


@torch.no_grad()
def sliding_window_probs(nets: list, data, cfg: dict, step: float = 0.5, tta: bool = False,
                         device: torch.device | None = None, sw_batch: int | None = None,
                         patch_size=None, slices: list[int] | None = None, amp: str = "auto",
                         times: dict | None = None) -> torch.Tensor:
    """Mean softmax over ``nets`` (and mirrorings with ``tta``) for one case ``data`` (C, z, y, x).
    Returns float32 (K, z, y, x) on the CPU. A 2D configuration can predict only some ``slices``
    (indices along its slice axis; returns (K, len(slices), *in-plane)). ``amp``: mixed precision
    as :func:`semiseg.utils.device.autocast_dtype` (``off``: float32 throughout). ``nets`` are torch
    modules or :mod:`.backends` runners. ``times`` (a dict) accumulates the seconds of the network
    calls under ``network`` and of the whole under ``sliding_window`` (the rest is windowing and
    blending)."""
    t0 = time.perf_counter()
    device = device or default_device()
    patch = list(patch_size or cfg["patch_size"])
    x = torch.from_numpy(np.array(data, np.float32))[None]
    slice_axis = Configuration(cfg, patch_size=patch).slice_axis
    if slices is not None and slice_axis is None:
        raise SemisegError("predicting some slices only needs a 2D configuration")
    if slice_axis is not None:  # put the slice axis first; windows are one slice thick
        x = x.movedim(2 + slice_axis, 2)
        if Configuration(cfg).slice_position:  # the PE(k) = k / T plane as the last channel
            T = x.shape[2]
            pe = (torch.arange(T, dtype=x.dtype) / T).view(1, 1, T, 1, 1).expand(1, 1, T, *x.shape[3:])
            x = torch.cat([x, pe], 1)
        if slices is not None:
            x = x[:, :, list(slices)]
        roi = [1] + patch
        flip_axes = [3, 4]
        sw_batch = sw_batch or 16
    else:
        roi = patch
        flip_axes = [2, 3, 4]
        sw_batch = sw_batch or 2
    x = x.to(device)
    variants = mirror_sets(flip_axes) if tta else [()]
    acc = MeanProbs()
    for net in nets:
        net.eval()
        pred = Timed(net, times) if times is not None else net
        pred = _SliceWindows(pred) if slice_axis is not None else pred
        for flips in variants:
            xi = torch.flip(x, flips) if flips else x
            with autocast(device, amp):
                logits = blend_windows(xi, roi, sw_batch, pred, step)
            p = torch.softmax(logits.float(), 1)
            if flips:
                p = torch.flip(p, flips)
            acc.add(p)
    probs = acc.mean()[0]
    if slice_axis is not None and slices is None:
        probs = probs.movedim(1, 1 + slice_axis)
    probs = probs.cpu()
    if times is not None:
        times["sliding_window"] = times.get("sliding_window", 0.0) + time.perf_counter() - t0
    return probs


def window_starts(size: int, patch: int, step: float) -> list[int]:
    """Window starts along one axis, as MONAI places them: every ``int(step * patch)`` voxels (at
    least 1; one window when the patch covers the axis), up to the first window that reaches the
    end, which is moved back to end flush with the edge."""
    if size <= patch:
        return [0]
    interval = max(int(patch * (1 - (1 - step))), 1)  # MONAI's overlap = 1 - step, same rounding
    starts = []
    for k in range(int(math.ceil(size / interval))):
        starts.append(min(k * interval, size - patch))
        if k * interval + patch >= size:
            break
    return starts


@functools.lru_cache(maxsize=8)
def gaussian_importance(roi: tuple, sigma_scale: float = 0.125) -> torch.Tensor:
    """A window's weight as MONAI computes it: the product over axes of exp(-x^2 / 2 sigma^2), x
    measured from the patch centre ((r - 1) / 2), sigma ``sigma_scale`` of the side, raised to at
    least 1e-3."""
    w = torch.ones(())
    for r in roi:
        x = torch.arange(r, dtype=torch.float32) - (r - 1) / 2.0
        w = w[..., None] * torch.exp(x ** 2 / (-2 * (r * sigma_scale) ** 2))
    return w.clamp_min(max(float(w.min()), 1e-3))


def blend_windows(x: torch.Tensor, roi, sw_batch: int, predictor, step: float = 0.5) -> torch.Tensor:
    """Gaussian-weighted mean of ``predictor`` over sliding windows of ``roi`` on ``x`` (1, C, *spatial):
    (1, K, *spatial) float32. ``predictor`` takes (n, C, *roi) and returns (n, K, *roi)."""
    spatial = tuple(x.shape[2:])
    pad = [max(r - s, 0) for r, s in zip(roi, spatial)]
    if any(pad):
        x = F.pad(x, [v for d in reversed(pad) for v in (d // 2, d - d // 2)])
    shape = tuple(x.shape[2:])
    boxes = [tuple(slice(s, s + r) for s, r in zip(b, roi))
             for b in itertools.product(*(window_starts(n, r, step) for n, r in zip(shape, roi)))]
    w = gaussian_importance(tuple(roi)).to(x.device)
    out, norm = None, torch.zeros(shape, device=x.device)
    for i in range(0, len(boxes), sw_batch):
        chunk = boxes[i:i + sw_batch]
        y = predictor(torch.cat([x[(slice(None), slice(None)) + b] for b in chunk]))
        if out is None:
            out = torch.zeros((1, y.shape[1]) + shape, device=x.device)
        for j, b in enumerate(chunk):
            out[(0, slice(None)) + b] += y[j].float() * w
            norm[b] += w
    out /= norm
    return out[(slice(None), slice(None)) + tuple(slice(d // 2, d // 2 + s) for d, s in zip(pad, spatial))]


# --------------------------------------------------------------------------- back to the original grid
def probs_to_original(probs: torch.Tensor, props: dict) -> torch.Tensor:
    """Probabilities on the preprocessed grid -> the cropped original grid (linear), then pasted into
    the original extent (background 1 outside the crop). Returns (K, *original_shape) float32."""
    crop = tuple(props["shape_after_crop"])
    if tuple(probs.shape[1:]) != crop:
        probs = F.interpolate(probs[None], size=crop, mode="trilinear", align_corners=False)[0]
    full = torch.zeros((probs.shape[0],) + tuple(props["original_shape"]), dtype=torch.float32)
    full[0] = 1.0
    full[(slice(None),) + bbox_slices(props["bbox"])] = probs
    return full


def keep_largest_component(seg: np.ndarray, classes: list | None = None) -> np.ndarray:
    """For each entry of ``classes`` in turn, keep only the largest 26-connected component of that
    class, or of that region when the entry is a list of classes (nnU-Net's ``[1, 2, 3]``: the
    foreground as one, which drops islands away from the organ without breaking touching classes
    apart); the rest becomes background. Default: every class present."""
    out = seg.copy()
    for c in classes if classes is not None else [int(v) for v in np.unique(seg) if v]:
        m = np.isin(out, c) if isinstance(c, (list, tuple)) else out == c
        if not m.any():
            continue
        cc = cc3d.connected_components(m.astype(np.uint8), connectivity=26)
        sizes = np.bincount(cc.ravel())
        sizes[0] = 0
        out[m & (cc != sizes.argmax())] = 0
    return out
