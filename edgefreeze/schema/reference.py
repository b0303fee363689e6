"""The pipeline file's reference, written from the schema itself: a Markdown page (every
key, its type, default, limits and meaning) and a JSON Schema that editors use to check
and complete pipeline files. `edgefreeze reference DIR` writes both; a test holds docs/ to
what it writes, so the reference cannot drift from the code.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import annotated_types  # pydantic's own constraint types (Ge, Lt, MinLen, ...)
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from edgefreeze.atomic import write_text
from edgefreeze.errors import ConfigError
from edgefreeze.schema.freeze import PLAN_SETTINGS
from edgefreeze.schema.peft import PEFT_SETTINGS
from edgefreeze.schema.pipeline import PipelineSpec, task_registry
from edgefreeze.schema.section import KindSettings, Section
from edgefreeze.schema.targets import TARGETS

MARKDOWN = "pipeline.md"
JSON_SCHEMA = "pipeline.schema.json"
KIND_SECTIONS: dict[str, KindSettings[Any]] = {"freeze": PLAN_SETTINGS, "peft": PEFT_SETTINGS}
# Keys checked against a registry rather than a type: the reference lists what is there.
CHOICES: dict[str, Callable[[], list[str]]] = {
    "task": lambda: task_registry().TASKS.names(),
    "quantize.target": lambda: list(TARGETS),
}
BOUNDS = {
    "ge": "≥",
    "gt": ">",
    "le": "≤",
    "lt": "<",
    "min_length": "at least",
    "max_length": "at most",
}


def reference_markdown() -> str:
    """The pipeline reference page."""
    lines = [
        "# Pipeline file reference",
        "",
        "<!-- Written by `edgefreeze reference docs/`; a test fails when this page differs. -->",
        "",
        "A pipeline file is YAML. Unknown keys are errors, every number must be finite, and "
        "paths are relative to the file's folder. Editors that read JSON Schema check and "
        "complete pipeline files with the first line below "
        "([pipeline.schema.json](pipeline.schema.json)):",
        "",
        "```yaml",
        "# yaml-language-server: $schema=pipeline.schema.json",
        "```",
    ]
    lines += ["", "## Top-level keys", "", *_table("", PipelineSpec)]
    for name, field in PipelineSpec.model_fields.items():
        section = _section_class(field)
        if name in KIND_SECTIONS:
            lines += _kind_section(name, field, KIND_SECTIONS[name])
        elif section is not None:
            lines += _section(name, section, field.description)
    lines += [
        "",
        "## Target CPUs (`quantize.target`)",
        "",
        "| target | int8 weights | |",
        "| --- | --- | --- |",
    ]
    lines += [
        f"| `{name}` | {t.weight_type}{', 7-bit' if t.reduce_range else ''} | {t.description} |"
        for name, t in TARGETS.items()
    ]
    return "\n".join(lines) + "\n"


def _section(name: str, section: type[BaseModel], description: str | None) -> list[str]:
    lines = ["", f"## `{name}`", ""]
    if description or section.__doc__:
        lines += [_one_line(description or section.__doc__ or ""), ""]
    lines += _table(f"{name}.", section)
    for key, field in section.model_fields.items():
        nested = _section_class(field)
        if nested is not None:
            lines += _section(f"{name}.{key}", nested, field.description)
    return lines


def _kind_section(name: str, field: FieldInfo, kinds: KindSettings[Any]) -> list[str]:
    """A section whose key names a kind: each kind's own keys."""
    base_key = kinds.field
    lines = [
        "",
        f"## `{name}`",
        "",
        _one_line(field.description or kinds.base.__doc__ or ""),
        "",
        f"`{name}.{base_key}` picks one of: "
        + ", ".join(f"`{kind}`" for kind in kinds.names())
        + ".",
    ]
    for kind in kinds.names():
        settings = kinds.get(kind)
        assert settings is not None  # a name the registry lists
        lines += [
            "",
            f"### `{name}.{base_key}: {kind}`",
            "",
            *_table(f"{name}.", settings, skip={base_key}),
        ]
    return lines


def _table(
    prefix: str, model: type[BaseModel], skip: set[str] | frozenset[str] = frozenset()
) -> list[str]:
    rows = ["| key | type | default | limits | meaning |", "| --- | --- | --- | --- | --- |"]
    for key, field in model.model_fields.items():
        if key in skip:
            continue
        if _section_class(field) is not None or (not prefix and key in KIND_SECTIONS):
            rows.append(
                f"| `{prefix}{key}` | section | | | see [`{prefix}{key}`]"
                f"(#{(prefix + key).replace('.', '')}) |"
            )
            continue
        choices = CHOICES.get(prefix + key)
        limits = f"one of {', '.join(f'`{c}`' for c in choices())}" if choices else _limits(field)
        rows.append(
            f"| `{prefix}{key}` | {_type(field.annotation)} | {_default(field)} | "
            f"{limits} | {_one_line(field.description or '')} |"
        )
    return rows if len(rows) > 2 else ["(none of its own)"]


def _section_class(field: FieldInfo) -> type[Section] | None:
    for candidate in (field.annotation, *typing.get_args(field.annotation)):
        if isinstance(candidate, type) and issubclass(candidate, Section):
            return candidate
    return None


def _type(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{value}`" for value in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type(arg) for arg in args)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin in (list, tuple):
        inner = ", ".join(_type(arg) for arg in args if arg is not Ellipsis)
        return f"list of {inner}" if origin is list else f"[{inner}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return ""
    return f"`{json.dumps(value)}`"


def _limits(field: FieldInfo) -> str:
    found = [
        f"{BOUNDS[name]} {getattr(item, name)}"
        for item in _constraints(field)
        for name in BOUNDS
        if hasattr(item, name)
    ]
    return ", ".join(found)


def _constraints(field: FieldInfo) -> Iterator[object]:
    yield from (item for item in field.metadata if isinstance(item, annotated_types.BaseMetadata))
    for arg in typing.get_args(field.annotation):  # Fraction, and list items' bounds
        if typing.get_origin(arg) is typing.Annotated:
            yield from (
                item
                for item in typing.get_args(arg)[1:]
                if isinstance(item, annotated_types.BaseMetadata)
            )
    if typing.get_origin(field.annotation) is typing.Annotated:
        yield from typing.get_args(field.annotation)[1:]


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def json_schema() -> dict[str, Any]:
    """The pipeline file's JSON Schema (2020-12), each kind section a choice among the
    registered kinds' settings, picked by its key (`freeze.plan`, `peft.method`)."""
    schema = PipelineSpec.model_json_schema(mode="validation")
    definitions = schema.setdefault("$defs", {})
    for name, kinds in KIND_SECTIONS.items():
        choices = []
        for kind in kinds.names():
            settings = kinds.get(kind)
            assert settings is not None
            kind_schema = settings.model_json_schema(mode="validation")
            definitions.update(kind_schema.pop("$defs", {}))
            kind_schema["properties"][kinds.field] = {"const": kind}
            # A section without the key is the default kind's; every other kind names itself,
            # so that exactly one choice fits.
            if kind != kinds.base.model_fields[kinds.field].default:
                kind_schema.setdefault("required", []).append(kinds.field)
            choices.append(kind_schema)
        field = PipelineSpec.model_fields[name]
        schema["properties"][name] = {
            "description": field.description or "",
            "oneOf": choices
            + ([{"type": "null"}] if not field.is_required() and field.default is None else []),
        }
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


def write_reference(folder: Path, pages: dict[str, str] | None = None) -> list[Path]:
    """Both files, and `pages` (name -> text) beside them, into `folder`, each written to
    a temporary name and renamed into place."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"reference: cannot create {folder} ({exc.strerror})") from None
    written = []
    files = {MARKDOWN: reference_markdown(), JSON_SCHEMA: json_schema_text(), **(pages or {})}
    for name, text in files.items():
        write_text(folder / name, text)
        written.append(folder / name)
    return written


__all__ = [
    "JSON_SCHEMA",
    "MARKDOWN",
    "json_schema",
    "json_schema_text",
    "reference_markdown",
    "write_reference",
]
