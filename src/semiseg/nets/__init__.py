"""Network registry: name -> factory(configuration, in_channels, out_channels, **options).

A configuration is one entry of ``plans.json["configurations"]`` (patch, pooling and kernels per
axis, features per stage). Adding a network is one decorated function::

    @register("mynet")
    def mynet(cfg, in_channels, out_channels, **opts) -> torch.nn.Module: ...

    net = create_network("dynunet", plans["configurations"]["3d"], 1, 2)
"""
from __future__ import annotations

from typing import Callable

from ..utils import SemisegError

_REGISTRY: dict[str, Callable] = {}


def register(name: str):
    def deco(fn):
        if name in _REGISTRY:
            raise ValueError(f"network {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn
    return deco


def available() -> list[str]:
    return sorted(_REGISTRY)


def create_network(name: str, cfg: dict, in_channels: int, out_channels: int, **opts):
    if name not in _REGISTRY:
        raise SemisegError(f"unknown network {name!r} (available: {', '.join(available())})")
    return _REGISTRY[name](cfg, in_channels, out_channels, **opts)


def features(cfg: dict, base: int | None = None, max_features: int | None = None) -> list[int]:
    """Features per stage from the plan, or re-derived from another base width."""
    if base is None:
        return list(cfg["features_per_stage"])
    mx = max_features or max(cfg["features_per_stage"])
    return [min(base * 2 ** s, mx) for s in range(cfg["n_stages"])]


@register("dynunet")
def dynunet(cfg: dict, in_channels: int, out_channels: int, base_features: int | None = None,
            deep_supervision: bool = True, res_block: bool = False):
    """nnU-Net's U-Net as MONAI's DynUNet, sized by the plan: kernels and strides per stage and
    axis, instance norm, leaky ReLU, deep supervision at every decoder resolution but the coarsest
    (to which nnU-Net gives weight 0). In training mode with deep supervision it returns
    (B, heads, C, *patch), heads upsampled to the patch; in eval mode (B, C, *patch)."""
    from monai.networks.nets import DynUNet

    dim = len(cfg["patch_size"])
    strides = [[1] * dim] + [list(p) for p in cfg["pool_kernels"]]
    n_up = len(strides) - 1
    return DynUNet(dim, in_channels, out_channels, [list(k) for k in cfg["conv_kernels"]], strides, strides[1:],
                   filters=features(cfg, base_features), norm_name="instance", act_name="leakyrelu",
                   deep_supervision=deep_supervision and n_up >= 2, deep_supr_num=max(1, n_up - 2),
                   res_block=res_block)
