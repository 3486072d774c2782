"""Validation curves of finished runs side by side, per iteration and per minute: does a method
learn more per step but less per second? Reads each run's metrics.csv (the engine's validation
Dice on the run's grid, not the original-geometry scores of results.csv), prints every run's
validation Dice at the first run's validation iterations (linear interpolation; blank outside a
run's range) and at equal elapsed minutes, and plots both views.

Equal iterations are not equal learning rates: the engine fits its schedule to the run's budget, so
a method that makes fewer steps in the same minutes decays its learning rate faster per step. The
iteration table prints each run's learning rate beside its Dice; for a per-step comparison at the
same schedule, train the faster method with `--iterations N`, N the slower run's iterations.

    python benchmarks/compare_curves.py benchmarks/_work/runs/LA-labeled_8-3d-student-cps-s0 \\
        benchmarks/_work/runs/LA-labeled_8-3d-student-s0 -o benchmarks/curves_la8_student.png
"""
import argparse
import csv
from pathlib import Path

import numpy as np


def curve(run: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validation iterations, minutes, Dice, and the learning rate at those iterations."""
    every = list(csv.DictReader(open(run / "metrics.csv")))
    rows = [r for r in every if r.get("val_dice")]
    if not rows:
        raise SystemExit(f"{run}/metrics.csv: no validation rows")
    it = np.array([float(r["iteration"]) for r in rows])
    lr_rows = [r for r in every if r.get("lr")]
    lr = (np.interp(it, [float(r["iteration"]) for r in lr_rows], [float(r["lr"]) for r in lr_rows])
          if lr_rows else np.full(len(it), np.nan))
    return it, np.array([float(r["elapsed_s"]) / 60 for r in rows]), np.array([float(r["val_dice"]) for r in rows]), lr


def at(x: np.ndarray, y: np.ndarray, q: float, fmt: str = ".4f") -> str:
    return f"{np.interp(q, x, y):{fmt}}" if x[0] <= q <= x[-1] else ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("-o", "--out", type=Path, help="PNG of both views")
    a = ap.parse_args()
    cs = {r.name: curve(r) for r in a.runs}
    names = list(cs)
    it0, mn0 = cs[names[0]][:2]
    print("iteration | " + " | ".join(f"{n} | lr" for n in names))
    for q in it0:
        print(f"{q:.0f} | " + " | ".join(f"{at(c[0], c[2], q)} | {at(c[0], c[3], q, '.2g')}" for c in cs.values()))
    print("\nminutes | " + " | ".join(names))
    for q in mn0:
        print(f"{q:.1f} | " + " | ".join(at(c[1], c[2], q) for c in cs.values()))
    if a.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
        for n, (it, mn, d, _) in cs.items():
            ax[0].plot(it, d, marker=".", label=n)
            ax[1].plot(mn, d, marker=".", label=n)
        ax[0].set_xlabel("iteration")
        ax[1].set_xlabel("minutes")
        for x in ax:
            x.set_ylabel("validation Dice (run's grid)")
            x.grid(alpha=0.3)
        ax[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(a.out, dpi=90)
        print(f"-> {a.out}")


if __name__ == "__main__":
    main()
