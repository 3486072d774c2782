"""Shared by the subcommands: the progress switch, labeled-case options, trained-model options."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..inference.backends import BACKENDS
from ..training.records import record_earlier_runs
from ..utils import SemisegError


def progress(a) -> bool:
    return not getattr(a, "quiet", False)


def add_split_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("labeled cases (default: every training case with a label file)")
    g.add_argument("--labeled", type=int, metavar="N",
                   help="the first N labeled cases of the split's training list (splits.json order; "
                        "sorted IDs without splits.json)")
    g.add_argument("--labeled-list", metavar="FILE",
                   help="case IDs: text (one per line), JSON list, or JSON object of lists "
                        "(e.g. ssl_labeled_subsets.json, with --labeled-key)")
    g.add_argument("--labeled-key", metavar="KEY", help="which list of a JSON object (a unique prefix is enough)")
    g.add_argument("--fold", type=int, default=0, help="fold of splits.json (default 0)")


def add_model_args(p: argparse.ArgumentParser, runs_help: str, input_help: str) -> None:
    """Arguments shared by the commands that run trained models (predict, pseudolabel)."""
    p.add_argument("runs", nargs="*", metavar="RUN", help=runs_help)
    p.add_argument("-m", "--model", action="append", default=[], metavar="MODEL.zip",
                   help="a model file made by `semiseg export` (repeatable; mixes with RUN folders)")
    p.add_argument("--backend", choices=BACKENDS, default="torch",
                   help="where the networks run: torch (default; CUDA when available), onnxruntime or openvino "
                        "(CPU; the ONNX graph comes from the model file, or is made when a run folder is loaded)")
    p.add_argument("-i", "--input", required=True, metavar="IN_DIR", help=input_help)
    p.add_argument("-o", "--out", required=True, metavar="OUT_DIR")
    p.add_argument("--checkpoint", default="best", help="best (default), final, latest, or a .pt file")
    p.add_argument("--nets", nargs="+", help="only these networks of each run (e.g. one net of a CPS pair)")
    p.add_argument("--step", type=float, default=None,
                   help="sliding-window step as a fraction of the patch (default: the run's plan, 0.5; a student 0.8)")
    p.add_argument("--device", help="torch device (default cuda when available)")


def model_specs(a) -> list[str]:
    """The RUN folders and -m model files of a command, at least one."""
    specs = list(a.runs) + list(a.model)
    if not specs:
        raise SemisegError("give a run folder (RUN) or a model file (-m MODEL.zip)")
    return specs


def write_run_report(run, quiet: bool = False) -> Path | None:
    """``RUN/report.html`` after a training command; a failure to report never fails the training."""
    from ..report import write_report  # noqa: PLC0415 - matplotlib only when a report is due
    try:
        out = write_report(run, progress=not quiet)
    except Exception as e:  # noqa: BLE001 - the training is done and saved; say why there is no report
        print(f"no report ({type(e).__name__}: {e}); run `semiseg report {run}` to retry")
        return None
    print(f"report: {out}")
    return out


def record_runs(runs) -> None:
    """Give run folders made by an earlier semiseg their networks.json, saying so."""
    for r in record_earlier_runs(runs):
        print(f"{r}: made by an earlier semiseg; wrote its networks.json (what prediction needs)")
