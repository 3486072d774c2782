"""``semiseg check``: is an nnU-Net v2 raw dataset sound?

Two passes. :func:`scan_structure` reads ``dataset.json``, ``splits.json`` and the folder
listings (no voxel data). :func:`check_dataset` then reads every case, one case per worker
process at a time (streaming: memory does not grow with the dataset), and checks voxel data and
geometry. Every problem names the file and says what is wrong; errors make the exit code 1,
warnings do not.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..utils import SemisegError, parallel_map
from .dataset import (
    CHANNEL_RE,
    GEOMETRY_TOLERANCE,
    REQUIRED_KEYS,
    Case,
    Dataset,
    declared_label_values,
    label_problems,
    strip_ending,
    unsafe_case_id,
)
from .io import SUPPORTED_ENDINGS, Geometry, read_image

# The rules of nnU-Net v2's own check (nnunetv2/experiment_planning/verify_dataset_integrity.py), each
# covered by `semiseg check`; a finding that breaks one names it. nnU-Net only warns about the last
# two; semiseg refuses a label whose origin or direction differs from its image (an error).
NNUNET_RULES = {
    "dataset_json": "a dataset.json in the dataset folder",
    "folders": "imagesTr and labelsTr folders",
    "required_keys": "dataset.json has labels, channel_names, numTraining and file_ending",
    "num_training": "numTraining equals the number of training cases",
    "label_per_case": "every training case has a label file in labelsTr",
    "consecutive_labels": "label values are consecutive (0, 1, 2, ...)",
    "expected_labels": "label files hold only the label values dataset.json declares",
    "no_nan": "images and labels hold no NaN",
    "channels": "each case has as many channels as channel_names declares",
    "shape": "image and label have the same shape",
    "spacing": "image and label have the same spacing",
    "origin_direction": "image and label have the same origin and direction (nnU-Net: a warning)",
    "background_only": "a label holding only background is flagged (nnU-Net: a warning)",
}
_RULE_OF_KIND = {"missing_channel": "channels", "extra_channel": "channels", "non_finite": "no_nan",
                 "undeclared_label": "expected_labels", "empty_label": "background_only"}


@dataclass
class Problem:
    severity: str  # "error" | "warning"
    path: str
    message: str
    kind: str  # short machine-readable category
    rule: str = ""  # the nnU-Net rule (a key of NNUNET_RULES) this breaks, if any

    def __post_init__(self):
        self.rule = self.rule or _RULE_OF_KIND.get(self.kind, "")

    def __str__(self) -> str:
        s = f"{self.severity.upper():7s} {self.path}: {self.message}"
        return s + (f" [nnU-Net rule: {NNUNET_RULES[self.rule]}]" if self.rule else "")


@dataclass
class CheckReport:
    root: str
    problems: list[Problem] = field(default_factory=list)
    n_cases: int = 0
    n_labeled: int = 0
    n_test: int = 0

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        kinds = Counter(p.kind for p in self.errors)
        s = (f"{self.root}: {self.n_cases} training cases ({self.n_labeled} with labels), "
             f"{self.n_test} test cases; {len(self.errors)} errors, {len(self.warnings)} warnings")
        if kinds:
            s += " [" + ", ".join(f"{k}: {n}" for k, n in sorted(kinds.items())) + "]"
        return s

    def to_dict(self) -> dict:
        return {"root": self.root, "ok": self.ok, "n_cases": self.n_cases,
                "n_labeled": self.n_labeled, "n_test": self.n_test,
                "problems": [p.__dict__ for p in self.problems]}


# --------------------------------------------------------------------------- structure
def _check_meta(meta: object, path: Path, P: list[Problem]) -> bool:
    """Validate dataset.json contents. Returns False when the dataset cannot be scanned further."""
    def err(msg, kind="dataset_json"):
        P.append(Problem("error", str(path), msg, kind))

    if not isinstance(meta, dict):
        err("must be a JSON object")
        return False
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        P.append(Problem("error", str(path), f"missing required key(s): {', '.join(missing)}", "dataset_json",
                         "required_keys"))
        return False
    cn = meta["channel_names"]
    if not isinstance(cn, dict) or not cn:
        err("'channel_names' must be a non-empty object like {\"0\": \"CT\"}")
        return False
    try:
        idx = sorted(int(k) for k in cn)
    except (TypeError, ValueError):
        err(f"'channel_names' keys must be channel indices \"0\", \"1\", ...; got {list(cn)}")
        return False
    if idx != list(range(len(idx))):
        err(f"'channel_names' indices must be 0..{len(idx) - 1} without gaps; got {idx}")
        return False
    fe = meta["file_ending"]
    if not isinstance(fe, str) or fe not in SUPPORTED_ENDINGS:
        err(f"'file_ending' {fe!r} is not supported (use one of {', '.join(SUPPORTED_ENDINGS)})")
        return False
    labels = meta["labels"]
    if not isinstance(labels, dict) or not labels:
        err("'labels' must be a non-empty object like {\"background\": 0, \"liver\": 1}")
        return False
    ok = True
    has_regions = False
    for name, v in labels.items():
        vals = v if isinstance(v, list) else [v]
        has_regions |= isinstance(v, list)
        if not vals or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in vals):
            err(f"label {name!r}: value {v!r} must be a non-negative integer or a list of them")
            ok = False
    if not ok:
        return False
    if labels.get("background") != 0:
        err("'labels' must map \"background\" to 0")
        return False
    plain = [v for v in labels.values() if not isinstance(v, list)]
    dup = [v for v, n in Counter(plain).items() if n > 1]
    if dup:
        err(f"'labels': value(s) {dup} used by more than one label")
        return False
    if has_regions:
        rco = meta.get("regions_class_order")
        n_regions = sum(isinstance(v, list) for v in labels.values())
        if not isinstance(rco, list) or not all(isinstance(x, int) for x in rco):
            err("labels are regions (lists) but 'regions_class_order' (a list of integers) is missing")
            return False
        if len(rco) != n_regions:
            err(f"'regions_class_order' has {len(rco)} entries for {n_regions} regions")
            return False
    if "numTraining" in meta and not isinstance(meta["numTraining"], int):
        P.append(Problem("warning", str(path), "'numTraining' is not an integer", "dataset_json", "num_training"))
    values = sorted(declared_label_values(labels))
    gaps = sorted(set(range(values[-1] + 1)) - set(values))
    if gaps:
        P.append(Problem("warning", str(path), f"label values skip {gaps}: networks get a class for each missing "
                         "value that is never seen", "dataset_json", "consecutive_labels"))
    return True


def _list_cases(folder: Path, ending: str, n_ch: int, P: list[Problem]) -> dict[str, Case]:
    """Group ``CASE_XXXX<ending>`` files of an images folder into cases; report strays."""
    files: dict[str, dict[int, Path]] = {}
    lower_seen: dict[str, str] = {}
    for f in sorted(folder.iterdir()):
        if f.name.startswith("."):
            continue
        stem = strip_ending(f.name, ending)
        if f.is_dir() or stem is None:
            other = next((e for e in SUPPORTED_ENDINGS if f.name.endswith(e)), None)
            if other:
                P.append(Problem("error", str(f), f"file ending {other!r} differs from dataset.json "
                                 f"file_ending {ending!r}", "extra_file"))
            else:
                P.append(Problem("warning", str(f), "not an image of this dataset; ignored", "extra_file"))
            continue
        m = CHANNEL_RE.match(stem)
        if not m:
            P.append(Problem("error", str(f), "name must be CASE_XXXX" + ending + " with a 4-digit "
                             "channel index", "extra_file"))
            continue
        cid, ch = m.group("case"), int(m.group("ch"))
        if ch >= n_ch:
            P.append(Problem("error", str(f), f"channel {ch:04d} is not declared in channel_names "
                             f"({n_ch} channel(s))", "extra_channel"))
            continue
        low = cid.lower()
        if low in lower_seen and lower_seen[low] != cid:
            P.append(Problem("error", str(f), f"case ID {cid} differs from case {lower_seen[low]} "
                             "only by letter case (they collide on case-insensitive file systems)",
                             "duplicate_case"))
            continue
        lower_seen[low] = cid
        files.setdefault(cid, {})[ch] = f
    cases = {}
    for cid, chans in files.items():
        miss = [c for c in range(n_ch) if c not in chans]
        if miss:
            for c in miss:
                P.append(Problem("error", str(folder / f"{cid}_{c:04d}{ending}"),
                                 f"missing channel {c} of case {cid}", "missing_channel"))
            continue
        cases[cid] = Case(cid, [chans[c] for c in range(n_ch)])
    return cases


def _check_splits(root: Path, cases: dict[str, Case], P: list[Problem]) -> list[dict] | None:
    path = root / "splits.json"
    if not path.exists():
        return None
    try:
        splits = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        P.append(Problem("error", str(path), f"not valid JSON ({e})", "splits"))
        return None
    if not isinstance(splits, list) or not splits or not all(
            isinstance(s, dict) and isinstance(s.get("train"), list) for s in splits):
        P.append(Problem("error", str(path), "must be a list of folds like "
                         "[{\"train\": [...], \"val\": [...]}]", "splits"))
        return None
    good = True
    for i, s in enumerate(splits):
        val = s.get("val", [])
        if not isinstance(val, list):
            P.append(Problem("error", str(path), f"fold {i}: 'val' must be a list", "splits"))
            good = False
            continue
        ids = list(s["train"]) + list(val)
        for cid in ids:
            why = unsafe_case_id(cid)
            if why:
                P.append(Problem("error", str(path), f"fold {i}: case ID {cid!r} {why}", "unsafe_case_id"))
                good = False
            elif cid not in cases:
                P.append(Problem("error", str(path), f"fold {i}: case {cid} has no images in imagesTr",
                                 "splits"))
                good = False
        for cid, n in Counter(ids).items():
            if n > 1:
                where = "in both train and val" if cid in s["train"] and cid in val else f"{n} times"
                P.append(Problem("error", str(path), f"fold {i}: case {cid} listed {where}",
                                 "duplicate_case"))
                good = False
    if good:
        listed = set(splits[0]["train"]) | set(splits[0].get("val", []))
        extra = sorted(set(cases) - listed)
        if extra:
            P.append(Problem("warning", str(path), f"fold 0 does not list {len(extra)} case(s) of imagesTr "
                             f"(e.g. {extra[0]}); they are not used", "splits"))
    return splits if good else None


def scan_structure(root: Path) -> tuple[Dataset | None, list[Problem]]:
    """Check dataset.json, folder layout and splits.json without reading voxel data."""
    root = Path(root)
    P: list[Problem] = []
    if not root.is_dir():
        P.append(Problem("error", str(root), "dataset folder not found", "layout", "dataset_json"))
        return None, P
    dj = root / "dataset.json"
    if not dj.is_file():
        P.append(Problem("error", str(dj), "dataset.json not found", "dataset_json", "dataset_json"))
        return None, P
    try:
        meta = json.loads(dj.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        P.append(Problem("error", str(dj), f"not valid JSON ({e})", "dataset_json"))
        return None, P
    if not _check_meta(meta, dj, P):
        return None, P
    ending, n_ch = meta["file_ending"], len(meta["channel_names"])
    imdir = root / "imagesTr"
    if not imdir.is_dir():
        P.append(Problem("error", str(imdir), "imagesTr folder not found", "layout", "folders"))
        return None, P
    cases = _list_cases(imdir, ending, n_ch, P)
    if not cases:
        P.append(Problem("error", str(imdir), f"no images named CASE_0000{ending}", "layout"))
    lbdir = root / "labelsTr"
    if lbdir.is_dir():
        for f in sorted(lbdir.iterdir()):
            if f.name.startswith("."):
                continue
            stem = strip_ending(f.name, ending)
            if stem is None or f.is_dir():
                P.append(Problem("warning", str(f), f"not a label file ending in {ending}; ignored",
                                 "extra_file"))
            elif stem in cases:
                cases[stem].label = f
            elif CHANNEL_RE.match(stem) and CHANNEL_RE.match(stem).group("case") in cases:
                P.append(Problem("error", str(f), "label files have no channel suffix: expected "
                                 f"{CHANNEL_RE.match(stem).group('case')}{ending}", "extra_file"))
            else:
                P.append(Problem("error", str(f), f"label of case {stem}, which has no image in imagesTr",
                                 "orphan_label"))
    n_lab = sum(c.label is not None for c in cases.values())
    if cases and n_lab == 0:
        P.append(Problem("warning", str(lbdir), "no label files: every case is unlabeled", "layout", "folders"))
    elif n_lab < len(cases):
        P.append(Problem("warning", str(lbdir), f"{len(cases) - n_lab} of {len(cases)} training cases have no label "
                         "file: semiseg uses them as unlabeled scans (nnU-Net would stop)", "unlabeled_cases",
                         "label_per_case"))
    nt = meta.get("numTraining")
    if isinstance(nt, int) and nt != len(cases):
        P.append(Problem("warning", str(dj), f"numTraining is {nt} but imagesTr holds {len(cases)} "
                         "complete cases", "dataset_json", "num_training"))
    test_cases: dict[str, Case] = {}
    tsdir = root / "imagesTs"
    if tsdir.is_dir():
        test_cases = _list_cases(tsdir, ending, n_ch, P)
    splits = _check_splits(root, cases, P)
    ds = Dataset(root, meta, cases, test_cases, splits)
    return ds, P


def load_dataset(root) -> Dataset:
    """The dataset at ``root``, or SemisegError naming the first structural error (the same scan as
    ``semiseg check`` without reading voxels; run that for the full list)."""
    ds, problems = scan_structure(Path(root))
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        more = f" (and {len(errors) - 1} more problems; run `semiseg check {root}`)" if len(errors) > 1 else ""
        raise SemisegError(f"{errors[0].path}: {errors[0].message}{more}")
    return ds


# --------------------------------------------------------------------------- voxel data


def _read_or_report(f: Path, P: list[Problem]):
    """read_image, or None after recording why the file cannot be read."""
    try:
        return read_image(f)
    except SemisegError as e:
        kind = "truncated" if "truncated" in str(e) else "unreadable"
        P.append(Problem("error", str(f), str(e).split(": ", 1)[-1], kind))
        return None


def _check_case(args) -> tuple[list[Problem], dict]:
    """Read one case (all channels, and its label when ``with_label``) and report problems."""
    case, label_values, with_label, tol = args
    P: list[Problem] = []
    info: dict = {"id": case.id}
    ref: Geometry | None = None
    for k, f in enumerate(case.images):
        got = _read_or_report(f, P)
        if got is None:
            continue
        arr, g = got
        if arr.ndim != 3 or g.ndim != 3:
            P.append(Problem("error", str(f), f"image is {g.ndim}D with array shape {list(arr.shape)}; "
                             "3D expected", "dimension"))
            continue
        if np.issubdtype(arr.dtype, np.floating):
            nan, inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
            if nan or inf:
                P.append(Problem("error", str(f), f"{nan} NaN and {inf} Inf voxels", "non_finite"))
        elif not np.issubdtype(arr.dtype, np.integer) and arr.dtype != np.bool_:
            P.append(Problem("error", str(f), f"unsupported voxel type {arr.dtype}", "unreadable"))
            continue
        if arr.size and np.all(arr == arr.flat[0]):
            P.append(Problem("warning", str(f), f"image is constant ({arr.flat[0]})", "constant_image"))
        if ref is None:
            ref = g
            info["geometry"] = g.to_dict()
        else:
            mm = ref.mismatch(g, tol)
            if mm:
                P.append(Problem("error", str(f), f"channel {k} disagrees with channel 0 "
                                 f"({case.images[0].name}): " + "; ".join(mm), "channel_geometry"))
        del arr
    if with_label and case.label is not None:
        f = case.label
        got = _read_or_report(f, P)
        if got is None:
            return P, info
        lab, problems = label_problems(got[0], label_values)
        g = got[1]
        P.extend(Problem("error", str(f), msg, kind) for kind, msg in problems)
        if lab is None:
            return P, info
        present = sorted(int(v) for v in np.unique(lab))
        info["present"] = present
        if present == [0]:
            P.append(Problem("warning", str(f), "label is all background", "empty_label"))
        if ref is not None:
            mm = ref.mismatch(g, tol)
            if mm:
                rule = {"size": "shape", "dimension": "shape", "spacing": "spacing"}.get(mm[0].split()[0],
                                                                                      "origin_direction")
                P.append(Problem("error", str(f), f"label disagrees with image {case.images[0].name}: "
                                 + "; ".join(mm), "label_geometry", rule))
    return P, info


def check_dataset(root, workers: int | None = None, progress: bool = True,
                  tolerance: float = GEOMETRY_TOLERANCE) -> CheckReport:
    """Check a dataset; returns a :class:`CheckReport` (``report.ok`` is False on errors)."""
    root = Path(root)
    ds, P = scan_structure(root)
    rep = CheckReport(str(root), P)
    if ds is None:
        return rep
    rep.n_cases, rep.n_test = len(ds.cases), len(ds.test_cases)
    rep.n_labeled = sum(c.label is not None for c in ds.cases.values())
    values = declared_label_values(ds.labels)
    jobs = [(c, values, True, tolerance) for c in ds.cases.values()]
    jobs += [(c, values, False, tolerance) for c in ds.test_cases.values()]
    for probs, _info in parallel_map(_check_case, jobs, workers=workers, desc="check", progress=progress):
        rep.problems.extend(probs)
    return rep
