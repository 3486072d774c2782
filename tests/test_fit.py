"""``semiseg fit``: stages in one budget, one run folder at the end, resumable, bad input refused."""
import csv
import json

import pytest
from conftest import make_dataset

from semiseg.cli import main
from semiseg.utils import SemisegError
from semiseg.workflows import fit as fitmod

FAST = {"network_options": {"base_features": 4}, "amp": "off", "val_every": 5, "patch_size": [8, 16, 16]}


def _fit(ds, out, minutes=0.3, train_options=FAST, **kw):
    return fitmod.fit(ds, out, minutes, labeled=2, train_options=train_options, workers=0, progress=False,
                      log=lambda m: None, **kw)


def test_fit_runs_every_stage_and_ends_in_one_run_folder(tmp_path, capsys):
    ds = make_dataset(tmp_path / "T", n=6, shape=(12, 24, 24))
    s = _fit(ds, tmp_path / "fit")
    out = tmp_path / "fit"
    fj = json.loads((out / "fit.json").read_text())
    st = fj["stages"]
    assert list(st)[:5] == ["plan", "preprocess", "teacher", "pseudolabel", "student"]
    assert all(v["done"] for v in st.values())
    # a student that did not overtake the teacher by its probation gave the rest back to the teacher
    assert list(st)[5:] == (["teacher-continued"] if st["student"]["gave_up"] else [])
    trained = [k for k in ("teacher", "student", "teacher-continued") if k in st]
    # --config auto (the default) decided on the plan, once: these phantoms are not thick-slice scans
    assert fj["train"]["configuration"] == "3d" and "3D" in fj["configuration_why"]
    assert st["pseudolabel"]["unlabeled"] == 3  # 5 training cases, 2 labeled
    assert 2 <= st["pseudolabel"]["scans"] <= 3  # as many as fit its share of the budget (at least the timed ones)
    assert s["fit"]["recipe"] == "offline-continued" and s["labeled"] == 2
    # the student started from the teacher and learned from the pseudo-labels
    cfg = json.loads((out / "stages" / "2-student" / "config.json").read_text())
    assert cfg["init"].endswith("0-teacher@best") and cfg["pseudo_labels"].endswith("1-pseudolabel")
    assert cfg["val_every"] == 5 and cfg["val_minutes"] is None  # the user's validation rhythm is kept
    # OUT is the student's run folder unless the teacher validated strictly better
    final = fitmod.final_stage(st, trained)
    assert s["fit"]["final_stage"].endswith(f"-{final}")
    folder = {"teacher": "0-teacher", "student": "2-student", "teacher-continued": "2-teacher-continued"}[final]
    assert json.loads((out / "config.json").read_text()) == json.loads(
        (out / "stages" / folder / "config.json").read_text())
    # half its patches from labeled scans; pseudo-labels trusted for the classes the teacher learned
    assert cfg["pseudo_share"] == 0.5 and cfg["pseudo_classes"] == st["student"]["pseudo_classes"]
    assert isinstance(st["pseudolabel"]["tta_members"], bool) and st["pseudolabel"]["probe_s"] > 0
    # the minutes of every stage add up to about the budget (the student takes what is left)
    assert sum(v["seconds"] for v in st.values()) / 60 < 0.3 + 0.25
    # OUT is a run folder with the student's postprocessing choice for its best checkpoint: predict takes it
    pp = json.loads((out / "postprocessing.json").read_text())
    assert pp["iteration"] == s["best_iteration"] == json.loads((out / "summary.json").read_text())["best_iteration"]
    assert main(["predict", str(out), "-i", str(ds / "imagesTr"), "-o", str(tmp_path / "pred"), "-q"]) == 0
    assert len(list((tmp_path / "pred").glob("*.nii.gz"))) == 6


def test_fit_resumes_where_it_stopped(tmp_path, monkeypatch):
    ds = make_dataset(tmp_path / "T", n=6, shape=(12, 24, 24))
    calls = []
    real = fitmod.train

    def dies_in_the_student(work, run, cfg, resume=False, progress=True):
        calls.append((run.name, resume))
        if run.name == "2-student":
            raise KeyboardInterrupt  # as a kill during the student stage
        return real(work, run, cfg, resume=resume, progress=progress)

    monkeypatch.setattr(fitmod, "train", dies_in_the_student)
    with pytest.raises(KeyboardInterrupt):
        _fit(ds, tmp_path / "fit")
    teacher_ck = tmp_path / "fit" / "stages" / "0-teacher" / "checkpoints" / "best.pt"
    mtime = teacher_ck.stat().st_mtime_ns
    monkeypatch.setattr(fitmod, "train", real)
    s = _fit(ds, tmp_path / "fit")
    assert teacher_ck.stat().st_mtime_ns == mtime  # the teacher was not trained again
    st = s["fit"]["stages"]
    assert 2 <= st["pseudolabel"]["scans"] <= 3 and st["student"]["iterations"] > 0
    log = (tmp_path / "fit" / "log.txt").read_text()
    assert "teacher: finished earlier, kept" in log and "pseudolabel: finished earlier, kept" in log


def test_fit_refuses_bad_input(tmp_path):
    with pytest.raises(SemisegError, match="nothing: dataset folder not found"):
        _fit(tmp_path / "nothing", tmp_path / "a")
    ds = make_dataset(tmp_path / "T", n=6, shape=(12, 24, 24))
    with pytest.raises(SemisegError, match="recipe"):
        _fit(ds, tmp_path / "b", recipe="magic")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x.txt").write_text("mine")
    with pytest.raises(SemisegError, match="not a fit folder"):
        _fit(ds, tmp_path / "c")
    assert (tmp_path / "c" / "x.txt").read_text() == "mine"
    assert main(["fit", str(ds), "-o", str(tmp_path / "d"), "--minutes", "0", "-q"]) == 2
    assert not (tmp_path / "d").exists()
    for bad in ("0", "1", "1.5"):
        assert main(["fit", str(ds), "-o", str(tmp_path / "e"), "--minutes", "1", "--teacher-share", bad, "-q"]) == 2
    assert main(["fit", str(ds), "-o", str(tmp_path / "e"), "--minutes", "1", "--teacher-share", "0.5",
                 "--recipe", "supervised", "-q"]) == 2
    assert not (tmp_path / "e").exists()


def test_auto_configuration_is_2d_for_thick_slices_only():
    assert fitmod.choose_configuration({"target_spacing": [9.5, 1.5625, 1.5625]})[0] == "2d"  # ACDC cine MRI
    assert fitmod.choose_configuration({"target_spacing": [1.0, 0.625, 0.625]})[0] == "3d"  # LA
    assert fitmod.choose_configuration({"target_spacing": [3.0, 1.0, 1.0]})[0] == "3d"  # at the threshold: 3d
    assert fitmod.choose_configuration({"target_spacing": [1.0, 1.0, 3.5]})[0] == "2d"  # any axis


def test_the_final_model_is_the_last_stage_unless_an_earlier_one_validated_better():
    st = {"teacher": {"best_val_dice": 0.72}, "pseudolabel": {"scans": 3}, "student": {"best_val_dice": 0.78}}
    assert fitmod.final_stage(st, ["teacher", "student"]) == "student"
    st["student"]["best_val_dice"] = 0.72  # a tie keeps the last
    assert fitmod.final_stage(st, ["teacher", "student"]) == "student"
    st["student"]["best_val_dice"] = 0.70
    assert fitmod.final_stage(st, ["teacher", "student"]) == "teacher"
    assert fitmod.final_stage({"supervised": {"best_val_dice": 0.5}}, ["supervised"]) == "supervised"


def test_2d_patch_and_batch_are_capped_unless_given():
    acdc = {"patch_size": [256, 224], "batch_size": 13}
    assert fitmod.slice_overrides(acdc, {}) == {"patch_size": [160, 160], "batch_size": 8}
    assert fitmod.slice_overrides({"patch_size": [64, 80], "batch_size": 6}, {}) == {}  # already within
    assert fitmod.slice_overrides(acdc, {"patch_size": [192, 192]}) == {}  # the user's choice wins
    assert fitmod.slice_overrides(acdc, {"batch_size": 20}) == {}


def test_stages_are_printed_with_their_share():
    lines = fitmod.describe("offline", 30)
    assert any("teacher: supervised, 40%" in x for x in lines) and any("student" in x and "rest" in x for x in lines)
    lines = fitmod.describe("offline-continued", 30, teacher_share=0.75)
    assert any("teacher: supervised, 75%" in x for x in lines)
    assert any("student" in x and "continuing its learning-rate schedule" in x for x in lines)


def test_fit_passes_training_options_to_every_training_stage(tmp_path, monkeypatch):
    import semiseg.cli.train as cli_train

    seen = {}

    def fake_fit(dataset, out, minutes, **kw):
        seen.update(kw)
        return {"best_val_dice": 0.5, "fit": {"recipe": "offline", "used_minutes": 1.0, "minutes": minutes}}

    monkeypatch.setattr(cli_train, "fit", fake_fit)
    assert main(["fit", str(tmp_path), "-o", str(tmp_path / "o"), "--minutes", "1", "--optimizer", "adamw",
                 "--lr", "0.003", "-q"]) == 0
    assert seen["train_options"] == {"optimizer": "adamw", "lr": 0.003}
    assert main(["fit", str(tmp_path), "-o", str(tmp_path / "o"), "--minutes", "1", "--network", "transunet",
                 "--patch-size", "160", "160", "--batch-size", "8", "--no-report", "-q"]) == 0
    assert seen["train_options"] == {"network": "transunet", "patch_size": [160, 160], "batch_size": 8}
    with pytest.raises(SystemExit):
        main(["fit", str(tmp_path), "-o", str(tmp_path / "o"), "--minutes", "1", "--optimizer", "adam"])


def test_a_continuing_student_runs_the_rest_of_the_teachers_schedule(tmp_path):
    """offline-continued: teacher and student share one learning-rate schedule; the student starts
    where the teacher's part ended instead of at the full rate."""
    ds = make_dataset(tmp_path / "T", n=6, shape=(12, 24, 24))
    opts = {k: v for k, v in FAST.items() if k != "val_every"}  # validating by time, as fit does by default
    _fit(ds, tmp_path / "fit", recipe="offline-continued", teacher_share=0.7, train_options=opts)
    out = tmp_path / "fit"
    fj = json.loads((out / "fit.json").read_text())
    st = fj["stages"]
    assert st["teacher"]["minutes"] == pytest.approx(0.7 * 0.3, abs=0.02)  # --teacher-share (of the training budget)
    a, b = st["teacher"]["schedule_span"]
    assert a == 0 and 0.5 < b < 1 and st["student"]["schedule_span"] == [b, 1]
    teacher = json.loads((out / "stages" / "0-teacher" / "config.json").read_text())
    student = json.loads((out / "stages" / "2-student" / "config.json").read_text())
    assert teacher["schedule_span"] == [a, b] and student["schedule_span"] == [b, 1]
    # both stages validate by time as any run does (the engine's rule), no rhythm of the fit's own
    assert teacher["val_minutes"] is None and student["val_minutes"] is None and teacher["val_every"] is None
    # the student's first logged rate is the teacher's last part of the schedule, not 1e-2
    rows = [r for r in csv.DictReader(open(out / "stages" / "2-student" / "metrics.csv")) if r.get("lr")]
    assert float(rows[0]["lr"]) <= 1e-2 * (1 - b) ** 0.9 + 1e-9


def test_a_student_that_does_not_overtake_gives_its_time_back_to_the_teacher(tmp_path, monkeypatch):
    """The student is on probation: when it has not beaten the teacher's best validation Dice past its
    probation share, it stops and the teacher continues (from its final weights, its own schedule, no
    pseudo-labels) for the rest of the budget, here counted in steps."""
    import semiseg.training.engine as engine

    ds = make_dataset(tmp_path / "T", n=6, shape=(12, 24, 24))
    monkeypatch.setattr(engine, "gives_up", lambda cfg, st, budget: bool(cfg.give_up) and
                        budget.progress(st.iteration, st.elapsed) >= cfg.give_up[0])
    opts = dict(FAST, val_every=2)
    s = fitmod.fit(ds, tmp_path / "fit", None, iterations=20, labeled=2, train_options=opts, workers=0,
                   progress=False, log=lambda m: None)
    out = tmp_path / "fit"
    st = json.loads((out / "fit.json").read_text())["stages"]
    assert list(st) == ["plan", "preprocess", "teacher", "pseudolabel", "student", "teacher-continued"]
    assert st["teacher"]["iterations"] == 12 and st["student"]["gave_up"]
    assert st["student"]["give_up"] == [fitmod.PROBATION, st["teacher"]["best_val_dice"]]
    assert st["student"]["iterations"] == 4  # the first validation past 35% of its 8 steps
    assert st["teacher-continued"]["iterations"] == 4 and not st["teacher-continued"]["gave_up"]
    cont = json.loads((out / "stages" / "2-teacher-continued" / "config.json").read_text())
    assert cont["init"].endswith("0-teacher@final") and cont["pseudo_labels"] is None
    assert cont["schedule_span"] == [st["teacher"]["schedule_span"][1], 1.0] and cont["give_up"] is None
    assert s["fit"]["final_stage"].endswith(fitmod.final_stage(st, ["teacher", "student", "teacher-continued"]))
    # resumed after the end, nothing runs again
    again = fitmod.fit(ds, out, None, iterations=20, labeled=2, train_options=opts, workers=0, progress=False,
                       log=lambda m: None)
    assert again["fit"]["stages"] == s["fit"]["stages"]


def test_a_student_that_overtakes_keeps_its_time(tmp_path, monkeypatch):
    import semiseg.training.engine as engine

    ds = make_dataset(tmp_path / "T", n=6, shape=(12, 24, 24))
    monkeypatch.setattr(engine, "gives_up", lambda cfg, st, budget: False)
    fitmod.fit(ds, tmp_path / "fit", None, iterations=10, labeled=2, train_options=dict(FAST, val_every=2),
               workers=0, progress=False, log=lambda m: None)
    st = json.loads((tmp_path / "fit" / "fit.json").read_text())["stages"]
    assert list(st)[-1] == "student" and st["student"]["iterations"] == 4 and not st["student"]["gave_up"]
    assert st["pseudolabel"]["tta_members"] and st["pseudolabel"]["scans"] == 3  # steps: every scan, mirrorings


def test_a_budget_is_minutes_or_steps(tmp_path):
    ds = make_dataset(tmp_path / "T", n=6, shape=(12, 24, 24))
    with pytest.raises(SemisegError, match="one of them"):
        fitmod.fit(ds, tmp_path / "a", 1.0, iterations=10, progress=False, log=lambda m: None)
    with pytest.raises(SemisegError, match="one of them"):
        fitmod.fit(ds, tmp_path / "a", None, progress=False, log=lambda m: None)


def test_learned_classes_are_read_by_name(tmp_path):
    """The classes a teacher learned come from its best checkpoint's Dice per class name, whatever the
    order of metrics.csv's columns; postprocessing.json (the structured record) wins when it is the
    best checkpoint's."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "plans.json").write_text(json.dumps({"num_classes": 4, "labels": {"background": 0, "RV": 1, "MYO": 2,
                                                                             "LV": 3}, "num_input_channels": 1,
                                                "target_spacing": [1, 1, 1], "normalization": [],
                                                "configurations": {}}))
    (run / "summary.json").write_text(json.dumps({"best_iteration": 20, "iterations": 30}))
    (run / "metrics.csv").write_text("iteration,val_dice,val_dice_LV,val_dice_RV,val_dice_MYO\n"
                                     "10,0.3,0.9,0.1,0.1\n20,0.5,0.8,0.6,0.2\n30,0.4,0.7,0.1,0.6\n")
    assert fitmod.learned_classes(run, 0.5) == [1, 3]  # RV 0.6, LV 0.8 at iteration 20
    assert fitmod.learned_classes(run, 0.0) == [1, 2, 3]
    (run / "postprocessing.json").write_text(json.dumps({"iteration": 20, "val_dice": {"RV": 0.4, "MYO": 0.55,
                                                                                       "LV": 0.8}}))
    assert fitmod.learned_classes(run, 0.5) == [2, 3]
    (run / "postprocessing.json").write_text(json.dumps({"iteration": 10, "val_dice": {"RV": 0.9}}))  # not best's
    assert fitmod.learned_classes(run, 0.5) == [1, 3]
