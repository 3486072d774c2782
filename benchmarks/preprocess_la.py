"""How long does `semiseg plan` + `semiseg preprocess` take on LA, and how much memory?

All 80 LA training cases (70 train + 10 val of splits.json; every one labeled), fresh work
folder, both cores, run as the CLI in a child process; wall time, peak RSS summed over the
process tree and CPU utilisation sampled every 0.1 s. Repeats 3 times, reports the median.

    python benchmarks/preprocess_la.py [--dataset LA] [--repeats 3]
"""
import argparse
import shutil
import statistics
import subprocess
import sys
import time

from _common import DATA, HERE, append_rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="LA")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    from semiseg.utils.profile import ResourceSampler

    work = HERE / "_work" / f"preprocess_{a.dataset}"
    res = {"plan": [], "preprocess": []}
    for r in range(a.repeats):
        shutil.rmtree(work, ignore_errors=True)
        for step, cmd in (("plan", ["plan", str(DATA / a.dataset), "-o", str(work), "-q"]),
                          ("preprocess", ["preprocess", str(work), "-q"])):
            with ResourceSampler() as s:
                p = subprocess.run([sys.executable, "-m", "semiseg", *cmd], capture_output=True, text=True)
            if p.returncode:
                sys.exit(p.stderr)
            m = s.result()
            res[step].append(m)
            print(step, r, {k: round(v, 2) for k, v in m.items()})
            time.sleep(1)
    n = len(list((work / "preprocessed").glob("*_seg.npy")))
    rows = []
    for step, ms in res.items():
        wall = statistics.median(m["wall_s"] for m in ms)
        rss = statistics.median(m["peak_rss_mb"] for m in ms)
        cpu = statistics.median(m.get("mean_cpu_util", 0) for m in ms)
        rows.append({"benchmark": f"{step}_time", "dataset": a.dataset, "labeled": n, "wall_s": f"{wall:.1f}",
                     "peak_rss_mb": f"{rss:.0f}",
                     "notes": f"median of {a.repeats}; mean CPU utilisation {cpu:.2f} cores; all walls "
                              + ", ".join(f"{m['wall_s']:.1f}" for m in ms)})
    append_rows(rows)
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
