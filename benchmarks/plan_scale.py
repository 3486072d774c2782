"""``semiseg plan``'s peak memory against the number of scans (200 and 2000), and whether its
statistics depend on the number of worker processes.

Writes a synthetic raw dataset of N small scans (32x64x64 voxels, 10 of them labeled; each scan its own
random intensities, so the fingerprint's samples differ per case) once per N under
``benchmarks/_work/plan_scale/``, then runs ``semiseg plan`` on it with 2 workers, and with 1 worker at
the largest N, and records the peak RSS of the whole process tree (the main process and its workers,
sampled by ``semiseg.utils.profile.ResourceSampler``) and the fingerprint's intensity statistics.
``--src DIR`` runs another checkout's ``src`` (e.g. the commit before a change, from ``git worktree add``)
for a before/after pair in one run.

    python benchmarks/plan_scale.py --sizes 200,2000
    python benchmarks/plan_scale.py --sizes 200,2000 --src /tmp/before/src --tag before
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import HERE, append_rows

ROOT = HERE / "_work" / "plan_scale"


def make(n: int) -> Path:
    """The raw dataset of n scans (written once)."""
    import SimpleITK as sitk

    ds = ROOT / f"N{n}"
    if (ds / "dataset.json").exists():
        return ds
    shutil.rmtree(ds, ignore_errors=True)
    (ds / "imagesTr").mkdir(parents=True)
    (ds / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    z, y, x = np.meshgrid(np.arange(32), np.arange(64), np.arange(64), indexing="ij")
    for i in range(n):
        img = rng.normal(100 + 20 * rng.random(), 15, (32, 64, 64)).astype(np.float32)
        lab = (((z - 16) ** 2 + (y - 32) ** 2 + (x - 32) ** 2) < (8 + i % 5) ** 2).astype(np.uint8)
        img[lab > 0] += 80
        im = sitk.GetImageFromArray(img)
        im.SetSpacing((1.0, 1.0, 2.0))
        sitk.WriteImage(im, str(ds / "imagesTr" / f"S_{i:05d}_0000.nii.gz"))
        if i < 10:
            lb = sitk.GetImageFromArray(lab)
            lb.CopyInformation(im)
            sitk.WriteImage(lb, str(ds / "labelsTr" / f"S_{i:05d}.nii.gz"))
    (ds / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "x": 1},
                                                 "numTraining": n, "file_ending": ".nii.gz", "name": f"Scale{n}"}))
    return ds


def plan_once(ds: Path, workers: int, src: str | None) -> dict:
    from semiseg.utils.profile import ResourceSampler

    out = ROOT / f"work-{ds.name}-w{workers}"
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=src) if src else None
    t = time.time()
    with ResourceSampler(interval=0.2) as s:
        p = subprocess.run([sys.executable, "-m", "semiseg", "plan", str(ds), "-o", str(out), "-q", "--workers",
                            str(workers)], env=env, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"plan failed: {p.stderr[-2000:]}")
    plans = json.loads((out / "plans.json").read_text())
    fp = out / "fingerprint.json"
    fpj = json.loads(fp.read_text()) if fp.exists() else plans.get("fingerprint", {})
    inten = fpj.get("intensity") or plans.get("intensity") or []
    return {"wall_s": time.time() - t, "peak_rss_mb": s.result()["peak_rss_mb"], "intensity": inten}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="200,2000")
    ap.add_argument("--src", help="PYTHONPATH of the semiseg to run (another checkout's src)")
    ap.add_argument("--tag", default="", help="a word for the rows' notes (e.g. before)")
    a = ap.parse_args()
    sizes = [int(x) for x in a.sizes.split(",")]
    rows = []
    for n in sizes:
        ds = make(n)
        runs = [2] + ([1] if n == max(sizes) else [])
        for w in runs:
            r = plan_once(ds, w, a.src)
            stats = json.dumps(r["intensity"])[:400]
            print(f"N={n} workers={w}: peak RSS {r['peak_rss_mb']:.0f} MB, {r['wall_s']:.0f} s; {stats}", flush=True)
            rows.append({"benchmark": "plan_scale", "dataset": f"synthetic 32x64x64 x{n}", "labeled": 10,
                         "unlabeled": n - 10, "method": f"plan, {w} worker(s)", "peak_rss_mb": f"{r['peak_rss_mb']:.0f}",
                         "wall_s": f"{r['wall_s']:.0f}",
                         "notes": f"{a.tag + '; ' if a.tag else ''}{'src ' + a.src + '; ' if a.src else ''}peak RSS "
                                  f"of the process tree; intensity statistics: {stats}"})
    append_rows(rows)


if __name__ == "__main__":
    main()
