"""Inference: trained runs to label maps. Never imports training: a run folder records what it needs.

``runs`` (what a run records, :func:`load_run`, ``RUN@CHECKPOINT``), ``sliding_window`` (one
preprocessed case, TTA, back to the original grid), ``ensemble`` (averaging), ``predict``
(``semiseg predict`` on image folders).
"""
from .predict import predict_folder
from .runs import Model, load_models, load_run, parse_run_spec

__all__ = ["Model", "load_models", "load_run", "parse_run_spec", "predict_folder"]
