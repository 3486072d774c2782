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

from ..data.checking import load_dataset
from ..data.dataset import declared_label_values, label_dtype, read_case_image, read_case_label
from ..data.io import Geometry
from ..planning import Plans, load_plans, load_split
from ..planning.fingerprint import nonzero_bbox
from ..utils import SemisegError, bbox_slices, parallel_map, read_json, save_npy, write_json
from .normalize import normalize
from .resampling import new_shape, resample_image, resample_label

LOCS_PER_CLASS = 10_000


def plan_hash(plans: dict) -> str:
    key = {k: plans[k] for k in ("target_spacing", "normalization", "resampling")}
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def preprocess_arrays(image: np.ndarray, geom: Geometry, plans: dict, seg: np.ndarray | None = None,
                      spacing: list | None = None):
    """Crop, normalise and resample one case given as arrays. Returns (data, seg, properties).

    ``spacing`` overrides the plan's target spacing (forced inference spacing)."""
    plans = Plans(plans)
    target = list(spacing or plans.target_spacing)
    bbox = nonzero_bbox(image)
    sl = bbox_slices(bbox)
    nz_mask = None
    cropped = image[(slice(None),) + sl]
    if any(s.get("use_mask") for s in plans.normalization):
        nz_mask = ndimage.binary_fill_holes(np.any(cropped != 0, axis=0))
    data = normalize(cropped, plans.normalization, nz_mask)
    old_sp = list(geom.spacing_zyx)
    shape = new_shape(data.shape[1:], old_sp, target)
    rs = plans.resampling
    data = resample_image(data, shape, old_sp, target, rs.get("image_order", 3),
                          rs.get("anisotropic_z_order", 0), plans.anisotropy_threshold)
    props = {"geometry": geom.to_dict(), "original_shape": list(image.shape[1:]), "bbox": bbox,
             "shape_after_crop": list(cropped.shape[1:]), "original_spacing": old_sp,
             "spacing": target, "shape": list(data.shape[1:])}
    if seg is not None:
        seg = label_to_grid(seg, props, plans)
    return data, seg, props


def label_to_grid(seg: np.ndarray, props: dict, plans: dict) -> np.ndarray:
    """A label map in a case's original grid -> its preprocessed grid (the crop box and spacings of
    the case's properties), as ``preprocess`` treats true labels and training treats pseudo-labels."""
    thr = Plans(plans).anisotropy_threshold
    return resample_label(seg[bbox_slices(props["bbox"])], props["shape"], props["original_spacing"], props["spacing"],
                          thr)


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
        typed = Plans(plans)
        lab = read_case_label(case, geom, declared_label_values(typed.labels))
        seg = lab.astype(label_dtype(typed.num_classes - 1))
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
    split = load_split(work)
    ds = load_dataset(plans.dataset_path)
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
    # what the cache holds, written last: the same whether it was filled in one run or resumed
    # (how many cases this call did or skipped is its return value, printed by the CLI)
    write_json({"plan_hash": h, "cases": len(jobs), "labeled": sum(1 for j in jobs if j[1])},
               out_dir / "summary.json")
    return counts


# --------------------------------------------------------------------------- back to the original
def restore_label(seg: np.ndarray, props: dict) -> tuple[np.ndarray, Geometry]:
    """Map a label map on the preprocessed grid back to the original image: inverse resampling
    (one-hot linear) to the cropped shape, then pasting into the original extent."""
    crop_shape = props["shape_after_crop"]
    seg = resample_label(np.asarray(seg), crop_shape, props["spacing"], props["original_spacing"])
    full = np.zeros(props["original_shape"], seg.dtype)
    full[bbox_slices(props["bbox"])] = seg
    return full, Geometry.from_dict(props["geometry"])


def load_case(work: str | Path, cid: str, mmap: bool = True) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Load a preprocessed case: (data (C, z, y, x), seg or None, properties), memory-mapped."""
    d = Path(work) / "preprocessed"
    props = read_json(d / f"{cid}.json", f"preprocessed case {cid}")
    mode = "r" if mmap else None
    data = np.load(d / f"{cid}.npy", mmap_mode=mode)
    seg = np.load(d / f"{cid}_seg.npy", mmap_mode=mode) if props.get("has_label") else None
    return data, seg, props


class CaseCache:
    """Lazily opened memory maps of cached cases (one set per process). ``label_dirs`` gives, per
    case, another folder holding its ``_seg.npy``/``_locs.npy`` (pseudo-labels cached in a run)."""

    def __init__(self, work: str | Path, ids: list[str], with_labels: bool, label_dirs: dict | None = None):
        self.dir = Path(work) / "preprocessed"
        self.ids = list(ids)
        self.with_labels = with_labels
        self.label_dirs = {k: Path(v) for k, v in (label_dirs or {}).items()}
        self.props = {}
        for cid in self.ids:
            pj = self.dir / f"{cid}.json"
            if not pj.exists():
                raise SemisegError(f"{pj}: missing; run `semiseg preprocess` on this work folder first")
            p = json.loads(pj.read_text())
            if with_labels and cid in self.label_dirs:
                if not (self.label_dirs[cid] / f"{cid}_seg.npy").exists():
                    raise SemisegError(f"{self.label_dirs[cid] / (cid + '_seg.npy')}: missing pseudo-label cache")
            elif with_labels and not p.get("has_label"):
                raise SemisegError(f"{pj}: case {cid} has no cached label but the run uses it as labeled; "
                                   "re-run `semiseg preprocess` after planning this split")
            self.props[cid] = p
        self._open: dict[str, tuple] = {}

    def get(self, cid: str):
        if cid not in self._open:
            data = np.load(self.dir / f"{cid}.npy", mmap_mode="r")
            seg = locs = None
            if self.with_labels:
                d = self.label_dirs.get(cid, self.dir)
                seg = np.load(d / f"{cid}_seg.npy", mmap_mode="r")
                locs = np.load(d / f"{cid}_locs.npy")
            self._open[cid] = (data, seg, locs)
        return self._open[cid]
