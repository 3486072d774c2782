"""Workflows: multi-stage pipelines built on training, pseudo-labelling and inference.

``selftrain`` (rounds of train -> pseudo-label -> select -> retrain), ``demo`` (the whole story on
the synthetic dataset).
"""
