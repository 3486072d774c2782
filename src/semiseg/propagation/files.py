"""``semiseg propagate``: propagation for images in their own geometry, with trained runs.

- :func:`propagate_case` (interactive): a sparse label map of an image, some slices annotated, and
  an STCN run (``semiseg train --method stcn``): preprocessed as the run's plan (keeping the slice
  axis' own spacing so annotated slices stay slices), propagated, mapped back; the annotated
  slices come out exactly as given.
- :func:`propagate_auto` (automatic, Pham et al. 2022): a Reference module (2D runs, e.g. a
  TransUNet + DeepLabV3+ CPS pair with the slice positional encoding) segments ``k`` uniformly
  sampled slices, :func:`~semiseg.propagation.core.choose_references` keeps the masks with the
  largest organ areas, and the STCN propagates them.
- :func:`propagate_file`: either mode on image files.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..data.dataset import Case, label_dtype, read_case_image, read_label_file
from ..data.dicom import is_dicom_folder, open_series
from ..data.io import write_image
from ..inference.ensemble import MeanProbs
from ..inference.runs import load_run, model_step, parse_run_spec
from ..inference.sliding_window import probs_to_original, sliding_window_probs
from ..nets import PROPAGATION, network_kind
from ..planning import Configuration
from ..preprocessing.cache import label_to_grid, plan_hash, preprocess_arrays
from ..utils import SemisegError, class_argmax
from ..utils.device import default_device
from .core import annotated_slices, choose_references, propagate, soft_background


def _grid(model, image: np.ndarray, geom, axis: int):
    """The image preprocessed as the run's plan, except that the slice axis keeps its own spacing
    (annotated slices stay slices): (volume (C, S, H, W) with the slices first, properties)."""
    target = model.plans.target_spacing
    target[axis] = float(geom.spacing_zyx[axis])
    data, _, props = preprocess_arrays(image, geom, model.plans, None, target)
    return np.moveaxis(data, 1 + axis, 1), props


def _to_original(probs: dict, shape, props: dict, axis: int, n_classes: int) -> np.ndarray:
    """Per-class probabilities on the slice-first grid -> the label map in the original geometry."""
    K = int(max([n_classes - 1] + list(probs))) + 1
    grid = torch.zeros((K,) + tuple(shape))
    for c, p in probs.items():
        grid[c] = torch.from_numpy(p)
    grid[0] = torch.from_numpy(soft_background(list(probs.values()))) if probs else 1.0
    grid = torch.movedim(grid, 1, 1 + axis)  # slices back to their axis
    return class_argmax(probs_to_original(grid, props), 0).numpy().astype(np.int32)


def _axis(model, axis):
    axis = int(model.cfg.get("slice_axis", 0) if axis is None else axis)
    if not 0 <= axis <= 2:
        raise SemisegError(f"slice axis must be 0, 1 or 2 (z, y, x), not {axis}")
    return axis


def propagate_case(model, image: np.ndarray, geom, sparse: np.ndarray, slices: list[int] | None = None,
                   axis: int | None = None, recent: int = 3, device=None) -> tuple[np.ndarray, dict]:
    """Propagate a sparse label map of an image in its own geometry with an STCN run (interactive).

    ``model``: ``semiseg.inference.load_run`` of a ``--method stcn`` run; ``image`` (C, z, y, x) and
    ``geom`` as ``semiseg.data.io.read_image`` gives; ``sparse`` (z, y, x) with labels on some slices
    along ``axis`` (default: the run's slice axis, the plan's lowest-resolution axis); ``slices``:
    the annotated slice indices (default: every slice holding a label; a listed slice without any
    label says "nothing here"). Returns the full label map (z, y, x) and an info dict."""
    axis = _axis(model, axis)
    sparse = np.asarray(sparse)
    if sparse.shape != image.shape[1:]:
        raise SemisegError(f"the label map is {sparse.shape}, the image {image.shape[1:]}")
    if (sparse < 0).any():
        raise SemisegError("the label map holds negative values")
    if slices is None:
        slices = annotated_slices(sparse, axis)
    slices = sorted({int(s) for s in slices})
    bad = [s for s in slices if not 0 <= s < sparse.shape[axis]]
    if bad:
        raise SemisegError(f"annotated slice(s) {bad} outside 0..{sparse.shape[axis] - 1} along axis {axis}")
    if not slices:
        raise SemisegError("no annotated slice: the label map is empty and no --slices were given")
    vol, props = _grid(model, image, geom, axis)
    lo, hi = props["bbox"][axis]
    kept = [s for s in slices if lo <= s < hi]
    if not kept:
        raise SemisegError(f"every annotated slice lies outside the image's non-zero extent ({lo}..{hi - 1})")
    segs = np.moveaxis(label_to_grid(sparse.astype(np.int16), props, model.plans), axis, 0)
    ann = {s - lo: np.asarray(segs[s - lo]) for s in kept}
    _lab, probs = propagate(model.nets[0], vol, ann, recent=recent, device=device, return_probs=True)
    full = _to_original(probs, vol.shape[1:], props, axis, model.plans.get("num_classes", 1))
    for s in slices:  # the annotated slices exactly as given
        idx = [slice(None)] * 3
        idx[axis] = s
        full[tuple(idx)] = sparse[tuple(idx)]
    return full, {"slices": slices, "ignored_slices": sorted(set(slices) - set(kept)), "axis": axis,
                  "classes": sorted(probs)}



def propagate_auto(stcn_model, reference_models: list, image: np.ndarray, geom, k: int = 9, rule: str = "largest",
                   count: int = 3, recent: int = 3, device=None) -> tuple[np.ndarray, dict]:
    """Pham et al.'s automatic pipeline for one image in its own geometry: ``k`` slices uniformly
    sampled over the volume are segmented by the Reference module (``reference_models``: 2D runs
    on the same plan and slice axis, e.g. a 2D CPS pair; their softmax is averaged), the masks
    chosen by ``rule`` become the references, and the STCN run propagates them through the rest."""
    axis = _axis(stcn_model, None)
    if not reference_models:
        raise SemisegError("automatic propagation needs a Reference module run (--reference RUN)")
    for m in reference_models:
        if Configuration(m.cfg).slice_axis != axis:
            raise SemisegError(f"{m.run}: the Reference module must be a 2D run on the slice axis {axis} "
                               "(semiseg train --config 2d)")
        if plan_hash(m.plans) != plan_hash(stcn_model.plans):
            raise SemisegError(f"{m.run}: the Reference module and {stcn_model.run} were planned differently "
                               "(target spacing, normalisation): train both on one work folder")
    if k < 1:
        raise SemisegError(f"k (sampled slices) must be >= 1, not {k}")
    vol, props = _grid(stcn_model, image, geom, axis)
    S = vol.shape[1]
    sampled = sorted({int((i + 0.5) * S / k) for i in range(k)})  # centres of k equal parts
    acc = MeanProbs()
    data = np.moveaxis(vol, 1, 1 + axis)  # back to the plan's axis order for the sliding window
    for m in reference_models:
        acc.add(sliding_window_probs(m.nets, data, m.cfg, step=model_step(m, None), device=device, slices=sampled,
                                     amp=m.amp),
                len(m.nets))
    lab = acc.mean().argmax(0).numpy()  # (K, len(sampled), H, W) -> (len(sampled), H, W)
    masks = {s: lab[i] for i, s in enumerate(sampled)}
    refs = choose_references(masks, rule, count)
    info = {"sampled": sampled, "references": refs, "axis": axis}
    if not refs:  # the Reference module found nothing: an empty label map
        full = np.zeros(image.shape[1:], np.int32)
        return full, dict(info, classes=[])
    _lab, probs = propagate(stcn_model.nets[0], vol, {r: masks[r] for r in refs}, recent=recent, device=device,
                            return_probs=True)
    full = _to_original(probs, vol.shape[1:], props, axis, stcn_model.plans.get("num_classes", 1))
    return full, dict(info, classes=sorted(probs))


def load_propagation_run(run, device=None, checkpoint: str = "best"):
    """A ``--method stcn`` run (``RUN``, ``RUN@CHECKPOINT`` or a model file) loaded for
    propagation; anything else is refused by name."""
    run, checkpoint = parse_run_spec(run, checkpoint)
    model = load_run(run, checkpoint, device=default_device(device))
    if model.cfg.get("slice_axis") is None or PROPAGATION not in map(network_kind, model.networks):
        raise SemisegError(f"{run}: not a propagation run (train one with `semiseg train --method stcn --config 2d`)")
    return model


def read_sparse_label(path, geom) -> np.ndarray:
    """A label file whose annotated slices are to be propagated, checked against the image: any
    non-negative integer classes (the network is class-agnostic)."""
    return read_label_file(path, geom).astype(np.int32)


def propagate_file(run, images: list, out, labels=None, slices: list[int] | None = None, axis: int | None = None,
                   checkpoint: str = "best", recent: int = 3, references: list | None = None, k: int = 9,
                   rule: str = "largest", count: int = 3, device=None, series_uid: str | None = None) -> dict:
    """``semiseg propagate``: the image's channel files -> ``out``, the whole volume labeled, in the
    image's geometry (written atomically). Interactive with ``labels`` (a label file in which some
    slices are annotated; re-running with more or corrected slices re-propagates from them);
    automatic with ``references`` (Reference module runs, ``RUN``, ``RUN@CHECKPOINT`` or a model
    file). ``images`` may be a DICOM series folder (``series_uid`` picks one of several)."""
    if (labels is None) == (not references):
        raise SemisegError("give either --labels (interactive) or --reference RUN (automatic)")
    out = Path(out)
    ins = [Path(i) for i in images] + ([Path(labels)] if labels is not None else [])
    if any(out.resolve() == i.resolve() for i in ins):
        raise SemisegError(f"{out}: the output would overwrite an input; choose another -o")
    device = default_device(device)
    model = load_propagation_run(run, device, checkpoint)
    if len(images) != len(model.plans.channels):
        raise SemisegError(f"{run}: the model takes {len(model.plans.channels)} channel file(s), "
                           f"{len(images)} given")
    image, geom = read_case_image(Case("input", [open_series(i, series_uid) if is_dicom_folder(i) else Path(i)
                                                 for i in images]))
    if labels is not None:
        sparse = read_sparse_label(labels, geom)
        t0 = time.time()
        full, info = propagate_case(model, image, geom, sparse, slices, axis, recent, device)
    else:
        refs = [load_run(*parse_run_spec(r), device=device) for r in references]
        t0 = time.time()
        full, info = propagate_auto(model, refs, image, geom, k, rule, count, recent, device)
    info["seconds"] = round(time.time() - t0, 3)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_image(full.astype(label_dtype(full.max())), geom, out)
    info["out"] = str(out)
    return info
