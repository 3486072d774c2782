"""`semiseg annotate` as a person uses it, timed: the server started on a validation case, the page
opened in headless Chromium (software WebGL2), three slices annotated, Propagate pressed, one slice
corrected, Propagate pressed again, Save pressed.

The three annotated slices are the case's reference labels on 3 slices spread uniformly over the
foreground along the run's slice axis (as ``propagation_interactive.py`` takes them), sent to the
server as the page sends a drawing; the correction puts the reference label on the slice the first
propagation got worst. Times are measured in the page, from the click on Propagate to the
returned volume drawn (``window.semiseg.lastPropagate``), and by the server around the network.
The page's drawing is checked to be the server's (checksum), then scored against the case's label
(Dice per class, the whole volume). The server's peak RSS is its VmHWM. Rows go to results.csv
(benchmark ``annotate_session``); ``--screenshot`` saves the page after the first propagation.

    python benchmarks/annotate_session.py --dataset LA --cases 5 --screenshot docs/annotate.png
    python benchmarks/annotate_session.py --dataset ACDC --run benchmarks/_work/runs/ACDC-labeled_7-stcn-s0
"""
import argparse
import gzip
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from _common import DATA, HERE, append_rows, chromium, start_annotate

CHECKSUM_JS = """
const b = window.semiseg.nv.drawBitmap; let s = 0;
for (let i = 0; i < b.length; i++) s = (s + ((i % 65521) + 1) * b[i]) % 4294967296;
return s;"""


def checksum(a: np.ndarray) -> int:
    a = a.reshape(-1).astype(np.uint64)
    return int(np.sum((np.arange(a.size, dtype=np.uint64) % 65521 + 1) * a) % (1 << 32))


def vm_hwm_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait(d, script, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        v = d.execute_script(script)
        if v:
            return v
        time.sleep(0.05)
    sys.exit(f"timed out: {script}: " + d.execute_script("return document.getElementById('status').textContent"))


def post(url, body=None, headers=None):
    req = urllib.request.Request(url, data=body if body is not None else b"", method="POST", headers=headers or {})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="LA")
    ap.add_argument("--run", type=Path, help="the STCN run (default: propagation_interactive.py's for the dataset)")
    ap.add_argument("--subset", default=None, help="the run's labeled subset, for the default run's name")
    ap.add_argument("--cases", type=int, default=5, help="validation cases (first N of the run's split)")
    ap.add_argument("--slices", type=int, default=3)
    ap.add_argument("--screenshot", type=Path, help="PNG of the page after the first propagation of the first case")
    a = ap.parse_args()

    from semiseg.annotate.session import RasView
    from semiseg.data.checking import load_dataset
    from semiseg.data.dataset import read_case_image, read_case_label
    from semiseg.evaluation.metrics import dice_per_class
    from semiseg.propagation.core import uniform_slices

    subset = a.subset or {"LA": "labeled_8", "ACDC": "labeled_7"}.get(a.dataset, "labeled_8")
    run = a.run or HERE / "_work" / "runs" / f"{a.dataset}-{subset}-stcn-s0"
    if not (run / "summary.json").exists():
        sys.exit(f"{run}: no trained STCN run; train one with propagation_interactive.py --dataset {a.dataset}")
    summ = json.loads((run / "summary.json").read_text())
    axis = json.loads((run / "config.json").read_text()).get("slice_axis", 0)
    ds = load_dataset(DATA / a.dataset)
    names = {v: k for k, v in ds.labels.items() if isinstance(v, int) and v > 0}
    val = json.loads((run / "split.json").read_text())["val"][: a.cases]
    tmp = Path(tempfile.mkdtemp(prefix="annotate_bench_"))
    per, first_s, second_s, server_s, rss, load_s, case_rows = [], [], [], [], [], [], []
    for n, cid in enumerate(val):
        case = ds.cases[cid]
        image, geom = read_case_image(case)
        gt = read_case_label(case, geom, ds.label_values).astype(np.uint8)
        view = RasView(geom)
        out = tmp / f"{cid}.nii.gz"
        t_start = time.perf_counter()
        proc, url = start_annotate([run, "-i", *case.images, "-o", out])
        if url is None:
            sys.exit(f"the server did not start for {cid}")
        d = chromium(1400, 900, webgl=True)
        try:
            d.get(url)
            wait(d, "return window.semiseg && (window.semiseg.ready || window.semiseg.errors.length)")
            load_s.append(time.perf_counter() - t_start)
            assert not d.execute_script("return window.semiseg.errors"), d.execute_script("return window.semiseg.errors")
            ks = uniform_slices(gt, a.slices, axis)
            sparse = np.zeros_like(gt)
            idx = [slice(None)] * 3
            idx[axis] = ks
            sparse[tuple(idx)] = gt[tuple(idx)]
            post(url + "api/drawing", gzip.compress(view.to_page(sparse).tobytes()), {"Content-Encoding": "gzip"})
            d.execute_script("return window.semiseg.reload()")
            wait(d, f"return window.semiseg.meta.annotated.length === {len(ks)}")
            d.execute_script(f"window.semiseg.goToSlice({view.page_index(axis, (ks[0] + ks[1]) // 2)})")
            d.find_element("id", "propagate").click()
            lp = wait(d, "return window.semiseg.lastPropagate")
            first_s.append(lp["seconds"])
            server_s.append(lp["server_seconds"])
            with urllib.request.urlopen(url + "api/labels") as r:  # urllib does not undo Content-Encoding
                body = r.read()
                pred = np.frombuffer(gzip.decompress(body) if r.headers.get("Content-Encoding") == "gzip" else body,
                                     np.uint8)
            page_sum = d.execute_script(CHECKSUM_JS)
            if page_sum != checksum(pred):
                got = np.frombuffer(bytes(d.execute_script("return Array.from(window.semiseg.nv.drawBitmap)")), np.uint8)
                diff = np.flatnonzero(got != pred)
                sys.exit(f"the page's drawing is not the server's: {page_sum} vs {checksum(pred)}; {diff.size} voxels "
                         f"differ, e.g. {diff[:5]} page {got[diff[:5]]} server {pred[diff[:5]]}")
            pred = view.from_page(pred.reshape(view.page_shape))
            dsc = dice_per_class(pred, gt, ds.num_classes)
            per.append(dsc)
            if n == 0 and a.screenshot:
                d.execute_script("document.querySelector('#views button[data-view=multiplanar]').click()")
                time.sleep(0.5)
                a.screenshot.parent.mkdir(parents=True, exist_ok=True)
                d.save_screenshot(str(a.screenshot))
            # correct the worst propagated slice with its reference label, propagate again
            other = tuple(x for x in range(3) if x != axis)
            err = np.sum(pred != gt, axis=other)
            err[ks] = -1
            worst = int(np.argmax(err))
            fixed = pred.copy()  # the propagated volume as shown, with one slice corrected
            idx[axis] = worst
            fixed[tuple(idx)] = gt[tuple(idx)]
            post(url + "api/drawing", gzip.compress(view.to_page(fixed).tobytes()), {"Content-Encoding": "gzip"})
            d.execute_script("window.semiseg.lastPropagate = null; return window.semiseg.reload()")
            wait(d, f"return window.semiseg.meta.annotated.length === {len(ks) + 1}")
            d.find_element("id", "propagate").click()
            second_s.append(wait(d, "return window.semiseg.lastPropagate")["seconds"])
            d.find_element("id", "save").click()
            wait(d, "return window.semiseg.meta.saved")
            rss.append(vm_hwm_mb(proc.pid))
            case_rows.append((cid, ks, worst, dsc))
            print(f"{cid}: slices {ks} DSC {np.nanmean(dsc):.4f}; propagate {first_s[-1]:.2f} s on the page "
                  f"(server {server_s[-1]:.2f} s), after correcting slice {worst}: {second_s[-1]:.2f} s; "
                  f"page ready {load_s[-1]:.1f} s after start; server peak RSS {rss[-1]:.0f} MB", flush=True)
        finally:
            d.quit()
            proc.terminate()
            proc.wait(10)
    arr = np.array(per)
    cls = [float(np.nanmean(arr[:, i])) for i in range(arr.shape[1])]
    case_means = np.nanmean(arr, axis=1)
    note = (f"{a.slices} annotated slices per volume (reference labels, axis {axis}, uniform over the foreground), "
            f"through the page (headless Chromium, SwiftShader WebGL2); DSC of the propagated volume, mean of "
            f"{len(per)} val cases (sd {np.std(case_means):.3f}); per class "
            + ", ".join(f"{names.get(i + 1, i + 1)} {c:.4f}" for i, c in enumerate(cls))
            + f"; click on Propagate -> volume drawn: median {statistics.median(first_s):.2f} s (max {max(first_s):.2f})"
            f", server's propagation {statistics.median(server_s):.2f} s; again after correcting one slice "
            f"{statistics.median(second_s):.2f} s; page ready {statistics.median(load_s):.1f} s after the command "
            f"started; server peak RSS {max(rss):.0f} MB; STCN {summ['iterations']} it "
            f"({summ['elapsed_s'] / 60:.0f} min) on {summ['labeled']} labeled ({run.name})")
    append_rows([{"benchmark": "annotate_session", "dataset": a.dataset, "labeled": summ["labeled"],
                  "unlabeled": "", "method": "stcn", "networks": "stcn", "budget_min": "", "iterations":
                  summ["iterations"], "seed": "", "split": f"val@{a.slices}", "dsc": round(float(np.mean(case_means)), 4),
                  "predict_s_per_case": round(statistics.median(first_s), 3), "peak_rss_mb": round(max(rss)),
                  "notes": note}])
    print(note)


if __name__ == "__main__":
    main()
