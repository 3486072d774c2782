"""STCN, the space-time correspondence network of video object segmentation (Cheng et al., NeurIPS
2021), as Pham et al.'s Propagation module: masks of a few slices are carried to the others.

- a **key encoder** turns a slice into a key (stride 8) and the skip features of the decoder;
- a **value encoder** turns a slice with one object's mask into a value, fused with the slice's key
  features (STCN feeds the key encoder's features to the value encoder too);
- the **memory read-out**: affinity of every query position to every memory position is the
  negative squared Euclidean distance of their keys (STCN eq. 3; the query's own norm is dropped, it
  does not change the softmax), scaled by 1/sqrt(key channels); each query position keeps its top-k
  memory positions, softmax over them, and reads their values;
- a **decoder** upsamples the read-out with the query's skips to one logit per pixel (one object).

Class-agnostic and binary (Pham et al. 2022: "STCN can be simply trained in the binary manner"): a volume's
classes are propagated one at a time and fused by probability (``semiseg.propagate``). The encoders
are small residual CNNs with group norm (batches of a few triplets, trained from scratch); the widths
scale with ``width`` (default 32 on the CPU: ~1.4 M parameters; STCN's ResNet-50/18 is ~54 M).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..utils import SemisegError
from .registry import PROPAGATION, register


def _gn(c: int) -> nn.GroupNorm:

    return nn.GroupNorm(math.gcd(8, c), c)


class _Res(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.n1 = _gn(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.n2 = _gn(cout)
        self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _gn(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        y = F.relu(self.n1(self.c1(x)))
        return F.relu(self.n2(self.c2(y)) + self.skip(x))


class _Encoder(nn.Module):
    """Features at strides 2, 4 and 8."""

    def __init__(self, cin: int, widths: tuple[int, int, int]):
        super().__init__()
        w2, w4, w8 = widths
        self.s2 = nn.Sequential(_Res(cin, w2, 2))
        self.s4 = nn.Sequential(_Res(w2, w4, 2), _Res(w4, w4))
        self.s8 = nn.Sequential(_Res(w4, w8, 2), _Res(w8, w8))

    def forward(self, x):
        f2 = self.s2(x)
        f4 = self.s4(f2)
        return f2, f4, self.s8(f4)


class _Up(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.skip = nn.Conv2d(cskip, cin, 3, 1, 1)
        self.block = _Res(cin, cout)

    def forward(self, x, skip):
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.block(x + self.skip(skip))


class STCN(nn.Module):
    """``forward(frames, mask0)`` is STCN's training pass over a triplet; inference uses the parts:
    :meth:`encode_key`, :meth:`encode_value`, :meth:`read` and :meth:`decode`."""

    stride = 8

    def __init__(self, in_channels: int = 1, width: int = 32, key_dim: int = 64, value_dim: int = 128,
                 top_k: int = 20):
        super().__init__()
        w = (width, width * 3 // 2, width * 3)
        self.key_encoder = _Encoder(in_channels, w)
        self.key_proj = nn.Conv2d(w[2], key_dim, 3, 1, 1)
        self.key_thin = nn.Conv2d(w[2], value_dim // 2, 3, 1, 1)
        wv = (width // 2, width, width * 2)
        self.value_encoder = _Encoder(in_channels + 1, wv)
        self.value_fuse = nn.Sequential(_Res(wv[2] + w[2], value_dim), _Res(value_dim, value_dim))
        self.dec8 = _Res(value_dim + value_dim // 2, value_dim)
        self.up4 = _Up(value_dim, w[1], value_dim // 2)
        self.up2 = _Up(value_dim // 2, w[0], value_dim // 4)
        self.head = nn.Conv2d(value_dim // 4, 1, 3, 1, 1)
        self.key_dim, self.top_k = key_dim, top_k

    # ----------------------------------------------------------------- parts
    def encode_key(self, img):
        """img (B, C, H, W) -> key (B, Ck, h, w), and the features the decoder and value encoder use."""
        f2, f4, f8 = self.key_encoder(img)
        return self.key_proj(f8), {"f2": f2, "f4": f4, "f8": f8, "thin": self.key_thin(f8)}

    def encode_value(self, img, mask, feats):
        """img (B, C, H, W), mask (B, 1, H, W) in [0, 1] -> value (B, Cv, h, w)."""
        _, _, v8 = self.value_encoder(torch.cat([img, mask], 1))
        return self.value_fuse(torch.cat([v8, feats["f8"]], 1))

    def read(self, mem_key, mem_value, query_key):
        """mem_key (B, Ck, T, h, w), mem_value (B, Cv, T, h, w), query_key (B, Ck, h, w) -> (B, Cv, h, w)."""
        b, ck, h, w = query_key.shape
        mk = mem_key.flatten(2)                                  # B, Ck, N
        qk = query_key.flatten(2)                                # B, Ck, HW
        aff = (2 * mk.transpose(1, 2) @ qk - mk.pow(2).sum(1).unsqueeze(2)) / ck ** 0.5  # B, N, HW
        k = min(self.top_k, aff.shape[1])
        vals, idx = aff.topk(k, dim=1)
        weights = torch.zeros_like(aff).scatter_(1, idx, torch.softmax(vals, dim=1))
        out = mem_value.flatten(2) @ weights                     # B, Cv, HW
        return out.view(b, -1, h, w)

    def decode(self, readout, feats):
        x = self.dec8(torch.cat([readout, feats["thin"]], 1))
        x = self.up2(self.up4(x, feats["f4"]), feats["f2"])
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.head(x)[:, 0]

    # ----------------------------------------------------------------- training
    def forward(self, frames, mask0):
        """STCN's triplet pass: frames (B, 3, C, H, W), the first frame's mask (B, H, W) -> logits of
        frames 1 and 2 (B, 2, H, W); frame 2 reads frames 0 and 1 (the latter with its predicted mask)."""
        b, t, c, h, w = frames.shape
        keys, feats = self.encode_key(frames.flatten(0, 1))
        keys = keys.view(b, t, *keys.shape[1:])
        fr = {k: v.view(b, t, *v.shape[1:]) for k, v in feats.items()}
        at = [{k: v[:, i] for k, v in fr.items()} for i in range(t)]
        v0 = self.encode_value(frames[:, 0], mask0[:, None].float(), at[0])
        l1 = self.decode(self.read(keys[:, 0:1].transpose(1, 2), v0[:, :, None], keys[:, 1]), at[1])
        v1 = self.encode_value(frames[:, 1], torch.sigmoid(l1)[:, None], at[1])
        mem_v = torch.stack([v0, v1], 2)
        l2 = self.decode(self.read(keys[:, 0:2].transpose(1, 2), mem_v, keys[:, 2]), at[2])
        return torch.stack([l1, l2], 1)


@register("stcn", kind=PROPAGATION)
def stcn(cfg: dict, in_channels: int, out_channels: int, width: int = 32, key_dim: int = 64,
         value_dim: int = 128, top_k: int = 20):
    """The Propagation module (class-agnostic: ``out_channels`` is ignored, one object at a time).
    Larger by ``width``/``value_dim`` (``--network-options '{"width": 64}'``)."""
    if width < 8 or width % 2:
        raise SemisegError(f"stcn width must be an even number >= 8, not {width}")
    return STCN(in_channels, width, key_dim, value_dim, top_k)
