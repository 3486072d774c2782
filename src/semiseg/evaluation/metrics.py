"""Segmentation metrics and ``semiseg evaluate``.

Per case and per class (or region, e.g. BraTS whole tumour = labels {1, 2, 3}):

* DSC, the Dice similarity coefficient;
* NSD, the normalised surface Dice at a tolerance in mm (per-class tolerances allowed);
* HD95, the 95th-percentile symmetric Hausdorff distance in mm;
* ASD, the average symmetric surface distance in mm (mean of the two directed averages).

Surface distances are DeepMind's definition (package ``surface-distance``, the one FLARE uses):
surfels weighted by their area, computed in mm from the header spacing, anisotropy included.

Empty masks (the convention, also in the README):

* both prediction and reference empty: DSC = NSD = 1, HD95 = ASD = 0;
* exactly one empty: DSC = NSD = 0, HD95 and ASD are missing (NaN in the CSV), and the summary
  counts them (``hd95_missing``) rather than silently averaging over fewer cases.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from surface_distance import metrics as sd

from ..data.dataset import label_problems, regions_from_labels
from ..data.io import SUPPORTED_ENDINGS, file_ending, read_image
from ..utils import SemisegError, atomic_path, parallel_map, read_json, write_json

METRICS = ("dsc", "nsd", "hd95", "asd")


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    p, g = pred.astype(bool), gt.astype(bool)
    sp, sg = int(p.sum()), int(g.sum())
    if sp + sg == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, g).sum()) / (sp + sg)


def dice_counts(pred, gt, n_classes: int) -> np.ndarray:
    """(foreground classes, 3) float64: intersection, predicted and reference voxels of each class
    over all of ``pred``/``gt`` (NumPy arrays or torch tensors, any device). Counts add up over the
    parts of a batch, so they can be summed over DDP ranks before :func:`counts_dice`."""
    rows = []
    for c in range(1, n_classes):
        p, g = pred == c, gt == c
        rows.append([float((p & g).sum()), float(p.sum()), float(g.sum())])
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def counts_dice(counts: np.ndarray, either: bool = False) -> float | None:
    """Mean hard Dice over the classes of :func:`dice_counts` rows present in the reference (or,
    with ``either``, in either map); None if no class is."""
    present = counts[:, 2] > 0 if not either else counts[:, 1] + counts[:, 2] > 0
    if not present.any():
        return None
    c = counts[present]
    return float((2 * c[:, 0] / (c[:, 1] + c[:, 2])).mean())


def dice_per_class(pred: np.ndarray, gt: np.ndarray, n_classes: int) -> list[float]:
    """Hard Dice per foreground class; NaN where both are empty."""
    return [2 * i / (p + g) if p + g else float("nan") for i, p, g in dice_counts(pred, gt, n_classes).tolist()]


def mean_dice(per: list[list[float]]) -> tuple[float, list[float]]:
    """Per-case Dice per class -> (mean over classes of the per-class means, per-class means)."""
    per_class = [float(np.nanmean(c)) if not np.all(np.isnan(c)) else float("nan") for c in np.array(per).T]
    return float(np.nanmean(per_class)), per_class


def binary_metrics(pred: np.ndarray, gt: np.ndarray, spacing, tolerance_mm: float) -> dict:
    """DSC, NSD, HD95 and ASD of two boolean masks; ``spacing`` in the arrays' axis order (mm)."""
    p, g = np.asarray(pred, bool), np.asarray(gt, bool)
    sp, sg = int(p.sum()), int(g.sum())
    out = {"gt_voxels": sg, "pred_voxels": sp, "dsc": dice(p, g)}
    if sp == 0 and sg == 0:
        out.update(nsd=1.0, hd95=0.0, asd=0.0)
        return out
    if sp == 0 or sg == 0:
        out.update(nsd=0.0, hd95=math.nan, asd=math.nan)
        return out
    d = sd.compute_surface_distances(g, p, tuple(float(s) for s in spacing))
    a, b = sd.compute_average_surface_distance(d)
    out.update(nsd=float(sd.compute_surface_dice_at_tolerance(d, tolerance_mm)),
               hd95=float(sd.compute_robust_hausdorff(d, 95)),
               asd=float((a + b) / 2))
    return out


def case_metrics(pred: np.ndarray, gt: np.ndarray, spacing, regions: dict[str, list[int]],
                 tolerance: dict[str, float] | float = 2.0) -> dict[str, dict]:
    """Metrics of every region (name -> label values) for one case."""
    out = {}
    for name, vals in regions.items():
        tol = tolerance if isinstance(tolerance, (int, float)) else tolerance[name]
        out[name] = binary_metrics(np.isin(pred, vals), np.isin(gt, vals), spacing, tol)
    return out


def parse_tolerance(spec: str | float | None, regions: list[str], default: float = 2.0) -> dict[str, float]:
    """``"2"`` or ``"liver=5,spleen=2"`` (others take ``default``) -> {region: mm}."""
    out = {r: float(default) for r in regions}
    if spec is None or spec == "":
        return out
    if isinstance(spec, (int, float)):
        return {r: float(spec) for r in regions}
    for item in str(spec).split(","):
        item = item.strip()
        if "=" in item:
            k, v = item.split("=", 1)
            if k not in out:
                raise SemisegError(f"--tolerance: unknown class or region {k!r} (known: {', '.join(regions)})")
            out[k] = _pos_float(v, "--tolerance")
        else:
            val = _pos_float(item, "--tolerance")
            out = {r: val for r in regions}
    return out


def _pos_float(v: str, what: str) -> float:
    try:
        f = float(v)
    except ValueError:
        raise SemisegError(f"{what}: {v!r} is not a number") from None
    if not f > 0:
        raise SemisegError(f"{what}: {v!r} must be positive")
    return f


# --------------------------------------------------------------------------- folders
def _label_files(folder: Path) -> dict[str, Path]:
    out = {}
    for f in sorted(folder.iterdir()):
        e = file_ending(f)
        if f.is_file() and e in SUPPORTED_ENDINGS and not f.name.startswith("."):
            out[f.name[: -len(e)]] = f
    return out


def _labels(path: Path, declared: set) -> tuple[np.ndarray, object]:
    """A label file whose values must be declared (0 and the regions' values)."""
    lab, g = read_image(path, require_finite=True)
    lab, problems = label_problems(lab, declared)
    if problems:
        raise SemisegError(f"{path}: {problems[0][1]}")
    return lab, g


def _eval_one(args):
    cid, pf, gf, regions, tol = args
    declared = {0} | {v for vals in regions.values() for v in vals}
    gt, gg = _labels(gf, declared)
    if pf is None:
        pred = np.zeros_like(gt)
    else:
        pred, pg = _labels(pf, declared)
        mm = gg.mismatch(pg, 1e-3)
        if mm:
            raise SemisegError(f"{pf}: geometry differs from the reference {gf}: " + "; ".join(mm))
    return cid, case_metrics(pred, gt, gg.spacing_zyx, regions, tol)


def _regions_from(dataset_json: Path | None, gt_files: dict[str, Path]) -> dict[str, list[int]]:
    if dataset_json is not None:
        meta = read_json(dataset_json, "dataset.json")
        out = regions_from_labels(meta.get("labels", {})) if isinstance(meta, dict) else {}
        if not out:
            raise SemisegError(f"{dataset_json}: no foreground labels declared")
        return out
    # no dataset.json: every value found in the first reference is a class
    first = next(iter(gt_files.values()))
    vals = sorted(int(v) for v in np.unique(read_image(first)[0]) if v != 0)
    return {str(v): [v] for v in vals}


def evaluate(pred_dir, gt_dir, dataset_json=None, tolerance: str | float | None = None,
             out: str | Path | None = None, missing_as_empty: bool = False, only_predicted: bool = False,
             workers: int | None = None, progress: bool = True) -> dict:
    """Score every reference in ``gt_dir`` against the same-named file in ``pred_dir``.

    Writes ``metrics.csv`` (per case and region) and ``summary.json`` (mean/std per region and
    metric) into ``out`` (default: ``pred_dir``) and returns the summary. ``dataset_json``
    (default: ``gt_dir/../dataset.json`` when present) gives class and region names.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for d in (pred_dir, gt_dir):
        if not d.is_dir():
            raise SemisegError(f"{d}: folder not found")
    out = Path(out) if out else pred_dir
    if out.resolve() == gt_dir.resolve():
        raise SemisegError(f"{out}: refusing to write results into the reference folder")
    gt_files, pred_files = _label_files(gt_dir), _label_files(pred_dir)
    if not gt_files:
        raise SemisegError(f"{gt_dir}: no label files")
    if dataset_json is None and (gt_dir.parent / "dataset.json").is_file():
        dataset_json = gt_dir.parent / "dataset.json"
    regions = _regions_from(Path(dataset_json) if dataset_json else None, gt_files)
    tol = parse_tolerance(tolerance, list(regions))
    if only_predicted:
        gt_files = {k: v for k, v in gt_files.items() if k in pred_files}
        if not gt_files:
            raise SemisegError(f"{pred_dir}: no prediction matches a reference in {gt_dir}")
    missing = [c for c in gt_files if c not in pred_files]
    if missing and not missing_as_empty:
        raise SemisegError(f"{pred_dir}: no prediction for case {missing[0]}"
                           + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                           + "; use --missing-as-empty to score them as empty masks")
    jobs = [(c, pred_files.get(c), gt_files[c], regions, tol) for c in gt_files]
    rows = []
    for cid, res in parallel_map(_eval_one, jobs, workers=workers, desc="evaluate", progress=progress):
        for region, m in res.items():
            rows.append({"case": cid, "region": region, **{k: m[k] for k in METRICS},
                         "gt_voxels": m["gt_voxels"], "pred_voxels": m["pred_voxels"],
                         "prediction_missing": cid in missing})
    summary = summarize(rows, list(regions), tol)
    summary.update({"pred_dir": str(pred_dir), "gt_dir": str(gt_dir), "n_cases": len(gt_files),
                    "missing_predictions": missing})
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "metrics.csv", ".csv") as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    write_json(summary, out / "summary.json")
    return summary


def summarize(rows: list[dict], regions: list[str], tol: dict[str, float]) -> dict:
    per = {}
    for r in regions:
        sub = [x for x in rows if x["region"] == r]
        d = {"tolerance_mm": tol[r], "n": len(sub)}
        for m in METRICS:
            v = np.array([x[m] for x in sub], float)
            ok = v[~np.isnan(v)]
            d[m] = {"mean": float(ok.mean()) if ok.size else math.nan,
                    "std": float(ok.std()) if ok.size else math.nan}
            if m in ("hd95", "asd"):
                d[m]["missing"] = int(np.isnan(v).sum())
        per[r] = d
    mean = {m: float(np.nanmean([per[r][m]["mean"] for r in regions])) if regions else math.nan
            for m in METRICS}
    return {"per_region": per, "mean_over_regions": mean}


def format_table(summary: dict) -> str:
    lines = [f"{'region':<20s} {'DSC':>13s} {'NSD':>13s} {'HD95 mm':>15s} {'ASD mm':>13s}  missing HD95"]
    for r, d in summary["per_region"].items():
        def f(m, w=13):
            return f"{d[m]['mean']:.4f}±{d[m]['std']:.3f}".rjust(w)
        lines.append(f"{r:<20s} {f('dsc')} {f('nsd')} {f('hd95', 15)} {f('asd')}  {d['hd95']['missing']}")
    mo = summary["mean_over_regions"]
    lines.append(f"{'mean':<20s} {mo['dsc']:>13.4f} {mo['nsd']:>13.4f} {mo['hd95']:>15.4f} {mo['asd']:>13.4f}")
    return "\n".join(lines)
