"""Trained models from run folders and model files: what a run records for inference, and loading it.

A run folder records in ``networks.json`` everything inference needs: the resolved configuration
(patch, slice axis...), input and output channels, each network's registered name and options,
and which networks predict. So :func:`load_run` needs only the network registry, never the
training code or the method that trained the run. A model file (``semiseg export``, see
:mod:`.modelfile`) holds the same records for one or more runs, with safetensors weights and ONNX
graphs; :func:`load_models` takes both. ``backend`` chooses where the networks run (:mod:`.backends`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..nets import SEGMENTATION, create_network, network_kind
from ..planning import Plans, load_plans
from ..utils import SemisegError, read_json, write_json
from ..utils.checkpoint import load_checkpoint
from ..utils.device import PRECISION_FILE, default_device, inference_amp
from . import postprocessing
from .backends import backend_net, onnx_graph
from .modelfile import is_model_file, load_weights, read_model_file

RECORD = "networks.json"


@dataclass
class Model:
    """One trained run's networks with what is needed to preprocess for them."""
    run: Path
    plans: Plans
    cfg: dict
    nets: list
    names: list = field(default_factory=list)
    networks: list = field(default_factory=list)  # the registered network of each of ``names``
    settings: dict = field(default_factory=dict)  # inference defaults (a model file's; a run's postprocessing)
    amp: str = "off"  # the resolved precision it predicts in (utils.device.inference_amp)

    @property
    def step(self) -> float:
        return Plans(self.plans).inference_step


def write_record(run: Path, configuration: dict, in_channels: int, out_channels: int, networks: dict,
                 predict_with: list[str]) -> None:
    """``RUN/networks.json``: ``networks`` maps a name to a method's NetworkSpec (``network``,
    ``options``)."""
    nets = {k: {"network": v.network, "options": dict(v.options)} for k, v in networks.items()}
    write_json({"configuration": configuration, "in_channels": int(in_channels), "out_channels": int(out_channels),
                "networks": nets, "predict_with": list(predict_with)}, Path(run) / RECORD)


def read_record(run: Path) -> dict:
    run = Path(run)
    if not (run / "config.json").exists():
        raise SemisegError(f"{run}: not a semiseg run folder (no config.json)")
    if not (run / RECORD).exists():
        raise SemisegError(f"{run / RECORD}: missing; the run was made by an earlier semiseg (the command line "
                           "records it; in Python: semiseg.training.records.record_earlier_run) or did not start")
    return read_json(run / RECORD, "the run's network record")


def parse_run_spec(spec, checkpoint: str = "best") -> tuple[str, str]:
    """``RUN`` or ``RUN@CHECKPOINT`` -> (run folder, checkpoint). A folder whose own name holds '@'
    is taken whole when it exists."""
    s = str(spec)
    if "@" in s and not Path(s).exists():
        path, _, ck = s.rpartition("@")
        return path, ck or checkpoint
    return s, checkpoint


def checkpoint_path(run: Path, checkpoint: str) -> Path:
    """``RUN/checkpoints/<checkpoint>.pt`` (``best``, ``final``, ``latest``) or a ``.pt`` file given
    as is; SemisegError when it does not exist."""
    ck = Path(checkpoint) if checkpoint.endswith(".pt") else Path(run) / "checkpoints" / f"{checkpoint}.pt"
    if not ck.exists():
        raise SemisegError(f"{ck}: no such checkpoint (a run writes best.pt, final.pt and latest.pt)")
    return ck


def load_run(run: str | Path, checkpoint: str = "best", nets: list[str] | None = None,
             device: torch.device | None = None, backend: str = "torch", amp: str = "auto") -> Model:
    """Load a run's networks from ``RUN/checkpoints/<checkpoint>.pt`` (``best``, ``final``,
    ``latest`` or a file path), with ``weights_only=True``, or the one run of a model file
    (``MODEL.zip``). ``nets`` picks networks by name (a CPS run has two); default the ones the run
    predicts with. ``backend`` other than torch runs each network's ONNX graph (made now for a run
    folder)."""
    if is_model_file(run):
        models = load_model_file(run, nets, device, backend, amp)
        if len(models) != 1:
            raise SemisegError(f"{run}: holds an ensemble of {len(models)} runs; this command takes one")
        return models[0]
    run = Path(run)
    rec, ck, weights, iteration = run_weights(run, checkpoint, nets)
    amp = inference_amp(amp, device or default_device(), run_precision(run))
    out = [build_network(rec, name, w, f"{ck} ({name})", device, backend, amp) for name, w in weights.items()]
    chosen = postprocessing.run_choice(run, iteration)
    return Model(run, load_plans(run), rec["configuration"], out, list(weights),
                 [rec["networks"][n]["network"] for n in weights],
                 {} if chosen is None else {"largest_component": chosen}, amp)


def run_precision(run: Path) -> dict | None:
    """The precision a run trained in and where it was measured (``RUN/precision.json``), if recorded."""
    f = Path(run) / PRECISION_FILE
    return read_json(f, "the run's precision") if f.exists() else None


def run_weights(run: Path, checkpoint: str, nets: list[str] | None = None) -> tuple[dict, Path, dict, int | None]:
    """(network record, checkpoint file, name -> state dict, iteration) of a run folder's networks ``nets``
    (default: those it predicts with), read with ``weights_only=True``; SemisegError for a network
    the run does not have."""
    rec = read_record(run)
    ck = checkpoint_path(run, checkpoint)
    state = load_checkpoint(ck)
    weights = {}
    for name in nets or rec["predict_with"]:
        if name not in state["nets"] or name not in rec["networks"]:
            raise SemisegError(f"{ck}: has no network {name!r} (it has {', '.join(state['nets'])})")
        weights[name] = state["nets"][name]
    return rec, ck, weights, state.get("iteration")


def build_network(rec: dict, name: str, weights: dict, where: str, device, backend: str, amp: str,
                  graph: bytes | None = None):
    """One network of a record, with ``weights``, on ``device`` or in ``backend``. With an ONNX
    ``graph`` and another backend than torch, no torch network is built (nor MONAI imported)."""
    if backend != "torch" and graph is not None:
        return backend_net(backend, None, graph, where, amp)
    spec = rec["networks"][name]
    net = create_network(spec["network"], rec["configuration"], rec["in_channels"], rec["out_channels"],
                         **spec["options"])
    try:
        net.load_state_dict(weights)
    except RuntimeError as e:
        raise SemisegError(f"{where}: the weights do not fit network {spec['network']!r} ({str(e)[:300]})") from None
    if backend == "torch":
        return net.to(device or default_device()).eval()
    if graph is None and is_segmentation(rec, name):
        graph = onnx_graph(net, rec["configuration"]["patch_size"], rec["in_channels"])
    return backend_net(backend, net, graph, where, amp)


def is_segmentation(rec: dict, name: str) -> bool:
    """Whether a recorded network maps an image patch to class logits (an STCN propagation network
    does not; it has no ONNX graph)."""
    return network_kind(rec["networks"][name]["network"]) == SEGMENTATION


def load_model_file(path, nets: list[str] | None = None, device=None, backend: str = "torch",
                    amp: str = "auto") -> list[Model]:
    """Every run of a model file (``semiseg export``) as a Model with the file's inference settings."""
    manifest, blobs = read_model_file(path)
    out = []
    for m in manifest["members"]:
        rec = m["record"]
        names = nets or rec["predict_with"]
        m_amp = inference_amp(amp, device or default_device(), m.get("precision"))
        loaded = []
        for name in names:
            if name not in rec["networks"]:
                raise SemisegError(f"{path}: member {m['name']} has no network {name!r} "
                                   f"(it has {', '.join(rec['networks'])})")
            files = m["files"][name]
            where = f"{path}: {files['weights']}"
            weights = load_weights(blobs[files["weights"]], where, files.get("aliases"))
            graph = blobs.get(files.get("onnx") or "")
            loaded.append(build_network(rec, name, weights, where, device, backend, m_amp, graph))
        plans = Plans(json.loads(blobs[m["plans"]].decode("utf-8")))
        out.append(Model(Path(f"{path}:{m['name']}"), plans, rec["configuration"], loaded, list(names),
                         [rec["networks"][n]["network"] for n in names],
                         dict(manifest.get("inference") or {}), m_amp))
    return out


def load_models(runs: list[str], checkpoint: str, nets: list[str] | None, device, backend: str = "torch",
                amp: str = "auto") -> list[Model]:
    """Models for ``RUN``, ``RUN@CHECKPOINT`` or ``MODEL.zip`` entries (an ensemble may mix runs,
    checkpoints of one run and model files); all must predict the same classes from the same
    channels."""
    if not runs:
        raise SemisegError("give a run folder or a model file (-m MODEL.zip)")
    models = []
    for r in runs:
        if is_model_file(r):
            models += load_model_file(r, nets, device, backend, amp)
        else:
            models.append(load_run(*parse_run_spec(r, checkpoint), nets, device, backend, amp))
    p0 = models[0].plans
    for m in models[1:]:
        if m.plans.num_classes != p0.num_classes or m.plans.num_input_channels != p0.num_input_channels:
            raise SemisegError(f"{m.run}: predicts {m.plans.num_classes} classes from "
                               f"{m.plans.num_input_channels} channels; {models[0].run} does not")
    return models


def model_step(model: Model, step: float | None) -> float:
    """The sliding-window step: ``step`` when given, else the run's plan's (0.5; a student's 0.8)."""
    if step is not None:
        if not 0 < step <= 1:
            raise SemisegError(f"--step must be in (0, 1], not {step}")
        return float(step)
    return model.step
