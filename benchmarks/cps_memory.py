"""Peak memory and seconds per iteration of CPS vs supervised training, with and without the memory
option (`--cps-memory sequential`), measured side by side in one run on the same data.

Each variant trains `--iterations` iterations without validation on LA (labeled_8 subset, so CPS
has 62 unlabeled cases); peak RSS is that of the whole process tree (training process and its
data-loading worker) over the run, peak GPU memory on CUDA; seconds per iteration is the median of
the logged rates after the first `--warmup` iterations. Variants run one after the other and the
list is repeated `--repeats` times (interleaved), the median kept.

    python benchmarks/cps_memory.py
    python benchmarks/cps_memory.py --pair unetr --patch 64 80 96     # heterogeneous CNN + UNETR
    python benchmarks/cps_memory.py --student                          # on the student plan
"""
import argparse
import csv
import json
import shutil
import statistics
import subprocess
import sys

from _common import DATA, HERE, append_rows, work_dir


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="LA")
    ap.add_argument("--subset", default="labeled_8")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--pair", default=None, help="CPS partner network (default: same as net1)")
    ap.add_argument("--partner-options", default=None, help="JSON options of the partner")
    ap.add_argument("--patch", type=int, nargs="+", default=None, help="patch size for every variant")
    ap.add_argument("--student", action="store_true", help="on the student plan (train_bounds.py --student's work folder)")
    a = ap.parse_args()
    from semiseg.utils.profile import ResourceSampler

    ds = DATA / a.dataset
    work = work_dir(a.dataset, a.student)
    if not (work / "preprocessed" / "summary.json").exists():
        sys.exit(f"{work}: run benchmarks/train_bounds.py --dataset {a.dataset}{' --student' if a.student else ''} "
                 "once first (plans and preprocesses)")
    common = ["--iterations", a.iterations, "--val-every", 0, "--log-every", 2, "-q",
              "--labeled-list", ds / "ssl_labeled_subsets.json", "--labeled-key", a.subset]
    if a.patch:
        common += ["--patch-size", *a.patch]
    cps = ["--method", "cps"] + (["--partner", a.pair] if a.pair else []) + \
        (["--partner-options", a.partner_options] if a.partner_options else [])
    variants = {"supervised": ["--method", "supervised"], "cps joint": cps + ["--cps-memory", "joint"],
                "cps sequential": cps + ["--cps-memory", "sequential"]}
    got = {k: [] for k in variants}
    tmp = HERE / "_work" / "runs" / "_cps_memory"
    for rep in range(a.repeats):
        for name, extra in variants.items():
            shutil.rmtree(tmp, ignore_errors=True)
            with ResourceSampler(interval=0.2) as s:
                p = subprocess.run([sys.executable, "-m", "semiseg", "train", str(work), "-o", str(tmp),
                                    *map(str, common + extra)], capture_output=True, text=True)
            if p.returncode:
                sys.exit(f"{name}: semiseg train failed:\n{p.stderr[-2000:]}")
            rows = [r for r in csv.DictReader(open(tmp / "metrics.csv")) if int(r["iteration"]) > a.warmup]
            sit = statistics.median(1 / float(r["it_per_s"]) for r in rows)
            summ = json.loads((tmp / "summary.json").read_text())
            got[name].append({"s_it": sit, "rss": s.result()["peak_rss_mb"], "gpu": summ["peak_gpu_mb"]})
            print(f"repeat {rep}: {name}: {sit:.2f} s/it, peak RSS {got[name][-1]['rss']:.0f} MB", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("s_it", "rss", "gpu")} for k, v in got.items()}
    base = med["supervised"]
    net2 = a.pair or "dynunet"
    rows = []
    for name, m in med.items():
        rows.append({"benchmark": "cps_memory", "dataset": a.dataset, "method": name,
                     "networks": "dynunet" if name == "supervised" else f"dynunet+{net2}",
                     "iterations": a.iterations, "peak_rss_mb": f"{m['rss']:.0f}",
                     "notes": f"{m['s_it']:.2f} s/it ({m['s_it'] / base['s_it']:.2f}x supervised); peak RSS "
                              f"{m['rss'] / base['rss']:.2f}x supervised" + (f"; peak GPU {m['gpu']:.0f} MB" if m["gpu"] else "")
                              + f"; subset {a.subset}, {'student plan, ' if a.student else ''}patch {a.patch or 'plan'}, median of {a.repeats} (after "
                              f"{a.warmup} warm-up its); batch: plan's labeled (+ as many unlabeled for cps)"})
    append_rows(rows)
    for r in rows:
        print(r["method"], r["peak_rss_mb"], "MB;", r["notes"])


if __name__ == "__main__":
    main()
