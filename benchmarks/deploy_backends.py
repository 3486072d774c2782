"""CPU inference backends side by side: torch vs ONNX Runtime vs OpenVINO on the LA validation cases.

For each model (a default-plan run and a student-plan run), export it once (``semiseg export``),
then run ``semiseg predict -m MODEL.zip --backend B`` on the 10 validation images, the backends
interleaved over ``--rounds`` rounds in one process tree so that they share the machine's state.
Reports, per model and backend: seconds per case with start-up included (whole command wall / cases,
median over rounds), peak RSS of the command (GNU time), validation DSC, the fraction of voxels whose label
differs from the torch path, the largest probability difference on one case against torch in
float32 and torch with the default mixed precision, and the per-stage seconds (read, preprocess,
network, blend, resample, argmax, write; start-up = wall - sum of cases).

With ``--baseline-src SRC`` (the ``src`` folder of another checkout, e.g. a worktree of the commit
before these backends), that code's ``semiseg predict RUN`` (torch, from the run folder) is timed
in the same rounds as ``baseline``: the torch path as it was.

Rows go to results.csv (benchmark ``deploy_backend``) and the table to deploy_backends.md.

    python benchmarks/deploy_backends.py [--default RUN] [--student RUN] [--rounds 3] [--baseline-src SRC]

Without --default/--student, runs trained here are used (benchmarks/_work/runs/LA-deploy-default,
an LA-8 student fit run), trained for 8 minutes when absent.
"""
import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from _common import DATA, HERE, append_rows, prepared_work, sh, timed, val_images

BACKENDS = ["torch", "onnxruntime", "openvino"]
STAGES = ["read_s", "preprocess_s", "network_s", "blend_s", "resample_s", "argmax_s", "write_s"]


def ensure_run(run: Path | None, student: bool) -> Path:
    if run:
        return Path(run)
    runs = HERE / "_work" / "runs"
    if student:
        found = sorted(runs.glob("LA-labeled_8-3d-student-fit-offline-30min-s*"))
        found = [r for r in found if (r / "checkpoints" / "best.pt").exists()]
        if found:
            return found[0]
    r = runs / ("LA-deploy-student" if student else "LA-deploy-default")
    if not (r / "summary.json").exists():
        work = prepared_work("LA", student)
        sh(["train", work, "-o", r, "--minutes", "8", "-q", *(["--resume"] if r.exists() else [])])
    return r


def timed_predict(model: Path, backend: str, imgs: Path, out: Path, prof: Path, run: Path | None = None,
                  baseline_src: Path | None = None) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    if backend == "baseline":  # the other checkout's torch path, from the run folder
        args, env = [str(run)], dict(os.environ, PYTHONPATH=str(baseline_src))
    else:
        args, env = ["-m", str(model), "--backend", backend], None
    r = timed(["predict", *args, "-i", imgs, "-o", out, "--profile", prof, "-q"], env=env)
    rows = list(csv.DictReader(open(prof)))
    return {"wall": r["wall_s"], "peak_rss_mb": r["peak_rss_mb"], "rows": rows,
            "cases_s": sum(float(r["seconds"]) for r in rows)}


def dsc_of(pred: Path) -> float:
    sh(["evaluate", pred, DATA / "LA" / "labelsTr", "--only-predicted", "-q"], stdout=subprocess.DEVNULL)
    return json.loads((pred / "summary.json").read_text())["mean_over_regions"]["dsc"]


def differing_fraction(a: Path, b: Path) -> float:
    from semiseg.data.io import read_image

    diff = total = 0
    for f in sorted(a.glob("*.nii.gz")):
        x, _ = read_image(f)
        y, _ = read_image(b / f.name)
        diff += int((x != y).sum())
        total += x.size
    return diff / total


def probability_differences(model: Path, imgs: Path) -> dict:
    """Largest |p - p_torch| on the first validation case, against torch fp32 and torch default amp."""
    import torch

    from semiseg.data.dataset import Case, read_case_image
    from semiseg.inference import load_models
    from semiseg.inference.predict import list_input_cases, preprocessed_for
    from semiseg.inference.sliding_window import sliding_window_probs

    cpu = torch.device("cpu")
    (ref32,) = load_models([str(model)], "best", None, cpu, "torch")
    cid, files = next(iter(list_input_cases(imgs, ref32.plans["num_input_channels"]).items()))
    image, geom = read_case_image(Case(cid, files))
    data, _ = preprocessed_for(ref32, image, geom, {})
    step = ref32.step
    p32 = sliding_window_probs(ref32.nets, data, ref32.cfg, step=step, amp="off")
    pauto = sliding_window_probs(ref32.nets, data, ref32.cfg, step=step, amp="auto")
    out = {"torch-auto": float((pauto - p32).abs().max())}
    for b in BACKENDS[1:]:
        for amp in ("off", "auto") if b == "openvino" else ("off",):
            (m,) = load_models([str(model)], "best", None, cpu, b, amp)
            p = sliding_window_probs(m.nets, data, m.cfg, step=step, amp=amp)
            out[f"{b}-{amp}"] = float((p - p32).abs().max())
            out[f"{b}-{amp}-vs-auto"] = float((p - pauto).abs().max())
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--default", type=Path, help="a default-plan LA run")
    ap.add_argument("--student", type=Path, help="a student-plan LA run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline-src", type=Path, help="src folder of another checkout: its torch path as 'baseline'")
    a = ap.parse_args()
    backends = (["baseline"] if a.baseline_src else []) + BACKENDS
    out = HERE / "_work" / "deploy"
    out.mkdir(parents=True, exist_ok=True)
    imgs = val_images("LA", prepared_work("LA"))
    n_cases = len(list(imgs.iterdir()))
    rows, table = [], []
    for kind, run in (("default", ensure_run(a.default, False)), ("student", ensure_run(a.student, True))):
        model = out / f"LA-{kind}.zip"
        t = time.perf_counter()
        sh(["export", run, "-o", model], stdout=subprocess.DEVNULL)
        export_s = time.perf_counter() - t
        size_mb = model.stat().st_size / 1e6
        res = {b: [] for b in backends}
        for rnd in range(a.rounds):
            for b in backends:
                res[b].append(timed_predict(model, b, imgs, out / f"{kind}-{b}", out / f"{kind}-{b}-r{rnd}.csv",
                                            run, a.baseline_src))
        probs = probability_differences(model, imgs)
        torch_s = statistics.median(r["wall"] for r in res["torch"]) / n_cases
        base_s = statistics.median(r["wall"] for r in res["baseline"]) / n_cases if a.baseline_src else None
        for b in backends:
            s_case = statistics.median(r["wall"] for r in res[b]) / n_cases
            rss = max(r["peak_rss_mb"] for r in res[b])
            dsc = dsc_of(out / f"{kind}-{b}")
            frac = differing_fraction(out / f"{kind}-torch", out / f"{kind}-{b}")
            last = res[b][-1]
            stages = {s: statistics.median(float(r.get(s) or "nan") for r in last["rows"]) for s in STAGES}
            startup = statistics.median(r["wall"] - r["cases_s"] for r in res[b])
            pdiff = "; ".join(f"max |p - p_torch32| {k}: {v:.2e}" for k, v in probs.items() if k.startswith(b)) \
                if b not in ("torch", "baseline") else f"max |p_auto - p_fp32| {probs['torch-auto']:.2e}"
            vs_base = f"; {base_s / s_case:.2f}x baseline" if base_s else ""
            walls = ", ".join(f"{r['wall']:.1f}" for r in res[b])
            stage_txt = ", ".join(f"{s[:-2]} {v:.3f}" for s, v in stages.items())
            rows.append({"benchmark": "deploy_backend", "dataset": "LA", "labeled": 8, "method": b,
                         "networks": f"{kind} plan ({run.name})", "split": "val", "dsc": f"{dsc:.4f}",
                         "predict_s_per_case": f"{s_case:.3f}", "predict_peak_rss_mb": f"{rss:.0f}",
                         "wall_s": f"{statistics.median(r['wall'] for r in res[b]):.1f}",
                         "notes": f"{n_cases} cases, start-up included, median of {a.rounds} interleaved rounds "
                                  f"(walls {walls}); {torch_s / s_case:.2f}x "
                                  f"torch{vs_base}; voxels differing from torch {frac:.2e}; {pdiff}; per case median s: "
                                  f"{stage_txt}; start-up {startup:.1f} s; model {size_mb:.1f} MB, export "
                                  f"{export_s:.0f} s"})
            table.append(f"| {kind} | {b} | {s_case:.3f} | {torch_s / s_case:.2f}x | "
                         f"{f'{base_s / s_case:.2f}x' if base_s else ''} | {rss:.0f} | {dsc:.4f} | "
                         f"{frac:.1e} | {startup:.1f} | " + " | ".join(f"{v:.3f}" for v in stages.values()) + " |")
        print("\n".join(table[-len(backends):]), flush=True)
    append_rows(rows)
    head = ["| model | backend | s/case (start-up incl.) | vs torch | vs baseline | peak RSS MB | DSC | voxels != torch | "
            "start-up s | " + " | ".join(s[:-2] for s in STAGES) + " |", "|" + "---|" * (9 + len(STAGES))]
    (HERE / "deploy_backends.md").write_text(
        "# CPU inference backends, LA validation (10 cases), 2 cores\n\nGenerated by `benchmarks/deploy_backends.py`;"
        " per-stage columns are median seconds per case; baseline: "
        f"{a.baseline_src or 'none'} (the torch path before the backends, from the run folder).\n\n" + "\n".join(head + table) + "\n")
    print(f"rows appended to results.csv; table in {HERE / 'deploy_backends.md'}")


if __name__ == "__main__":
    main()
