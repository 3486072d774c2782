"""A run's log: ``log.txt`` lines, ``metrics.csv`` rows (columns fixed by the first row) and
``progress.png`` (losses, validation Dice, learning rate, speed), written by rank 0 only."""
from __future__ import annotations

import csv
import time
from pathlib import Path

from ..utils import atomic_path


class RunLog:
    """log.txt lines, metrics.csv rows (columns fixed by the first row) and progress.png."""

    def __init__(self, run: Path, rank: int, class_names: list[str], bar=None):
        self.run, self.rank, self.names, self.bar = run, rank, class_names, bar
        self.rows: list[dict] = []
        self.columns: list[str] | None = None
        self.last_plot = 0.0

    def log(self, msg: str) -> None:
        if self.rank:
            return
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}"
        with open(self.run / "log.txt", "a") as f:
            f.write(line + "\n")
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def reload(self, upto_iteration: int) -> None:
        """On resume: keep the rows up to the checkpoint, rewrite metrics.csv with them."""
        f = self.run / "metrics.csv"
        if not f.exists() or self.rank:
            return
        with open(f, newline="") as fh:
            r = csv.DictReader(fh)
            self.columns = r.fieldnames
            self.rows = [row for row in r if int(row["iteration"]) <= upto_iteration]
        with atomic_path(f, suffix=".csv") as tmp, open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self.columns)
            w.writeheader()
            w.writerows(self.rows)

    def row(self, r: dict) -> None:
        if self.rank:
            return
        f = self.run / "metrics.csv"
        if self.columns is None:
            losses = sorted(k for k in r if k not in ("iteration", "elapsed_s", "lr", "it_per_s")
                            and not k.startswith("val_"))
            self.columns = ["iteration", "elapsed_s", "lr", "it_per_s"] + losses + \
                ["val_dice"] + [f"val_dice_{n}" for n in self.names]
        new = not f.exists()
        with open(f, "a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        self.rows.append({k: str(v) for k, v in r.items()})

    def plot(self, force: bool = False) -> None:
        if self.rank or not self.rows or (not force and time.time() - self.last_plot < 60):
            return
        self.last_plot = time.time()
        import matplotlib  # noqa: PLC0415 - heavy, only when a plot is due

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415

        def series(key):
            pts = [(float(r["iteration"]), float(r[key])) for r in self.rows if r.get(key) not in (None, "", "nan")]
            return ([p[0] for p in pts], [p[1] for p in pts]) if pts else ([], [])

        scalars = [k for k in (self.columns or []) if k not in ("iteration", "elapsed_s", "lr", "it_per_s")
                   and not k.startswith("val_")]
        others = [k for k in scalars if not k.startswith("loss")]  # e.g. CPS lambda and agreement
        fig, ax = plt.subplots(2, 3 if others else 2, figsize=(16 if others else 11, 7), squeeze=False)
        for k in scalars:
            if k.startswith("loss"):
                ax[0, 0].plot(*series(k), label=k)
        ax[0, 0].set_title("training losses")
        ax[0, 0].legend(fontsize=7)
        if others:
            for k in others:
                ax[0, 2].plot(*series(k), label=k)
            ax[0, 2].set_title("method: " + ", ".join(others))
            ax[0, 2].legend(fontsize=7)
            ax[1, 2].axis("off")
        ax[0, 1].plot(*series("val_dice"), "o-", label="mean")
        for n in self.names if len(self.names) > 1 else []:
            ax[0, 1].plot(*series(f"val_dice_{n}"), ".--", label=n)
        ax[0, 1].set_title("validation Dice")
        ax[0, 1].legend(fontsize=7)
        ax[1, 0].plot(*series("lr"))
        ax[1, 0].set_title("learning rate")
        ax[1, 1].plot(*series("it_per_s"))
        ax[1, 1].set_title("iterations per second")
        for a in ax.flat:
            a.set_xlabel("iteration")
        fig.tight_layout()
        with atomic_path(self.run / "progress.png", suffix=".png") as tmp:
            fig.savefig(tmp, dpi=80)
        plt.close(fig)
