"""The volumetric (and any-dimension) segmentation networks: nnU-Net's U-Net as MONAI's DynUNet,
MONAI's residual UNet, UNETR, SwinUNETR and VNet, each sized by the plan's configuration.

MONAI is imported when a network is built, not with this module: ``import monai`` loads every MONAI
submodule (3 s on 2 CPU cores), which a command that builds no network (``--help``, ``check``,
``plan``, prediction from a model file with an ONNX backend) should not pay."""
from __future__ import annotations

import torch

from ..planning import Configuration
from ..planning.topology import stage_features
from ..utils import SemisegError
from .registry import register, require_divisible


def features(cfg: dict, base: int | None = None, max_features: int | None = None) -> list[int]:
    """Features per stage from the plan, or re-derived from another base width."""
    cfg = Configuration(cfg)
    if base is None:
        return cfg.features_per_stage
    return stage_features(cfg.n_stages, base, max_features or max(cfg.features_per_stage))


@register("dynunet")
def dynunet(cfg: dict, in_channels: int, out_channels: int, base_features: int | None = None,
            deep_supervision: bool = True, res_block: bool = False, depth: int | None = None):
    """nnU-Net's U-Net as MONAI's DynUNet, sized by the plan: kernels and strides per stage and
    axis, instance norm, leaky ReLU, deep supervision at every decoder resolution but the coarsest
    (to which nnU-Net gives weight 0). In training mode with deep supervision it returns a list of
    heads (B, C, *patch), upsampled to the patch, full resolution first (:class:`HeadsAsList`); in
    eval mode (B, C, *patch)."""
    from monai.networks.nets import DynUNet  # noqa: PLC0415 - see the module docstring
    cfg = Configuration(cfg)
    dim = len(cfg.patch_size)
    if depth is not None:  # fewer stages than planned: drop the deepest
        if not 2 <= depth <= cfg.n_stages:
            raise SemisegError(f"dynunet depth must be 2..{cfg.n_stages} for this plan, not {depth}")
        cfg = cfg.truncated(depth)
    strides = [[1] * dim] + cfg.pool_kernels
    n_up = len(strides) - 1
    net = DynUNet(dim, in_channels, out_channels, cfg.conv_kernels, strides, strides[1:],
                  filters=features(cfg, base_features), norm_name="instance", act_name="leakyrelu",
                  deep_supervision=deep_supervision and n_up >= 2, deep_supr_num=max(1, n_up - 2),
                  res_block=res_block)
    return HeadsAsList(net)


class HeadsAsList(torch.nn.Module):
    """Turns DynUNet's stacked deep-supervision output (B, heads, C, *patch) into a list of heads,
    full resolution first, so every network's training output has one shape for the losses."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        y = self.net(x)
        if y.dim() == x.dim() + 1:
            return list(y.unbind(1))
        return y


@register("unetr")
def unetr(cfg: dict, in_channels: int, out_channels: int, feature_size: int = 16, hidden_size: int = 768,
          mlp_dim: int = 3072, num_heads: int = 12):
    """MONAI UNETR (ViT encoder, 16^d tokens); the patch must be divisible by 16. The Transformer
    partner of Luque et al.'s heterogeneous CPS pair. Smaller by ``hidden_size``/``mlp_dim``/``num_heads``."""
    from monai.networks.nets import UNETR  # noqa: PLC0415 - see the module docstring
    patch = Configuration(cfg).patch_size
    require_divisible("unetr", patch, 16)
    net = UNETR(in_channels, out_channels, patch, feature_size=feature_size, hidden_size=hidden_size,
                mlp_dim=mlp_dim, num_heads=num_heads, spatial_dims=len(patch))
    # MONAI's transformer blocks build a cross-attention norm even without cross-attention: parameters
    # that never get a gradient (DistributedDataParallel refuses those). Drop them.
    for blk in net.vit.blocks:
        if not getattr(blk, "with_cross_attention", True) and hasattr(blk, "norm_cross_attn"):
            blk.norm_cross_attn = torch.nn.Identity()
    return net


@register("swinunetr")
def swinunetr(cfg: dict, in_channels: int, out_channels: int, feature_size: int = 24):
    """MONAI SwinUNETR; the patch must be divisible by 32."""
    from monai.networks.nets import SwinUNETR  # noqa: PLC0415 - see the module docstring
    patch = Configuration(cfg).patch_size
    require_divisible("swinunetr", patch, 32)
    return SwinUNETR(in_channels=in_channels, out_channels=out_channels, feature_size=feature_size,
                     spatial_dims=len(patch))


@register("vnet")
def vnet(cfg: dict, in_channels: int, out_channels: int, dropout: float = 0.0):
    """MONAI VNet (16 base features fixed by the architecture); the patch must be divisible by 16."""
    from monai.networks.nets import VNet  # noqa: PLC0415 - see the module docstring
    patch = Configuration(cfg).patch_size
    require_divisible("vnet", patch, 16)
    return VNet(len(patch), in_channels, out_channels, dropout_prob=dropout or None, dropout_prob_down=dropout or None,
                dropout_prob_up=(dropout or None, dropout or 0.0))


@register("unet")
def unet(cfg: dict, in_channels: int, out_channels: int, base_features: int | None = None,
         depth: int | None = None):
    """MONAI's residual UNet (isotropic 2x pooling), 2D or 3D by the plan's patch; width and depth by
    flags (default: the plan's first-stage width, 5 levels)."""
    from monai.networks.nets import UNet  # noqa: PLC0415 - see the module docstring
    cfg = Configuration(cfg)
    patch = cfg.patch_size
    depth = depth or min(5, cfg.n_stages)
    base = base_features or cfg.features_per_stage[0]
    ch = stage_features(depth, base, 320)
    require_divisible("unet", patch, 2 ** (depth - 1))
    return UNet(len(patch), in_channels, out_channels, ch, [2] * (depth - 1), num_res_units=2, norm="instance")
