"""Workflows: multi-stage pipelines built on training, pseudo-labelling and inference.

``fit`` (a dataset to a model in one budget: a recipe of training and pseudo-labelling stages),
``selftrain`` (rounds of train -> pseudo-label -> select -> retrain), ``demo`` (the whole story on
the synthetic dataset).
"""
