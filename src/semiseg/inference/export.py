"""``semiseg export``: one or more trained runs into one model file that needs no run folder.

Each run becomes a member with its network record, plan, training summary, safetensors weights and
(for segmentation networks) the ONNX graph exported once here with the plan's patch. The file also
carries the inference settings ``predict`` uses by default (step, TTA, largest component, forced
spacing), the label names and the versions that made it. See :mod:`.modelfile` for the format.
"""
from __future__ import annotations

import datetime as _dt
import json
import platform
import re
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..utils import SemisegError, read_json
from . import postprocessing
from .backends import OPSET, onnx_graph
from .modelfile import is_model_file, save_weights, write_model_file
from .runs import build_network, is_segmentation, parse_run_spec, run_precision, run_weights


def _member_name(run: Path, taken: set) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", run.name) or "run"
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}-{k}"
    taken.add(name)
    return name


def export_model(runs: list[str], out, checkpoint: str = "best", nets: list[str] | None = None,
                 step: float | None = None, tta: bool = False, largest_component: bool | None = None,
                 forced_spacing: list | None = None, onnx: bool = True, check: bool = True) -> dict:
    """Write ``out`` (a ``.zip``) from run folders (``RUN`` or ``RUN@CHECKPOINT``). With ``check``,
    each ONNX graph is run once beside its torch network on a random patch and the largest logit
    difference is recorded (``onnx_max_abs_diff``). ``largest_component`` None keeps the first run's
    postprocessing choice for its checkpoint (:mod:`.postprocessing`). Returns the manifest."""
    out = Path(out)
    if not is_model_file(out):
        raise SemisegError(f"{out}: a model file's name ends in .zip")
    if step is not None and not 0 < step <= 1:
        raise SemisegError(f"--step must be in (0, 1], not {step}")
    members, blobs, taken, labels = [], {}, set(), None
    for spec in runs:
        run, ck_name = parse_run_spec(spec, checkpoint)
        run = Path(run)
        rec, ck, weights, iteration = run_weights(run, ck_name, nets)
        plans = read_json(run / "plans.json", "the run's plans.json")
        names = list(weights)
        name = _member_name(run, taken)
        files = {}
        for net_name, w in weights.items():
            f = {"weights": f"members/{name}/{net_name}.safetensors", "onnx": None}
            blobs[f["weights"]], f["aliases"] = save_weights(w)
            if onnx and is_segmentation(rec, net_name):
                net = build_network(rec, net_name, w, f"{ck} ({net_name})", torch.device("cpu"), "torch", "off")
                graph = onnx_graph(net, rec["configuration"]["patch_size"], rec["in_channels"])
                f["onnx"] = f"members/{name}/{net_name}.onnx"
                blobs[f["onnx"]] = graph
                if check:
                    f["onnx_max_abs_diff"] = _check_graph(net, graph, rec)
            files[net_name] = f
        blobs[f"members/{name}/plans.json"] = json.dumps(plans, indent=1).encode()
        summary = read_json(run / "summary.json", "run summary") if (run / "summary.json").exists() else {}
        if labels is None:
            labels = plans.get("labels")
            if largest_component is None:
                largest_component = postprocessing.run_choice(run, iteration) or False
        members.append({"name": name, "source": str(run.resolve()), "checkpoint": ck_name,
                        "iteration": iteration, "record": dict(rec, predict_with=list(names)),
                        "plans": f"members/{name}/plans.json", "files": files, "summary": summary,
                        "precision": run_precision(run)})
    manifest = {
        "semiseg": __version__, "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
                     "onnx_opset": OPSET if onnx else None},
        "labels": labels,
        "inference": {"step": step, "tta": bool(tta),
                      "largest_component": largest_component if isinstance(largest_component, list)
                      else bool(largest_component),
                      "forced_spacing": list(forced_spacing) if forced_spacing else None},
        "members": members,
    }
    write_model_file(out, manifest, blobs)
    return dict(manifest, size_bytes=out.stat().st_size)


def _check_graph(net, graph: bytes, rec: dict) -> float:
    """Largest |logit| difference between the ONNX graph (ONNX Runtime, float32) and torch."""
    import onnxruntime as ort  # noqa: PLC0415 - a heavy import, only for export
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((1, rec["in_channels"], *rec["configuration"]["patch_size"]), generator=gen)
    s = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
    y = s.run(None, {s.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        ref = net(x).numpy()
    return float(np.abs(y - ref).max())
