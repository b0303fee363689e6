"""Text classification: one label per text, read by the head from the first token.

Rows: a text column and a label column. Outputs: one score per label for each text.
Metrics: accuracy (the gate's), macro-F1, agreement with the reference's predictions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, cast

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerBase

from edgefreeze.tasks.base import Head, Ints, MissingValue, Outputs, Task
from edgefreeze.tasks.encoding import Encoded, encode_texts
from edgefreeze.tasks.registry import register_task


def _pooled_head(model: Any, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """BERT: the pooler (dense + tanh over the first token), dropout, the classifier."""
    base = getattr(model, model.base_model_prefix)
    return cast(torch.Tensor, model.classifier(model.dropout(base.pooler(hidden))))


def _first_token_head(model: Any, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """DistilBERT: pre-classifier + ReLU over the first token, dropout, the classifier."""
    pooled = torch.relu(model.pre_classifier(hidden[:, 0]))
    return cast(torch.Tensor, model.classifier(model.dropout(pooled)))


def _context_pooled_head(
    model: Any, hidden: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """DeBERTa: its context pooler (dense + activation over the first token), dropout, the
    classifier."""
    return cast(torch.Tensor, model.classifier(model.dropout(model.pooler(hidden))))


def _modernbert_head(model: Any, hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """ModernBERT: the final norm, then the first token or the mean over real tokens
    (`classifier_pooling`), its prediction head, dropout, the classifier."""
    hidden = model.model.final_norm(hidden)
    if model.config.classifier_pooling == "mean":
        assert mask is not None  # a text model's top always gets its attention mask
        keep = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * keep).sum(dim=1) / keep.sum(dim=1)
    else:
        pooled = hidden[:, 0]
    return cast(torch.Tensor, model.classifier(model.drop(model.head(pooled))))


def _modernbert_rows(config: Any) -> int | None:
    """The first token's row, or every row when `classifier_pooling: mean` averages them."""
    return None if getattr(config, "classifier_pooling", "cls") == "mean" else 1


def _classification_head(
    model: Any, hidden: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """RoBERTa-style heads take the whole sequence and read its first token themselves."""
    return cast(torch.Tensor, model.classifier(hidden))


_SEQUENCE_HEAD = Head(("classifier",), _classification_head)


@register_task
class TextClassification(Task):
    name = "text-classification"
    model_class: ClassVar[type] = AutoModelForSequenceClassification
    export_task = "text-classification"
    inputs = "text"
    outputs = "label"
    gate_metric = "accuracy"
    metric_labels = {**Task.metric_labels, "macro_f1": "macro-F1"}
    head_rows = 1
    heads = {
        "bert": Head(("bert.pooler", "classifier"), _pooled_head),
        "distilbert": Head(("pre_classifier", "classifier"), _first_token_head),
        "deberta-v2": Head(("pooler", "classifier"), _context_pooled_head),
        "modernbert": Head(
            ("model.final_norm", "head", "classifier"), _modernbert_head, _modernbert_rows
        ),
        **dict.fromkeys(
            ("roberta", "xlm-roberta", "camembert", "electra", "mpnet"), _SEQUENCE_HEAD
        ),
    }

    def example(
        self, row: dict[str, Any], input_column: str, target_column: str
    ) -> tuple[str, str]:
        text, label = row.get(input_column), row.get(target_column)
        if text is not None and not isinstance(text, str):
            raise ValueError(f"{input_column!r} is {type(text).__name__} {text!r}, not text")
        if text is None or not text.strip():
            raise MissingValue(input_column)
        if label is None or (isinstance(label, str) and not label.strip()):
            raise MissingValue(target_column)
        return text, str(label).strip()

    def target_labels(self, target: str) -> Iterable[str]:
        return (target,)

    def encode_targets(self, targets: Sequence[str], index: dict[str, int]) -> np.ndarray:
        return np.array([index[label] for label in targets], dtype=np.int64)

    def encode(
        self, tokenizer: PreTrainedTokenizerBase, inputs: Sequence[str], max_length: int
    ) -> Encoded:
        return encode_texts(tokenizer, inputs, max_length)

    def batch_targets(self, targets: np.ndarray, indices: Sequence[int]) -> torch.Tensor:
        return torch.from_numpy(targets)[indices]

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(outputs.float(), targets)

    def unbatch(self, outputs: np.ndarray, lengths: Ints) -> Outputs:
        return list(outputs)

    def confusion(self, outputs: Outputs, targets: np.ndarray, labels: int) -> list[list[int]]:
        matrix = np.zeros((labels, labels), dtype=np.int64)
        np.add.at(matrix, (targets, np.stack(outputs).argmax(axis=1)), 1)
        return matrix.tolist()

    def score(self, outputs: Outputs, targets: np.ndarray) -> float:
        logits = np.stack(outputs)
        predictions = logits.argmax(axis=1)
        if self.gate_metric == "accuracy":
            return float(np.mean(predictions == targets))
        return macro_f1(predictions, targets, logits.shape[1])

    def metrics(
        self, outputs: Outputs, targets: np.ndarray, reference: Outputs
    ) -> dict[str, float]:
        logits = np.stack(outputs)
        predictions = logits.argmax(axis=1)
        return {
            "accuracy": float(np.mean(predictions == targets)),
            "macro_f1": macro_f1(predictions, targets, logits.shape[1]),
            "agreement": float(np.mean(predictions == np.stack(reference).argmax(axis=1))),
            "max_logit_error": self.max_error(outputs, reference),
        }


def macro_f1(predictions: np.ndarray, labels: np.ndarray, num_labels: int) -> float:
    """Unweighted mean of per-class F1; a class absent from both gets no vote."""
    scores = []
    for c in range(num_labels):
        tp = np.sum((predictions == c) & (labels == c))
        fp = np.sum((predictions == c) & (labels != c))
        fn = np.sum((predictions != c) & (labels == c))
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0
