"""``semiseg export`` (trained runs into one model file for other machines) and ``semiseg report``
(a run's self-contained HTML report)."""
from __future__ import annotations

import argparse

from ..inference.export import export_model
from .common import progress, record_runs


def cmd_report(a) -> int:
    from ..report import write_report  # noqa: PLC0415 - matplotlib only when a report is due
    out = write_report(a.run, a.out, predict=not a.no_predict, progress=progress(a))
    print(f"wrote {out}")
    return 0


def cmd_export(a) -> int:
    record_runs(a.runs)
    m = export_model(a.runs, a.out, checkpoint=a.checkpoint, nets=a.nets, step=a.step, tta=a.tta,
                     largest_component=a.largest_component, forced_spacing=a.forced_spacing, onnx=not a.no_onnx)
    for mem in m["members"]:
        nets = ", ".join(f"{k}" + (f" (ONNX, max |logit diff| {f['onnx_max_abs_diff']:.1e})"
                                   if f.get("onnx_max_abs_diff") is not None else "")
                         for k, f in mem["files"].items())
        print(f"{mem['name']}: {mem['checkpoint']} checkpoint (iteration {mem['iteration']}), networks {nets}")
    print(f"wrote {a.out} ({m['size_bytes'] / 1e6:.1f} MB); use it with `semiseg predict -m {a.out} -i IN -o OUT`")
    return 0


def register(add) -> None:
    p = add("export", "Write trained runs (an ensemble if several) into one model file: safetensors weights, "
            "ONNX graphs, plans, inference settings, label names and training summaries; `predict`, "
            "`pseudolabel` and `propagate` take it with -m.", cmd_export, "unused")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder(s); RUN@final picks a checkpoint per run")
    p.add_argument("-o", "--out", required=True, metavar="MODEL.zip", help="the model file (written atomically)")
    p.add_argument("--checkpoint", default="best", help="best (default), final, latest, or a .pt file")
    p.add_argument("--nets", nargs="+", help="only these networks of each run (default: those it predicts with)")
    p.add_argument("--step", type=float, default=None, help="sliding-window step to predict with (default: the plan's)")
    p.add_argument("--tta", action="store_true", help="predict with mirroring test-time augmentation by default")
    p.add_argument("--largest-component", action=argparse.BooleanOptionalAction, default=None,
                   help="keep each class's largest component by default (default: the steps the run chose on its "
                        "validation cases, postprocessing.json)")
    p.add_argument("--forced-spacing", type=float, nargs=3, metavar=("Z", "Y", "X"),
                   help="resample inputs to this spacing before prediction (default: the plan's)")
    p.add_argument("--no-onnx", action="store_true", help="no ONNX graphs (torch backend only; a smaller file)")

    p = add("report", "Write RUN/report.html: configuration and split, learning curves, the validation cases "
            "predicted and scored per class (sortable table), pictures of the best, median and worst case, time "
            "and memory, environment; self-contained (opens offline).", cmd_report, "unused")
    p.add_argument("run", metavar="RUN", help="a run folder (train, fit; a selftrain round folder)")
    p.add_argument("-o", "--out", metavar="FILE", help="the HTML file (default RUN/report.html)")
    p.add_argument("--no-predict", action="store_true",
                   help="skip predicting the validation cases (no table or pictures)")
