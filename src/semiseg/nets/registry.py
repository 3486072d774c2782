"""The network registry: name -> factory(configuration, in_channels, out_channels, **options).

A configuration is one entry of ``plans.json["configurations"]`` (patch, pooling and kernels per
axis, features per stage). Adding a network is one decorated function in any module that
``semiseg.nets`` imports::

    @register("mynet")
    def mynet(cfg, in_channels, out_channels, width: int = 16) -> torch.nn.Module: ...

    net = create_network("dynunet", plans["configurations"]["3d"], 1, 2, base_features=8)

A factory's keyword arguments are its options; :func:`create_network` refuses any other option
with a message naming it (a misspelled ``--network-options`` key is an error, not ignored).
"""
from __future__ import annotations

import inspect

from ..utils import Registry, SemisegError

_REGISTRY = Registry("network")
SEGMENTATION, PROPAGATION = "segmentation", "propagation"
_KINDS: dict[str, str] = {}


def register(name: str, kind: str = SEGMENTATION):
    """Decorator: register a network factory under ``name``. ``kind`` says what it is, so that no
    caller compares names: ``segmentation`` (an image patch -> class logits; sliding-window
    prediction, an ONNX graph) or ``propagation`` (STCN: masks carried from slice to slice,
    :mod:`semiseg.propagation`; no ONNX graph)."""
    if kind not in (SEGMENTATION, PROPAGATION):
        raise ValueError(f"network {name!r}: kind must be {SEGMENTATION} or {PROPAGATION}, not {kind!r}")
    _KINDS[name] = kind
    return _REGISTRY.register(name)


def available() -> list[str]:
    return _REGISTRY.names()


def network_kind(name: str) -> str:
    """``segmentation`` or ``propagation`` (see :func:`register`); an unknown name is an error."""
    _REGISTRY.get(name)
    return _KINDS[name]


def network_options(name: str) -> list[str]:
    """The options a registered network takes (its factory's keyword arguments)."""
    params = list(inspect.signature(_REGISTRY.get(name)).parameters.values())[3:]
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def create_network(name: str, cfg: dict, in_channels: int, out_channels: int, **opts):
    known = network_options(name)
    unknown = sorted(set(opts) - set(known))
    if unknown:
        raise SemisegError(f"network {name!r} has no option {', '.join(map(repr, unknown))} "
                           f"(its options: {', '.join(known) or 'none'})")
    return _REGISTRY.get(name)(cfg, in_channels, out_channels, **opts)


def require_divisible(name: str, patch, k: int) -> None:
    if any(p % k for p in patch):
        raise SemisegError(f"network {name!r} needs every patch side divisible by {k}; the patch is {list(patch)} "
                           f"(choose another with --patch-size)")
