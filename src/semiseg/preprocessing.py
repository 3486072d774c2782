"""``semiseg preprocess``: crop, normalise, resample and cache every case of a plan.

For each case of ``split.json`` (labeled and validation cases with their label, unlabeled ones
without ever opening a label) it writes into ``WORK/preprocessed/``:

* ``CASE.npy``       float32 (C, z, y, x) at the target spacing, memory-mappable;
* ``CASE_seg.npy``   uint8/int16 (z, y, x) label map (labeled and validation cases only);
* ``CASE_locs.npy``  int32 (N, 4) rows (class, z, y, x): up to 10,000 sampled voxels per class,
                     for foreground oversampling;
* ``CASE.json``      properties: original geometry, crop box, shapes, spacings, plan hash.
                     Written last: a case is complete only when its JSON exists.

Every file is written atomically; a case whose JSON already matches the plan is skipped, so an
interrupted run resumes where it stopped. :func:`restore_label` maps a label map from the
preprocessed grid back to the original image geometry (inverse resampling and un-cropping).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from .dataset import Dataset, Split, declared_label_values, read_case_image, read_case_label
from .io import Geometry
from .planning import load_plans, nonzero_bbox
from .utils import SemisegError, parallel_map, read_json, save_npy, write_json

LOCS_PER_CLASS = 10_000


# --------------------------------------------------------------------------- resampling
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
                   order_z: int = 0, aniso_threshold: float = 3.0) -> np.ndarray:
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


def resample_label(seg: np.ndarray, shape, old_spacing, new_spacing, aniso_threshold: float = 3.0) -> np.ndarray:
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


# --------------------------------------------------------------------------- normalisation
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


# --------------------------------------------------------------------------- one case
def plan_hash(plans: dict) -> str:
    key = {k: plans[k] for k in ("target_spacing", "normalization", "resampling")}
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def preprocess_arrays(image: np.ndarray, geom: Geometry, plans: dict, seg: np.ndarray | None = None,
                      spacing: list | None = None):
    """Crop, normalise and resample one case given as arrays. Returns (data, seg, properties).

    ``spacing`` overrides the plan's target spacing (forced inference spacing)."""
    target = list(spacing or plans["target_spacing"])
    bbox = nonzero_bbox(image)
    sl = tuple(slice(lo, hi) for lo, hi in bbox)
    nz_mask = None
    cropped = image[(slice(None),) + sl]
    if any(s.get("use_mask") for s in plans["normalization"]):
        nz_mask = ndimage.binary_fill_holes(np.any(cropped != 0, axis=0))
    data = normalize(cropped, plans["normalization"], nz_mask)
    old_sp = list(geom.spacing_zyx)
    shape = new_shape(data.shape[1:], old_sp, target)
    rs = plans.get("resampling", {})
    thr = rs.get("anisotropy_threshold", 3.0)
    data = resample_image(data, shape, old_sp, target, rs.get("image_order", 3),
                          rs.get("anisotropic_z_order", 0), thr)
    props = {"geometry": geom.to_dict(), "original_shape": list(image.shape[1:]), "bbox": bbox,
             "shape_after_crop": list(cropped.shape[1:]), "original_spacing": old_sp,
             "spacing": target, "shape": list(data.shape[1:])}
    if seg is not None:
        seg = label_to_grid(seg, props, plans)
    return data, seg, props


def label_to_grid(seg: np.ndarray, props: dict, plans: dict) -> np.ndarray:
    """A label map in a case's original grid -> its preprocessed grid (the crop box and spacings of
    the case's properties), as ``preprocess`` treats true labels and training treats pseudo-labels."""
    sl = tuple(slice(lo, hi) for lo, hi in props["bbox"])
    thr = plans.get("resampling", {}).get("anisotropy_threshold", 3.0)
    return resample_label(seg[sl], props["shape"], props["original_spacing"], props["spacing"], thr)


def class_locations(seg: np.ndarray, seed: int, per_class: int = LOCS_PER_CLASS) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = []
    for c in np.unique(seg):
        if c == 0:
            continue
        idx = np.argwhere(seg == c)
        if len(idx) > per_class:
            idx = idx[rng.choice(len(idx), per_class, replace=False)]
        rows.append(np.concatenate([np.full((len(idx), 1), c, idx.dtype), idx], 1))
    if not rows:
        return np.zeros((0, 4), np.int32)
    return np.concatenate(rows).astype(np.int32)


def _label_dtype(n_classes: int):
    return np.uint8 if n_classes <= 255 else np.int16


def _preprocess_case(args) -> tuple[str, str]:
    case, with_label, plans, out_dir, h, seed = args
    out_dir = Path(out_dir)
    pj = out_dir / f"{case.id}.json"
    if pj.exists():
        try:
            old = json.loads(pj.read_text())
            if old.get("plan_hash") == h and old.get("has_label") == with_label and \
                    (out_dir / f"{case.id}.npy").exists():
                return case.id, "skipped"
        except json.JSONDecodeError:
            pass
    image, geom = read_case_image(case)
    seg = None
    if with_label:
        lab = read_case_label(case, geom, declared_label_values(plans["labels"]))
        seg = lab.astype(_label_dtype(plans["num_classes"]))
    data, seg, props = preprocess_arrays(image, geom, plans, seg)
    del image
    save_npy(data, out_dir / f"{case.id}.npy")
    if seg is not None:
        save_npy(seg, out_dir / f"{case.id}_seg.npy")
        save_npy(class_locations(seg, seed), out_dir / f"{case.id}_locs.npy")
        props["classes_present"] = sorted(int(c) for c in np.unique(seg))
    else:  # labeled under an earlier split, unlabeled now: its old label cache must not linger
        for suffix in ("_seg.npy", "_locs.npy"):
            (out_dir / f"{case.id}{suffix}").unlink(missing_ok=True)
    props.update({"id": case.id, "has_label": with_label, "plan_hash": h,
                  "images": [str(p) for p in case.images]})
    write_json(props, pj)
    return case.id, "done"


def preprocess(work: str | Path, workers: int | None = None, progress: bool = True) -> dict:
    """Preprocess every case of ``WORK/split.json`` into ``WORK/preprocessed``. Returns counts."""
    work = Path(work)
    plans = load_plans(work)
    split = Split.from_dict(read_json(work / "split.json", "split.json (run `semiseg plan` first)"))
    ds = Dataset.load(plans["dataset_path"])
    out_dir = work / "preprocessed"
    if out_dir.resolve() == ds.root.resolve() or ds.root.resolve() in out_dir.resolve().parents:
        raise SemisegError(f"{out_dir}: refusing to write inside the dataset folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    h = plan_hash(plans)
    jobs = []
    for i, cid in enumerate(split.labeled + split.val + split.unlabeled):
        if cid not in ds.cases:
            raise SemisegError(f"{work / 'split.json'}: case {cid} is not in {ds.root / 'imagesTr'}")
        with_label = cid not in set(split.unlabeled)
        jobs.append((ds.cases[cid], with_label, plans, str(out_dir), h, 1000 + i))
    counts = {"done": 0, "skipped": 0}
    for _cid, status in parallel_map(_preprocess_case, jobs, workers=workers, desc="preprocess",
                                     progress=progress):
        counts[status] += 1
    write_json({"plan_hash": h, "cases": len(jobs), **counts}, out_dir / "summary.json")
    return counts


# --------------------------------------------------------------------------- back to the original
def restore_label(seg: np.ndarray, props: dict) -> tuple[np.ndarray, Geometry]:
    """Map a label map on the preprocessed grid back to the original image: inverse resampling
    (one-hot linear) to the cropped shape, then pasting into the original extent."""
    crop_shape = props["shape_after_crop"]
    seg = resample_label(np.asarray(seg), crop_shape, props["spacing"], props["original_spacing"])
    full = np.zeros(props["original_shape"], seg.dtype)
    sl = tuple(slice(lo, hi) for lo, hi in props["bbox"])
    full[sl] = seg
    return full, Geometry.from_dict(props["geometry"])


def load_case(work: str | Path, cid: str, mmap: bool = True) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Load a preprocessed case: (data (C, z, y, x), seg or None, properties), memory-mapped."""
    d = Path(work) / "preprocessed"
    props = read_json(d / f"{cid}.json", f"preprocessed case {cid}")
    mode = "r" if mmap else None
    data = np.load(d / f"{cid}.npy", mmap_mode=mode)
    seg = np.load(d / f"{cid}_seg.npy", mmap_mode=mode) if props.get("has_label") else None
    return data, seg, props
