"""The budget of a run (iterations and/or wall-clock minutes): progress, the learning-rate schedule
fitted to it, when to validate, and the stop test, each written once."""
from __future__ import annotations

import math

import torch


def learning_rate(cfg, progress: float) -> float:
    """SGD: nnU-Net's poly decay; AdamW: a short linear warm-up, then cosine. ``progress`` (0..1 of
    the run's budget) maps onto ``cfg.schedule_span`` of the schedule when one is set."""
    p = min(max(progress, 0.0), 1.0)
    if cfg.schedule_span:
        a, b = (float(x) for x in cfg.schedule_span)
        p = a + (b - a) * p
    if cfg.optimizer == "sgd":
        return cfg.lr0 * (1 - p) ** 0.9
    warm = 0.02
    if p < warm:
        return cfg.lr0 * (p + 1e-3) / warm
    return cfg.lr0 * 0.5 * (1 + math.cos(math.pi * (p - warm) / (1 - warm)))


def make_optimizer(cfg, params):
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr0, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.wd)
    return torch.optim.AdamW(params, lr=cfg.lr0, weight_decay=cfg.wd)


VALIDATION_SHARE = 0.1  # the most of a time budget validation may take (ACDC-7's 20 cases cost 24 s on one core)


def validation_gap(budget_s: float, last_cost_s: float, gap_s: float | None = None) -> float:
    """Seconds of training between the end of one validation and the next in a time budget: ``gap_s``
    (default a tenth of the budget), longer when validating is slow so that it takes at most
    ``VALIDATION_SHARE`` of the time: LA's validation (1.6 s) runs every tenth of any budget, ACDC-7's
    (24 s) at most every 3.6 minutes, whether the run is a whole supervised budget or one stage of a fit."""
    return max(gap_s or budget_s / 10, last_cost_s * (1 - VALIDATION_SHARE) / VALIDATION_SHARE)


class RunBudget:
    """``iterations`` and/or ``minutes`` (whichever ends first), and the validation rhythm: every
    ``val_every`` iterations (default a tenth of an iteration budget; 0 = never), or in a time budget
    by :func:`validation_gap` (every ``val_minutes`` when given)."""

    def __init__(self, iterations: int | None, minutes: float | None, val_every: int | None,
                 val_minutes: float | None = None):
        self.iterations, self.seconds = iterations, (minutes * 60 if minutes else None)
        self.validates = val_every != 0
        self.val_every = None if not self.validates else \
            (val_every or (max(1, iterations // 10) if iterations else None))
        self.timed_validation = bool(self.validates and self.seconds and not val_every)
        self.gap_s = val_minutes * 60 if val_minutes else None
        self.val_gap_s = validation_gap(self.seconds, 0.0, self.gap_s) if self.timed_validation else None

    def progress(self, iteration: int, elapsed: float) -> float:
        p = 0.0
        if self.iterations:
            p = max(p, iteration / self.iterations)
        if self.seconds:
            p = max(p, elapsed / self.seconds)
        return p

    def done(self, iteration: int, elapsed: float) -> bool:
        return (self.iterations is not None and iteration >= self.iterations) or \
            (self.seconds is not None and elapsed >= self.seconds)

    def validation_due(self, iteration: int, elapsed: float, last_validation: float, done: bool) -> bool:
        """At the end, every ``val_every`` iterations, or after the gap of a time budget."""
        return bool(done or (self.val_every and iteration % self.val_every == 0)
                    or (self.val_gap_s and elapsed - last_validation >= self.val_gap_s))

    def validated(self, cost_s: float) -> None:
        """After a validation that took ``cost_s``: the next gap of a time budget grows with it."""
        if self.timed_validation:
            self.val_gap_s = validation_gap(self.seconds, cost_s, self.gap_s)
