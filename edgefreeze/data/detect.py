"""What a data file or folder holds, as `edgefreeze init` needs to know it: the format, the
task, the input and target columns, the labels and a likely group column.

Detection reads the data with the same readers a build uses, so a file that `init`
understands is one a build can read; what it cannot tell apart it says, in one line.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgefreeze.data.sources import ReadOptions, Table, format_of, read_file, read_text
from edgefreeze.errors import ConfigError

# Column names people give their inputs and targets, most telling first.
TEXT_NAMES = ("text", "sentence", "review", "content", "body", "document", "utterance")
LABEL_NAMES = ("label", "labels", "category", "class", "sentiment", "target", "intent")
TAG_NAMES = ("tags", "ner_tags", "labels", "label", "ner")
# Names that say rows belong together (a speaker's, a film's, a document's rows).
GROUP_HINTS = ("group", "user", "author", "speaker", "movie", "film", "doc", "product", "source")
TAG = re.compile(r"^(O|[BIESLU]-\S+)$")  # IOB1, IOB2, BIOES (and BILOU) tags
MIN_GROUPS = 20  # fewer distinct values than this look like a category, not groups
MAX_LABELS = 100  # more distinct values than this are not a label column


@dataclass(frozen=True)
class Column:
    """A detected column and why it was picked (the pipeline's comment)."""

    name: str
    why: str


@dataclass(frozen=True)
class Detected:
    """What `init` found in a data source."""

    task: str
    kind: str  # csv, jsonl, conll or image folder
    explicit_format: str | None  # data.format to write: set when the suffix does not tell
    rows: int
    inputs: Column
    targets: Column
    group: Column | None
    label_counts: dict[str, int]  # label (or tag) -> rows (or words) carrying it
    texts: list[str] | list[list[str]]  # the inputs, to measure their token lengths
    empty_rows: int  # rows with an empty input or target (data.drop_empty skips them)
    tag_column: int | None = None  # data.tag_column to write: a CoNLL tag column not last


def detect(path: Path, encoding: str, inputs: str | None, targets: str | None) -> Detected:
    """Detect what `path` (a file or an image folder) holds; `inputs` and `targets` force
    the column names of a CSV or JSON lines file. Raises ConfigError with one line saying
    what was seen."""
    if path.is_dir():
        _no_columns_to_force(path, "an image folder", inputs, targets)
        return _image_folder(read_file(path))
    if not path.is_file():
        raise ConfigError(f"{path}: no such file or folder")
    kind, explicit = _format(path, encoding)
    if kind == "conll":
        _no_columns_to_force(path, "a CoNLL file", inputs, targets)
        tag_column = _conll_tag_column(path, read_text(path, encoding))
        table = read_file(path, ReadOptions(encoding, kind, tag_column))
        return _tagged(table, kind, explicit, ("tokens", "tags"), tag_column)
    table = read_file(path, ReadOptions(encoding, kind))
    columns = [name for name in table.rows[0] if name.strip()]  # the build reads these
    _check_columns(table, columns, inputs, targets)
    lists = [name for name in columns if _all(table, name, lambda v: isinstance(v, list))]
    if lists:
        return _tagged_columns(table, kind, explicit, lists, (inputs, targets))
    return _classified(table, kind, explicit, columns, (inputs, targets))


def _no_columns_to_force(path: Path, what: str, inputs: str | None, targets: str | None) -> None:
    if inputs or targets:
        raise ConfigError(
            f"{path}: --text-column and --label-column name columns of a CSV or JSON lines "
            f"file; {what} has none"
        )


def _check_columns(
    table: Table, columns: list[str], inputs: str | None, targets: str | None
) -> None:
    """The forced columns exist and differ; a CSV is separated by commas."""
    if len(columns) == 1 and any(mark in columns[0] for mark in "\t;|"):
        raise ConfigError(
            f"{table.origin}: one column named {columns[0][:60]!r}: the file looks separated "
            f"by tabs, semicolons or bars; edgefreeze reads comma-separated CSV or JSON lines"
        )
    for name in (inputs, targets):
        if name is not None and name not in columns:
            raise ConfigError(f"{table.origin}: no column {name!r} (columns: {', '.join(columns)})")
    if inputs is not None and inputs == targets:
        raise ConfigError(f"{table.origin}: the input and the target are both {inputs!r}")


def _format(path: Path, encoding: str) -> tuple[str, str | None]:
    """The format and, when the file's name does not say it, the data.format to write."""
    try:
        return format_of(path), None
    except ConfigError:
        sniffed = _sniff(path, read_text(path, encoding))
        return sniffed, sniffed


def _sniff(path: Path, text: str) -> str:
    """JSON lines start with `{`; CoNLL lines all have as many white-space-separated
    columns (a word, its tag, perhaps more), two or more."""
    lines = [line.strip() for line in text.splitlines()[:200] if line.strip()]
    if not lines:
        raise ConfigError(f"{path}: empty file")
    if lines[0].startswith("{"):
        return "jsonl"
    widths = {len(line.split()) for line in lines if not line.startswith("-DOCSTART-")}
    if len(widths) == 1 and widths.pop() >= 2:
        return "conll"
    if "," in lines[0]:
        return "csv"
    raise ConfigError(
        f"{path}: cannot tell its format (first line {lines[0][:60]!r}): expected a CSV "
        f"with a header, JSON lines or a CoNLL file"
    )


def _conll_tag_column(path: Path, text: str) -> int:
    """The column of a CoNLL file that holds IOB tags (CoNLL-2003 has part-of-speech and
    chunk columns before its entity tags): the one whose values most look like tags,
    the last of equals (the convention)."""
    rows = [
        line.split()
        for line in text.splitlines()
        if line.strip() and not line.startswith("-DOCSTART-")
    ]
    width = max((len(row) for row in rows), default=2)
    shares = {
        column: sum(len(row) > column and bool(TAG.match(row[column])) for row in rows)
        / max(1, len(rows))
        for column in range(1, width)
    }
    best = max(shares, key=lambda column: (shares[column], column))
    if shares[best] < 0.9:
        raise ConfigError(
            f"{path}: no column holds tags (O, B-TYPE, I-TYPE): at best "
            f"{shares[best]:.0%} of column {best}'s values look like tags"
        )
    return -1 if best == width - 1 else best


def _listed(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _all(table: Table, name: str, test: Callable[[object], bool]) -> bool:
    values = [row.get(name) for row in table.rows if row.get(name) not in (None, "")]
    return bool(values) and all(test(value) for value in values)


def _image_folder(table: Table) -> Detected:
    counts = Counter(str(row["label"]) for row in table.rows)
    _enough_labels(counts, table.origin, "subfolders with images")
    return Detected(
        task="image-classification",
        kind="image folder",
        explicit_format=None,
        rows=len(table.rows),
        inputs=Column("path", "image files"),
        targets=Column("label", "the subfolder names"),
        group=None,
        label_counts=dict(sorted(counts.items())),
        texts=[],
        empty_rows=0,
    )


def _tagged(
    table: Table,
    kind: str,
    explicit: str | None,
    columns: tuple[str, str],
    tag_column: int | None = None,
) -> Detected:
    words, tags = columns
    counts: Counter[str] = Counter()
    for number, row in zip(table.record_numbers, table.rows):
        row_tags = _listed(row.get(tags))
        if not all(isinstance(tag, str) for tag in row_tags):
            raise ConfigError(
                f"{table.origin}:{number}: column {tags!r} holds numbers; token "
                f"classification needs tag names (B-PER, I-PER, O)"
            )
        counts.update(map(str, row_tags))
    _enough_labels(counts, table.origin, f"tags in {tags!r}")
    source = "a CoNLL file" if kind == "conll" else "lists in each row"
    return Detected(
        task="token-classification",
        kind=kind,
        explicit_format=explicit,
        rows=len(table.rows),
        inputs=Column(words, f"the words ({source})"),
        targets=Column(tags, f"a tag per word ({source})"),
        group=None,
        label_counts=dict(counts.most_common()),
        texts=[list(map(str, _listed(row.get(words)))) for row in table.rows],
        empty_rows=sum(1 for row in table.rows if not row.get(words)),
        tag_column=None if tag_column in (None, -1) else tag_column,
    )


def _tagged_columns(
    table: Table,
    kind: str,
    explicit: str | None,
    lists: list[str],
    forced: tuple[str | None, str | None],
) -> Detected:
    """JSON lines whose rows hold lists: a column of words and one of their tags."""
    tags = forced[1] or _preferred(lists, TAG_NAMES) or _fewest_values(table, lists)
    words = forced[0] or next((name for name in lists if name != tags), None)
    if words is None or tags is None:
        raise ConfigError(
            f"{table.origin}: one list column ({lists[0]!r}); token classification needs "
            f"two, the words and their tags"
        )
    if words not in lists or tags not in lists:
        raise ConfigError(
            f"{table.origin}: token classification reads lists of words and tags; "
            f"the list columns are {', '.join(lists)}"
        )
    return _tagged(table, kind, explicit, (words, tags))


def _classified(
    table: Table,
    kind: str,
    explicit: str | None,
    columns: list[str],
    forced: tuple[str | None, str | None],
) -> Detected:
    """A label per row: the input is the text column, the target a column of few values."""
    text = forced[0] or _text_column(table, columns)
    label, why = _label_column(table, [c for c in columns if c != text], forced[1])
    if any(name in {_plain(row.get(name)) for row in table.rows} for name in (text, label)):
        raise ConfigError(
            f"{table.origin}: the first row ({', '.join(columns)[:80]}) looks like data: "
            f"a CSV needs a header row naming its columns"
        )
    counts = Counter(_plain(row.get(label)) for row in table.rows)
    counts.pop("", None)  # rows without a label: data.drop_empty skips them
    _enough_labels(counts, table.origin, f"labels in column {label!r}")
    texts = [_plain(row.get(text)) for row in table.rows]
    mean = sum(map(len, texts)) / max(1, len(texts))
    return Detected(
        task="text-classification",
        kind=kind,
        explicit_format=explicit,
        rows=len(table.rows),
        inputs=Column(
            text,
            f"{'named' if forced[0] else 'the longest texts'}, {mean:,.0f} characters on average",
        ),
        targets=Column(label, why),
        group=_group_column(table, [c for c in columns if c not in (text, label)]),
        label_counts=dict(sorted(counts.items())),
        texts=texts,
        empty_rows=sum(
            1 for row in table.rows if "" in (_plain(row.get(text)), _plain(row.get(label)))
        ),
    )


def _text_column(table: Table, columns: list[str]) -> str:
    texts = [c for c in columns if _all(table, c, lambda v: isinstance(v, str))]
    if not texts:
        raise ConfigError(
            f"{table.origin}: no column of texts (columns: {', '.join(columns)}); "
            f"name one with --text-column"
        )
    named = _preferred(texts, TEXT_NAMES)
    return named or max(texts, key=lambda c: _mean_length(table, c))


def _label_column(table: Table, columns: list[str], forced: str | None) -> tuple[str, str]:
    if forced:
        return forced, "named"
    named = _preferred(columns, LABEL_NAMES)
    if named and _distinct(table, named) <= MAX_LABELS:
        return named, "named as labels are"
    rows = len(table.rows)
    candidates = [
        c for c in columns if 2 <= _distinct(table, c) <= min(MAX_LABELS, max(2, rows // 2))
    ]
    if not candidates:
        raise ConfigError(
            f"{table.origin}: no column looks like a label (columns: "
            f"{', '.join(columns) or 'none'}; a label column repeats a few values); "
            f"name one with --label-column"
        )
    chosen = _fewest_values(table, candidates)
    others = [c for c in candidates if c != chosen]
    also = f"; also possible: {', '.join(others)}" if others else ""
    return chosen, f"the fewest distinct values{also}"


def _group_column(table: Table, columns: list[str]) -> Column | None:
    """A column named as groups are (a film, a speaker, a document) whose values repeat
    across rows, many of them: such rows often share wording, so they should stay in one
    split."""
    rows = len(table.rows)
    named = [c for c in columns if any(hint in c.lower() for hint in GROUP_HINTS)]
    grouped = [c for c in named if MIN_GROUPS <= _distinct(table, c) <= rows // 2]
    if not grouped:
        return None  # a date or a price repeats too, but does not say rows belong together
    chosen = grouped[0]
    values = _distinct(table, chosen)
    return Column(chosen, f"{values:,} values of about {rows / values:.0f} rows")


def _preferred(columns: Sequence[str], names: Sequence[str]) -> str | None:
    lowered = {c.lower(): c for c in columns}
    return next((lowered[name] for name in names if name in lowered), None)


def _fewest_values(table: Table, columns: Sequence[str]) -> str:
    return min(columns, key=lambda c: _distinct(table, c))


def _distinct(table: Table, name: str) -> int:
    return len({_plain(row.get(name)) for row in table.rows} - {""})


def _mean_length(table: Table, name: str) -> float:
    return sum(len(_plain(row.get(name))) for row in table.rows) / max(1, len(table.rows))


def _plain(value: object) -> str:
    """A value as the build reads a label: its text, stripped (a number's digits)."""
    return "" if value is None else str(value).strip()


def _enough_labels(counts: Counter[str], origin: str, what: str) -> None:
    if len(counts) < 2:
        seen = f"only {next(iter(counts))!r}" if counts else "none"
        raise ConfigError(f"{origin}: {what}: {seen}; a classifier needs two or more")
