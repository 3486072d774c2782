"""``kill -9`` during ``semiseg fit``'s pseudo-labelling and during its student stage, then the same
command again: it must finish with the same stages and recompute nothing that was done.

Runs ``semiseg fit WORK -o RUN --minutes M`` (the work folder of ``train_bounds.py``) in its own
process group, SIGKILLs the whole group once a few pseudo-labels are written, starts the same
command, SIGKILLs it again once the student stage has written a checkpoint, starts it a third time
and lets it finish. Then checks: the teacher's checkpoint and the pseudo-labels written before the
second kill are untouched (same modification times), the log says the finished stages were kept and
the student resumed, ``summary.json`` lists every stage done. One row in results.csv.

    python benchmarks/fit_kill.py --dataset LA --subset labeled_8 --student --minutes 6
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from _common import DATA, HERE, append_rows, prepared_work


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=open(log, "a"), stderr=subprocess.STDOUT, start_new_session=True)


def kill_when(p: subprocess.Popen, cond, what: str, timeout: float = 1800) -> float:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if p.poll() is not None:
            sys.exit(f"fit ended (exit {p.returncode}) before {what}")
        if cond():
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            print(f"kill -9 during {what} after {time.time() - t0:.0f} s", flush=True)
            return time.time() - t0
        time.sleep(0.3)
    sys.exit(f"timed out waiting for {what}")


def mtimes(folder: Path, pattern: str) -> dict:
    return {f.name: f.stat().st_mtime_ns for f in sorted(folder.glob(pattern))}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="LA")
    ap.add_argument("--subset", default="labeled_8")
    ap.add_argument("--minutes", type=float, default=6)
    ap.add_argument("--student", action="store_true")
    a = ap.parse_args()
    work = prepared_work(a.dataset, student=a.student)
    run = HERE / "_work" / "runs" / f"{a.dataset}-{a.subset}-fit-kill"
    shutil.rmtree(run, ignore_errors=True)
    log = HERE / "_work" / "runs" / f"{a.dataset}-{a.subset}-fit-kill.out"
    log.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "semiseg", "fit", str(work), "-o", str(run), "--minutes", str(a.minutes),
           "--labeled-list", str(DATA / a.dataset / "ssl_labeled_subsets.json"), "--labeled-key", a.subset]
    pl, student = run / "stages" / "1-pseudolabel", run / "stages" / "2-student"
    t0 = time.time()
    p = start(cmd, log)
    kill_when(p, lambda: len(list(pl.glob("*.nii.gz"))) >= 3, "pseudolabel")
    teacher = mtimes(run / "stages" / "0-teacher" / "checkpoints", "*.pt")
    pl_before = mtimes(pl, "*.nii.gz")
    p = start(cmd, log)
    kill_when(p, lambda: (student / "checkpoints" / "latest.pt").exists(), "student")
    pl_all = mtimes(pl, "*.nii.gz")
    p = start(cmd, log)
    rc = p.wait()
    wall = time.time() - t0
    if rc:
        sys.exit(f"the third start failed with exit code {rc}; see {log}")
    summ = json.loads((run / "summary.json").read_text())
    stages = summ["fit"]["stages"]
    text = (run / "log.txt").read_text()
    checks = {
        "stages": list(stages) == ["teacher", "pseudolabel", "student"] and all(s["done"] for s in stages.values()),
        "teacher untouched": mtimes(run / "stages" / "0-teacher" / "checkpoints", "*.pt") == teacher,
        "pseudo-labels before kill 1 untouched": all(mtimes(pl, "*.nii.gz")[k] == v for k, v in pl_before.items()),
        "pseudo-labels untouched after kill 2": mtimes(pl, "*.nii.gz") == pl_all,
        "every scan pseudo-labeled": len(pl_all) == stages["pseudolabel"]["scans"],
        "teacher kept": "teacher: finished earlier, kept" in text,
        "pseudolabel kept": "pseudolabel: finished earlier, kept" in text,
        "student resumed": "student: resuming" in text,
    }
    for k, v in checks.items():
        print(f"{'ok ' if v else 'FAILED'} {k}")
    row = {"benchmark": "fit_kill", "dataset": a.dataset, "labeled": summ["labeled"],
           "unlabeled": summ["unlabeled"] + summ.get("pseudo_labeled", 0),  # the scans fit used, as fit_budget's rows
           "method": f"fit {summ['fit']['recipe']}", "budget_min": a.minutes, "iterations": summ["iterations"],
           "split": f"splits.json fold 0 val ({summ['val']} cases)", "wall_s": f"{wall:.0f}",
           "notes": f"kill -9 (process group) during pseudolabel ({len(pl_before)} of {stages['pseudolabel']['scans']} "
                    f"scans written) and during the student (after its first checkpoint), 2 resumes; "
                    f"{sum(checks.values())}/{len(checks)} checks passed"
                    f"{'' if all(checks.values()) else ' (FAILED: ' + ', '.join(k for k, v in checks.items() if not v) + ')'}"
                    f"; used {summ['fit']['used_minutes']} of {a.minutes:g} min; final best val Dice "
                    f"{summ['best_val_dice']:.4f}"}
    append_rows([row])
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
