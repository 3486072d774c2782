"""Trained models from run folders: what a run records for inference, and loading it.

A run folder records in ``networks.json`` everything inference needs: the resolved configuration
(patch, slice axis...), input and output channels, each network's registered name and options,
and which networks predict. So :func:`load_run` needs only the network registry, never the
training code or the method that trained the run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..nets import create_network
from ..planning import Plans, load_plans
from ..utils import SemisegError, read_json, write_json
from ..utils.checkpoint import load_checkpoint
from ..utils.device import default_device

RECORD = "networks.json"


@dataclass
class Model:
    """One trained run's networks with what is needed to preprocess for them."""
    run: Path
    plans: Plans
    cfg: dict
    nets: list
    names: list = field(default_factory=list)

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
             device: torch.device | None = None) -> Model:
    """Load a run's networks from ``RUN/checkpoints/<checkpoint>.pt`` (``best``, ``final``,
    ``latest`` or a file path), with ``weights_only=True``. ``nets`` picks networks by name (a CPS run
    has two); default the ones the run predicts with."""
    run = Path(run)
    rec = read_record(run)
    plans = load_plans(run)
    ck = checkpoint_path(run, checkpoint)
    state = load_checkpoint(ck)
    device = device or default_device()
    names = nets or rec["predict_with"]
    out = []
    for name in names:
        if name not in state["nets"] or name not in rec["networks"]:
            raise SemisegError(f"{ck}: has no network {name!r} (it has {', '.join(state['nets'])})")
        spec = rec["networks"][name]
        net = create_network(spec["network"], rec["configuration"], rec["in_channels"], rec["out_channels"],
                             **spec["options"])
        net.load_state_dict(state["nets"][name])
        out.append(net.to(device).eval())
    return Model(run, plans, rec["configuration"], out, list(names))


def load_models(runs: list[str], checkpoint: str, nets: list[str] | None, device) -> list[Model]:
    """Models for ``RUN`` or ``RUN@CHECKPOINT`` entries (an ensemble may mix runs and checkpoints of
    one run); all must predict the same classes from the same channels."""
    models = [load_run(*parse_run_spec(r, checkpoint), nets, device) for r in runs]
    p0 = models[0].plans
    for m in models[1:]:
        if m.plans["num_classes"] != p0["num_classes"] or m.plans["num_input_channels"] != p0["num_input_channels"]:
            raise SemisegError(f"{m.run}: predicts {m.plans['num_classes']} classes from "
                               f"{m.plans['num_input_channels']} channels; {models[0].run} does not")
    return models


def model_step(model: Model, step: float | None) -> float:
    """The sliding-window step: ``step`` when given, else the run's plan's (0.5; a student's 0.8)."""
    if step is not None:
        if not 0 < step <= 1:
            raise SemisegError(f"--step must be in (0, 1], not {step}")
        return float(step)
    return model.step
