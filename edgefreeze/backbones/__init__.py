"""Backbones: model loading and per-family adapters."""

from edgefreeze.backbones import families as _families  # noqa: F401  (registers the families)
from edgefreeze.backbones.loader import LoadedModel, load_model
from edgefreeze.backbones.registry import (
    FAMILIES,
    Backbone,
    backbone_for,
    hf_config,
    supported_model_types,
)

__all__ = [
    "FAMILIES",
    "Backbone",
    "LoadedModel",
    "backbone_for",
    "hf_config",
    "load_model",
    "supported_model_types",
]
