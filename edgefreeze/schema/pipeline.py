"""The pipeline file's top level: its sections, and where the file lives (paths in it
are relative to its folder)."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    WrapValidator,
    field_validator,
    model_validator,
)

from edgefreeze.errors import ConfigError
from edgefreeze.schema.data import DataSpec
from edgefreeze.schema.freeze import PLAN_SETTINGS, FreezeSpec
from edgefreeze.schema.gate import GateSpec
from edgefreeze.schema.peft import PEFT_SETTINGS, PeftSpec
from edgefreeze.schema.quantize import ExportSpec, QuantizeSpec
from edgefreeze.schema.section import Section
from edgefreeze.schema.train import SweepSpec, TrainSpec

_plan_settings = PLAN_SETTINGS.validator(default={})


def task_registry() -> ModuleType:
    """The task registry, imported when a pipeline is validated, not when this module is:
    tasks import torch, and a malformed file is refused before that."""
    import edgefreeze.tasks

    return edgefreeze.tasks


class CacheSpec(Section):
    enabled: bool = Field(
        True, description="reuse frozen-stem activations across epochs and builds"
    )
    dir: str | None = Field(
        None,
        description="cache folder (relative to the pipeline file); --cache-dir and "
        "EDGEFREEZE_CACHE_DIR override it; default ~/.cache/edgefreeze",
    )
    dtype: Literal["fp16", "fp32"] = Field("fp16", description="storage precision")


class PipelineSpec(Section):
    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        max_length=100,
        description="the pipeline's name: the default output is models/NAME/vN",
    )
    model: str = Field(
        description="builtin:all-MiniLM-L6-v2, a local folder, or a Hugging Face hub id"
    )
    trust_remote_code: bool = Field(
        False, description="run a hub model's own Python code (only for a model you trust)"
    )
    task: str = Field(
        default_factory=lambda: task_registry().DEFAULT_TASK,
        description="what is predicted (edgefreeze.tasks)",
    )
    data: DataSpec
    freeze: Annotated[SerializeAsAny[FreezeSpec], WrapValidator(_plan_settings)] = Field(
        default_factory=lambda: _plan_settings({}, None)
    )
    peft: Annotated[SerializeAsAny[PeftSpec] | None, WrapValidator(PEFT_SETTINGS.validator())] = (
        Field(
            None,
            description="train small added weights in the trainable layers instead of the "
            "layers themselves (LoRA, IA3)",
        )
    )
    train: TrainSpec = TrainSpec()
    cache: CacheSpec = CacheSpec()
    export: ExportSpec = ExportSpec()
    quantize: QuantizeSpec = QuantizeSpec()
    gate: GateSpec = GateSpec()
    sweep: SweepSpec = SweepSpec()
    output: str | None = Field(None, description="bundle folder; default models/NAME/vN")

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str) -> str:
        if task not in task_registry().TASKS:
            raise ValueError(task_registry().TASKS.unknown(task))
        return task

    @model_validator(mode="after")
    def _lengths_fit(self) -> PipelineSpec:
        too_long = [n for n in self.gate.sequence_lengths or [] if n > self.data.max_length]
        if too_long:
            raise ValueError(f"gate.sequence_lengths {too_long} exceed data.max_length")
        return self

    def shape_check_lengths(self) -> list[int]:
        """Sequence lengths of the fp32 shape check; the default includes unseen ones."""
        if self.gate.sequence_lengths:
            return list(self.gate.sequence_lengths)
        return sorted(
            {min(5, self.data.max_length), min(23, self.data.max_length), self.data.max_length}
        )


class Pipeline(BaseModel):
    """A validated pipeline and where it came from (for paths, messages and the manifest)."""

    model_config = ConfigDict(frozen=True)

    spec: PipelineSpec
    path: Path
    sha256: str

    def resolve(self, relative: str) -> Path:
        """Paths in a pipeline file are relative to the file's own folder, and stay in it:
        a relative path that climbs out (`../../etc/x`) is refused, so a pipeline file
        passed around with its data cannot reach elsewhere unseen. The check is on the path
        as written: an absolute path, or a link the user put in the folder, says where it
        goes and is followed."""
        return self._resolve(relative, "path")

    def _resolve(self, relative: str, key: str) -> Path:
        candidate = Path(relative).expanduser()
        if candidate.is_absolute():
            return candidate
        folder = self.path.parent
        inside = Path(os.path.normpath(folder / candidate))
        if not inside.is_relative_to(folder):
            raise ConfigError(
                f"{self.path}: {key}: {relative!r} leads out of the pipeline's "
                f"folder {folder}; move it beside the pipeline or give its "
                "absolute path"
            )
        return inside

    def check_paths(self) -> None:
        """Refuse, at load, any path setting that climbs out of the pipeline's folder
        (before anything runs, and whichever of them a build ends up reading)."""
        spec = self.spec
        paths = {
            "data.source": spec.data.source,
            "data.test": spec.data.test,
            "data.validation": spec.data.validation,
            "model": spec.model,
            "output": spec.output,
            "cache.dir": spec.cache.dir,
            "gate.baseline.bundle": spec.gate.baseline.bundle,
        }
        for key, value in paths.items():
            if value is not None and not value.startswith("builtin:"):
                self._resolve(value, key)
