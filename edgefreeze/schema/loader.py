"""Reading a pipeline file: the YAML (safe loader only, with a guard against alias
bombs) in, a validated `Pipeline` out, and every error as one `ConfigError` line naming the
file, the line and the key, so a release pipeline's log says exactly what to fix.
Validation is pydantic's (a well-kept library whose error locations map straight onto our
dotted keys)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from edgefreeze.errors import ConfigError
from edgefreeze.schema.pipeline import Pipeline, PipelineSpec


def load_pipeline(path: str | Path) -> Pipeline:
    """Read and validate a pipeline file; any problem raises one `ConfigError` line."""
    path = Path(path)
    try:
        raw_bytes = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read pipeline file ({exc.strerror})") from None
    if len(raw_bytes) > MAX_PIPELINE_BYTES:
        raise ConfigError(
            f"{path}: {len(raw_bytes):,} bytes is not a pipeline file (at most "
            f"{MAX_PIPELINE_BYTES:,})"
        )
    text = raw_bytes.decode("utf-8", errors="replace")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        values = _expanded_size(root, {})
        if values > MAX_PIPELINE_VALUES:
            raise ConfigError(
                f"{path}: expands to {values:,} values through YAML aliases "
                f"(at most {MAX_PIPELINE_VALUES:,}); refusing it"
            )
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: malformed YAML: {problem}") from None
    if not isinstance(document, dict):
        raise ConfigError(
            f"{path}: a pipeline file must be a mapping of keys, got {type(document).__name__}"
        )
    try:
        spec = PipelineSpec.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path, _key_lines(root))) from None
    pipeline = Pipeline(
        spec=spec, path=path.resolve(), sha256=hashlib.sha256(raw_bytes).hexdigest()
    )
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
            message = message[len("Value error, ") :]
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
