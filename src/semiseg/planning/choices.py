"""What a run on a short CPU budget trains, decided on the plan: one home for ``train --config auto``
and ``fit`` (which trains that way by default).

- :func:`choose_configuration`: the 2D configuration for thick-slice scans (the target spacing's
  coarsest axis more than 3x its finest, nnU-Net's anisotropy rule), else 3D.
- :func:`slice_overrides`: in 2D, each patch side capped at ``SLICE_PATCH_MAX`` pixels and the batch
  at ``SLICE_BATCH_MAX``, unless the user chose a patch or a batch. The plan fills its batch up to
  its seconds-per-step budget, which on a CPU leaves a short run too few steps to learn every class;
  smaller patches and batches give it several times more (docs/benchmarks.md).
"""
from __future__ import annotations

from .spacing import ANISOTROPY_THRESHOLD, is_anisotropic

SLICE_PATCH_MAX = 160
SLICE_BATCH_MAX = 8


def choose_configuration(plans: dict) -> tuple[str, str]:
    """``--config auto``: ``2d`` for thick-slice scans, else ``3d``; with why."""
    sp = [float(x) for x in plans["target_spacing"]]
    thick = is_anisotropic(sp)
    return ("2d" if thick else "3d"), (f"target spacing {sp} mm: coarsest axis {max(sp) / min(sp):.1f}x the finest "
                                       f"({'>' if thick else '<='} {ANISOTROPY_THRESHOLD:g}): "
                                       f"{'thick slices: 2D' if thick else '3D'}")


def slice_overrides(plan_cfg: dict, train: dict) -> dict:
    """The patch and batch a 2D configuration trains with under ``--config auto`` (and in fit): the
    plan's, capped, unless ``train`` (the given options) has a ``patch_size`` or ``batch_size``;
    empty when the plan's are within the caps."""
    if train.get("patch_size") or train.get("batch_size"):
        return {}
    patch = [min(int(p), SLICE_PATCH_MAX) for p in plan_cfg["patch_size"]]
    batch = min(int(plan_cfg["batch_size"]), SLICE_BATCH_MAX)
    if patch == list(plan_cfg["patch_size"]) and batch == int(plan_cfg["batch_size"]):
        return {}
    return {"patch_size": patch, "batch_size": batch}
