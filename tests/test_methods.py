"""The method contract: a method written in this file, registered here, trains through the CLI with
no other change (its flags and choices come from the registry), and the engine honours each hook:
a network without an optimizer, ``after_step``, ``predict_with`` recorded for prediction."""
import json
from dataclasses import dataclass, field

import pytest
import torch

from semiseg.cli import main
from semiseg.methods import Method, NetworkSpec, register_method
from semiseg.methods.base import available_methods
from semiseg.methods.losses import seg_loss
from semiseg.utils import SemisegError


@dataclass
class EMAOptions:
    decay: float = field(default=0.5, metadata={"help": "EMA decay of the teacher"})


STEPS = []  # (iteration, teacher weights changed by after_step) of the last run


@register_method("test-ema")
class SupervisedWithEMATeacher(Method):
    """Supervised training of ``net``; ``teacher`` is an exponential moving average of it (no
    optimizer) and is the network that validates and predicts."""
    Options = EMAOptions

    def networks(self):
        spec = NetworkSpec(self.config.network, dict(self.config.network_options))
        return {"net": spec, "teacher": NetworkSpec(spec.network, dict(spec.options), trainable=False)}

    def predict_with(self):
        return ["teacher"]

    def losses(self, nets, batch, ctx):
        return {"loss": seg_loss(nets["net"](batch["image"]), batch["label"], self.config.loss),
                "decay": self.opts.decay}

    @torch.no_grad()
    def after_step(self, nets, ctx):
        before = [p.clone() for p in nets["teacher"].parameters()]
        for t, s in zip(nets["teacher"].parameters(), nets["net"].parameters()):
            t.mul_(self.opts.decay).add_(s.detach(), alpha=1 - self.opts.decay)
        STEPS.append((ctx.iteration, any(not torch.equal(a, b) for a, b in zip(before, nets["teacher"].parameters()))))


def _load(run, name="final"):
    return torch.load(run / "checkpoints" / f"{name}.pt", weights_only=True)


def test_a_method_registered_in_a_test_file_trains_through_the_cli(tiny_work, tmp_path, capsys):
    assert "test-ema" in available_methods()
    STEPS.clear()
    run = tmp_path / "run"
    args = ["train", str(tiny_work), "-o", str(run), "--method", "test-ema", "--test-ema-decay", "0.9",
            "--iterations", "4", "--val-every", "2", "--base-features", "4", "--workers", "0", "--amp", "off", "-q"]
    assert main(args) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["method"] == "test-ema" and cfg["method_options"] == {"decay": 0.9}
    # after_step ran after each of the 4 optimizer steps and moved the teacher every time
    assert [s[0] for s in STEPS] == [0, 1, 2, 3] and all(s[1] for s in STEPS)
    ck = _load(run)
    assert set(ck["nets"]) == {"net", "teacher"}
    assert set(_load(run, "latest")["optims"]) == {"net"}  # the teacher has no optimizer
    # the teacher is not the student: it is their running average
    assert any(not torch.equal(ck["nets"]["net"][k], ck["nets"]["teacher"][k]) for k in ck["nets"]["net"])
    rec = json.loads((run / "networks.json").read_text())
    assert rec["predict_with"] == ["teacher"] and set(rec["networks"]) == {"net", "teacher"}
    assert "val_dice" in (run / "metrics.csv").read_text().splitlines()[0]
    # prediction loads the teacher from the run folder alone
    from semiseg.inference import load_run

    m = load_run(run, "final")
    assert m.names == ["teacher"]
    sd = m.nets[0].state_dict()
    assert all(torch.equal(sd[k], ck["nets"]["teacher"][k]) for k in sd)


def test_a_bad_option_of_the_new_method_is_refused(tiny_work, tmp_path, capsys):
    args = ["train", str(tiny_work), "-o", str(tmp_path / "r"), "--method", "test-ema", "--iterations", "1", "-q"]
    assert main(args + ["--method-options", '{"decy": 0.9}']) == 2
    assert "method 'test-ema' has no option 'decy' (its options: decay)" in capsys.readouterr().err
    sup = ["train", str(tiny_work), "-o", str(tmp_path / "r"), "--test-ema-decay", "0.9", "--iterations", "1", "-q"]
    assert main(sup) == 2  # the default method is supervised
    assert "--test-ema-decay is an option of --method test-ema, not of --method supervised" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_the_contract_refuses_what_is_not_a_method():
    from semiseg.methods import create_method

    with pytest.raises(TypeError, match="must subclass"):
        register_method("not-a-method")(object)
    with pytest.raises(ValueError, match="registered twice"):
        register_method("test-ema")(SupervisedWithEMATeacher)
    with pytest.raises(NotImplementedError, match="must define losses"):
        Method.losses(Method.__new__(Method), {}, {}, {})
    with pytest.raises(SemisegError, match="unknown method 'no-such-method'"):
        create_method("no-such-method", None)
