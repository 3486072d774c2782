"""Loss values against hand-computed answers."""
import math

import torch

from semiseg.methods.losses import deep_supervision_weights, dice_ce, seg_loss, soft_dice_loss


def test_soft_dice_perfect_and_wrong():
    t = torch.zeros(1, 4, 4, dtype=torch.long)
    t[0, :2] = 1
    perfect = torch.stack([(t == 0).float(), (t == 1).float()], 1) * 100
    assert soft_dice_loss(perfect, t) < 1e-4
    wrong = torch.stack([(t == 1).float(), (t == 0).float()], 1) * 100
    assert soft_dice_loss(wrong, t) > 0.999


def test_soft_dice_half():
    # uniform logits: p = 0.5 everywhere; class 1 covers half of 16 voxels -> 2*4/(8+8) = 0.5
    t = torch.zeros(1, 4, 4, dtype=torch.long)
    t[0, :2] = 1
    assert abs(float(soft_dice_loss(torch.zeros(1, 2, 4, 4), t)) - 0.5) < 1e-4


def test_dice_ce_and_deep_supervision():
    t = torch.zeros(1, 4, 4, dtype=torch.long)
    z = torch.zeros(1, 2, 4, 4)
    assert abs(float(dice_ce(z, t, dice_weight=0)) - math.log(2)) < 1e-6
    w = deep_supervision_weights(3)
    assert abs(sum(w) - 1) < 1e-9 and abs(w[0] / w[1] - 2) < 1e-9
    assert abs(float(seg_loss([z, z, z], t, "ce")) - math.log(2)) < 1e-6


def test_per_sample_dice_is_decomposable():
    # the mean over a batch equals the mean of the halves' losses: DDP shards give the same gradient
    torch.manual_seed(0)
    x = torch.randn(4, 3, 6, 6)
    t = torch.randint(0, 3, (4, 6, 6))
    full = dice_ce(x, t)
    halves = (dice_ce(x[:2], t[:2]) + dice_ce(x[2:], t[2:])) / 2
    assert torch.allclose(full, halves, atol=1e-6)
