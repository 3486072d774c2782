"""Augmentation draws are replayable, patches have the right shapes, spatial transforms keep
image and label aligned, and intensity operations do what they say."""
import numpy as np
import torch

from semiseg.training.augmentation import AugmentConfig, draw, extract, intensity


def _case():
    data = np.zeros((1, 20, 30, 40), np.float32)
    seg = np.zeros((20, 30, 40), np.uint8)
    seg[5:15, 10:20, 10:30] = 1
    data[0][seg == 1] = 1.0
    return data, seg


def test_draw_is_replayable():
    cfg = AugmentConfig()
    a = draw(np.random.default_rng([1, 2, 3]), cfg, 3, False)
    b = draw(np.random.default_rng([1, 2, 3]), cfg, 3, False)
    assert a == b
    data, seg = _case()
    i1, l1 = extract(data, seg, [10, 15, 20], [8, 16, 16], a, [1, 1, 1], False, cfg)
    i2, l2 = extract(data, seg, [10, 15, 20], [8, 16, 16], b, [1, 1, 1], False, cfg)
    assert torch.equal(i1, i2) and torch.equal(l1, l2)


def test_plain_crop_pads_outside():
    data, seg = _case()
    p = draw(np.random.default_rng(0), AugmentConfig(enabled=False), 3, False)
    img, lab = extract(data, seg, [0, 0, 0], [8, 8, 8], p, [1, 1, 1], False, AugmentConfig(enabled=False))
    assert img.shape == (1, 8, 8, 8) and lab.shape == (8, 8, 8)
    assert img[:, :3].abs().sum() == 0  # before the case starts: zeros
    img, lab = extract(data, seg, [10, 15, 20], [10, 10, 20], p, [1, 1, 1], False, AugmentConfig(enabled=False))
    assert torch.equal(lab, torch.from_numpy(seg[5:15, 10:20, 10:30]).long())


def test_spatial_keeps_image_and_label_aligned():
    data, seg = _case()
    cfg = AugmentConfig(p_rotate=1, p_scale=1, p_elastic=1, p_mirror=0.5, p_noise=0, p_blur=0, p_brightness=0,
                        p_contrast=0, p_lowres=0, p_gamma=0)
    for s in range(5):
        p = draw(np.random.default_rng(s), cfg, 3, False)
        img, lab = extract(data, seg, [10, 15, 20], [16, 24, 24], p, [1, 1, 1], False, cfg)
        # where the interpolated image is clearly inside/outside the object, the label agrees
        inside, outside = img[0] > 0.9, img[0] < 0.1
        assert (lab[inside] == 1).float().mean() > 0.97
        assert (lab[outside] == 0).float().mean() > 0.97


def test_inplane_rotation_for_thick_slices():
    cfg = AugmentConfig(p_rotate=1)
    p = draw(np.random.default_rng(0), cfg, 3, inplane_only=True)
    assert p["angles"][1:] == [0.0, 0.0]


def test_2d_patch_from_slice():
    data, seg = _case()
    cfg = AugmentConfig(enabled=False)
    p = draw(np.random.default_rng(0), cfg, 2, False)
    img, lab = extract(data, seg, [10, 15, 20], [30, 40], p, [1, 1, 1], False, cfg, slice_axis=0)
    assert img.shape == (1, 30, 40)
    assert torch.equal(lab, torch.from_numpy(seg[10]).long())


def test_intensity_ops():
    x = torch.linspace(0, 1, 1000).view(1, 10, 10, 10)
    assert torch.allclose(intensity(x, [("brightness", 2.0)]), 2 * x)
    c = intensity(x, [("contrast", 0.5)])
    assert abs(float(c.mean() - x.mean())) < 1e-5 and float(c.std()) < float(x.std())
    g = intensity(x, [("gamma", 1.5, False)])  # gamma keeps mean and std
    assert abs(float(g.mean() - x.mean())) < 1e-4 and abs(float(g.std() - x.std())) < 1e-4
    assert intensity(x, [("blur", 1.0)]).std() < x.std()
    assert intensity(x, [("lowres", 0.5)]).shape == x.shape
