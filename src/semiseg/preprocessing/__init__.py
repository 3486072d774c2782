"""Preprocessing: crop, normalise, resample and cache every case of a plan (``semiseg preprocess``),
and the way back to the original geometry.

``resampling`` (images and labels to a spacing), ``normalize`` (per channel), ``cache`` (the case
cache on disk: :func:`preprocess`, :func:`load_case`, :class:`CaseCache` for training, and the
inverse mapping :func:`restore_label`).
"""
from .cache import CaseCache, label_to_grid, load_case, plan_hash, preprocess, preprocess_arrays, restore_label

__all__ = ["CaseCache", "label_to_grid", "load_case", "plan_hash", "preprocess", "preprocess_arrays",
           "restore_label"]
