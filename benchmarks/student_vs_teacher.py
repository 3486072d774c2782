"""The small fast student of Chen et al. 2023, against its teacher ensemble (issue 11).

Plans the dataset for a student (``semiseg plan --student``: 1.5x coarser spacing, 8 base features
on the CPU, at most 256, inference step 0.8, no TTA) in its own work folder, trains it for
``--minutes`` on the labeled subset plus the teachers' pseudo-labels (``--pseudo-labels``, a
``semiseg pseudolabel`` folder; ``--select all`` as Chen et al. 2023), then predicts the validation cases
with the student and with the teacher ensemble (``--teachers``, with ``--teacher-tta`` mirroring as
when they pseudo-labelled), each with ``semiseg predict --profile`` (seconds per case, peak RSS,
peak GPU memory on CUDA, RSS-time and CPU-time areas sampled every 0.1 s), alternating
``--repeats`` times, and scores both in the original geometry.

    python benchmarks/student_vs_teacher.py --teachers RUN --teacher-tta --pseudo-labels PL_DIR --minutes 30
"""
import argparse
import json
import shutil
import statistics

from _common import DATA, HERE, append_rows, predict_and_score, prepared_work, sh, val_images


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="LA")
    ap.add_argument("--subset", default="labeled_8")
    ap.add_argument("--teachers", nargs="+", required=True)
    ap.add_argument("--teacher-tta", action="store_true")
    ap.add_argument("--pseudo-labels", required=True)
    ap.add_argument("--select", default="all")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--predict-only", action="store_true", help="score the existing student again")
    ap.add_argument("train_args", nargs="*")
    a = ap.parse_args()
    from semiseg.utils.profile import ResourceSampler

    ds = DATA / a.dataset
    work = prepared_work(a.dataset, student=True)
    run = HERE / "_work" / "runs" / f"{a.dataset}-{a.subset}-student-s{a.seed}"
    tr = {"peak_rss_mb": float("nan")}
    if not a.predict_only:
        shutil.rmtree(run, ignore_errors=True)
        cmd = ["train", work, "-o", run, "--minutes", a.minutes, "--seed", a.seed, "--pseudo-labels", a.pseudo_labels,
               "--select", a.select, "-q", *a.train_args]
        if a.subset != "all":
            cmd += ["--labeled-list", ds / "ssl_labeled_subsets.json", "--labeled-key", a.subset]
        with ResourceSampler(interval=0.5) as s:
            sh(cmd)
        tr = s.result()
    summ = json.loads((run / "summary.json").read_text())
    imgs = val_images(a.dataset, prepared_work(a.dataset))
    res = {"student": [], "teachers": []}
    for i in range(a.repeats):
        for who in ("teachers", "student"):
            runs = a.teachers if who == "teachers" else [run]
            args = ["--tta"] if who == "teachers" and a.teacher_tta else []
            prof = HERE / "_work" / "runs" / f"{run.name}-{who}-profile{i}.csv"
            ev = predict_and_score(runs, a.dataset, imgs, HERE / "_work" / "runs" / f"{run.name}-{who}-pred", prof,
                                   predict_args=args)
            res[who].append(ev)
    med = {w: {"s": statistics.median(e["predict_s_per_case"] for e in v),
               "rss": statistics.median(e["predict_peak_rss_mb"] for e in v),
               "rss_auc": statistics.median(e["rss_auc_mb_s"] for e in v),
               "cpu_auc": statistics.median(e["cpu_util_auc"] for e in v),
               "gpu": max(e["peak_gpu_mb"] for e in v), "ev": v[-1]} for w, v in res.items()}
    t, s_ = med["teachers"], med["student"]
    teach = "+".join(r.rstrip("/").split("/")[-1] for r in a.teachers) + (" with mirroring TTA" if a.teacher_tta else "")
    plans = json.loads((run / "plans.json").read_text())
    rows = []
    for who, m in (("student", s_), ("teacher ensemble", t)):
        e = m["ev"]["mean_over_regions"]
        rows.append({"benchmark": "student_vs_teacher", "dataset": a.dataset, "labeled": summ["labeled"],
                     "unlabeled": summ["unlabeled"], "method": who,
                     "networks": (f"dynunet {plans['configurations']['3d']['features_per_stage'][0]} base features at "
                                  f"{[round(v, 2) for v in plans['target_spacing']]} mm, step "
                                  f"{plans['inference']['step']}, no TTA" if who == "student" else teach),
                     "budget_min": a.minutes if who == "student" else "", "seed": a.seed,
                     "iterations": summ["iterations"] if who == "student" else "",
                     "split": f"splits.json fold 0 val ({summ['val']} cases)",
                     "dsc": f"{e['dsc']:.4f}", "nsd": f"{e['nsd']:.4f}", "hd95": f"{e['hd95']:.2f}",
                     "train_peak_rss_mb": f"{tr['peak_rss_mb']:.0f}" if who == "student" and not a.predict_only else "",
                     "predict_s_per_case": f"{m['s']:.2f}", "predict_peak_rss_mb": f"{m['rss']:.0f}",
                     "notes": f"median of {a.repeats} alternating runs; RSS-time area {m['rss_auc']:.0f} MB s/case, "
                              f"CPU-time area {m['cpu_auc']:.1f} core s/case, peak GPU {m['gpu']:.0f} MB; "
                              + (f"student trained on {summ['labeled']} labels + {summ['pseudo_labeled']} pseudo-labels "
                                 f"({a.pseudo_labels.rstrip('/').split('/')[-1]} select {a.select}); "
                                 f"teacher/student time {t['s'] / s_['s']:.2f}x, peak RSS {t['rss'] / s_['rss']:.2f}x, "
                                 f"DSC {e['dsc'] - t['ev']['mean_over_regions']['dsc']:+.4f}; "
                                 if who == "student" else "")
                              + m["ev"]["per_class_text"]})
    append_rows(rows)
    for r in rows:
        print(r["method"], r["dsc"], r["predict_s_per_case"], r["predict_peak_rss_mb"], r["notes"])


if __name__ == "__main__":
    main()
