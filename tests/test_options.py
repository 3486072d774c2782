"""The training flags are generated from TrainConfig: one home per option, the same flags in train,
selftrain and fit, exactly what the user gave reaches the configuration."""
import dataclasses

import pytest

from semiseg.cli import build_parser
from semiseg.training import TrainConfig
from semiseg.training.options import flag_name, given_options, train_fields
from semiseg.utils import SemisegError
from semiseg.workflows import fit as fitmod


def _parser(cmd):
    return build_parser()._subparsers._group_actions[0].choices[cmd]


def _flags(cmd) -> set[str]:
    return {s for a in _parser(cmd)._actions for s in a.option_strings}


def _given(cmd, *argv):
    p = _parser(cmd)
    head = {"train": ["W", "-o", "R"], "selftrain": ["W", "-o", "R"], "fit": ["D", "-o", "O", "--minutes", "1"]}[cmd]
    return given_options(p.parse_args(head + list(argv)), cmd)


def test_every_flagged_field_is_a_flag_of_every_training_command():
    fields = [f for f in dataclasses.fields(TrainConfig) if flag_name(f)]
    assert len(fields) >= 35
    for cmd in ("train", "selftrain", "fit"):
        flags = _flags(cmd)
        for f in fields:  # fit's --minutes/--iterations are its own (its whole budget); its stages set their span
            assert flag_name(f) in flags or (cmd, f.name) == ("fit", "schedule_span"), (cmd, f.name)
    # the fields without a flag: fit's probation, the composite ones (their own flags), --workers of every command
    assert {f.name for f in dataclasses.fields(TrainConfig) if not flag_name(f)} == \
        {"labeled", "give_up", "aug", "workers"}
    assert "--schedule-span" not in _flags("fit")  # fit's stages set their span themselves
    for cmd in ("train", "selftrain", "fit"):
        assert {"--labeled", "--labeled-list", "--no-augment", "--elastic", "--base-features", "--cps-lambda",
                "--workers"} <= _flags(cmd)


def test_only_given_flags_reach_the_configuration_and_defaults_come_from_the_dataclass():
    assert _given("train") == {}
    assert TrainConfig(**_given("train", "--iterations", "5")).to_dict() == TrainConfig(iterations=5).to_dict()
    g = _given("train", "--iterations", "5", "--lr", "0.003", "--optimizer", "adamw", "--depth", "3",
               "--network-options", '{"base_features": 8}', "--elastic", "0.2", "--method", "cps",
               "--cps-lambda", "1", "--class-gate", "0", "--patch-size", "8", "16", "16", "--labeled", "2")
    assert g == {"iterations": 5, "lr": 0.003, "optimizer": "adamw", "network_options": {"depth": 3, "base_features": 8},
                 "aug": {"enabled": True, "p_elastic": 0.2}, "method": "cps", "method_options": {"lambda_max": 1.0},
                 "class_gate": 0.0, "patch_size": [8, 16, 16], "labeled": 2}
    # a boolean flag is True when given, absent otherwise
    assert _given("train", "--class-weights", "--no-augment") == {"class_weights": True, "aug": {"enabled": False}}


def test_a_flag_of_another_method_is_refused_by_name():
    with pytest.raises(SemisegError, match="--cps-lambda is an option of --method cps, not of --method supervised"):
        _given("train", "--cps-lambda", "1")
    with pytest.raises(SystemExit):
        _given("train", "--no-such-flag", "1")


def test_fit_keeps_every_methods_options_for_the_stages_of_that_method():
    g = _given("fit", "--cps-lambda", "1", "--mean-teacher-decay", "0.9", "--fg-oversample", "0.5")
    assert g == {"method_options": {"cps": {"lambda_max": 1.0}, "mean-teacher": {"decay": 0.9}},
                 "fg_oversample": 0.5}
    fitmod.check_options("cps", {"fg_oversample": 0.5, "minutes": 1.0}, {"cps": {"lambda_max": 1.0}})
    with pytest.raises(SemisegError, match="no stage of recipe offline-continued trains with cps"):
        fitmod.check_options("offline-continued", {"minutes": 1.0}, {"cps": {"lambda_max": 1.0}})
    with pytest.raises(SemisegError, match="has no option 'lamda'"):
        fitmod.check_options("cps", {"minutes": 1.0}, {"cps": {"lamda": 1.0}})
    with pytest.raises(SemisegError, match="needs --method"):
        _given("fit", "--method-options", '{"lambda_max": 1}')


def test_a_commands_own_default_is_said_in_its_help(capsys):
    _parser("selftrain").print_help()
    text = " ".join(capsys.readouterr().out.split())
    assert "(default here top:0.5; train's: all)" in text
    _parser("fit").print_help()
    text = " ".join(capsys.readouterr().out.split())
    assert "(default here auto; train's: 3d)" in text and "(default 0.33)" in text


def test_train_fields_follow_the_command():
    assert "minutes" in {f.name for f in train_fields("train")}
    assert "minutes" not in {f.name for f in train_fields("fit")}


@pytest.mark.parametrize("spacing, expect", [((1.0, 1.0, 2.0), "3d"), ((1.0, 1.0, 4.0), "2d")])
def test_train_config_auto_decides_on_the_plan_as_fit_does(tmp_path, capsys, spacing, expect):
    """``train --config auto``: 2D for thick slices (planning.choices, fit's rule), recorded in config.json
    as the configuration chosen, with the 2D caps when the plan's patch or batch exceeds them."""
    import json

    from conftest import make_dataset

    from semiseg.cli import main
    from semiseg.planning import plan
    from semiseg.planning.choices import SLICE_BATCH_MAX
    from semiseg.preprocessing import preprocess

    ds = make_dataset(tmp_path / "D", n=5, shape=(12, 24, 24), spacing_xyz=spacing)
    plan(ds, tmp_path / "w", progress=False, workers=1)
    preprocess(tmp_path / "w", workers=1, progress=False)
    assert main(["train", str(tmp_path / "w"), "-o", str(tmp_path / "r"), "--config", "auto", "--iterations", "1",
                 "--base-features", "4", "--amp", "off", "--workers", "0", "--val-every", "0", "--no-report",
                 "-q"]) == 0
    assert "--config auto: target spacing" in capsys.readouterr().out
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["configuration"] == expect
    if expect == "2d":
        assert cfg["batch_size"] is None or cfg["batch_size"] <= SLICE_BATCH_MAX
