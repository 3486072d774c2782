"""Class-aware pseudo-supervision: partial labels, per-class admission, DHC weights."""
import numpy as np
import pytest
import torch
from conftest import train_config

from semiseg.methods import StepContext, create_method
from semiseg.methods.classaware import ClassGate
from semiseg.methods.losses import dice_ce, partial_dice_ce
from semiseg.utils import SemisegError


def _data(seed=0, n=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, n, 4, 5, 6, generator=g), torch.randint(0, n, (2, 4, 5, 6), generator=g)


def test_every_class_admitted_is_dice_ce():
    logits, target = _data()
    assert torch.allclose(partial_dice_ce(logits, target, admitted=np.ones(3, bool)), dice_ce(logits, target),
                          atol=1e-5)


def test_no_class_admitted_teaches_nothing():
    logits, target = _data()
    logits.requires_grad_(True)
    loss = partial_dice_ce(logits, target, admitted=np.array([True, False, False]))
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    assert float(logits.grad.abs().max()) < 1e-6


def test_a_class_not_admitted_is_merged_with_background():
    logits, target = _data()
    adm = np.array([True, True, False])
    base = partial_dice_ce(logits, target, admitted=adm)
    # swapping the background and class-2 logits changes nothing: only their sum counts
    swapped = logits[:, [2, 1, 0]]
    assert torch.allclose(partial_dice_ce(swapped, target, admitted=adm), base, atol=1e-5)
    # and a voxel labeled 2 is read as "background or 2"
    assert torch.allclose(partial_dice_ce(logits, torch.where(target == 2, 0, target), admitted=adm), base, atol=1e-5)
    # with class 2 admitted, the swap matters
    assert not torch.allclose(partial_dice_ce(swapped, target), partial_dice_ce(logits, target))


def test_gate_admits_a_class_once_its_running_dice_reaches_the_threshold():
    label = torch.zeros(2, 8, 8, 8, dtype=torch.long)
    label[:, :4] = 1
    label[:, 6:] = 2
    pred = torch.where(label == 2, 0, label)  # class 1 perfect, class 2 never predicted
    g = ClassGate(gate=0.5)
    assert g.needs_labeled_predictions
    steps = 0
    while steps == 0 or not g.admitted[1]:
        g.update(pred, label, 3)
        steps += 1
    assert steps == 7  # running Dice 1 - 0.9^k reaches 0.5 at k = 7
    assert g.admitted.tolist() == [True, True, False] and g.needs_labeled_predictions
    g2 = ClassGate(gate=0.5)
    g2.load_state_dict(g.state_dict())  # exact resume
    assert g2.admitted.tolist() == g.admitted.tolist() and np.allclose(g2.quality, g.quality)
    g.update(label, label, 3)  # a later good step: class 2's running Dice rises, still < 0.5
    assert not g.admitted[2] and g.quality[1] == pytest.approx(0.1)
    assert ClassGate(gate=0).loss(torch.randn(1, 3, 4, 4, 4), torch.zeros(1, 4, 4, 4, dtype=torch.long)) > 0


def test_distribution_aware_weights_favour_rare_classes():
    g = ClassGate(gate=0, weights=True)
    pseudo = torch.zeros(1, 20, 20, 20, dtype=torch.long)
    pseudo[:, :10] = 1      # half the voxels
    pseudo[:, 10, 0, :8] = 2  # eight voxels
    for _ in range(300):
        g.observe(pseudo, 3)
    w = g.class_weights()
    assert w[2] > w[0] > 0 and w[2] > w[1] and min(w) == pytest.approx(1.0)
    assert ClassGate(gate=0).class_weights() is None


def test_mean_teacher_with_a_background_teacher_learns_only_from_labels():
    """The ACDC-7 collapse: a teacher that predicts background everywhere must not teach it."""
    from semiseg.nets import create_network

    cfg = {"patch_size": [16, 16, 16], "n_stages": 3, "pool_kernels": [[2, 2, 2], [2, 2, 2]],
           "conv_kernels": [[3, 3, 3]] * 3, "features_per_stage": [4, 8, 16], "batch_size": 2}
    m = create_method("mean-teacher", train_config(method="mean-teacher", method_options={"mix": "none"}))
    torch.manual_seed(0)
    nets = {k: create_network(s.network, cfg, 1, 3, **s.options) for k, s in m.networks().items()}
    m.setup(nets)
    with torch.no_grad():  # the teacher's last layer says background, whatever it sees
        for mod in nets["teacher"].modules():
            if isinstance(mod, torch.nn.Conv3d) and mod.out_channels == 3:
                mod.weight.zero_()
                mod.bias.copy_(torch.tensor([10.0, 0.0, 0.0]))
    g = torch.Generator().manual_seed(1)
    label = torch.randint(1, 3, (2, 16, 16, 16), generator=g)
    batch = {"image": torch.randn(2, 1, 16, 16, 16, generator=g), "label": label,
             "image_u": torch.randn(2, 1, 16, 16, 16, generator=g)}
    out = m.losses(nets, batch, StepContext(0, 0.0, None))
    assert float(out["loss_pseudo"]) == pytest.approx(0.0, abs=1e-6) and out["classes_admitted"] == 0


def test_class_gate_is_checked():
    with pytest.raises(SemisegError, match="class-gate"):
        train_config(class_gate=1.5)


def test_supervised_pseudo_labels_teach_only_the_trusted_classes():
    """On pseudo-labeled patches a class the teacher did not learn is merged with background: a
    student predicting it where the pseudo-label says background is not penalised; on true labels it is."""
    net = lambda x: x  # noqa: E731  the "network" returns its input as logits
    says_2 = torch.full((2, 3, 4, 5, 6), -5.0)
    says_2[:, 2] = 5.0  # predicts class 2 everywhere
    says_bg = says_2[:, [2, 1, 0]]  # predicts background everywhere
    label = torch.zeros(2, 4, 5, 6, dtype=torch.long)  # the labels say background
    trusted = create_method("supervised", train_config(pseudo_classes=[1]))
    untrusting = create_method("supervised", train_config())
    st = StepContext(0, 0.0, None)

    def loss(method, logits, pseudo):
        return float(method.losses({"net": net}, {"image": logits, "label": label, "pseudo": torch.tensor(pseudo)},
                                   st)["loss"])

    assert loss(trusted, says_2, [True, True]) == pytest.approx(loss(trusted, says_bg, [True, True]), abs=1e-3)
    assert loss(untrusting, says_2, [True, True]) > loss(untrusting, says_bg, [True, True]) + 3
    # one true and one pseudo-labeled patch: the true one still teaches class 2 away, at half the weight
    gap = loss(trusted, says_2, [False, True]) - loss(trusted, says_bg, [False, True])
    assert gap == pytest.approx((loss(untrusting, says_2, [True, True]) - loss(untrusting, says_bg, [True, True])) / 2,
                                rel=0.05)
