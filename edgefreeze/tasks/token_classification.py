"""Token classification (named entities): one tag per word, read from each word's first
token.

Rows: a sentence's words and their tags, as lists (JSONL), as CoNLL columns, or as
white-space-separated strings (CSV). Tags are `O` or a prefix, a dash and the entity
type, in IOB1, IOB2 or BIOES (`B-PER`, `I-LOC`, `E-ORG`, `S-MISC`). Only each word's first
token carries its tag; the word's other tokens and the special tokens are ignored by the
loss and the metrics (-100), the usual alignment for sub-word models. Words past
`max_length` tokens are not scored (the manifest counts the cut sentences).

Metrics: entity-level precision, recall and F1 from `seqeval` (conlleval's rules, which
read all three schemes: a well-kept library, so that the figures match what users compare
with), token accuracy, and agreement with the reference's tags on the same tokens.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
import torch
from transformers import AutoModelForTokenClassification, PreTrainedTokenizerBase

from edgefreeze.tasks.base import Head, Ints, MissingValue, Outputs, Task
from edgefreeze.tasks.encoding import Encoded, ModelInputs, encode_words
from edgefreeze.tasks.registry import register_task

IGNORED = -100  # a token the loss and the metrics skip (cross_entropy's ignore_index)
TAG = re.compile(r"O|[BIES]-\S+")


@dataclass(frozen=True)
class TagTargets:
    """A split's tags as label ids: per sentence one per word, and (once aligned with the
    tokens) one per token, IGNORED where no word starts."""

    words: list[np.ndarray]
    names: tuple[str, ...]  # label names in id order
    tokens: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.words)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.words)

    def __getitem__(self, row: int | slice) -> np.ndarray | TagTargets:
        if isinstance(row, slice):
            return TagTargets(
                self.words[row], self.names, self.tokens[row] if self.tokens is not None else None
            )
        return self.words[row]

    def aligned(self, encoded: ModelInputs) -> TagTargets:
        """Each word's label on the token where the word starts."""
        assert encoded.word_starts is not None  # encode_words gives every sentence them
        tokens = []
        for labels, starts in zip(self.words, encoded.word_starts):
            row = np.full(len(starts), IGNORED, dtype=np.int64)
            row[starts >= 0] = labels[starts[starts >= 0]]
            tokens.append(row)
        return replace(self, tokens=tokens)

    def scored(self, row: int) -> np.ndarray:
        """The token positions of one sentence that carry a word's label."""
        assert self.tokens is not None  # scoring reads targets `aligned` with the tokens
        return np.flatnonzero(self.tokens[row] != IGNORED)


def _tagging_head(model: Any, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Every family's token head but ModernBERT's: dropout, then a linear classifier on
    each token."""
    return cast(torch.Tensor, model.classifier(model.dropout(hidden)))


def _modernbert_tagging_head(
    model: Any, hidden: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """ModernBERT's: the final norm, its prediction head, dropout, the classifier."""
    return cast(
        torch.Tensor, model.classifier(model.drop(model.head(model.model.final_norm(hidden))))
    )


@register_task
class TokenClassification(Task):
    name = "token-classification"
    model_class = AutoModelForTokenClassification
    export_task = "token-classification"
    inputs = "words"
    outputs = "tags"
    gate_metric = "entity_f1"
    metric_labels = {
        **Task.metric_labels,
        "entity_f1": "entity F1",
        "entity_precision": "entity precision",
        "entity_recall": "entity recall",
        "token_accuracy": "token accuracy",
    }
    columns = ("tokens", "tags")
    head_rows = None
    heads = {
        **dict.fromkeys(
            (
                "bert",
                "distilbert",
                "roberta",
                "xlm-roberta",
                "camembert",
                "electra",
                "mpnet",
                "deberta-v2",
            ),
            Head(("classifier",), _tagging_head),
        ),
        "modernbert": Head(("model.final_norm", "head", "classifier"), _modernbert_tagging_head),
    }

    def example(
        self, row: dict[str, Any], input_column: str, target_column: str
    ) -> tuple[list[str], list[str]]:
        words = _sequence(row.get(input_column), input_column)
        tags = _sequence(row.get(target_column), target_column)
        if not words:
            raise MissingValue(input_column)
        if len(words) != len(tags):
            raise ValueError(f"{len(words)} words but {len(tags)} tags")
        bad = next((tag for tag in tags if not TAG.fullmatch(tag)), None)
        if bad is not None:
            raise ValueError(
                f"tag {bad!r} is neither O nor B-, I-, E- or S- and an entity "
                "type (IOB1, IOB2, BIOES)"
            )
        return words, tags

    def target_labels(self, target: list[str]) -> Iterable[str]:
        return target

    def encode_targets(self, targets: Sequence[list[str]], index: dict[str, int]) -> TagTargets:
        return TagTargets(
            [np.array([index[tag] for tag in tags], dtype=np.int64) for tags in targets],
            tuple(index),
        )

    def aligned_targets(self, targets: TagTargets, encoded: ModelInputs) -> TagTargets:
        return targets.aligned(encoded)

    def encode(
        self, tokenizer: PreTrainedTokenizerBase, inputs: Sequence[list[str]], max_length: int
    ) -> Encoded:
        return encode_words(tokenizer, inputs, max_length)

    def batch_targets(self, targets: TagTargets, indices: Sequence[int]) -> torch.Tensor:
        assert targets.tokens is not None  # training reads targets aligned with the tokens
        rows = [targets.tokens[i] for i in indices]
        batch = np.full((len(rows), max(len(r) for r in rows)), IGNORED, dtype=np.int64)
        for i, row in enumerate(rows):
            batch[i, : len(row)] = row
        return torch.from_numpy(batch)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(
            outputs.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORED
        )

    def loss_weight(self, targets: TagTargets, indices: Sequence[int]) -> float:
        return float(sum(len(targets.scored(i)) for i in indices))  # the scored tokens

    def unbatch(self, outputs: np.ndarray, lengths: Ints) -> Outputs:
        return [outputs[i, :length] for i, length in enumerate(lengths)]

    def score(self, outputs: Outputs, targets: TagTargets) -> float:
        if self.gate_metric != "entity_f1":
            return super().score(outputs, targets)
        from seqeval.metrics import f1_score

        names = targets.names
        assert targets.tokens is not None  # scoring reads targets aligned with the tokens
        truth, guess = [], []
        for row, output in enumerate(outputs):
            positions = targets.scored(row)
            truth.append([names[i] for i in targets.tokens[row][positions]])
            guess.append(
                [names[i] for i in output.reshape(-1, output.shape[-1])[positions].argmax(-1)]
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(f1_score(truth, guess, zero_division=0))

    def select(self, targets: TagTargets, rows: Ints) -> TagTargets:
        return TagTargets(
            [targets.words[i] for i in rows],
            targets.names,
            None if targets.tokens is None else [targets.tokens[i] for i in rows],
        )

    def predicted(self, output: np.ndarray, targets: TagTargets, row: int) -> list[int]:
        ids = output.reshape(-1, output.shape[-1])[targets.scored(row)].argmax(-1)
        return cast(list[int], ids.tolist())

    def target_at(self, targets: TagTargets, row: int) -> list[int]:
        assert targets.tokens is not None  # the baseline reads targets aligned with the tokens
        return cast(list[int], targets.tokens[row][targets.scored(row)].tolist())

    def metrics(
        self, outputs: Outputs, targets: TagTargets, reference: Outputs
    ) -> dict[str, float]:
        from seqeval.metrics import f1_score, precision_score, recall_score

        names = targets.names
        assert targets.tokens is not None  # scoring reads targets aligned with the tokens
        truth, guess = [], []
        correct = agreed = scored = 0
        for row, (output, ref) in enumerate(zip(outputs, reference)):
            positions = targets.scored(row)
            gold = targets.tokens[row][positions]
            predicted = output.reshape(-1, output.shape[-1])[positions].argmax(-1)
            referenced = ref.reshape(-1, ref.shape[-1])[positions].argmax(-1)
            truth.append([names[i] for i in gold])
            guess.append([names[i] for i in predicted])
            correct += int(np.sum(predicted == gold))
            agreed += int(np.sum(predicted == referenced))
            scored += len(positions)
        with warnings.catch_warnings():  # no entity predicted yet: seqeval warns, scores 0
            warnings.simplefilter("ignore")
            entity = {
                "entity_f1": f1_score(truth, guess, zero_division=0),
                "entity_precision": precision_score(truth, guess, zero_division=0),
                "entity_recall": recall_score(truth, guess, zero_division=0),
            }
        return {
            **{k: float(v) for k, v in entity.items()},
            "token_accuracy": correct / max(scored, 1),
            "agreement": agreed / max(scored, 1),
            "max_logit_error": self.max_error(outputs, reference),
        }


def _sequence(value: Any, column: str) -> list[str]:
    """A list of strings, or a string of white-space-separated ones (a CSV cell)."""
    if value is None:
        raise MissingValue(column)
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise ValueError(
        f"{column!r} must be a list of strings or a white-space-separated "
        f"string, not {type(value).__name__}"
    )
