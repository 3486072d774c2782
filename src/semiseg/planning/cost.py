"""The cost model and nnU-Net's patch/batch search under a memory and a compute budget.

A configuration is planned for this machine's CPU (memory and seconds per iteration, so a
30-minute budget still gives hundreds of iterations) and, beside it, for a GPU (memory only,
mixed precision), so a plan says how it would scale."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .topology import stage_features, unet_topology

# Cost model constants. CPU: calibrated on a 2-core machine with torch 2.13 by
# benchmarks/plan_cost_model.py (its measurements: docs/benchmarks.md). GPU: a mid-range card in
# mixed precision, not calibrated (no GPU on the machine the project is developed on).
DEVICE_PROFILES = {
    "cpu": {"conv_flops": 2.0e11, "mem_bandwidth": 6.5e9, "bytes_per_value": 4, "overhead_gb": 0.45},
    "gpu": {"conv_flops": 2.0e13, "mem_bandwidth": 4e11, "bytes_per_value": 2, "overhead_gb": 1.5},
}


def estimate_cost(patch, topo: dict, in_ch: int, n_classes: int, base: int, max_f: int,
                  batch: int, device: str) -> dict:
    """Training cost of one iteration of a U-Net (deep supervision, instance norm, 2 convs per
    block): peak memory in GB and seconds. An analytic model (activations kept for backward,
    parameters with optimizer state, conv FLOPs and elementwise traffic)."""
    prof = DEVICE_PROFILES[device]
    bpv = prof["bytes_per_value"]
    feats = stage_features(topo["n_stages"], base, max_f)
    vox = np.prod(np.asarray(patch, float))
    acts = 0.0
    flops = 0.0
    params = 0.0
    cin = in_ch
    sizes = []
    for s, (f, k) in enumerate(zip(feats, topo["conv_kernels"])):
        if s > 0:
            vox /= np.prod(topo["pool_kernels"][s - 1])
        sizes.append(vox)
        kk = float(np.prod(k))
        # encoder: 2 convs (conv out, norm out, activation out kept per conv)
        acts += 6 * vox * f
        flops += 2 * vox * kk * (cin * f + f * f)
        params += kk * (cin * f + f * f)
        cin = f
    for s in range(topo["n_stages"] - 2, -1, -1):
        f, vox = feats[s], sizes[s]
        kk = float(np.prod(topo["conv_kernels"][s]))
        pk = float(np.prod(topo["pool_kernels"][s]))
        # decoder: transposed conv output, concatenation (2f), 2 convs, a 1x1 seg head
        acts += (1 + 2 + 6) * vox * f + 3 * vox * n_classes
        flops += 2 * vox * (feats[s + 1] * f) + 2 * vox * kk * (2 * f * f + f * f) + 2 * vox * f * n_classes
        params += pk * feats[s + 1] * f + kk * 3 * f * f
    acts += sizes[0] * (in_ch + 4 * n_classes)  # input, softmax, one-hot, loss terms at full res
    train_flops = 3.0 * flops * batch
    act_bytes = acts * batch * bpv
    mem = act_bytes * 1.15 + params * 4 * 4 + prof["overhead_gb"] * 1e9
    secs = train_flops / prof["conv_flops"] + 3 * act_bytes / prof["mem_bandwidth"]
    return {"memory_gb": mem / 1e9, "seconds": secs, "params_m": params / 1e6,
            "gflops_per_iteration": train_flops / 1e9}


@dataclass
class DeviceBudget:
    """What one training step may cost on a kind of device (memory, seconds per iteration): the bound
    planning fits a configuration into (not a run's budget: training.budget.RunBudget)."""
    device: str = "cpu"  # cost model: "cpu" or "gpu"
    memory_gb: float = 8.0
    seconds_per_iteration: float | None = 2.0  # None: no compute budget
    base_features: int = 32
    max_features: int = 320


def plan_configuration(spacing, median_shape, in_ch: int, n_classes: int, budget: DeviceBudget,
                       dim: int, n_voxels_dataset: float, max_stages: int = 6) -> dict:
    """nnU-Net's patch/batch search under a memory budget and (optionally) a compute budget."""
    spacing = np.asarray(spacing, float)
    median_shape = np.maximum(np.asarray(median_shape, float), 1)
    ref_mm = 256 ** 3 if dim == 3 else 2048 ** 2
    inv = 1.0 / spacing
    patch = np.round(inv * (ref_mm / np.prod(inv)) ** (1.0 / dim))
    patch = np.minimum(patch, median_shape).astype(int)
    patch = np.maximum(patch, 8)

    def fit(p):
        topo = unet_topology(spacing, p, max_stages=max_stages)
        d = np.array(topo["divisible_by"])
        p = (np.ceil(np.asarray(p) / d) * d).astype(int)
        topo = unet_topology(spacing, p, max_stages=max_stages)
        return p, topo

    def cost(p, topo, b):
        return estimate_cost(p, topo, in_ch, n_classes, budget.base_features, budget.max_features, b,
                             budget.device)

    min_batch = 2
    patch, topo = fit(patch)
    reasons = []
    while True:
        c = cost(patch, topo, min_batch)
        over_mem = c["memory_gb"] > budget.memory_gb
        over_time = budget.seconds_per_iteration is not None and c["seconds"] > budget.seconds_per_iteration
        if not (over_mem or over_time):
            break
        # shrink the axis furthest above the median shape (ties: the larger axis) by one pooling step
        ratio = patch / median_shape
        cand = [a for a in range(dim) if patch[a] > 8]
        new = patch.copy()
        if cand:
            ax = max(cand, key=lambda a: (ratio[a], patch[a]))
            new[ax] = max(8, patch[ax] - int(topo["divisible_by"][ax]))
            new, new_topo = fit(new)
        if not cand or np.array_equal(new, patch):
            reasons.append("patch at its minimum; the budget cannot be met")
            break
        reasons.append("memory" if over_mem else "compute")
        patch, topo = new, new_topo
    # batch: largest that fits both budgets (both costs are affine in the batch size)
    one, zero = cost(patch, topo, 1), cost(patch, topo, 0)
    limits = {
        "memory": int((budget.memory_gb - zero["memory_gb"]) / max(one["memory_gb"] - zero["memory_gb"], 1e-9)),
        "compute": (int(budget.seconds_per_iteration / max(one["seconds"], 1e-9))
                    if budget.seconds_per_iteration else 10 ** 6),
        # nnU-Net: a batch should not cover more than 5 % of the dataset's voxels
        "5% of the dataset's voxels": int(0.05 * n_voxels_dataset / np.prod(patch)),
        "the cap": 64 if dim == 3 else 512,
    }
    limit = min(limits, key=limits.get)
    batch = max(min_batch, limits[limit])
    if limits[limit] < min_batch:
        limit = f"the minimum of {min_batch} ({limit} alone would allow {max(limits[limit], 0)})"
    final = cost(patch, topo, batch)
    shrunk = {r: reasons.count(r) for r in set(reasons)}
    why = (f"patch from ~{round(ref_mm ** (1 / dim))} mm per side capped by the median shape "
           f"{[int(x) for x in median_shape]}" +
           (f", shrunk {sum(shrunk.values())} steps for " + " and ".join(sorted(shrunk)) if shrunk else "") +
           f"; batch {batch} limited by {limit}")
    return {
        "patch_size": [int(x) for x in patch], "batch_size": int(batch), "spacing": [float(x) for x in spacing],
        "median_shape": [int(round(x)) for x in median_shape],
        "n_stages": topo["n_stages"], "pool_kernels": topo["pool_kernels"],
        "conv_kernels": topo["conv_kernels"],
        "features_per_stage": stage_features(topo["n_stages"], budget.base_features, budget.max_features),
        "estimated_memory_gb": round(final["memory_gb"], 2),
        "estimated_seconds_per_iteration": round(final["seconds"], 3),
        "params_millions": round(final["params_m"], 2), "why": why,
    }
