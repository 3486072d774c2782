"""The embedded synthetic dataset of ``semiseg demo``: MRI-like 3D phantoms in the nnU-Net v2 layout.

:func:`make_synthetic_dataset` writes an nnU-Net v2 raw dataset of 3D MRI-like phantoms: a body
(background tissue, zero air around it) holding three structures of very different sizes (a
large ellipsoidal organ = 1, a medium sphere = 2, a thin tube = 3), with Gaussian noise, a smooth
multiplicative bias field and a spacing that varies per case (thick and thin slices). A few cases
are labeled, most are unlabeled (no label file; their ground truth is kept outside the dataset
folder, in ``groundtruth_unlabeled/``, for benchmarks), and a ``splits.json`` names validation
cases.

``semiseg demo`` (:mod:`semiseg.workflows.demo`) runs the whole pipeline on it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..utils import SemisegError, write_json
from .io import Geometry, write_image

EXTENT_MM = (72.0, 96.0, 96.0)  # z, y, x


def phantom(rng: np.random.Generator, spacing_zyx, extent_mm=EXTENT_MM, noise: float = 12.0):
    """One phantom: (image float32 (z, y, x), label uint8 (z, y, x))."""
    shape = [int(round(e / s)) for e, s in zip(extent_mm, spacing_zyx)]
    axes = [(np.arange(n) + 0.5) * s - e / 2 for n, s, e in zip(shape, spacing_zyx, extent_mm)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    img = np.zeros(shape, np.float32)
    lab = np.zeros(shape, np.uint8)
    body = (z / 33) ** 2 + (y / 44) ** 2 + (x / 42) ** 2 <= 1
    img[body] = 100
    # 1: large organ, an ellipsoid with random size and position
    c1 = rng.uniform(-6, 6, 3) + np.array([0, -8, -10])
    r1 = rng.uniform([13, 15, 14], [18, 21, 19])
    organ = ((z - c1[0]) / r1[0]) ** 2 + ((y - c1[1]) / r1[1]) ** 2 + ((x - c1[2]) / r1[2]) ** 2 <= 1
    img[organ] = 160
    lab[organ] = 1
    # 2: medium sphere, between the organ and the tube in brightness (darker than tissue it would
    # share its intensity with the partial-volume rim at the body's edge after resampling)
    c2 = rng.uniform(-5, 5, 3) + np.array([0, 14, 16])
    r2 = rng.uniform(8, 11)
    sph = (z - c2[0]) ** 2 + (y - c2[1]) ** 2 + (x - c2[2]) ** 2 <= r2 ** 2
    img[sph] = 190
    lab[sph] = 2
    # 3: thin tube along z (a vessel), slightly tilted
    c3 = rng.uniform(-4, 4, 2) + np.array([18, -18])
    tilt = rng.uniform(-0.15, 0.15, 2)
    r3 = rng.uniform(2.5, 3.5)
    tube = ((y - c3[0] - tilt[0] * z) ** 2 + (x - c3[1] - tilt[1] * z) ** 2 <= r3 ** 2) & (np.abs(z) < 28)
    img[tube] = 220
    lab[tube] = 3
    # bias field: smooth multiplicative gradient in a random direction
    d = rng.normal(size=3)
    d /= np.linalg.norm(d)
    bias = np.exp(0.25 * (d[0] * z + d[1] * y + d[2] * x) / 50)
    img = img * bias + rng.normal(0, noise, shape) * body
    img[~body] = 0
    return img.astype(np.float32), lab


def make_synthetic_dataset(out: str | Path, n_labeled: int = 6, n_unlabeled: int = 14, n_val: int = 4,
                           seed: int = 0, spacing_zyx: tuple | None = None) -> Path:
    """Write the synthetic dataset into ``out`` (created; must not exist or be empty).
    ``spacing_zyx``: one spacing for every case instead of the demo's varied ones; the phantoms
    span 72 x 96 x 96 mm, so (0.75, 0.6, 0.6) gives scans of realistic size, 96 x 160 x 160."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise SemisegError(f"{out}: exists and is not empty")
    rng = np.random.default_rng(seed)
    for sub in ("imagesTr", "labelsTr"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    gt_unl = out.parent / f"{out.name}_groundtruth_unlabeled"
    gt_unl.mkdir(parents=True, exist_ok=True)
    ids = {"labeled": [], "unlabeled": [], "val": []}
    n = 0
    for kind, count in (("labeled", n_labeled), ("val", n_val), ("unlabeled", n_unlabeled)):
        for _ in range(count):
            cid = f"PHANTOM_{n:03d}"
            n += 1
            # spacing varies: in-plane 1.0-1.6 mm, slices 1.5-4 mm (some thick-slice scans)
            sp = (float(rng.choice([1.5, 2.0, 2.5, 4.0])), *([float(rng.uniform(1.0, 1.6))] * 2))
            if spacing_zyx is not None:
                sp = tuple(float(v) for v in spacing_zyx)
            img, lab = phantom(rng, sp)
            geom = Geometry(tuple(reversed(sp)), tuple(float(v) for v in rng.uniform(-50, 50, 3)),
                            (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0), tuple(reversed(img.shape)))
            write_image(img, geom, out / "imagesTr" / f"{cid}_0000.nii.gz")
            target = gt_unl if kind == "unlabeled" else out / "labelsTr"
            write_image(lab, geom, target / f"{cid}.nii.gz")
            ids[kind].append(cid)
    write_json({"channel_names": {"0": "MRI"},
                "labels": {"background": 0, "organ": 1, "sphere": 2, "tube": 3},
                "numTraining": n, "file_ending": ".nii.gz", "name": "SemisegPhantoms",
                "description": "synthetic 3D phantoms written by `semiseg demo`"}, out / "dataset.json")
    write_json([{"train": ids["labeled"] + ids["unlabeled"], "val": ids["val"]}], out / "splits.json")
    return out
