"""Ensemble averaging, in one place: the (weighted) mean of probability maps."""
from __future__ import annotations


class MeanProbs:
    """Running weighted sum of probability maps (tensors or arrays of one shape) and its mean.
    ``add(p, weight)`` counts ``p`` as ``weight`` members (a run's mean over its n networks is added
    with weight n, so every network of an ensemble counts once)."""

    def __init__(self):
        self.total, self.weight = None, 0

    def add(self, probs, weight: int = 1) -> None:
        p = probs * weight if weight != 1 else probs
        self.total = p if self.total is None else self.total + p
        self.weight += weight

    def mean(self):
        if self.total is None:
            raise ValueError("no member was added")
        return self.total / self.weight

    def __len__(self) -> int:
        return self.weight
