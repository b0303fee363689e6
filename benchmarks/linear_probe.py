"""Baseline: what a frozen-feature linear probe reaches on a pipeline's own split.

The model's sentence embedding (mean-pooled last hidden states, as all-MiniLM-L6-v2 was
trained to give) is computed once with the whole backbone frozen, then an L2-regularised
logistic regression is fitted on the training rows (L-BFGS, C chosen on the validation
split) and scored on the held-out rows. `edgefreeze build` must beat this to be worth it.

    python benchmarks/linear_probe.py pipelines/rotten-tomatoes.yaml
"""

from __future__ import annotations

import sys

import torch

from edgefreeze.backbones import load_model
from edgefreeze.data import load_data
from edgefreeze.schema import load_pipeline
from edgefreeze.tasks import task_for


@torch.no_grad()
def sentence_embeddings(model, encoded, batch_size: int = 64) -> torch.Tensor:
    base = getattr(model, model.base_model_prefix)
    out = []
    for _, batch in encoded.batches(batch_size):
        inputs = {k: torch.from_numpy(v) for k, v in batch.items()}
        hidden = base(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).float()
        out.append((hidden * mask).sum(1) / mask.sum(1))
    return torch.cat(out)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, classes: int, l2: float) -> torch.nn.Linear:
    torch.manual_seed(0)
    probe = torch.nn.Linear(x.shape[1], classes)
    optimizer = torch.optim.LBFGS(probe.parameters(), max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(probe(x), y) + l2 * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return probe


def main(path: str) -> None:
    pipeline = load_pipeline(path)
    spec = pipeline.spec
    task = task_for(spec.task)
    data = load_data(spec.data, task, pipeline.resolve)
    loaded = load_model(spec.model, task, data.label_names, pipeline.resolve, False, 0)
    model = loaded.model.eval()
    features = {
        name: sentence_embeddings(
            model, task.encode(loaded.processor, split.inputs, spec.data.max_length)
        )
        for name, split in data.named_splits().items()
    }
    labels = {name: torch.from_numpy(split.targets) for name, split in data.named_splits().items()}
    mean, std = features["train"].mean(0), features["train"].std(0) + 1e-6
    features = {k: (v - mean) / std for k, v in features.items()}

    def accuracy(probe, split):
        return (probe(features[split]).argmax(1) == labels[split]).float().mean().item()

    best = max(
        (
            fit_logistic(features["train"], labels["train"], len(data.label_names), l2)
            for l2 in (1e-4, 1e-3, 1e-2)
        ),
        key=lambda probe: accuracy(probe, "validation" if "validation" in features else "train"),
    )
    print(
        f"linear probe on frozen mean-pooled features: held-out accuracy "
        f"{accuracy(best, 'test'):.4f} ({len(data.test)} rows, {len(data.train)} train)"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "pipelines/rotten-tomatoes.yaml")
