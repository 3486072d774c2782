"""Pseudo-labels from an ensemble, with per-scan consensus scores (Pham et al. 2022, eq. 2).

Every unlabeled scan is predicted by M ensemble members: each network of each run (a CPS run
gives two), each ``RUN@CHECKPOINT``, and with ``tta_members`` each mirroring as a member of its
own. The pseudo-label is the argmax of the members' mean softmax (in the scan's own geometry),
with the first run's postprocessing choice for its checkpoint applied (:mod:`..inference.postprocessing`);
the scores compare each member's argmax ``Y_m`` with that averaged label ``Y_avg``:

- ``consensus`` (Pham et al. eq. 2): the mean over slices ``k`` and members ``m`` of
  DSC(Y_m^k, Y_avg^k), slices taken along the axis of lowest resolution (the slice axis of a 2D
  pipeline); a slice counts when it holds foreground in either map, and its DSC is the mean over
  the classes present in either;
- ``consensus_3d``: the same with whole volumes instead of slices;
- ``consensus_3d_<class>``: per class (empty in every map: 1.0, nothing to disagree on);
- ``entropy``: the mean voxel entropy of the averaged softmax over the voxels that any member
  calls foreground (0 when none does), a score that needs no second model (a single member gets it
  alone: the consensus columns need two members or more).

Streaming: one scan at a time in memory (the running sum of probabilities and M label maps of
uint8). Resumable: a scan whose label and score file exist is skipped. Shardable: ``num_parts`` /
``part_id`` (default: torchrun's ``WORLD_SIZE`` / ``RANK``) split the sorted scans; each part
writes ``scores/<CASE>.json`` per scan (with the seconds it took; ``scores/<CASE>.error`` for a scan
that could not be read), and a part that finishes writes ``scores.csv`` from all score files only
when every scan of the input has one (or failed): the last part to finish leaves the complete
table, and a ``scores.csv`` is never a part of the table (a training run would take it as all).
"""
from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data.dataset import Case, label_dtype, read_case_image
from ..data.io import write_image
from ..evaluation.metrics import dice_per_class  # NaN where a class is in neither map
from ..inference import postprocessing
from ..inference.ensemble import MeanProbs
from ..inference.predict import case_files, check_folders, list_input_cases, preprocessed_for
from ..inference.runs import load_models, model_step
from ..inference.sliding_window import keep_largest_component, mirror_sets, probs_to_original, sliding_window_probs
from ..planning import Configuration, Plans
from ..planning.spacing import lowest_resolution_axis
from ..utils import CaseFailures, SemisegError, atomic_path, class_argmax, write_json
from ..utils.device import default_device


def consensus_scores(members: list[np.ndarray], avg: np.ndarray, n_classes: int, slice_axis: int = 0,
                     class_names: list[str] | None = None) -> dict:
    """Pham et al.'s consensus (slice-wise), its 3D variant and per-class 3D scores of M label maps
    against their average ``avg`` (all (z, y, x) integer maps)."""

    names = class_names or [f"class{c}" for c in range(1, n_classes)]
    per_class = {n: [] for n in names}
    vol, sl_scores = [], []
    for y in members:
        ds = dice_per_class(y, avg, n_classes)
        for n, d in zip(names, ds):
            per_class[n].append(1.0 if np.isnan(d) else d)
        present = [d for d in ds if not np.isnan(d)]
        vol.append(float(np.mean(present)) if present else 1.0)
        a, b = np.moveaxis(y, slice_axis, 0), np.moveaxis(avg, slice_axis, 0)
        for k in range(a.shape[0]):
            cls = [d for d in dice_per_class(a[k], b[k], n_classes) if not np.isnan(d)]
            if cls:
                sl_scores.append(float(np.mean(cls)))
    out = {"consensus": float(np.mean(sl_scores)) if sl_scores else 1.0, "consensus_3d": float(np.mean(vol))}
    out.update({f"consensus_3d_{n}": float(np.mean(v)) for n, v in per_class.items()})
    return out


def mean_entropy(probs: torch.Tensor, members: list[np.ndarray]) -> float:
    """Mean entropy (nats) of the averaged softmax over voxels any member calls foreground."""
    fg = np.zeros(members[0].shape, bool)
    for y in members:
        fg |= y > 0
    if not fg.any():
        return 0.0
    p = probs.clamp_min(1e-8)
    h = -(p * p.log()).sum(0).numpy()
    return float(h[fg].mean())


def _flip_sets(model, tta_members: bool) -> list[tuple]:
    """Mirrorings (axes of a (z, y, x) case) each network contributes as members."""
    if not tta_members:
        return [()]
    return mirror_sets([1, 2] if Configuration(model.cfg).is_2d else [0, 1, 2])


def _members(models, image, geom, step, tta_members, device):
    """Yield (member name, probabilities in the scan's original grid) one member at a time."""
    cache = {}
    for m in models:
        data, props = preprocessed_for(m, image, geom, cache)
        for net, name in zip(m.nets, m.names):
            for f in _flip_sets(m, tta_members):
                d = np.flip(np.asarray(data), [a + 1 for a in f]).copy() if f else data
                p = sliding_window_probs([net], d, m.cfg, step=model_step(m, step), device=device, amp=m.amp)
                if f:
                    p = torch.flip(p, [a + 1 for a in f])
                yield f"{Path(m.run).name}:{name}" + (f":flip{''.join(map(str, f))}" if f else ""), \
                    probs_to_original(p, props)


def pseudolabel_folder(runs: list[str], in_dir, out_dir, checkpoint: str = "best", nets: list[str] | None = None,
                       step: float | None = None, tta_members: bool = False, num_parts: int | None = None,
                       part_id: int | None = None, overwrite: bool = False, device: str | None = None,
                       progress: bool = True, backend: str = "torch", stop_on_error: bool = False) -> dict:
    """``semiseg pseudolabel``: averaged pseudo-labels and consensus scores for every scan of ``in_dir``.
    ``runs``: run folders (``RUN@CHECKPOINT``) or model files; ``backend``: torch, onnxruntime or
    openvino. A scan that cannot be read is reported at the end (the others are done);
    ``stop_on_error`` stops at the first instead."""
    in_dir, out_dir = check_folders(in_dir, out_dir)
    num_parts = num_parts or int(os.environ.get("WORLD_SIZE", "1"))
    part_id = part_id if part_id is not None else int(os.environ.get("RANK", "0"))
    if not 0 <= part_id < num_parts:
        raise SemisegError(f"--part-id {part_id} is not in 0..{num_parts - 1}")
    dev = default_device(device)
    models = load_models(runs, checkpoint, nets, dev, backend)
    p0 = models[0].plans
    n_members = sum(len(m.nets) * len(_flip_sets(m, tta_members)) for m in models)
    cases = list_input_cases(in_dir, p0.num_input_channels)
    ids = sorted(cases)[part_id::num_parts]
    ending = p0.get("file_ending", ".nii.gz")
    names = Plans(p0).class_names()
    dtype = label_dtype(p0.num_classes - 1)
    keep_largest = postprocessing.component_classes(models[0].settings.get("largest_component"), p0.num_classes)
    (out_dir / "scores").mkdir(parents=True, exist_ok=True)
    if overwrite or not table_complete(out_dir, cases):  # work remains: an older table is not this one
        (out_dir / "scores.csv").unlink(missing_ok=True)
    done = skipped = 0
    failures = CaseFailures(stop_on_error)

    def one(cid, target, sfile) -> None:
        t0 = time.time()
        image, geom = read_case_image(Case(cid, case_files(cases[cid])))
        acc, labels = MeanProbs(), []
        for _name, p in _members(models, image, geom, step, tta_members, dev):
            acc.add(p)
            labels.append(class_argmax(p, 0).numpy().astype(dtype))
        probs = acc.mean()
        avg = class_argmax(probs, 0).numpy().astype(dtype)
        axis = lowest_resolution_axis(geom.spacing_zyx)
        row = {"case": cid, "members": len(labels), "slice_axis": "zyx"[axis]}
        if len(labels) > 1:  # one member has nothing to agree with: its scan gets the entropy alone
            row.update(consensus_scores(labels, avg, p0.num_classes, axis, names))
        row["entropy"] = mean_entropy(probs, labels)
        if keep_largest:  # the first run's postprocessing choice, after the scores (they measure agreement)
            avg = keep_largest_component(avg, keep_largest)
        row["foreground_voxels"] = int((avg > 0).sum())
        write_image(avg, geom, target)
        row["seconds"] = round(time.time() - t0, 2)
        write_json(row, sfile)  # last: a scan with a score file is complete
        sfile.with_suffix(".error").unlink(missing_ok=True)

    for cid in tqdm(ids, desc=f"pseudolabel {part_id + 1}/{num_parts}", disable=not progress, unit="scan"):
        target, sfile = out_dir / f"{cid}{ending}", out_dir / "scores" / f"{cid}.json"
        if target.exists() and sfile.exists() and not overwrite:
            skipped += 1
            continue
        with failures.case(cid, record=sfile.with_suffix(".error")):  # the record: for the part writing the table
            one(cid, target, sfile)
            done += 1
    table = merge_scores(out_dir) if table_complete(out_dir, cases) else None
    where = f"scores of the good ones in {table}" if table else \
        "scores.csv is written by the last part to finish"
    failures.raise_if_any(f"{done} pseudo-labeled, {skipped} already done, into {out_dir}; {where}")
    return {"done": done, "skipped": skipped, "part": part_id, "parts": num_parts,
            "scores": str(table) if table else None, "members": n_members}


def table_complete(out_dir: Path, cases) -> bool:
    """Every scan of the input has its score file or a record that it could not be read."""
    have = {f.stem for f in (Path(out_dir) / "scores").iterdir() if f.suffix in (".json", ".error")}
    return set(cases) <= have


def merge_scores(out_dir) -> Path:
    """Rebuild ``OUT/scores.csv`` from every ``OUT/scores/*.json`` (atomically); callers check
    first that the table is complete."""
    out_dir = Path(out_dir)
    rows = [json.loads(f.read_text()) for f in sorted((out_dir / "scores").glob("*.json"))]
    table = out_dir / "scores.csv"
    if rows:
        cols = list(rows[0])
        with atomic_path(table, suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in r.items()})
    return table
