"""The network registry builds the planned U-Net with the planned output shapes."""
import pytest
import torch

from semiseg.nets import available, create_network
from semiseg.planning import plan
from semiseg.utils import SemisegError


@pytest.mark.parametrize("config", ["3d", "2d"])
def test_dynunet_from_plan(tiny, tmp_path, config):
    p = plan(tiny, tmp_path / "w", progress=False, workers=1)
    c = p["configurations"][config]
    net = create_network("dynunet", c, p["num_input_channels"], p["num_classes"], base_features=8)
    x = torch.randn(2, p["num_input_channels"], *c["patch_size"])
    net.train()
    out = net(x)
    assert out.shape[0] == 2 and out.shape[2] == p["num_classes"] and list(out.shape[3:]) == c["patch_size"]
    assert out.shape[1] == max(1, c["n_stages"] - 2) + 1  # main output + deep supervision heads
    net.eval()
    with torch.no_grad():
        assert list(net(x).shape) == [2, p["num_classes"], *c["patch_size"]]


def test_unknown_network():
    assert "dynunet" in available()
    with pytest.raises(SemisegError, match="unknown network"):
        create_network("nope", {}, 1, 2)
