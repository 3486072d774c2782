"""The 2D networks of Pham et al.'s Reference module, sized to train on a CPU (larger by options):

- ``deeplabv3plus``: a residual CNN encoder (output stride 16), atrous spatial pyramid pooling
  (MONAI's ``SimpleASPP``) and DeepLabV3+'s decoder (the ASPP output upsampled to stride 4 and
  joined with the low-level stride-4 features), local context;
- ``transunet``: TransUNet's hybrid, the same kind of CNN encoder to stride 16, a Transformer
  (MONAI ``TransformerBlock``s over the stride-16 tokens, learned position embeddings) and a
  cascaded upsampling decoder with the CNN's skips, long-range context.

With the slice positional encoding (``semiseg train --slice-position``; Pham et al. 2022, eq. 1 and Fig.
4) the input's last channel is the constant plane PE(k) = k / T of the slice; these networks take
it out of the image, embed it (a small linear layer) and concatenate the embedding with the
decoder's features just before the segmentation head. Both return (B, K, H, W) logits.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..planning import Configuration
from ..utils import SemisegError
from .registry import register, require_divisible


def _norm(c: int) -> nn.Module:
    return nn.InstanceNorm2d(c, affine=True)


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), _norm(cout), nn.LeakyReLU(0.01, True),
                                  nn.Conv2d(cout, cout, 3, 1, 1, bias=False), _norm(cout))
        self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        return F.leaky_relu(self.body(x) + self.skip(x), 0.01)


class _Encoder(nn.Module):
    """Residual stages at strides 2, 4, 8, 16 (widths b, 2b, 4b, 8b)."""

    def __init__(self, cin: int, b: int):
        super().__init__()
        self.widths = [b, 2 * b, 4 * b, 8 * b]
        stages, c = [], cin
        for w in self.widths:
            stages.append(nn.Sequential(_Block(c, w, 2), _Block(w, w)))
            c = w
        self.stages = nn.ModuleList(stages)

    def forward(self, x):
        feats = []
        for s in self.stages:
            x = s(x)
            feats.append(x)
        return feats  # strides 2, 4, 8, 16


class _PositionHead(nn.Module):
    """The segmentation head, with the slice position's embedding concatenated when used."""

    def __init__(self, cin: int, n_out: int, position: bool, embed: int = 16):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(1, embed), nn.LeakyReLU(0.01, True)) if position else None
        self.head = nn.Conv2d(cin + (embed if position else 0), n_out, 1)

    def forward(self, x, pos):
        if self.embed is not None:
            e = self.embed(pos.view(-1, 1)).view(x.shape[0], -1, 1, 1).expand(-1, -1, *x.shape[-2:])
            x = torch.cat([x, e], 1)
        return self.head(x)


def _split_position(x, position: bool):
    """(image, per-sample PE) from an input whose last channel is the PE plane."""
    if not position:
        return x, None
    return x[:, :-1], x[:, -1].flatten(1).mean(1)


class DeepLabV3Plus(nn.Module):
    def __init__(self, cin: int, n_out: int, base: int = 16, aspp: int = 32, position: bool = False):
        super().__init__()
        self.position = position
        self.encoder = _Encoder(cin, base)
        w = self.encoder.widths
        from monai.networks.blocks import SimpleASPP  # noqa: PLC0415 - lazy MONAI, see nets.unets
        self.aspp = SimpleASPP(2, w[3], aspp, kernel_sizes=(1, 3, 3, 3), dilations=(1, 2, 4, 6), norm_type="INSTANCE")
        self.aspp_proj = nn.Sequential(nn.Conv2d(4 * aspp, 4 * aspp, 1, bias=False), _norm(4 * aspp),
                                       nn.LeakyReLU(0.01, True))
        self.low = nn.Sequential(nn.Conv2d(w[1], 48, 1, bias=False), _norm(48), nn.LeakyReLU(0.01, True))
        self.fuse = nn.Sequential(_Block(4 * aspp + 48, 4 * aspp), _Block(4 * aspp, 2 * aspp))
        self.head = _PositionHead(2 * aspp, n_out, position)

    def forward(self, x):
        size = x.shape[-2:]
        x, pos = _split_position(x, self.position)
        f2, f4, f8, f16 = self.encoder(x)
        a = self.aspp_proj(self.aspp(f16))
        a = F.interpolate(a, size=f4.shape[-2:], mode="bilinear", align_corners=False)
        y = self.fuse(torch.cat([a, self.low(f4)], 1))
        y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        return self.head(y, pos)


class TransUNet(nn.Module):
    def __init__(self, cin: int, n_out: int, patch, base: int = 16, hidden: int = 256, layers: int = 4,
                 heads: int = 8, mlp: int = 512, position: bool = False):
        super().__init__()
        self.position = position
        self.encoder = _Encoder(cin, base)
        w = self.encoder.widths
        self.grid = (patch[0] // 16, patch[1] // 16)
        self.embed = nn.Conv2d(w[3], hidden, 1)
        self.pos = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1], hidden))
        nn.init.trunc_normal_(self.pos, std=0.02)
        from monai.networks.blocks import TransformerBlock  # noqa: PLC0415 - lazy MONAI, see nets.unets
        self.blocks = nn.ModuleList([TransformerBlock(hidden, mlp, heads, 0.0) for _ in range(layers)])
        self.norm = nn.LayerNorm(hidden)
        self.unembed = nn.Sequential(nn.Conv2d(hidden, w[3], 3, 1, 1, bias=False), _norm(w[3]),
                                     nn.LeakyReLU(0.01, True))
        self.up = nn.ModuleList([_Block(w[3] + w[2], w[2]), _Block(w[2] + w[1], w[1]), _Block(w[1] + w[0], w[0])])
        self.final = _Block(w[0], w[0])
        self.head = _PositionHead(w[0], n_out, position)

    def forward(self, x):
        size = x.shape[-2:]
        x, pos = _split_position(x, self.position)
        f2, f4, f8, f16 = self.encoder(x)
        t = self.embed(f16)
        b, c, h, w = t.shape
        tok = t.flatten(2).transpose(1, 2)
        pe = self.pos
        if (h, w) != self.grid:  # another input size than the patch: resize the position embeddings
            pe = F.interpolate(pe.transpose(1, 2).reshape(1, c, *self.grid), size=(h, w), mode="bilinear",
                               align_corners=False).flatten(2).transpose(1, 2)
        tok = tok + pe
        for blk in self.blocks:
            tok = blk(tok)
        y = self.unembed(self.norm(tok).transpose(1, 2).reshape(b, c, h, w))
        for up, skip in zip(self.up, (f8, f4, f2)):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = up(torch.cat([y, skip], 1))
        y = self.final(F.interpolate(y, size=size, mode="bilinear", align_corners=False))
        return self.head(y, pos)


def _check_2d(name: str, cfg: dict) -> Configuration:
    """``cfg`` as a Configuration, once it is 2D with sides divisible by 16."""
    cfg = Configuration(cfg)
    if not cfg.is_2d:
        raise SemisegError(f"network {name!r} is 2D: use --config 2d")
    require_divisible(name, cfg.patch_size, 16)
    return cfg


@register("deeplabv3plus")
def deeplabv3plus(cfg: dict, in_channels: int, out_channels: int, base_features: int = 16, aspp_features: int = 32):
    """DeepLabV3+-like CNN (2D; the patch divisible by 16); ~1.3 M parameters at the defaults."""
    pos = _check_2d("deeplabv3plus", cfg).slice_position
    return DeepLabV3Plus(in_channels - pos, out_channels, base_features, aspp_features, pos)


@register("transunet")
def transunet(cfg: dict, in_channels: int, out_channels: int, base_features: int = 16, hidden_size: int = 256,
              num_layers: int = 4, num_heads: int = 8, mlp_dim: int = 512):
    """TransUNet-like CNN + Transformer hybrid (2D; the patch divisible by 16); ~3.4 M parameters at
    the defaults (Pham et al.'s R50-ViT is 105 M: ``hidden_size`` 768, ``num_layers`` 12)."""
    cfg = _check_2d("transunet", cfg)
    pos = cfg.slice_position
    return TransUNet(in_channels - pos, out_channels, cfg.patch_size, base_features, hidden_size,
                     num_layers, num_heads, mlp_dim, pos)
