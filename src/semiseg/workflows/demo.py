"""``semiseg demo``: the whole story on the embedded synthetic dataset (:mod:`semiseg.data.synthetic`).

Check, plan, preprocess, the preprocessing round trip of the validation labels (the ceiling a
model can reach at the planned spacing), two short 3D trainings on the same few labeled cases
(supervised, and cross pseudo supervision, which also learns from the unlabeled cases), prediction
and evaluation of each in the original geometry side by side, one self-training round (the CPS
pair's pseudo-labels, the best half by consensus) and a small fast student (Chen et al. 2023)
trained on the labels and the pair's pseudo-labels, timed against the pair.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from ..data.checking import check_dataset
from ..data.io import write_image
from ..data.synthetic import make_synthetic_dataset
from ..evaluation.metrics import evaluate, format_table
from ..inference.predict import predict_folder
from ..planning import plan
from ..preprocessing.cache import load_case, preprocess, restore_label
from ..training import TrainConfig, train
from ..utils import SemisegError
from .selftrain import selftrain


class Demo:
    """The demo's folder, settings and results; each stage is one method."""

    def __init__(self, out: Path, workers: int | None, progress: bool, log, iterations: int, labeled: int,
                 train_options: dict | None):
        self.out, self.workers, self.progress, self.log = out, workers, progress, log
        self.iterations, self.n_labeled = iterations, labeled
        # a small fast model, so that every training fits a few minutes on 2 CPU cores
        self.train_options = train_options if train_options is not None else \
            {"network_options": {"base_features": 8}, "patch_size": [16, 48, 48]}
        self.times: dict[str, float] = {}
        self.results: dict[str, dict] = {}

    def timed(self, name: str, fn, *args):
        t = time.time()
        r = fn(*args)
        self.times[name] = time.time() - t
        return r

    def config(self, method: str = "supervised", **extra) -> TrainConfig:
        return TrainConfig(**{"configuration": "3d", "method": method, "labeled": self.labeled,
                              "iterations": self.iterations, "val_every": max(1, self.iterations // 3), "seed": 0,
                              **self.train_options, **extra})

    def scored(self, pred) -> dict:
        return evaluate(pred, self.ds / "labelsTr", tolerance=2.0, only_predicted=True, workers=self.workers,
                        progress=False)

    # ------------------------------------------------------------------ stages
    def data(self) -> None:
        self.log(f"[demo] writing the synthetic dataset into {self.out / 'dataset'}")
        self.ds = make_synthetic_dataset(self.out / "dataset")
        rep = check_dataset(self.ds, workers=self.workers, progress=self.progress)
        self.log(f"[demo] check: {rep.summary()}")
        if not rep.ok:
            raise SemisegError("the synthetic dataset failed its check: " + "; ".join(map(str, rep.errors[:3])))
        self.plans = plans = plan(self.ds, self.out / "work", workers=self.workers, progress=self.progress)
        c3, c2 = plans["configurations"]["3d"], plans["configurations"]["2d"]
        self.log(f"[demo] plan: target spacing {plans['target_spacing']} (z, y, x) mm; "
                 f"3d patch {c3['patch_size']} batch {c3['batch_size']} stages {c3['n_stages']}; "
                 f"2d patch {c2['patch_size']} batch {c2['batch_size']}; "
                 f"labeled {len(plans['split']['labeled'])}, unlabeled {len(plans['split']['unlabeled'])}, "
                 f"val {len(plans['split']['val'])}")
        counts = preprocess(self.out / "work", workers=self.workers, progress=self.progress)
        self.log(f"[demo] preprocess: {counts}")
        self.labeled = plans["split"]["labeled"][:self.n_labeled]
        self.val_in = self.out / "val_images"
        self.val_in.mkdir(exist_ok=True)
        for cid in plans["split"]["val"]:
            shutil.copy(self.ds / "imagesTr" / f"{cid}_0000.nii.gz", self.val_in / f"{cid}_0000.nii.gz")

    def roundtrip(self) -> None:
        rt = self.out / "roundtrip_val"
        for cid in self.plans["split"]["val"]:
            _data, seg, props = load_case(self.out / "work", cid)
            lab, geom = restore_label(np.asarray(seg), props)
            write_image(lab, geom, rt / f"{cid}.nii.gz")
        self.results["roundtrip"] = s = self.scored(rt)
        self.log(f"[demo] preprocessing round trip of the validation labels: mean DSC "
                 f"{s['mean_over_regions']['dsc']:.4f} (the ceiling a model can reach at the planned spacing)")

    def train_and_score(self, method: str) -> None:
        run = self.out / f"run_{method}"
        s = self.timed(f"train_{method}", train, self.out / "work", run, self.config(method), False, self.progress)
        self.log(f"[demo] train {method}: {s['iterations']} iterations in {s['elapsed_s']:.0f} s "
                 f"({s['seconds_per_iteration']} s/it), best validation Dice {s['best_val_dice']:.4f}")
        pred = self.out / f"predictions_{method}"
        r = predict_folder([str(run)], self.val_in, pred, profile=str(self.out / f"predict_profile_{method}.csv"),
                           progress=self.progress)
        secs = [row["seconds"] for row in r["rows"]]
        self.results[method] = self.scored(pred)
        self.log(f"[demo] predict {method}: {r['done']} validation cases, {sum(secs) / max(len(secs), 1):.2f} s per "
                 "case; evaluation in the original geometry:")
        self.log(format_table(self.results[method]))

    def selftraining(self) -> dict:
        """The CPS pair pseudo-labels the unlabeled cases, the half they agree on most joins the
        labels, a fresh model trains on both (Pham et al. 2022)."""
        rows = selftrain(self.out / "work", self.out / "selftrain", self.config(), rounds=1, select="top:0.5",
                         init_run=str(self.out / "run_cps"), progress=self.progress)
        r1 = rows[-1]
        self.log(f"[demo] self-training round 1: the CPS pair pseudo-labeled {r1['scored']} unlabeled cases "
                 f"({r1['pseudolabel_s']:.0f} s), kept the {r1['selected']} with the highest consensus (>= "
                 f"{r1['selected_score_min']:.3f}; rejected mean {r1['rejected_score_mean']:.3f}); report in "
                 f"{self.out / 'selftrain' / 'report.png'}")
        pred = self.out / "predictions_selftrain"
        predict_folder([str(self.out / "selftrain" / "round1" / "run")], self.val_in, pred, progress=self.progress)
        self.results["selftrain"] = self.scored(pred)
        return r1

    def student(self) -> tuple[dict, dict, int, dict]:
        """Coarser spacing, narrower, larger step (Chen et al. 2023), trained on the labels plus every
        pseudo-label of the CPS teachers; timed against the teacher pair with mirroring."""
        splans = plan(self.ds, self.out / "work_student", workers=self.workers, progress=self.progress, student=True)
        preprocess(self.out / "work_student", workers=self.workers, progress=self.progress)
        width = max(4, (self.train_options.get("network_options") or {}).get("base_features", 8) // 2)
        scfg = self.config(pseudo_labels=str(self.out / "selftrain" / "round1" / "pseudo"), select="all")
        scfg.network_options, scfg.patch_size = {"base_features": width}, None  # the student plan's patch
        s = train(self.out / "work_student", self.out / "run_student", scfg, progress=self.progress)
        prof = {}
        for who, runs, tta in (("teacher", [str(self.out / "run_cps")], True),
                               ("student", [str(self.out / "run_student")], False)):
            pred = self.out / f"predictions_{who}"
            r = predict_folder(runs, self.val_in, pred, tta=tta, overwrite=True,
                               profile=str(self.out / f"predict_profile_{who}.csv"), progress=self.progress)
            prof[who] = (float(np.median([x["seconds"] for x in r["rows"]])), max(x["peak_rss_mb"] for x in r["rows"]))
            self.results[who] = self.scored(pred)
        return s, splans, width, prof

    def dsc(self) -> dict[str, float]:
        return {m: r["mean_over_regions"]["dsc"] for m, r in self.results.items()}


def run_demo(out: str | Path = "semiseg_demo", fresh: bool = True, workers: int | None = None,
             progress: bool = True, log=print, train_iterations: int = 1000, demo_labeled: int = 2,
             train_options: dict | None = None) -> dict:
    """Generate the synthetic dataset and run the whole pipeline on it (see the module docstring).
    Returns the output folder, the seconds of each stage, and every model's evaluation summary."""
    out = Path(out).resolve()
    if fresh and out.exists():
        if not (out / ".semiseg_demo").exists():
            raise SemisegError(f"{out}: exists and was not made by `semiseg demo`; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ".semiseg_demo").touch()
    t0 = time.time()
    d = Demo(out, workers, progress, log, train_iterations, demo_labeled, train_options)
    d.timed("data", d.data)
    d.timed("roundtrip", d.roundtrip)
    log(f"[demo] training on {len(d.labeled)} labeled cases ({', '.join(d.labeled)}); the other "
        f"{len(d.plans['split']['labeled']) + len(d.plans['split']['unlabeled']) - len(d.labeled)} training cases "
        "are unlabeled: supervised (labeled only) vs cross pseudo supervision (labeled + unlabeled), "
        f"{train_iterations} iterations each")
    for method in ("supervised", "cps"):
        d.train_and_score(method)
    dsc = d.dsc()
    log(f"[demo] validation DSC with {len(d.labeled)} labeled cases: supervised {dsc['supervised']:.4f}, "
        f"CPS {dsc['cps']:.4f} ({100 * (dsc['cps'] - dsc['supervised']):+.1f} points from the unlabeled cases)")
    r1 = d.timed("selftrain", d.selftraining)
    s, splans, width, prof = d.timed("student", d.student)
    dsc = d.dsc()
    log(f"[demo] self-training round 1 (supervised on {len(d.labeled)} labels + {r1['selected']} pseudo-labels): "
        f"validation DSC {dsc['selftrain']:.4f} (supervised {dsc['supervised']:.4f}, CPS {dsc['cps']:.4f})")
    log(f"[demo] student ({s['iterations']} iterations at {[round(v, 2) for v in splans['target_spacing']]} mm, "
        f"{width} base features, step 0.8, no TTA) vs its teacher (the CPS pair with mirroring TTA): DSC "
        f"{dsc['student']:.4f} vs {dsc['teacher']:.4f}, {prof['teacher'][0] / prof['student'][0]:.1f}x faster "
        f"({prof['student'][0]:.2f} vs {prof['teacher'][0]:.2f} s per case), peak RSS {prof['student'][1]:.0f} vs "
        f"{prof['teacher'][1]:.0f} MB")
    d.times["total"] = time.time() - t0
    log(f"[demo] done in {d.times['total']:.1f} s; everything is under {out}")
    return {"out": str(out), "times": d.times, "summary": d.results["cps"], "results": d.results,
            "plans": d.plans, "iterations": {"student": s["iterations"]}, "selftrain": r1}
