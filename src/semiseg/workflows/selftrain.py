"""``semiseg selftrain``: rounds of train -> pseudo-label -> select -> retrain (Pham et al. 2022).

Round 0 trains on the labeled cases (or is an existing run, ``init_run``). Round ``r >= 1``
pseudo-labels every unlabeled scan of the split with round ``r-1``'s networks (a CPS run gives two
members; a single network also contributes its mirrorings so a consensus exists), selects the
pseudo-labels by their consensus score (``select``, see :mod:`semiseg.pseudolabels.selection`), and trains a
new model from scratch, with the same configuration and budget, on the labels plus the selected
pseudo-labels (the rest stay unlabeled input for CPS). It stops after ``rounds`` rounds, or
earlier when a round would add no scan to the previous round's selection.

Folder ``OUT``::

    selftrain.json            settings (the training configuration of every round, the rule)
    unlabeled_images/         links to the unlabeled scans of the dataset (never copied)
    round0/                   a run folder (absent with init_run)
    round1/pseudo/            pseudo-labels + scores.csv from round 0's model
    round1/run/               the run trained with them
    ...
    report.csv, report.png    per round: scans selected and new, score histogram, validation Dice

Resumable round by round: a finished run (``summary.json``) or pseudo-label folder is kept, an
interrupted run resumes from its ``latest.pt``, pseudo-labelling skips scans already done. Calling
it again on the same ``OUT`` continues with the saved settings (``rounds`` may be raised).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..data.checking import load_dataset
from ..data.dataset import link_case_images
from ..inference.runs import read_record
from ..planning import load_plans, split_cases
from ..pseudolabels.pseudolabel import pseudolabel_folder
from ..pseudolabels.selection import parse_select, read_scores, select_cases
from ..training import TrainConfig, train
from ..training.records import record_earlier_run
from ..training.state import FINISHED, RESUMED, run_state
from ..utils import SemisegError, atomic_path, read_json, write_json

HIST_BINS = [0.0, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.925, 0.95, 0.975, 1.0001]


def _train_round(work: Path, run: Path, cfg: TrainConfig, progress: bool, log) -> dict:
    state = run_state(run)
    if state == FINISHED:
        log(f"{run}: finished, kept")
        return read_json(run / "summary.json", "run summary")
    log(f"{run}: {'resuming' if state == RESUMED else 'training'}")
    return train(work, run, cfg, resume=state == RESUMED, progress=progress)


def _histogram(values) -> list[int]:
    return np.histogram(np.asarray(values, float), bins=HIST_BINS)[0].tolist() if len(values) else \
        [0] * (len(HIST_BINS) - 1)


def selftrain(work: str | Path, out: str | Path, cfg: TrainConfig | None = None, rounds: int = 2,
              select: str = "top:0.5", select_score: str = "consensus", init_run: str | None = None,
              tta_members: bool | None = None, pl_step: float = 0.5, progress: bool = True) -> list[dict]:
    """Run (or continue) self-training into ``out``; returns the per-round report rows."""
    work, out = Path(work), Path(out)
    state_f = out / "selftrain.json"
    if state_f.exists():  # continue with the saved settings
        st = read_json(state_f, "self-training settings")
        if rounds > st["rounds"]:
            st["rounds"] = rounds
            write_json(st, state_f)
    else:
        if cfg is None:
            raise SemisegError(f"{out}: no self-training to continue (no selftrain.json); give a configuration")
        parse_select(select)
        if cfg.pseudo_labels:
            raise SemisegError("selftrain chooses each round's pseudo-labels itself; drop --pseudo-labels")
        if rounds < 1:
            raise SemisegError(f"--rounds must be at least 1, not {rounds}")
        if init_run and not (Path(init_run) / "summary.json").exists():
            raise SemisegError(f"{init_run}: not a finished run (no summary.json)")
        if init_run:
            record_earlier_run(init_run)
        load_plans(work)
        st = {"config": cfg.to_dict(), "rounds": rounds, "select": select, "select_score": select_score,
              "init_run": str(Path(init_run).resolve()) if init_run else None, "tta_members": tta_members,
              "pl_step": pl_step}
        out.mkdir(parents=True, exist_ok=True)
        write_json(st, state_f)
    base = TrainConfig.from_dict(st["config"])
    plans = load_plans(work)
    _lab, unlabeled, _val = split_cases(work, base.labeled)
    if not unlabeled:
        raise SemisegError(f"{work / 'split.json'}: no unlabeled cases to pseudo-label")
    images = link_case_images(load_dataset(plans["dataset_path"]), unlabeled, out / "unlabeled_images")

    def log(msg):
        line = f"selftrain: {msg}"
        with open(out / "log.txt", "a") as f:
            f.write(line + "\n")
        if progress:
            print(line, flush=True)

    rows = []
    prev_run = Path(st["init_run"]) if st["init_run"] else out / "round0"
    s0 = read_json(prev_run / "summary.json", "run summary") if st["init_run"] else \
        _train_round(work, prev_run, base, progress, log)
    rows.append(_row(0, prev_run, s0, [], [], {}, st["select_score"]))
    prev_sel: set[str] = set()
    for r in range(1, st["rounds"] + 1):
        rd = out / f"round{r}"
        tta = st["tta_members"]
        if tta is None:  # a single network needs its mirrorings to have a consensus
            tta = len(read_record(prev_run)["predict_with"]) < 2
        log(f"round {r}: pseudo-labelling {len(unlabeled)} scans with {prev_run}" + (" (+ mirrorings)" if tta else ""))
        pseudolabel_folder([str(prev_run)], images, rd / "pseudo", step=st["pl_step"], tta_members=tta,
                           num_parts=1, part_id=0, progress=progress)
        pl_s = _pseudolabel_seconds(rd / "pseudo")  # its compute, for honest totals
        scores = read_scores(rd / "pseudo", st["select_score"])
        chosen = select_cases(scores, st["select"], st["select_score"], [c for c in unlabeled if c in scores])
        new = [c for c in chosen if c not in prev_sel]
        if not chosen or (r > 1 and not new):
            log(f"round {r}: the selection adds no scan ({len(chosen)} selected, all in round {r - 1}'s); stopping")
            rows.append(_row(r, None, None, chosen, new, scores, st["select_score"], pl_s, stopped=True))
            break
        log(f"round {r}: {len(chosen)} of {len(scores)} pseudo-labels selected ({len(new)} new), {st['select']} "
            f"by {st['select_score']}")
        cfg = TrainConfig.from_dict(dict(st["config"], pseudo_labels=str(rd / "pseudo"), select=st["select"],
                                         select_score=st["select_score"]))
        s = _train_round(work, rd / "run", cfg, progress, log)
        rows.append(_row(r, rd / "run", s, chosen, new, scores, st["select_score"], pl_s))
        prev_run, prev_sel = rd / "run", set(chosen)
    write_report(out, rows)
    return rows


def _pseudolabel_seconds(pl_dir: Path) -> float:
    with open(pl_dir / "scores.csv", newline="") as f:
        return float(sum(float(r.get("seconds") or 0) for r in csv.DictReader(f)))


def _row(r, run, summary, chosen, new, scores, score_name, pl_s=0.0, stopped=False) -> dict:
    sel = [scores[c] for c in chosen]
    rej = [v for c, v in scores.items() if c not in set(chosen)]
    return {"round": r, "run": str(run) if run else "", "stopped": stopped, "scored": len(scores),
            "selected": len(chosen), "new": len(new), "score": score_name,
            "selected_score_min": min(sel) if sel else float("nan"),
            "selected_score_mean": float(np.mean(sel)) if sel else float("nan"),
            "rejected_score_mean": float(np.mean(rej)) if rej else float("nan"),
            "hist_selected": _histogram(sel), "hist_rejected": _histogram(rej),
            "best_val_dice": summary["best_val_dice"] if summary else float("nan"),
            "iterations": summary["iterations"] if summary else 0,
            "train_s": summary["elapsed_s"] if summary else 0.0, "pseudolabel_s": round(pl_s, 1)}


def write_report(out: Path, rows: list[dict]) -> None:
    """report.csv (one row per round) and report.png (score histograms, validation Dice per round)."""
    cols = list(rows[0])
    with atomic_path(out / "report.csv", suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: (" ".join(map(str, v)) if isinstance(v, list) else
                            (f"{v:.4f}" if isinstance(v, float) else v)) for k, v in r.items()})
    import matplotlib  # noqa: PLC0415 - heavy, only for the report

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    scored = [r for r in rows if r["scored"]]
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(1, len(scored))
    centers = np.arange(len(HIST_BINS) - 1)
    for i, r in enumerate(scored):
        ax[0].bar(centers + i * width, r["hist_selected"], width, label=f"round {r['round']} selected")
        ax[0].bar(centers + i * width, r["hist_rejected"], width, bottom=r["hist_selected"], alpha=0.35,
                  label=f"round {r['round']} rejected")
    ax[0].set_xticks(centers + 0.4 - width / 2, [f"{a:g}-{min(b, 1):g}" for a, b in zip(HIST_BINS, HIST_BINS[1:])],
                     rotation=45, fontsize=7)
    ax[0].set_title(f"pseudo-label scores ({rows[-1]['score']})")
    ax[0].set_ylabel("scans")
    ax[0].legend(fontsize=7)
    tr = [r for r in rows if r["run"]]
    ax[1].plot([r["round"] for r in tr], [r["best_val_dice"] for r in tr], "o-")
    for r in tr:
        ax[1].annotate(f"+{r['selected']}", (r["round"], r["best_val_dice"]), fontsize=7)
    ax[1].set_xlabel("round")
    ax[1].set_xticks([r["round"] for r in tr])
    ax[1].set_title("best validation Dice (labels + selected pseudo-labels)")
    fig.tight_layout()
    with atomic_path(out / "report.png", suffix=".png") as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
