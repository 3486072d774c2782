"""The training engine: a run folder with everything, exact resume after kill -9, and DDP over
two CPU processes matching one process that sees the same global batch."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import train_config

from semiseg.training import train
from semiseg.training.budget import learning_rate
from semiseg.utils import SemisegError


def _losses(run):
    return [(int(r["iteration"]), float(r["loss"])) for r in csv.DictReader(open(run / "metrics.csv"))]


def test_train_writes_a_complete_run(tiny_work, tmp_path):
    run = tmp_path / "run"
    s = train(tiny_work, run, train_config(iterations=6, val_every=3), progress=False)
    assert s["iterations"] == 6
    for f in ("config.json", "plans.json", "split.json", "log.txt", "metrics.csv", "progress.png", "summary.json",
              "checkpoints/latest.pt", "checkpoints/best.pt", "checkpoints/final.pt"):
        assert (run / f).exists(), f
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[2]["val_dice"] != "" and rows[0]["val_dice"] == ""
    vals = {int(r["iteration"]): float(r["val_dice"]) for r in rows if r["val_dice"]}  # validated at 3 and 6
    assert list(vals) == [3, 6] and s["best_val_dice"] == pytest.approx(max(vals.values()), abs=1e-4)
    assert vals[s["best_iteration"]] == pytest.approx(s["best_val_dice"], abs=1e-4)
    st = torch.load(run / "checkpoints/latest.pt", weights_only=True)  # loads without running code
    assert st["iteration"] == 6 and "optims" in st
    with pytest.raises(SemisegError, match="already holds a run"):
        train(tiny_work, run, train_config(), progress=False)


def test_2d_and_labeled_subset(tiny_work, tmp_path):
    split = json.loads((tiny_work / "split.json").read_text())
    s = train(tiny_work, tmp_path / "r2", train_config(configuration="2d", labeled=split["labeled"][:2]),
              progress=False)
    assert s["labeled"] == 2 and s["unlabeled"] == len(split["labeled"]) - 2
    with pytest.raises(SemisegError, match="not labeled"):
        train(tiny_work, tmp_path / "r3", train_config(labeled=["NOPE"]), progress=False)


def test_schedule():
    c = train_config()
    assert learning_rate(c, 0) == pytest.approx(1e-2) and learning_rate(c, 1) == 0
    assert learning_rate(c, 0.5) == pytest.approx(1e-2 * 0.5 ** 0.9)
    a = train_config(optimizer="adamw")
    assert learning_rate(a, 1) == pytest.approx(0, abs=1e-12) and learning_rate(a, 0.02) == pytest.approx(1e-3)
    # a run that is the part 0.6..1 of a longer schedule (a continuing stage) starts at that schedule's 0.6
    part = train_config(schedule_span=[0.6, 1.0])
    assert learning_rate(part, 0) == pytest.approx(learning_rate(c, 0.6)) and learning_rate(part, 1) == 0
    assert learning_rate(part, 0.5) == pytest.approx(learning_rate(c, 0.8))
    for bad in ([0.6, 0.6], [0.5], [-0.1, 1], [0, 1.5]):
        with pytest.raises(SemisegError, match="schedule_span"):
            train_config(schedule_span=bad)


def _cli(*args):
    """``semiseg train ARGS`` without the closing report (tested in test_report; seconds per call here)."""
    return [sys.executable, "-m", "semiseg", "train", "--no-report", *map(str, args)]


# the propagation network: its own triplet batches and validation
STCN_ARGS = ["--config", "2d", "--method-options", '{"crop": 16}', "--network-options", '{"width": 8}']


@pytest.mark.parametrize("method", ["supervised", "cps", "cps-gate", "stcn", "mean-teacher"])
def test_resume_after_kill_9_matches_uninterrupted(tiny_work, tmp_path, method):
    gate = method == "cps-gate"  # the gate's running Dice must come back from the checkpoint
    method = "cps" if gate else method
    common = ["--iterations", 14, "--val-every", 2, "--log-every", 1, "--amp", "off", "--workers", 1,
              "-q", "--method", method] + (["--labeled", 2, "--cps-ramp", 0.3] if method == "cps" else []) + \
        (["--cps-gate", 0.3] if gate else []) + (STCN_ARGS if method == "stcn" else ["--base-features", 4]) + \
        (["--labeled", 2, "--mean-teacher-decay", 0.9] if method == "mean-teacher" else [])
    ref = tmp_path / "ref"  # the uninterrupted run, beside the one that is killed (the suite's wall time)
    ref_p = subprocess.Popen(_cli(tiny_work, "-o", ref, *common), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run = tmp_path / "killed"
    p = subprocess.Popen(_cli(tiny_work, "-o", run, *common), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    killed_at = None
    t0 = time.time()
    while p.poll() is None and time.time() - t0 < 120:
        m = run / "metrics.csv"
        if m.exists() and len(m.read_text().splitlines()) >= 6:  # header + 5 rows: past the checkpoint at 4
            os.killpg(p.pid, signal.SIGKILL)
            killed_at = len(m.read_text().splitlines()) - 1
            break
        time.sleep(0.02)
    p.wait()
    assert ref_p.wait() == 0, ref_p.stderr.read()[-3000:]
    assert killed_at is not None and killed_at < 14, "the run ended before it could be killed"
    st = torch.load(run / "checkpoints/latest.pt", weights_only=True)  # never corrupt
    assert 2 <= st["iteration"] < 14
    subprocess.run(_cli(tiny_work, "-o", run, "--resume", "-q"), check=True, capture_output=True)
    a, b = _losses(ref), _losses(run)
    assert [i for i, _ in a] == [i for i, _ in b] == list(range(1, 15))
    for (_, x), (_, y) in zip(a, b):
        assert abs(x - y) < 1e-4 * max(1, abs(x))
    if gate:
        qa, qb = ([float(r["labeled_dice"]) for r in csv.DictReader(open(r / "metrics.csv"))] for r in (ref, run))
        assert qa == pytest.approx(qb, abs=1e-6) and len(qa) == 14
    na = torch.load(ref / "checkpoints/final.pt", weights_only=True)["nets"]
    nb = torch.load(run / "checkpoints/final.pt", weights_only=True)["nets"]
    for name, wa in na.items():
        for k in wa:
            assert torch.allclose(wa[k], nb[name][k], atol=1e-5), (name, k)


@pytest.mark.parametrize("method", ["supervised", "cps", "cps-gate", "stcn", "mean-teacher"])
def test_ddp_two_processes_match_one(tiny_work, tmp_path, method):
    gate = method == "cps-gate"  # the ranks count the labeled Dice together and open the gate together
    method = "cps" if gate else method
    common = ["--iterations", 4 if gate else 3, "--val-every", 100, "--amp", "off",
              "--workers", 0, "--batch-size", 4, "--no-augment", "-q", "--method", method]
    if method != "stcn":
        common += ["--base-features", 4]
    if method == "cps":  # 2 labeled + 2 unlabeled per rank, lambda on from the first step
        common += ["--labeled", 2, "--unlabeled-batch", 4, "--cps-ramp", 0] + \
            (["--cps-gate", 0.01, "--log-every", 1] if gate else [])
    if method == "stcn":
        common += STCN_ARGS
    if method == "mean-teacher":  # 2 labeled + 2 unlabeled per rank, copy-paste boxes drawn for the global batch
        common += ["--labeled", 2, "--mean-teacher-decay", 0.9]
    one = tmp_path / "one"  # one process, beside the two (the suite's wall time)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one_p = subprocess.Popen(_cli(tiny_work, "-o", one, *common), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env=env)
    two = tmp_path / "two"
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "semiseg", "train", "--no-report", str(tiny_work), "-o", str(two), *map(str, common)],
                       capture_output=True, text=True, env=env)
    assert one_p.wait() == 0, one_p.stderr.read()[-3000:]
    assert p.returncode == 0, p.stderr[-3000:]
    na = torch.load(one / "checkpoints/final.pt", weights_only=True)["nets"]
    nb = torch.load(two / "checkpoints/final.pt", weights_only=True)["nets"]
    assert set(na) == {"supervised": {"net"}, "cps": {"net1", "net2"}, "stcn": {"stcn"},
                       "mean-teacher": {"net", "teacher"}}[method]
    for name, wa in na.items():
        wb = nb[name]
        diff = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
        moved = max(float((wa[k]).abs().max()) for k in wa)
        assert diff < 1e-4 * moved, (name, diff)
    assert json.loads((two / "summary.json").read_text())["processes"] == 2
    if gate:  # closed on the first step (the running Dice starts at 0), open by the last, on both runs alike
        for r in (one, two):
            lam = [float(x["lambda"]) for x in csv.DictReader(open(r / "metrics.csv"))]
            assert lam[0] == 0 and lam[-1] > 0, lam


def test_validation_takes_at_most_a_tenth_of_a_time_budget():
    from semiseg.training.budget import RunBudget, validation_gap

    assert validation_gap(1800, 2) == 180  # cheap validation (LA: 1.6 s): every tenth of the budget
    assert validation_gap(660, 2) == 66  # ... of any budget, a fit's 11-min student's too
    assert validation_gap(1800, 24) == pytest.approx(216)  # slow (ACDC-7: 24 s): 24 s per 216 s of training
    for budget_s, cost in ((1800, 100), (600, 24), (60, 1)):
        gap = validation_gap(budget_s, cost)
        assert cost / (gap + cost) <= 0.1 + 1e-9
    # --val-minutes sets the gap; slow still stretches it
    assert validation_gap(600, 10, gap_s=180) == 180 and validation_gap(600, 60, gap_s=180) == pytest.approx(540)
    b = RunBudget(None, 10.0, None, val_minutes=3.0)
    assert not b.validation_due(5, 170.0, 0.0, False) and b.validation_due(6, 181.0, 0.0, False)
    b.validated(60.0)  # a validation of a minute: the next one 9 minutes of training later
    assert not b.validation_due(7, 181.0 + 500, 181.0, False) and b.validation_due(8, 181.0 + 540, 181.0, False)
    b = RunBudget(None, 10.0, None)  # no --val-minutes: a tenth of the budget
    assert not b.validation_due(1, 59.0, 0.0, False) and b.validation_due(2, 60.0, 0.0, False)


@pytest.mark.parametrize("workers", [0, 1])
def test_same_seed_same_loss_curve(tiny_work, tmp_path, workers):
    """One process, the same seed: the same losses at every iteration (with a loader process too)."""
    a = train(tiny_work, tmp_path / "a", train_config(iterations=5, seed=3, workers=workers), progress=False)
    b = train(tiny_work, tmp_path / "b", train_config(iterations=5, seed=3, workers=workers), progress=False)
    assert a["iterations"] == b["iterations"] == 5
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    c = train(tiny_work, tmp_path / "c", train_config(iterations=5, seed=4, workers=workers), progress=False)
    assert c and _losses(tmp_path / "c") != _losses(tmp_path / "a")


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    """Every checkpoint is read with torch.load(weights_only=True): a pickle whose unpickling would
    run a command is refused by name, and the command never runs."""
    from semiseg.utils.checkpoint import load_checkpoint

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"nets": {}, "payload": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(SemisegError, match="evil.pt: cannot read the checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_give_up_ends_a_run_that_has_not_reached_its_mark(tiny_work, tmp_path):
    """--give-up [P, D]: at the first validation past P of the budget with a best Dice below D the run
    ends there (final and best checkpoints, summary says so); a run above its mark goes on."""
    s = train(tiny_work, tmp_path / "a", train_config(iterations=10, val_every=2, give_up=[0.3, 1.01]),
              progress=False)
    assert s["gave_up"] and s["iterations"] == 4
    assert torch.load(tmp_path / "a" / "checkpoints/final.pt", weights_only=True)["iteration"] == 4
    assert "giving up at iteration 4" in (tmp_path / "a" / "log.txt").read_text()
    s = train(tiny_work, tmp_path / "b", train_config(iterations=6, val_every=2, give_up=[0.3, -1.0]),
              progress=False)
    assert not s["gave_up"] and s["iterations"] == 6
    with pytest.raises(SemisegError, match="give_up"):
        train_config(give_up=[1.5, 0.5])
