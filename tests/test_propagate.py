"""Mask propagation: the STCN parts, its losses and triplets, the volume sweep, the baselines, the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from semiseg.methods.losses import bootstrapped_bce, lovasz_hinge
from semiseg.nets.stcn import STCN
from semiseg.propagation.baselines import nearest_slice, shape_interpolation
from semiseg.propagation.core import annotated_slices, fuse, propagate, uniform_slices
from semiseg.utils import SemisegError


def disk(shape, cy, cx, r):
    y, x = np.mgrid[:shape[0], :shape[1]]
    return (y - cy) ** 2 + (x - cx) ** 2 <= r * r


def test_uniform_slices_spread_over_the_extent():
    lab = np.zeros((30, 4, 4), int)
    lab[10:20, 1, 1] = 1
    assert uniform_slices(lab, 1) == [14]          # round(14.5) -> 14
    assert uniform_slices(lab, 3) == [12, 14, 18]  # centres of three equal parts of 10..19
    assert uniform_slices(np.moveaxis(lab, 0, 2), 3, axis=2) == [12, 14, 18]
    assert uniform_slices(np.zeros((5, 4, 4), int), 3) == []
    assert annotated_slices(lab, 0) == list(range(10, 20))


def test_nearest_slice_copies_the_nearest_and_reaches_half_a_gap():
    sp = np.zeros((12, 8, 8), np.uint8)
    sp[2, 1:3, 1:3] = 1
    sp[8, 4:7, 4:7] = 2
    out = nearest_slice(sp, [2, 8])
    assert (out[4] == sp[2]).all() and (out[6] == sp[8]).all() and (out[5] == sp[2]).all()  # tie -> lower
    # reach: half the gap (3 slices) beyond the outermost annotated ones
    assert (out[0] == sp[2]).all() and (out[11] == sp[8]).all()
    one = nearest_slice(sp, [2])
    assert one[3].sum() == 0 and (one[2] == sp[2]).all()


def test_shape_interpolation_grows_a_disk_between_two_radii():
    sp = np.zeros((5, 40, 40), np.uint8)
    sp[0][disk((40, 40), 20, 20, 4)] = 1
    sp[4][disk((40, 40), 20, 20, 12)] = 1
    out = shape_interpolation(sp, [0, 4], reach=0)
    area = out[2].sum()
    assert abs(area - np.pi * 8 ** 2) / (np.pi * 8 ** 2) < 0.1  # radius 8 halfway
    assert out[1].sum() < area < out[3].sum()
    # a class that ends: the disk shrinks towards the empty slice
    sp2 = np.zeros((5, 40, 40), np.uint8)
    sp2[0][disk((40, 40), 20, 20, 10)] = 1
    sp2[4, 0, 0] = 2  # the slice is annotated (other class), class 1 absent
    out2 = shape_interpolation(sp2, [0, 4], reach=0)
    areas = [int((out2[k] == 1).sum()) for k in range(5)]
    assert areas[0] > areas[1] > areas[2] and areas[4] == 0


def test_lovasz_and_bootstrapped_ce_known_values():
    t = torch.zeros(1, 4, 4)
    t[0, :2] = 1
    perfect = (t * 2 - 1) * 10
    assert lovasz_hinge(perfect, t).item() == pytest.approx(0.0)
    assert lovasz_hinge(torch.zeros(1, 4, 4), t).item() == pytest.approx(1.0)  # all errors 1: 1 - IoU(empty)
    logits = torch.tensor([[[0.0, 0.0], [5.0, -5.0]]])
    target = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    raw = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten()
    assert bootstrapped_bce(logits, target, 1.0).item() == pytest.approx(raw.mean().item())
    assert bootstrapped_bce(logits, target, 0.5).item() == pytest.approx(raw.topk(2).values.mean().item())


def test_stcn_shapes_and_memory_readout():
    torch.manual_seed(0)
    net = STCN(in_channels=2, width=8, key_dim=16, value_dim=16, top_k=1).eval()
    out = net(torch.randn(2, 3, 2, 32, 40), torch.zeros(2, 32, 40))
    assert out.shape == (2, 2, 32, 40)
    # a query whose keys equal the memory's reads, at top-1, the value at its own position
    k = torch.randn(1, 16, 4, 5) * 5
    v = torch.randn(1, 16, 1, 4, 5)
    r = net.read(k[:, :, None], v, k)
    assert torch.allclose(r, v[:, :, 0], atol=1e-5)


def test_fuse_takes_the_most_probable_against_the_background():
    p1 = np.array([[[0.6, 0.3, 0.1]]], np.float32)
    p2 = np.array([[[0.2, 0.4, 0.1]]], np.float32)
    lab = fuse({1: p1, 3: p2})
    # bg = (1-p1)(1-p2) = 0.32, 0.42, 0.81
    assert lab.tolist() == [[[1, 0, 0]]]
    assert fuse({2: np.array([[[0.51, 0.49]]])}).tolist() == [[[2, 0]]]


def test_propagate_keeps_annotations_and_checks_inputs():
    torch.manual_seed(0)
    net = STCN(1, width=8, key_dim=8, value_dim=16).eval()
    vol = np.random.default_rng(0).normal(size=(1, 9, 20, 27)).astype(np.float32)  # sides not multiples of 8
    a3 = np.zeros((20, 27), int)
    a3[5:10, 5:12] = 2
    a6 = np.zeros((20, 27), int)
    a6[6:11, 4:9] = 2
    a6[12:15, 12:20] = 5
    lab, probs = propagate(net, vol, {3: a3, 6: a6}, return_probs=True)
    assert lab.shape == (9, 20, 27) and sorted(probs) == [2, 5]
    assert (lab[3] == a3).all() and (lab[6] == a6).all()
    assert set(np.unique(lab)) <= {0, 2, 5}
    assert all(((p >= 0) & (p <= 1)).all() for p in probs.values())
    with pytest.raises(SemisegError, match="outside"):
        propagate(net, vol, {9: a3})
    with pytest.raises(SemisegError, match="annotation of slice"):
        propagate(net, vol, {2: a3[:10]})
    with pytest.raises(SemisegError, match="no annotated"):
        propagate(net, vol, {})
    empty = propagate(net, vol, {4: np.zeros((20, 27), int)})
    assert empty.sum() == 0


def test_triplets_are_deterministic_and_start_on_the_object(tiny_work):
    from semiseg.propagation.triplets import TripletBatches

    split = json.loads((tiny_work / "split.json").read_text())
    ds = TripletBatches(tiny_work, split["labeled"], 0, 4, seed=3, crop=16, max_skip=3)
    a, b = ds[5], ds[5]
    assert a["frames"].shape == (4, 3, 1, 16, 16) and a["masks"].shape == (4, 3, 16, 16)
    assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["masks"], b["masks"])
    assert not torch.equal(ds[6]["frames"], a["frames"])
    for it in range(10):
        m = ds[it]["masks"]
        assert (m[:, 0].flatten(1).sum(1) > 0).all()  # the reference slice shows its object
        assert set(torch.unique(m).tolist()) <= {0, 1}
    with pytest.raises(SemisegError, match="multiple of 8"):
        TripletBatches(tiny_work, split["labeled"], 0, 4, seed=0, crop=20)


def test_stcn_method_logs_and_refuses_bad_setups(tiny_work, tmp_path, stcn_run):
    from semiseg.training import TrainConfig, train

    rows = (stcn_run / "metrics.csv").read_text().splitlines()
    assert "loss_lovasz" in rows[0] and "val_dice" in rows[0]
    # exact resume after kill -9 and DDP: tests/test_engine.py (parametrized over the methods)
    with pytest.raises(SemisegError, match="--config 2d"):
        train(tiny_work, tmp_path / "c", TrainConfig(method="stcn", iterations=1, workers=0), progress=False)
    from semiseg.methods import create_method

    with pytest.raises(SemisegError, match="method 'stcn' has no option 'nope'"):
        create_method("stcn", TrainConfig(method="stcn", iterations=1, method_options={"nope": 1}))


def test_propagate_cli_writes_the_image_geometry(tiny_work, stcn_run, tmp_path):
    from semiseg.cli import main
    from semiseg.data.io import read_image, write_image

    ds = Path(json.loads((tiny_work / "plans.json").read_text())["dataset_path"])
    img = ds / "imagesTr" / "CASE_005_0000.nii.gz"
    gt, g = read_image(ds / "labelsTr" / "CASE_005.nii.gz")
    ks = uniform_slices(gt, 2, 0)
    sparse = np.zeros_like(gt)
    sparse[ks] = gt[ks]
    write_image(sparse, g, tmp_path / "sparse.nii.gz")
    out = tmp_path / "out" / "full.nii.gz"
    assert main(["propagate", str(stcn_run), "-i", str(img), "--labels", str(tmp_path / "sparse.nii.gz"),
                 "-o", str(out), "-q"]) == 0
    full, g2 = read_image(out)
    assert full.shape == gt.shape and not g.mismatch(g2)
    assert (full[ks] == gt[ks]).all()
    # a listed slice without labels is annotated as empty
    assert main(["propagate", f"{stcn_run}@final", "-i", str(img), "--labels", str(tmp_path / "sparse.nii.gz"),
                 "-o", str(out), "--slices", ",".join(map(str, ks + [0])), "-q"]) == 0
    assert read_image(out)[0][0].sum() == 0
    # bad inputs: a clear message, exit code 2 (semiseg's for errors), nothing written
    bad = tmp_path / "bad.nii.gz"
    write_image(sparse[:, :-1], g.__class__(g.spacing, g.origin, g.direction), bad)
    out2 = tmp_path / "never.nii.gz"
    assert main(["propagate", str(stcn_run), "-i", str(img), "--labels", str(bad), "-o", str(out2), "-q"]) == 2
    assert main(["propagate", str(stcn_run), "-i", str(img), "--labels", str(tmp_path / "sparse.nii.gz"),
                 "-o", str(out2), "--slices", "99", "-q"]) == 2
    assert not out2.exists()


def test_choose_references_rules():
    m = {0: np.zeros((4, 4), int), 3: np.zeros((4, 4), int), 6: np.zeros((4, 4), int), 9: np.zeros((4, 4), int)}
    m[3][:2, :2] = 1           # class 1: 4 px
    m[6][:3, :3] = 1           # class 1: 9 px (its largest)
    m[6][3, :] = 2             # class 2: 4 px
    m[9][:, :] = 2             # class 2: 16 px (its largest)
    from semiseg.propagation.core import choose_references

    assert choose_references(m, "largest", 2) == [6, 9]
    assert choose_references(m, "largest", 10) == [3, 6, 9]  # never an empty slice
    assert choose_references(m, "per_class") == [6, 9]
    with pytest.raises(SemisegError, match="largest or per_class"):
        choose_references(m, "nope")


def test_automatic_propagation_cli(tiny_work, stcn_run, tmp_path):
    from semiseg.cli import main
    from semiseg.data.io import read_image
    from semiseg.training import TrainConfig, train

    ref = tmp_path / "ref2d"
    train(tiny_work, ref, TrainConfig(configuration="2d", iterations=3, val_every=0, workers=0, slice_position=True,
                                      network_options={"base_features": 4}), progress=False)
    ds = Path(json.loads((tiny_work / "plans.json").read_text())["dataset_path"])
    img = ds / "imagesTr" / "CASE_005_0000.nii.gz"
    out = tmp_path / "auto.nii.gz"
    assert main(["propagate", str(stcn_run), "-i", str(img), "--reference", str(ref), "--k", "4", "-o", str(out),
                 "-q"]) == 0
    lab, g = read_image(out)
    g0 = read_image(img)[1]
    assert lab.shape == read_image(img)[0].shape and not g0.mismatch(g)
    # the same from model files (semiseg export; the STCN network has no ONNX graph, torch runs it)
    from semiseg.inference.export import export_model

    export_model([str(stcn_run)], tmp_path / "stcn.zip", onnx=False)
    export_model([str(ref)], tmp_path / "ref.zip", onnx=False)
    out_m = tmp_path / "auto_m.nii.gz"
    assert main(["propagate", "-m", str(tmp_path / "stcn.zip"), "-i", str(img), "--reference",
                 str(tmp_path / "ref.zip"), "--k", "4", "-o", str(out_m), "-q"]) == 0
    assert np.array_equal(read_image(out_m)[0], lab)
    assert main(["propagate", str(stcn_run), "-m", str(tmp_path / "stcn.zip"), "-i", str(img), "--reference",
                 str(ref), "-o", str(out_m), "-q"]) == 2  # the run given twice
    # a 3D run cannot be a Reference module; a 3D run is not a propagation run either
    r3 = tmp_path / "r3d"
    train(tiny_work, r3, TrainConfig(iterations=1, val_every=0, workers=0, network_options={"base_features": 4}),
          progress=False)
    assert main(["propagate", str(stcn_run), "-i", str(img), "--reference", str(r3), "-o", str(out), "-q"]) == 2
    assert main(["propagate", str(r3), "-i", str(img), "--reference", str(ref), "-o", str(out), "-q"]) == 2


def test_slice_networks_and_positional_encoding(tiny_work):
    from semiseg.inference.sliding_window import sliding_window_probs
    from semiseg.nets import create_network
    from semiseg.planning import load_plans
    from semiseg.preprocessing import load_case
    from semiseg.training import TrainConfig
    from semiseg.training.sampling import PatchBatches

    torch.manual_seed(0)
    for name in ("deeplabv3plus", "transunet"):
        net = create_network(name, {"patch_size": [32, 48], "slice_position": True}, 2, 3,
                             **({"hidden_size": 32, "mlp_dim": 64, "num_heads": 4} if name == "transunet" else {}))
        x = torch.randn(2, 1, 32, 48)
        a = net(torch.cat([x, torch.zeros(2, 1, 32, 48)], 1))
        b = net(torch.cat([x, torch.ones(2, 1, 32, 48)], 1))
        assert a.shape == (2, 3, 32, 48) and not torch.allclose(a, b)  # the position reaches the head
        assert net(torch.randn(1, 2, 48, 64)).shape == (1, 3, 48, 64)  # other sizes at inference
    with pytest.raises(SemisegError, match="2D"):
        create_network("transunet", {"patch_size": [32, 32, 32]}, 1, 2)
    plans = load_plans(tiny_work)
    cfg = TrainConfig(configuration="2d", iterations=1, slice_position=True).resolved_configuration(plans)
    ds = PatchBatches(tiny_work, ["CASE_000"], cfg, plans["target_spacing"], 2, 0, TrainConfig(iterations=1).aug)
    data = load_case(tiny_work, "CASE_000")[0]
    T = data.shape[1 + cfg["slice_axis"]]
    img, _, _ = ds.sample(0, 0, True)
    pe = img[-1]
    assert img.shape[0] == plans["num_input_channels"] + 1 and torch.all(pe == pe.flatten()[0])
    assert 0 <= float(pe.flatten()[0]) < 1 and float(pe.flatten()[0]) * T == pytest.approx(round(float(pe.flatten()[0]) * T))
    with pytest.raises(SemisegError, match="2D"):
        TrainConfig(iterations=1, slice_position=True).resolved_configuration(plans)
    # predicting some slices only gives those slices' probabilities, as the whole volume does
    net = create_network("dynunet", cfg, plans["num_input_channels"] + 1, plans["num_classes"]).eval()
    full = sliding_window_probs([net], data, cfg)
    some = sliding_window_probs([net], data, cfg, slices=[1, 3])
    assert torch.allclose(some, full.movedim(1 + cfg["slice_axis"], 1)[:, [1, 3]], atol=1e-5)
