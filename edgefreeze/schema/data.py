"""`data:`: where the labelled rows come from and how they are split."""

from __future__ import annotations

import codecs
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edgefreeze.schema.section import Section


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
        description="a CSV, JSONL or CoNLL file or an image folder (relative to the "
        "pipeline file), or builtin:rotten-tomatoes"
    )
    test: str | None = Field(None, description="separate held-out file; replaces split.test")
    validation: str | None = Field(
        None, description="separate validation file; replaces split.validation"
    )
    text_column: str | None = Field(
        None, description="column with the input (default: text; token-classification: tokens)"
    )
    label_column: str | None = Field(
        None, description="column with the target (default: label; token-classification: tags)"
    )
    labels: list[str] | None = Field(
        None, min_length=2, description="label names in id order; default: sorted labels seen"
    )
    max_length: int = Field(128, ge=4, le=8192, description="tokens kept per example")
    encoding: str = Field(
        "utf-8",
        description="text encoding of the data files (a Python "
        "codec name: utf-8, latin-1, cp1252, utf-16, ...)",
    )
    format: Literal["auto", "csv", "jsonl", "conll"] = Field(
        "auto",
        description="format of every data file (source, test, validation, --add); "
        "auto: from each file's suffix (.csv, .jsonl or .json lines, .conll)",
    )
    tag_column: int = Field(
        -1,
        description="CoNLL files: the white-space-separated column "
        "holding the tag (0 is the token; default: the last)",
    )
    drop_empty: bool = Field(
        False,
        description="skip rows with an empty text or label "
        "(counted in the manifest) instead of failing",
    )
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
