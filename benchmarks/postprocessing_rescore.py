"""The postprocessing choice of finished ``fit_budget.py`` runs, made again by the current code, scored.

For each run (a name under ``benchmarks/_work/runs``), the best checkpoint validates again on the
run's validation cases (training grid, as ``train`` does) to make today's choice
(:mod:`semiseg.inference.postprocessing`: the foreground's largest component when it raises the
mean Dice, then each class's on top of it), the choice is applied to the run's predictions without
postprocessing (``NAME-pred-raw``, written by ``fit_budget.py``; the same network outputs ``predict``
would postprocess) and scored in the original geometry beside the row's own (its choice when it
ran). One row per run in ``benchmarks/postprocessing_rescore.csv``.

    python benchmarks/postprocessing_rescore.py --tag 1205c-p160 1205-p160 1205b-p160
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import _common
import numpy as np
import torch

from semiseg.data.io import read_image, write_image
from semiseg.evaluation.metrics import evaluate
from semiseg.inference import postprocessing
from semiseg.inference.runs import load_run
from semiseg.inference.sliding_window import keep_largest_component
from semiseg.training.engine import validate
from semiseg.utils import read_json

HERE = Path(__file__).parent
RUNS = HERE / "_work" / "runs"
OUT = HERE / "postprocessing_rescore.csv"
COLUMNS = ["date", "commit", "machine", "run", "old_choice", "new_choice", "dsc_old", "dsc_new", "dsc_raw", "per_class_old",
           "per_class_new", "hd95_old", "hd95_new"]


def scored(pred: Path, gt: Path) -> dict:
    return evaluate(pred, gt, tolerance=2.0, only_predicted=True, workers=1, progress=False)


def per_class(ev: dict) -> str:
    return " / ".join(f"{k} {v['dsc']['mean']:.3f}" for k, v in ev["per_region"].items())


def rescore(name: str) -> dict:
    run, raw = RUNS / name, RUNS / f"{name}-pred-raw"
    fit = read_json(run / "fit.json", "fit settings")
    work, dataset = Path(fit["dataset"]), read_json(Path(fit["dataset"]) / "plans.json", "plans")["dataset_path"]
    gt = Path(dataset) / "labelsTr"
    m = load_run(run, "best", device=torch.device("cpu"))
    val = read_json(run / "split.json", "split")["val"]
    n_classes = m.plans["num_classes"]
    step = read_json(run / "config.json", "run configuration").get("val_step", 0.5)  # as the run validated
    _d, per, variants = validate(m.nets, work, val, m.cfg, n_classes, step, torch.device("cpu"))
    new = postprocessing.choose(per, variants)
    old = read_json(run / "postprocessing.json", "postprocessing")["largest_component_classes"]
    pred = RUNS / f"{name}-pred-pp"
    shutil.rmtree(pred, ignore_errors=True)
    pred.mkdir(parents=True)
    for f in sorted(raw.glob("*.nii.gz")):
        seg, geom = read_image(f)
        write_image(keep_largest_component(np.asarray(seg), postprocessing.component_classes(new, n_classes)),
                    geom, pred / f.name)
    ev_new, ev_old = scored(pred, gt), json.loads((RUNS / f"{name}-pred" / "summary.json").read_text())
    ev_raw = json.loads((raw / "summary.json").read_text())
    return {"run": name, "old_choice": json.dumps(old), "new_choice": json.dumps(new),
            "dsc_old": round(ev_old["mean_over_regions"]["dsc"], 4), "dsc_new": round(ev_new["mean_over_regions"]["dsc"], 4),
            "dsc_raw": round(ev_raw["mean_over_regions"]["dsc"], 4), "per_class_old": per_class(ev_old),
            "per_class_new": per_class(ev_new), "hd95_old": round(ev_old["mean_over_regions"]["hd95"], 2),
            "hd95_new": round(ev_new["mean_over_regions"]["hd95"], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="run names under benchmarks/_work/runs")
    ap.add_argument("--tag", nargs="*", default=[], help="every fit_budget run whose name ends with -TAG")
    a = ap.parse_args()
    names = list(a.names) + sorted(p.name for t in a.tag for p in RUNS.glob(f"*-{t}")
                                   if p.is_dir() and (RUNS / f"{p.name}-pred-raw").is_dir())
    for name in names:
        row = rescore(name)
        _common.append_csv(OUT, COLUMNS, [row])
        print(f"{name}: {row['old_choice']} {row['dsc_old']} -> {row['new_choice']} {row['dsc_new']} "
              f"(raw {row['dsc_raw']}); {row['per_class_old']} -> {row['per_class_new']}")


if __name__ == "__main__":
    main()
