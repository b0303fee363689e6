"""The pipeline file's schema: one module per section, the loader, and the registries
through which kinds add their settings. It imports no stage and no kind."""

from edgefreeze.schema.data import DataSpec, SplitSpec
from edgefreeze.schema.freeze import PLAN_SETTINGS, FreezeSpec
from edgefreeze.schema.gate import BaselineSpec, GateSpec
from edgefreeze.schema.loader import load_pipeline
from edgefreeze.schema.peft import PEFT_SETTINGS, PeftSpec
from edgefreeze.schema.pipeline import CacheSpec, Pipeline, PipelineSpec
from edgefreeze.schema.quantize import ExportSpec, QuantizeSpec
from edgefreeze.schema.section import Fraction, KindSettings, Section
from edgefreeze.schema.train import SweepSpec, TrainSpec

__all__ = [
    "PEFT_SETTINGS",
    "PLAN_SETTINGS",
    "BaselineSpec",
    "CacheSpec",
    "DataSpec",
    "ExportSpec",
    "Fraction",
    "FreezeSpec",
    "GateSpec",
    "KindSettings",
    "PeftSpec",
    "Pipeline",
    "PipelineSpec",
    "QuantizeSpec",
    "Section",
    "SplitSpec",
    "SweepSpec",
    "TrainSpec",
    "load_pipeline",
]
