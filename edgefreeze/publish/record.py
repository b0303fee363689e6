"""The manifest, assembled in this one place from what each stage returned."""

from __future__ import annotations

import datetime as dt
import platform
from importlib import metadata
from typing import Any

import torch
from pydantic import ValidationError

from edgefreeze import __version__
from edgefreeze.backbones import LoadedModel
from edgefreeze.data import LabelledData
from edgefreeze.errors import EdgefreezeError
from edgefreeze.freeze import FreezePlan
from edgefreeze.gate import Evaluation, Verdict
from edgefreeze.runtime.manifest import Manifest
from edgefreeze.runtime.session import SESSION_CONFIG
from edgefreeze.schema import Pipeline
from edgefreeze.tasks import Task
from edgefreeze.train.loop import TrainResult

LIBRARIES = ("torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime",
             "tokenizers", "numpy", "pillow")


def manifest_for(*, pipeline: Pipeline, task: Task, loaded: LoadedModel, frozen_sha256: str,
                 data: LabelledData, truncated: dict[str, int], plan: FreezePlan,
                 trained: TrainResult,
                 warm_start: dict[str, str] | None, cache: dict[str, Any],
                 exported: dict[str, dict], quantized: dict[str, dict],
                 sizes: dict[str, int], evaluation: Evaluation, verdict: Verdict,
                 timings_s: dict[str, float], sweep: dict[str, Any] | None = None,
                 baseline: dict[str, Any] | None = None) -> Manifest:
    """Everything about the bundle being built (its `files` are sealed at publish);
    `truncated`: rows per split cut to max_length."""
    spec = pipeline.spec
    record = {
        "edgefreeze_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "pipeline": {"name": spec.name, "path": str(pipeline.path), "sha256": pipeline.sha256},
        "settings": spec.model_dump(mode="json"),
        "task": task.record(),
        "model": {**loaded.source, "frozen_sha256": frozen_sha256,
                  "model_type": loaded.model.config.model_type,
                  "layers": loaded.backbone.depth},
        "data": data.record(spec.data.max_length, truncated),
        "training": {"device": trained.device, "precision": trained.precision,
                     "steps": trained.steps, "epochs": trained.epochs,
                     "step_losses": [round(loss, 5) for loss in trained.step_losses],
                     "best_epoch": trained.best_epoch, "warm_start": warm_start,
                     "freeze": plan.record()},
        "cache": cache,
        "export": exported,
        "quantize": quantized,
        "metrics": evaluation.metrics,
        "sizes": sizes,
        "latency_ms": {name: round(ms, 4) for name, ms in evaluation.latency_ms.items()},
        "confusion": evaluation.confusion,
        "shape_check": evaluation.shape_check,
        "gate": verdict.record(),
        "runtime": {"session_config": SESSION_CONFIG, "providers": evaluation.providers},
        "versions": versions(),
        "timings_s": timings_s,
        "sweep": sweep,
        "baseline": baseline,
    }
    try:
        return Manifest.model_validate(record)
    except ValidationError as exc:  # a stage (a new task, say) returned what the schema lacks
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        raise EdgefreezeError(f"the build's manifest does not fit its schema at '{key}': "
                              f"{error['msg']} (a bug in edgefreeze or in a registered "
                              "task or plan)") from None


def versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "platform": platform.platform(),
             "edgefreeze": __version__}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    found["cuda"] = torch.version.cuda or "none"
    return found
