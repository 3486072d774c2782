"""Training methods: small objects that say which networks they train and return their losses.

A method has

- ``networks() -> {name: {"network": registry name, "options": {...}}}``: the engine builds each,
  with its own optimizer and schedule;
- ``losses(nets, batch, state) -> {name: tensor}``: ``"loss"`` is what is minimised, every other
  entry is logged (scalars, e.g. agreement between networks); ``state`` holds ``progress`` (0..1
  of the budget), ``iteration`` and ``backward`` (a method that saves memory may backpropagate
  parts of its loss itself with ``state["backward"](part)`` and return ``loss`` detached; the
  engine backpropagates ``loss`` only when it still requires grad);
- ``predict_with() -> [names]``: the networks whose softmax is averaged for validation and
  prediction;
- ``unlabeled_batch(labeled_batch) -> int``: how many unlabeled patches it wants per global batch
  (0 for supervised; ``--unlabeled-batch`` overrides).

Two optional hooks let a method that is not patch segmentation use the same engine (the
propagation network, ``stcn``): ``batches(work, labeled, net_cfg, plans, rank, world, label_dirs)``
returns its own iteration-indexed dataset of batches (with its global batch size ``B``), and
``validate(nets, work, val_ids, net_cfg, n_classes, device) -> (mean Dice, per class)`` scores it.
A method with a state of its own beyond its networks (CPS's quality gate) has ``state_dict()`` and
``load_state_dict(d)``: plain numbers, saved in ``latest.pt`` for exact resume.

Method options live in ``TrainConfig.method_options`` (``RUN/config.json``); a method rejects
options it does not know.

Adding a method is one registered class in its own file; the engine does not change.
"""
from __future__ import annotations

from ..utils import Registry

_METHODS = Registry("method")


def register_method(name: str):
    def deco(cls):
        cls.name = name
        return _METHODS.register(name)(cls)
    return deco


def available_methods() -> list[str]:
    return _METHODS.names()


def create_method(name: str, config):
    return _METHODS.get(name)(config)


from . import cps, stcn, supervised  # noqa: E402,F401  (register the methods)
