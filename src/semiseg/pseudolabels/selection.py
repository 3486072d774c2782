"""Selecting pseudo-labels by their consensus score and caching them for training (Pham et al. 2022).

``semiseg train ... --pseudo-labels PL_DIR --select RULE`` reads ``PL_DIR/scores.csv`` (written by
``semiseg pseudolabel``), keeps the scans of the run's unlabeled list that the rule selects, and
trains on them as labeled cases; the unlabeled scans not selected stay unlabeled input (CPS uses
them, Pham et al. Table 5 row 4; supervised training ignores them). Rules:

- ``threshold:T``  every scan whose score is >= T;
- ``top:F``        the best fraction F (0 < F <= 1) of the scored scans, at least one;
- ``all``          every scored scan.

The score is a column of ``scores.csv`` (``--select-score``, default ``consensus``, Pham et al. eq. 2);
for a column where lower is better (``entropy``) the order is reversed (``threshold:T`` keeps
scores <= T). Ties are broken by case ID, so a selection is a pure function of the table.
Pseudo-labels with no foreground voxel are never selected (all members agreeing on nothing is a
perfect consensus about a useless label).

The pseudo-label maps (in each scan's original geometry) are cropped and resampled exactly like a
true label of that scan was by ``semiseg preprocess`` (the crop box and spacings of its cached
``CASE.json``) and written, atomically, as ``CASE_seg.npy`` + ``CASE_locs.npy`` into the run's
``pseudo_labels/`` folder; the work folder is never written. A map whose geometry differs from the
scan's or that holds undeclared values is an error naming the file.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

from tqdm import tqdm

from ..data.dataset import Case, declared_label_values, label_dtype, read_case_label
from ..data.io import SUPPORTED_ENDINGS, Geometry, file_ending
from ..preprocessing.cache import class_locations, label_to_grid
from ..utils import SemisegError, read_json, save_npy

LOWER_IS_BETTER = {"entropy"}


def parse_select(spec: str) -> tuple[str, float | None]:
    """``threshold:T`` / ``top:F`` / ``all`` -> (kind, value); raises SemisegError on anything else."""
    s = str(spec).strip()
    if s == "all":
        return "all", None
    kind, _, val = s.partition(":")
    if kind not in ("threshold", "top") or not val:
        raise SemisegError(f"--select {spec!r}: use threshold:T, top:FRACTION or all")
    try:
        v = float(val)
    except ValueError:
        raise SemisegError(f"--select {spec!r}: {val!r} is not a number") from None
    if not math.isfinite(v) or (kind == "top" and not 0 < v <= 1):
        raise SemisegError(f"--select {spec!r}: top needs a fraction in (0, 1]")
    return kind, v


def read_scores(pl_dir: str | Path, score: str = "consensus", skip_empty: bool = True) -> dict[str, float]:
    """Case -> score from ``PL_DIR/scores.csv``. A pseudo-label with no foreground at all is left out
    (``skip_empty``): every member agreeing on nothing scores a perfect consensus but teaches nothing."""
    table = Path(pl_dir) / "scores.csv"
    if not table.exists():
        unfinished = (Path(pl_dir) / "scores").is_dir()
        raise SemisegError(f"{table}: missing; " + (
            "the pseudo-labelling into this folder has not finished (a part still running, stopped, or "
            "killed): run the same `semiseg pseudolabel` command again" if unfinished else
            f"run `semiseg pseudolabel ... -o {pl_dir}` first"))
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SemisegError(f"{table}: no scored scans")
    if score not in rows[0]:
        cols = [c for c in rows[0] if c not in ("case", "members", "slice_axis")]
        raise SemisegError(f"{table}: no score column {score!r} (it has {', '.join(cols)})")
    out = {}
    for r in rows:
        try:
            v = float(r[score])
        except ValueError:
            raise SemisegError(f"{table}: case {r.get('case')}: {score} {r[score]!r} is not a number") from None
        if not math.isfinite(v):
            raise SemisegError(f"{table}: case {r.get('case')}: {score} is {v}")
        if skip_empty and r.get("foreground_voxels") not in (None, "") and int(float(r["foreground_voxels"])) == 0:
            continue
        out[r["case"]] = v
    return out


def select_cases(scores: dict[str, float], spec: str, score: str = "consensus",
                 candidates: list[str] | None = None) -> list[str]:
    """The cases of ``scores`` (restricted to ``candidates``) that ``spec`` keeps, best first."""
    kind, v = parse_select(spec)
    allowed = set(scores if candidates is None else candidates)
    items = [(c, s) for c, s in scores.items() if c in allowed]
    lower = score in LOWER_IS_BETTER
    items.sort(key=lambda cs: ((cs[1] if lower else -cs[1]), cs[0]))
    if kind == "all":
        keep = items
    elif kind == "threshold":
        keep = [cs for cs in items if (cs[1] <= v if lower else cs[1] >= v)]
    else:
        keep = items[:max(1, int(round(v * len(items))))] if items else []
    return [c for c, _ in keep]


def cache_pseudo_labels(work: str | Path, pl_dir: str | Path, ids: list[str], out_dir: str | Path,
                        plans: dict, progress: bool = False) -> dict[str, Path]:
    """Preprocess the pseudo-labels of ``ids`` onto the work folder's grid into ``out_dir``; returns
    case -> folder holding ``CASE_seg.npy`` / ``CASE_locs.npy``. Skips cases already cached."""
    work, pl_dir, out_dir = Path(work), Path(pl_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    declared = declared_label_values(plans["labels"])
    found = {f.name[: -len(file_ending(f))]: f for f in pl_dir.iterdir()
             if f.is_file() and file_ending(f) in SUPPORTED_ENDINGS}
    out = {}
    for i, cid in enumerate(tqdm(ids, desc="pseudo-labels", disable=not progress, unit="scan")):
        seg_f, locs_f = out_dir / f"{cid}_seg.npy", out_dir / f"{cid}_locs.npy"
        out[cid] = out_dir
        if seg_f.exists() and locs_f.exists():
            continue
        if cid not in found:
            raise SemisegError(f"{pl_dir}: scores.csv names {cid} but the folder has no pseudo-label image for it")
        props = read_json(work / "preprocessed" / f"{cid}.json", f"preprocessed case {cid}")
        lab = read_case_label(Case(cid, [], found[cid]), Geometry.from_dict(props["geometry"]), declared)
        seg = label_to_grid(lab.astype(label_dtype(plans["num_classes"] - 1)), props, plans)
        save_npy(class_locations(seg, 5000 + i), locs_f)  # locs first: seg present means complete
        save_npy(seg, seg_f)
    return out
