"""The regression gate: the new model against the release the fleet runs now.

The gate's other rules compare a build's int8 model with its own PyTorch model; they say
nothing of whether the release is better than the last one. Here the baseline bundle's
int8 model runs, through the device runtime, on this build's held-out rows, and two
rules apply: the task's gate metric may drop by at most so much against it, and at most
so large a share of predictions may change ("flip"): a release that is as accurate on
the whole but answers a tenth of the inputs differently still surprises its users.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefreeze.context import RunContext
from edgefreeze.errors import ConfigError
from edgefreeze.gate.evaluate import held_out_outputs
from edgefreeze.gate.held_out import HeldOut
from edgefreeze.gate.rules import Rule
from edgefreeze.runtime.bundle import Bundle
from edgefreeze.runtime.forms import INT8
from edgefreeze.runtime.manifest import BaselineRecord, FlipRecord
from edgefreeze.schema import BaselineSpec
from edgefreeze.tasks import Outputs, Task

LISTED_FLIPS = 100  # flipped examples the manifest lists (all are counted)
SHOWN_TEXT = 200  # characters of an input the list keeps


def open_baseline(path: Path, task: Task, label_names: list[str]) -> Bundle:
    """The baseline bundle, verified, and fit to compare with: the same task and labels,
    and an int8 model. Opened before training, so a wrong path fails in seconds."""
    bundle = Bundle(path)
    if bundle.manifest.task.name != task.name:
        raise ConfigError(
            f"baseline {path}: its task is {bundle.manifest.task.name!r}, this "
            f"build's {task.name!r}; there is nothing to compare"
        )
    if bundle.labels != label_names:
        raise ConfigError(
            f"baseline {path}: its labels {bundle.labels} are not this build's "
            f"{label_names} (in id order); the predictions cannot be compared"
        )
    bundle.model_files(INT8.name)  # one line if it has none
    return bundle


@dataclass(frozen=True)
class BaselineComparison:
    """This build's int8 model against the baseline's, on this build's held-out rows: what
    the two rules judge and what the manifest and reports show."""

    bundle: str
    pipeline: str  # the baseline's pipeline name and build time, to say which release
    created: str
    metric: str
    baseline_value: float
    value: float  # this build's int8 model, on the same rows
    rows: int
    flipped: list[dict[str, Any]]  # every flip: row, input, target, baseline, new
    same_held_out: bool  # the baseline was gated on exactly these rows

    @property
    def flip_share(self) -> float:
        return len(self.flipped) / self.rows

    def rules(self, settings: BaselineSpec) -> list[Rule]:
        return [
            Rule(
                "baseline.max_metric_drop",
                self.baseline_value - self.value,
                settings.max_metric_drop,
                "max",
                f"int8 {self.metric} drop against the baseline release",
            ),
            Rule(
                "baseline.max_flip_share",
                self.flip_share,
                settings.max_flip_share,
                "max",
                "share of held-out predictions that differ from the baseline release's",
            ),
        ]

    def record(self) -> BaselineRecord:
        """The manifest's `baseline`."""
        return BaselineRecord(
            bundle=self.bundle,
            pipeline=self.pipeline,
            created=self.created,
            metric=self.metric,
            baseline_value=self.baseline_value,
            value=self.value,
            rows=self.rows,
            flips=len(self.flipped),
            flip_share=self.flip_share,
            same_held_out=self.same_held_out,
            flipped=[FlipRecord(**flip) for flip in self.flipped[:LISTED_FLIPS]],
        )


def compare_with_baseline(
    bundle: Bundle, task: Task, held_out: HeldOut, outputs: Outputs, ctx: RunContext
) -> BaselineComparison:
    """Run the baseline's int8 model on the held-out examples and compare it with this
    build's `outputs` (its int8 model's, on the same examples) against the targets."""
    examples, targets, label_names = held_out.examples, held_out.targets, held_out.label_names
    baseline = held_out_outputs(
        bundle.model(INT8.name), bundle.encoder(), examples, ctx.reporter, "baseline"
    )
    metric = task.gate_metric
    if any(np.shape(old) != np.shape(new) for old, new in zip(baseline, outputs)):
        raise ConfigError(
            f"gate.baseline: {bundle.path} reads the held-out inputs as other "
            "tokens than this build (another tokenizer or data.max_length), so "
            "their outputs cannot be compared position by position"
        )
    flipped = []
    for row, (example, old, new) in enumerate(zip(examples, baseline, outputs)):
        before, after = task.predicted(old, targets, row), task.predicted(new, targets, row)
        if before != after:
            flipped.append(
                {
                    "row": row,
                    "input": _shown(example),
                    "target": task.named(task.target_at(targets, row), label_names),
                    "baseline": task.named(before, label_names),
                    "new": task.named(after, label_names),
                }
            )
    manifest = bundle.manifest
    same = manifest.data.splits.get("test")
    return BaselineComparison(
        bundle=str(bundle.path),
        pipeline=manifest.pipeline.name,
        created=manifest.created,
        metric=metric,
        baseline_value=task.metrics(baseline, targets, baseline)[metric],
        value=task.metrics(outputs, targets, outputs)[metric],
        rows=len(examples),
        flipped=flipped,
        same_held_out=same is not None and same.fingerprint == held_out.fingerprint,
    )


def _shown(example: Any) -> Any:
    """An input as the manifest lists it: a long text cut short, an image by its path."""
    if isinstance(example, os.PathLike):
        return os.fspath(example)
    if isinstance(example, str) and len(example) > SHOWN_TEXT:
        return example[:SHOWN_TEXT] + "…"
    return example
