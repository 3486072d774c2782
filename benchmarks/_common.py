"""Shared by the benchmark scripts: append rows to results.csv and regenerate results.md.

A row is a measurement: never edit one by hand; rerun the script instead.
"""
import csv
import datetime
import platform
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
CSV = HERE / "results.csv"
MD = HERE / "results.md"
COLUMNS = ["date", "commit", "benchmark", "dataset", "labeled", "unlabeled", "method", "networks",
           "budget_min", "iterations", "seed", "split", "dsc", "nsd", "hd95", "train_peak_rss_mb",
           "predict_s_per_case", "predict_peak_rss_mb", "wall_s", "peak_rss_mb", "machine", "notes"]


def commit() -> str:
    return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                          cwd=HERE).stdout.strip()


def machine() -> str:
    import os
    return f"{platform.machine()} {os.cpu_count()} cores"


def append_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    """Append rows (stamped with date, commit and machine) to a CSV, writing its header if new."""
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, columns, extrasaction="ignore")
        if new:
            w.writeheader()
        for r in rows:
            w.writerow({"date": datetime.date.today().isoformat(), "commit": commit(), "machine": machine(), **r})


def append_rows(rows: list[dict]) -> None:
    append_csv(CSV, COLUMNS, rows)
    write_markdown()


def write_markdown() -> None:
    rows = list(csv.DictReader(open(CSV)))
    out = ["# Benchmark results", "", "Generated from `results.csv` by `benchmarks/_common.py`; "
           "every row is a measurement made by a script in this folder.", ""]
    for bench in sorted({r["benchmark"] for r in rows}):
        sub = [r for r in rows if r["benchmark"] == bench]
        cols = [c for c in COLUMNS if any(r.get(c) for r in sub) and c not in ("benchmark",)]
        out += [f"## {bench}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(r.get(c, "") for c in cols) + " |" for r in sub]
        out.append("")
    MD.write_text("\n".join(out))
