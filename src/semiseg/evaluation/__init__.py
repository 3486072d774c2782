"""Evaluation: DSC, NSD (DeepMind's surface-distance definition, as FLARE), HD95 and ASD per case,
class and region (``semiseg evaluate``), and the Dice counts that training and pseudo-labelling
share."""
from .metrics import evaluate, format_table

__all__ = ["evaluate", "format_table"]
