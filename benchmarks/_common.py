"""Shared by the benchmark scripts: append rows to results.csv and regenerate results.md.

A row is a measurement: never edit one by hand; rerun the script instead.
"""
import csv
import datetime
import json
import platform
import statistics
import subprocess
import sys
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


_SPEED = []


def machine() -> str:
    """Architecture, cores, the speed index measured when the first row of this process is written
    (``semiseg.profile.conv_throughput``: GFLOP/s of a fixed 3D-convolution training step) and whether
    the CPU has native bf16 (AVX512-BF16/AMX; elsewhere bf16 is emulated, 2-2.6x slower than fp32), so
    rows from hosts or days that ran at different speeds can be told apart."""
    import os

    from semiseg.utils.device import native_bf16

    if not _SPEED:
        from semiseg.utils.profile import conv_throughput

        _SPEED.append(conv_throughput())
    return (f"{platform.machine()} {os.cpu_count()} cores, conv {_SPEED[0]:.0f} GFLOP/s, "
            f"native bf16 {'yes' if native_bf16() else 'no'}")


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


def score_columns(ev: dict, tr: dict) -> dict:
    """A row's score and cost columns from ``predict_and_score``'s result and a training's wall time
    and peak RSS."""
    return {"dsc": f"{ev['mean_over_regions']['dsc']:.4f}", "nsd": f"{ev['mean_over_regions']['nsd']:.4f}",
            "hd95": f"{ev['mean_over_regions']['hd95']:.2f}", "train_peak_rss_mb": f"{tr['peak_rss_mb']:.0f}",
            "predict_s_per_case": f"{ev['predict_s_per_case']:.2f}",
            "predict_peak_rss_mb": f"{ev['predict_peak_rss_mb']:.0f}", "wall_s": f"{tr['wall_s']:.0f}"}


def sh(args, check: bool = True, **kw):
    """Run ``semiseg ARGS`` in this interpreter (its environment: ``PYTHONPATH`` picks another
    checkout's package); exit with a message if it fails (``check=False``: return the process)."""
    p = subprocess.run([sys.executable, "-m", "semiseg", *map(str, args)], text=True, **kw)
    if check and p.returncode:
        err = f": {p.stderr.strip()[-400:]}" if isinstance(p.stderr, str) and p.stderr else ""
        sys.exit(f"semiseg {args[0]} failed with exit code {p.returncode}{err}")
    return p


def timed(args, env=None) -> dict:
    """Run ``semiseg ARGS`` under ``/usr/bin/time``: its wall seconds and its own peak RSS in MB (a
    child forked from this process would inherit this process's peak in ``ru_maxrss``, so the command
    is measured by time(1)); exits with a message if it fails."""
    import tempfile  # noqa: PLC0415 - only for timed runs
    import time  # noqa: PLC0415

    with tempfile.NamedTemporaryFile(suffix=".maxrss") as mem:
        t = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", mem.name, sys.executable, "-m", "semiseg",
                            *map(str, args)], stdout=subprocess.DEVNULL, env=env)
        wall = time.perf_counter() - t
        if p.returncode:
            sys.exit(f"semiseg {args[0]} failed with exit code {p.returncode}")
        return {"wall_s": wall, "peak_rss_mb": int(Path(mem.name).read_text().split()[-1]) / 1024}


def chromium(width: int = 1200, height: int = 900, webgl: bool = False):
    """Debian's headless Chromium through its chromedriver (selenium); ``webgl``: software WebGL2
    (SwiftShader, which Chromium 139+ only offers with --enable-unsafe-swiftshader)."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    gpu = ("--enable-unsafe-swiftshader", "--use-angle=swiftshader") if webgl else ("--disable-gpu",)
    for a in ("--headless=new", "--no-sandbox", f"--window-size={width},{height}", "--hide-scrollbars",
              "--disable-background-networking", "--disable-component-update", "--no-first-run", *gpu):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


def start_annotate(args, **popen_kw):
    """``semiseg annotate ARGS`` started as a person starts it: (process, the URL it printed, or None
    if it ended without one)."""
    import re

    p = subprocess.Popen([sys.executable, "-m", "semiseg", "annotate", *map(str, args)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, **popen_kw)
    for line in p.stdout:
        m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        if m:
            return p, m.group(1)
    return p, None


def work_dir(dataset: str, student: bool = False) -> Path:
    """benchmarks/_work/DATASET, or DATASET-student for the student plan."""
    return HERE / "_work" / (dataset + ("-student" if student else ""))


def prepared_work(dataset: str, student: bool = False) -> Path:
    """:func:`work_dir`, planned with every labeled training case of splits.json fold 0 labeled,
    and preprocessed (once)."""
    work = work_dir(dataset, student)
    if not (work / "preprocessed" / "summary.json").exists():
        sh(["plan", DATA / dataset, "-o", work, "-q", *(["--student"] if student else [])])
        sh(["preprocess", work, "-q"])
    return work


def val_images(dataset: str, work: Path) -> Path:
    """A folder of links to the validation images of the work folder's split."""
    return case_images(dataset, json.loads((work / "split.json").read_text())["val"],
                       HERE / "_work" / f"{dataset}_val_images")


def case_images(dataset: str, ids: list, folder: Path) -> Path:
    """A folder of links to the images of ``ids`` of a dataset of ../shared/data."""
    from semiseg.data.checking import load_dataset
    from semiseg.data.dataset import link_case_images

    return link_case_images(load_dataset(DATA / dataset), ids, folder)


def predict_and_score(runs: list, dataset: str, imgs: Path, pred: Path, profile: Path, tolerance: str = "2",
                      predict_args: list | None = None) -> dict:
    """``semiseg predict --profile`` the images, ``semiseg evaluate`` in the original geometry; returns
    the evaluation summary with the profile's median seconds per case and peak RSS."""
    import shutil

    shutil.rmtree(pred, ignore_errors=True)
    sh(["predict", *runs, "-i", imgs, "-o", pred, "--profile", profile, "-q", *(predict_args or [])])
    sh(["evaluate", pred, DATA / dataset / "labelsTr", "--only-predicted", "--tolerance", tolerance, "-q"],
       stdout=subprocess.DEVNULL)
    ev = json.loads((pred / "summary.json").read_text())
    prof = list(csv.DictReader(open(profile)))
    ev["predict_s_per_case"] = statistics.median(float(r["seconds"]) for r in prof)
    ev["predict_peak_rss_mb"] = max(float(r["peak_rss_mb"]) for r in prof)
    ev["rss_auc_mb_s"] = statistics.median(float(r["rss_auc_mb_s"]) for r in prof)  # FLARE areas, per case
    ev["cpu_util_auc"] = statistics.median(float(r["cpu_util_auc"]) for r in prof)
    ev["peak_gpu_mb"] = max(float(r["peak_gpu_mb"]) for r in prof)
    ev["per_class_text"] = "; ".join(f"{k} DSC {v['dsc']['mean']:.4f} NSD {v['nsd']['mean']:.4f} HD95 "
                                     f"{v['hd95']['mean']:.2f}" for k, v in ev["per_region"].items())
    return ev
