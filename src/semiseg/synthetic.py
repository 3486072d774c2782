"""``semiseg demo``: the whole story on an embedded synthetic dataset.

:func:`make_synthetic_dataset` writes an nnU-Net v2 raw dataset of 3D MRI-like phantoms: a body
(background tissue, zero air around it) holding three structures of very different sizes (a
large ellipsoidal organ = 1, a medium sphere = 2, a thin tube = 3), with Gaussian noise, a smooth
multiplicative bias field and a spacing that varies per case (thick and thin slices). A few cases
are labeled, most are unlabeled (no label file; their ground truth is kept outside the dataset
folder, in ``groundtruth_unlabeled/``, for benchmarks), and a ``splits.json`` names validation
cases.

:func:`run_demo` then runs semiseg end to end: check, plan, preprocess, the preprocessing round
trip of the validation labels (the ceiling a model can reach at the planned spacing), then two
short 3D trainings on the same few labeled cases, supervised and cross pseudo supervision (which
also learns from the unlabeled cases), prediction of the validation images with each, and their
evaluation in the original geometry side by side.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from .io import Geometry, write_image
from .utils import SemisegError, write_json

EXTENT_MM = (72.0, 96.0, 96.0)  # z, y, x


def phantom(rng: np.random.Generator, spacing_zyx, extent_mm=EXTENT_MM, noise: float = 12.0):
    """One phantom: (image float32 (z, y, x), label uint8 (z, y, x))."""
    shape = [int(round(e / s)) for e, s in zip(extent_mm, spacing_zyx)]
    axes = [(np.arange(n) + 0.5) * s - e / 2 for n, s, e in zip(shape, spacing_zyx, extent_mm)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    img = np.zeros(shape, np.float32)
    lab = np.zeros(shape, np.uint8)
    body = (z / 33) ** 2 + (y / 44) ** 2 + (x / 42) ** 2 <= 1
    img[body] = 100
    # 1: large organ, an ellipsoid with random size and position
    c1 = rng.uniform(-6, 6, 3) + np.array([0, -8, -10])
    r1 = rng.uniform([13, 15, 14], [18, 21, 19])
    organ = ((z - c1[0]) / r1[0]) ** 2 + ((y - c1[1]) / r1[1]) ** 2 + ((x - c1[2]) / r1[2]) ** 2 <= 1
    img[organ] = 160
    lab[organ] = 1
    # 2: medium sphere
    c2 = rng.uniform(-5, 5, 3) + np.array([0, 16, 18])
    r2 = rng.uniform(6, 9)
    sph = (z - c2[0]) ** 2 + (y - c2[1]) ** 2 + (x - c2[2]) ** 2 <= r2 ** 2
    img[sph] = 60
    lab[sph] = 2
    # 3: thin tube along z (a vessel), slightly tilted
    c3 = rng.uniform(-4, 4, 2) + np.array([18, -18])
    tilt = rng.uniform(-0.15, 0.15, 2)
    r3 = rng.uniform(2.5, 3.5)
    tube = ((y - c3[0] - tilt[0] * z) ** 2 + (x - c3[1] - tilt[1] * z) ** 2 <= r3 ** 2) & (np.abs(z) < 28)
    img[tube] = 220
    lab[tube] = 3
    # bias field: smooth multiplicative gradient in a random direction
    d = rng.normal(size=3)
    d /= np.linalg.norm(d)
    bias = np.exp(0.25 * (d[0] * z + d[1] * y + d[2] * x) / 50)
    img = img * bias + rng.normal(0, noise, shape) * body
    img[~body] = 0
    return img.astype(np.float32), lab


def make_synthetic_dataset(out: str | Path, n_labeled: int = 6, n_unlabeled: int = 14, n_val: int = 4,
                           seed: int = 0) -> Path:
    """Write the synthetic dataset into ``out`` (created; must not exist or be empty)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise SemisegError(f"{out}: exists and is not empty")
    rng = np.random.default_rng(seed)
    for sub in ("imagesTr", "labelsTr"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    gt_unl = out.parent / f"{out.name}_groundtruth_unlabeled"
    gt_unl.mkdir(parents=True, exist_ok=True)
    ids = {"labeled": [], "unlabeled": [], "val": []}
    n = 0
    for kind, count in (("labeled", n_labeled), ("val", n_val), ("unlabeled", n_unlabeled)):
        for _ in range(count):
            cid = f"PHANTOM_{n:03d}"
            n += 1
            # spacing varies: in-plane 1.0-1.6 mm, slices 1.5-4 mm (some thick-slice scans)
            sp = (float(rng.choice([1.5, 2.0, 2.5, 4.0])), *([float(rng.uniform(1.0, 1.6))] * 2))
            img, lab = phantom(rng, sp)
            geom = Geometry(tuple(reversed(sp)), tuple(float(v) for v in rng.uniform(-50, 50, 3)),
                            (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0), tuple(reversed(img.shape)))
            write_image(img, geom, out / "imagesTr" / f"{cid}_0000.nii.gz")
            target = gt_unl if kind == "unlabeled" else out / "labelsTr"
            write_image(lab, geom, target / f"{cid}.nii.gz")
            ids[kind].append(cid)
    write_json({"channel_names": {"0": "MRI"},
                "labels": {"background": 0, "organ": 1, "sphere": 2, "tube": 3},
                "numTraining": n, "file_ending": ".nii.gz", "name": "SemisegPhantoms",
                "description": "synthetic 3D phantoms written by `semiseg demo`"}, out / "dataset.json")
    write_json([{"train": ids["labeled"] + ids["unlabeled"], "val": ids["val"]}], out / "splits.json")
    return out


def run_demo(out: str | Path = "semiseg_demo", fresh: bool = True, workers: int | None = None,
             progress: bool = True, log=print, train_iterations: int = 1000, demo_labeled: int = 2,
             train_options: dict | None = None) -> dict:
    """Generate the synthetic dataset and run check -> plan -> preprocess -> train (supervised and
    CPS on ``demo_labeled`` labeled cases) -> predict -> evaluate, then one self-training round
    (the CPS pair's pseudo-labels, the best half by consensus) and a student (seed 002) trained on
    the labels and the pair's pseudo-labels, timed against the pair."""
    from .checking import check_dataset
    from .metrics import evaluate, format_table
    from .planning import plan
    from .config import TrainConfig
    from .engine import train
    from .infer import predict_folder
    from .preprocessing import preprocess, restore_label, load_case

    out = Path(out).resolve()
    if fresh and out.exists():
        if not (out / ".semiseg_demo").exists():
            raise SemisegError(f"{out}: exists and was not made by `semiseg demo`; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ".semiseg_demo").touch()
    t0 = time.time()
    times = {}
    log(f"[demo] writing the synthetic dataset into {out / 'dataset'}")
    ds = make_synthetic_dataset(out / "dataset")
    times["generate"] = time.time() - t0

    t = time.time()
    rep = check_dataset(ds, workers=workers, progress=progress)
    log(f"[demo] check: {rep.summary()}")
    if not rep.ok:
        raise SemisegError("the synthetic dataset failed its check: " + "; ".join(map(str, rep.errors[:3])))
    times["check"] = time.time() - t

    t = time.time()
    plans = plan(ds, out / "work", workers=workers, progress=progress)
    c3, c2 = plans["configurations"]["3d"], plans["configurations"]["2d"]
    log(f"[demo] plan: target spacing {plans['target_spacing']} (z, y, x) mm; "
        f"3d patch {c3['patch_size']} batch {c3['batch_size']} stages {c3['n_stages']}; "
        f"2d patch {c2['patch_size']} batch {c2['batch_size']}; "
        f"labeled {len(plans['split']['labeled'])}, unlabeled {len(plans['split']['unlabeled'])}, "
        f"val {len(plans['split']['val'])}")
    times["plan"] = time.time() - t

    t = time.time()
    counts = preprocess(out / "work", workers=workers, progress=progress)
    log(f"[demo] preprocess: {counts}")
    times["preprocess"] = time.time() - t

    t = time.time()
    rt = out / "roundtrip_val"
    for cid in plans["split"]["val"]:
        _data, seg, props = load_case(out / "work", cid)
        lab, geom = restore_label(np.asarray(seg), props)
        write_image(lab, geom, rt / f"{cid}.nii.gz")
    summary = evaluate(rt, ds / "labelsTr", tolerance=2.0, only_predicted=True, workers=workers,
                       progress=False)
    log(f"[demo] preprocessing round trip of the validation labels: mean DSC {summary['mean_over_regions']['dsc']:.4f} "
        "(the ceiling a model can reach at the planned spacing)")
    times["roundtrip"] = time.time() - t

    val_in = out / "val_images"
    val_in.mkdir(exist_ok=True)
    for cid in plans["split"]["val"]:
        shutil.copy(ds / "imagesTr" / f"{cid}_0000.nii.gz", val_in / f"{cid}_0000.nii.gz")
    labeled = plans["split"]["labeled"][:demo_labeled]
    if train_options is None:  # a small fast model, so that both trainings fit a few minutes on 2 CPU cores
        train_options = {"network_options": {"base_features": 8}, "patch_size": [16, 48, 48]}
    log(f"[demo] training on {len(labeled)} labeled cases ({', '.join(labeled)}); the other "
        f"{len(plans['split']['labeled']) + len(plans['split']['unlabeled']) - len(labeled)} training cases are "
        "unlabeled: supervised (labeled only) vs cross pseudo supervision (labeled + unlabeled), "
        f"{train_iterations} iterations each")
    results = {}

    def demo_config(method: str = "supervised", **extra) -> TrainConfig:
        return TrainConfig(**{"configuration": "3d", "method": method, "labeled": labeled,
                              "iterations": train_iterations, "val_every": max(1, train_iterations // 3), "seed": 0,
                              **(train_options or {}), **extra})

    def scored(pred) -> dict:
        return evaluate(pred, ds / "labelsTr", tolerance=2.0, only_predicted=True, workers=workers, progress=False)

    for method in ("supervised", "cps"):
        t = time.time()
        cfg = demo_config(method)
        run = out / f"run_{method}"
        s = train(out / "work", run, cfg, progress=progress)
        log(f"[demo] train {method}: {s['iterations']} iterations in {s['elapsed_s']:.0f} s "
            f"({s['seconds_per_iteration']} s/it), best validation Dice {s['best_val_dice']:.4f}")
        times[f"train_{method}"] = time.time() - t
        t = time.time()
        pred = out / f"predictions_{method}"
        r = predict_folder([str(run)], val_in, pred, profile=str(out / f"predict_profile_{method}.csv"),
                           progress=progress)
        secs = [row["seconds"] for row in r["rows"]]
        results[method] = scored(pred)
        log(f"[demo] predict {method}: {r['done']} validation cases, {sum(secs) / max(len(secs), 1):.2f} s per case; "
            "evaluation in the original geometry:")
        log(format_table(results[method]))
        times[f"predict_evaluate_{method}"] = time.time() - t
    d = {m: results[m]["mean_over_regions"]["dsc"] for m in results}
    log(f"[demo] validation DSC with {len(labeled)} labeled cases: supervised {d['supervised']:.4f}, "
        f"CPS {d['cps']:.4f} ({100 * (d['cps'] - d['supervised']):+.1f} points from the unlabeled cases)")
    summary = results["cps"]

    # self-training (seed 000): the CPS pair pseudo-labels the unlabeled cases, the half they agree on
    # most joins the labels, a fresh model trains on both
    from .selftrain import selftrain

    t = time.time()
    rows = selftrain(out / "work", out / "selftrain", demo_config(), rounds=1, select="top:0.5",
                     init_run=str(out / "run_cps"), progress=progress)
    r1 = rows[-1]
    log(f"[demo] self-training round 1: the CPS pair pseudo-labeled {r1['scored']} unlabeled cases "
        f"({r1['pseudolabel_s']:.0f} s), kept the {r1['selected']} with the highest consensus (>= "
        f"{r1['selected_score_min']:.3f}; rejected mean {r1['rejected_score_mean']:.3f}); report in "
        f"{out / 'selftrain' / 'report.png'}")
    st_run = out / "selftrain" / "round1" / "run"
    pred = out / "predictions_selftrain"
    predict_folder([str(st_run)], val_in, pred, progress=progress)
    results["selftrain"] = scored(pred)
    times["selftrain"] = time.time() - t

    # the small fast student (seed 002): coarser spacing, narrower, larger step, trained on the labels
    # plus every pseudo-label of the CPS teachers; timed against the teacher pair with mirroring
    t = time.time()
    splans = plan(ds, out / "work_student", workers=workers, progress=progress, student=True)
    preprocess(out / "work_student", workers=workers, progress=progress)
    width = max(4, ((train_options or {}).get("network_options") or {}).get("base_features", 8) // 2)
    scfg = demo_config(pseudo_labels=str(out / "selftrain" / "round1" / "pseudo"), select="all")
    scfg.network_options, scfg.patch_size = {"base_features": width}, None  # the student plan's patch
    s = train(out / "work_student", out / "run_student", scfg, progress=progress)
    prof = {}
    for who, runs, tta in (("teacher", [str(out / "run_cps")], True), ("student", [str(out / "run_student")], False)):
        pred = out / f"predictions_{who}"
        r = predict_folder(runs, val_in, pred, tta=tta, overwrite=True, profile=str(out / f"predict_profile_{who}.csv"),
                           progress=progress)
        prof[who] = (float(np.median([x["seconds"] for x in r["rows"]])), max(x["peak_rss_mb"] for x in r["rows"]))
        results[who] = scored(pred)
    times["student"] = time.time() - t
    d = {m: results[m]["mean_over_regions"]["dsc"] for m in results}
    log(f"[demo] self-training round 1 (supervised on {len(labeled)} labels + {r1['selected']} pseudo-labels): "
        f"validation DSC {d['selftrain']:.4f} (supervised {d['supervised']:.4f}, CPS {d['cps']:.4f})")
    log(f"[demo] student ({s['iterations']} iterations at {[round(v, 2) for v in splans['target_spacing']]} mm, "
        f"{width} base features, step 0.8, no TTA) vs its teacher (the CPS pair "
        f"with mirroring TTA): DSC {d['student']:.4f} vs {d['teacher']:.4f}, {prof['teacher'][0] / prof['student'][0]:.1f}x "
        f"faster ({prof['student'][0]:.2f} vs {prof['teacher'][0]:.2f} s per case), peak RSS {prof['student'][1]:.0f} vs "
        f"{prof['teacher'][1]:.0f} MB")
    times["total"] = time.time() - t0
    log(f"[demo] done in {times['total']:.1f} s; everything is under {out}")
    return {"out": str(out), "times": times, "summary": summary, "results": results, "plans": plans}
