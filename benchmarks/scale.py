"""How cost grows with the number of scans: preprocess and pseudolabel of N = 20 vs 200 (vs 2000)
synthetic scans of realistic size (96 x 160 x 160, `semiseg.data.synthetic` with one spacing),
seconds per scan and peak RSS (GNU time) must stay flat; cache size per scan; pseudolabel sharded
over 2 torchrun processes vs one process (byte-identical label files, one merged scores.csv);
the training loader's memory with N cached cases. N above ``--pseudolabel-up-to`` is only planned
and preprocessed (2000 scans: about 6 GB of images and 16 GB of cache).

For each N, a raw dataset of the first N scans (hard links) is planned and preprocessed
(`semiseg plan`, `semiseg preprocess`), then a small supervised run (trained once on N = 20, 8 base features)
pseudo-labels the N scans with two members (its best and final checkpoints) and a sliding-window
step of 1.0: what is measured is how the cost per scan grows with N, not the network (on one core,
with the plan's 32 base features and 8 mirrorings a scan took over 5 minutes; with 8 base features
and mirrorings 110 s; as run, 8 s). Rows: benchmark ``scale``.

    python benchmarks/scale.py [--sizes 20,200,2000] [--workers 2] [--pseudolabel-up-to 200]
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import HERE, append_rows

SEM = [sys.executable, "-m", "semiseg"]


def timed(argv, env=None) -> tuple[float, float]:
    """(wall seconds, peak RSS MB of the largest process) of a command, by GNU time."""
    t = time.time()
    p = subprocess.run(["/usr/bin/time", "-v", *map(str, argv)], capture_output=True, text=True, env=env)
    wall = time.time() - t
    if p.returncode:
        raise SystemExit(f"{' '.join(map(str, argv))} failed: {p.stderr[-3000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1)) / 1024
    return wall, rss


def du(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def subset(src: Path, dst: Path, n: int) -> Path:
    """A raw dataset of the first n scans of src (hard links), the labeled ones first."""
    if dst.exists():
        return dst
    (dst / "imagesTr").mkdir(parents=True)
    (dst / "labelsTr").mkdir()
    meta = json.loads((src / "dataset.json").read_text())
    ids = sorted(f.name[:-12] for f in (src / "imagesTr").glob("*_0000.nii.gz"))[:n]
    for cid in ids:
        os.link(src / "imagesTr" / f"{cid}_0000.nii.gz", dst / "imagesTr" / f"{cid}_0000.nii.gz")
        if (src / "labelsTr" / f"{cid}.nii.gz").exists():
            os.link(src / "labelsTr" / f"{cid}.nii.gz", dst / "labelsTr" / f"{cid}.nii.gz")
    meta["numTraining"] = len(ids)
    (dst / "dataset.json").write_text(json.dumps(meta))
    return dst


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="20,200")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the caches (default: delete each after measuring)")
    ap.add_argument("--pseudolabel-up-to", type=int, default=200,
                    help="larger N are only planned and preprocessed (default 200)")
    a = ap.parse_args()
    from semiseg.data.synthetic import make_synthetic_dataset

    sizes = [int(v) for v in a.sizes.split(",")]
    root = HERE / "_work" / "scale"
    full = root / f"raw{max(sizes)}"
    if not (full / "dataset.json").exists():
        shutil.rmtree(full, ignore_errors=True)
        t = time.time()
        make_synthetic_dataset(full, n_labeled=8, n_unlabeled=max(sizes) - 8, n_val=0, spacing_zyx=(0.75, 0.6, 0.6))
        print(f"generated {max(sizes)} scans in {time.time() - t:.0f} s", flush=True)
    rows, single = [], {}
    run = root / "run20"
    prev = {}  # command -> (N, seconds) of the previous size

    def marginal(cmd, n, secs):
        """Seconds per added scan from the previous size to this one: start-up and the 8 labeled
        scans (dearer to preprocess) cancel, so this is what a further unlabeled scan costs."""
        last = prev.get(cmd)
        prev[cmd] = (n, secs)
        return "" if last is None else f"; marginal {(secs - last[1]) / (n - last[0]):.3f} s/scan from N={last[0]}"

    for n in sizes:
        raw = subset(full, root / f"raw_n{n}", n)
        work = root / f"work_n{n}"
        shutil.rmtree(work, ignore_errors=True)
        plan_s, plan_rss = timed(SEM + ["plan", raw, "-o", work, "-q", "--workers", a.workers])
        pre_s, pre_rss = timed(SEM + ["preprocess", work, "-q", "--workers", a.workers])
        cache = du(work / "preprocessed")
        print(f"N={n}: plan {plan_s:.1f} s ({plan_rss:.0f} MB), preprocess {pre_s:.1f} s = {pre_s / n:.2f} s/scan, "
              f"peak RSS {pre_rss:.0f} MB, cache {cache / n / 1e6:.1f} MB/scan", flush=True)
        rows.append({"benchmark": "scale", "dataset": "synthetic 96x160x160", "method": "preprocess", "labeled": 8,
                     "unlabeled": n - 8, "wall_s": round(pre_s, 1), "peak_rss_mb": round(pre_rss),
                     "notes": f"N={n} scans; {pre_s / n:.3f} s/scan ({a.workers} workers)"
                              f"{marginal('preprocess', n, pre_s)}; cache "
                              f"{cache / n / 1e6:.2f} MB/scan; plan {plan_s:.1f} s ({plan_s / n:.3f} s/scan, peak RSS "
                              f"{plan_rss:.0f} MB)"})
        if n > a.pseudolabel_up_to:
            if not a.keep:
                shutil.rmtree(work / "preprocessed", ignore_errors=True)
            append_rows(rows)
            rows = []
            continue
        if not (run / "summary.json").exists():  # the network that pseudo-labels (its quality is not measured)
            shutil.rmtree(run, ignore_errors=True)
            subprocess.run(SEM + ["train", str(work), "-o", str(run), "--iterations", "20", "-q", "--no-report",
                                  "--amp", "off", "--val-every", "0", "--base-features", "8"], check=True)
        tr_s, tr_rss = timed(SEM + ["train", work, "-o", root / f"train_n{n}", "--iterations", "10", "-q",
                                    "--no-report", "--amp", "off", "--val-every", "0"])
        shutil.rmtree(root / f"train_n{n}", ignore_errors=True)
        pl = root / f"pl_n{n}"
        shutil.rmtree(pl, ignore_errors=True)
        pl_s, pl_rss = timed(SEM + ["pseudolabel", f"{run}@best", f"{run}@final", "-i", raw / "imagesTr", "-o", pl, "--step", "1.0", "-q"])
        print(f"N={n}: pseudolabel {pl_s:.1f} s = {pl_s / n:.2f} s/scan, peak RSS {pl_rss:.0f} MB; "
              f"training 10 it with {n} cached cases: peak RSS {tr_rss:.0f} MB", flush=True)
        rows.append({"benchmark": "scale", "dataset": "synthetic 96x160x160", "method": "pseudolabel", "labeled": 8,
                     "unlabeled": n - 8, "wall_s": round(pl_s, 1), "peak_rss_mb": round(pl_rss),
                     "notes": f"N={n} scans; {pl_s / n:.3f} s/scan (one process, 2 members, step 1.0)"
                              f"{marginal('pseudolabel', n, pl_s)}; training 10 "
                              f"iterations over {n} cached cases: peak RSS {tr_rss:.0f} MB ({tr_s:.0f} s)"})
        single[n] = pl
        if n == min(sizes):  # sharded over two torchrun processes: the same files, one merged table
            pls = root / f"pl_sharded_n{n}"
            shutil.rmtree(pls, ignore_errors=True)
            sh_s, sh_rss = timed([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                  "-m", "semiseg", "pseudolabel", f"{run}@best", f"{run}@final", "-i", raw / "imagesTr", "-o", pls,
                                  "--step", "1.0", "-q"])
            labs = sorted(f.name for f in pl.glob("*.nii.gz"))
            same = [f for f in labs if (pl / f).read_bytes() == (pls / f).read_bytes()]
            import csv

            def table(p):
                return sorted(({k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(open(p))),
                              key=lambda r: r["case"])
            same_table = table(pl / "scores.csv") == table(pls / "scores.csv")
            print(f"sharded over 2 processes: {len(same)}/{len(labs)} label files byte-identical, scores.csv "
                  f"equal (seconds column aside): {same_table}; {sh_s:.1f} s", flush=True)
            rows.append({"benchmark": "scale", "dataset": "synthetic 96x160x160", "method": "pseudolabel sharded x2",
                         "labeled": 8, "unlabeled": n - 8, "wall_s": round(sh_s, 1), "peak_rss_mb": round(sh_rss),
                         "notes": f"N={n}; torchrun --nproc_per_node=2: {len(same)}/{len(labs)} label files "
                                  f"byte-identical to one process; one merged scores.csv equal to one process's "
                                  f"(seconds column aside): {same_table}; {sh_s / n:.3f} s/scan"})
        if not a.keep:
            shutil.rmtree(work / "preprocessed", ignore_errors=True)
        append_rows(rows)  # each N's rows as soon as measured
        rows = []


if __name__ == "__main__":
    main()
