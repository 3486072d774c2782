"""One annotation session: an image, the label map a person is drawing on it, its versions, and the
propagation that fills the unannotated slices (no web code here; ``server.py`` serves it).

The page (niivue) shows images in the voxel order closest to RAS+ (it permutes and flips the axes,
never resamples) and keeps its drawing in that order. The session therefore sends the image already
in that order (:func:`ras_axes` is niivue's own rule) and maps every drawing it receives back to the
image's own voxel order; saving writes the image's exact geometry (origin, spacing, direction).

The session keeps the version history (strokes, "annotated as empty", propagations), because
loading a drawing into the viewer clears the viewer's own undo stack. A slice along the
propagation axis is *annotated* once the person changed it (or marked it empty); propagation takes
every annotated slice as a reference and fills the others, with a mask-propagation run (Pham et al.
2022, an STCN of Cheng et al. 2021) or, without one, shape-based interpolation.
"""
from __future__ import annotations

import gzip
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.dataset import Case, label_dtype, read_case_image, read_label_file
from ..data.dicom import is_dicom_folder, open_series
from ..data.io import Geometry, write_image
from ..propagation.baselines import shape_interpolation
from ..propagation.files import load_propagation_run, propagate_case
from ..utils import SemisegError

# fixed colours per label (label 1 first), as RGB; label 0 is transparent
PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (255, 225, 25), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40)]
# CT windows (width, level) in Hounsfield units: the usual radiology presets
CT_WINDOWS = {"abdomen": (400, 40), "chest": (1500, -600), "bone": (1800, 400)}
MAX_VERSIONS = 100


class BusyError(SemisegError):
    """A propagation is running: the request cannot be taken now (HTTP 409)."""


def ras_axes(direction) -> tuple[list[int], list[bool]]:
    """For a direction matrix (ITK, LPS+, row-major), niivue's reordering to the voxel order
    closest to RAS+: ``voxel_of_world[w]`` is the image axis (ITK order i, j, k) that runs along
    world axis w (R, A, S), ``flip[w]`` whether it runs backwards. niivue's greedy rule: axis i
    takes its largest world component, axis j the larger of the other two, axis k the last."""
    d = np.asarray(direction, float).reshape(3, 3) * np.array([[-1.0], [-1.0], [1.0]])  # rows in RAS+
    a = np.abs(d)
    w0 = int(np.argmax(a[:, 0]))
    r = [w for w in range(3) if w != w0]
    w1 = r[0] if a[r[0], 1] > a[r[1], 1] else r[1]
    world_of_voxel = [w0, w1, 3 - w0 - w1]
    voxel_of_world = [world_of_voxel.index(w) for w in range(3)]
    return voxel_of_world, [bool(d[w, voxel_of_world[w]] < 0) for w in range(3)]


@dataclass
class RasView:
    """The mapping between an image's arrays (z, y, x) and the page's (S, A, R) arrays."""

    geom: Geometry
    voxel_of_world: list[int] = field(init=False)
    flip: list[bool] = field(init=False)

    def __post_init__(self):
        if self.geom.ndim != 3:
            raise SemisegError(f"the image is {self.geom.ndim}D; annotation needs a 3D image")
        self.voxel_of_world, self.flip = ras_axes(self.geom.direction)

    @property
    def _perm(self) -> list[int]:  # numpy axis n of the page's array <- numpy axis of the image's
        return [2 - self.voxel_of_world[2 - n] for n in range(3)]

    def to_page(self, arr: np.ndarray) -> np.ndarray:
        out = np.transpose(arr, self._perm)
        return np.ascontiguousarray(np.flip(out, [n for n in range(3) if self.flip[2 - n]]))

    def from_page(self, arr: np.ndarray) -> np.ndarray:
        arr = np.flip(arr, [n for n in range(3) if self.flip[2 - n]])
        return np.ascontiguousarray(np.transpose(arr, np.argsort(self._perm)))

    @property
    def page_shape(self) -> tuple[int, ...]:
        return tuple(self.geom.shape_zyx[p] for p in self._perm)

    def page_geometry(self) -> Geometry:
        """The geometry of the page's array: same voxels in space, axes permuted and flipped."""
        d = np.asarray(self.geom.direction, float).reshape(3, 3)
        sp, size = list(self.geom.spacing), list(self.geom.size)
        start = np.array([size[v] - 1 if self.flip[w] else 0 for w, v in enumerate(self.voxel_of_world)], float)
        idx = np.zeros(3)
        for w, v in enumerate(self.voxel_of_world):
            idx[v] = start[w]
        origin = np.asarray(self.geom.origin, float) + d @ (idx * np.asarray(sp))
        cols = [d[:, v] * (-1.0 if self.flip[w] else 1.0) for w, v in enumerate(self.voxel_of_world)]
        return Geometry(tuple(sp[v] for v in self.voxel_of_world), tuple(origin.tolist()),
                        tuple(np.stack(cols, 1).reshape(-1).tolist()),
                        tuple(size[v] for v in self.voxel_of_world))

    def page_axis(self, axis: int) -> int:
        """The page array's numpy axis that runs along the image's numpy axis ``axis``."""
        return self._perm.index(axis)

    def page_index(self, axis: int, index: int) -> int:
        """Slice ``index`` along the image's numpy ``axis`` -> its index on the page."""
        n = self.page_axis(axis)
        return self.page_shape[n] - 1 - index if self.flip[2 - n] else index

    def image_index(self, axis: int, page_index: int) -> int:
        n = self.page_axis(axis)
        return self.page_shape[n] - 1 - page_index if self.flip[2 - n] else page_index


def nifti_bytes(arr: np.ndarray, geom: Geometry) -> bytes:
    """``arr`` written as an uncompressed NIfTI file with ``geom`` (SimpleITK's NIfTI writer)."""
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "image.nii"
        write_image(arr, geom, p, compress=False)
        return p.read_bytes()


def compact(a: np.ndarray) -> np.ndarray:
    """``a`` as uint8 or int16 when that holds every value exactly (most scanners' data), else as is."""
    if np.issubdtype(a.dtype, np.floating) and np.array_equal(a, np.round(a)):
        lo, hi = float(a.min()), float(a.max())
        for t in (np.uint8, np.int16):
            if np.iinfo(t).min <= lo and hi <= np.iinfo(t).max:
                return a.astype(t)
    return a


def _pack(lab: np.ndarray) -> bytes:
    return zlib.compress(np.ascontiguousarray(lab, np.uint8).tobytes(), 1)


@dataclass
class Version:
    packed: bytes  # zlib of the uint8 label map in the image's voxel order
    annotated: frozenset  # annotated slice indices along the propagation axis (image order)
    empty: frozenset  # those annotated as empty (no label on them)
    action: str
    note: str = ""


class Session:
    """An image (its channel files, or a DICOM series folder), an optional propagation run, an
    optional start label map, and the output file. Thread-safe: the server may call from threads;
    one propagation at a time (a second one, or a drawing sent meanwhile, raises :class:`BusyError`)."""

    def __init__(self, images: list, out, run=None, labels=None, label_names: list[str] | None = None,
                 axis: int | None = None, device=None, series_uid: str | None = None, modality: str = "auto"):
        self.images = [Path(i) for i in images]
        if not self.images:
            raise SemisegError("annotate: give the image with -i")
        self.out = Path(out)
        continuing = labels is not None and Path(labels).resolve() == self.out.resolve()
        ins = self.images + ([Path(labels)] if labels is not None and not continuing else [])
        for i in ins:
            folder = i.resolve() if i.is_dir() else i.resolve().parent
            if self.out.resolve().parent == folder:
                raise SemisegError(f"{self.out}: the output would go into the input folder {folder}; "
                                   "choose -o elsewhere (inputs are never written)")
        if self.out.exists() and not continuing:
            raise SemisegError(f"{self.out} exists: pass --labels {self.out} to continue from it, or choose another -o")
        self.model, self.run = None, None
        if run is not None:
            self.model = load_propagation_run(run, device)
            self.run = str(run)
        self.device = device
        chans = [open_series(i, series_uid) if is_dicom_folder(i) else i for i in self.images]
        self.image, self.geom = read_case_image(Case("annotate", chans))
        if self.model is not None and len(self.images) != len(self.model.plans["channels"]):
            raise SemisegError(f"{run}: the model takes {len(self.model.plans['channels'])} channel file(s), "
                               f"{len(self.images)} given")
        self.view = RasView(self.geom)
        if axis is None:
            axis = (self.model.cfg.get("slice_axis", 0) if self.model is not None
                    else int(np.argmax(self.geom.spacing_zyx)))  # the lowest-resolution axis
        if not 0 <= int(axis) <= 2:
            raise SemisegError(f"slice axis must be 0, 1 or 2 (z, y, x), not {axis}")
        self.axis = int(axis)
        start = np.zeros(self.image.shape[1:], np.uint8)
        annotated: set[int] = set()
        if labels is not None:
            lab = read_label_file(labels, self.geom)
            if lab.max() > 255:
                raise SemisegError(f"{labels}: label {int(lab.max())}; the viewer draws labels 0..255")
            start = lab.astype(np.uint8)
            other = tuple(a for a in range(3) if a != self.axis)
            annotated = {int(k) for k in np.flatnonzero(np.any(start > 0, axis=other))}
        self.names = self._label_names(label_names, int(start.max()))
        self.modality = self._modality(modality)
        self.versions, self.cur = [], -1
        self._push(start, annotated, "start", f"from {labels}" if labels is not None else "empty")
        self.saved_version = None
        self._lock = threading.Lock()  # guards the history
        self._busy = threading.Lock()  # held while propagating

    # ---- description for the page
    def _label_names(self, names, max_label) -> list[str]:
        if names:
            out = list(names)
        elif self.model is not None:
            lab = self.model.plans.get("labels", {})
            out = [k for k, v in sorted(((k, v) for k, v in lab.items() if isinstance(v, int) and v > 0),
                                        key=lambda kv: kv[1])]
        else:
            out = []
        out = out or ["label 1"]
        out += [f"label {i}" for i in range(len(out) + 1, max_label + 1)]
        if len(out) > 255:
            raise SemisegError(f"{len(out)} labels; the viewer draws labels 1..255")
        return out

    def _modality(self, modality: str) -> str:
        if modality in ("ct", "mr", "other"):
            return modality
        if modality != "auto":
            raise SemisegError(f"modality must be auto, ct, mr or other, not {modality!r}")
        if self.model is not None:
            schemes = {n["scheme"] for n in self.model.plans.get("normalization", [])[:1]}
            return "ct" if schemes & {"ct", "ct_windows"} else "mr"
        return "ct" if float(np.percentile(self.image[0][::4, ::4, ::4], 1)) < -500 else "other"

    def windows(self) -> list[dict]:
        """Contrast presets for channel 0: the plan's CT clip range and the usual CT windows for CT;
        the image's 0.5-99.5 percentiles ("auto") always."""
        lo, hi = (float(v) for v in np.percentile(self.image[0][::2, ::2, ::2], [0.5, 99.5]))
        out = [{"name": "auto", "min": lo, "max": hi}]
        if self.modality == "ct":
            if self.model is not None:
                for n in self.model.plans.get("normalization", [])[:1]:
                    if n.get("clip"):
                        out.append({"name": "plan", "min": float(n["clip"][0]), "max": float(n["clip"][1])})
            out += [{"name": k, "min": lv - w / 2, "max": lv + w / 2} for k, (w, lv) in CT_WINDOWS.items()]
        return out

    def meta(self) -> dict:
        n = self.view.page_axis(self.axis)
        world = 2 - n  # 0 R (sagittal slices), 1 A (coronal), 2 S (axial)
        with self._lock:
            v = self.versions[self.cur]
            return {
                "shape": list(self.view.page_shape[::-1]),  # the page's (x, y, z) = niivue's dims
                "image": [str(i) for i in self.images], "out": str(self.out),
                "labels": [{"value": i + 1, "name": nm, "color": list(PALETTE[i % len(PALETTE)])}
                           for i, nm in enumerate(self.names)],
                "slice_view": ["sagittal", "coronal", "axial"][world], "slice_dim": world,
                "annotated": sorted(self.view.page_index(self.axis, k) for k in v.annotated),
                "annotated_empty": sorted(self.view.page_index(self.axis, k) for k in v.empty),
                "method": self.meta_method(),
                "method_label": (f"mask propagation ({Path(self.run).name})" if self.model is not None
                                 else "shape-based interpolation (no propagation run given)"),
                "modality": self.modality, "windows": self.windows(),
                "version": self.cur, "versions": len(self.versions), "action": v.action,
                "can_undo": self.cur > 0, "can_redo": self.cur < len(self.versions) - 1,
                "saved": self.saved_version == self.cur, "busy": self._busy.locked(),
            }

    def image_nifti(self) -> bytes:
        """Channel 0 in the page's voxel order, as NIfTI (the smallest integer type that holds it
        exactly, else float32), for the viewer."""
        return nifti_bytes(compact(self.view.to_page(self.image[0])), self.view.page_geometry())

    # ---- the label map
    def labels(self) -> np.ndarray:
        with self._lock:
            return self._unpack(self.versions[self.cur])

    def _unpack(self, v: Version) -> np.ndarray:
        return np.frombuffer(zlib.decompress(v.packed), np.uint8).reshape(self.image.shape[1:])

    def page_labels(self) -> bytes:
        return self.view.to_page(self.labels()).tobytes()

    def decode_drawing(self, body: bytes, gzipped: bool) -> np.ndarray:
        """The page's drawing (uint8 voxels in the page's order, gzip or raw) -> the image's order.
        The size is checked while decompressing, so a small upload cannot expand without bound."""
        n = int(np.prod(self.image.shape[1:]))
        if gzipped:
            d = zlib.decompressobj(wbits=31)
            try:
                raw = d.decompress(body, n + 1)
            except zlib.error as e:
                raise SemisegError(f"the drawing is not valid gzip data ({e})") from None
        else:
            raw = body
        if len(raw) != n:
            shape = "x".join(map(str, self.view.page_shape[::-1]))
            raise SemisegError(f"the drawing has {len(raw)} voxels{'+' if len(raw) > n else ''}, the image {n} "
                               f"({shape}): it does not belong to this image")
        arr = np.frombuffer(raw, np.uint8).reshape(self.view.page_shape)
        if int(arr.max()) > len(self.names):
            raise SemisegError(f"the drawing holds label {int(arr.max())}; this session has labels "
                               f"1..{len(self.names)}")
        return self.view.from_page(arr)

    def _changed_slices(self, a: np.ndarray, b: np.ndarray) -> set[int]:
        other = tuple(x for x in range(3) if x != self.axis)
        return {int(k) for k in np.flatnonzero(np.any(a != b, axis=other))}

    def _push(self, lab: np.ndarray, annotated, action: str, note: str = "") -> None:
        other = tuple(x for x in range(3) if x != self.axis)
        has = np.any(lab > 0, axis=other)
        empty = frozenset(k for k in annotated if not has[k])
        del self.versions[self.cur + 1:]
        self.versions.append(Version(_pack(lab), frozenset(annotated), empty, action, note))
        if len(self.versions) > MAX_VERSIONS:
            del self.versions[0]
        self.cur = len(self.versions) - 1

    def draw(self, lab: np.ndarray) -> dict:
        """A stroke (or several): the slices it changed become annotated."""
        if self._busy.locked():
            raise BusyError("a propagation is running; draw again when it has finished")
        with self._lock:
            v = self.versions[self.cur]
            changed = self._changed_slices(self._unpack(v), lab)
            if changed:
                self._push(lab, v.annotated | changed, "draw", f"slices {sorted(changed)}")
        return {"changed": sorted(self.view.page_index(self.axis, k) for k in changed)}

    def mark_empty(self, page_index: int) -> dict:
        """'Annotated as empty': slice ``page_index`` (along the propagation axis, page order) is
        cleared and becomes a reference that says no structure is there."""
        if self._busy.locked():
            raise BusyError("a propagation is running; try again when it has finished")
        size = self.image.shape[1 + self.axis]
        k = self.view.image_index(self.axis, int(page_index))
        if not 0 <= k < size:
            raise SemisegError(f"slice {page_index} is outside 0..{size - 1}")
        with self._lock:
            v = self.versions[self.cur]
            lab = self._unpack(v).copy()
            idx = [slice(None)] * 3
            idx[self.axis] = k
            lab[tuple(idx)] = 0
            self._push(lab, v.annotated | {k}, "empty", f"slice {page_index} annotated as empty")
        return {}

    def step(self, delta: int) -> dict:
        """Undo (-1) or redo (+1) one version: a stroke, an 'empty' mark or a propagation."""
        if self._busy.locked():
            raise BusyError("a propagation is running; undo when it has finished")
        with self._lock:
            new = self.cur + delta
            if not 0 <= new < len(self.versions):
                raise SemisegError("nothing to undo" if delta < 0 else "nothing to redo")
            self.cur = new
        return {}

    def propagate(self) -> dict:
        """Fill every slice that is not annotated from the annotated ones; a new version."""
        self.reserve()
        return self.propagate_reserved()

    def reserve(self) -> None:
        """Take the one propagation slot (BusyError if taken); :meth:`propagate_reserved` frees it.
        The server reserves when the request arrives and propagates on its main thread."""
        if not self._busy.acquire(blocking=False):
            raise BusyError("a propagation is already running")

    def propagate_reserved(self) -> dict:
        try:
            with self._lock:
                v, base = self.versions[self.cur], self.cur
                lab = self._unpack(v)
            slices = sorted(v.annotated)
            if not slices:
                raise SemisegError("nothing to propagate from: paint at least one slice first")
            sparse = np.zeros_like(lab)
            idx = [slice(None)] * 3
            idx[self.axis] = slices
            sparse[tuple(idx)] = lab[tuple(idx)]
            t0 = time.perf_counter()
            if self.model is not None:
                full, _info = propagate_case(self.model, self.image, self.geom, sparse.astype(np.int32), slices,
                                             self.axis, device=self.device)
            else:
                inplane = [s for i, s in enumerate(self.geom.spacing_zyx) if i != self.axis]
                full = shape_interpolation(sparse, slices, self.axis, inplane)
            seconds = time.perf_counter() - t0
            full = full.astype(np.uint8)
            with self._lock:
                if self.cur != base:  # cannot happen while busy blocks drawing; kept as a guard
                    raise BusyError("the drawing changed during the propagation; propagate again")
                self._push(full, v.annotated, "propagate",
                           f"{self.meta_method()} from {len(slices)} slice(s) in {seconds:.2f} s")
            return {"seconds": round(seconds, 3), "references": [self.view.page_index(self.axis, k) for k in slices]}
        finally:
            self._busy.release()

    def meta_method(self) -> str:
        return "propagation" if self.model is not None else "interpolation"

    # ---- output
    def save(self) -> dict:
        """Write the current label map to the output file, in the image's geometry, atomically."""
        with self._lock:
            lab, cur = self._unpack(self.versions[self.cur]), self.cur
        write_image(lab.astype(label_dtype(int(lab.max()))), self.geom, self.out)
        with self._lock:
            self.saved_version = cur
        return {"out": str(self.out), "version": cur}

    def download(self) -> tuple[bytes, str]:
        """The current label map as a gzipped NIfTI file in the image's geometry, and its name."""
        lab = self.labels()
        name = self.out.name if self.out.name.endswith((".nii.gz", ".nii")) else "labels.nii.gz"
        return gzip.compress(nifti_bytes(lab.astype(label_dtype(int(lab.max()))), self.geom), 6), (
            name if name.endswith(".gz") else name + ".gz")
