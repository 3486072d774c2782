"""``semiseg report RUN``: one self-contained HTML page of what a run did and how well it does.

Sections: learning curves (``metrics.csv``); the validation cases predicted in their original
geometry and scored (DSC / NSD / HD95 per class, a sortable table); pictures of the best, median and
worst validation case (three planes through the reference object, reference and prediction
contours); seconds and memory of training and prediction; the configuration and split; the
environment.
Pictures are embedded PNGs and the table sorts with a few lines of inline script: the file opens
anywhere, offline. The validation predictions stay in ``RUN/report/`` (a rerun reuses them).
"""
from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import platform
import statistics
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from . import __version__
from .data.checking import load_dataset
from .data.dataset import link_case_images
from .data.io import read_image
from .evaluation.metrics import evaluate
from .inference.predict import predict_folder
from .nets import PROPAGATION, network_kind
from .planning import Plans
from .training.precision import describe as describe_precision
from .utils import SemisegError, atomic_path, read_json
from .utils.device import PRECISION_FILE

COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c"]


def write_report(run, out=None, predict: bool = True, progress: bool = False) -> Path:
    """Write ``RUN/report.html`` (or ``out``) and return its path. ``predict``: predict and score the
    validation cases (needs the raw dataset the plan names); without it, or without the dataset, the
    page says so and shows the rest."""
    run = Path(run)
    if not (run / "config.json").is_file():
        raise SemisegError(f"{run}: not a semiseg run folder (no config.json)")
    out = Path(out) if out else run / "report.html"
    cfg = read_json(run / "config.json", "run configuration")
    plans = Plans(read_json(run / "plans.json", "the run's plans.json"))
    split = read_json(run / "split.json", "the run's split.json") if (run / "split.json").exists() else {}
    summary = read_json(run / "summary.json", "run summary") if (run / "summary.json").exists() else {}
    val = _validation(run, plans, split, progress) if predict else {"note": "validation not predicted (--no-predict)"}
    parts = [_header(run, cfg, plans, summary), _curves(run), _val_table(val), _pictures(val, plans),
             _resources(summary, val, run), _configuration(cfg, split), _environment()]
    page = _PAGE.format(title=html.escape(f"semiseg report: {run.name}"), body="\n".join(p for p in parts if p))
    with atomic_path(out, suffix=".html") as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out


# --------------------------------------------------------------------------- sections
def _header(run, cfg, plans, summary) -> str:
    best = summary.get("best_val_dice")
    facts = [("run", str(run.resolve())), ("dataset", f"{plans.get('dataset', '?')} ({plans.get('dataset_path', '')})"),
             ("method", cfg.get("method")), ("network", f"{cfg.get('network')} ({cfg.get('configuration')})"),
             ("iterations", summary.get("iterations")),
             ("best validation Dice (training)", f"{best:.4f} at iteration {summary.get('best_iteration')}"
              if best is not None else "not finished"),
             ("semiseg", __version__)]
    return f"<h1>{html.escape(run.name)}</h1>" + _kv(facts)


def _configuration(cfg: dict, split: dict) -> str:
    flat = [(k, json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in cfg.items()
            if k not in ("labeled",)]
    sp = [(k, f"{len(v)} cases: " + ", ".join(v[:12]) + (" ..." if len(v) > 12 else ""))
          for k, v in split.items() if isinstance(v, list)]
    return "<h2>Configuration</h2>" + _kv(flat, "config") + "<h2>Split</h2>" + _kv(sp, "split")


def _curves(run: Path) -> str:
    f = run / "metrics.csv"
    if not f.exists():
        return "<h2>Learning curves</h2><p>no metrics.csv</p>"
    rows = list(csv.DictReader(open(f)))
    it = [int(r["iteration"]) for r in rows]
    fig = Figure(figsize=(10, 3.4))
    ax = fig.subplots(1, 2)
    ax[0].plot(it, [float(r["loss"]) for r in rows], lw=1)
    ax[0].set(xlabel="iteration", ylabel="training loss", title="loss")
    val_cols = [c for c in rows[0] if c.startswith("val_dice")] if rows else []
    for c in val_cols:
        pts = [(int(r["iteration"]), float(r[c])) for r in rows if r.get(c)]
        if pts:
            ax[1].plot(*zip(*pts), marker="o", ms=3, lw=1 if c != "val_dice" else 2,
                       label="mean" if c == "val_dice" else c[len("val_dice_"):])
    ax[1].set(xlabel="iteration", ylabel="validation Dice", title="validation (preprocessed grid)")
    if ax[1].get_lines():
        ax[1].legend(fontsize=8)
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    return "<h2>Learning curves</h2>" + _img(fig, "learning curves")


def _validation(run: Path, plans: Plans, split: dict, progress: bool) -> dict:
    ids = split.get("val") or []
    ds_path = Path(plans.get("dataset_path", ""))
    if not ids:
        return {"note": "the split has no validation cases"}
    rec = read_json(run / "networks.json", "the run's network record") if (run / "networks.json").exists() else {}
    if any(network_kind(v["network"]) == PROPAGATION for v in rec.get("networks", {}).values()):
        return {"note": "a mask-propagation run: it segments from annotated slices (`semiseg propagate`), so "
                        "its validation is the propagation Dice of the learning curves"}
    if not (ds_path / "imagesTr").is_dir():
        return {"note": f"the raw dataset {ds_path} is not on this machine: validation not predicted"}
    ds = load_dataset(ds_path)
    rep = run / "report"
    imgs = link_case_images(ds, ids, rep / "val_images")
    pred = rep / "val_pred"
    ckpt = "best" if (run / "checkpoints" / "best.pt").exists() else "latest"
    predict_folder([f"{run}@{ckpt}"], imgs, pred, profile=str(rep / "predict_profile.csv"), progress=progress)
    prof = list(csv.DictReader(open(rep / "predict_profile.csv"))) if (rep / "predict_profile.csv").exists() else []
    summ = evaluate(pred, ds_path / "labelsTr", dataset_json=ds_path / "dataset.json", out=rep,
                    only_predicted=True, workers=1, progress=progress)
    rows = list(csv.DictReader(open(rep / "metrics.csv")))
    return {"rows": rows, "summary": summ, "profile": prof, "pred": pred, "dataset": ds, "checkpoint": ckpt}


def _val_table(val: dict) -> str:
    if "rows" not in val:
        return f"<h2>Validation</h2><p>{html.escape(val['note'])}</p>"
    regions = list(dict.fromkeys(r["region"] for r in val["rows"]))
    cases = list(dict.fromkeys(r["case"] for r in val["rows"]))
    by = {(r["case"], r["region"]): r for r in val["rows"]}
    head = ["case", "mean DSC"] + [f"{g} {m}" for g in regions for m in ("DSC", "NSD", "HD95")]
    body = []
    for c in cases:
        ds = [_f(by[c, g]["dsc"]) for g in regions]
        cells = [c, _fmt(np.nanmean(ds))] + [_fmt(_f(by[c, g][m])) for g in regions for m in ("dsc", "nsd", "hd95")]
        body.append("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in cells) + "</tr>")
    s = val["summary"]
    means = ", ".join(f"{g} DSC {s['per_region'][g]['dsc']['mean']:.4f} NSD {s['per_region'][g]['nsd']['mean']:.4f}"
                      f" HD95 {s['per_region'][g]['hd95']['mean']:.2f} mm" for g in regions)
    return (f"<h2>Validation ({len(cases)} cases, original geometry, {val['checkpoint']} checkpoint)</h2>"
            f"<p>mean over cases: {html.escape(means)}. Click a column to sort.</p>"
            "<table class='sortable' id='cases'><thead><tr>" + "".join(f"<th>{h}</th>" for h in head)
            + "</tr></thead><tbody>" + "".join(body) + "</tbody></table>")


def _pictures(val: dict, plans: Plans) -> str:
    if "rows" not in val:
        return ""
    per_case: dict[str, list] = {}
    for r in val["rows"]:
        per_case.setdefault(r["case"], []).append(_f(r["dsc"]))
    order = sorted(per_case, key=lambda c: np.nanmean(per_case[c]))
    picks = {"worst": order[0], "median": order[len(order) // 2], "best": order[-1]}
    ds, names = val["dataset"], plans.class_names()
    out = ["<h2>Best, median and worst validation case</h2><p>reference: solid contours; prediction: dashed; "
           "one colour per class (" + ", ".join(f"<span style='color:{COLORS[i % len(COLORS)]}'>{html.escape(n)}"
                                                "</span>" for i, n in enumerate(names)) + ")</p>"]
    for what, cid in picks.items():
        img, geom = read_image(ds.cases[cid].images[0])
        ref, _ = read_image(ds.cases[cid].label)
        pred, _ = read_image(next(val["pred"].glob(f"{cid}.*")))
        fig = _three_planes(img, ref, pred, len(names), geom.spacing_zyx)
        out.append(f"<h3>{what}: {html.escape(cid)} (mean DSC {np.nanmean(per_case[cid]):.4f})</h3>"
                   + _img(fig, f"{what} case {cid}"))
    return "".join(out)


def _three_planes(img, ref, pred, n_classes: int, spacing_zyx):
    fg = np.argwhere(ref > 0)
    center = fg.mean(0).round().astype(int) if len(fg) else np.array(img.shape) // 2
    lo, hi = np.percentile(img, [0.5, 99.5])
    fig = Figure(figsize=(11, 3.8))
    ax = fig.subplots(1, 3)
    for a, axis, title in zip(ax, range(3), ("axial (z)", "coronal (y)", "sagittal (x)")):
        sl = [slice(None)] * 3
        sl[axis] = int(center[axis])
        rows, cols = [d for d in range(3) if d != axis]  # square voxels on screen: aspect = row / column spacing
        a.imshow(img[tuple(sl)], cmap="gray", vmin=lo, vmax=hi, origin="lower",
                 aspect=float(spacing_zyx[rows]) / float(spacing_zyx[cols]))
        for c in range(1, n_classes + 1):
            color = COLORS[(c - 1) % len(COLORS)]
            for m, style in ((ref, "solid"), (pred, "dashed")):
                mask = (m[tuple(sl)] == c).astype(float)
                if mask.any() and not mask.all():
                    a.contour(mask, levels=[0.5], colors=[color], linestyles=style, linewidths=1.2)
        a.set_title(f"{title} {int(center[axis])}", fontsize=9)
        a.axis("off")
    fig.tight_layout()
    return fig


def _resources(summary: dict, val: dict, run: Path) -> str:
    prec = run / PRECISION_FILE
    facts = [("precision", describe_precision(read_json(prec, "the run's precision")) if prec.exists() else
              summary.get("amp", "not recorded")),
             ("training seconds", summary.get("elapsed_s")),
             ("seconds per iteration", summary.get("seconds_per_iteration")),
             ("training peak RSS (MB)", summary.get("peak_rss_mb")),
             ("training peak GPU memory (MB)", summary.get("peak_gpu_mb")),
             ("mean CPU use (cores)", summary.get("mean_cpu_util")), ("processes", summary.get("processes"))]
    prof = val.get("profile") or []
    if prof:
        secs = [float(r["seconds"]) for r in prof]
        facts += [("prediction seconds per case (median)", f"{statistics.median(secs):.2f}"),
                  ("prediction peak RSS (MB)", f"{max(float(r['peak_rss_mb']) for r in prof):.0f}")]
    return "<h2>Time and memory</h2>" + _kv(facts)


def _environment() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    facts = [("python", platform.python_version()), ("platform", platform.platform()), ("cores", os.cpu_count()),
             ("torch", torch.__version__), ("monai", metadata.version("monai")), ("numpy", np.__version__),
             ("GPU", gpu), ("semiseg", __version__)]
    return "<h2>Environment</h2>" + _kv(facts)


# --------------------------------------------------------------------------- helpers
def _f(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _fmt(v: float) -> str:
    return "nan" if v != v else f"{v:.4f}"


def _kv(items, cls: str = "kv") -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in items
                   if v is not None)
    return f"<table class='{cls}'>{rows}</table>"


def _img(fig, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    b64 = base64.b64encode(buf.getvalue()).decode()
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{b64}'>"


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1150px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; }}
table.sortable th {{ cursor: pointer; background: #f3f3f3; }}
table.sortable td {{ font-variant-numeric: tabular-nums; }}
img {{ max-width: 100%; }}
</style></head><body>
{body}
<script>
document.querySelectorAll('table.sortable').forEach(function (t) {{
  t.querySelectorAll('th').forEach(function (th, i) {{
    th.addEventListener('click', function () {{
      var rows = Array.from(t.tBodies[0].rows);
      var asc = th.dataset.dir !== 'asc';
      rows.sort(function (a, b) {{
        var x = a.cells[i].textContent, y = b.cells[i].textContent;
        var fx = parseFloat(x), fy = parseFloat(y);
        var c = (isNaN(fx) || isNaN(fy)) ? x.localeCompare(y) : fx - fy;
        return asc ? c : -c;
      }});
      t.querySelectorAll('th').forEach(function (h) {{ delete h.dataset.dir; }});
      th.dataset.dir = asc ? 'asc' : 'desc';
      rows.forEach(function (r) {{ t.tBodies[0].appendChild(r); }});
    }});
  }});
}});
</script>
</body></html>
"""
