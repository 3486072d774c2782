"""Does a training killed with `kill -9` at random moments resume, finish, and match an
uninterrupted run? Are its checkpoint files ever corrupt?

On the demo's synthetic dataset (3D plan, real engine, loader process, bf16 where the CPU has it
off: fp32 for bit-comparable curves), one uninterrupted run of N iterations, then the same run
killed with SIGKILL (whole process group) at K random moments, each time checking that every
file in checkpoints/ loads with torch.load(weights_only=True), then resumed with --resume until
it finishes. Reports the largest loss difference between the two metrics.csv curves.

    python benchmarks/kill_resume.py [--iterations 40] [--kills 3] [--seed 0]
"""
import argparse
import csv
import os
import random
import shutil
import signal
import subprocess
import sys
import time

from _common import HERE, append_rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    import torch

    from semiseg.data.synthetic import make_synthetic_dataset

    root = HERE / "_work" / "kill_resume"
    shutil.rmtree(root, ignore_errors=True)
    ds = make_synthetic_dataset(root / "dataset")
    sem = [sys.executable, "-m", "semiseg"]
    subprocess.run(sem + ["plan", str(ds), "-o", str(root / "work"), "-q"], check=True, capture_output=True)
    subprocess.run(sem + ["preprocess", str(root / "work"), "-q"], check=True, capture_output=True)
    common = ["--iterations", str(a.iterations), "--val-every", "3", "--log-every", "1", "--amp", "off", "-q"]
    ref, run = root / "ref", root / "killed"
    subprocess.run(sem + ["train", str(root / "work"), "-o", str(ref)] + common, check=True, capture_output=True)

    rng = random.Random(a.seed)
    kills, corrupt, resumes = [], 0, 0
    cmd = sem + ["train", str(root / "work"), "-o", str(run)] + common
    while True:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        if len(kills) < a.kills:
            # a random moment once the run is training (start-up time varies with machine load)
            # a random moment after this process wrote a checkpoint (start-up time varies with load)
            ck = run / "checkpoints" / "latest.pt"
            started = time.time()
            while p.poll() is None and not (ck.exists() and ck.stat().st_mtime > started):
                time.sleep(0.05)
            wait = rng.uniform(0.5, 8)
            t0 = time.time()
            while p.poll() is None and time.time() - t0 < wait:
                time.sleep(0.05)
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                m = run / "metrics.csv"
                it = (len(m.read_text().splitlines()) - 1) if m.exists() else 0
                kills.append((round(wait, 2), it))
                for f in (run / "checkpoints").glob("*"):
                    try:
                        torch.load(f, weights_only=True)
                    except Exception as e:  # noqa: BLE001
                        corrupt += 1
                        print("CORRUPT", f, e)
                print(f"killed {wait:.1f} s after a new checkpoint, at iteration ~{it}; files in checkpoints/: "
                      f"{sorted(x.name for x in (run / 'checkpoints').glob('*'))}")
                cmd = sem + ["train", str(root / "work"), "-o", str(run), "--resume", "-q"] \
                    if (run / "checkpoints" / "latest.pt").exists() else \
                    sem + ["train", str(root / "work"), "-o", str(run)] + common
                if (run / "checkpoints" / "latest.pt").exists():
                    resumes += 1
                elif run.exists():  # killed before the first checkpoint: start over
                    shutil.rmtree(run)
                continue
        if p.wait() != 0:
            sys.exit(f"training failed with exit code {p.returncode}")
        break

    def curve(r):
        return {int(x["iteration"]): float(x["loss"]) for x in csv.DictReader(open(r / "metrics.csv"))}

    ca, cb = curve(ref), curve(run)
    same_its = sorted(ca) == sorted(cb) == list(range(1, a.iterations + 1))
    diff = max(abs(ca[i] - cb[i]) for i in ca) if same_its else float("nan")
    print(f"kills {kills}; resumes {resumes}; corrupt checkpoint files {corrupt}; same iterations {same_its}; "
          f"max |loss difference| {diff:.2e}")
    append_rows([{"benchmark": "kill_resume", "dataset": "synthetic demo", "iterations": a.iterations,
                  "seed": a.seed,
                  "notes": f"{len(kills)} kill -9 at (seconds after that process's first checkpoint, iteration) {kills}; {resumes} resumes; "
                           f"corrupt checkpoint files after kills: {corrupt}; finished with all {a.iterations} "
                           f"iterations logged: {same_its}; max |loss - uninterrupted loss| {diff:.2e}"}])
    if corrupt or not same_its:
        sys.exit(1)


if __name__ == "__main__":
    main()
