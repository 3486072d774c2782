"""Planning: the dataset fingerprint and ``plans.json`` (nnU-Net's rules, adapted).

``fingerprint`` (spacings, shapes, intensities), ``spacing`` (target spacing, anisotropy, slice
axis, forced inference spacing), ``topology`` (U-Net pooling and widths of a patch), ``cost`` (the
memory/time model and the patch/batch search), ``normalization`` (per channel), ``plans`` (the entry
point :func:`plan`, :func:`load_plans` and the typed :class:`Plans`).
"""
from .plans import Configuration, Plans, first_labeled, load_plans, load_split, plan, split_cases

__all__ = ["Configuration", "Plans", "first_labeled", "load_plans", "load_split", "plan", "split_cases"]
