"""Mean and spread over seeds of the budgeted training rows of results.csv (train_bounds.py's
`supervised_bounds` and `cps_budget`, fit_budget.py's `fit_budget`), written to seeds.md.

Rows are grouped by dataset, labeled count, method, networks, budget and the training (or fit)
arguments recorded in their notes, fit rows also by the CPU cores they ran on (one core each when
two ran side by side); within a group the latest row of each seed counts (a rerun replaces the
seed's earlier row), and rows re-predicted from a finished run (`--predict-only`) replace the
original only when their predict arguments match the group's. Spread: sample standard deviation
and the range. Per-class DSC (ACDC's RV / MYO / LV) is the mean over seeds of the per-class values
the rows' notes record.

    python benchmarks/summarize_seeds.py
"""
import argparse
import csv
import re
import statistics

from _common import CSV, HERE

BENCHES = ("supervised_bounds", "cps_budget", "fit_budget")


def key(r: dict) -> tuple:
    m = re.search(r"(?:train|fit) args: ([^;]*)", r["notes"])
    p = re.search(r"predict args: ([^;]*)", r["notes"])
    c = re.search(r"(\d+) core\(s\) for the fit", r["notes"])
    args = (m.group(1).strip() if m else "") + (f" ({c.group(1)} core{'s' if c.group(1) != '1' else ''})" if c else "")
    return (r["dataset"], r["labeled"], r["method"], r["networks"], f"{float(r['budget_min']):g}",
            args, p.group(1).strip() if p else "")


def per_class(r: dict) -> dict[str, float]:
    """Class name -> DSC from a row's notes ("RV DSC 0.7 NSD ...; MYO DSC ..."; not the "(without it: DSC ..."
    of a fit row's postprocessing text)."""
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"(?:^|; )([^;():]+?) DSC ([0-9.]+) NSD", r["notes"])}


def col_mean(rows: list[dict], col: str, digits: int) -> str:
    """Mean of a column over a group's rows (those that recorded it), as text."""
    v = [float(r[col]) for r in rows if r[col]]
    return f"{statistics.mean(v):.{digits}f}" if v else ""


def main():
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    groups: dict[tuple, dict[str, dict]] = {}
    for r in csv.DictReader(open(CSV)):
        if r["benchmark"] in BENCHES and r["dsc"] and r["budget_min"]:
            groups.setdefault(key(r), {})[r["seed"]] = r  # later rows replace a seed's earlier one
    out = ["# Budgeted training over seeds", "",
           "Generated from `results.csv` by `benchmarks/summarize_seeds.py` (latest row per seed).", "",
           "| dataset | labeled | method | networks | budget min | train / fit args | predict args | seeds | "
           "DSC mean | DSC sd | DSC range | per class (mean) | NSD mean | HD95 mean | iterations |", "|" + "---|" * 15]
    for k in sorted(groups):
        rows = [groups[k][s] for s in sorted(groups[k])]
        d = [float(r["dsc"]) for r in rows]
        sd = f"{statistics.stdev(d):.4f}" if len(d) > 1 else ""
        its = ", ".join(r["iterations"] for r in rows)
        pcs = [per_class(r) for r in rows]
        names = list(pcs[0]) if len(pcs[0]) > 1 and all(set(pc) == set(pcs[0]) for pc in pcs) else []
        pc_text = " / ".join(f"{n} {statistics.mean(pc[n] for pc in pcs):.3f}" for n in names)
        out.append(f"| {' | '.join(k)} | {', '.join(r['seed'] for r in rows)} | {statistics.mean(d):.4f} | {sd} | "
                   f"{min(d):.4f}-{max(d):.4f} | {pc_text} | {col_mean(rows, 'nsd', 4)} | {col_mean(rows, 'hd95', 2)} | {its} |")
    (HERE / "seeds.md").write_text("\n".join(out) + "\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
