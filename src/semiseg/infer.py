"""Inference: sliding-window prediction, ensembles, mirroring TTA, and ``semiseg predict``.

:func:`sliding_window_probs` predicts softmax probabilities for one preprocessed case with MONAI's
sliding-window inference (Gaussian blending, step = 1 - overlap as a fraction of the patch),
averaged over networks and, with TTA, over every mirroring of the spatial axes. A 2D
configuration predicts slice by slice along its slice axis, with the same code (a window one
slice thick).

:func:`predict_folder` runs whole cases: read (nnU-Net naming ``CASE_0000.ext`` per channel),
preprocess as the run was trained (or at a forced inference spacing), predict with every model,
average the probabilities in the case's original (cropped) grid, argmax, paste into the original
extent and write in the input's exact geometry, atomically, skipping cases already done.
"""
from __future__ import annotations

import csv
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .dataset import CHANNEL_RE, Case, read_case_image
from .io import SUPPORTED_ENDINGS, Geometry, file_ending, write_image
from .utils import SemisegError, atomic_path, class_argmax, read_json


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class _Slices(torch.nn.Module):
    """Runs a 2D network on windows one slice thick: (N, C, 1, y, x) -> (N, K, 1, y, x)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x[:, :, 0])[:, :, None]


def mirror_sets(axes) -> list[tuple]:
    """Every subset of ``axes`` to flip, the identity first (8 in 3D, 4 in 2D)."""
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


@torch.no_grad()
def sliding_window_probs(nets: list, data, cfg: dict, step: float = 0.5, tta: bool = False,
                         device: torch.device | None = None, sw_batch: int | None = None,
                         patch_size=None, slices: list[int] | None = None) -> torch.Tensor:
    """Mean softmax over ``nets`` (and mirrorings with ``tta``) for one case ``data`` (C, z, y, x).
    Returns float32 (K, z, y, x) on the CPU. A 2D configuration can predict only some ``slices``
    (indices along its slice axis; returns (K, len(slices), *in-plane))."""
    from monai.inferers import sliding_window_inference

    device = device or default_device()
    patch = list(patch_size or cfg["patch_size"])
    x = torch.from_numpy(np.array(data, np.float32))[None]
    slice_axis = cfg.get("slice_axis") if len(patch) == 2 else None
    if slices is not None and slice_axis is None:
        raise SemisegError("predicting some slices only needs a 2D configuration")
    if slice_axis is not None:  # put the slice axis first; windows are one slice thick
        x = x.movedim(2 + slice_axis, 2)
        if cfg.get("slice_position"):  # the PE(k) = k / T plane as the last channel
            T = x.shape[2]
            pe = (torch.arange(T, dtype=x.dtype) / T).view(1, 1, T, 1, 1).expand(1, 1, T, *x.shape[3:])
            x = torch.cat([x, pe], 1)
        if slices is not None:
            x = x[:, :, list(slices)]
        roi = [1] + patch
        flip_axes = [3, 4]
        sw_batch = sw_batch or 16
    else:
        roi = patch
        flip_axes = [2, 3, 4]
        sw_batch = sw_batch or 2
    x = x.to(device)
    variants = mirror_sets(flip_axes) if tta else [()]
    acc = None
    n = 0
    from .engine import autocast_dtype

    amp = autocast_dtype("auto", device)
    for net in nets:
        net.eval()
        pred = _Slices(net) if slice_axis is not None else net
        for flips in variants:
            xi = torch.flip(x, flips) if flips else x
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                logits = sliding_window_inference(xi, roi, sw_batch, pred, overlap=1 - step, mode="gaussian",
                                                  sigma_scale=0.125)
            p = torch.softmax(logits.float(), 1)
            if flips:
                p = torch.flip(p, flips)
            acc = p if acc is None else acc + p
            n += 1
    probs = (acc / n)[0]
    if slice_axis is not None and slices is None:
        probs = probs.movedim(1, 1 + slice_axis)
    return probs.cpu()


# --------------------------------------------------------------------------- back to the original grid
def probs_to_original(probs: torch.Tensor, props: dict) -> torch.Tensor:
    """Probabilities on the preprocessed grid -> the cropped original grid (linear), then pasted into
    the original extent (background 1 outside the crop). Returns (K, *original_shape) float32."""
    crop = tuple(props["shape_after_crop"])
    if tuple(probs.shape[1:]) != crop:
        probs = F.interpolate(probs[None], size=crop, mode="trilinear", align_corners=False)[0]
    full = torch.zeros((probs.shape[0],) + tuple(props["original_shape"]), dtype=torch.float32)
    full[0] = 1.0
    sl = tuple(slice(lo, hi) for lo, hi in props["bbox"])
    full[(slice(None),) + sl] = probs
    return full


def keep_largest_component(seg: np.ndarray, classes: list[int] | None = None) -> np.ndarray:
    """Per class, keep only its largest 26-connected component (the rest becomes background)."""
    import cc3d

    out = seg.copy()
    for c in classes if classes is not None else [int(v) for v in np.unique(seg) if v]:
        m = seg == c
        if not m.any():
            continue
        cc = cc3d.connected_components(m.astype(np.uint8), connectivity=26)
        sizes = np.bincount(cc.ravel())
        sizes[0] = 0
        out[m & (cc != sizes.argmax())] = 0
    return out


# --------------------------------------------------------------------------- models from runs
@dataclass
class Model:
    """One trained run's networks with what is needed to preprocess for them."""
    run: Path
    plans: dict
    cfg: dict
    nets: list
    names: list = field(default_factory=list)


def load_run(run: str | Path, checkpoint: str = "best", nets: list[str] | None = None,
             device: torch.device | None = None) -> Model:
    """Load a run's networks from ``RUN/checkpoints/<checkpoint>.pt`` (``best``, ``final``,
    ``latest`` or a file path), with ``weights_only=True``. ``nets`` picks networks by name (a CPS run
    has two); default all that the method predicts with."""
    from .config import TrainConfig, input_channels
    from .engine import load_checkpoint
    from .methods import create_method
    from .nets import create_network

    run = Path(run)
    cfgj = run / "config.json"
    if not cfgj.exists():
        raise SemisegError(f"{run}: not a semiseg run folder (no config.json)")
    tc = TrainConfig.from_dict(read_json(cfgj, "run configuration"))
    plans = read_json(run / "plans.json", "run plans")
    ck = Path(checkpoint) if checkpoint.endswith(".pt") else run / "checkpoints" / f"{checkpoint}.pt"
    if not ck.exists():
        raise SemisegError(f"{ck}: no such checkpoint (a run writes best.pt, final.pt and latest.pt)")
    state = load_checkpoint(ck)
    method = create_method(tc.method, tc)
    cfg = tc.resolved_configuration(plans)
    device = device or default_device()
    names = nets or method.predict_with()
    out = []
    for name in names:
        if name not in state["nets"]:
            raise SemisegError(f"{ck}: has no network {name!r} (it has {', '.join(state['nets'])})")
        spec = method.networks()[name]
        net = create_network(spec["network"], cfg, input_channels(plans, cfg), plans["num_classes"],
                             **spec.get("options", {}))
        net.load_state_dict(state["nets"][name])
        out.append(net.to(device).eval())
    return Model(run, plans, cfg, out, list(names))


# --------------------------------------------------------------------------- input folders
def list_input_cases(folder: Path, n_channels: int) -> dict[str, list[Path]]:
    """Case id -> channel files, nnU-Net naming (CASE_0000.ext...); a single-channel model also takes
    files without the channel suffix."""
    files = [f for f in sorted(folder.iterdir()) if f.is_file() and file_ending(f) in SUPPORTED_ENDINGS]
    if not files:
        raise SemisegError(f"{folder}: no images (endings {', '.join(SUPPORTED_ENDINGS)})")
    cases: dict[str, dict[int, Path]] = {}
    for f in files:
        stem = f.name[: -len(file_ending(f))]
        m = CHANNEL_RE.match(stem)
        if m:
            cases.setdefault(m["case"], {})[int(m["ch"])] = f
        elif n_channels == 1:
            cases.setdefault(stem, {})[0] = f
        else:
            raise SemisegError(f"{f}: name without a channel suffix _XXXX, but the model takes {n_channels} channels")
    out = {}
    for cid, ch in cases.items():
        want = set(range(n_channels))
        if set(ch) != want:
            raise SemisegError(f"{folder}: case {cid} has channels {sorted(ch)}, the model needs {sorted(want)}")
        out[cid] = [ch[c] for c in range(n_channels)]
    return out


def model_step(model: Model, step: float | None) -> float:
    """The sliding-window step: ``step`` when given, else the run's plan's (0.5; a student's 0.8)."""
    if step is not None:
        if not 0 < step <= 1:
            raise SemisegError(f"--step must be in (0, 1], not {step}")
        return float(step)
    return float((model.plans.get("inference") or {}).get("step", 0.5))


def predict_case(models: list[Model], image: np.ndarray, geom: Geometry, step: float | None = None, tta: bool = False,
                 forced_spacing: list | None = None, device=None) -> tuple[torch.Tensor, dict]:
    """Mean probabilities of every model for one case, in the case's original grid (K, z, y, x)."""
    acc, n = None, 0
    info = {}
    cache: dict[str, tuple] = {}
    for m in models:
        data, props = preprocessed_for(m, image, geom, cache, forced_spacing)
        p = sliding_window_probs(m.nets, data, m.cfg, step=model_step(m, step), tta=tta, device=device)
        p = probs_to_original(p, props) * len(m.nets)
        acc = p if acc is None else acc + p
        n += len(m.nets)
        info["spacing"] = props["spacing"]
    return acc / n, info


def preprocessed_for(model: Model, image: np.ndarray, geom: Geometry, cache: dict,
                     forced_spacing: list | None = None) -> tuple:
    """(data, props) of one case preprocessed as ``model`` was trained (or at a forced spacing);
    ``cache`` shares the work between models of an ensemble that preprocess alike."""
    from .preprocessing import preprocess_arrays

    spacing = forced_spacing or None
    if spacing is None and model.plans.get("forced_spacing"):
        spacing = _forced(model.plans, geom)
    key = repr((model.plans["target_spacing"], model.plans["normalization"], spacing))
    if key not in cache:
        data, _seg, props = preprocess_arrays(image, geom, model.plans, None, spacing)
        cache[key] = (data, props)
    return cache[key]


def check_folders(in_dir, out_dir) -> tuple[Path, Path]:
    """The input folder must exist and differ from the output folder."""
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if not in_dir.is_dir():
        raise SemisegError(f"{in_dir}: no such input folder")
    if out_dir.resolve() == in_dir.resolve():
        raise SemisegError(f"{out_dir}: the output folder is the input folder; choose another")
    return in_dir, out_dir


def load_models(runs: list[str], checkpoint: str, nets: list[str] | None, device) -> list[Model]:
    """Models for ``RUN`` or ``RUN@CHECKPOINT`` entries (an ensemble may mix runs and checkpoints of
    one run); all must predict the same classes from the same channels."""
    models = []
    for r in runs:
        path, _, ck = str(r).partition("@") if "@" in str(r) and not Path(str(r)).exists() else (str(r), "", "")
        models.append(load_run(path, ck or checkpoint, nets, device))
    p0 = models[0].plans
    for m in models[1:]:
        if m.plans["num_classes"] != p0["num_classes"] or m.plans["num_input_channels"] != p0["num_input_channels"]:
            raise SemisegError(f"{m.run}: predicts {m.plans['num_classes']} classes from "
                               f"{m.plans['num_input_channels']} channels; {models[0].run} does not")
    return models


def _forced(plans: dict, geom: Geometry) -> list | None:
    from .planning import forced_inference_spacing

    f = plans["forced_spacing"]
    return forced_inference_spacing(f["spacing"], list(geom.spacing_zyx), int(geom.shape_zyx[0]), f.get("rule", "fixed"))


def predict_folder(runs: list[str], in_dir, out_dir, checkpoint: str = "best", nets: list[str] | None = None,
                   step: float | None = None, tta: bool = False, forced_spacing: list | None = None,
                   save_probabilities: bool = False, largest_component: bool = False, overwrite: bool = False,
                   profile: str | None = None, device: str | None = None, progress: bool = True) -> dict:
    """``semiseg predict``: every case of ``in_dir`` -> ``out_dir/CASE.<ending>`` (+ ``.npz`` probabilities).

    ``runs`` are run folders, each optionally ``RUN@CHECKPOINT`` (``best``, ``final``, ``latest`` or a
    file); the softmax of every network of every entry is averaged."""
    from tqdm import tqdm

    from .profile import ResourceSampler

    in_dir, out_dir = check_folders(in_dir, out_dir)
    dev = torch.device(device) if device else default_device()
    models = load_models(runs, checkpoint, nets, dev)
    p0 = models[0].plans
    cases = list_input_cases(in_dir, p0["num_input_channels"])
    ending = p0.get("file_ending", ".nii.gz")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, done, skipped = [], 0, 0
    classes = list(range(1, p0["num_classes"]))
    for cid, files in tqdm(cases.items(), desc="predict", disable=not progress, unit="case"):
        target = out_dir / f"{cid}{ending}"
        if target.exists() and not overwrite:
            skipped += 1
            continue
        with ResourceSampler() as s:
            t = time.time()
            image, geom = read_case_image(Case(cid, files))
            probs, info = predict_case(models, image, geom, step, tta, forced_spacing, dev)
            seg = class_argmax(probs, 0).numpy().astype(np.uint8 if p0["num_classes"] < 256 else np.int16)
            if largest_component:
                seg = keep_largest_component(seg, classes)
            if save_probabilities:
                with atomic_path(out_dir / f"{cid}.npz", suffix=".npz") as tmp:
                    np.savez_compressed(tmp, probabilities=probs.numpy().astype(np.float16),
                                        spacing_zyx=np.array(geom.spacing_zyx))
            write_image(seg, geom, target)
            secs = time.time() - t
        r = s.result()
        rows.append({"case": cid, "seconds": round(secs, 3), "peak_rss_mb": round(r["peak_rss_mb"], 1),
                     "peak_gpu_mb": round(r.get("peak_gpu_mb", 0.0), 1),
                     "rss_auc_mb_s": round(r.get("rss_auc_mb_s", 0.0), 1),
                     "cpu_util_auc": round(r.get("cpu_util_auc", 0.0), 2),
                     "shape": "x".join(map(str, image.shape[1:])), "spacing": "x".join(f"{v:g}" for v in info["spacing"])})
        done += 1
    if profile and rows:
        with atomic_path(profile, suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return {"done": done, "skipped": skipped, "rows": rows, "out": str(out_dir)}
