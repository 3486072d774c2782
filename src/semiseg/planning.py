"""``semiseg plan``: dataset fingerprint and ``plans.json`` (nnU-Net's rules, adapted).

Fingerprint (one case per worker at a time): spacing, shape after cropping to the non-zero
region, and per-channel intensity statistics of (a) the labeled foreground, as nnU-Net, and
(b) all voxels of all training scans, unlabeled included (seed 003, so CT normalisation can
also come from the unlabeled majority).

Plan:

* target spacing: the per-axis median; for anisotropic data (nnU-Net's rule: the coarsest
  axis is > 3x the finest and has < 1/3 of the voxels), the coarse axis takes the 10th
  percentile instead, so thin-slice scans are not thrown away;
* normalisation per channel from ``channel_names``: ``CT`` -> clip to the 0.5/99.5
  percentiles of the foreground, then z-score with the foreground mean/std (statistics of
  all voxels with ``ct_stats="all"``, the default when no case is labeled); CT windowing into
  several channels (seed 000) with ``ct_windows``; anything else (MRI...) -> per-case z-score,
  restricted to the non-zero mask when cropping removed more than a quarter of the volume
  (nnU-Net's rule, e.g. skull-stripped brains); ``noNorm`` and ``rescale_to_0_1`` as nnU-Net;
* 3D and 2D configurations: the nnU-Net patch search (start at ~256 mm^3 of isotropic-ish
  patch capped by the median shape, shrink the axis furthest above the median shape) under two
  budgets: the training memory (``memory_gb``) and the compute per iteration
  (``seconds_per_iteration``, which matters on a CPU where a 30-minute budget must still give
  hundreds of iterations). The U-Net topology (pooling per axis, kernel sizes, depth) follows
  nnU-Net: an axis is pooled while its feature map stays >= 4 voxels and its spacing is within
  2x of the finest. Each configuration also says what it would be on a GPU (``gpu_memory_gb``,
  mixed precision);
* forced inference spacing (seed 003) as an option.

Spacings, shapes and patches in ``plans.json`` are in array order (z, y, x).
"""
from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .dataset import Dataset, Split, declared_label_values, read_case_image, read_case_label
from .utils import SemisegError, parallel_map, read_json, write_json

CT_WINDOWS = {  # (level, width) in HU; seed 000 section 2.1 stacks abdomen, chest and bone windows
    "abdomen": (40.0, 400.0),
    "chest": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
}

# Cost model constants. CPU: calibrated on this 2-core machine with torch 2.13 by
# benchmarks/plan_cost_model.py (a first guess of 1.2e11 FLOP/s, 4e9 B/s and 1 GB overhead
# overestimated time 2-2.7x and memory 1.3-1.5x on the LA/ACDC plans; 2.4e11 and 8e9 then
# underestimated the larger plans they led to by a median 1.28x). GPU: a mid-range card
# in mixed precision, not calibrated here (no GPU on this machine).
DEVICE_PROFILES = {
    "cpu": {"conv_flops": 2.0e11, "mem_bandwidth": 6.5e9, "bytes_per_value": 4, "overhead_gb": 0.45},
    "gpu": {"conv_flops": 2.0e13, "mem_bandwidth": 4e11, "bytes_per_value": 2, "overhead_gb": 1.5},
}
SAMPLES_PER_CASE = 10_000


# --------------------------------------------------------------------------- fingerprint
def nonzero_bbox(image: np.ndarray) -> list[list[int]]:
    """Bounding box [[lo, hi), ...] of voxels that are non-zero in any channel (nnU-Net's crop).

    ``image`` is (C, z, y, x). An all-zero image keeps its full extent.
    """
    from scipy.ndimage import binary_fill_holes

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
    img, geom = read_case_image(case)
    bbox = nonzero_bbox(img)
    sl = tuple(slice(lo, hi) for lo, hi in bbox)
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
        if fg is not None and fg.any():
            vals = v[fg]
            ch["foreground"] = {"n": int(vals.size),
                                "sample": rng.choice(vals, min(SAMPLES_PER_CASE, vals.size), replace=False)}
        out["channels"].append(ch)
    return out


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
    # per-case results hold float32 samples (10,000 voxels per channel): ~80 MB for 2,000 scans
    per_case = list(parallel_map(_fingerprint_case, jobs, workers=workers, desc="fingerprint",
                                 progress=progress))
    if not per_case:
        raise SemisegError(f"{ds.root}: no training cases to plan from")
    intensity = []
    for c, name in enumerate(ds.channel_names):
        n = sum(pc["channels"][c]["all"]["n"] for pc in per_case)
        s = sum(pc["channels"][c]["all"]["sum"] for pc in per_case)
        ss = sum(pc["channels"][c]["all"]["sumsq"] for pc in per_case)
        mean = s / n
        allsample = np.concatenate([pc["channels"][c]["all"]["sample"] for pc in per_case])
        all_stats = _stats(allsample)
        all_stats.update({"mean": mean, "std": math.sqrt(max(ss / n - mean * mean, 0.0)),
                          "min": min(pc["channels"][c]["all"]["min"] for pc in per_case),
                          "max": max(pc["channels"][c]["all"]["max"] for pc in per_case)})
        fgs = [pc["channels"][c]["foreground"]["sample"] for pc in per_case if "foreground" in pc["channels"][c]]
        fg_stats = _stats(np.concatenate(fgs)) if fgs else {}
        intensity.append({"channel": name, "all_voxels": all_stats, "foreground": fg_stats,
                          "n_cases_foreground": len(fgs)})
    spacings = np.array([pc["spacing"] for pc in per_case])
    shapes = np.array([pc["shape_after_crop"] for pc in per_case])
    return {"n_cases": len(per_case), "n_labeled": len(split.labeled),
            "spacings": spacings.tolist(), "shapes_after_crop": shapes.tolist(),
            "median_spacing": np.median(spacings, 0).tolist(),
            "median_shape_after_crop": np.median(shapes, 0).tolist(),
            "median_crop_fraction": float(np.median([pc["crop_fraction"] for pc in per_case])),
            "median_zero_fraction_in_crop": float(np.median([pc["zero_fraction_in_crop"] for pc in per_case])),
            "intensity": intensity, "cases": [pc["id"] for pc in per_case]}


# --------------------------------------------------------------------------- spacing
def target_spacing(spacings: np.ndarray, shapes: np.ndarray) -> tuple[list[float], str]:
    """nnU-Net's full-resolution target spacing: the median, or for anisotropic data the 10th
    percentile along the coarse axis (never finer than the other axes)."""
    spacings, shapes = np.asarray(spacings, float), np.asarray(shapes, float)
    target = np.median(spacings, 0)
    sizes = np.median(shapes * spacings / target, 0)
    worst = int(np.argmax(target))
    other = [i for i in range(len(target)) if i != worst]
    aniso_spacing = target[worst] > 3 * max(target[other])
    aniso_voxels = sizes[worst] * 3 < min(sizes[other])
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
    """Spacing to resample an inference image to (seed 003, section 2.2), in (z, y, x).

    ``forced`` holds the default (s_z, s_y, s_x); ``None`` keeps the image's own spacing on that
    axis. ``rule="slices"`` applies seed 003's slice-count rule: fewer than 150 slices -> only
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


# --------------------------------------------------------------------------- topology & cost
def unet_topology(spacing, patch, max_stages: int = 6, min_feature_map: int = 4) -> dict:
    """nnU-Net-style pooling/kernels: pool an axis while its map stays >= ``min_feature_map`` and
    its (current) spacing is within 2x of the finest poolable axis; 3-kernels once an axis's
    spacing is within 2x of the finest, 1 before (so thick slices are not convolved across)."""
    sp = np.asarray(spacing, float).copy()
    size = np.asarray(patch, int).copy()
    dim = len(sp)
    conv_k = []
    pools = []
    while True:
        conv_k.append([3 if sp[a] / sp.min() < 2 else 1 for a in range(dim)])
        if len(pools) >= max_stages - 1:
            break
        valid = [a for a in range(dim) if size[a] >= 2 * min_feature_map]
        if not valid:
            break
        mn = min(sp[a] for a in valid)
        axes = [a for a in valid if sp[a] / mn < 2]
        if not axes:
            break
        p = [2 if a in axes else 1 for a in range(dim)]
        pools.append(p)
        sp = sp * np.array(p)
        size = size // np.array(p)
    div = np.prod(np.array(pools), 0).astype(int).tolist() if pools else [1] * dim
    return {"pool_kernels": pools, "conv_kernels": conv_k, "n_stages": len(conv_k),
            "divisible_by": div}


def stage_features(n_stages: int, base: int, max_f: int) -> list[int]:
    """nnU-Net's widths: the base doubled per stage, capped at ``max_f``."""
    return [min(base * 2 ** s, max_f) for s in range(n_stages)]


def estimate_cost(patch, topo: dict, in_ch: int, n_classes: int, base: int, max_f: int,
                  batch: int, device: str) -> dict:
    """Training cost of one iteration of a U-Net (deep supervision, instance norm, 2 convs per
    block): peak memory in GB and seconds. An analytic model (activations kept for backward,
    parameters with optimizer state, conv FLOPs and elementwise traffic)."""
    prof = DEVICE_PROFILES[device]
    bpv = prof["bytes_per_value"]
    feats = stage_features(topo["n_stages"], base, max_f)
    vox = np.prod(np.asarray(patch, float))
    acts = 0.0
    flops = 0.0
    params = 0.0
    cin = in_ch
    sizes = []
    for s, (f, k) in enumerate(zip(feats, topo["conv_kernels"])):
        if s > 0:
            vox /= np.prod(topo["pool_kernels"][s - 1])
        sizes.append(vox)
        kk = float(np.prod(k))
        # encoder: 2 convs (conv out, norm out, activation out kept per conv)
        acts += 6 * vox * f
        flops += 2 * vox * kk * (cin * f + f * f)
        params += kk * (cin * f + f * f)
        cin = f
    for s in range(topo["n_stages"] - 2, -1, -1):
        f, vox = feats[s], sizes[s]
        kk = float(np.prod(topo["conv_kernels"][s]))
        pk = float(np.prod(topo["pool_kernels"][s]))
        # decoder: transposed conv output, concatenation (2f), 2 convs, a 1x1 seg head
        acts += (1 + 2 + 6) * vox * f + 3 * vox * n_classes
        flops += 2 * vox * (feats[s + 1] * f) + 2 * vox * kk * (2 * f * f + f * f) + 2 * vox * f * n_classes
        params += pk * feats[s + 1] * f + kk * 3 * f * f
    acts += sizes[0] * (in_ch + 4 * n_classes)  # input, softmax, one-hot, loss terms at full res
    train_flops = 3.0 * flops * batch
    act_bytes = acts * batch * bpv
    mem = act_bytes * 1.15 + params * 4 * 4 + prof["overhead_gb"] * 1e9
    secs = train_flops / prof["conv_flops"] + 3 * act_bytes / prof["mem_bandwidth"]
    return {"memory_gb": mem / 1e9, "seconds": secs, "params_m": params / 1e6,
            "gflops_per_iteration": train_flops / 1e9}


@dataclass
class Budget:
    device: str = "cpu"  # cost model: "cpu" or "gpu"
    memory_gb: float = 8.0
    seconds_per_iteration: float | None = 2.0  # None: no compute budget
    base_features: int = 32
    max_features: int = 320


def plan_configuration(spacing, median_shape, in_ch: int, n_classes: int, budget: Budget,
                       dim: int, n_voxels_dataset: float, max_stages: int = 6) -> dict:
    """nnU-Net's patch/batch search under a memory budget and (optionally) a compute budget."""
    spacing = np.asarray(spacing, float)
    median_shape = np.maximum(np.asarray(median_shape, float), 1)
    ref_mm = 256 ** 3 if dim == 3 else 2048 ** 2
    inv = 1.0 / spacing
    patch = np.round(inv * (ref_mm / np.prod(inv)) ** (1.0 / dim))
    patch = np.minimum(patch, median_shape).astype(int)
    patch = np.maximum(patch, 8)

    def fit(p):
        topo = unet_topology(spacing, p, max_stages=max_stages)
        d = np.array(topo["divisible_by"])
        p = (np.ceil(np.asarray(p) / d) * d).astype(int)
        topo = unet_topology(spacing, p, max_stages=max_stages)
        return p, topo

    def cost(p, topo, b):
        return estimate_cost(p, topo, in_ch, n_classes, budget.base_features, budget.max_features, b,
                             budget.device)

    min_batch = 2
    patch, topo = fit(patch)
    reasons = []
    while True:
        c = cost(patch, topo, min_batch)
        over_mem = c["memory_gb"] > budget.memory_gb
        over_time = budget.seconds_per_iteration is not None and c["seconds"] > budget.seconds_per_iteration
        if not (over_mem or over_time):
            break
        # shrink the axis furthest above the median shape (ties: the larger axis) by one pooling step
        ratio = patch / median_shape
        cand = [a for a in range(dim) if patch[a] > 8]
        new = patch.copy()
        if cand:
            ax = max(cand, key=lambda a: (ratio[a], patch[a]))
            new[ax] = max(8, patch[ax] - int(topo["divisible_by"][ax]))
            new, new_topo = fit(new)
        if not cand or np.array_equal(new, patch):
            reasons.append("patch at its minimum; the budget cannot be met")
            break
        reasons.append("memory" if over_mem else "compute")
        patch, topo = new, new_topo
    # batch: largest that fits both budgets (both costs are affine in the batch size)
    one, zero = cost(patch, topo, 1), cost(patch, topo, 0)
    limits = {
        "memory": int((budget.memory_gb - zero["memory_gb"]) / max(one["memory_gb"] - zero["memory_gb"], 1e-9)),
        "compute": (int(budget.seconds_per_iteration / max(one["seconds"], 1e-9))
                    if budget.seconds_per_iteration else 10 ** 6),
        # nnU-Net: a batch should not cover more than 5 % of the dataset's voxels
        "5% of the dataset's voxels": int(0.05 * n_voxels_dataset / np.prod(patch)),
        "the cap": 64 if dim == 3 else 512,
    }
    limit = min(limits, key=limits.get)
    batch = max(min_batch, limits[limit])
    if limits[limit] < min_batch:
        limit = f"the minimum of {min_batch} ({limit} alone would allow {max(limits[limit], 0)})"
    final = cost(patch, topo, batch)
    shrunk = {r: reasons.count(r) for r in set(reasons)}
    why = (f"patch from ~{round(ref_mm ** (1 / dim))} mm per side capped by the median shape "
           f"{[int(x) for x in median_shape]}" +
           (f", shrunk {sum(shrunk.values())} steps for " + " and ".join(sorted(shrunk)) if shrunk else "") +
           f"; batch {batch} limited by {limit}")
    return {
        "patch_size": [int(x) for x in patch], "batch_size": int(batch), "spacing": [float(x) for x in spacing],
        "median_shape": [int(round(x)) for x in median_shape],
        "n_stages": topo["n_stages"], "pool_kernels": topo["pool_kernels"],
        "conv_kernels": topo["conv_kernels"],
        "features_per_stage": stage_features(topo["n_stages"], budget.base_features, budget.max_features),
        "estimated_memory_gb": round(final["memory_gb"], 2),
        "estimated_seconds_per_iteration": round(final["seconds"], 3),
        "params_millions": round(final["params_m"], 2), "why": why,
    }


# --------------------------------------------------------------------------- normalisation
def choose_normalization(ds: Dataset, fp: dict, ct_stats: str | None, ct_windows: list | None) -> list[dict]:
    out = []
    # nnU-Net normalises inside the non-zero mask when cropping removed > 25 % of the volume; we also
    # do when > 25 % of the cropped volume is exactly zero (skull-stripped scans already cropped
    # to the brain, like BraTS-mini), where the zeros are padding, not tissue
    use_mask = fp["median_crop_fraction"] < 0.75 or fp.get("median_zero_fraction_in_crop", 0) > 0.25
    for c, name in enumerate(ds.channel_names):
        st = fp["intensity"][c]
        key = name.strip().lower()
        if key == "ct":
            if ct_windows:
                out.append({"channel": name, "scheme": "ct_windows",
                            "windows": [{"name": w[0], "level": w[1], "width": w[2]} for w in ct_windows],
                            "why": "CT windowing into one channel per window (seed 000)"})
                continue
            src = ct_stats or ("foreground" if st["foreground"] else "all_voxels")
            s = st[src] if src == "foreground" else st["all_voxels"]
            if not s:
                raise SemisegError(f"{ds.root}: no labeled foreground for CT statistics; use --ct-stats all")
            out.append({"channel": name, "scheme": "ct", "stats": src,
                        "clip": [s["percentile_00_5"], s["percentile_99_5"]],
                        "mean": s["mean"], "std": s["std"],
                        "why": f"CT: clip to the 0.5/99.5 percentiles of the {src.replace('_', ' ')} "
                               "then z-score with its mean/std (nnU-Net; 'all voxels' is seed 003's variant)"})
        elif key in ("nonorm", "none"):
            out.append({"channel": name, "scheme": "none", "why": "channel name says noNorm"})
        elif key in ("rescale_to_0_1", "rgb_to_0_1"):
            out.append({"channel": name, "scheme": key, "why": f"channel name says {name}"})
        else:
            out.append({"channel": name, "scheme": "zscore", "use_mask": bool(use_mask),
                        "why": "non-CT (MRI-like, no absolute scale): per-case z-score" +
                               (" inside the non-zero mask (cropping removed > 25 % of the volume, or > 25 %"
                                " of the cropped volume is zero padding)"
                                if use_mask else "")})
    return out


def parse_windows(spec: str | None) -> list | None:
    """``abdomen,chest,bone`` or ``name:level:width,...`` -> [(name, level, width), ...]."""
    if not spec:
        return None
    out = []
    for item in spec.split(","):
        item = item.strip()
        if item in CT_WINDOWS:
            out.append((item, *CT_WINDOWS[item]))
            continue
        parts = item.split(":")
        try:
            if len(parts) != 3:
                raise ValueError
            out.append((parts[0], float(parts[1]), float(parts[2])))
        except ValueError:
            raise SemisegError(f"--ct-windows: {item!r} is neither a known window "
                               f"({', '.join(CT_WINDOWS)}) nor name:level:width") from None
    return out


# --------------------------------------------------------------------------- entry point
def plan(dataset: str | Path, out: str | Path, labeled: int | None = None, labeled_list=None,
         labeled_key: str | None = None, fold: int = 0, memory_gb: float = 8.0,
         seconds_per_iteration: float | None = 2.0, gpu_memory_gb: float = 10.0,
         base_features: int | None = None, max_features: int = 320, ct_stats: str | None = None,
         ct_windows: str | None = None, forced_spacing: list | None = None,
         forced_spacing_rule: str = "fixed", workers: int | None = None, progress: bool = True,
         student: bool = False, spacing_factor: float | None = None) -> dict:
    """Fingerprint ``dataset`` and write ``out/plans.json`` (and ``out/split.json``). Returns the plan.

    ``student`` plans seed 002's small fast student: a target spacing ``spacing_factor`` (default
    1.5) times coarser on every axis, half the usual widths (8 base features on the CPU, 16 on a GPU
    as the seed), at most 256 features, and an inference step of 0.8 without TTA (``inference``)."""
    dataset, out = Path(dataset).resolve(), Path(out).resolve()
    if out == dataset or dataset in out.parents:
        raise SemisegError(f"{out}: the work folder must not be inside the dataset folder {dataset}")
    if ct_stats not in (None, "foreground", "all", "all_voxels"):
        raise SemisegError(f"--ct-stats {ct_stats!r}: use foreground or all")
    ct_stats = "all_voxels" if ct_stats == "all" else ct_stats
    if forced_spacing:
        if len(forced_spacing) != 3:
            raise SemisegError("--forced-spacing needs three values (z y x; 0 keeps the image's own)")
        forced_inference_spacing(forced_spacing, [1.0, 1.0, 1.0], 100, forced_spacing_rule)  # validates the rule
    ds = Dataset.load(dataset)
    split = ds.split(labeled=labeled, labeled_list=labeled_list, labeled_key=labeled_key, fold=fold)
    fp = fingerprint(ds, split, workers=workers, progress=progress)
    spacings, shapes = np.array(fp["spacings"]), np.array(fp["shapes_after_crop"])
    tgt, why_sp = target_spacing(spacings, shapes)
    if spacing_factor is None:
        spacing_factor = 1.5 if student else 1.0
    if not 0 < spacing_factor < 100:
        raise SemisegError(f"--spacing-factor must be positive, not {spacing_factor}")
    if spacing_factor != 1.0:
        tgt = [t * spacing_factor for t in tgt]
        why_sp += f", then {spacing_factor:g}x coarser" + (" (student)" if student else "")
    if student:
        max_features = min(max_features, 256)
    shapes_t = shapes * spacings / np.array(tgt)
    median_t = np.median(shapes_t, 0)
    n_vox = float(np.sum(np.prod(shapes_t, 1)))
    windows = parse_windows(ct_windows)
    norm = choose_normalization(ds, fp, ct_stats, windows)
    in_ch = sum(len(n["windows"]) if n["scheme"] == "ct_windows" else 1 for n in norm)
    n_classes = ds.num_classes

    cpu = Budget("cpu", memory_gb, seconds_per_iteration, base_features or (8 if student else 16), max_features)
    gpu = Budget("gpu", gpu_memory_gb, None, base_features or (16 if student else 32), max_features)
    configs = {}
    # 3D
    c3 = plan_configuration(tgt, median_t, in_ch, n_classes, cpu, 3, n_vox)
    c3["gpu"] = {k: v for k, v in plan_configuration(tgt, median_t, in_ch, n_classes, gpu, 3, n_vox).items()
                 if k not in ("spacing", "median_shape")}
    configs["3d"] = c3
    # 2D: slices across the axis of lowest resolution (largest spacing; z on ties)
    slice_axis = int(np.argmax(np.asarray(tgt) + np.array([1e-6, 0, 0])))
    inplane = [a for a in range(3) if a != slice_axis]
    sp2 = [tgt[a] for a in inplane]
    med2 = [median_t[a] for a in inplane]
    c2 = plan_configuration(sp2, med2, in_ch, n_classes, cpu, 2, n_vox)
    c2["gpu"] = {k: v for k, v in plan_configuration(sp2, med2, in_ch, n_classes, gpu, 2, n_vox).items()
                 if k not in ("spacing", "median_shape")}
    c2["slice_axis"] = slice_axis
    configs["2d"] = c2

    plans = {
        "semiseg_version": __version__,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "dataset": ds.name, "dataset_path": str(dataset),
        "axis_order": "arrays, spacings, shapes and patches are (z, y, x); SimpleITK headers are (x, y, z)",
        "channels": ds.channel_names, "num_input_channels": in_ch,
        "labels": ds.labels, "regions_class_order": ds.regions_class_order, "num_classes": n_classes,
        "split": split.to_dict(),
        "target_spacing": tgt, "target_spacing_why": why_sp,
        "median_shape_at_target_spacing": [float(x) for x in median_t],
        "normalization": norm,
        "resampling": {"image_order": 3, "label": "one-hot linear", "anisotropic_z_order": 0,
                       "anisotropy_threshold": 3.0},
        "forced_spacing": (None if not forced_spacing else
                           {"spacing": [None if v in (None, 0) else float(v) for v in forced_spacing],
                            "rule": forced_spacing_rule}),
        "budget": {"cpu": cpu.__dict__, "gpu": gpu.__dict__},
        "inference": ({"step": 0.8, "tta": False, "why": "student (seed 002): larger sliding-window step, no TTA"}
                      if student else {"step": 0.5, "tta": False, "why": "nnU-Net's default step"}),
        "student": student,
        "configurations": configs,
        "fingerprint": {k: v for k, v in fp.items() if k not in ("spacings", "shapes_after_crop", "cases")},
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(fp, out / "fingerprint.json", indent=None)
    write_json(split.to_dict(), out / "split.json")
    write_json(plans, out / "plans.json")
    return plans


def load_plans(work: str | Path) -> dict:
    return read_json(Path(work) / "plans.json", "plans.json (run `semiseg plan` first)")
