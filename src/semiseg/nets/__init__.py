"""Networks: a registry of factories (``registry``) and the networks registered in it:
``unets`` (dynunet, unet, unetr, swinunetr, vnet), ``slice2d`` (deeplabv3plus, transunet: the 2D
Reference module of Pham et al. 2022) and ``stcn`` (the mask-propagation network, Cheng et al. 2021).
"""
from . import slice2d, stcn, unets  # noqa: F401  (each registers its networks)
from .registry import PROPAGATION, SEGMENTATION, available, create_network, network_kind, network_options, register

__all__ = ["PROPAGATION", "SEGMENTATION", "available", "create_network", "network_kind", "network_options",
           "register"]
