"""The method contract: what a training method is, and the registry of methods.

A method is a small object that names the networks it needs and returns its losses; the engine
(:mod:`semiseg.training.engine`) owns everything else (loop, budget, schedule, optimizers, AMP,
DDP, checkpoints, resume, validation, logging). Every hook has a documented default in
:class:`Method`; the engine calls each hook directly, so a misspelled hook is an error of the
subclass, not silently skipped. Adding a method is one file::

    @dataclass
    class MyOptions:
        weight: float = field(default=0.5, metadata={"help": "weight of my term"})

    @register_method("mine")
    class Mine(Method):
        Options = MyOptions             # becomes --mine-weight and --method-options '{"weight": ..}'

        def losses(self, nets, batch, ctx):
            return {"loss": seg_loss(nets["net"](batch["image"]), batch["label"], self.config.loss)}

``semiseg train --method mine`` then works: its choices and option flags come from this registry.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import torch

from ..utils import Registry, SemisegError, json_object

_METHODS = Registry("method")


@dataclass
class NetworkSpec:
    """One network of a method: a registered network name and its options. ``trainable=False``: the
    engine gives it no optimizer (and no DDP wrapper); the method updates it itself, e.g. an EMA
    teacher in :meth:`Method.after_step`. Every network is saved in the checkpoints."""
    network: str
    options: dict = field(default_factory=dict)
    trainable: bool = True


class PatchBatch(TypedDict, total=False):
    """The engine's batch (:class:`semiseg.training.sampling.PatchBatches`), on the run's device:
    ``image`` (B, C, *patch) and ``label`` (B, *patch) of the labeled patches, ``iteration`` (the
    batch's index), ``pseudo`` (B,) bool (which labeled patches come from pseudo-labeled scans, when
    there are any) and ``image_u`` (Bu, C, *patch), the unlabeled patches (when the method asks for
    an unlabeled share). A method with its own :meth:`Method.batches` defines its own batch."""
    image: torch.Tensor
    label: torch.Tensor
    iteration: int
    pseudo: torch.Tensor
    image_u: torch.Tensor


@dataclass(frozen=True)
class StepContext:
    """What :meth:`Method.losses` and :meth:`Method.after_step` know of the step: ``iteration``,
    ``progress`` (0..1 of the budget), ``backward(part)`` (backpropagate a part of the loss now and
    return ``loss`` detached, as CPS's sequential memory mode does), the ``device``, the resolved
    precision ``amp`` (off, bf16 or fp16; the step already runs under its autocast) and the process
    ``rank`` of ``world`` (torchrun; 0 of 1 otherwise)."""
    iteration: int
    progress: float
    backward: Callable[[torch.Tensor], None]
    device: Any = "cpu"
    amp: str = "off"
    rank: int = 0
    world: int = 1


@dataclass(frozen=True)
class DataContext:
    """What :meth:`Method.batches` needs: the ``work`` folder, the training ``cases`` (labeled, then
    pseudo-labeled), the run's resolved configuration ``cfg`` and ``plans``, this process's ``rank``
    of ``world``, and ``label_dirs`` (case -> the folder of its label, for pseudo-labeled cases)."""
    work: Path
    cases: list
    cfg: dict
    plans: dict
    rank: int = 0
    world: int = 1
    label_dirs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ValidationContext:
    """What :meth:`Method.validate` needs: the ``work`` folder, the validation case IDs ``val_ids``,
    the run's resolved configuration ``cfg``, ``n_classes`` (with background), the ``device``, the
    resolved precision ``amp`` and the ``iteration`` validated at."""
    work: Path
    val_ids: list
    cfg: dict
    n_classes: int
    device: Any = "cpu"
    amp: str = "off"
    iteration: int = 0


@dataclass
class NoOptions:
    """A method without options of its own."""


class Method:
    """Base class of every training method; subclass it and override what differs.

    ``self.config`` is the run's training configuration (``RUN/config.json``: ``network``,
    ``network_options``, ``loss``, ``batch_size``, ``seed``...), ``self.opts`` the method's own
    options, an instance of ``Options`` built strictly from ``config.method_options``.
    """

    name = ""                  # set by @register_method
    Options: type = NoOptions  # a dataclass; its fields are the method's options and CLI flags

    def __init__(self, config):
        self.config = config
        self.opts = parse_options(type(self), dict(config.method_options or {}))

    def setup(self, nets: dict) -> None:
        """Called once the networks are built (and warm-started with ``--init``), before a resumed
        run restores its checkpoint: e.g. start an EMA teacher as a copy of its student."""

    def networks(self) -> dict[str, NetworkSpec]:
        """The networks to build, by name, in this order (the engine seeds once, then builds each).
        Default: one trainable network ``net`` of the run's ``--network``."""
        return {"net": NetworkSpec(self.config.network, dict(self.config.network_options))}

    def predict_with(self) -> list[str]:
        """The networks whose softmax is averaged for validation and prediction (recorded in the
        run folder for ``semiseg predict``). Default: every network."""
        return list(self.networks())

    def unlabeled_batch(self, labeled_batch: int) -> int:
        """Unlabeled patches per global batch (``--unlabeled-batch`` overrides). Default: none."""
        return 0

    def batches(self, data: DataContext):
        """An iteration-indexed dataset of batches of the method's own kind (item ``i`` is the batch
        of iteration ``i``, with the global batch size as attribute ``B``), or None for the engine's
        patch batches (:class:`PatchBatch`). Default: None."""
        return None

    def losses(self, nets: dict, batch: PatchBatch, ctx: StepContext) -> dict:
        """Named losses of one step. ``"loss"`` is minimised, every other entry is logged (floats or
        tensors). ``nets``: name -> network (DDP-wrapped when trainable under torchrun); ``batch``: a
        :class:`PatchBatch` (or the method's own kind); ``ctx``: the :class:`StepContext`."""
        raise NotImplementedError(f"method {self.name!r} must define losses()")

    def after_step(self, nets: dict, ctx: StepContext) -> None:
        """Called after every optimizer step (e.g. to update an EMA teacher). Default: nothing."""

    def validate(self, nets: list, ctx: ValidationContext):
        """(mean Dice, per class) of the ``predict_with`` networks on the validation cases, or None
        for the engine's sliding-window validation. Default: None."""
        return None

    def state_dict(self) -> dict:
        """The method's own state beyond its networks (plain numbers), saved for exact resume."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""


# --------------------------------------------------------------------------- registry
def register_method(name: str):
    """Class decorator: register a :class:`Method` subclass under ``name``."""
    def deco(cls):
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(f"method {name!r} must subclass semiseg.methods.Method")
        if not dataclasses.is_dataclass(cls.Options):
            raise TypeError(f"method {name!r}: Options must be a dataclass")
        _METHODS.register(name)(cls)
        cls.name = name
        return cls
    return deco


def available_methods() -> list[str]:
    return _METHODS.names()


def method_class(name: str) -> type:
    return _METHODS.get(name)


def create_method(name: str, config) -> Method:
    return _METHODS.get(name)(config)


# --------------------------------------------------------------------------- options
def parse_options(cls: type, options: dict):
    """``cls.Options(**options)``, strictly: an unknown option or a bad value is a SemisegError."""
    known = [f.name for f in dataclasses.fields(cls.Options)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        has = f"its options: {', '.join(known)}" if known else "it takes none"
        raise SemisegError(f"method {cls.name!r} has no option {', '.join(map(repr, unknown))} ({has})")
    try:
        return cls.Options(**options)
    except TypeError as e:
        raise SemisegError(f"{cls.name} method options: {e}") from None


def _flag(cls: type, f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or f"--{cls.name}-{f.name.replace('_', '-')}"


def _kind(cls: type, f: dataclasses.Field) -> type:
    tp = typing.get_type_hints(cls.Options)[f.name]
    return ([a for a in typing.get_args(tp) if a is not type(None)] or [tp])[0]


def add_option_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """An argument group of ``cls``'s options: one flag per field of ``cls.Options`` (metadata:
    ``flag`` for another name, ``help``, ``choices``; a bool that defaults to True needs a
    ``flag`` that turns it off). Values are only set when given (default None), so the run's
    ``method_options`` holds exactly what the user chose."""
    fields = dataclasses.fields(cls.Options)
    if not fields:
        return
    g = parser.add_argument_group(f"--method {cls.name} options (also --method-options JSON)")
    for f in fields:
        kind = _kind(cls, f)
        kw: dict = {"dest": f"method__{cls.name}__{f.name}", "default": None}
        default = f.default if f.default is not dataclasses.MISSING else None
        help_ = f.metadata.get("help", "")
        if kind is bool:
            if default and not f.metadata.get("flag"):
                raise TypeError(f"method {cls.name!r}: bool option {f.name} defaults to True and needs a 'flag'")
            kw.update(action="store_const", const=not default)
        else:
            kw.update(type=str if kind is dict else kind, choices=f.metadata.get("choices"),
                      metavar=None if f.metadata.get("choices") else f.metadata.get("metavar", f.name.upper()))
            help_ += "" if default is None else f" (default {default:g})" if isinstance(default, float) else \
                f" (default {default})"
        g.add_argument(_flag(cls, f), help=help_ or None, **kw)


def given_method_options(args: argparse.Namespace) -> dict[str, dict]:
    """Every registered method's options given as flags: ``{method: {option: value}}`` (methods
    without a given flag are absent)."""
    out: dict[str, dict] = {}
    for name in available_methods():
        cls = method_class(name)
        for f in dataclasses.fields(cls.Options):
            v = getattr(args, f"method__{name}__{f.name}", None)
            if v is not None:
                out.setdefault(name, {})[f.name] = json_object(v, _flag(cls, f)) if _kind(cls, f) is dict else v
    return out


def option_flag(method: str, option: str) -> str:
    """The flag of one of ``method``'s options (for messages)."""
    cls = method_class(method)
    return _flag(cls, next(f for f in dataclasses.fields(cls.Options) if f.name == option))


def options_from_args(args: argparse.Namespace, method: str) -> dict:
    """The options of ``method`` given as flags; a flag of another method is an error."""
    given = given_method_options(args)
    for name, opts in given.items():
        if name != method:
            raise SemisegError(f"{option_flag(name, next(iter(opts)))} is an option of --method {name}, not of "
                               f"--method {method}")
    return given.get(method, {})
