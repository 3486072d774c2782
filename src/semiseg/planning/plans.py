"""``semiseg plan``: dataset fingerprint and ``plans.json`` (nnU-Net's rules, adapted).

Fingerprint (one case per worker at a time): spacing, shape after cropping to the non-zero
region, and per-channel intensity statistics of (a) the labeled foreground, as nnU-Net, and
(b) all voxels of all training scans, unlabeled included (Huang et al. 2022, so CT normalisation can
also come from the unlabeled majority).

Plan:

* target spacing: the per-axis median; for anisotropic data (nnU-Net's rule: the coarsest
  axis is > 3x the finest and has < 1/3 of the voxels), the coarse axis takes the 10th
  percentile instead, so thin-slice scans are not thrown away;
* normalisation per channel from ``channel_names``: ``CT`` -> clip to the 0.5/99.5
  percentiles of the foreground, then z-score with the foreground mean/std (statistics of
  all voxels with ``ct_stats="all"``, the default when no case is labeled); CT windowing into
  several channels (Pham et al. 2022) with ``ct_windows``; anything else (MRI...) -> per-case z-score,
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
* forced inference spacing (Huang et al. 2022) as an option.

Spacings, shapes and patches in ``plans.json`` are in array order (z, y, x).
"""
from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np

from .. import __version__
from ..data.checking import load_dataset
from ..data.dataset import Split
from ..utils import SemisegError, read_json, write_json
from .cost import DeviceBudget, plan_configuration
from .fingerprint import fingerprint
from .normalization import choose_normalization, parse_windows
from .spacing import ANISOTROPY_THRESHOLD, forced_inference_spacing, lowest_resolution_axis, target_spacing


def plan(dataset: str | Path, out: str | Path, labeled: int | None = None, labeled_list=None,
         labeled_key: str | None = None, fold: int = 0, memory_gb: float = 8.0,
         seconds_per_iteration: float | None = 2.0, gpu_memory_gb: float = 10.0,
         base_features: int | None = None, max_features: int = 320, ct_stats: str | None = None,
         ct_windows: str | None = None, forced_spacing: list | None = None,
         forced_spacing_rule: str = "fixed", workers: int | None = None, progress: bool = True,
         student: bool = False, spacing_factor: float | None = None) -> Plans:
    """Fingerprint ``dataset`` and write ``out/plans.json`` (and ``out/split.json``). Returns the plan.

    ``student`` plans the small fast student of Chen et al. 2023 (FLARE23): a target spacing ``spacing_factor`` (default
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
    ds = load_dataset(dataset)
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

    cpu = DeviceBudget("cpu", memory_gb, seconds_per_iteration, base_features or (8 if student else 16), max_features)
    gpu = DeviceBudget("gpu", gpu_memory_gb, None, base_features or (16 if student else 32), max_features)
    # 3D, and 2D slices across the axis of lowest resolution (largest spacing; z on ties)
    slice_axis = lowest_resolution_axis(tgt)
    inplane = [a for a in range(3) if a != slice_axis]
    configs = {"3d": _configuration(tgt, median_t, in_ch, n_classes, cpu, gpu, n_vox),
               "2d": _configuration([tgt[a] for a in inplane], [median_t[a] for a in inplane], in_ch, n_classes,
                                    cpu, gpu, n_vox)}
    configs["2d"]["slice_axis"] = slice_axis

    plans = {
        "semiseg_version": __version__,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "dataset": ds.name, "dataset_path": str(dataset),
        "axis_order": "arrays, spacings, shapes and patches are (z, y, x); SimpleITK headers are (x, y, z)",
        "channels": ds.channel_names, "num_input_channels": in_ch,
        "labels": ds.labels, "regions_class_order": ds.regions_class_order, "num_classes": n_classes,
        "target_spacing": tgt, "target_spacing_why": why_sp,
        "median_shape_at_target_spacing": [float(x) for x in median_t],
        "normalization": norm,
        "resampling": {"image_order": 3, "label": "one-hot linear", "anisotropic_z_order": 0,
                       "anisotropy_threshold": ANISOTROPY_THRESHOLD},
        "forced_spacing": (None if not forced_spacing else
                           {"spacing": [None if v in (None, 0) else float(v) for v in forced_spacing],
                            "rule": forced_spacing_rule}),
        "budget": {"cpu": cpu.__dict__, "gpu": gpu.__dict__},
        "inference": ({"step": 0.8, "tta": False,
                       "why": "student (Chen et al. 2023): larger sliding-window step, no TTA"}
                      if student else {"step": 0.5, "tta": False, "why": "nnU-Net's default step"}),
        "student": student,
        "configurations": configs,
        "fingerprint": {k: v for k, v in fp.items() if k not in ("spacings", "shapes_after_crop", "cases")},
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(fp, out / "fingerprint.json", indent=None)
    write_json(split.to_dict(), out / "split.json")
    write_json(plans, out / "plans.json")
    return Plans(plans)


def _configuration(spacing, median, in_ch: int, n_classes: int, cpu: DeviceBudget, gpu: DeviceBudget,
                   n_vox: float) -> dict:
    """One configuration planned for this machine's CPU, with what it would be on a GPU beside it."""
    dim = len(spacing)
    c = plan_configuration(spacing, median, in_ch, n_classes, cpu, dim, n_vox)
    c["gpu"] = {k: v for k, v in plan_configuration(spacing, median, in_ch, n_classes, gpu, dim, n_vox).items()
                if k not in ("spacing", "median_shape")}
    return c


class Configuration(dict):
    """One entry of ``plans.json["configurations"]`` (a dict, so it is saved and read unchanged),
    with typed access to what the rest of semiseg reads from it."""

    @property
    def patch_size(self) -> list[int]:
        return list(self["patch_size"])

    @property
    def batch_size(self) -> int:
        return int(self["batch_size"])

    @property
    def is_2d(self) -> bool:
        return len(self["patch_size"]) == 2

    @property
    def n_stages(self) -> int:
        return int(self["n_stages"])

    @property
    def features_per_stage(self) -> list[int]:
        return list(self["features_per_stage"])

    @property
    def pool_kernels(self) -> list[list[int]]:
        """Pooling (stride) per stage after the first, per axis."""
        return [list(k) for k in self["pool_kernels"]]

    @property
    def conv_kernels(self) -> list[list[int]]:
        """Convolution kernel per stage, per axis."""
        return [list(k) for k in self["conv_kernels"]]

    @property
    def slice_position(self) -> bool:
        """Whether the networks get each slice's position (``--slice-position``, 2D)."""
        return bool(self.get("slice_position"))

    def truncated(self, depth: int) -> "Configuration":
        """The same configuration with only its first ``depth`` stages (a shallower network)."""
        return Configuration(self, n_stages=depth, pool_kernels=self["pool_kernels"][:depth - 1],
                             conv_kernels=self["conv_kernels"][:depth],
                             features_per_stage=self["features_per_stage"][:depth])

    @property
    def slice_axis(self) -> int | None:
        """The axis (z, y, x) that a 2D configuration's slices are taken across; None in 3D."""
        return self.get("slice_axis") if self.is_2d else None


class Plans(dict):
    """``plans.json`` (nnU-Net's PlansManager in spirit): the dict as saved, so it is written and
    copied unchanged, with typed access to what training, inference and propagation read."""

    @property
    def num_classes(self) -> int:
        return int(self["num_classes"])

    @property
    def num_input_channels(self) -> int:
        return int(self["num_input_channels"])

    @property
    def target_spacing(self) -> list[float]:
        return list(self["target_spacing"])

    @property
    def dataset_path(self) -> Path:
        """The raw dataset the plan was made from."""
        return Path(self["dataset_path"])

    @property
    def channels(self) -> list:
        """The channels of dataset.json's ``channel_names``, in file order: one image file each."""
        return list(self["channels"])

    @property
    def labels(self) -> dict:
        """dataset.json's ``labels`` (name -> value, or region -> values)."""
        return dict(self["labels"])

    @property
    def normalization(self) -> list[dict]:
        """One normalisation scheme per channel (``scheme``, its statistics, ``use_mask``)."""
        return list(self["normalization"])

    @property
    def resampling(self) -> dict:
        return dict(self.get("resampling") or {})

    @property
    def forced_spacing(self) -> dict | None:
        """``--forced-spacing`` of the plan (``spacing``, ``rule``), or None."""
        return self.get("forced_spacing") or None

    @property
    def inference_step(self) -> float:
        """The sliding-window step the plan predicts with (0.5; a student's 0.8)."""
        return float((self.get("inference") or {}).get("step", 0.5))

    @property
    def anisotropy_threshold(self) -> float:
        return float(self.get("resampling", {}).get("anisotropy_threshold", ANISOTROPY_THRESHOLD))

    def class_names(self) -> list[str]:
        """Names of classes 1..n-1 from dataset.json ``labels``; class<i> where they are not one int each."""
        by_value = {v: k for k, v in self["labels"].items() if isinstance(v, int)}
        names = [by_value.get(c) for c in range(1, self.num_classes)]
        return names if all(names) else [f"class{c}" for c in range(1, self.num_classes)]

    def configuration(self, name: str) -> Configuration:
        if name not in self["configurations"]:
            raise SemisegError(f"configuration {name!r} is not in plans.json "
                               f"(it has {', '.join(self['configurations'])})")
        return Configuration(self["configurations"][name])


def load_split(work: str | Path) -> Split:
    """The split of a work folder (``WORK/split.json``, written by :func:`plan`): the one home of which
    cases are labeled, unlabeled and validation cases."""
    return Split.from_dict(read_json(Path(work) / "split.json", "split.json (run `semiseg plan` first)"))


def split_cases(work: str | Path, labeled: list[str] | None = None) -> tuple[list[str], list[str], list[str]]:
    """(labeled, unlabeled, validation) cases of a run on ``work``: its split, with ``labeled`` (when
    given) a subset of the split's labeled cases, the others becoming unlabeled. The one rule for
    every command that trains on a labeled subset (train, fit, selftrain)."""
    split = load_split(work)
    lab, unlabeled, val = list(split.labeled), list(split.unlabeled), list(split.val)
    if labeled is not None:
        sub = list(labeled)
        missing = [c for c in sub if c not in lab]
        if missing:
            raise SemisegError(f"labeled cases {', '.join(missing[:5])} are not labeled in "
                               f"{Path(work) / 'split.json'}; plan with a split that labels them")
        unlabeled = [c for c in lab if c not in sub] + unlabeled
        lab = sub
    return lab, unlabeled, val


def first_labeled(work: str | Path, n: int) -> list[str]:
    """The first ``n`` labeled cases of the work folder's split (``train --labeled N``, ``fit --labeled
    N``); more than the split has is an error."""
    labeled = load_split(work).labeled
    if not 0 < n <= len(labeled):
        raise SemisegError(f"--labeled {n}: the plan has {len(labeled)} labeled cases")
    return labeled[:n]


PLANS_FIELDS = {"num_classes": int, "num_input_channels": int, "target_spacing": list, "labels": dict,
                "normalization": list, "configurations": dict}  # what every reader relies on
CONFIGURATION_FIELDS = {"patch_size": list, "batch_size": int, "n_stages": int, "features_per_stage": list,
                        "pool_kernels": list, "conv_kernels": list}


_KIND = {int: "an integer", list: "a list", dict: "an object"}


def check_plans(plans: dict, where: str) -> Plans:
    """``plans`` as :class:`Plans` once the fields every reader relies on are there with their types
    (and each configuration's); else an error naming ``where`` and what is wrong."""
    if not isinstance(plans, dict):
        raise SemisegError(f"{where}: not a plans.json (a JSON object is expected)")
    bad = [f"{k} ({'missing' if k not in plans else f'not {_KIND[t]}'})" for k, t in PLANS_FIELDS.items()
           if not isinstance(plans.get(k), t) or isinstance(plans.get(k), bool)]
    confs = plans.get("configurations")
    for name, c in (confs.items() if isinstance(confs, dict) else ()):
        if not isinstance(c, dict):
            bad.append(f"configurations.{name} (not an object)")
            continue
        bad += [f"configurations.{name}.{k} ({'missing' if k not in c else f'not {_KIND[t]}'})"
                for k, t in CONFIGURATION_FIELDS.items() if not isinstance(c.get(k), t) or isinstance(c.get(k), bool)]
    if bad:
        raise SemisegError(f"{where}: not a usable plans.json: {', '.join(bad[:6])} (run `semiseg plan` again)")
    return Plans(plans)


def load_plans(path: str | Path) -> Plans:
    """The plans of a work or run folder (``PATH/plans.json``), checked (:func:`check_plans`)."""
    f = Path(path) / "plans.json"
    return check_plans(read_json(f, "plans.json (run `semiseg plan` first)"), str(f))
