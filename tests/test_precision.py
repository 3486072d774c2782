"""``--amp auto`` on a CPU is decided by timing the run's real step, not by a capability flag: each
outcome of the probe forced, the choice recorded and kept on resume, weights and random streams
untouched, and inference following the run's choice on the same host."""
import csv
import json

import pytest
import torch
from conftest import train_config

from semiseg.inference.runs import load_run
from semiseg.training import precision, train
from semiseg.utils import device as dev


def _losses(run):
    return [float(r["loss"]) for r in csv.DictReader(open(run / "metrics.csv"))]


@pytest.fixture
def bf16_offered(monkeypatch):
    """A CPU whose oneDNN offers bf16 (natively or emulated: the flag cannot tell)."""
    monkeypatch.setattr(dev, "cpu_bf16_supported", lambda: True)


@pytest.mark.parametrize("fp32_s,bf16_s,chosen", [(1.0, 0.5, "bf16"), (1.0, 2.1, "off"), (1.0, 0.95, "off")])
def test_probe_outcomes_are_recorded_and_followed(tiny_work, tmp_path, monkeypatch, bf16_offered, fp32_s, bf16_s,
                                                  chosen):
    """Native bf16 (twice as fast) -> bf16; emulated (2.1x slower) or a gain within noise -> fp32.
    The run trains as if that precision had been asked for: the same losses as --amp CHOSEN."""
    monkeypatch.setattr(precision, "probe_times", lambda *a: (fp32_s, bf16_s))
    run = tmp_path / "auto"
    s = train(tiny_work, run, train_config(iterations=3, amp="auto"), progress=False)
    rec = json.loads((run / "precision.json").read_text())
    assert rec["amp"] == chosen == s["amp"] and rec["how"] == "probe" and rec["host"] == dev.host_id()
    assert (rec["fp32_s"], rec["bf16_s"]) == (fp32_s, bf16_s)
    assert "precision:" in (run / "log.txt").read_text()
    forced = tmp_path / "forced"
    train(tiny_work, forced, train_config(iterations=3, amp=chosen), progress=False)
    assert _losses(run) == _losses(forced)
    assert json.loads((forced / "precision.json").read_text())["how"] == "asked (--amp)"


def test_the_real_probe_touches_no_weights_and_no_random_stream(tiny_work, tmp_path, monkeypatch, bf16_offered):
    """The real probe runs (forward + backward both ways) and the run that follows is bit-identical to one
    that asked for the same precision without probing."""
    run = tmp_path / "auto"
    train(tiny_work, run, train_config(iterations=3, amp="auto", seed=5), progress=False)
    rec = json.loads((run / "precision.json").read_text())
    assert rec["how"] == "probe" and rec["fp32_s"] > 0 and rec["bf16_s"] > 0
    forced = tmp_path / "forced"
    train(tiny_work, forced, train_config(iterations=3, amp=rec["amp"], seed=5), progress=False)
    assert _losses(run) == _losses(forced)
    a = torch.load(run / "checkpoints/final.pt", weights_only=True)["nets"]["net"]
    b = torch.load(forced / "checkpoints/final.pt", weights_only=True)["nets"]["net"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_probe_restores_buffers_and_rng(monkeypatch):
    """Running statistics (BatchNorm) and the torch generator are as before the probe."""
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3, padding=1), torch.nn.BatchNorm3d(2))

    class M:
        def losses(self, nets, batch, ctx):
            return {"loss": nets["net"](batch["image"]).float().mean()}

        def state_dict(self):
            return {"k": 1}

        def load_state_dict(self, s):
            assert s == {"k": 1}

    before = {k: v.clone() for k, v in net.state_dict().items()}
    torch.manual_seed(0)
    batch = {"image": torch.randn(2, 1, 4, 6, 6)}
    rng = torch.get_rng_state()
    rec = precision.probe(M(), {"net": net}, batch, torch.device("cpu"))
    assert rec["amp"] in ("off", "bf16") and rec["how"] == "probe"
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())


def test_resume_keeps_the_choice(tiny_work, tmp_path, monkeypatch, bf16_offered):
    """A resumed run keeps the precision it started with, even where a new probe would say otherwise."""
    monkeypatch.setattr(precision, "probe_times", lambda *a: (1.0, 0.5))
    run = tmp_path / "r"
    train(tiny_work, run, train_config(iterations=2, amp="auto"), progress=False)
    cfg = json.loads((run / "config.json").read_text())
    cfg["iterations"] = 4
    (run / "config.json").write_text(json.dumps(cfg))
    monkeypatch.setattr(precision, "probe_times", lambda *a: pytest.fail("probed again on resume"))
    s = train(tiny_work, run, train_config(), resume=True, progress=False)
    assert s["iterations"] == 4 and s["amp"] == "bf16"
    assert json.loads((run / "precision.json").read_text())["amp"] == "bf16"


def test_no_probe_where_nothing_needs_measuring(monkeypatch):
    """A CPU without bf16 is fp32, CUDA is fp16, and what the user asks for is kept, all without a probe."""
    never = lambda: pytest.fail("measured")  # noqa: E731
    monkeypatch.setattr(dev, "cpu_bf16_supported", lambda: False)
    assert precision.decide("x", "auto", torch.device("cpu"), False, never)["amp"] == "off"
    assert precision.decide("x", "auto", torch.device("cuda"), False, never)["amp"] == "fp16"
    monkeypatch.setattr(dev, "cpu_bf16_supported", lambda: True)
    assert precision.decide("x", "bf16", torch.device("cpu"), False, never)["amp"] == "bf16"
    assert precision.decide("x", "off", torch.device("cpu"), False, never)["amp"] == "off"


def test_inference_follows_the_run_on_its_host_else_measures(tiny_work, tmp_path, monkeypatch, bf16_offered):
    """predict/pseudolabel/validation of a run use its recorded choice on the host that measured it; on
    another host (another id) they measure this one (:func:`host_bf16_faster`); --amp wins."""
    monkeypatch.setattr(precision, "probe_times", lambda *a: (1.0, 0.5))
    run = tmp_path / "r"
    train(tiny_work, run, train_config(iterations=2, amp="auto"), progress=False)
    monkeypatch.setattr(dev, "host_bf16_faster", lambda: pytest.fail("measured though the run's host is this one"))
    assert load_run(run).amp == "bf16"
    assert load_run(run, amp="off").amp == "off"
    rec = json.loads((run / "precision.json").read_text())
    (run / "precision.json").write_text(json.dumps(dict(rec, host="another CPU")))
    monkeypatch.setattr(dev, "host_bf16_faster", lambda: (False, 1.0, 2.0))  # this host emulates bf16
    assert load_run(run).amp == "off"
    monkeypatch.setattr(dev, "host_bf16_faster", lambda: (True, 1.0, 0.4))
    assert load_run(run).amp == "bf16"


def test_host_id_tells_an_isa_cap_apart(monkeypatch):
    """oneDNN capped below AVX512-BF16 (ONEDNN_MAX_CPU_ISA) is another host for the precision."""
    dev.host_id.cache_clear()
    a = dev.host_id()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI")
    dev.host_id.cache_clear()
    try:
        assert dev.host_id() != a and "AVX512_CORE_VNNI" in dev.host_id()
    finally:
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
        dev.host_id.cache_clear()


def test_decision_rule():
    assert dev.bf16_wins(1.0, 0.5) and dev.bf16_wins(1.0, 0.9)
    assert not dev.bf16_wins(1.0, 0.95) and not dev.bf16_wins(1.0, 2.6)
