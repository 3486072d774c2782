"""Dataset fingerprint (one case per worker at a time): spacing, shape after cropping to the
non-zero region, and per-channel intensity statistics of (a) the labeled foreground, as nnU-Net,
and (b) all voxels of all training scans, unlabeled included (Huang et al. 2022, 3D-CPS), so CT
normalisation can also come from the unlabeled majority."""
from __future__ import annotations

import math

import numpy as np
from scipy.ndimage import binary_fill_holes

from ..data.dataset import Dataset, Split, declared_label_values, read_case_image, read_case_label
from ..utils import SemisegError, bbox_slices, parallel_map

SAMPLES_PER_CASE = 10_000
RESERVOIR = 2_000_000  # intensity samples kept per channel (all voxels; foreground): a fixed memory whatever
#   the number of scans (200 scans fill it; more are subsampled, see Reservoir)


def nonzero_bbox(image: np.ndarray) -> list[list[int]]:
    """Bounding box [[lo, hi), ...] of voxels that are non-zero in any channel (nnU-Net's crop).

    ``image`` is (C, z, y, x). An all-zero image keeps its full extent.
    """
    mask = np.any(image != 0, axis=0)
    if not mask.any():
        return [[0, s] for s in mask.shape]
    mask = binary_fill_holes(mask)
    box = []
    for ax in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != ax)
        nz = np.flatnonzero(mask.any(axis=other))
        box.append([int(nz[0]), int(nz[-1]) + 1])
    return box


def _fingerprint_case(args) -> dict:
    case, labeled, declared, seed = args
    rng = np.random.default_rng(seed)
    key_rng = np.random.default_rng([seed, 1])  # the reservoir's keys: a stream of their own (samples unchanged)
    img, geom = read_case_image(case)
    bbox = nonzero_bbox(img)
    sl = bbox_slices(bbox)
    cropped = img[(slice(None),) + sl]
    out = {"id": case.id, "spacing": list(geom.spacing_zyx), "shape": list(img.shape[1:]),
           "shape_after_crop": list(cropped.shape[1:]),
           "crop_fraction": float(np.prod(cropped.shape[1:]) / np.prod(img.shape[1:])),
           "zero_fraction_in_crop": float(np.mean(np.all(cropped == 0, axis=0))),
           "channels": []}
    fg = None
    if labeled and case.label is not None:
        fg = read_case_label(case, geom, declared)[sl] > 0
    for c in range(img.shape[0]):
        v = cropped[c]
        flat = v.ravel()
        ch = {"all": {"n": int(flat.size), "sum": float(flat.sum(dtype=np.float64)),
                      "sumsq": float(np.square(flat, dtype=np.float64).sum()),
                      "min": float(flat.min()), "max": float(flat.max()),
                      "sample": rng.choice(flat, min(SAMPLES_PER_CASE, flat.size), replace=False)}}
        ch["all"]["keys"] = key_rng.random(ch["all"]["sample"].size)
        if fg is not None and fg.any():
            vals = v[fg]
            ch["foreground"] = {"n": int(vals.size),
                                "sample": rng.choice(vals, min(SAMPLES_PER_CASE, vals.size), replace=False)}
            ch["foreground"]["keys"] = key_rng.random(ch["foreground"]["sample"].size)
        out["channels"].append(ch)
    return out


class Reservoir:
    """A fixed-size sample of intensities over every scan, the same whatever the number of worker
    processes: each sampled voxel carries a random key drawn from its own case's seed, and the ``size``
    smallest keys stay (a bottom-k sketch), so plan's memory is flat in the number of scans. The kept
    values stay in case order, and while everything fits nothing is dropped: the sample is then the
    plain concatenation of the cases' samples (plans of datasets up to ``size / SAMPLES_PER_CASE``
    scans are what they were before the reservoir)."""

    def __init__(self, size: int = RESERVOIR):
        self.size, self.n_cases = size, 0
        self._values, self._keys, self._pending = [], [], 0

    def add(self, sample: np.ndarray, keys: np.ndarray) -> None:
        self.n_cases += 1
        self._values.append(sample)
        self._keys.append(keys.astype(np.float32))
        self._pending += sample.size
        if self._pending > self.size // 4 + self.size:  # merge now and then, not per case
            self._merge()

    def _merge(self) -> None:
        values, keys = np.concatenate(self._values), np.concatenate(self._keys)
        if values.size > self.size:
            keep = np.sort(np.argpartition(keys, self.size - 1)[:self.size])  # in case order
            values, keys = values[keep], keys[keep]
        self._values, self._keys, self._pending = [values], [keys], values.size

    @property
    def values(self) -> np.ndarray:
        self._merge()
        return self._values[0]


def _stats(sample: np.ndarray) -> dict:
    if sample.size == 0:
        return {}
    p = np.percentile(sample, [0.5, 50, 99.5])
    return {"mean": float(sample.mean()), "std": float(sample.std()), "median": float(p[1]),
            "percentile_00_5": float(p[0]), "percentile_99_5": float(p[2]),
            "min": float(sample.min()), "max": float(sample.max())}


def fingerprint(ds: Dataset, split: Split, workers: int | None = None, progress: bool = True,
                seed: int = 1234) -> dict:
    """Spacings, shapes and intensity statistics of all training cases (labeled and unlabeled)."""
    ids = list(split.labeled) + list(split.unlabeled)
    labeled = set(split.labeled)
    declared = declared_label_values(ds.labels)
    jobs = [(ds.cases[c], c in labeled, declared, seed + i) for i, c in enumerate(ids)]
    n_ch = len(ds.channel_names)
    sums = [{"n": 0, "sum": 0.0, "sumsq": 0.0, "min": math.inf, "max": -math.inf} for _ in range(n_ch)]
    res_all, res_fg = [Reservoir() for _ in range(n_ch)], [Reservoir() for _ in range(n_ch)]
    per_case = []  # small per-case facts; the intensity samples go into the reservoirs as results arrive
    for pc in parallel_map(_fingerprint_case, jobs, workers=workers, desc="fingerprint", progress=progress):
        for c, ch in enumerate(pc.pop("channels")):
            a, t = ch["all"], sums[c]
            t["n"] += a["n"]
            t["sum"] += a["sum"]
            t["sumsq"] += a["sumsq"]
            t["min"], t["max"] = min(t["min"], a["min"]), max(t["max"], a["max"])
            res_all[c].add(a["sample"], a["keys"])
            if "foreground" in ch:
                res_fg[c].add(ch["foreground"]["sample"], ch["foreground"]["keys"])
        per_case.append(pc)
    if not per_case:
        raise SemisegError(f"{ds.root}: no training cases to plan from")
    intensity = []
    for c, name in enumerate(ds.channel_names):
        t = sums[c]
        mean = t["sum"] / t["n"]
        all_stats = _stats(res_all[c].values)
        all_stats.update({"mean": mean, "std": math.sqrt(max(t["sumsq"] / t["n"] - mean * mean, 0.0)),
                          "min": t["min"], "max": t["max"]})
        fg_stats = _stats(res_fg[c].values) if res_fg[c].n_cases else {}
        intensity.append({"channel": name, "all_voxels": all_stats, "foreground": fg_stats,
                          "n_cases_foreground": res_fg[c].n_cases})
    spacings = np.array([pc["spacing"] for pc in per_case])
    shapes = np.array([pc["shape_after_crop"] for pc in per_case])
    return {"n_cases": len(per_case), "n_labeled": len(split.labeled),
            "spacings": spacings.tolist(), "shapes_after_crop": shapes.tolist(),
            "median_spacing": np.median(spacings, 0).tolist(),
            "median_shape_after_crop": np.median(shapes, 0).tolist(),
            "median_crop_fraction": float(np.median([pc["crop_fraction"] for pc in per_case])),
            "median_zero_fraction_in_crop": float(np.median([pc["zero_fraction_in_crop"] for pc in per_case])),
            "intensity": intensity, "cases": [pc["id"] for pc in per_case]}
