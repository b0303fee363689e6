"""The manifest, assembled in this one place from the typed records each stage returned."""

from __future__ import annotations

import datetime as dt
import platform
from dataclasses import dataclass
from importlib import metadata

import torch
from pydantic import ValidationError

from edgefreeze import __version__
from edgefreeze.errors import EdgefreezeError
from edgefreeze.gate import Evaluation, Verdict
from edgefreeze.runtime.forms import FORMS
from edgefreeze.runtime.manifest import (
    BaselineRecord,
    CacheRecord,
    DataRecord,
    ExportRecord,
    JavascriptModel,
    Manifest,
    ModelRecord,
    PipelineRecord,
    QuantizeRecord,
    RuntimeRecord,
    SweepRecord,
    TaskRecord,
    TrainingRecord,
)
from edgefreeze.runtime.session import SESSION_CONFIG
from edgefreeze.schema import Pipeline

LIBRARIES = (
    "torch",
    "transformers",
    "optimum",
    "optimum-onnx",
    "onnx",
    "onnxruntime",
    "tokenizers",
    "numpy",
    "pillow",
)


@dataclass(frozen=True)
class StageRecords:
    """The records the stages returned, each checked where it was made (`RunContext.stage`)."""

    task: TaskRecord
    model: ModelRecord
    data: DataRecord
    cache: CacheRecord
    training: TrainingRecord
    export: dict[str, ExportRecord]
    quantize: dict[str, QuantizeRecord]
    sweep: SweepRecord | None = None  # set when a sweep chose the settings
    baseline: BaselineRecord | None = None  # set when gated against a release


def manifest_for(
    pipeline: Pipeline,
    records: StageRecords,
    evaluation: Evaluation,
    verdict: Verdict,
    sizes: dict[str, int],
    timings_s: dict[str, float],
) -> Manifest:
    """Everything about the bundle being built (its `files` are sealed at publish)."""
    spec = pipeline.spec
    try:
        return Manifest(
            edgefreeze_version=__version__,
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            pipeline=PipelineRecord(
                name=spec.name, path=str(pipeline.path), sha256=pipeline.sha256
            ),
            settings=spec.model_dump(mode="json"),
            task=records.task,
            model=records.model,
            data=records.data,
            training=records.training,
            cache=records.cache,
            export=records.export,
            quantize=records.quantize,
            metrics=evaluation.metrics,
            sizes=sizes,
            latency_ms={name: round(ms, 4) for name, ms in evaluation.latency_ms.items()},
            confusion=evaluation.confusion,
            shape_check=evaluation.shape_check,
            gate=verdict.record(),
            runtime=RuntimeRecord(session_config=SESSION_CONFIG, providers=evaluation.providers),
            versions=versions(),
            timings_s=timings_s,
            sweep=records.sweep,
            baseline=records.baseline,
            javascript=javascript_models(evaluation.metrics),
        )
    except ValidationError as exc:  # the evaluation's or the gate's values
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        raise EdgefreezeError(
            f"the build's manifest does not fit its schema at '{key}': "
            f"{error['msg']} (a bug in edgefreeze or in a registered "
            "task or plan)"
        ) from None


def javascript_models(metrics: dict[str, dict[str, float]]) -> dict[str, JavascriptModel]:
    """How transformers.js loads each one-graph form the build measured (a split form is
    two graphs, which it does not chain)."""
    return {
        name: JavascriptModel(model_file_name=FORMS[name].files[0].removesuffix(".onnx"))
        for name in metrics
        if name in FORMS and not FORMS[name].split
    }


def versions() -> dict[str, str]:
    found = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "edgefreeze": __version__,
    }
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    found["cuda"] = torch.version.cuda or "none"
    return found
