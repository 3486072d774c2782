"""Postprocessing chosen on the validation cases, the way nnU-Net chooses it (Isensee et al. 2021):
first keep only the largest connected component of the foreground as a whole (every class
together) when that raised the mean validation Dice; then, on top of that, for each class, keep only
its largest component when that raised the class's mean validation Dice.

Training measures it at every validation (the same predictions, plain, with each step and with
both) and, with each new best checkpoint, writes ``RUN/postprocessing.json``: the checkpoint's
iteration, each class's Dice every way and the choice, ``largest_component_classes``: the list
:func:`.sliding_window.keep_largest_component` applies in order, whose first entry is the list of
every class when the foreground step was kept (``[[1, 2, 3], 2]``; a run of an earlier semiseg
has classes alone). ``predict`` (and ``export``) apply it to the checkpoint it was measured on,
``best``; any other checkpoint predicts without it unless ``--largest-component`` says otherwise.
``pseudolabel`` applies it to the pseudo-labels it writes.
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


VARIANTS = ("largest", "foreground", "foreground_largest")  # what validation measures besides the plain prediction


def variant_steps(n_classes: int) -> dict[str, list]:
    """The steps of each measured variant, for classes 1..n_classes-1: every class's largest component,
    the foreground's, and the foreground's followed by every class's."""
    classes = list(range(1, n_classes))
    return {"largest": classes, "foreground": [classes], "foreground_largest": [classes, *classes]}


def _mean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


def choose(plain: list[float], variants: dict[str, list[float]]) -> list:
    """nnU-Net's choice from per-class mean Dice: the foreground's largest component when it raises the
    mean over classes, then each class whose largest component (on top of that) raises its Dice."""
    foreground = len(plain) > 1 and _mean(variants["foreground"]) > _mean(plain)  # one class: its own step
    base, per_class = ((variants["foreground"], variants["foreground_largest"]) if foreground
                       else (plain, variants["largest"]))
    whole = [list(range(1, len(plain) + 1))] if foreground else []
    return whole + gaining_classes(base, per_class)


def write_choice(run: Path, iteration: int, names: list[str], plain: list[float], variants: dict[str, list[float]],
                 cases: int) -> list:
    """``RUN/postprocessing.json`` for the checkpoint of ``iteration``; returns the choice."""
    chosen = choose(plain, variants)
    write_json({"iteration": int(iteration), "cases": int(cases), "largest_component_classes": chosen,
                "val_dice": {n: round(v, 5) for n, v in zip(names, plain)},
                **{f"val_dice_{k}": {n: round(v, 5) for n, v in zip(names, variants[k])} for k in VARIANTS}},
               Path(run) / FILE)
    return chosen


def describe(chosen: list, names: list[str]) -> str:
    """The choice in words, for logs."""
    if not chosen:
        return "none (keeping only the largest component raised no Dice)"
    steps = [("the foreground's largest component" if isinstance(c, list) else f"the largest component of "
              f"{names[c - 1]}") for c in chosen]
    return "keep " + ", then ".join(steps)


def run_choice(run: Path, iteration: int | None) -> list | None:
    """The steps chosen for a run's checkpoint of ``iteration``; None when the run has no choice
    for that checkpoint (no validation, another checkpoint, or a run of an earlier semiseg)."""
    f = Path(run) / FILE
    if iteration is None or not f.exists():
        return None
    rec = read_json(f, "the run's postprocessing choice")
    if int(rec.get("iteration", -1)) != int(iteration):
        return None
    return [[int(x) for x in c] if isinstance(c, list) else int(c) for c in rec.get("largest_component_classes", [])]


def component_classes(setting, n_classes: int) -> list:
    """The steps of :func:`.sliding_window.keep_largest_component`: ``setting`` True (every foreground
    class's largest component), False/None (none) or a run's choice (classes, and a region as a list
    of classes first), without classes the model does not have."""
    classes = list(range(1, n_classes))
    if isinstance(setting, (list, tuple)):
        return [c for c in setting if (all(x in classes for x in c) if isinstance(c, (list, tuple)) else c in classes)]
    return classes if setting else []
