"""Postprocessing chosen on the validation cases, the way nnU-Net chooses it: for each class, keep
only its largest connected component when that raised the class's mean validation Dice.

Training measures it at every validation (the same predictions, with and without the step) and,
with each new best checkpoint, writes ``RUN/postprocessing.json``: the checkpoint's iteration, each
class's Dice both ways and the classes that gained. ``predict`` (and ``export``) apply it to the
checkpoint it was measured on, ``best``; any other checkpoint predicts without it unless
``--largest-component`` says otherwise. ``pseudolabel`` applies it to the pseudo-labels it writes.
"""
from __future__ import annotations

import math
from pathlib import Path

from ..utils import read_json, write_json

FILE = "postprocessing.json"


def gaining_classes(plain: list[float], largest: list[float], margin: float = 0.0) -> list[int]:
    """Foreground classes (1-based) whose mean Dice with only the largest component beats the plain
    prediction's by more than ``margin``; a class never present (NaN) is left alone."""
    return [i + 1 for i, (a, b) in enumerate(zip(plain, largest))
            if not (math.isnan(a) or math.isnan(b)) and b > a + margin]


def write_choice(run: Path, iteration: int, names: list[str], plain: list[float], largest: list[float],
                 cases: int) -> list[int]:
    """``RUN/postprocessing.json`` for the checkpoint of ``iteration``; returns the chosen classes."""
    chosen = gaining_classes(plain, largest)
    write_json({"iteration": int(iteration), "cases": int(cases), "largest_component_classes": chosen,
                "val_dice": {n: round(v, 5) for n, v in zip(names, plain)},
                "val_dice_largest_component": {n: round(v, 5) for n, v in zip(names, largest)}},
               Path(run) / FILE)
    return chosen


def run_choice(run: Path, iteration: int | None) -> list[int] | None:
    """The classes chosen for a run's checkpoint of ``iteration``; None when the run has no choice
    for that checkpoint (no validation, another checkpoint, or a run of an earlier semiseg)."""
    f = Path(run) / FILE
    if iteration is None or not f.exists():
        return None
    rec = read_json(f, "the run's postprocessing choice")
    if int(rec.get("iteration", -1)) != int(iteration):
        return None
    return [int(c) for c in rec.get("largest_component_classes", [])]


def component_classes(setting, n_classes: int) -> list[int]:
    """The classes whose largest component alone is kept: ``setting`` True (every foreground class),
    False/None (none) or a list of classes (a run's choice)."""
    classes = list(range(1, n_classes))
    if isinstance(setting, (list, tuple)):
        return [c for c in classes if c in setting]
    return classes if setting else []
