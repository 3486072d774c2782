"""Mask propagation through a volume (seeds 000 and 001): a few annotated slices -> every slice.

- :func:`propagate` works on a volume of slices already normalised for the network (the Python
  API a viewer drives): every class found in the annotated slices is propagated from all of them,
  forward and backward, with an STCN (``semiseg.nets.stcn``) whose memory holds the annotated
  (reference) slices and a bounded number of the most recent predicted ones; between two
  references the two directions are fused by probability, weighted by closeness; beyond the
  outermost references a sweep stops once every class has vanished for ``patience`` slices.
  Classes go through the network together as a batch (they share the slices' keys) but each
  has its own memory values, as STCN's class-agnostic binary use.
- :func:`propagate_case` does the same for an image in its own geometry with a run trained by
  ``semiseg train --method stcn``: it preprocesses the image as the run's plan (keeping the slice
  axis' own spacing so annotated slices stay slices), propagates, and maps back; the annotated
  slices come out exactly as given.
- :func:`propagate_auto` is seed 000's automatic pipeline: a Reference module (2D runs, e.g. a
  TransUNet + DeepLabV3+ CPS pair with the slice positional encoding) segments ``k`` uniformly
  sampled slices, :func:`choose_references` keeps the masks with the largest organ areas, and the
  STCN propagates them.
- :func:`propagate_file` is ``semiseg propagate`` (either mode) on image files.
- :mod:`semiseg.propagate.baselines`: copying the nearest annotated slice and shape-based
  (signed-distance) interpolation, the tools annotators use today.
- :mod:`semiseg.propagate.triplets`: the STCN's training samples (``semiseg train --method stcn``).
"""
from __future__ import annotations

from collections import deque

import numpy as np
import torch
import torch.nn.functional as F

from ..utils import SemisegError, class_argmax


def uniform_slices(label: np.ndarray, n: int, axis: int = 0) -> list[int]:
    """``n`` slice indices spread uniformly over the extent of the foreground along ``axis``:
    the centres of n equal parts of [first, last] foreground slice. Empty label -> []."""
    other = tuple(a for a in range(label.ndim) if a != axis)
    present = np.flatnonzero(np.any(label > 0, axis=other))
    if not len(present) or n <= 0:
        return []
    a, b = int(present[0]), int(present[-1])
    return sorted({int(round(a + (b - a) * (i + 0.5) / n)) for i in range(n)})


def annotated_slices(sparse: np.ndarray, axis: int) -> list[int]:
    """The slices of a sparse label map that hold any label."""
    other = tuple(a for a in range(sparse.ndim) if a != axis)
    return [int(k) for k in np.flatnonzero(np.any(sparse > 0, axis=other))]


def soft_background(object_probs) -> np.ndarray:
    """Background probability from the objects' own: prod(1 - p_c) (STCN's soft aggregation)."""
    return np.prod([1 - p for p in object_probs], axis=0)


def fuse(probs: dict[int, np.ndarray]) -> np.ndarray:
    """Per-class object probabilities (each (S, H, W)) -> label map: background probability is
    prod(1 - p_c) (STCN's soft aggregation), each voxel takes the most probable."""
    classes = sorted(probs)
    if not classes:
        raise SemisegError("nothing to fuse: no class was annotated")
    p = np.stack([probs[c] for c in classes])
    lab = np.argmax(np.concatenate([soft_background(p)[None], p]), axis=0)
    lut = np.array([0] + classes, dtype=np.int32)
    return lut[lab]


class _Slices:
    """Keys and decoder features of a volume's slices, computed once on demand."""

    def __init__(self, net, vol: torch.Tensor, cache: int = 8):
        self.net, self.vol, self.cache, self.order = net, vol, {}, deque()
        self.max = cache

    def get(self, s: int):
        if s not in self.cache:
            self.cache[s] = self.net.encode_key(self.vol[s:s + 1])
            self.order.append(s)
            if len(self.order) > self.max:
                self.cache.pop(self.order.popleft(), None)
        return self.cache[s]


@torch.no_grad()
def propagate(net, volume: np.ndarray, annotations: dict[int, np.ndarray], recent: int = 3, patience: int = 2,
              device=None, return_probs: bool = False):
    """Propagate the annotated slices of ``volume`` (C, S, H, W; slices along axis 1, normalised as
    the network was trained) to every slice. ``annotations``: slice index -> (H, W) integer labels
    (0 background; an annotated slice without some class says the class is absent there).

    Returns the (S, H, W) label map (annotated slices exactly as given) and, with
    ``return_probs``, also {class: (S, H, W) probability}."""
    vol = np.array(volume, dtype=np.float32)  # a writable copy
    if vol.ndim != 4:
        raise SemisegError(f"propagate: the volume must be (channels, slices, H, W), not shape {vol.shape}")
    C, S, H, W = vol.shape
    if not annotations:
        raise SemisegError("propagate: no annotated slice given")
    for k, a in annotations.items():
        if not 0 <= k < S:
            raise SemisegError(f"propagate: annotated slice {k} is outside the volume's {S} slices")
        if tuple(a.shape) != (H, W):
            raise SemisegError(f"propagate: annotation of slice {k} is {tuple(a.shape)}, the slices are {(H, W)}")
    refs = sorted(int(k) for k in annotations)
    classes = sorted({int(c) for a in annotations.values() for c in np.unique(a) if c > 0})
    probs = {c: np.zeros((S, H, W), np.float32) for c in classes}
    if classes:
        device = device or next(net.parameters()).device
        st = getattr(net, "stride", 8)
        ph, pw = (-H) % st, (-W) % st
        t = torch.from_numpy(vol).permute(1, 0, 2, 3).to(device)  # S, C, H, W
        if ph or pw:
            t = F.pad(t, (0, pw, 0, ph), mode="replicate")
        n = len(classes)
        sl = _Slices(net, t)

        def expand(feats):
            return {k: v.expand(n, *v.shape[1:]) for k, v in feats.items()}

        def value(s, masks):  # masks (n, H', W')
            _k, f = sl.get(s)
            return net.encode_value(t[s:s + 1].expand(n, -1, -1, -1), masks[:, None], expand(f))

        ref_mem = []
        for r in refs:
            m = np.stack([annotations[r] == c for c in classes]).astype(np.float32)
            m = F.pad(torch.from_numpy(m).to(device), (0, pw, 0, ph))
            ref_mem.append((sl.get(r)[0], value(r, m)))

        def sweep(targets, stop_when_empty):
            out, mem, empty = {}, deque(maxlen=max(0, recent)), 0
            for s in targets:
                k, f = sl.get(s)
                items = ref_mem + list(mem)
                mk = torch.stack([i[0][0] for i in items], 1)[None].expand(n, -1, -1, -1, -1)
                mv = torch.stack([i[1] for i in items], 2)
                logit = net.decode(net.read(mk, mv, k.expand(n, -1, -1, -1)), expand(f))
                p = torch.sigmoid(logit)
                out[s] = p[:, :H, :W].float().cpu().numpy()
                if stop_when_empty:
                    empty = empty + 1 if not bool((p > 0.5).any()) else 0
                    if empty >= patience:
                        break
                if recent > 0:
                    mem.append((k, value(s, p)))
            return out

        def put(s, p, w=1.0):
            for i, c in enumerate(classes):
                probs[c][s] += w * p[i]

        for a, b in zip(refs[:-1], refs[1:]):
            if b - a < 2:
                continue
            fwd = sweep(range(a + 1, b), False)
            bwd = sweep(range(b - 1, a, -1), False)
            for s in range(a + 1, b):
                wa = (b - s) / (b - a)
                put(s, fwd[s], wa)
                put(s, bwd[s], 1 - wa)
        for s, p in sweep(range(refs[0] - 1, -1, -1), True).items():
            put(s, p)
        for s, p in sweep(range(refs[-1] + 1, S), True).items():
            put(s, p)
        for r in refs:
            for c in classes:
                probs[c][r] = annotations[r] == c
    lab = fuse(probs) if classes else np.zeros((S, H, W), np.int32)
    for r in refs:
        lab[r] = annotations[r]
    return (lab, probs) if return_probs else lab


def _grid(model, image: np.ndarray, geom, axis: int):
    """The image preprocessed as the run's plan, except that the slice axis keeps its own spacing
    (annotated slices stay slices): (volume (C, S, H, W) with the slices first, properties)."""
    from ..preprocessing import preprocess_arrays

    target = list(model.plans["target_spacing"])
    target[axis] = float(geom.spacing_zyx[axis])
    data, _, props = preprocess_arrays(image, geom, model.plans, None, target)
    return np.moveaxis(data, 1 + axis, 1), props


def _to_original(probs: dict, shape, props: dict, axis: int, n_classes: int) -> np.ndarray:
    """Per-class probabilities on the slice-first grid -> the label map in the original geometry."""
    from ..infer import probs_to_original

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

    ``model``: ``semiseg.infer.load_run`` of a ``--method stcn`` run; ``image`` (C, z, y, x) and
    ``geom`` as ``semiseg.io.read_image`` gives; ``sparse`` (z, y, x) with labels on some slices
    along ``axis`` (default: the run's slice axis, the plan's lowest-resolution axis); ``slices``:
    the annotated slice indices (default: every slice holding a label; a listed slice without any
    label says "nothing here"). Returns the full label map (z, y, x) and an info dict."""
    from ..preprocessing import label_to_grid

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


def choose_references(masks: dict[int, np.ndarray], rule: str = "largest", count: int = 3) -> list[int]:
    """Seed 000's choice among the Reference module's masks of the sampled slices: ``largest``, the
    ``count`` slices whose organs cover the largest area; ``per_class``, for each class the slice
    where it is largest. Slices without foreground are never chosen."""
    area = {k: int((m > 0).sum()) for k, m in masks.items()}
    if rule == "largest":
        ranked = sorted((k for k in masks if area[k]), key=lambda k: (-area[k], k))
        return sorted(ranked[:max(1, count)])
    if rule == "per_class":
        out = set()
        classes = {int(c) for m in masks.values() for c in np.unique(m) if c > 0}
        for c in classes:
            out.add(max(masks, key=lambda k: (int((masks[k] == c).sum()), -k)))
        return sorted(out)
    raise SemisegError(f"reference rule must be largest or per_class, not {rule!r}")


def propagate_auto(stcn_model, reference_models: list, image: np.ndarray, geom, k: int = 9, rule: str = "largest",
                   count: int = 3, recent: int = 3, device=None) -> tuple[np.ndarray, dict]:
    """Seed 000's automatic pipeline for one image in its own geometry: ``k`` slices uniformly
    sampled over the volume are segmented by the Reference module (``reference_models``: 2D runs
    on the same plan and slice axis, e.g. a 2D CPS pair; their softmax is averaged), the masks
    chosen by ``rule`` become the references, and the STCN run propagates them through the rest."""
    from ..infer import model_step, sliding_window_probs
    from ..preprocessing import plan_hash

    axis = _axis(stcn_model, None)
    if not reference_models:
        raise SemisegError("automatic propagation needs a Reference module run (--reference RUN)")
    for m in reference_models:
        if m.cfg.get("slice_axis") != axis or len(m.cfg["patch_size"]) != 2:
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
    acc, n = None, 0
    data = np.moveaxis(vol, 1, 1 + axis)  # back to the plan's axis order for the sliding window
    for m in reference_models:
        p = sliding_window_probs(m.nets, data, m.cfg, step=model_step(m, None), device=device,
                                 slices=sampled) * len(m.nets)
        acc = p if acc is None else acc + p
        n += len(m.nets)
    lab = (acc / n).argmax(0).numpy()  # (K, len(sampled), H, W) -> (len(sampled), H, W)
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


def read_sparse_label(path, geom) -> np.ndarray:
    """A label file whose annotated slices are to be propagated, checked against the image: any
    non-negative integer classes (the network is class-agnostic)."""
    from ..dataset import read_label_file

    return read_label_file(path, geom).astype(np.int32)


def propagate_file(run, images: list, out, labels=None, slices: list[int] | None = None, axis: int | None = None,
                   checkpoint: str = "best", recent: int = 3, references: list | None = None, k: int = 9,
                   rule: str = "largest", count: int = 3, device=None) -> dict:
    """``semiseg propagate``: the image's channel files -> ``out``, the whole volume labeled, in the
    image's geometry (written atomically). Interactive with ``labels`` (a label file in which some
    slices are annotated; re-running with more or corrected slices re-propagates from them);
    automatic with ``references`` (Reference module runs, ``RUN`` or ``RUN@CHECKPOINT``)."""
    import time
    from pathlib import Path

    from ..dataset import Case, read_case_image
    from ..infer import default_device, load_run
    from ..io import write_image

    if (labels is None) == (not references):
        raise SemisegError("give either --labels (interactive) or --reference RUN (automatic)")
    out = Path(out)
    ins = [Path(i) for i in images] + ([Path(labels)] if labels is not None else [])
    if any(out.resolve() == i.resolve() for i in ins):
        raise SemisegError(f"{out}: the output would overwrite an input; choose another -o")
    device = device or default_device()
    model = load_run(run, checkpoint, device=device)
    if model.cfg.get("slice_axis") is None or not model.names or model.names[0] != "stcn":
        raise SemisegError(f"{run}: not a propagation run (train one with `semiseg train --method stcn --config 2d`)")
    if len(images) != len(model.plans["channels"]):
        raise SemisegError(f"{run}: the model takes {len(model.plans['channels'])} channel file(s), "
                           f"{len(images)} given")
    image, geom = read_case_image(Case("input", [Path(i) for i in images]))
    if labels is not None:
        sparse = read_sparse_label(labels, geom)
        t0 = time.time()
        full, info = propagate_case(model, image, geom, sparse, slices, axis, recent, device)
    else:
        refs = []
        for r in references:
            path, _, ck = str(r).partition("@")
            refs.append(load_run(path, ck or "best", device=device))
        t0 = time.time()
        full, info = propagate_auto(model, refs, image, geom, k, rule, count, recent, device)
    info["seconds"] = round(time.time() - t0, 3)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_image(full.astype(np.uint8 if full.max() < 256 else np.int16), geom, out)
    info["out"] = str(out)
    return info
