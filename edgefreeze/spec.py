"""The pipeline file: YAML in, typed and validated settings out.

Every error becomes one `ConfigError` line that names the file, the line and the key, so a
release pipeline's log says exactly what to fix. Validation is pydantic's (a well-kept
library whose error locations map straight onto our dotted keys); the YAML is read with
the safe loader only.
"""

from __future__ import annotations

import codecs
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (AliasChoices, BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError,
                      WrapValidator, field_validator, model_validator)

from edgefreeze.errors import ConfigError

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class Section(BaseModel):
    """Base of every section: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitSpec(Section):
    test: float = Field(0.2, gt=0.0, lt=1.0, description="share of rows held out for the gate")
    validation: float = Field(
        0.1, ge=0.0, lt=1.0, description="share of rows for per-epoch validation accuracy"
    )
    group_column: str | None = Field(
        None, description="rows sharing this column's value stay in one split (e.g. a film)"
    )
    seed: int = Field(0, description="seed of the split; the same seed gives the same split")

    @model_validator(mode="after")
    def _room_for_training(self) -> SplitSpec:
        if self.test + self.validation >= 0.9:
            raise ValueError("test + validation must leave at least 10 % of rows for training")
        return self


class DataSpec(Section):
    source: str = Field(
        description="CSV, JSONL or CoNLL file (relative to the pipeline file) or "
        "builtin:rotten-tomatoes"
    )
    test: str | None = Field(None, description="separate held-out file; replaces split.test")
    validation: str | None = Field(
        None, description="separate validation file; replaces split.validation"
    )
    text_column: str | None = Field(None, description="column with the input (default: text; "
                                    "token-classification: tokens)")
    label_column: str | None = Field(None, description="column with the target (default: "
                                     "label; token-classification: tags)")
    labels: list[str] | None = Field(
        None, min_length=2, description="label names in id order; default: sorted labels seen"
    )
    max_length: int = Field(128, ge=4, le=8192, description="tokens kept per example")
    encoding: str = Field("utf-8", description="text encoding of the data files (a Python "
                          "codec name: utf-8, latin-1, cp1252, utf-16, ...)")
    format: Literal["auto", "csv", "jsonl", "conll"] = Field(
        "auto", description="format of every data file (source, test, validation, --add); "
        "auto: from each file's suffix (.csv, .jsonl or .json lines, .conll)")
    tag_column: int = Field(-1, description="CoNLL files: the white-space-separated column "
                            "holding the tag (0 is the token; default: the last)")
    drop_empty: bool = Field(False, description="skip rows with an empty text or label "
                             "(counted in the manifest) instead of failing")
    sample_rows: int | None = Field(
        None, ge=20, description="use a seeded random sample of this many rows (smoke tests)"
    )
    split: SplitSpec = SplitSpec()

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, encoding: str) -> str:
        try:
            if not codecs.lookup(encoding)._is_text_encoding:
                raise LookupError
        except LookupError:
            raise ValueError(f"{encoding!r} is not a text encoding Python knows") from None
        return encoding


class FreezeSpec(Section):
    """What every freezing plan's settings share; each plan kind (`edgefreeze.freeze`)
    subclasses it with its own keys, and `freeze.plan` picks which one validates."""

    plan: str = Field("top_k", description="the freezing plan (edgefreeze.freeze.PLANS)")


def _tasks():
    """The task registry, imported when first needed (tasks import torch)."""
    import edgefreeze.tasks

    return edgefreeze.tasks


class PeftSpec(Section):
    """What every parameter-efficient method's settings share; each method
    (`edgefreeze.peft`) subclasses it, and `peft.method` picks which one validates."""

    method: str = Field(description="the method (edgefreeze.peft.METHODS): lora, ia3, ...")


def kind_settings(base: type[Section], field: str, registry: Callable[[], Any],
                  default: dict[str, Any] | None = None) -> Callable[[Any, Any], Any]:
    """A validator for a section whose `field` names a registered kind: the kind's own
    settings class validates the section, so its errors carry their own dotted keys.
    `registry()` is imported when first needed (the kinds import torch)."""

    def validate(value: Any, handler: Any) -> Any:
        if isinstance(value, base):
            return value
        if value is None:
            value = default
        if not isinstance(value, dict):
            return handler(value)  # pydantic's own "should be a valid dictionary"
        kinds = registry()
        if field not in value and base.model_fields[field].is_required():
            raise ValueError(f"{field}: required key is missing (known: "
                             f"{', '.join(kinds.names())})")
        name = value.get(field, base.model_fields[field].default)
        kind = kinds.get(name) if isinstance(name, str) else None
        if kind is None:
            raise ValueError(f"{field}: {kinds.unknown(name)}")
        return kind.config.model_validate(value)

    return validate


def _plans():
    from edgefreeze.freeze import PLANS

    return PLANS


def _methods():
    from edgefreeze.peft import METHODS

    return METHODS


_plan_settings = kind_settings(FreezeSpec, "plan", _plans, default={})


class TrainSpec(Section):
    epochs: int = Field(3, ge=1, le=1000)
    batch_size: int = Field(32, ge=1, le=65536)
    lr_top: float = Field(3e-4, gt=0.0, lt=1.0, description="learning rate of the trainable "
                          "layers (for the top few; full fine-tuning wants 1e-4 or less)")
    lr_head: float = Field(1e-3, gt=0.0, lt=1.0, description="learning rate of pooler and classifier")
    weight_decay: float = Field(0.01, ge=0.0, lt=1.0)
    warmup: float = Field(0.1, ge=0.0, lt=1.0, description="share of steps with linear warmup")
    schedule: Literal["linear", "cosine", "constant"] = Field(
        "linear", description="the learning rate after warmup: linear or cosine decay to 0, "
        "or constant")
    layer_decay: float = Field(
        1.0, gt=0.0, le=1.0, description="discriminative rates: each trainable layer learns "
        "at this times the rate of the layer above it (the top one at lr_top); 1: all alike")
    early_stopping: int | None = Field(
        None, ge=1, description="stop after this many epochs without a better validation "
        "score, and keep the best epoch's weights (needs a validation split)")
    max_grad_norm: float = Field(1.0, gt=0.0)
    dropout: float | None = Field(
        None, ge=0.0, lt=1.0, description="dropout probability in what trains (null: the "
        "model's own)")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="compute of the trainable top; auto = bf16 autocast where the "
        "device has fast bf16 (CUDA, CPUs with AMX or AVX512-BF16), fp16 with a gradient "
        "scaler on CUDA without bf16, else fp32. The frozen stem and the weights stay fp32")

    def with_epochs(self, epochs: int | None) -> TrainSpec:
        """These settings with another number of epochs (None: unchanged)."""
        return self.model_copy(update={"epochs": epochs}) if epochs else self


class SweepSpec(Section):
    """What `edgefreeze sweep` searches: each range is [low, high] (equal ends fix the value);
    a range left out gets the default below."""

    trials: int = Field(20, ge=1, le=100_000)
    timeout_s: float | None = Field(None, gt=0.0, description="start no trial after this "
                                    "many seconds")
    seed: int = Field(0, description="the sampler's seed")
    prune: bool = Field(True, description="successive halving: stop a trial at a sixth "
                        "or at half of its schedule unless its validation score is among "
                        "the best third of the trials scored there")
    confidence: float = Field(0.95, ge=0.0, le=1.0, description="the best trial replaces "
                              "the pipeline's own settings (the first trial) only if it "
                              "scores higher in this share of paired bootstrap resamples of "
                              "the validation rows; 0 ships the best by validation score")
    lr_top: tuple[float, float] = Field((1e-5, 1e-3), description="log-uniform")
    lr_head: tuple[float, float] = Field((1e-4, 1e-2), description="log-uniform")
    epochs: tuple[int, int] | None = Field(None, description="default: 1 to train.epochs")
    trainable_layers: tuple[int, int] | None = Field(
        None, description="top_k plans: default 0 to freeze.trainable_layers, the cache's "
        "boundary, which no trial goes below")
    rank: tuple[int, int] | None = Field(
        None, description="the PEFT method's size (LoRA r, adapter bottleneck, prefix "
        "tokens), powers of two in the range; default: the pipeline's value")

    @model_validator(mode="after")
    def _ranges_ordered(self) -> SweepSpec:
        for name in ("lr_top", "lr_head", "epochs", "trainable_layers", "rank"):
            bounds, least = getattr(self, name), 0 if name == "trainable_layers" else 1e-12
            if bounds is not None and not least <= bounds[0] <= bounds[1]:
                floor = "0" if name == "trainable_layers" else "0 <"
                raise ValueError(f"sweep.{name}: [low, high] with {floor} low <= high, "
                                 f"not {list(bounds)}")
        return self


class CacheSpec(Section):
    enabled: bool = Field(True, description="reuse frozen-stem activations across epochs and builds")
    dir: str | None = Field(
        None, description="cache folder (relative to the pipeline file); --cache-dir and "
        "EDGEFREEZE_CACHE_DIR override it; default ~/.cache/edgefreeze")
    dtype: Literal["fp16", "fp32"] = Field("fp16", description="storage precision")


class ExportSpec(Section):
    opset: int = Field(18, ge=14, le=23)
    split: bool = Field(False, description="also export stem.onnx + top.onnx for delta updates")


class QuantizeSpec(Section):
    mode: Literal["dynamic", "static"] = Field(
        "dynamic", description="dynamic: activation scales per batch at run time; static: "
        "scales calibrated ahead of time (QDQ, unfused; the split graphs stay dynamic)")
    calibration_rows: int = Field(256, ge=1, le=100000,
                                  description="training examples that calibrate static mode")
    target: str = Field("avx512_vnni", description="the CPU family the int8 weights are for "
                        "(edgefreeze.quantize.targets)")
    per_channel: bool = Field(True, description="one scale per output channel of each weight")
    quantize_embeddings: bool = Field(True, description="int8 embedding tables (Gather) too; "
                                      "false keeps about half a small model's bytes fp32, so "
                                      "raise gate.max_int8_size_share with it")
    fuse: bool = Field(True, description="fuse attention, layer norms and GELU before quantizing")
    fp16: bool = Field(False, description="also write model.fp16.onnx for GPU targets (gated "
                       "like int8)")
    fallback_order: Literal["sensitivity", "from_output"] = Field(
        "sensitivity", description="which segment an int8 model that fails the gate keeps in "
        "fp32 next: the one whose quantization alone errs most (measured), or the next "
        "from the output down (head, top layer, ...)")

    @field_validator("target")
    @classmethod
    def _known_target(cls, target: str) -> str:
        from edgefreeze.quantize.targets import TARGETS

        if target not in TARGETS:
            raise ValueError(f"unknown target {target!r} (known: {', '.join(TARGETS)})")
        return target


class BaselineSpec(Section):
    """The regression gate against the release the fleet runs (`--baseline` overrides
    `bundle`)."""

    bundle: str | None = Field(None, description="the current release's bundle folder; its "
                               "int8 model runs on this build's held-out rows")
    max_metric_drop: Fraction = Field(0.01, description="largest loss of the gate metric of "
                                      "the new int8 model against the baseline's")
    max_flip_share: Fraction = Field(0.05, description="largest share of held-out "
                                     "predictions that may differ from the baseline's")


class GateSpec(Section):
    max_metric_drop: Fraction = Field(
        0.01, validation_alias=AliasChoices("max_metric_drop", "max_accuracy_drop"),
        description="largest loss of the task's gate metric (accuracy for text "
        "classification) of an int8 or fp16 model against PyTorch (0.01 = 1 point); "
        "max_accuracy_drop is the same key's earlier name"
    )
    min_agreement: Fraction = Field(
        0.95, description="smallest share of int8 / fp16 predictions equal to PyTorch's"
    )
    max_logit_error: float = Field(
        1e-3, gt=0.0, description="largest |logit| difference of ONNX fp32 against PyTorch"
    )
    max_int8_size_share: Fraction = Field(
        0.4, description="largest size of an int8 form as a share of its fp32 form's: the "
        "fallback may keep segments in fp32 only up to this")
    batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(
        [1, 3, 17], min_length=3, description="batch sizes of the fp32 shape check"
    )
    sequence_lengths: list[Annotated[int, Field(ge=2)]] | None = Field(
        None, min_length=3, description="sequence lengths of the shape check; default 5, 23, max"
    )
    baseline: BaselineSpec = BaselineSpec()

    @model_validator(mode="before")
    @classmethod
    def _one_name_per_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and {"max_metric_drop", "max_accuracy_drop"} <= set(data):
            raise ValueError("max_accuracy_drop is the earlier name of max_metric_drop; "
                             "give one of them")
        return data


class PipelineSpec(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    model: str = Field(
        description="builtin:all-MiniLM-L6-v2, a local folder, or a Hugging Face hub id"
    )
    trust_remote_code: bool = False
    task: str = Field(default_factory=lambda: _tasks().DEFAULT_TASK,
                      description="what is predicted (edgefreeze.tasks)")
    data: DataSpec
    freeze: Annotated[SerializeAsAny[FreezeSpec], WrapValidator(_plan_settings)] = Field(
        default_factory=lambda: _plan_settings({}, None))
    peft: Annotated[SerializeAsAny[PeftSpec] | None,
                    WrapValidator(kind_settings(PeftSpec, "method", _methods))] = Field(
        None, description="train small added weights in the trainable layers instead of the "
        "layers themselves (LoRA, IA3)")
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
        if task not in _tasks().TASKS:
            raise ValueError(_tasks().TASKS.unknown(task))
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
        return sorted({min(5, self.data.max_length), min(23, self.data.max_length),
                       self.data.max_length})


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
            raise ConfigError(f"{self.path}: {key}: {relative!r} leads out of the pipeline's "
                              f"folder {folder}; move it beside the pipeline or give its "
                              "absolute path")
        return inside

    def check_paths(self) -> None:
        """Refuse, at load, any path setting that climbs out of the pipeline's folder
        (before anything runs, and whichever of them a build ends up reading)."""
        spec = self.spec
        paths = {"data.source": spec.data.source, "data.test": spec.data.test,
                 "data.validation": spec.data.validation, "model": spec.model,
                 "output": spec.output, "cache.dir": spec.cache.dir,
                 "gate.baseline.bundle": spec.gate.baseline.bundle}
        for key, value in paths.items():
            if value is not None and not value.startswith("builtin:"):
                self._resolve(value, key)


def load_pipeline(path: str | Path) -> Pipeline:
    """Read and validate a pipeline file; any problem raises one `ConfigError` line."""
    path = Path(path)
    try:
        raw_bytes = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read pipeline file ({exc.strerror})") from None
    if len(raw_bytes) > MAX_PIPELINE_BYTES:
        raise ConfigError(f"{path}: {len(raw_bytes):,} bytes is not a pipeline file (at most "
                          f"{MAX_PIPELINE_BYTES:,})")
    text = raw_bytes.decode("utf-8", errors="replace")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        values = _expanded_size(root, {})
        if values > MAX_PIPELINE_VALUES:
            raise ConfigError(f"{path}: expands to {values:,} values through YAML aliases "
                              f"(at most {MAX_PIPELINE_VALUES:,}); refusing it")
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: malformed YAML: {problem}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: a pipeline file must be a mapping of keys, got "
                          f"{type(document).__name__}")
    try:
        spec = PipelineSpec.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path, _key_lines(root))) from None
    pipeline = Pipeline(spec=spec, path=path.resolve(),
                        sha256=hashlib.sha256(raw_bytes).hexdigest())
    pipeline.check_paths()
    return pipeline


MAX_PIPELINE_BYTES = 1_000_000
MAX_PIPELINE_VALUES = 100_000  # a real pipeline has a few hundred; an alias bomb, billions


def _expanded_size(node: yaml.Node | None, sizes: dict[int, int]) -> int:
    """How many values the document has once aliases are expanded, counted on the composed
    graph (an alias is the same node object again) in time linear in the file."""
    if node is None:
        return 0
    if id(node) not in sizes:
        sizes[id(node)] = 1  # a node that reaches itself (a recursive alias) counts once
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = []
        sizes[id(node)] = 1 + sum(_expanded_size(child, sizes) for child in children)
    return sizes[id(node)]


def _describe(exc: ValidationError, path: Path, lines: dict[str, int]) -> str:
    """One line for all of pydantic's errors, each with its dotted key and YAML line."""
    parts = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        line = _nearest_line(key, lines)
        where = f"{path}:{line}" if line else str(path)
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "missing":
            message = "required key is missing"
        elif message.startswith("Value error, "):
            message = message[len("Value error, "):]
        parts.append(f"{where}: {key or 'pipeline'}: {message}")
    return "; ".join(parts)


def _nearest_line(key: str, lines: dict[str, int]) -> int | None:
    """The key's own line, or its closest parent's when the key is missing."""
    while key:
        if key in lines:
            return lines[key]
        key = key.rpartition(".")[0]
    return None


def _key_lines(node: Any, prefix: str = "") -> dict[str, int]:
    """Map every dotted key of a composed YAML tree to its 1-based line."""
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            lines[key] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, key))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            key = f"{prefix}.{index}"
            lines[key] = item.start_mark.line + 1
            lines.update(_key_lines(item, key))
    return lines
