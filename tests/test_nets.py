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
    out = net(x)  # a list of heads, full resolution first, each upsampled to the patch
    assert len(out) == max(1, c["n_stages"] - 2) + 1  # main output + deep supervision heads
    for h in out:
        assert list(h.shape) == [2, p["num_classes"], *c["patch_size"]]
    net.eval()
    with torch.no_grad():
        assert list(net(x).shape) == [2, p["num_classes"], *c["patch_size"]]


def test_unknown_network():
    assert "dynunet" in available()
    with pytest.raises(SemisegError, match="unknown network"):
        create_network("nope", {}, 1, 2)


@pytest.mark.parametrize("name,patch,opts", [
    ("unet", [16, 16, 16], {"base_features": 4, "depth": 3}),
    ("unet", [32, 32], {"base_features": 4, "depth": 3}),
    ("vnet", [16, 16, 16], {}),
    ("unetr", [16, 16, 16], {"hidden_size": 48, "mlp_dim": 96, "num_heads": 2, "feature_size": 4}),
    ("swinunetr", [64, 64, 64], {"feature_size": 12}),
    ("dynunet", [16, 16, 16], {"base_features": 4, "depth": 3}),
])
def test_registered_networks(name, patch, opts):
    cfg = {"patch_size": patch, "n_stages": 4, "features_per_stage": [8, 16, 32, 64],
           "pool_kernels": [[2] * len(patch)] * 3, "conv_kernels": [[3] * len(patch)] * 4}
    net = create_network(name, cfg, 1, 3, **opts).eval()
    with torch.no_grad():
        y = net(torch.randn(1, 1, *patch))
    assert list(y.shape) == [1, 3, *patch]
    # every parameter gets a gradient in training (DistributedDataParallel refuses unused ones)
    net.train()
    out = net(torch.randn(2, 1, *patch))  # batch 2: VNet batch-normalises a 1-voxel bottleneck
    sum(o.float().mean() for o in (out if isinstance(out, list) else [out])).backward()
    unused = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, unused[:5]


def test_patch_must_fit_the_network():
    with pytest.raises(SemisegError, match="divisible by 16"):
        create_network("unetr", {"patch_size": [24, 24, 24]}, 1, 2)


@pytest.mark.parametrize("name", ["dynunet", "unetr", "stcn", "transunet"])
def test_unknown_network_options_are_refused_by_name(name):
    from semiseg.nets import network_options

    cfg = {"patch_size": [16, 16], "n_stages": 3, "features_per_stage": [8, 16, 32]}
    with pytest.raises(SemisegError, match=f"network '{name}' has no option 'hiden_size' \\(its options: "):
        create_network(name, cfg, 1, 2, hiden_size=384)
    assert "hiden_size" not in network_options(name) and network_options(name)


def test_cli_refuses_a_misspelled_network_option(tiny_work, tmp_path, capsys):
    from semiseg.cli import main

    args = ["train", str(tiny_work), "-o", str(tmp_path / "r"), "--network", "unetr", "--iterations", "1", "-q",
            "--network-options", '{"hiden_size": 384}']
    assert main(args) == 2
    assert "network 'unetr' has no option 'hiden_size'" in capsys.readouterr().err
    assert not (tmp_path / "r" / "config.json").exists()
