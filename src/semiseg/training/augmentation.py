"""Patch extraction with augmentation, nnU-Net's recipe, drawn apart from applied.

:func:`draw` returns a plain dict of random parameters (rotation, scaling, elastic field seed,
mirroring, noise, blur, brightness, contrast, gamma, low resolution); :func:`extract` applies a
draw to a (memory-mapped) cached case and returns an image and label patch. The same draw can be
replayed (both networks of a CPS pair, a logged batch) and the mirror part inverted (TTA).

Spatial augmentation never resamples the whole case: the patch's sampling grid (a rotation and
scaling about the patch centre, plus an optional smooth elastic displacement) is built first,
only the box of the cache that the grid touches is read from the memory map, and
``torch.nn.functional.grid_sample`` interpolates it (linear for the image, nearest for the label).
Outside the case, the image is 0 (the normalised mean) and the label background.

When the patch's spacing is anisotropic (thick slices, e.g. ACDC), rotation and scaling act in
plane only, as nnU-Net does (its "dummy 2D" augmentation).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class AugmentConfig:
    """Probabilities and ranges (nnU-Net's defaults). ``enabled=False`` gives plain crops."""
    enabled: bool = True
    p_rotate: float = 0.2
    rotate_deg_3d: float = 30.0
    rotate_deg_2d: float = 180.0
    p_scale: float = 0.2
    scale: tuple = (0.7, 1.4)
    p_elastic: float = 0.0          # off by default, as nnU-Net
    elastic_magnitude: float = 4.0  # voxels
    elastic_grid: int = 4           # control points per axis
    p_mirror: float = 0.5           # per axis
    p_noise: float = 0.1
    noise_var: tuple = (0.0, 0.1)
    p_blur: float = 0.2
    blur_sigma: tuple = (0.5, 1.0)
    p_brightness: float = 0.15
    brightness: tuple = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast: tuple = (0.75, 1.25)
    p_lowres: float = 0.25
    lowres: tuple = (0.5, 1.0)
    p_gamma: float = 0.3
    p_gamma_invert: float = 0.1
    gamma: tuple = (0.7, 1.5)

    def to_dict(self) -> dict:
        return asdict(self)


def draw(rng: np.random.Generator, cfg: AugmentConfig, ndim: int, inplane_only: bool) -> dict:
    """Random parameters for one patch. ``ndim`` is the patch dimension (2 or 3)."""
    if not cfg.enabled:
        return {"angles": [0.0] * (3 if ndim == 3 else 1), "scale": 1.0, "elastic_seed": None, "mirror": [],
                "intensity": []}
    n_angles = 3 if ndim == 3 else 1
    angles = [0.0] * n_angles
    if rng.random() < cfg.p_rotate:
        if ndim == 2:
            angles[0] = math.radians(rng.uniform(-cfg.rotate_deg_2d, cfg.rotate_deg_2d))
        elif inplane_only:
            angles[0] = math.radians(rng.uniform(-180.0, 180.0))  # about z: in plane
        else:
            angles = [math.radians(rng.uniform(-cfg.rotate_deg_3d, cfg.rotate_deg_3d)) for _ in range(3)]
    scale = float(rng.uniform(*cfg.scale)) if rng.random() < cfg.p_scale else 1.0
    elastic = int(rng.integers(1 << 31)) if rng.random() < cfg.p_elastic else None
    mirror = [a for a in range(ndim) if rng.random() < cfg.p_mirror]
    ops = []
    if rng.random() < cfg.p_noise:
        ops.append(("noise", float(rng.uniform(*cfg.noise_var)), int(rng.integers(1 << 31))))
    if rng.random() < cfg.p_blur:
        ops.append(("blur", float(rng.uniform(*cfg.blur_sigma))))
    if rng.random() < cfg.p_brightness:
        ops.append(("brightness", float(rng.uniform(*cfg.brightness))))
    if rng.random() < cfg.p_contrast:
        ops.append(("contrast", float(rng.uniform(*cfg.contrast))))
    if rng.random() < cfg.p_lowres:
        ops.append(("lowres", float(rng.uniform(*cfg.lowres))))
    if rng.random() < cfg.p_gamma:
        ops.append(("gamma", float(rng.uniform(*cfg.gamma)), bool(rng.random() < cfg.p_gamma_invert)))
    return {"angles": angles, "scale": scale, "elastic_seed": elastic, "mirror": mirror, "intensity": ops}


def _rotation(angles: list[float], ndim: int) -> np.ndarray:
    """Rotation acting on (z, y, x) or (y, x) offsets; one angle = about the first (slice) axis."""
    if ndim == 2 or len(angles) == 1:
        c, s = math.cos(angles[0]), math.sin(angles[0])
        r2 = np.array([[c, -s], [s, c]])
        if ndim == 2:
            return r2
        r = np.eye(3)
        r[1:, 1:] = r2
        return r
    ax, ay, az = angles
    rz = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rx = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _elastic(seed: int, shape, cfg: AugmentConfig) -> torch.Tensor:
    """A smooth displacement field (len(shape), *shape) in voxels: coarse noise, cubic-ish upsampled."""
    g = torch.Generator().manual_seed(seed)
    nd = len(shape)
    coarse = torch.randn((1, nd) + (cfg.elastic_grid,) * nd, generator=g) * cfg.elastic_magnitude
    mode = "trilinear" if nd == 3 else "bilinear"
    return F.interpolate(coarse, size=tuple(shape), mode=mode, align_corners=True)[0]


def sampling_coords(center, patch, params: dict, spacing, inplane_only: bool, cfg: AugmentConfig) -> np.ndarray | None:
    """Voxel coordinates (ndim, *patch) in the case to sample for each patch voxel, or None when
    the draw has no spatial part (then the patch is a plain crop)."""
    nd = len(patch)
    has_rot = any(a != 0 for a in params["angles"])
    if not has_rot and params["scale"] == 1.0 and params["elastic_seed"] is None:
        return None
    axes = [np.arange(p, dtype=np.float64) - (p - 1) / 2 for p in patch]
    off = np.stack(np.meshgrid(*axes, indexing="ij")).reshape(nd, -1)
    sp = np.asarray(spacing, np.float64)
    if has_rot:  # rotate in millimetres so anisotropic voxels keep their shape
        r = _rotation(params["angles"], nd)
        off = (r @ (off * sp[:, None])) / sp[:, None]
    off = off * params["scale"]
    coords = off.reshape((nd,) + tuple(patch)) + np.asarray(center, np.float64).reshape((nd,) + (1,) * nd)
    if params["elastic_seed"] is not None:
        coords = coords + _elastic(params["elastic_seed"], patch, cfg).numpy()
    return coords


def _read_box(arr, lo, hi, lead: int):
    """arr[..., lo:hi] with zero padding outside the array (arr may be a memory map)."""
    shape = arr.shape[lead:]
    src = tuple(slice(max(l, 0), min(h, s)) for l, h, s in zip(lo, hi, shape))
    out = np.zeros(arr.shape[:lead] + tuple(h - l for l, h in zip(lo, hi)), arr.dtype)
    if all(s.stop > s.start for s in src):
        dst = tuple(slice(s.start - l, s.stop - l) for s, l in zip(src, lo))
        out[(slice(None),) * lead + dst] = arr[(slice(None),) * lead + src]
    return out


def extract(data, seg, center, patch, params: dict, spacing, inplane_only: bool,
            cfg: AugmentConfig, slice_axis: int | None = None):
    """One augmented patch. ``data`` (C, z, y, x) and ``seg`` (z, y, x) or None, as arrays or memory
    maps; ``center`` in case voxels (3 values). For 2D (``slice_axis`` given), ``patch`` has 2
    entries and the patch is taken in the slice ``center[slice_axis]``.
    Returns (image float32 (C, *patch), label int64 (*patch) or None)."""
    if slice_axis is not None:
        k = int(center[slice_axis])
        sl = [slice(None)] * 3
        sl[slice_axis] = k
        data = data[(slice(None),) + tuple(sl)]
        seg = seg[tuple(sl)] if seg is not None else None
        center = [c for a, c in enumerate(center) if a != slice_axis]
        spacing = [s for a, s in enumerate(spacing) if a != slice_axis]
    nd = len(patch)
    coords = sampling_coords(center, patch, params, spacing, inplane_only, cfg)
    if coords is None:
        lo = [int(math.floor(c - (p - 1) / 2)) for c, p in zip(center, patch)]
        hi = [l + p for l, p in zip(lo, patch)]
        img = torch.from_numpy(_read_box(data, lo, hi, 1).astype(np.float32, copy=False))
        lab = torch.from_numpy(_read_box(seg, lo, hi, 0).astype(np.int64)) if seg is not None else None
    else:
        lo = [int(math.floor(coords[a].min())) for a in range(nd)]
        hi = [int(math.ceil(coords[a].max())) + 1 for a in range(nd)]
        box = torch.from_numpy(_read_box(data, lo, hi, 1).astype(np.float32, copy=False))[None]
        size = box.shape[2:]
        # grid_sample wants (x, y[, z]) in [-1, 1] (align_corners=True: -1 and 1 are the end voxels)
        g = [(coords[a] - lo[a]) / max(size[a] - 1, 1) * 2 - 1 for a in range(nd)]
        grid = torch.from_numpy(np.stack(g[::-1], -1).astype(np.float32))[None]
        img = F.grid_sample(box, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
        lab = None
        if seg is not None:
            sbox = torch.from_numpy(_read_box(seg, lo, hi, 0).astype(np.float32))[None, None]
            lab = F.grid_sample(sbox, grid, mode="nearest", padding_mode="zeros", align_corners=True)[0, 0].long()
    img = intensity(img, params["intensity"])
    if params["mirror"]:
        dims = [a + 1 for a in params["mirror"]]
        img = torch.flip(img, dims)
        lab = torch.flip(lab, [a for a in params["mirror"]]) if lab is not None else None
    return img.contiguous(), (lab.contiguous() if lab is not None else None)


def _gauss_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    nd = x.dim() - 1
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    out = x[None]
    conv = F.conv3d if nd == 3 else F.conv2d
    c = x.shape[0]
    for a in range(nd):
        shape = [1] * nd
        shape[a] = len(k)
        w = k.view(1, 1, *shape).repeat(c, 1, *([1] * nd))
        pad = [0] * (2 * nd)
        pad[2 * (nd - 1 - a)] = pad[2 * (nd - 1 - a) + 1] = r
        out = conv(F.pad(out, pad, mode="replicate"), w, groups=c)
    return out[0]


def intensity(img: torch.Tensor, ops: list) -> torch.Tensor:
    """Apply the drawn intensity operations to (C, *patch), in order."""
    for op in ops:
        kind = op[0]
        if kind == "noise":
            g = torch.Generator().manual_seed(op[2])
            img = img + torch.randn(img.shape, generator=g) * math.sqrt(op[1])
        elif kind == "blur":
            img = _gauss_blur(img, op[1])
        elif kind == "brightness":
            img = img * op[1]
        elif kind == "contrast":
            dims = tuple(range(1, img.dim()))
            mean = img.mean(dims, keepdim=True)
            lo, hi = img.amin(dims, keepdim=True), img.amax(dims, keepdim=True)
            img = ((img - mean) * op[1] + mean).clamp(lo, hi)
        elif kind == "lowres":
            size = img.shape[1:]
            small = [max(1, int(round(s * op[1]))) for s in size]
            mode = "trilinear" if len(size) == 3 else "bilinear"
            img = F.interpolate(F.interpolate(img[None], size=small, mode="nearest")[0:1], size=size,
                                mode=mode, align_corners=False)[0]
        elif kind == "gamma":
            gamma, invert = op[1], op[2]
            x = -img if invert else img
            dims = tuple(range(1, x.dim()))
            mean, std = x.mean(dims, keepdim=True), x.std(dims, keepdim=True)
            lo, hi = x.amin(dims, keepdim=True), x.amax(dims, keepdim=True)
            rng_ = (hi - lo).clamp_min(1e-7)
            x = ((x - lo) / rng_) ** gamma * rng_ + lo
            x = (x - x.mean(dims, keepdim=True)) / x.std(dims, keepdim=True).clamp_min(1e-7) * std + mean
            img = -x if invert else x
    return img
