"""The rules that have one home each: known answers."""
import numpy as np
import pytest
import torch

from semiseg.data.dataset import label_dtype
from semiseg.inference.ensemble import MeanProbs
from semiseg.inference.runs import parse_run_spec
from semiseg.planning import Plans
from semiseg.planning.spacing import ANISOTROPY_THRESHOLD, is_anisotropic, lowest_resolution_axis
from semiseg.utils import SemisegError, bbox_slices


def test_run_spec(tmp_path):
    assert parse_run_spec("runs/a") == ("runs/a", "best")
    assert parse_run_spec("runs/a@final") == ("runs/a", "final")
    assert parse_run_spec("runs/a@", "latest") == ("runs/a", "latest")
    odd = tmp_path / "run@2"  # a folder whose own name holds '@' is taken whole
    odd.mkdir()
    assert parse_run_spec(str(odd)) == (str(odd), "best")
    assert parse_run_spec(f"{odd}@final") == (str(odd), "final")


def test_label_dtype_and_slice_axis():
    assert label_dtype(255) == np.uint8 and label_dtype(256) == np.int16
    assert lowest_resolution_axis([5.0, 1.0, 1.0]) == 0 and lowest_resolution_axis([1.0, 3.0, 1.0]) == 1
    assert lowest_resolution_axis([2.0, 2.0, 1.0]) == 0  # z on ties
    assert lowest_resolution_axis([1.0, 2.0, 2.0]) == 1
    assert ANISOTROPY_THRESHOLD == 3.0 and is_anisotropic([3.1, 1, 1]) and not is_anisotropic([3.0, 1, 1])


def test_mean_probs_weights_members():
    a, b = torch.full((2, 3), 0.2), torch.full((2, 3), 0.8)
    m = MeanProbs()
    m.add(a)          # one network
    m.add(b, 2)       # a run whose two networks' mean is b
    assert len(m) == 3 and torch.allclose(m.mean(), torch.full((2, 3), 0.6))
    with pytest.raises(ValueError):
        MeanProbs().mean()


def test_bbox_slices_and_plans():
    x = np.arange(24).reshape(2, 3, 4)
    assert x[bbox_slices([[0, 1], [1, 3], [2, 4]])].shape == (1, 2, 2)
    p = Plans({"num_classes": 3, "num_input_channels": 1, "target_spacing": [2.0, 1.0, 1.0],
               "labels": {"background": 0, "liver": 1, "spleen": 2}, "inference": {"step": 0.8},
               "configurations": {"2d": {"patch_size": [64, 64], "batch_size": 8, "slice_axis": 0}}})
    assert p.class_names() == ["liver", "spleen"] and p.inference_step == 0.8 and p.anisotropy_threshold == 3.0
    c = p.configuration("2d")
    assert c.is_2d and c.slice_axis == 0 and c.batch_size == 8 and c.patch_size == [64, 64]
    with pytest.raises(SemisegError, match="configuration '3d' is not in plans.json"):
        p.configuration("3d")
    regions = Plans(dict(p, labels={"background": 0, "whole": [1, 2], "core": 2}))
    assert regions.class_names() == ["class1", "class2"]
