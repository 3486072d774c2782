"""The run configuration: JSON round trip, overrides, and clear errors."""
import json

import pytest

from semiseg.training import TrainConfig
from semiseg.utils import SemisegError


def test_round_trip_and_aug_dict():
    c = TrainConfig(iterations=5, aug={"p_elastic": 0.3, "scale": [0.8, 1.2]}, network_options={"depth": 3})
    d = json.loads(json.dumps(c.to_dict()))
    c2 = TrainConfig.from_dict(d)
    assert c2.to_dict() == c.to_dict() and c2.aug.p_elastic == 0.3 and c2.aug.scale == (0.8, 1.2)
    assert c.lr0 == 1e-2 and TrainConfig(iterations=1, optimizer="adamw").lr0 == 1e-3


@pytest.mark.parametrize("kw,msg", [({}, "give a budget"), ({"iterations": 0}, "must be positive"),
                                    ({"iterations": 1, "optimizer": "adam"}, "optimizer"),
                                    ({"iterations": 1, "val_step": 0}, "val-step")])
def test_bad_values(kw, msg):
    with pytest.raises(SemisegError, match=msg):
        TrainConfig(**kw)


def test_unknown_field():
    with pytest.raises(SemisegError, match="unknown configuration fields: nope"):
        TrainConfig.from_dict({"iterations": 1, "nope": 2})


def test_patch_override_rederives_topology():
    plans = {"target_spacing": [1.0, 1.0, 1.0], "configurations": {"3d": {
        "patch_size": [32, 32, 32], "batch_size": 2, "n_stages": 4, "features_per_stage": [16, 32, 64, 128],
        "pool_kernels": [[2, 2, 2]] * 3, "conv_kernels": [[3, 3, 3]] * 4}}}
    c = TrainConfig(iterations=1, patch_size=[16, 32, 64], batch_size=4).resolved_configuration(plans)
    assert c["patch_size"] == [16, 32, 64] and c["batch_size"] == 4
    assert len(c["pool_kernels"]) == c["n_stages"] - 1 and c["features_per_stage"][0] == 16
    with pytest.raises(SemisegError, match="divisible"):
        TrainConfig(iterations=1, patch_size=[17, 32, 64]).resolved_configuration(plans)
    with pytest.raises(SemisegError, match="not in plans.json"):
        TrainConfig(iterations=1, configuration="2d").resolved_configuration(plans)
