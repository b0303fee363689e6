"""The pipeline reference and JSON Schema in docs/ are what the schema writes: a key added,
renamed or re-documented in the code shows up there, or this fails."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgefreeze.cli_reference import STATUSES
from tests.conftest import run_cli

DOCS = Path(__file__).resolve().parent.parent / "docs"
PACKAGE = DOCS.parent / "edgefreeze"
ROOT = Path(__file__).resolve().parent.parent
PIPELINES = sorted((ROOT / "pipelines").glob("*.yaml")) + sorted((ROOT / "examples").glob("*.yaml"))


def test_docs_hold_what_the_reference_command_writes(tmp_path):
    # In a fresh interpreter: other tests register kinds of their own in this one.
    result = subprocess.run(
        [sys.executable, "-m", "edgefreeze", "reference", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    for name in ("pipeline.md", "pipeline.schema.json", "cli.md"):
        assert (tmp_path / name).read_text() == (DOCS / name).read_text(), (
            f"docs/{name} is out of date: run `edgefreeze reference docs`"
        )


def test_every_status_a_command_prints_is_in_the_reference():
    """The `"status": ...` of every dict the CLI and the recipes return is documented."""
    documented = {status for status, *_ in STATUSES}
    printed = set()
    for path in [PACKAGE / "cli.py", *(PACKAGE / "recipes").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values):
                    if isinstance(key, ast.Constant) and key.value == "status":
                        assert isinstance(value, ast.Constant), f"{path}:{node.lineno}"
                        printed.add(value.value)
    assert printed and printed <= documented, printed - documented


def test_the_schema_offers_each_built_in_kind_by_its_key():
    registered = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-c",
                "import json; from edgefreeze.schema import PEFT_SETTINGS, "
                "PLAN_SETTINGS; print(json.dumps([PLAN_SETTINGS.names(), PEFT_SETTINGS.names()]))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    schema = json.loads((DOCS / "pipeline.schema.json").read_text())
    for (section, field), names in zip((("freeze", "plan"), ("peft", "method")), registered):
        offered = [
            choice["properties"][field]["const"]
            for choice in schema["properties"][section]["oneOf"]
            if "properties" in choice
        ]
        assert offered == names


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda p: p.name)
def test_every_key_of_the_shipped_pipelines_is_in_the_schema(pipeline):
    schema = json.loads((DOCS / "pipeline.schema.json").read_text())
    document = yaml.safe_load(pipeline.read_text())
    missing = list(_unknown_keys(document, schema, schema, ""))
    assert not missing


def _unknown_keys(value: Any, node: dict, root: dict, where: str):
    """Keys of `value` that the schema `node` has no property for (following $ref, and
    the choice of a kind section that names its kind)."""
    while "$ref" in node:
        node = root["$defs"][node["$ref"].rsplit("/", 1)[1]]
    for choice in node.get("oneOf", []) + node.get("anyOf", []):
        if _accepts(choice, value):
            node = choice
            while "$ref" in node:
                node = root["$defs"][node["$ref"].rsplit("/", 1)[1]]
            break
    if not isinstance(value, dict):
        return
    properties = node.get("properties", {})
    for key, item in value.items():
        if key not in properties:
            yield f"{where}{key}"
        else:
            yield from _unknown_keys(item, properties[key], root, f"{where}{key}.")


def _accepts(choice: dict, value: Any) -> bool:
    """Whether `choice` is the branch for `value`: its kind key matches, or is left out
    and the choice is the default kind's (the one that does not require it)."""
    consts = {k: p["const"] for k, p in choice.get("properties", {}).items() if "const" in p}
    return (
        bool(consts)
        and isinstance(value, dict)
        and all(
            value[k] == v if k in value else k not in choice.get("required", [])
            for k, v in consts.items()
        )
    )


def test_a_folder_under_a_file_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "file").write_text("")
    result = run_cli("reference", str(tmp_path / "file" / "docs"))
    assert result.exit_code == 2
    assert result.stderr.startswith("edgefreeze: error: reference: cannot create ")
    assert len(result.stderr.strip().splitlines()) == 1
