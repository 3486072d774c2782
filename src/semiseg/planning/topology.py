"""The U-Net topology of a patch (nnU-Net's rules): pooling per axis, kernel sizes, depth, widths."""
from __future__ import annotations

import numpy as np

from ..utils import SemisegError


def unet_topology(spacing, patch, max_stages: int = 6, min_feature_map: int = 4) -> dict:
    """nnU-Net-style pooling/kernels: pool an axis while its map stays >= ``min_feature_map`` and
    its (current) spacing is within 2x of the finest poolable axis; 3-kernels once an axis's
    spacing is within 2x of the finest, 1 before (so thick slices are not convolved across)."""
    sp = np.asarray(spacing, float).copy()
    size = np.asarray(patch, int).copy()
    dim = len(sp)
    conv_k = []
    pools = []
    while True:
        conv_k.append([3 if sp[a] / sp.min() < 2 else 1 for a in range(dim)])
        if len(pools) >= max_stages - 1:
            break
        valid = [a for a in range(dim) if size[a] >= 2 * min_feature_map]
        if not valid:
            break
        mn = min(sp[a] for a in valid)
        axes = [a for a in valid if sp[a] / mn < 2]
        if not axes:
            break
        p = [2 if a in axes else 1 for a in range(dim)]
        pools.append(p)
        sp = sp * np.array(p)
        size = size // np.array(p)
    div = np.prod(np.array(pools), 0).astype(int).tolist() if pools else [1] * dim
    return {"pool_kernels": pools, "conv_kernels": conv_k, "n_stages": len(conv_k),
            "divisible_by": div}


def stage_features(n_stages: int, base: int, max_f: int) -> list[int]:
    """nnU-Net's widths: the base doubled per stage, capped at ``max_f``."""
    return [min(base * 2 ** s, max_f) for s in range(n_stages)]


def repatch(cfg: dict, patch: list, target_spacing) -> dict:
    """A configuration re-derived for another ``patch`` (nnU-Net's rules), keeping the widths' base
    and maximum. ``target_spacing`` is the plan's (z, y, x); a 2D configuration drops its slice axis."""
    sp = list(target_spacing)
    if len(patch) == 2:
        sp = [s for a, s in enumerate(sp) if a != cfg.get("slice_axis", 0)]
    topo = unet_topology(sp, patch)
    base = cfg["features_per_stage"][0]
    mx = max(cfg["features_per_stage"])
    out = dict(cfg, patch_size=patch, **{k: topo[k] for k in ("n_stages", "pool_kernels", "conv_kernels")})
    out["features_per_stage"] = stage_features(topo["n_stages"], base, mx)
    bad = [p for p, d in zip(patch, topo["divisible_by"]) if p % d]
    if bad:
        raise SemisegError(f"--patch-size {patch}: each side must be divisible by its total pooling "
                           f"{topo['divisible_by']} for this spacing")
    return out
