"""``semiseg demo``: the whole story on the embedded synthetic dataset (:mod:`semiseg.data.synthetic`).

Check, plan, preprocess, the preprocessing round trip of the validation labels (the ceiling a
model can reach at the planned spacing), then the same budget twice on the same few labeled cases:
supervised training on the labels alone, and ``semiseg fit`` (its default recipe: a teacher,
pseudo-labels of the unlabeled cases, a student warm-started from the teacher on both, continuing
its learning-rate schedule). Each final model predicts the validation images, evaluated in the
original geometry side by side per structure.

The budget is in training steps (``iterations``, the same for both; fit's pseudo-labelling is not
counted), so that the demo's answer does not depend on the host's speed: a budget in seconds gave a
slow host a third of the steps of a fast one, and a teacher that never learned. The precision is
measured per run as everywhere (bf16 where it is faster, float32 where bf16 is emulated).
``minutes`` instead gives both a wall-clock budget, as ``train``/``fit`` on real data.
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
from ..planning import load_split, plan
from ..preprocessing.cache import load_case, preprocess, restore_label
from ..training import TrainConfig, train
from ..utils import SemisegError
from .fit import fit

LEARNED_DSC = 0.5  # a structure counts as learned at this validation DSC
DEMO_STEPS = 800  # training steps of each model (supervised; fit's stages together)


class Demo:
    """The demo's folder, settings and results; each stage is one method."""

    def __init__(self, out: Path, workers: int | None, progress: bool, log, minutes: float | None, labeled: int,
                 train_options: dict | None, iterations: int | None = None):
        self.out, self.workers, self.progress, self.log = out, workers, progress, log
        self.minutes, self.iterations, self.n_labeled = minutes, iterations, labeled
        # a small fast model that learns in seconds (AdamW 3e-3), so that both fit a few minutes on 2 cores
        self.train_options = train_options if train_options is not None else \
            {"network_options": {"base_features": 8}, "patch_size": [16, 48, 48], "optimizer": "adamw", "lr": 3e-3}
        self.times: dict[str, float] = {}
        self.results: dict[str, dict] = {}

    def timed(self, name: str, fn, *args):
        t = time.time()
        r = fn(*args)
        self.times[name] = time.time() - t
        return r

    def options(self) -> dict:
        return {"val_every": 50, **self.train_options}

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
        self.split = load_split(self.out / "work")
        c3, c2 = plans.configuration("3d"), plans.configuration("2d")
        self.log(f"[demo] plan: target spacing {plans.target_spacing} (z, y, x) mm; "
                 f"3d patch {c3.patch_size} batch {c3.batch_size} stages {c3.n_stages}; "
                 f"2d patch {c2.patch_size} batch {c2.batch_size}; "
                 f"labeled {len(self.split.labeled)}, unlabeled {len(self.split.unlabeled)}, "
                 f"val {len(self.split.val)}")
        counts = preprocess(self.out / "work", workers=self.workers, progress=self.progress)
        self.log(f"[demo] preprocess: {counts}")
        self.labeled = self.split.labeled[:self.n_labeled]
        self.val_in = self.out / "val_images"
        self.val_in.mkdir(exist_ok=True)
        for cid in self.split.val:
            shutil.copy(self.ds / "imagesTr" / f"{cid}_0000.nii.gz", self.val_in / f"{cid}_0000.nii.gz")

    def roundtrip(self) -> None:
        rt = self.out / "roundtrip_val"
        for cid in self.split.val:
            _data, seg, props = load_case(self.out / "work", cid)
            lab, geom = restore_label(np.asarray(seg), props)
            write_image(lab, geom, rt / f"{cid}.nii.gz")
        self.results["roundtrip"] = s = self.scored(rt)
        self.log(f"[demo] preprocessing round trip of the validation labels: mean DSC "
                 f"{s['mean_over_regions']['dsc']:.4f} (the ceiling a model can reach at the planned spacing)")

    def predict_and_score(self, name: str, run: Path) -> None:
        pred = self.out / f"predictions_{name}"
        r = predict_folder([str(run)], self.val_in, pred, profile=str(self.out / f"predict_profile_{name}.csv"),
                           progress=self.progress)
        secs = [row["seconds"] for row in r["rows"]]
        self.results[name] = self.scored(pred)
        self.log(f"[demo] predict {name}: {r['done']} validation cases, {np.median(secs):.2f} s per case; "
                 "evaluation in the original geometry:")
        self.log(format_table(self.results[name]))

    def supervised(self) -> None:
        run = self.out / "run_supervised"
        cfg = TrainConfig(**{"configuration": "3d", "labeled": self.labeled, "minutes": self.minutes,
                             "iterations": self.iterations, "seed": 0, **self.options()})
        s = train(self.out / "work", run, cfg, False, self.progress)
        self.supervised_iterations = s["iterations"]
        self.log(f"[demo] supervised: {s['iterations']} iterations in {s['elapsed_s']:.0f} s, best validation Dice "
                 f"{s['best_val_dice']:.4f}")
        self.predict_and_score("supervised", run)

    def fit(self) -> dict:
        s = fit(self.out / "work", self.out / "fit", self.minutes, iterations=self.iterations, configuration="3d",
                labeled=self.labeled, seed=0, train_options=self.options(), workers=self.workers,
                progress=self.progress, log=lambda m: self.log(f"[demo] {m}"))
        self.predict_and_score("fit", self.out / "fit")
        return s["fit"]

    def per_class(self, name: str) -> dict[str, float]:
        return {k: v["dsc"]["mean"] for k, v in self.results[name]["per_region"].items()}


def run_demo(out: str | Path = "semiseg_demo", fresh: bool = True, workers: int | None = None,
             progress: bool = True, log=print, minutes: float | None = None, demo_labeled: int = 2,
             train_options: dict | None = None, iterations: int | None = DEMO_STEPS) -> dict:
    """Generate the synthetic dataset and run the whole pipeline on it (see the module docstring):
    supervised training and ``fit``, ``iterations`` training steps each (or ``minutes`` each, when given).
    Returns the output folder, the seconds of each stage, every model's evaluation summary and the fit's
    stages."""
    if minutes is not None:
        iterations = None
    out = Path(out).resolve()
    if fresh and out.exists():
        if not (out / ".semiseg_demo").exists():
            raise SemisegError(f"{out}: exists and was not made by `semiseg demo`; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ".semiseg_demo").touch()
    t0 = time.time()
    d = Demo(out, workers, progress, log, minutes, demo_labeled, train_options, iterations)
    budget = f"{minutes:g} min" if minutes else f"{iterations} training steps"
    d.timed("data", d.data)
    d.timed("roundtrip", d.roundtrip)
    n_unl = len(d.split.labeled) + len(d.split.unlabeled) - len(d.labeled)
    log(f"[demo] {len(d.labeled)} labeled cases ({', '.join(d.labeled)}), {n_unl} unlabeled; {budget} each: "
        "supervised training on the labels alone, then `semiseg fit` on labels + unlabeled")
    d.timed("supervised", d.supervised)
    stages = d.timed("fit", d.fit)
    sup, fitd = d.per_class("supervised"), d.per_class("fit")
    log(f"[demo] validation DSC per structure, {budget} each on the same {len(d.labeled)} labeled cases:")
    log(f"[demo]   {'structure':<14} {'supervised':>10} {'fit':>8}")
    for k in sup:
        log(f"[demo]   {k:<14} {sup[k]:>10.4f} {fitd[k]:>8.4f}")
    ms, mf = (d.results[m]["mean_over_regions"]["dsc"] for m in ("supervised", "fit"))
    log(f"[demo]   {'mean':<14} {ms:>10.4f} {mf:>8.4f}  ({100 * (mf - ms):+.1f} points from {n_unl} unlabeled cases)")
    missed = [k for k, v in fitd.items() if v < LEARNED_DSC]
    log("[demo] every structure learned by the fit model (DSC >= 0.5)" if not missed else
        f"[demo] not learned in {budget} (DSC < {LEARNED_DSC}): {', '.join(missed)}; try "
        + (f"--minutes {2 * minutes:g}" if minutes else f"--iterations {2 * iterations}"))
    d.times["total"] = time.time() - t0
    log(f"[demo] done in {d.times['total']:.1f} s; everything is under {out} (the fit model: {out / 'fit'}, "
        f"semiseg predict {out / 'fit'} -i IMAGES -o PRED)")
    return {"out": str(out), "times": d.times, "results": d.results, "plans": d.plans, "fit": stages,
            "supervised_iterations": d.supervised_iterations}
