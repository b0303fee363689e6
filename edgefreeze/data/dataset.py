"""Turn a pipeline's `data` section into labelled train / validation / test splits."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefreeze.data.sources import Table, read_file, read_source
from edgefreeze.data.split import split_indices
from edgefreeze.errors import ConfigError
from edgefreeze.spec import DataSpec


@dataclass(frozen=True)
class Split:
    """One split: texts and integer label ids of equal length."""

    texts: list[str]
    labels: np.ndarray  # (n,) int64 ids into LabelledData.label_names

    def __len__(self) -> int:
        return len(self.texts)

    def fingerprint(self) -> str:
        """sha256 of the split's rows in order: two equal fingerprints mean equal data."""
        digest = hashlib.sha256()
        for text, label in zip(self.texts, self.labels.tolist()):
            digest.update(f"{label}\x1f{text}\x1e".encode())
        return digest.hexdigest()


@dataclass(frozen=True)
class LabelledData:
    train: Split
    validation: Split | None
    test: Split
    label_names: list[str]
    sources: dict[str, dict[str, str]]  # split source -> {"origin", "sha256"}
    dropped_rows: int = 0

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for name, split in self.named_splits().items():
            digest.update(f"{name}:{split.fingerprint()};".encode())
        return digest.hexdigest()

    def named_splits(self) -> dict[str, Split]:
        splits = {"train": self.train, "validation": self.validation, "test": self.test}
        return {name: split for name, split in splits.items() if split is not None}


@dataclass(frozen=True)
class _Rows:
    texts: list[str]
    labels: list[str]
    groups: list[str] | None
    dropped: int = 0  # rows skipped for an empty text or label (data.drop_empty)


def load_data(spec: DataSpec, resolve: Callable[[str], Path],
              added: Sequence[Path] = ()) -> LabelledData:
    """Read, check, label-map and split the data a pipeline names.

    `added` files (same columns) join the training split whole: new labelled rows for a
    retrain, while the held-out split stays the one earlier builds were gated on.
    """
    main = read_source(spec.source, resolve)
    rows = _extract(main, spec, "data.source", use_groups=True)
    dropped = rows.dropped
    if spec.sample_rows is not None and spec.sample_rows < len(rows.texts):
        rng = np.random.default_rng(spec.split.seed)
        rows = _take(rows, sorted(rng.choice(len(rows.texts), spec.sample_rows, replace=False)))

    separate = {key: read_source(value, resolve)
                for key, value in (("test", spec.test), ("validation", spec.validation)) if value}
    extra = {key: _extract(table, spec, f"data.{key}", use_groups=False, like=main)
             for key, table in separate.items()}
    fractions = [spec.split.test if "test" not in extra else 0.0,
                 spec.split.validation if "validation" not in extra else 0.0]
    test_idx, val_idx, train_idx = split_indices(len(rows.texts), fractions, spec.split.seed,
                                                 rows.groups)
    new_tables = [read_file(Path(path)) for path in added]
    new_rows = [_extract(t, spec, "--add", use_groups=False, like=main) for t in new_tables]
    label_names = _label_names(spec, main, rows.labels)
    for table, part in [*zip(separate.values(), extra.values()), *zip(new_tables, new_rows)]:
        unknown = sorted(set(part.labels) - set(label_names))
        if unknown:
            raise ConfigError(f"{table.origin}: labels {unknown[:5]} are not among the data's "
                              f"labels {label_names}")
    train_rows = _concat([_take(rows, train_idx), *new_rows])
    parts = {"train": train_rows,
             "test": extra.get("test") or _take(rows, test_idx),
             "validation": extra.get("validation") or _take(rows, val_idx)}

    index = {name: i for i, name in enumerate(label_names)}
    splits = {key: Split(part.texts, np.array([index[l] for l in part.labels], dtype=np.int64))
              for key, part in parts.items()}
    _check_splits(splits, label_names, spec)
    sources = {"source": {"origin": main.origin, "sha256": main.sha256}}
    sources.update({key: {"origin": t.origin, "sha256": t.sha256} for key, t in separate.items()})
    sources.update({f"added_{i}": {"origin": t.origin, "sha256": t.sha256}
                    for i, t in enumerate(new_tables, start=1)})
    return LabelledData(dropped_rows=dropped + sum(p.dropped for p in extra.values())
                        + sum(p.dropped for p in new_rows),
                        train=splits["train"],
                        validation=splits["validation"] if len(splits["validation"]) else None,
                        test=splits["test"], label_names=label_names, sources=sources)


def _extract(table: Table, spec: DataSpec, key: str, use_groups: bool,
             like: Table | None = None) -> _Rows:
    """Texts, labels (and groups) of a table; `like` lends its default column names."""
    defaults = like or table
    text_col = spec.text_column or defaults.text_column
    label_col = spec.label_column or defaults.label_column
    group_col = spec.split.group_column or table.group_column if use_groups else None
    columns = set(table.rows[0])
    for role, column in (("text_column", text_col), ("label_column", label_col),
                         ("split.group_column", group_col)):
        if column is not None and column not in columns:
            raise ConfigError(f"{table.origin}: no column {column!r} (data.{role}); "
                              f"columns are {sorted(columns)}")
    texts, labels, groups, dropped = [], [], [], 0
    for number, row in zip(table.record_numbers, table.rows):
        text, label = row.get(text_col), row.get(label_col)
        if text is not None and not isinstance(text, str):
            raise ConfigError(f"{table.origin}:{number}: {text_col!r} is "
                              f"{type(text).__name__} {text!r}, not text ({key})")
        empty_text = text is None or not text.strip()
        empty_label = label is None or (isinstance(label, str) and not label.strip())
        if (empty_text or empty_label) and spec.drop_empty:
            dropped += 1
            continue
        if empty_text or empty_label:
            column = text_col if empty_text else label_col
            raise ConfigError(f"{table.origin}:{number}: empty or missing {column!r} ({key}; "
                              "data.drop_empty: true skips such rows)")
        texts.append(text)
        labels.append(str(label).strip())
        if group_col is not None:
            groups.append(str(row.get(group_col)))
    return _Rows(texts, labels, groups if group_col is not None else None, dropped)


def _take(rows: _Rows, indices: list[int]) -> _Rows:
    return _Rows([rows.texts[i] for i in indices], [rows.labels[i] for i in indices],
                 [rows.groups[i] for i in indices] if rows.groups is not None else None)


def _concat(parts: list[_Rows]) -> _Rows:
    return _Rows([t for p in parts for t in p.texts], [l for p in parts for l in p.labels], None)


def _label_names(spec: DataSpec, main: Table, labels: list[str]) -> list[str]:
    """Label names in id order: the pipeline's list, the source's own order, or sorted."""
    seen = set(labels)
    if spec.labels is not None:
        if len(set(spec.labels)) != len(spec.labels):
            raise ConfigError("data.labels: label names must be unique")
        unknown = sorted(seen - set(spec.labels))
        if unknown:
            raise ConfigError(f"data.labels: the data has labels not listed: {unknown[:5]}")
        return list(spec.labels)
    if main.label_order is not None and seen <= set(main.label_order):
        return list(main.label_order)
    if all(label.lstrip("-").isdigit() for label in seen):
        return sorted(seen, key=int)
    return sorted(seen)


def _check_splits(splits: dict, label_names: list[str], spec: DataSpec) -> None:
    if len(splits["train"]) == 0:
        raise ConfigError(f"{spec.source}: no rows are left for training ({len(splits['test'])} "
                          f"held out, {len(splits['validation'])} for validation); add rows or "
                          "lower data.split.test / data.split.validation")
    train_classes = set(splits["train"].labels.tolist())
    if len(train_classes) < 2:
        only = label_names[next(iter(train_classes))]
        raise ConfigError(f"{spec.source}: the training data has a single class ({only!r}); "
                          "a classifier needs at least two")
    if len(splits["test"]) == 0:
        raise ConfigError("data: the held-out split is empty; raise data.split.test or add rows")
