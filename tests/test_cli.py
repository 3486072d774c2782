"""The command line: demo end to end, python -m, help texts, clean errors."""
import subprocess
import sys

import pytest

from semiseg.cli import main


def test_demo_end_to_end(tmp_path, capsys):
    from semiseg.workflows.demo import run_demo

    lines = []
    r = run_demo(tmp_path / "demo", progress=False, log=lines.append, iterations=30)
    res = r["results"]
    assert set(res) == {"roundtrip", "supervised", "fit"}
    # the preprocessing round trip of the validation labels is near perfect for every structure
    assert res["roundtrip"]["n_cases"] == 4
    assert all(v["dsc"]["mean"] > 0.85 for v in res["roundtrip"]["per_region"].values())
    for name in ("supervised", "fit"):
        s = res[name]
        assert s["n_cases"] == 4 and set(s["per_region"]) == {"organ", "sphere", "tube"}
        means = [v["dsc"]["mean"] for v in s["per_region"].values()]
        assert s["mean_over_regions"]["dsc"] == pytest.approx(sum(means) / 3)
    # fit ran every stage of its recipe in the same number of steps (the teacher continuing when the student did
    # not overtake it), pseudo-labelling every one of the 18 unlabeled cases (a budget in steps)
    st = r["fit"]["stages"]
    pl = st["pseudolabel"]
    assert list(st)[:3] == ["teacher", "pseudolabel", "student"] and pl["unlabeled"] == pl["scans"] == 18
    assert list(st)[3:] == (["teacher-continued"] if st["student"]["gave_up"] else [])
    assert sum(v["iterations"] for k, v in st.items() if k != "pseudolabel") == 30
    assert r["supervised_iterations"] == 30
    assert r["plans"]["num_classes"] == 4 and r["times"]["total"] > 0
    assert (tmp_path / "demo" / "run_supervised" / "checkpoints" / "best.pt").exists()
    assert (tmp_path / "demo" / "fit" / "checkpoints" / "best.pt").exists()
    table = "\n".join(lines)
    assert "structure      supervised      fit" in table and "points from 18 unlabeled cases" in table
    # the command line: a second run replaces its own folder, but never a folder it did not make
    assert main(["demo", "-o", str(tmp_path / "demo"), "-q", "--minutes", "0.1"]) == 0
    assert "[demo] done in" in capsys.readouterr().out
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "precious.txt").write_text("x")
    assert main(["demo", "-o", str(tmp_path / "other"), "-q"]) == 2
    assert (tmp_path / "other" / "precious.txt").exists()


def test_python_dash_m_and_help():
    r = subprocess.run([sys.executable, "-m", "semiseg", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for cmd in ("check", "plan", "preprocess", "train", "selftrain", "fit", "predict", "pseudolabel", "evaluate", "demo"):
        assert cmd in r.stdout


def test_bad_option_is_a_clean_error(tiny, tmp_path, capsys):
    assert main(["plan", str(tiny), "-o", str(tmp_path / "w"), "--labeled", "99", "-q"]) == 2
    err = capsys.readouterr().err
    assert "--labeled 99" in err and "Traceback" not in err
    assert main(["preprocess", str(tmp_path / "nowork"), "-q"]) == 2
    assert "plans.json" in capsys.readouterr().err


def test_top_level_api_matches_the_cli(tiny, tmp_path):
    import semiseg

    rep = semiseg.check(tiny, workers=1, progress=False)
    assert rep.ok
    p = semiseg.plan(tiny, tmp_path / "w", workers=1, progress=False)
    assert semiseg.preprocess(tmp_path / "w", workers=1, progress=False)["done"] == 4
    import semiseg.planning as planning  # the modules stay importable beside the functions
    assert planning.load_plans(tmp_path / "w")["target_spacing"] == p["target_spacing"]


def test_cli_choices_come_from_the_registries(capsys):
    from semiseg.cli import build_parser
    from semiseg.methods import available_methods
    from semiseg.nets import available

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    method = next(a for a in train._actions if a.dest == "method")
    assert sorted(method.choices) == sorted(available_methods()) and {"supervised", "cps", "stcn"} <= set(method.choices)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for n in available():
        assert n in out
    # each method's options dataclass made its flags
    assert "--cps-lambda" in out and "--cps-unlabeled-only" in out and "--stcn-crop" in out


def test_train_option_errors_are_clean(tiny, tmp_path, capsys):
    w = tmp_path / "w"
    assert main(["train", str(w), "-o", str(tmp_path / "r"), "--iterations", "1", "--method", "cps",
                 "--partner-options", "{bad", "-q"]) == 2
    assert "--partner-options: not JSON" in capsys.readouterr().err
    assert main(["train", str(w), "-o", str(tmp_path / "r"), "--iterations", "1", "--cps-lambda", "1", "-q"]) == 2
    assert "--cps-lambda is an option of --method cps, not of --method supervised" in capsys.readouterr().err
    assert main(["train", str(w), "-o", str(tmp_path / "r"), "--iterations", "1", "--method", "cps",
                 "--method-options", '{"lamda_max": 1}', "-q"]) == 2
    assert "method 'cps' has no option 'lamda_max'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
