"""manifest.json: the typed record of a bundle, written by the build in one place
(`edgefreeze.publish.record`) and read through `Manifest` by the runtime, `diff`,
`retrain --from`, the report and the benchmarks.

Validated with pydantic (as the pipeline file is): a manifest missing what a reader needs
is one line naming the dotted key, never a KeyError deep in a reader. Manifests written
before `schema_version` existed (edgefreeze 0.1, "version 1") are upgraded on reading,
so bundles already on devices keep loading. Torch-free.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgefreeze.errors import BundleError, CheckFailed

SCHEMA_VERSION: Final = 2


class Record(BaseModel):
    """Base of every section: unknown keys are errors (a typo is caught when written)."""

    model_config = ConfigDict(extra="forbid")


class PipelineRecord(Record):
    name: str
    path: str
    sha256: str


class TaskRecord(Record):
    """What the device needs to know of the task: how to encode an input for the model and
    how to read the model's outputs (see `edgefreeze.runtime.inputs` and `.outputs`)."""

    name: str
    inputs: str
    outputs: str
    gate_metric: str  # the metric the gate's max_metric_drop watches


class ModelRecord(Record):
    spec: str
    location: str
    weights_sha256: str  # of the weights file; "hub" when loaded from the hub
    revision: str | None = None  # the hub commit, when loaded from the hub
    frozen_sha256: str | None = None  # every tensor that did not train (retrain --from)
    model_type: str
    layers: int


class SourceRecord(Record):
    origin: str
    sha256: str


class SplitRecord(Record):
    rows: int
    fingerprint: str
    truncated: int = 0  # rows cut to max_length tokens
    seen_in_training: int = 0  # rows whose input is also in the training split


class DataRecord(Record):
    sources: dict[str, SourceRecord]
    fingerprint: str
    dropped_rows: int
    label_names: list[str]
    max_length: int
    splits: dict[str, SplitRecord]


class FreezeRecord(Record):
    plan: str
    settings: dict[str, Any]  # the plan's own configuration
    boundary: int  # layers below it are the frozen stem
    cacheable: bool = True  # False: the embeddings train, or nothing but them is frozen
    trainable_layers: list[int]
    trainable_parameters: int
    total_parameters: int
    moves: list[dict[str, Any]] = []  # an adaptive plan's boundary moves: epoch, boundary, why

    @property
    def trainable_share(self) -> float:
        return self.trainable_parameters / self.total_parameters


class EpochRecord(Record):
    epoch: int
    loss: float
    seconds: float
    validation: dict[str, float] = {}  # the task's gate metric on the validation split


class WarmStartRecord(Record):
    bundle: str
    sha256: str


class TrainingRecord(Record):
    device: str
    precision: str
    warm_start: WarmStartRecord | None = None
    steps: int
    epochs: list[EpochRecord]
    step_losses: list[float] = []  # the training loss of every optimizer step
    best_epoch: int | None = None  # early stopping: the epoch whose weights shipped
    freeze: FreezeRecord


class CacheRecord(Record):
    enabled: bool
    dir: str | None = None
    keyset: str | None = None
    dtype: str | None = None
    boundary: int | None = None
    hits: int = 0
    misses: int = 0
    corrupt: int = 0
    bytes_written: int = 0
    bytes: int = 0
    problem: str | None = None  # why the cache stopped being used, if it did
    live_reason: str | None = None  # why the plan leaves nothing to cache, if so


class ExportRecord(Record):
    """How one exported (fp32) form was written."""

    exporter: str  # optimum.exporters.onnx, or torch's dynamo exporter for stem + top
    opset: int | None = None
    dynamic_axes: list[str] = []  # the whole model's: batch_size, and sequence_length for tokens
    boundary: int | None = None  # stem + top: the layer where the top begins
    stem_inputs: list[str] = []  # stem + top: the model inputs the stem reads


class AttemptRecord(Record):
    """One try of the quantization fallback."""

    fp32_segments: list[str]
    metrics: dict[str, float]
    passed: bool
    size_bytes: int
    size_share: float | None = None  # of the fp32 form's bytes
    p50_ms: float


class QuantizeRecord(Record):
    mode: str
    graphs: dict[str, dict[str, Any]] = {}  # per file: the quantizer's settings
    attempts: list[AttemptRecord] = []
    fallback_order: str | None = None  # when the first attempt failed: how segments were picked
    sensitivity: dict[str, float] = {}  # per segment: output error when it alone is int8


class ShapeCell(Record):
    batch_size: int
    sequence_length: int | None  # None: the inputs have no sequence axis (images)
    max_logit_error: float


class ShapeCheck(Record):
    batch_sizes: list[int]
    sequence_lengths: list[int]
    max_logit_error: float
    cells: list[ShapeCell]


class RuleRecord(Record):
    kind: Literal["max", "min"]
    limit: float
    measured: float
    passed: bool
    what: str


class GateRecord(Record):
    passed: bool
    rules: dict[str, RuleRecord]
    failures: list[str]


class FlipRecord(Record):
    row: int  # in the held-out split
    input: Any
    target: Any
    baseline: Any  # the baseline release's prediction
    new: Any  # this build's


class BaselineRecord(Record):
    """This build's int8 model against the release in the field, on the same rows."""

    bundle: str
    pipeline: str
    created: str
    metric: str
    baseline_value: float
    value: float
    rows: int
    flips: int
    flip_share: float
    same_held_out: bool  # False: the baseline was gated on other rows (it may have trained
    # on some of these)
    flipped: list[FlipRecord]  # the first 100


class RuntimeRecord(Record):
    session_config: dict[str, str] = {}  # ONNX Runtime config entries the gate ran with
    providers: dict[str, str] = {}  # per model form: the execution provider the gate used


class TrialRecord(Record):
    number: int
    state: str  # complete, pruned (stopped early by the pruner) or failed
    params: dict[str, Any]
    value: float | None = None  # validation score of the weights it kept (None: pruned)
    epochs_run: float  # epochs trained before it ended or was stopped
    seconds: float


class PairedComparison(Record):
    """The sweep's best trial against the pipeline's own settings (`edgefreeze.gate.paired`)."""

    method: str
    resamples: int
    confidence: float  # the share of resamples the best trial had to come out ahead in
    challenger: float  # the best trial's validation score
    default: float  # the pipeline's own settings' validation score
    ahead: float  # the share of resamples where the best trial scored higher
    better: bool


class SweepRecord(Record):
    """The search that chose this bundle's settings (`edgefreeze sweep`). Bundles swept
    before the pipeline's own settings became the first trial lack the last five keys."""

    objective: str  # the validation metric maximised
    sampler: str
    pruner: str | None
    seconds: float
    best_trial: int  # the best by validation score
    best_value: float
    best_params: dict[str, Any]
    trials: list[TrialRecord]
    default_trial: int | None = None  # the pipeline's own settings (None: it failed)
    default_value: float | None = None
    comparison: PairedComparison | None = None  # None: the best was the default, or none
    chosen_trial: int | None = None  # the trial whose model this bundle holds
    why: str | None = None


class TargetCheck(Record):
    """A run of the bundle on another CPU or ONNX Runtime (`edgefreeze verify-target`)."""

    machine: str  # as the target's Python reports it (aarch64, x86_64)
    emulated_by: str | None = None  # qemu-user's version line; None: this CPU itself
    python: str | None = None  # None: not a Python runtime (javascript says which)
    javascript: str | None = None  # "transformers.js VERSION, Node VERSION" (--node)
    onnxruntime: str
    numpy: str | None = None
    form: str
    rows: int  # held-out rows run
    metrics: dict[str, float]  # agreement and max_logit_error: against this machine's
    host_metrics: dict[str, float]  # the same form here, on the same rows
    token_ids_differ: int | None = None  # inputs whose token ids differ (None: not compared)
    predictions_differ: int | None = None  # inputs it reads otherwise (None: not compared)
    passed: bool
    failures: list[str] = []
    checked: str


def inside_the_bundle(files: dict[str, Any]) -> dict[str, Any]:
    """A validator of a bundle's file list: readers open these names under the bundle
    folder (and a device writes them there), so none may lead out of it."""
    for name in files:
        parts = PurePosixPath(name).parts
        if not parts or name.startswith("/") or "\\" in name or ".." in parts:
            raise ValueError(f"file name {name!r} leads out of the bundle")
    return files


class FileRecord(Record):
    sha256: str
    size: int


class JavascriptModel(Record):
    """How transformers.js loads one model form of the bundle:
    `from_pretrained(BUNDLE, {subfolder, model_file_name, dtype})` (its own layout keeps
    models under onnx/ and names them by dtype; a bundle names each file whole)."""

    subfolder: str = ""
    model_file_name: str  # the file without .onnx
    dtype: str = "fp32"  # adds no suffix to model_file_name


class SlimRecord(Record):
    """Set on a device bundle (`edgefreeze slim`): the forms it keeps, and the bundle it
    was cut from, whose manifest lists every file the build made."""

    forms: list[str]
    from_manifest_sha256: str
    dropped: list[str]


class Manifest(Record):
    """Everything about one bundle. Metrics, sizes, shape checks and quantization are keyed
    by model form name (`edgefreeze.runtime.forms`), metrics also by `pytorch`."""

    schema_version: Literal[2] = SCHEMA_VERSION
    edgefreeze_version: str
    created: str
    pipeline: PipelineRecord
    settings: dict[str, Any]  # the pipeline's settings, defaults filled in
    task: TaskRecord
    model: ModelRecord
    data: DataRecord
    training: TrainingRecord
    cache: CacheRecord
    export: dict[str, ExportRecord]  # per exported form
    quantize: dict[str, QuantizeRecord]
    metrics: dict[str, dict[str, float]]
    sizes: dict[str, int]
    latency_ms: dict[str, float] = {}  # batch-1 median per model form, on the build machine
    # (each on its execution provider, runtime.providers: fp16 on CUDA where there is one)
    confusion: dict[str, list[list[int]]] = {}  # per model form: [true label][predicted]
    shape_check: dict[str, ShapeCheck]
    gate: GateRecord
    runtime: RuntimeRecord
    versions: dict[str, str]
    timings_s: dict[str, float]
    sweep: SweepRecord | None = None  # set when `edgefreeze sweep` chose the settings
    baseline: BaselineRecord | None = None  # set when gated against a release (--baseline)
    targets: list[TargetCheck] = []  # runs on other CPUs and ONNX Runtimes, added later
    slim: SlimRecord | None = None  # set on a device bundle cut to some forms
    javascript: dict[str, JavascriptModel] = {}  # per single-graph form (transformers.js)
    files: dict[str, FileRecord] = Field(default_factory=dict)  # sealed at publish

    _inside_the_bundle = field_validator("files")(inside_the_bundle)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """Read and check a manifest; a problem is one `BundleError` line naming the key."""
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BundleError(f"{path.parent}: not a bundle ({path.name}: {exc})") from None
        return cls.parse(document, path)

    @classmethod
    def parse(cls, document: object, path: Path) -> Manifest:
        if not isinstance(document, dict):
            raise BundleError(f"{path}: expected a JSON object")
        version = document.get("schema_version", 1)
        if version == 1:
            document = upgrade_v1(document)
        elif version != SCHEMA_VERSION:
            raise BundleError(
                f"{path}: schema_version {version!r} is not one this edgefreeze "
                f"reads (it reads 1 and {SCHEMA_VERSION}); upgrade edgefreeze"
            )
        try:
            return cls.model_validate(document)
        except ValidationError as exc:
            error = exc.errors()[0]
            key = ".".join(str(part) for part in error["loc"])
            rebuild = (
                "; it predates schema_version: rebuild the bundle with `edgefreeze build`"
                if version == 1
                else ""
            )
            raise BundleError(
                f"{path}: missing or invalid '{key}' ({error['msg']}){rebuild}"
            ) from None


# Version 1 (edgefreeze 0.1) named forms after their ONNX precision and had one task.
_V1_FORMS = {
    "pytorch": "pytorch",
    "onnx_fp32": "fp32",
    "onnx_int8": "int8",
    "onnx_fp16": "fp16",
    "onnx_split_fp32": "split-fp32",
    "onnx_split_int8": "split-int8",
}
_V1_TASK = {
    "name": "text-classification",
    "inputs": "text",
    "outputs": "label",
    "gate_metric": "accuracy",
}


def upgrade_v1(old: dict[str, Any]) -> dict[str, Any]:
    """A version-1 manifest in today's schema. Keys it does not have stay missing, so a
    truncated old manifest still fails validation with the key's name."""

    def forms(section: object) -> object:
        if not isinstance(section, dict):
            return section
        return {_V1_FORMS.get(key, key): value for key, value in section.items()}

    new = {**old, "schema_version": SCHEMA_VERSION, "task": _V1_TASK}
    for key in ("metrics", "sizes", "shape_check", "quantize"):
        if key in old:
            new[key] = forms(old[key])
    if isinstance(old.get("gate"), dict) and isinstance(old["gate"].get("rules"), dict):
        rules = {}
        for name, rule in old["gate"]["rules"].items():
            form, _, rule_name = name.partition(".")
            rule_name = "max_metric_drop" if rule_name == "max_accuracy_drop" else rule_name
            rules[f"{_V1_FORMS.get(form, form)}.{rule_name}"] = rule
        new["gate"] = {**old["gate"], "rules": rules}
    if isinstance(new.get("quantize"), dict):
        new["quantize"] = {name: _v1_quantize(record) for name, record in new["quantize"].items()}
    training = old.get("training")
    if isinstance(training, dict):
        new["training"] = _v1_training(training, old)
    export = old.get("export")
    if isinstance(export, dict):
        new["export"] = (
            {
                "fp32": export["composed"],
                **({"split-fp32": export["split"]} if "split" in export else {}),
            }
            if "composed" in export
            else {"fp32": export}
        )
    return new


def _v1_quantize(record: object) -> object:
    if not isinstance(record, dict):
        return record
    if "attempts" not in record:  # fp16: {"mode": "fp16", "keep_io_types": true}
        settings = {k: v for k, v in record.items() if k != "mode"}
        return {"mode": record.get("mode"), "graphs": {"model.fp16.onnx": settings}}
    attempts = [
        {
            "fp32_segments": a.get("fp32_segments"),
            "passed": a.get("passed"),
            "size_bytes": a.get("size_bytes"),
            "p50_ms": a.get("p50_ms"),
            "metrics": {k: a[k] for k in ("accuracy", "agreement") if k in a},
        }
        for a in record["attempts"]
        if isinstance(a, dict)
    ]
    graphs = record.get("graphs", {})
    mode = next((g.get("mode") for g in graphs.values() if isinstance(g, dict)), "dynamic")
    return {"mode": mode, "graphs": graphs, "attempts": attempts}


def _v1_training(training: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    layers = training.get("trainable_layers")
    depth = old.get("model", {}).get("layers") if isinstance(old.get("model"), dict) else None
    freeze = {
        "plan": "top_k",
        "trainable_layers": layers,
        "settings": {
            "plan": "top_k",
            "trainable_layers": len(layers) if isinstance(layers, list) else None,
        },
        "boundary": depth - len(layers)
        if isinstance(layers, list) and isinstance(depth, int)
        else None,
        "trainable_parameters": training.get("trainable_parameters"),
        "total_parameters": training.get("total_parameters"),
    }
    epochs = [
        {
            "epoch": e.get("epoch"),
            "loss": e.get("loss"),
            "seconds": e.get("seconds"),
            "validation": {"accuracy": e["val_accuracy"]} if "val_accuracy" in e else {},
        }
        for e in training.get("epochs", [])
        if isinstance(e, dict)
    ]
    kept = ("device", "precision", "warm_start", "steps")
    return {**{k: training[k] for k in kept if k in training}, "epochs": epochs, "freeze": freeze}


class GateRefused(CheckFailed):
    """The built models failed the gate; nothing was published, the report was kept."""

    def __init__(self, message: str, manifest: Manifest, report_dir: Path) -> None:
        super().__init__(message)
        self.manifest = manifest
        self.report_dir = report_dir
