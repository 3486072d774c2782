"""Validation curves of finished runs side by side, per iteration and per minute: does a method
learn more per step but less per second? Reads each run's metrics.csv (the engine's validation
Dice on the run's grid, not the original-geometry scores of results.csv), prints every run's
validation Dice at the first run's validation iterations (linear interpolation; blank outside a
run's range) and at equal elapsed minutes, and plots both views.

    python benchmarks/compare_curves.py benchmarks/_work/runs/LA-labeled_8-3d-student-cps-s0 \\
        benchmarks/_work/runs/LA-labeled_8-3d-student-s0 -o benchmarks/curves_la8_student.png
"""
import argparse
import csv
from pathlib import Path

import numpy as np


def curve(run: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = [r for r in csv.DictReader(open(run / "metrics.csv")) if r.get("val_dice")]
    if not rows:
        raise SystemExit(f"{run}/metrics.csv: no validation rows")
    return (np.array([float(r["iteration"]) for r in rows]), np.array([float(r["elapsed_s"]) / 60 for r in rows]),
            np.array([float(r["val_dice"]) for r in rows]))


def at(x: np.ndarray, y: np.ndarray, q: float) -> str:
    return f"{np.interp(q, x, y):.4f}" if x[0] <= q <= x[-1] else ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("-o", "--out", type=Path, help="PNG of both views")
    a = ap.parse_args()
    cs = {r.name: curve(r) for r in a.runs}
    names = list(cs)
    it0, mn0, _ = cs[names[0]]
    print("iteration | " + " | ".join(names))
    for q in it0:
        print(f"{q:.0f} | " + " | ".join(at(c[0], c[2], q) for c in cs.values()))
    print("\nminutes | " + " | ".join(names))
    for q in mn0:
        print(f"{q:.1f} | " + " | ".join(at(c[1], c[2], q) for c in cs.values()))
    if a.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
        for n, (it, mn, d) in cs.items():
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
