"""Turn a pipeline's `data` section into labelled train / validation / test splits.

Which columns a row's input and target come from, and what they are, is the task's
business (`Task.example`); reading, sampling, label maps, group-aware splitting and the
checks that name the file and row live here, the same for every task.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgefreeze.data.sources import ReadOptions, Table, read_file, read_source
from edgefreeze.data.split import split_indices
from edgefreeze.errors import ConfigError
from edgefreeze.runtime.images import ImageFile
from edgefreeze.runtime.inputs import input_kind
from edgefreeze.runtime.manifest import DataRecord, SourceRecord, SplitRecord
from edgefreeze.schema import DataSpec
from edgefreeze.tasks import MissingValue, Task
from edgefreeze.tasks.encoding import ModelInputs


@dataclass(frozen=True)
class Split:
    """One split: the examples' inputs, and their targets as label ids (the task decides
    their form: for text classification an (n,) int64 array)."""

    inputs: list[Any]
    targets: Any

    def __len__(self) -> int:
        return len(self.inputs)

    def fingerprint(self) -> str:
        """sha256 of the split's rows in order: two equal fingerprints mean equal data."""
        digest = hashlib.sha256()
        for example, target in zip(self.inputs, _plain(self.targets)):
            digest.update(f"{_text(target)}\x1f{_text(example)}\x1e".encode())
        return digest.hexdigest()


@dataclass(frozen=True)
class LabelledData:
    train: Split
    validation: Split | None
    test: Split
    label_names: list[str]
    sources: dict[str, dict[str, str]]  # split source -> {"origin", "sha256"}
    dropped_rows: int = 0
    seen_in_training: dict[str, int] = field(default_factory=dict)  # see _seen_in_training

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for name, split in self.named_splits().items():
            digest.update(f"{name}:{split.fingerprint()};".encode())
        return digest.hexdigest()

    def aligned(self, task: Task, encoded: dict[str, ModelInputs]) -> LabelledData:
        """The splits with targets as the task reads them against their tokens
        (`Task.aligned_targets`); fingerprints stay those of the rows as read."""
        splits: dict[str, Any] = {
            name: Split(split.inputs, task.aligned_targets(split.targets, encoded[name]))
            for name, split in self.named_splits().items()
        }
        return replace(self, **splits)

    def named_splits(self) -> dict[str, Split]:
        splits = {"train": self.train, "validation": self.validation, "test": self.test}
        return {name: split for name, split in splits.items() if split is not None}

    def describe(self) -> str:
        return (
            f"{len(self.train)} train, "
            f"{len(self.validation) if self.validation else 0} validation, "
            f"{len(self.test)} held-out rows; labels {self.label_names}"
            + (f"; {self.dropped_rows} empty rows dropped" if self.dropped_rows else "")
        )

    def record(self, max_length: int, truncated: dict[str, int]) -> DataRecord:
        """The manifest's `data`; `truncated`: rows per split cut to `max_length`."""
        return DataRecord(
            sources={name: SourceRecord(**source) for name, source in self.sources.items()},
            fingerprint=self.fingerprint(),
            dropped_rows=self.dropped_rows,
            label_names=self.label_names,
            max_length=max_length,
            splits={
                name: SplitRecord(
                    rows=len(split),
                    fingerprint=split.fingerprint(),
                    truncated=truncated.get(name, 0),
                    seen_in_training=self.seen_in_training.get(name, 0),
                )
                for name, split in self.named_splits().items()
            },
        )

    def overlap_warning(self) -> str | None:
        """What to say when evaluated rows repeat training rows (they inflate the gate)."""
        parts = [
            f"{count} of {len(split)} {name} rows"
            for name, split in self.named_splits().items()
            if (count := self.seen_in_training.get(name, 0))
        ]
        if not parts:
            return None
        return (
            f"{' and '.join(parts)} repeat a training row's input; the gate scores the "
            "model on what it trained on, which inflates its accuracy (deduplicate the data)"
        )


@dataclass(frozen=True)
class _Rows:
    inputs: list[Any]
    targets: list[Any]  # with label names
    groups: list[str] | None
    dropped: int = 0  # rows skipped for an empty value (data.drop_empty)


def load_data(
    settings: DataSpec, task: Task, resolve: Callable[[str], Path], added: Sequence[Path] = ()
) -> LabelledData:
    """Read, check, label-map and split the data a pipeline names.

    `added` files (same columns) join the training split whole: new labelled rows for a
    retrain, while the held-out split stays the one earlier builds were gated on.
    """
    options = ReadOptions(settings.encoding, settings.format, settings.tag_column)
    main = read_source(settings.source, resolve, options)
    rows = _extract(main, settings, task, "data.source", use_groups=True)
    dropped = rows.dropped
    rows = _sampled(rows, settings)
    separate = {
        key: read_source(value, resolve, options)
        for key, value in (("test", settings.test), ("validation", settings.validation))
        if value
    }
    extra = {
        key: _extract(table, settings, task, f"data.{key}", use_groups=False, like=main)
        for key, table in separate.items()
    }
    fractions = [
        settings.split.test if "test" not in extra else 0.0,
        settings.split.validation if "validation" not in extra else 0.0,
    ]
    test_idx, val_idx, train_idx = split_indices(
        len(rows.inputs), fractions, settings.split.seed, rows.groups
    )
    new_tables = [read_file(Path(path), options) for path in added]
    for table in [main, *separate.values(), *new_tables]:
        _check_kind(table, task)
    new_rows = [
        _extract(t, settings, task, "--add", use_groups=False, like=main) for t in new_tables
    ]
    label_names = _label_names(settings, main, _labels_in(task, rows.targets))
    _check_labels(
        task, label_names, [*zip(separate.values(), extra.values()), *zip(new_tables, new_rows)]
    )
    train_rows = _concat([_take(rows, train_idx), *new_rows])
    parts = {
        "train": train_rows,
        "test": extra.get("test") or _take(rows, test_idx),
        "validation": extra.get("validation") or _take(rows, val_idx),
    }

    index = {name: i for i, name in enumerate(label_names)}
    splits = {
        key: Split(part.inputs, task.encode_targets(part.targets, index))
        for key, part in parts.items()
    }
    _check_splits(parts, task, settings, separate)
    named = {"source": main, **separate}
    named.update({f"added_{i}": t for i, t in enumerate(new_tables, start=1)})
    sources = {key: {"origin": t.origin, "sha256": t.sha256} for key, t in named.items()}
    return LabelledData(
        dropped_rows=dropped
        + sum(p.dropped for p in extra.values())
        + sum(p.dropped for p in new_rows),
        seen_in_training=_seen_in_training(parts, task),
        train=splits["train"],
        validation=splits["validation"] if len(splits["validation"]) else None,
        test=splits["test"],
        label_names=label_names,
        sources=sources,
    )


def _sampled(rows: _Rows, settings: DataSpec) -> _Rows:
    """A seeded sample of `sample_rows` rows (all of them when unset or more)."""
    if settings.sample_rows is None or settings.sample_rows >= len(rows.inputs):
        return rows
    rng = np.random.default_rng(settings.split.seed)
    return _take(rows, sorted(rng.choice(len(rows.inputs), settings.sample_rows, replace=False)))


def _check_labels(task: Task, label_names: list[str], parts: list[tuple[Table, _Rows]]) -> None:
    """Separate and added files may only use the main data's labels."""
    for table, part in parts:
        unknown = sorted(_labels_in(task, part.targets) - set(label_names))
        if unknown:
            raise ConfigError(
                f"{table.origin}: labels {unknown[:5]} are not among the data's "
                f"labels {label_names}"
            )


def _check_kind(table: Table, task: Task) -> None:
    """An image folder is data for an image task only (a text task would read its paths
    as texts, and learn the labels from the folder names in them)."""
    if table.images and input_kind(task.inputs).modality != "image":
        raise ConfigError(
            f"{table.origin}: a folder of images is data for "
            f"image-classification, not {task.name} (give a .csv, .jsonl or "
            ".conll file)"
        )


def _extract(
    table: Table,
    settings: DataSpec,
    task: Task,
    key: str,
    use_groups: bool,
    like: Table | None = None,
) -> _Rows:
    """Inputs, targets (and groups) of a table; `like` lends its default column names."""
    defaults = like or table
    input_col = settings.text_column or defaults.text_column or task.columns[0]
    target_col = settings.label_column or defaults.label_column or task.columns[1]
    group_col = settings.split.group_column or table.group_column if use_groups else None
    columns = set(table.rows[0])
    for role, column in (
        ("text_column", input_col),
        ("label_column", target_col),
        ("split.group_column", group_col),
    ):
        if column is not None and column not in columns:
            raise ConfigError(
                f"{table.origin}: no column {column!r} (data.{role}); columns are {sorted(columns)}"
            )
    inputs, targets, groups, dropped = [], [], [], 0
    for number, row in zip(table.record_numbers, table.rows):
        try:
            example, target = task.example(row, input_col, target_col)
            example = task.resolve(example, table.folder)
        except MissingValue as empty:
            if settings.drop_empty:
                dropped += 1
                continue
            raise ConfigError(
                f"{table.origin}:{number}: empty or missing {empty.column!r} "
                f"({key}; data.drop_empty: true skips such rows)"
            ) from None
        except ValueError as exc:
            raise ConfigError(f"{table.origin}:{number}: {exc} ({key})") from None
        inputs.append(example)
        targets.append(target)
        if group_col is not None:
            groups.append(str(row.get(group_col)))
    return _Rows(inputs, targets, groups if group_col is not None else None, dropped)


def _take(rows: _Rows, indices: list[int]) -> _Rows:
    return _Rows(
        [rows.inputs[i] for i in indices],
        [rows.targets[i] for i in indices],
        [rows.groups[i] for i in indices] if rows.groups is not None else None,
    )


def _concat(parts: list[_Rows]) -> _Rows:
    return _Rows([x for p in parts for x in p.inputs], [t for p in parts for t in p.targets], None)


def _labels_in(task: Task, targets: list[Any]) -> set[str]:
    return {label for target in targets for label in task.target_labels(target)}


def _label_names(settings: DataSpec, main: Table, seen: set[str]) -> list[str]:
    """Label names in id order: the pipeline's list, the source's own order, or sorted."""
    if settings.labels is not None:
        if len(set(settings.labels)) != len(settings.labels):
            raise ConfigError("data.labels: label names must be unique")
        unknown = sorted(seen - set(settings.labels))
        if unknown:
            raise ConfigError(f"data.labels: the data has labels not listed: {unknown[:5]}")
        return list(settings.labels)
    if main.label_order is not None and seen <= set(main.label_order):
        return list(main.label_order)
    if all(label.lstrip("-").isdigit() for label in seen):
        return sorted(seen, key=int)
    return sorted(seen)


def _seen_in_training(parts: dict[str, _Rows], task: Task) -> dict[str, int]:
    """Per evaluated split, how many of its rows have an input that is also in the
    training split (the same text): a model is scored there on what it learnt by heart."""
    trained_on = {task.example_key(example) for example in parts["train"].inputs}
    return {
        name: sum(task.example_key(example) in trained_on for example in parts[name].inputs)
        for name in ("validation", "test")
    }


def _check_splits(
    parts: dict[str, _Rows], task: Task, settings: DataSpec, separate: dict[str, Table]
) -> None:
    if len(parts["train"].inputs) == 0:
        raise ConfigError(
            f"{settings.source}: no rows are left for training "
            f"({len(parts['test'].inputs)} held out, "
            f"{len(parts['validation'].inputs)} for validation); add rows or "
            "lower data.split.test / data.split.validation"
        )
    train_labels = sorted(_labels_in(task, parts["train"].targets))
    if len(train_labels) < 2:
        only = f"a single class ({train_labels[0]!r})" if train_labels else "no labels"
        raise ConfigError(
            f"{settings.source}: the training data has {only}; a model needs at "
            "least two to tell apart"
        )
    if len(parts["test"].inputs) == 0:
        raise ConfigError("data: the held-out split is empty; raise data.split.test or add rows")
    for name in ("test", "validation"):
        unseen = sorted(_labels_in(task, parts[name].targets) - set(train_labels))
        if unseen:
            where = (
                separate[name].origin if name in separate else f"{settings.source} ({name} split)"
            )
            raise ConfigError(
                f"{where}: labels {unseen[:5]} never occur in the training "
                "split, so the model cannot learn them; add training rows for "
                "them or drop them"
            )


def _plain(targets: Any) -> list[Any]:
    return targets.tolist() if isinstance(targets, np.ndarray) else list(targets)


def _text(value: Any) -> str:
    """A value as the fingerprint spells it: text as is, an image by its content, anything
    else as JSON (an int label id reads the same either way)."""
    if isinstance(value, ImageFile):
        return f"image:{value.sha256}"
    return (
        value
        if isinstance(value, str)
        else json.dumps(_plain(value) if isinstance(value, np.ndarray) else value)
    )
