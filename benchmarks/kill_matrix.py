"""kill -9 at random moments across every long command, then the same command again: are the final
outputs those of an uninterrupted run, and is nothing partial ever taken as done?

On the demo's synthetic dataset (planned, preprocessed, a small supervised run and an STCN run
trained once), for each command: one uninterrupted run (the reference, timed: T seconds), then a
chain of K kills: the command is started, SIGKILLed (its whole process group) after a random
delay in (0, T), checked, and started again, until K kills have landed and a run finishes. After
each kill, every output under its final name must already be complete: a label file or a cached
array byte-identical to the reference's, a score file equal to it, a checkpoint loadable with
``torch.load(weights_only=True)``. After the last run, the outputs are compared with the
reference's (label files byte for byte, ``scores.csv`` and ``summary.json`` equal once their
seconds columns are dropped, training losses equal), and stray temporary files are counted.

``fit`` has a wall-clock budget: a killed and resumed fit spends its minutes differently, so its
weights cannot equal an uninterrupted fit's; for it the comparison is structural (the same
stages done, a final run folder whose checkpoints load and that predicts every validation case),
and after each kill every file under a final name must read whole (JSON, CSV, checkpoint, image).
The annotation server's save is killed while it writes a large label map; the output must be
absent or the complete previous save, never a torn file.

Rows: benchmark ``kill_matrix``, one per command (kills, resumes, mismatches).

    python benchmarks/kill_matrix.py [--kills 20] [--only predict,propagate] [--seed 0]
"""
import argparse
import csv
import gzip
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from _common import HERE, append_rows, sh, start_annotate

SEM = [sys.executable, "-m", "semiseg"]
TIME_KEYS = re.compile(r"(second|elapsed|_s$|created|date|time|it_per_s|rss|cpu|gpu)", re.I)


def run(args, **kw):
    return sh(args, capture_output=True, **kw)


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def strip_times(obj):
    if isinstance(obj, dict):
        return {k: strip_times(v) for k, v in obj.items() if not TIME_KEYS.search(k)}
    if isinstance(obj, list):
        return [strip_times(v) for v in obj]
    return obj


def table(p: Path) -> list:
    return [strip_times(r) for r in csv.DictReader(open(p))]


def checkpoint_ok(p: Path) -> bool:
    import torch

    try:
        torch.load(p, map_location="cpu", weights_only=True)
        return True
    except Exception:  # noqa: BLE001
        return False


def same_file(ref: Path, got: Path) -> bool:
    """Equal as the command's outputs must be: bytes for arrays and images, content without
    timings for JSON and CSV, loadable for checkpoints (their bytes hold wall-clock fields)."""
    if got.suffix == ".pt":
        return checkpoint_ok(got)
    if got.suffix == ".json":
        try:
            return strip_times(json.loads(got.read_text())) == strip_times(json.loads(ref.read_text()))
        except json.JSONDecodeError:
            return False
    if got.suffix == ".csv":
        return table(got) == table(ref)
    if got.suffix in (".png", ".txt", ".html", ".log"):
        return True  # pictures and logs carry times
    return digest(got) == digest(ref)


def complete_file(p: Path) -> bool:
    """Readable whole, for outputs that cannot equal a reference's (``fit`` spends a wall-clock
    budget): JSON and CSV parse, checkpoints load, images and arrays read."""
    try:
        if p.suffix == ".pt":
            return checkpoint_ok(p)
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".csv":
            list(csv.DictReader(open(p)))
        elif p.suffix == ".npy":
            import numpy as np

            np.load(p)
        elif p.name.endswith((".nii.gz", ".nii", ".nrrd", ".mha")):
            from semiseg.data.io import read_image

            read_image(p)
        return True
    except Exception:  # noqa: BLE001
        return False


def final_files(folder: Path) -> dict:
    """Files under their final names (temporary files of atomic writes start with '.')."""
    if not folder.exists():
        return {}
    return {p.relative_to(folder): p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")}


def strays(folder: Path) -> int:
    return sum(1 for p in folder.rglob(".*tmp*") if p.is_file()) if folder.exists() else 0


class Command:
    """``argv`` run in a fresh ``out``; ``outputs(out)`` the folder compared; ``exact``: byte/content
    equality with the reference, else the structural check ``structural(out)``."""

    def __init__(self, name, argv, out, exact=True, structural=None, env=None):
        self.name, self.argv, self.out, self.exact, self.structural, self.env = name, argv, out, exact, structural, env


def chain(cmd: Command, ref: Path, T: float, kills: int, rng: random.Random) -> dict:
    out = cmd.out
    shutil.rmtree(out, ignore_errors=True)
    landed, resumes, partial, finished_runs = 0, 0, [], 0
    env = dict(os.environ, **(cmd.env or {}))
    while True:
        p = subprocess.Popen(cmd.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             start_new_session=True, env=env)
        if landed < kills:
            delay = rng.uniform(0.05, max(0.1, T))
            t0 = time.time()
            while p.poll() is None and time.time() - t0 < delay:
                time.sleep(0.02)
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                landed += 1
                reff = final_files(ref)
                for rel, f in final_files(out).items():  # nothing partial under a final name
                    if (not complete_file(f)) if not cmd.exact else (rel in reff and not same_file(reff[rel], f)):
                        partial.append(f"{rel} after kill {landed}")
                resumes += 1
                continue
        err = p.communicate()[1]
        if p.returncode != 0:
            raise SystemExit(f"{cmd.name}: the rerun failed (exit {p.returncode}): {err[-2000:]}")
        finished_runs += 1
        if landed >= kills:
            break
        shutil.rmtree(out, ignore_errors=True)  # finished before the kill: a fresh chain
    mism = []
    reff, gotf = final_files(ref), final_files(out)
    if cmd.exact:
        mism += [f"missing {r}" for r in sorted(set(reff) - set(gotf))]
        mism += [f"extra {r}" for r in sorted(set(gotf) - set(reff))]
        mism += [f"differs {r}" for r in sorted(set(reff) & set(gotf)) if not same_file(reff[r], gotf[r])]
    else:
        mism += cmd.structural(out)
    return {"kills": landed, "resumes": resumes, "partial": partial, "mismatches": mism, "strays": strays(out),
            "fresh_chains": finished_runs - 1}


def save_kills(root: Path, img: Path, kills: int, rng: random.Random) -> dict:
    """The annotation server's Save killed mid-write: OUT is absent or a complete earlier save."""
    import numpy as np

    from semiseg.annotate.session import RasView
    from semiseg.data.io import read_image

    arr, g = read_image(img)
    view = RasView(g)
    out = root / "annot_out" / "labels.nii.gz"
    shutil.rmtree(out.parent, ignore_errors=True)
    landed, torn, good_saves, mism = 0, 0, 0, []
    for k in range(kills):
        p, url = start_annotate(["-i", img, "-o", out] + (["--labels", out] if out.exists() else []),
                                start_new_session=True)
        # a different label map each round, of random voxels: a map of two halves gzips in 0.05 s, so
        # nearly every kill landed after the rename; this one takes about a second to write
        lab = np.random.default_rng(k).integers(0, 2, arr.shape).astype(np.uint8)
        body = gzip.compress(view.to_page(lab).tobytes(), 1)
        urllib.request.urlopen(urllib.request.Request(url + "api/drawing", body, {"Content-Encoding": "gzip"}))
        t_save = time.time()
        urllib.request.urlopen(urllib.request.Request(url + "api/save", b"", method="POST")).read()
        T = time.time() - t_save
        # a second save of a changed map, killed at a random moment inside it
        lab2 = lab.copy()
        lab2[0] = 1
        urllib.request.urlopen(urllib.request.Request(url + "api/drawing", gzip.compress(view.to_page(lab2).tobytes(), 1),
                                                      {"Content-Encoding": "gzip"}))
        req = urllib.request.Request(url + "api/save", b"", method="POST")
        import threading

        threading.Thread(target=lambda: _quiet(urllib.request.urlopen, req), daemon=True).start()
        time.sleep(rng.uniform(0, T * 1.2))
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        landed += 1
        try:
            got, _ = read_image(out)
        except Exception:  # noqa: BLE001
            torn += 1
            continue
        if np.array_equal(got, lab2):
            good_saves += 1
        elif not np.array_equal(got, lab):
            mism.append(f"round {k}: the saved file is neither the last save nor the one being written")
    # the same command once more after the last kill: it continues from the file on disk and saves
    p, url = start_annotate(["-i", img, "-o", out, "--labels", out], start_new_session=True)
    urllib.request.urlopen(urllib.request.Request(url + "api/drawing", gzip.compress(view.to_page(lab2).tobytes(), 1),
                                                  {"Content-Encoding": "gzip"}))
    urllib.request.urlopen(urllib.request.Request(url + "api/save", b"", method="POST")).read()
    os.killpg(p.pid, signal.SIGTERM)
    p.wait()
    if not np.array_equal(read_image(out)[0], lab2):
        mism.append("the save after the last kill is not the drawing sent")
    return {"kills": landed, "resumes": landed, "partial": [f"torn file x{torn}"] if torn else [],
            "mismatches": mism, "strays": strays(out.parent), "fresh_chains": 0,
            "note": f"save took {T:.2f} s; {good_saves} kills landed after the rename (new file), the rest before "
                    "(previous file intact)"}


def _quiet(fn, *a):
    try:
        fn(*a)
    except Exception:  # noqa: BLE001
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--only", help="comma-separated commands (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    from semiseg.data.synthetic import make_synthetic_dataset

    root = HERE / "_work" / "kill_matrix"
    rng = random.Random(a.seed)
    ds = root / "dataset"
    if not (root / "ready").exists():
        shutil.rmtree(root, ignore_errors=True)
        make_synthetic_dataset(ds)
        run(["plan", ds, "-o", root / "work", "-q"])
        run(["preprocess", root / "work", "-q"])
        shutil.rmtree(root / "seg", ignore_errors=True)
        shutil.rmtree(root / "stcn", ignore_errors=True)
        run(["train", root / "work", "-o", root / "seg", "--iterations", 30, "--amp", "off", "-q", "--no-report",
             "--val-every", 0])
        run(["train", root / "work", "-o", root / "stcn", "--config", "2d", "--method", "stcn", "--iterations", 20,
             "-q", "--no-report", "--val-every", 0, "--method-options", '{"crop": 32}'])
        (root / "ready").write_text("")
    imgs = ds / "imagesTr"
    unl = root / "unlabeled"
    if not unl.exists():
        unl.mkdir()
        for f in sorted(imgs.iterdir())[:8]:
            os.link(f, unl / f.name)
    case = sorted(imgs.glob("*_0000.nii.gz"))[0]
    lab_file = ds / "labelsTr" / (case.name.replace("_0000", ""))
    sparse = root / "sparse.nii.gz"
    if not sparse.exists():
        import numpy as np

        from semiseg.data.io import read_image, write_image
        lab, g = read_image(lab_file)
        s = np.zeros_like(lab)
        ks = [k for k in range(lab.shape[0]) if lab[k].any()][::4]
        s[ks] = lab[ks]
        write_image(s, g, sparse)
    # the preprocessing chain works on a copy of the planned work folder without its cache
    pre_src = root / "pre_src"
    if not pre_src.exists():
        pre_src.mkdir()
        for f in ("plans.json", "fingerprint.json", "split.json"):
            if (root / "work" / f).exists():
                shutil.copy(root / "work" / f, pre_src / f)

    def fit_structural(out: Path) -> list:
        problems = []
        s = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else None
        if s is None:
            return ["no summary.json"]
        ref_s = json.loads((root / "ref_fit" / "summary.json").read_text())
        if [x.get("name", x) if isinstance(x, dict) else x for x in s.get("stages", [])] != \
                [x.get("name", x) if isinstance(x, dict) else x for x in ref_s.get("stages", [])]:
            problems.append("stages differ")
        for ck in (out / "checkpoints").glob("*.pt"):
            if not checkpoint_ok(ck):
                problems.append(f"{ck.name} does not load")
        try:
            run(["predict", out, "-i", root / "val_imgs", "-o", out.parent / "fit_pred", "-q", "--overwrite"])
        except subprocess.CalledProcessError as e:
            problems.append(f"predict failed: {e.stderr[-300:]}")
        return problems

    if not (root / "val_imgs").exists():
        (root / "val_imgs").mkdir()
        for f in sorted(imgs.iterdir())[-2:]:
            os.link(f, root / "val_imgs" / f.name)

    def pre_cmd(out):  # preprocess writes into the work folder it is given: a fresh copy per chain
        return Command("preprocess", ["bash", "-c", f"mkdir -p {out} && cp -n {pre_src}/* {out}/ && "
                                      f"{' '.join(SEM)} preprocess {out} -q"], out)

    cmds = {
        "preprocess": pre_cmd(root / "k_pre"),
        "predict": Command("predict", SEM + ["predict", str(root / "seg"), "-i", str(unl), "-o", str(root / "k_pred"),
                                             "-q"], root / "k_pred"),
        "pseudolabel": Command("pseudolabel", SEM + ["pseudolabel", str(root / "seg"), "-i", str(unl), "-o",
                                                     str(root / "k_pl"), "--tta-members", "-q"], root / "k_pl"),
        "pseudolabel-sharded": Command("pseudolabel-sharded", [sys.executable, "-m", "torch.distributed.run",
                                       "--standalone", "--nproc_per_node=2", "-m", "semiseg", "pseudolabel",
                                       str(root / "seg"), "-i", str(unl), "-o", str(root / "k_pls"),
                                       "--tta-members", "-q"], root / "k_pls"),
        "propagate": Command("propagate", SEM + ["propagate", str(root / "stcn"), "-i", str(case), "--labels",
                                                str(sparse), "-o", str(root / "k_prop" / "full.nii.gz"), "-q"],
                             root / "k_prop"),
        "selftrain": Command("selftrain", SEM + ["selftrain", str(root / "work"), "-o", str(root / "k_st"),
                                                "--init-run", str(root / "seg"), "--rounds", "1", "--iterations", "6",
                                                "--base-features", "8", "--pl-step", "1.0", "--val-every", "0",
                                                "--amp", "off", "-q", "--no-report"],
                             root / "k_st"),
        "fit": Command("fit", SEM + ["fit", str(ds), "-o", str(root / "k_fit"), "--minutes", "1.5", "-q",
                                     "--no-report"], root / "k_fit", exact=False, structural=fit_structural),
    }
    only = a.only.split(",") if a.only else list(cmds) + ["annotate-save"]
    rows = []
    for name in only:
        t0 = time.time()
        if name == "annotate-save":
            big = root / "big.nii.gz"
            if not big.exists():
                import numpy as np

                from semiseg.data.io import Geometry, write_image
                rngn = np.random.default_rng(0)
                write_image(rngn.integers(0, 200, (160, 256, 256)).astype(np.int16),
                            Geometry((0.8, 0.8, 1.5), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (256, 256, 160)), big)
            r = save_kills(root, big, a.kills, rng)
        else:
            cmd = cmds[name]
            ref = root / f"ref_{name}"
            if not ref.exists():
                shutil.rmtree(cmd.out, ignore_errors=True)
                t = time.time()
                p = subprocess.run(cmd.argv, capture_output=True, text=True)
                if p.returncode:
                    raise SystemExit(f"{name}: reference run failed: {p.stderr[-2000:]}")
                (cmd.out).rename(ref)
                (ref / ".T").write_text(str(time.time() - t))
            T = float((ref / ".T").read_text())
            r = chain(cmd, ref, T, a.kills, rng)
            r["note"] = f"uninterrupted run {T:.1f} s"
        print(f"{name}: kills {r['kills']}, resumes {r['resumes']}, partial outputs taken as done "
              f"{len(r['partial'])}, mismatches {len(r['mismatches'])}, stray temporary files {r['strays']} "
              f"({time.time() - t0:.0f} s) {r['partial'][:3]} {r['mismatches'][:5]}", flush=True)
        rows.append({"benchmark": "kill_matrix", "dataset": "synthetic demo", "method": name,
                     "seed": a.seed, "wall_s": round(time.time() - t0),
                     "notes": f"kills {r['kills']}; resumes {r['resumes']}; partial outputs found under a final name "
                              f"after a kill {len(r['partial'])}; mismatches with the uninterrupted run "
                              f"{len(r['mismatches'])}{' (structural: wall-clock budget)' if name == 'fit' else ''}; "
                              f"stray temporary files {r['strays']}; {r.get('note', '')}"
                              + (f"; first: {(r['partial'] + r['mismatches'])[:3]}" if r['partial'] or r['mismatches'] else "")})
        append_rows(rows[-1:])  # each command's row as soon as it is measured


if __name__ == "__main__":
    main()
