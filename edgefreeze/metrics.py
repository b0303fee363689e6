"""Classification metrics on numpy arrays (no scikit-learn needed for four numbers)."""

from __future__ import annotations

import numpy as np


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


def compare(logits: np.ndarray, labels: np.ndarray, reference_logits: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 against the labels; agreement and max |logit error| against
    the reference model (PyTorch) on the same examples."""
    predictions = logits.argmax(axis=1)
    return {
        "accuracy": float(np.mean(predictions == labels)),
        "macro_f1": macro_f1(predictions, labels, logits.shape[1]),
        "agreement": float(np.mean(predictions == reference_logits.argmax(axis=1))),
        "max_logit_error": float(np.max(np.abs(logits - reference_logits))),
    }
