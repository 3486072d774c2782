"""semiseg selftrain: rounds, the stop when a round adds no scan, the report, resuming, bad input."""
import csv
import json

import pytest
from conftest import train_config

from semiseg.utils import SemisegError
from semiseg.workflows.selftrain import selftrain


def test_selftrain_rounds_stop_and_resume(tiny_work, tmp_path):
    split = json.loads((tiny_work / "split.json").read_text())
    cfg = train_config(labeled=split["labeled"][:2], iterations=2)
    out = tmp_path / "st"
    rows = selftrain(tiny_work, out, cfg, rounds=3, select="all", progress=False)
    # round 1 takes all 3 unlabeled scans; round 2 would add none, so it stops there
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert rows[1]["selected"] == 3 and rows[1]["new"] == 3 and not rows[1]["stopped"]
    assert rows[1]["pseudolabel_s"] > 0  # summed from the per-scan seconds of scores.csv
    assert rows[2]["stopped"] and rows[2]["new"] == 0 and not (out / "round2" / "run").exists()
    sp = json.loads((out / "round1" / "run" / "split.json").read_text())
    assert sorted(sp["pseudo"]) == sorted(split["labeled"][2:]) and sp["unlabeled"] == []
    assert len(list((out / "unlabeled_images").iterdir())) == 3
    table = list(csv.DictReader(open(out / "report.csv")))
    assert [t["round"] for t in table] == ["0", "1", "2"] and (out / "report.png").stat().st_size > 0
    assert sum(map(int, table[1]["hist_selected"].split())) == 3
    # again: every finished step is kept, nothing is retrained
    t0 = (out / "round1" / "run" / "summary.json").stat().st_mtime_ns
    again = selftrain(tiny_work, out, progress=False)
    assert (out / "round1" / "run" / "summary.json").stat().st_mtime_ns == t0
    assert [r["selected"] for r in again] == [r["selected"] for r in rows]


def test_selftrain_from_an_existing_run_and_resume_of_a_killed_round(tiny_work, tmp_path):
    from semiseg.training import train

    split = json.loads((tiny_work / "split.json").read_text())
    cfg = train_config(labeled=split["labeled"][:2], iterations=2)
    r0 = tmp_path / "r0"
    train(tiny_work, r0, cfg, progress=False)
    out = tmp_path / "st"
    rows = selftrain(tiny_work, out, cfg, rounds=1, select="top:0.34", init_run=str(r0), progress=False)
    assert rows[0]["run"] == str(r0) and not (out / "round0").exists()
    assert rows[1]["selected"] == 1 and rows[1]["scored"] == 3
    # a round whose training died before finishing resumes from latest.pt
    (out / "round1" / "run" / "summary.json").unlink()
    rows2 = selftrain(tiny_work, out, progress=False)
    assert rows2[1]["iterations"] == 2 and (out / "round1" / "run" / "summary.json").exists()


def test_selftrain_bad_input(tiny_work, tmp_path):
    cfg = train_config(iterations=2)
    with pytest.raises(SemisegError, match="--select"):
        selftrain(tiny_work, tmp_path / "a", cfg, select="best")
    with pytest.raises(SemisegError, match="no summary.json"):
        selftrain(tiny_work, tmp_path / "b", cfg, init_run=str(tmp_path))
    with pytest.raises(SemisegError, match="no self-training to continue"):
        selftrain(tiny_work, tmp_path / "c", None)
    with pytest.raises(SemisegError, match="no unlabeled"):
        selftrain(tiny_work, tmp_path / "d", cfg, progress=False)  # every training case is labeled


def test_selftrain_cli(tiny_work, tmp_path):
    from semiseg.cli import main

    split = json.loads((tiny_work / "split.json").read_text())
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(split["labeled"][:3]))
    out = tmp_path / "st"
    args = ["selftrain", str(tiny_work), "-o", str(out), "--labeled-list", str(ids), "--iterations", "2",
            "--base-features", "4", "--amp", "off", "--workers", "0", "--rounds", "1", "-q"]
    assert main(args) == 0
    assert (out / "round1" / "run" / "summary.json").exists()
    assert main(["selftrain", str(tiny_work), "-o", str(tmp_path / "x"), "--iterations", "2", "--select", "top:2"]) == 2
