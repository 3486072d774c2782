"""``semiseg predict``: whole cases from image files to label files in their own geometry.

Read (nnU-Net naming ``CASE_0000.ext`` per channel), preprocess as the run was trained (or at a
forced inference spacing), predict with every model (:mod:`.sliding_window`), average the
probabilities in the case's original (cropped) grid, argmax, paste into the original extent and
write in the input's exact geometry, atomically, skipping cases already done.
"""
from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .. import __version__
from ..data.dataset import CHANNEL_RE, Case, label_dtype, read_case_image
from ..data.dicom import DicomSeries, is_dicom_folder, open_series, write_dicom_seg
from ..data.io import SUPPORTED_ENDINGS, Geometry, file_ending, write_image
from ..planning import Plans
from ..planning.spacing import forced_inference_spacing
from ..preprocessing.cache import preprocess_arrays
from ..utils import CaseFailures, SemisegError, atomic_path, class_argmax
from ..utils.device import default_device
from ..utils.profile import ResourceSampler
from . import postprocessing
from .ensemble import MeanProbs
from .runs import Model, load_models, model_step
from .sliding_window import keep_largest_component, probs_to_original, sliding_window_probs

OUTPUT_FORMATS = ("image", "dicom-seg")


def list_input_cases(folder: Path, n_channels: int, series_uid: str | None = None) -> dict[str, list]:
    """Case id -> channel files (or, for a case with missing or extra channel files, the error that
    :func:`case_files` raises), nnU-Net naming (CASE_0000.ext...); a single-channel model also takes
    files without the channel suffix, a DICOM series folder (one case named after the folder;
    ``series_uid`` picks a series when it holds several) or a folder of DICOM series folders (one
    case each)."""
    folder = Path(folder)
    dicom = [folder] if is_dicom_folder(folder) else [d for d in sorted(folder.iterdir()) if is_dicom_folder(d)]
    if dicom:
        if n_channels != 1:
            raise SemisegError(f"{folder}: DICOM series are single-channel; the model takes {n_channels} channels")
        return {d.name: [open_series(d, series_uid)] for d in dicom}
    files = [f for f in sorted(folder.iterdir()) if f.is_file() and file_ending(f) in SUPPORTED_ENDINGS]
    if not files:
        raise SemisegError(f"{folder}: no images (endings {', '.join(SUPPORTED_ENDINGS)}) and no DICOM series")
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
        if set(ch) != want:  # refused when its turn comes, so that the other cases are done
            extra, missing = sorted(set(ch) - want), sorted(want - set(ch))
            why = [f"extra channel file(s) {', '.join(ch[c].name for c in extra)}"] if extra else []
            why += [f"missing channel(s) {', '.join(f'{cid}_{c:04d}' for c in missing)}"] if missing else []
            out[cid] = SemisegError(f"{folder / ch[min(ch)].name}: case {cid}: {'; '.join(why)} (the model takes "
                                    f"{n_channels} channel(s), _0000 to _{n_channels - 1:04d})")
            continue
        out[cid] = [ch[c] for c in range(n_channels)]
    return out


def case_files(files) -> list:
    """A case's channel files from :func:`list_input_cases`; raises the case's own error."""
    if isinstance(files, SemisegError):
        raise files
    return files


def predict_case(models: list[Model], image: np.ndarray, geom: Geometry, step: float | None = None, tta: bool = False,
                 forced_spacing: list | None = None, device=None,
                 times: dict | None = None) -> tuple[torch.Tensor, dict]:
    """Mean probabilities of every network of every model for one case, in the case's original grid
    (K, z, y, x), each model in its own resolved precision (``Model.amp``). ``times`` (a dict) accumulates
    seconds per stage: ``preprocess``, ``network``,
    ``sliding_window`` (network + windowing and blending), ``resample`` (back to the original grid)."""
    acc, info = MeanProbs(), {}
    cache: dict[str, tuple] = {}
    times = {} if times is None else times
    for m in models:
        t = time.perf_counter()
        data, props = preprocessed_for(m, image, geom, cache, forced_spacing)
        times["preprocess"] = times.get("preprocess", 0.0) + time.perf_counter() - t
        p = sliding_window_probs(m.nets, data, m.cfg, step=model_step(m, step), tta=tta, device=device, amp=m.amp,
                                 times=times)
        t = time.perf_counter()
        acc.add(probs_to_original(p, props), len(m.nets))
        times["resample"] = times.get("resample", 0.0) + time.perf_counter() - t
        info["spacing"] = props["spacing"]
    return acc.mean(), info


def preprocessed_for(model: Model, image: np.ndarray, geom: Geometry, cache: dict,
                     forced_spacing: list | None = None) -> tuple:
    """(data, props) of one case preprocessed as ``model`` was trained (or at a forced spacing);
    ``cache`` shares the work between models of an ensemble that preprocess alike."""
    spacing = forced_spacing or None
    if spacing is None and model.plans.forced_spacing:
        spacing = _forced(model.plans, geom)
    key = repr((model.plans.target_spacing, model.plans.normalization, spacing))
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


def _forced(plans: Plans, geom: Geometry) -> list | None:
    f = plans.forced_spacing
    return forced_inference_spacing(f["spacing"], list(geom.spacing_zyx), int(geom.shape_zyx[0]),
                                    f.get("rule", "fixed"))


def predict_folder(runs: list[str], in_dir, out_dir, checkpoint: str = "best", nets: list[str] | None = None,
                   step: float | None = None, tta: bool | None = None, forced_spacing: list | None = None,
                   save_probabilities: bool = False, largest_component: bool | list | None = None,
                   overwrite: bool = False, profile: str | None = None, device: str | None = None,
                   progress: bool = True, amp: str = "auto", backend: str = "torch", series_uid: str | None = None,
                   output_format: str = "image", stop_on_error: bool = False) -> dict:
    """``semiseg predict``: every case of ``in_dir`` -> ``out_dir/CASE.<ending>`` (+ ``.npz`` probabilities).

    ``runs`` are run folders, each optionally ``RUN@CHECKPOINT`` (``best``, ``final``, ``latest`` or a
    file), or model files (``MODEL.zip``); the softmax of every network of every entry is averaged.
    ``tta``, ``largest_component``, ``step`` and ``forced_spacing`` left at None take a model file's
    settings (else off / the plan's); ``largest_component`` (True, False or a list of classes) left at
    None takes the classes the run chose on its validation cases for its best checkpoint
    (:mod:`.postprocessing`). ``backend``: torch, onnxruntime or openvino.
    ``profile`` writes a CSV with, per case, seconds, peak memory and seconds per stage (read,
    preprocess, network, blend, resample, write). ``in_dir`` may be a DICOM series folder or a folder
    of them (``series_uid`` picks one series of a folder that holds several); ``output_format``
    ``dicom-seg`` writes ``CASE.dcm``, a DICOM SEG that references the input series, instead of a
    label image. A case that cannot be read or predicted is reported at the end (the others are
    done); ``stop_on_error`` stops at the first instead."""
    if output_format not in OUTPUT_FORMATS:
        raise SemisegError(f"--output-format must be one of {', '.join(OUTPUT_FORMATS)}, not {output_format!r}")
    t_start = time.time()
    in_dir, out_dir = check_folders(in_dir, out_dir)
    dev = default_device(device)
    models = load_models(runs, checkpoint, nets, dev, backend, amp)
    p0 = models[0].plans
    settings = models[0].settings
    tta = bool(settings.get("tta", False)) if tta is None else tta
    largest_component = settings.get("largest_component", False) if largest_component is None \
        else largest_component
    keep_largest = postprocessing.component_classes(largest_component, p0.num_classes)
    step = settings.get("step") if step is None else step
    forced_spacing = forced_spacing or settings.get("forced_spacing")
    cases = list_input_cases(in_dir, p0.num_input_channels, series_uid)
    ending = p0.get("file_ending", ".nii.gz")
    if output_format == "dicom-seg":
        ending = ".dcm"
        not_dicom = [c for c, f in cases.items() if isinstance(f, SemisegError) or not isinstance(f[0], DicomSeries)]
        if not_dicom:
            raise SemisegError(f"{in_dir}: --output-format dicom-seg needs DICOM series inputs; "
                               f"{', '.join(not_dicom[:5])} {'is' if len(not_dicom) == 1 else 'are'} not")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, done, skipped = [], 0, 0
    load_s = time.time() - t_start
    failures = CaseFailures(stop_on_error)

    def one(cid, files, target) -> dict:
        times: dict[str, float] = {}
        with ResourceSampler() as s:
            t = time.time()
            image, geom = read_case_image(Case(cid, case_files(files)))
            times["read"] = time.time() - t
            probs, info = predict_case(models, image, geom, step, tta, forced_spacing, dev, times)
            t1 = time.time()
            seg = class_argmax(probs, 0).numpy().astype(label_dtype(p0.num_classes - 1))
            if keep_largest:
                seg = keep_largest_component(seg, keep_largest)
            times["argmax"] = time.time() - t1
            t1 = time.time()
            if save_probabilities:
                with atomic_path(out_dir / f"{cid}.npz", suffix=".npz") as tmp:
                    np.savez_compressed(tmp, probabilities=probs.numpy().astype(np.float16),
                                        spacing_zyx=np.array(geom.spacing_zyx))
            if output_format == "dicom-seg":
                write_dicom_seg(seg, files[0], target, Plans(p0).class_names(), f"semiseg {__version__}")
            else:
                write_image(seg, geom, target)
            times["write"] = time.time() - t1
            secs = time.time() - t
        r = s.result()
        stages = {f"{k}_s": round(times.get(k, 0.0), 3) for k in ("read", "preprocess", "network")}
        stages["blend_s"] = round(times.get("sliding_window", 0.0) - times.get("network", 0.0), 3)
        stages.update({f"{k}_s": round(times.get(k, 0.0), 3) for k in ("resample", "argmax", "write")})
        return {"case": cid, "seconds": round(secs, 3), "peak_rss_mb": round(r["peak_rss_mb"], 1),
                "peak_gpu_mb": round(r.get("peak_gpu_mb", 0.0), 1),
                "rss_auc_mb_s": round(r.get("rss_auc_mb_s", 0.0), 1),
                "cpu_util_auc": round(r.get("cpu_util_auc", 0.0), 2),
                "shape": "x".join(map(str, image.shape[1:])),
                "spacing": "x".join(f"{v:g}" for v in info["spacing"]), "backend": backend, **stages}

    for cid, files in tqdm(cases.items(), desc="predict", disable=not progress, unit="case"):
        target = out_dir / f"{cid}{ending}"
        if target.exists() and not overwrite:
            skipped += 1
            continue
        with failures.case(cid):
            rows.append(one(cid, files, target))
            done += 1
    if profile and rows:
        with atomic_path(profile, suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    failures.raise_if_any(f"{done} predicted, {skipped} already done, into {out_dir}")
    return {"done": done, "skipped": skipped, "rows": rows, "out": str(out_dir), "load_seconds": round(load_s, 3),
            "seconds": round(time.time() - t_start, 3)}
