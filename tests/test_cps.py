"""Cross pseudo supervision: the lambda schedule, the loss terms against a hand computation, the
memory-saving mode taking the same step as the joint one, heterogeneous pairs, and whole runs
(both networks checkpointed, logged, ensembled and usable alone)."""
import csv
import json

import numpy as np
import pytest
import torch
from conftest import train_config

from semiseg.methods import StepContext, create_method
from semiseg.methods.cps import CPSOptions, cps_weight, hard_agreement
from semiseg.methods.losses import seg_loss
from semiseg.nets import create_network
from semiseg.training import train
from semiseg.utils import SemisegError

CFG3 = {"patch_size": [16, 16, 16], "n_stages": 3, "pool_kernels": [[2, 2, 2], [2, 2, 2]],
        "conv_kernels": [[3, 3, 3]] * 3, "features_per_stage": [4, 8, 16], "batch_size": 2}


def test_lambda_schedule():
    o = CPSOptions(lambda_max=0.5, wait=0.1, ramp=0.2)
    assert cps_weight(o, 0.0) == 0 and cps_weight(o, 0.099) == 0
    assert cps_weight(o, 0.2) == pytest.approx(0.25)   # half-way up the ramp
    assert cps_weight(o, 0.3) == pytest.approx(0.5) and cps_weight(o, 1.0) == pytest.approx(0.5)
    assert cps_weight(CPSOptions(ramp=0), 0.0) == 0.5
    with pytest.raises(SemisegError, match="memory"):
        CPSOptions(memory="cheap")


def test_hard_agreement_known_values():
    a = torch.tensor([[0, 1, 1, 2]])
    b = torch.tensor([[0, 1, 0, 0]])
    # class 1: 2*1/(2+1) = 2/3; class 2: 0/(1+0) = 0
    assert hard_agreement(a, b, 3) == pytest.approx(1 / 3)
    assert hard_agreement(torch.zeros(1, 4), torch.zeros(1, 4), 3) == 1.0


def _pair(class_gate=0.0, **opts):
    """A CPS method and its two networks, in training mode (every class admitted unless told)."""
    cfg = train_config(method="cps", method_options=opts, class_gate=class_gate)
    m = create_method("cps", cfg)
    torch.manual_seed(0)
    nets = {k: create_network(s.network, CFG3, 1, 3, **s.options) for k, s in m.networks().items()}
    for n in nets.values():
        n.train()
    return m, nets


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(2, 1, 16, 16, 16, generator=g), "label": torch.randint(0, 3, (2, 16, 16, 16), generator=g),
            "image_u": torch.randn(2, 1, 16, 16, 16, generator=g)}


def test_loss_is_supervised_plus_lambda_times_cross_terms():
    m, nets = _pair(ramp=0, lambda_max=0.5)
    b = _batch()
    out = m.losses(nets, b, StepContext(0, 0.5, None))
    x = torch.cat([b["image"], b["image_u"]])
    with torch.no_grad():
        o1, o2 = nets["net1"](x), nets["net2"](x)
        p1, p2 = o1[0].argmax(1), o2[0].argmax(1)

        def part(o, sl):
            return [h[sl] for h in o]
        sup = seg_loss(part(o1, slice(0, 2)), b["label"]) + seg_loss(part(o2, slice(0, 2)), b["label"])
        cps = (seg_loss(part(o1, slice(2, 4)), p2[2:]) + seg_loss(part(o1, slice(0, 2)), p2[:2])
               + seg_loss(part(o2, slice(2, 4)), p1[2:]) + seg_loss(part(o2, slice(0, 2)), p1[:2]))
    assert float(out["loss"].detach()) == pytest.approx(float(sup + 0.5 * cps), rel=1e-5)
    n_cls = o1[0].shape[1]  # the unlabeled patches' agreement of the two networks' hard labels
    assert out["lambda"] == 0.5 and out["agreement_u"] == pytest.approx(hard_agreement(p1[2:], p2[2:], n_cls))
    # the two networks start from different weights (Huang et al. 2022: same architecture, other initialisation)
    w1, w2 = nets["net1"].state_dict(), nets["net2"].state_dict()
    assert any(not torch.equal(w1[k], w2[k]) for k in w1)


def test_wait_period_is_supervised_only():
    m, nets = _pair(wait=0.5)
    out = m.losses(nets, _batch(), StepContext(0, 0.2, None))
    assert out["lambda"] == 0 and float(out["loss_cps_net1"]) == 0 and np.isnan(out["agreement_u"])



def test_gated_schedule_starts_the_ramp_where_the_gate_opened():
    o = CPSOptions(lambda_max=0.5, wait=0.1, ramp=0.2, gate=0.5)
    assert cps_weight(o, 0.5, opened=0.4) == pytest.approx(0.25)  # half-way up a ramp that began at 0.4
    assert cps_weight(o, 0.3, opened=0.05) == pytest.approx(0.5)   # opened during the wait: ramp from the wait
    assert cps_weight(o, 0.39, opened=0.4) == 0
    with pytest.raises(SemisegError, match="gate"):
        CPSOptions(gate=1.0)


def test_gate_keeps_training_supervised_until_the_labeled_dice_reaches_it():
    m, nets = _pair(gate=0.25, ramp=0)
    b = _batch()
    out = m.losses(nets, b, StepContext(0, 0.1, None))
    assert out["lambda"] == 0 and float(out["loss_cps_net1"]) == 0 and np.isnan(out["agreement_u"])
    assert 0 < out["labeled_dice"] < 0.25 and m.opened is None
    # perfect pseudo-labels on the labeled patches: the running mean goes 0.1, 0.19, 0.271 -> opens
    m.quality, lab = 0.0, b["label"]
    for k, progress in enumerate((0.2, 0.3, 0.4)):
        m._update_gate(lab, lab, lab, 2, 3, progress)
        assert (m.opened is None) == (k < 2)
    assert m.opened == 0.4 and m.quality == pytest.approx(0.271)
    out = m.losses(nets, b, StepContext(3, 0.5, None))
    assert out["lambda"] == 0.5 and float(out["loss_cps_net1"]) > 0 and 0 <= out["agreement_u"] <= 1
    m2, _ = _pair(gate=0.25, ramp=0)
    m2.load_state_dict(m.state_dict())
    assert (m2.quality, m2.opened) == (m.quality, m.opened)
    # no gate: open from the start, nothing to log
    m0, _ = _pair(ramp=0)
    assert m0.opened == 0.0 and "labeled_dice" not in m0.losses(nets, b, StepContext(0, 0.0, None))

def test_sequential_memory_mode_takes_the_same_step():
    grads = {}
    for mode in ("joint", "sequential"):
        m, nets = _pair(ramp=0, memory=mode)
        out = m.losses(nets, _batch(), StepContext(0, 0.5, lambda t: t.backward()))
        if out["loss"].requires_grad:
            out["loss"].backward()
        else:
            assert mode == "sequential"
        grads[mode] = (float(out["loss"].detach()), [p.grad.clone() for n in nets.values() for p in n.parameters()])
    (la, ga), (lb, gb) = grads["joint"], grads["sequential"]
    assert la == pytest.approx(lb, rel=1e-5)
    for a, b in zip(ga, gb):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_heterogeneous_pair_cnn_and_transformer():
    m, nets = _pair(partner="unetr", partner_options={"hidden_size": 48, "mlp_dim": 96, "num_heads": 4,
                                                       "feature_size": 8})
    assert type(nets["net2"]).__name__ == "UNETR" and type(nets["net1"]).__name__ == "HeadsAsList"
    out = m.losses(nets, _batch(), StepContext(0, 1.0, None))
    out["loss"].backward()
    assert all(p.grad is not None for p in nets["net2"].parameters() if p.requires_grad)


def test_bad_options_are_refused():
    with pytest.raises(SemisegError, match="method 'cps' has no option 'lamda' \\(its options: partner, "):
        create_method("cps", train_config(method="cps", method_options={"lamda": 1}))
    with pytest.raises(SemisegError, match="method 'supervised' has no option 'lambda_max' \\(its options: mix, box\\)"):
        create_method("supervised", train_config(method_options={"lambda_max": 1}))
    with pytest.raises(SemisegError, match="CPS memory mode"):
        create_method("cps", train_config(method="cps", method_options={"memory": "both"}))


def _rows(run):
    return list(csv.DictReader(open(run / "metrics.csv")))


def test_cps_run_end_to_end(tiny_work, tmp_path):
    from semiseg.inference import load_run, predict_folder

    split = json.loads((tiny_work / "split.json").read_text())
    run = tmp_path / "cps"
    s = train(tiny_work, run, train_config(method="cps", labeled=split["labeled"][:2], iterations=4, val_every=2,
                                           method_options={"ramp": 0.5}), progress=False)
    assert s["unlabeled"] == len(split["labeled"]) - 2 + len(split["unlabeled"])
    rows = _rows(run)
    for k in ("loss_sup_net1", "loss_sup_net2", "loss_cps_net1", "loss_cps_net2", "lambda", "agreement_u"):
        assert k in rows[0], k
    assert [float(r["lambda"]) for r in rows] == pytest.approx([0.0, 0.25 * 2 * 0.5, 0.5, 0.5])
    st = torch.load(run / "checkpoints/latest.pt", weights_only=True)
    assert set(st["nets"]) == set(st["optims"]) == {"net1", "net2"}
    assert "unlabeled patches" not in (run / "log.txt").read_text()
    # the ensemble by default, either network alone on request
    assert load_run(run).names == ["net1", "net2"]
    raw = json.loads((tiny_work / "plans.json").read_text())["dataset_path"]
    out = predict_folder([str(run)], f"{raw}/imagesTr", tmp_path / "p1", nets=["net2"], progress=False)
    assert out["done"] == 6
    with pytest.raises(SemisegError, match="no network 'net3'"):
        load_run(run, nets=["net3"])


def test_cps_without_unlabeled_cases_says_so(tiny_work, tmp_path):
    run = tmp_path / "cps_all"
    train(tiny_work, run, train_config(method="cps", iterations=2), progress=False)
    assert "no unlabeled cases" in (run / "log.txt").read_text()


def test_class_argmax_is_argmax_with_first_class_on_ties():
    from semiseg.utils import class_argmax

    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randint(0, 3, (2, 4, 5, 6, 7), generator=g).to(dtype)  # many ties
        for dim in (0, 1):
            assert torch.equal(class_argmax(x, dim), x.argmax(dim))
    assert class_argmax(torch.zeros(3, 2, 2), 0).eq(0).all()  # all tied: the first class


def test_hard_agreement_is_the_mean_foreground_dice_of_classes_in_either_map():
    a = torch.tensor([[1, 1, 0, 0, 2, 2]])
    b = torch.tensor([[1, 0, 0, 0, 2, 2]])
    assert hard_agreement(a, b, 3) == pytest.approx((2 / 3 + 1.0) / 2)  # class 1: 2*1/(2+1); class 2: 1
    assert hard_agreement(a, torch.zeros_like(a), 3) == pytest.approx(0.0)  # both classes in a only
    assert hard_agreement(torch.zeros_like(a), torch.zeros_like(a), 3) == 1.0  # no class in either
