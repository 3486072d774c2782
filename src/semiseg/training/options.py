"""The training flags of ``train``, ``selftrain`` and ``fit``, generated from :class:`TrainConfig`.

Every flag comes from a field of :class:`~semiseg.training.config.TrainConfig` (its metadata: help,
help section, flag name, choices; its default, printed in the help) or from a registered method's
options dataclass (:func:`semiseg.methods.add_option_flags`), so an option is written once. A few
flags fill one field from friendlier pieces, and are defined here beside the fields:
``--base-features``/``--depth`` (``network_options``), ``--no-augment``/``--elastic`` (``aug``),
``--labeled N``/``--labeled-list FILE``/``--labeled-key`` (``labeled``).

Flags are parsed with default ``None``, so :func:`given_options` returns exactly what the user
chose: ``train`` builds its configuration from it (the dataclass supplies the rest), ``fit`` applies
it to every training stage that does not set the field itself.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing

from ..data.dataset import read_case_list
from ..methods import add_option_flags, available_methods, given_method_options, method_class, option_flag
from ..utils import SemisegError, json_object
from .config import LABELED, MODEL, PSEUDO, RUNTIME, SCHEDULE, SHAPE, TrainConfig

COMMANDS = ("train", "selftrain", "fit")
GROUPS = {MODEL: "method and network", SHAPE: "patch and batch (default: the plan's)",
          LABELED: "labeled cases (default: the plan's; the others become unlabeled)",
          PSEUDO: "pseudo-labels (given, or made during training by cps and mean-teacher)",
          SCHEDULE: "budget, optimizer and schedule", RUNTIME: "runtime"}


def flag_name(f: dataclasses.Field) -> str | None:
    """The field's flag: its metadata's ``flag`` (None: no flag) or ``--field-name``."""
    return f.metadata["flag"] if "flag" in f.metadata else "--" + f.name.replace("_", "-")


def train_fields(command: str = "train") -> list[dataclasses.Field]:
    """The TrainConfig fields that are flags of ``command``."""
    return [f for f in dataclasses.fields(TrainConfig)
            if flag_name(f) and command in f.metadata.get("commands", COMMANDS)]


def _default(f: dataclasses.Field):
    return f.default if f.default is not dataclasses.MISSING else None


def _kind(f: dataclasses.Field) -> type:
    tp = typing.get_type_hints(TrainConfig)[f.name]
    return f.metadata.get("type") or ([a for a in typing.get_args(tp) if a is not type(None)] or [tp])[0]


def add_train_flags(p: argparse.ArgumentParser, command: str = "train", defaults: dict | None = None,
                    notes: dict | None = None) -> None:
    """Add the training flags of ``command`` to ``p``, by help section. ``defaults``: the command's own
    defaults where they differ from train's (said in the help beside train's); ``notes``: a sentence
    the command adds to a field's help (e.g. what fit does with it)."""
    defaults, notes = defaults or {}, notes or {}
    groups: dict[str, argparse._ArgumentGroup] = {}

    def group(name):
        if name not in groups:
            groups[name] = p.add_argument_group(GROUPS[name])
        return groups[name]

    for f in train_fields(command):
        m, kind = f.metadata, _kind(f)
        help_ = m["help"] + (f"; one of: {', '.join(m['names']())}" if "names" in m else "")
        if f.name in defaults:
            help_ += f" (default here {defaults[f.name]}; train's: {_default(f)})"
        elif _default(f) is not None and _default(f) is not False:
            help_ += f" (default {_default(f)})"
        if f.name in notes:
            help_ += f"; {notes[f.name]}"
        kw: dict = {"dest": f.name, "default": None, "help": help_.replace("%", "%%")}
        if kind is bool:
            kw.update(action="store_const", const=True)
        else:
            choices = m.get("choices")
            kw.update(type=str if kind is dict else kind, nargs=m.get("nargs"),
                      choices=choices() if callable(choices) else choices,
                      metavar=m.get("metavar"))
        group(m["group"]).add_argument(flag_name(f), **{k: v for k, v in kw.items() if v is not None or
                                                        k == "default"})
        if f.name == "network_options":
            g = group(MODEL)
            g.add_argument("--base-features", type=int, help="network width (first-stage features)")
            g.add_argument("--depth", type=int, help="network depth (stages)")
        if f.name == "fg_oversample":
            g = group(SCHEDULE)
            g.add_argument("--no-augment", action="store_true", help="plain crops, no augmentation")
            g.add_argument("--elastic", type=float, metavar="P", help="probability of elastic deformation "
                           "(default 0)")
    g = group(LABELED)
    x = g.add_mutually_exclusive_group()
    x.add_argument("--labeled", type=int, metavar="N", help="the first N labeled cases of the plan's split")
    x.add_argument("--labeled-list", metavar="FILE", help="labeled case IDs (text or JSON; with --labeled-key "
                   "for an object)")
    g.add_argument("--labeled-key", metavar="KEY", help="which list of a JSON object (a unique prefix is enough)")
    for name in available_methods():
        add_option_flags(p, method_class(name))


def given_options(a: argparse.Namespace, command: str = "train") -> dict:
    """The TrainConfig fields the user gave as flags (and nothing else), with the pieces of
    ``network_options``, ``aug`` and ``labeled`` assembled; ``method_options`` holds the options of
    ``--method`` (flags and JSON; a flag of another method is an error) in ``train``/``selftrain`` and,
    in ``fit``, every method's given options by method name (``{"cps": {...}}``): its stages use those
    of their own method. ``labeled`` is a list of case IDs, or N for the first N of the plan's split."""
    out = {f.name: getattr(a, f.name) for f in train_fields(command) if getattr(a, f.name, None) is not None}
    net = {k: v for k, v in (("base_features", a.base_features), ("depth", a.depth)) if v}
    if "network_options" in out:
        net.update(json_object(out["network_options"], "--network-options"))
    if net:
        out["network_options"] = net
    per_method = given_method_options(a)
    if "method_options" in out:  # the JSON: options of --method
        method = out.get("method") or ("supervised" if command != "fit" else None)
        if method is None:
            raise SemisegError("fit: --method-options needs --method (or give the method's own flags, e.g. "
                               "--cps-lambda-max)")
        per_method.setdefault(method, {}).update(json_object(out["method_options"], "--method-options"))
    if command == "fit":
        if per_method:
            out["method_options"] = per_method
        else:
            out.pop("method_options", None)
    else:
        method = out.get("method", "supervised")
        for other, opts in per_method.items():
            if other != method:
                raise SemisegError(f"{option_flag(other, next(iter(opts)))} is an option of --method {other}, "
                                   f"not of --method {method}")
        if per_method.get(method):
            out["method_options"] = per_method[method]
        else:
            out.pop("method_options", None)
    if a.no_augment or a.elastic is not None:
        aug = {"enabled": not a.no_augment}
        if a.elastic is not None:
            aug["p_elastic"] = a.elastic
        out["aug"] = aug
    if a.labeled_list:
        out["labeled"] = read_case_list(a.labeled_list, a.labeled_key)
    elif a.labeled is not None:
        if a.labeled < 1:
            raise SemisegError(f"--labeled must be at least 1, not {a.labeled}")
        out["labeled"] = a.labeled
    return out
