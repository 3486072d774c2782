"""Metrics: known answers, the empty-mask convention, agreement with DeepMind's surface-distance."""
import json
import math

import numpy as np
import pytest
import torch
from conftest import geom
from surface_distance import metrics as sd

from semiseg.cli import main
from semiseg.data.io import read_image, write_image
from semiseg.evaluation.metrics import (
    binary_metrics,
    case_metrics,
    counts_dice,
    dice_counts,
    dice_per_class,
    evaluate,
    parse_tolerance,
)


def _shapes(rng, shape=(30, 40, 36)):
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    c = np.array(shape) / 2
    gt = ((z - c[0]) / 9) ** 2 + ((y - c[1]) / 13) ** 2 + ((x - c[2]) / 11) ** 2 <= 1
    pred = ((z - c[0] - 1) / 8) ** 2 + ((y - c[1] + 2) / 14) ** 2 + ((x - c[2]) / 10) ** 2 <= 1
    pred |= rng.random(shape) > 0.999  # a few stray voxels: a long tail for HD95
    return pred, gt


def test_dice_known_answer():
    a = np.zeros((4, 4, 4), bool)
    b = np.zeros((4, 4, 4), bool)
    a[:2] = True
    b[1:3] = True
    assert binary_metrics(a, b, (1, 1, 1), 1)["dsc"] == pytest.approx(0.5)


def test_shifted_box_surface_distance_in_mm():
    gt = np.zeros((20, 20, 20), bool)
    gt[5:15, 5:15, 5:15] = True
    pred = np.roll(gt, 2, axis=2)  # shift 2 voxels along x; x spacing 0.5 mm -> 1 mm
    m = binary_metrics(pred, gt, (3.0, 2.0, 0.5), tolerance_mm=1.0)
    assert m["dsc"] == pytest.approx(0.8)
    assert m["nsd"] == pytest.approx(1.0)  # every surface point within 1 mm
    assert m["hd95"] == pytest.approx(1.0)
    assert binary_metrics(pred, gt, (3.0, 2.0, 0.5), tolerance_mm=0.9)["nsd"] < 1


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (3.0, 0.8, 0.6), (0.5, 2.5, 1.2)])
def test_agrees_with_surface_distance(spacing):
    pred, gt = _shapes(np.random.default_rng(1))
    m = binary_metrics(pred, gt, spacing, tolerance_mm=2.0)
    d = sd.compute_surface_distances(gt, pred, spacing)
    assert abs(m["nsd"] - sd.compute_surface_dice_at_tolerance(d, 2.0)) < 1e-3
    assert abs(m["hd95"] - sd.compute_robust_hausdorff(d, 95)) < 1e-3
    assert abs(m["dsc"] - sd.compute_dice_coefficient(gt, pred)) < 1e-3
    assert m["asd"] == pytest.approx(np.mean(sd.compute_average_surface_distance(d)), abs=1e-3)


def test_empty_mask_convention():
    e = np.zeros((5, 5, 5), bool)
    f = e.copy()
    f[2, 2, 2] = True
    both = binary_metrics(e, e, (1, 1, 1), 1)
    assert both["dsc"] == 1 and both["nsd"] == 1 and both["hd95"] == 0
    one = binary_metrics(e, f, (1, 1, 1), 1)
    assert one["dsc"] == 0 and one["nsd"] == 0 and math.isnan(one["hd95"])


def test_regions_and_per_class_tolerance():
    gt = np.zeros((10, 10, 10), np.uint8)
    gt[2:8, 2:8, 2:8] = 1
    gt[3:7, 3:7, 3:7] = 2
    gt[4:6, 4:6, 4:6] = 3
    pred = gt.copy()
    pred[pred == 3] = 2  # enhancing tumour missed, labelled as core
    r = case_metrics(pred, gt, (1, 1, 1), {"whole": [1, 2, 3], "core": [2, 3], "enh": [3]},
                     parse_tolerance("2,enh=1", ["whole", "core", "enh"]))
    assert r["whole"]["dsc"] == 1 and r["core"]["dsc"] == 1 and r["enh"]["dsc"] == 0
    assert parse_tolerance("liver=5", ["liver", "spleen"]) == {"liver": 5.0, "spleen": 2.0}


def _write_pair(tmp_path, spacing_xyz):
    pred, gt = _shapes(np.random.default_rng(2))
    g = geom(gt.shape, spacing_xyz, (4.0, -3.0, 2.0))
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    write_image(gt.astype(np.uint8), g, tmp_path / "gt" / "A.nii.gz")
    write_image(pred.astype(np.uint8), g, tmp_path / "pred" / "A.nii.gz")
    write_image(gt.astype(np.uint8), g, tmp_path / "gt" / "B.nii.gz")
    return pred, gt


def test_evaluate_uses_header_spacing_in_array_order(tmp_path):
    spacing_xyz = (0.6, 0.8, 3.0)
    pred, gt = _write_pair(tmp_path, spacing_xyz)
    s = evaluate(tmp_path / "pred", tmp_path / "gt", tolerance=2, missing_as_empty=True, workers=1,
                 progress=False, out=tmp_path / "res")
    hdr = read_image(tmp_path / "gt" / "A.nii.gz")[1].spacing  # float32 in the NIfTI header
    d = sd.compute_surface_distances(gt, pred, tuple(reversed(hdr)))  # array order z, y, x
    rows = (tmp_path / "res" / "metrics.csv").read_text().splitlines()
    a = dict(zip(rows[0].split(","), rows[1].split(",")))
    assert abs(float(a["hd95"]) - sd.compute_robust_hausdorff(d, 95)) < 1e-3
    assert abs(float(a["nsd"]) - sd.compute_surface_dice_at_tolerance(d, 2.0)) < 1e-3
    wrong = sd.compute_surface_distances(gt, pred, spacing_xyz)  # the axis-order bug this guards against
    assert abs(sd.compute_robust_hausdorff(wrong, 95) - float(a["hd95"])) > 0.1
    # B has no prediction: scored as empty, its HD95 missing and counted
    assert s["per_region"]["1"]["hd95"]["missing"] == 1
    assert s["missing_predictions"] == ["B"]
    js = json.loads((tmp_path / "res" / "summary.json").read_text())
    assert js["per_region"]["1"]["dsc"]["mean"] == pytest.approx(s["per_region"]["1"]["dsc"]["mean"])


def test_missing_prediction_is_an_error(tmp_path, capsys):
    _write_pair(tmp_path, (1, 1, 1))
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "-q", "--workers", "1"]) == 2
    assert "no prediction for case B" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "-q", "--workers", "1",
                 "--only-predicted"]) == 0


def test_geometry_mismatch_is_an_error(tmp_path, capsys):
    _write_pair(tmp_path, (1, 1, 1))
    a, g = read_image(tmp_path / "pred" / "A.nii.gz")
    write_image(a, geom(a.shape, (1, 1, 2)), tmp_path / "pred" / "A.nii.gz")
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "-q", "--workers", "1",
                 "--only-predicted"]) == 2
    assert "geometry differs" in capsys.readouterr().err


def test_dice_counts_known_values():
    pred = torch.tensor([[0, 1, 1, 2, 2, 0]])
    lab = torch.tensor([[0, 1, 0, 0, 0, 0]])
    c = dice_counts(pred, lab, 3)
    assert c.tolist() == [[1, 2, 1], [0, 2, 0]]
    assert counts_dice(c) == pytest.approx(2 / 3)   # class 2 is absent from the labels: not counted
    assert counts_dice(dice_counts(pred, torch.zeros_like(lab), 3)) is None
    # counts of the parts of a batch add up to the counts of the whole batch (DDP ranks)
    g = torch.Generator().manual_seed(1)
    a, b = torch.randint(0, 3, (4, 5, 5), generator=g), torch.randint(0, 3, (4, 5, 5), generator=g)
    assert np.array_equal(dice_counts(a[:2], b[:2], 3) + dice_counts(a[2:], b[2:], 3), dice_counts(a, b, 3))
    # the per-class Dice of validation is read off the same counts (NumPy in): NaN where both are empty
    assert dice_per_class(pred.numpy(), lab.numpy(), 4)[:2] == pytest.approx([2 / 3, 0.0])
    assert np.isnan(dice_per_class(pred.numpy(), lab.numpy(), 4)[2])
