"""Mask propagation through a volume (Pham et al. 2022, after STCN, Cheng et al. 2021): a few
annotated slices -> every slice, on arrays already normalised for the network.

:func:`propagate` (the Python API a viewer drives): every class found in the annotated slices is
propagated from all of them, forward and backward, with an STCN (``semiseg.nets.stcn``) whose
memory holds the annotated (reference) slices and a bounded number of the most recent predicted
ones; between two references the two directions are fused by probability, weighted by closeness;
beyond the outermost references a sweep stops once every class has vanished for ``patience``
slices. Classes go through the network together as a batch (they share the slices' keys) but each
has its own memory values, as STCN's class-agnostic binary use. :func:`choose_references` is Pham
et al.'s choice of reference slices among a Reference module's masks.
"""
from __future__ import annotations

from collections import deque

import numpy as np
import torch
import torch.nn.functional as F

from ..utils import SemisegError


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
