"""Is the uncertainty real? Consensus scores of pseudo-labels against their true Dice (issue 11).

Pseudo-labels the training cases a run treated as unlabeled (its ``split.json``) with
``semiseg pseudolabel`` (every network of the runs; ``--tta-members`` adds mirrorings), then, as a
benchmark only (training never opens them), scores each pseudo-label against the case's true
label with ``semiseg evaluate`` and measures, for every score column of ``scores.csv``
(Pham et al.'s ``consensus``, ``consensus_3d``, and ``entropy``, where lower means more certain):

- the Spearman correlation between the score and the true DSC (entropy negated, so higher is
  better for every score);
- the mean true DSC of the pseudo-labels the rule ``--select`` keeps and of those it rejects.

    python benchmarks/pseudolabel_uncertainty.py RUN [RUN...] --dataset LA --tta-members --select top:0.5
"""
import argparse
import csv
import json
import subprocess
from pathlib import Path

import numpy as np
from _common import DATA, HERE, append_rows, case_images, sh
from scipy.stats import spearmanr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--dataset", default="LA")
    ap.add_argument("--out", help="pseudo-label folder (default: benchmarks/_work/pl_<first run name>)")
    ap.add_argument("--tta-members", action="store_true")
    ap.add_argument("--select", default="top:0.5")
    ap.add_argument("--scores", default="consensus,consensus_3d,entropy")
    a = ap.parse_args()
    from semiseg.pseudolabels.selection import select_cases

    ds = DATA / a.dataset
    run0 = Path(a.runs[0].split("@")[0])
    split = json.loads((run0 / "split.json").read_text())
    unl = split["unlabeled"]
    imgs = case_images(a.dataset, unl, HERE / "_work" / f"{a.dataset}_{run0.name}_unlabeled_images")
    out = Path(a.out) if a.out else HERE / "_work" / f"pl_{run0.name}{'_tta' if a.tta_members else ''}"
    import time

    t = time.time()
    sh(["pseudolabel", *a.runs, "-i", imgs, "-o", out, "-q", *(["--tta-members"] if a.tta_members else [])])
    pl_s = time.time() - t
    ev_dir = out / "true_dice"
    sh(["evaluate", out, ds / "labelsTr", "--only-predicted", "-o", ev_dir, "-q"], stdout=subprocess.DEVNULL)
    true = {}
    for r in csv.DictReader(open(ev_dir / "metrics.csv")):
        true.setdefault(r["case"], []).append(float(r["dsc"]))
    true = {c: float(np.mean(v)) for c, v in true.items()}
    rows_s = list(csv.DictReader(open(out / "scores.csv")))
    members = rows_s[0]["members"]
    rows = []
    for col in a.scores.split(","):
        sc = {r["case"]: float(r[col]) for r in rows_s if r["case"] in true}
        ids = sorted(sc)
        sign = -1 if col == "entropy" else 1
        rho, p = spearmanr([sign * sc[c] for c in ids], [true[c] for c in ids])
        chosen = set(select_cases(sc, a.select, col))
        sel = [true[c] for c in ids if c in chosen]
        rej = [true[c] for c in ids if c not in chosen]
        note = (f"score {col}{' (negated)' if sign < 0 else ''}: Spearman rho {rho:.3f} (p {p:.2g}) vs true "
                f"pseudo-label DSC over {len(ids)} scans; {a.select}: selected {len(sel)} mean true DSC "
                f"{np.mean(sel):.4f}, rejected {len(rej)} mean true DSC {np.mean(rej) if rej else float('nan'):.4f}; "
                f"all {np.mean(list(true.values())):.4f} (min {min(true.values()):.4f}); {members} members "
                f"({', '.join(Path(r.split('@')[0]).name for r in a.runs)}{', mirrorings' if a.tta_members else ''}); "
                f"pseudo-labelling {pl_s / max(1, len(ids)):.1f} s/scan")
        rows.append({"benchmark": "pseudolabel_uncertainty", "dataset": a.dataset, "labeled": len(split["labeled"]),
                     "unlabeled": len(ids), "method": f"consensus score {col}",
                     "networks": "+".join(Path(r.split("@")[0]).name for r in a.runs),
                     "split": "unlabeled training cases (true labels read by this benchmark only)",
                     "dsc": f"{np.mean(sel):.4f}", "wall_s": f"{pl_s:.0f}", "notes": note})
        print(note)
    append_rows(rows)


if __name__ == "__main__":
    main()
