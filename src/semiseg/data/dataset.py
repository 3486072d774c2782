"""nnU-Net v2 raw datasets, read unchanged, and the labeled / unlabeled / validation split.

Layout (https://github.com/MIC-DKFZ/nnUNet/blob/master/documentation/dataset_format.md)::

    DATASET/dataset.json              channel_names, labels, file_ending (+ regions_class_order)
    DATASET/imagesTr/CASE_0000.ext    one file per channel (_0000, _0001, ...)
    DATASET/labelsTr/CASE.ext         optional per case: cases without one are unlabeled
    DATASET/imagesTs/CASE_0000.ext    optional test images
    DATASET/splits.json               optional, nnU-Net style [{"train": [...], "val": [...]}]

Which training cases are labeled (see :meth:`Dataset.split`):

* ``labeled=N``: the first N cases, in the order of the ``train`` list of the chosen fold of
  ``splits.json`` (the order the semi-supervised benchmarks use: UA-MT's ``train.list`` for LA,
  SSL4MIS's for ACDC), or in sorted case-ID order without a ``splits.json``; only cases with a
  label file count;
* ``labeled_list=FILE``: IDs in a text file (one per line), a JSON list, or a JSON object of
  lists such as ``ssl_labeled_subsets.json`` (pick one with ``labeled_key``; a unique prefix is
  enough, e.g. ``labeled_8``);
* neither: every training case with a label file.

Every other training case is unlabeled: its label file, if one exists, is never opened.
Validation cases are the ``val`` list of the fold; without ``splits.json``, 20 % of the
labeled cases (at least one when there are two or more) drawn with a fixed seed.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..utils import SemisegError
from .dicom import DicomSeries, is_dicom_folder, open_series, read_series
from .io import SUPPORTED_ENDINGS, Geometry, read_image

REQUIRED_KEYS = ("channel_names", "labels", "file_ending")


@dataclass
class Case:
    id: str
    images: list[Path]
    label: Path | None = None


@dataclass
class Split:
    """Which cases a run uses and how. Saved as ``split.json`` in a work folder."""

    labeled: list[str]
    unlabeled: list[str]
    val: list[str]
    how: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Split":
        return cls(list(d["labeled"]), list(d["unlabeled"]), list(d["val"]), d.get("how", ""))


def unsafe_case_id(cid: str) -> str | None:
    """Why ``cid`` is not a safe case ID (it could escape its folder), or None."""
    if not isinstance(cid, str) or not cid:
        return "empty or not a string"
    if "/" in cid or "\\" in cid or cid in (".", "..") or cid.startswith("..") or "\x00" in cid:
        return "contains a path separator or '..' and would escape the dataset folder"
    return None


def declared_label_values(labels: dict) -> set[int]:
    """Integer values a label file may contain, from dataset.json ``labels`` (regions included)."""
    vals: set[int] = set()
    for v in labels.values():
        if isinstance(v, (list, tuple)):
            vals.update(int(x) for x in v)
        else:
            vals.add(int(v))
    vals.add(0)
    return vals


def label_dtype(max_value: int):
    """The NumPy type of a label map whose largest value is ``max_value`` (``num_classes - 1`` for a
    model's output): uint8 while it fits, int16 beyond. The one rule for cached labels,
    pseudo-labels, predictions and propagated maps."""
    return np.uint8 if int(max_value) <= 255 else np.int16


def regions_from_labels(labels: dict) -> dict[str, list[int]]:
    """dataset.json ``labels`` -> {name: stored values it unites}, background left out."""
    out = {}
    for k, v in labels.items():
        vals = [int(x) for x in v] if isinstance(v, (list, tuple)) else [int(v)]
        if vals != [0]:
            out[k] = vals
    return out


class Dataset:
    """An nnU-Net v2 raw dataset. :func:`semiseg.data.checking.load_dataset` builds one and raises
    SemisegError on structural errors; :func:`semiseg.data.checking.check_dataset` reports every
    problem instead."""

    def __init__(self, root: Path, meta: dict, cases: dict[str, Case], test_cases: dict[str, Case],
                 splits: list[dict] | None):
        self.root = root
        self.meta = meta
        self.cases = cases
        self.test_cases = test_cases
        self.splits = splits

    # ---------------------------------------------------------------- metadata
    @property
    def name(self) -> str:
        return str(self.meta.get("name", self.root.name))

    @property
    def channel_names(self) -> list[str]:
        cn = self.meta["channel_names"]
        return [str(cn[k]) for k in sorted(cn, key=lambda k: int(k))]

    @property
    def num_channels(self) -> int:
        return len(self.meta["channel_names"])

    @property
    def file_ending(self) -> str:
        return self.meta["file_ending"]

    @property
    def labels(self) -> dict:
        return self.meta["labels"]

    @property
    def has_regions(self) -> bool:
        return any(isinstance(v, (list, tuple)) for v in self.labels.values())

    @property
    def regions_class_order(self) -> list[int] | None:
        return self.meta.get("regions_class_order")

    @property
    def label_values(self) -> list[int]:
        return sorted(declared_label_values(self.labels))

    @property
    def num_classes(self) -> int:
        """Classes a network predicts, background included (max stored label value + 1)."""
        return max(self.label_values) + 1

    def class_names(self) -> dict[int, str]:
        """Stored label value -> name, for datasets without regions."""
        return {int(v): k for k, v in self.labels.items() if not isinstance(v, (list, tuple))}

    def regions(self) -> dict[str, list[int]]:
        """Evaluation regions: name -> stored label values it unites (background excluded).

        Plain labels become one-value regions, so every dataset can be scored the same way.
        """
        return regions_from_labels(self.labels)

    # ---------------------------------------------------------------- splits
    def fold(self, fold: int = 0) -> tuple[list[str], list[str]]:
        """(train IDs in order, val IDs) of ``splits.json`` fold, or (sorted IDs, []) without one."""
        if not self.splits:
            return sorted(self.cases), []
        if fold >= len(self.splits):
            raise SemisegError(f"{self.root / 'splits.json'}: fold {fold} requested but only "
                               f"{len(self.splits)} folds")
        s = self.splits[fold]
        return list(s["train"]), list(s.get("val", []))

    def split(self, labeled: int | None = None, labeled_list: str | os.PathLike | None = None,
              labeled_key: str | None = None, fold: int = 0, val_fraction: float = 0.2,
              seed: int = 12345) -> Split:
        """Decide labeled, unlabeled and validation cases (see the module docstring)."""
        if labeled is not None and labeled_list is not None:
            raise SemisegError("give either --labeled N or --labeled-list FILE, not both")
        train, val = self.fold(fold)
        how = f"fold {fold} of splits.json" if self.splits else "no splits.json"
        if not self.splits:
            # validation: a seeded 20 % of the labeled cases, decided before --labeled N
            with_label = [c for c in train if self.cases[c].label is not None]
            n_val = int(round(val_fraction * len(with_label))) if len(with_label) >= 2 else 0
            if len(with_label) >= 2:
                n_val = max(1, n_val)
            val = sorted(random.Random(seed).sample(with_label, n_val))
            train = [c for c in train if c not in set(val)]
            how += f", {n_val} validation cases drawn with seed {seed}"
        for c in val:
            if self.cases[c].label is None:
                raise SemisegError(f"{self.root / 'splits.json'}: validation case {c} has no label file")
        candidates = [c for c in train if self.cases[c].label is not None]
        if labeled is not None:
            if labeled < 0 or labeled > len(candidates):
                raise SemisegError(f"--labeled {labeled}: the training split has {len(candidates)} "
                                   f"cases with a label file")
            chosen = candidates[:labeled]
            how += f", first {labeled} labeled training cases"
        elif labeled_list is not None:
            chosen = read_case_list(labeled_list, labeled_key)
            known = set(train)
            for c in chosen:
                if c in val:
                    raise SemisegError(f"{labeled_list}: case {c} is a validation case")
                if c not in self.cases or c not in known:
                    raise SemisegError(f"{labeled_list}: case {c} is not a training case of {self.root}")
                if self.cases[c].label is None:
                    raise SemisegError(f"{labeled_list}: case {c} has no label file in labelsTr")
            how += f", labeled list {labeled_list}" + (f" [{labeled_key}]" if labeled_key else "")
        else:
            chosen = candidates
            how += ", every training case with a label"
        chosen_set = set(chosen)
        unlabeled = [c for c in train if c not in chosen_set]
        return Split(list(chosen), unlabeled, list(val), how)


GEOMETRY_TOLERANCE = 1e-4  # relative for spacing; times the largest spacing for origin (see Geometry.mismatch)


def label_problems(lab: np.ndarray, declared) -> tuple[np.ndarray | None, list[tuple[str, str]]]:
    """Validate a label array: (integer label map or None if unusable, [(kind, message), ...]).
    ``declared``: the label values allowed, or None for any non-negative integer.

    Kinds: ``dimension``, ``non_finite``, ``non_integer_label``, ``unreadable`` (voxel type),
    ``undeclared_label``, ``negative_label`` (without ``declared``). ``semiseg check`` reports
    them all; :func:`read_label_file` raises the first.
    """
    if lab.ndim != 3:
        return None, [("dimension", f"label is {lab.ndim}D with array shape {list(lab.shape)}; 3D expected")]
    if np.issubdtype(lab.dtype, np.floating):
        if not np.all(np.isfinite(lab)):
            return None, [("non_finite", "label has NaN or Inf voxels")]
        frac = lab != np.round(lab)
        if frac.any():
            return None, [("non_integer_label", f"{int(frac.sum())} non-integer label values "
                                                f"(e.g. {float(lab[frac].flat[0]):g})")]
        lab = lab.astype(np.int64)
    elif not np.issubdtype(lab.dtype, np.integer) and lab.dtype != np.bool_:
        return None, [("unreadable", f"unsupported label type {lab.dtype}")]
    if declared is None:
        if lab.size and lab.min() < 0:
            return None, [("negative_label", f"negative label values (e.g. {int(lab.min())}); labels are 0, 1, 2, ...")]
        return lab, []
    bad = sorted(set(int(v) for v in np.unique(lab)) - set(declared))
    if bad:
        return lab, [("undeclared_label", f"label values {bad} are not declared in dataset.json "
                                          f"(declared: {sorted(declared)})")]
    return lab, []


def read_case_image(case: Case, tol: float = GEOMETRY_TOLERANCE) -> tuple[np.ndarray, Geometry]:
    """All channels of a case as float32 (C, z, y, x) and the geometry of channel 0. Raises
    SemisegError naming the file for unreadable, non-3D or non-finite channels, or channels that
    disagree in geometry."""
    chans, geom = [], None
    for f in case.images:
        a, g = read_channel(f)
        if a.ndim != 3:
            raise SemisegError(f"{f}: {a.ndim}D image, 3D expected (run `semiseg check`)")
        if geom is None:
            geom = g
        elif geom.mismatch(g, tol):
            raise SemisegError(f"{f}: geometry differs from channel 0: " + "; ".join(geom.mismatch(g, tol)))
        chans.append(a.astype(np.float32, copy=False))
    return np.stack(chans), geom


def read_channel(f) -> tuple[np.ndarray, Geometry]:
    """One channel: an image file, a DICOM series folder, or an opened :class:`DicomSeries`."""
    if isinstance(f, DicomSeries):
        return read_series(f)
    if Path(f).is_dir():
        if not is_dicom_folder(f):
            raise SemisegError(f"{f}: a folder that holds no DICOM files")
        return read_series(open_series(f))
    return read_image(f, require_finite=True)


def read_case_label(case: Case, geom: Geometry, declared, tol: float = GEOMETRY_TOLERANCE) -> np.ndarray:
    """The case's label map as integers, checked against the image geometry ``geom`` and the
    ``declared`` label values. Raises SemisegError naming the file."""
    return read_label_file(case.label, geom, declared, tol)


def read_label_file(path, geom: Geometry, declared=None, tol: float = GEOMETRY_TOLERANCE) -> np.ndarray:
    """A label file as integers, checked against the image geometry ``geom`` and the ``declared``
    label values (None: any non-negative integer). Raises SemisegError naming the file."""
    lab, lg = read_image(path, require_finite=True)
    mm = geom.mismatch(lg, tol)
    if mm:
        raise SemisegError(f"{path}: label geometry differs from the image: " + "; ".join(mm))
    lab, problems = label_problems(lab, declared)
    if problems:
        raise SemisegError(f"{path}: {problems[0][1]}")
    return lab


def link_case_images(dataset: "Dataset", ids: list[str], folder: str | os.PathLike) -> Path:
    """A folder of links (copies where links are not allowed) to the image files of ``ids``, for
    commands that take an image folder (predict, pseudolabel); the dataset is never written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for cid in ids:
        if cid not in dataset.cases:
            raise SemisegError(f"case {cid} is not in {dataset.root / 'imagesTr'}")
        for f in dataset.cases[cid].images:
            t = folder / f.name
            if not t.exists():
                try:
                    t.symlink_to(f.resolve())
                except OSError:
                    shutil.copy2(f, t)
    return folder


def read_case_list(path: str | os.PathLike, key: str | None = None) -> list[str]:
    """Case IDs from a text file (one per line, '#' comments), a JSON list or a JSON object of lists."""
    path = Path(path)
    if not path.is_file():
        raise SemisegError(f"{path}: labeled list not found")
    text = path.read_text()
    ids: list
    if path.suffix == ".json":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise SemisegError(f"{path}: not valid JSON ({e})") from None
        if isinstance(obj, dict):
            lists = {k: v for k, v in obj.items() if isinstance(v, list)}
            if key is None:
                raise SemisegError(f"{path}: holds several lists, choose one with --labeled-key: "
                                   + ", ".join(repr(k) for k in lists))
            match = [k for k in lists if k == key] or [k for k in lists if k.startswith(key)]
            if len(match) != 1:
                raise SemisegError(f"{path}: --labeled-key {key!r} matches {len(match)} of the lists "
                                   + ", ".join(repr(k) for k in lists))
            ids = lists[match[0]]
        elif isinstance(obj, list):
            ids = obj
        else:
            raise SemisegError(f"{path}: expected a JSON list of case IDs or an object of lists")
    else:
        ids = [ln.split("#")[0].strip() for ln in text.splitlines()]
        ids = [i for i in ids if i]
    seen = set()
    for c in ids:
        why = unsafe_case_id(c)
        if why:
            raise SemisegError(f"{path}: case ID {c!r} {why}")
        if c in seen:
            raise SemisegError(f"{path}: case ID {c} listed twice")
        seen.add(c)
    if not ids:
        raise SemisegError(f"{path}: no case IDs")
    return [str(c) for c in ids]


CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<ch>\d{4})$")


def strip_ending(name: str, ending: str) -> str | None:
    return name[: -len(ending)] if name.endswith(ending) else None


def is_supported_ending(ending: str) -> bool:
    return ending in SUPPORTED_ENDINGS


__all__ = ["Dataset", "Case", "Split", "read_case_list", "declared_label_values", "unsafe_case_id",
           "REQUIRED_KEYS", "CHANNEL_RE"]
