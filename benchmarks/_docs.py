"""Shared by the benchmark scripts: the machine's name, and writing one section of
docs/benchmarks.md between <!-- NAME:start --> and <!-- NAME:end --> markers."""

from __future__ import annotations

import platform
from pathlib import Path

# Where every script writes by default, whatever folder it is run from.
BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_section(path: Path, section: str, name: str) -> None:
    start_mark, end_mark = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    start, end = text.find(start_mark), text.find(end_mark)
    if start >= 0 and end >= 0:
        text = text[:start] + section + text[end + len(end_mark) + 1 :]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)
