"""Training methods: small objects that name their networks and return their losses.

``base`` holds the contract (:class:`Method`, :class:`NetworkSpec`) and the registry; each method
is one file: ``supervised`` (also BCP's copy-paste pre-training), ``cps`` (cross pseudo
supervision), ``mean_teacher`` (an EMA teacher, BCP's bidirectional copy-paste), ``stcn`` (the
mask-propagation network). ``losses`` and ``mixing`` are what they share.
"""
from . import cps, mean_teacher, stcn, supervised  # noqa: F401  (each registers its method)
from .base import (
                   DataContext,
                   Method,
                   NetworkSpec,
                   PatchBatch,
                   StepContext,
                   ValidationContext,
                   add_option_flags,
                   available_methods,
                   create_method,
                   given_method_options,
                   method_class,
                   option_flag,
                   options_from_args,
                   register_method,
)

__all__ = ["DataContext", "Method", "NetworkSpec", "PatchBatch", "StepContext", "ValidationContext",
           "add_option_flags", "available_methods", "create_method", "given_method_options", "method_class",
           "option_flag", "options_from_args", "register_method"]
