"""`edgefreeze sweep`: many settings of the trainable part, all trained from one
activation cache, chosen by validation score; the best trial's model is then exported,
quantized, gated and published like any build.

The cache is filled once at the lowest boundary any trial may use (the pipeline's own). A
trial that trains fewer layers reads activations moved up to its boundary, computed once
per boundary from the cached ones, so no trial runs the frozen stem again.

The search is Optuna's (TPE sampler, successive-halving pruner): a well-kept library with
the samplers and pruners that sweeps need, rather than a search of our own. Each trial's
validation score is taken at the first sixth and at half of its schedule, and at each
epoch's end; at the first two, a trial goes on only while it is among the best third of
the trials scored there (reduction factor 3; docs/benchmarks.md has a run at Optuna's
default 4). Trials are compared at equal shares of their own schedules, where their
learning rates have decayed alike, so a longer schedule is not pruned for being less far
along. Most trials stop at
their first sixth: a sweep costs about as much as a few whole trainings.

The pipeline's own settings are always the first trial, and the best trial replaces them
only when it is better beyond the validation rows' noise (`edgefreeze.gate.paired`): the best of
many noisy scores is biased upward, and a sweep must never ship a model worse than not
sweeping would have.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, cast

import optuna

from edgefreeze.cache.features import LiveFeatures, StemActivations, advance_features
from edgefreeze.errors import ConfigError
from edgefreeze.freeze import PlannedModel
from edgefreeze.gate.paired import compare
from edgefreeze.peft import METHODS, PeftMethod
from edgefreeze.progress import Reporter
from edgefreeze.recipes.build import BuildOptions, BuildResult, Prepared, prepare, ship
from edgefreeze.runtime.manifest import SweepRecord, TrialRecord
from edgefreeze.schema import Pipeline, PipelineSpec, SweepSpec
from edgefreeze.schema.freeze import TopKSpec
from edgefreeze.tasks import Outputs, Task
from edgefreeze.train.loop import Checks, TrainResult, top_outputs, train

CHECKS = 6  # validation checkpoints per trial schedule, where the pruner may stop it
REDUCTION = 3  # the successive-halving pruner's reduction factor
# The checks where that pruner compares trials (its rungs: 1, 3, 9, ... sixths): only
# these are worth a validation pass inside an epoch.
RUNGS = frozenset(REDUCTION**r for r in range(CHECKS) if REDUCTION**r <= CHECKS)


@dataclass(frozen=True)
class SearchSpace:
    """The ranges a sweep draws from, with the pipeline's defaults filled in and checked."""

    lr_top: tuple[float, float]
    lr_head: tuple[float, float]
    epochs: tuple[int, int]
    trainable_layers: tuple[int, int] | None  # None: the plan is not top_k
    ranks: tuple[int, ...] | None  # None: the PEFT size stays the pipeline's
    size_setting: str | None  # the PEFT setting `ranks` varies (r, bottleneck, tokens)

    @classmethod
    def of(cls, spec: PipelineSpec) -> SearchSpace:
        sweep = spec.sweep
        layers = sweep.trainable_layers
        if spec.freeze.plan == "top_k":
            assert isinstance(spec.freeze, TopKSpec)  # top_k's settings validated it
            cached = spec.freeze.trainable_layers
            least = 1 if spec.peft else 0  # PEFT weights need a trainable layer to sit in
            layers = layers or (least, cached)
            if layers[1] > cached:
                raise ConfigError(
                    f"sweep.trainable_layers: at most {cached} (the pipeline's "
                    "freeze.trainable_layers, where the one cache sits); "
                    f"not {layers[1]}"
                )
            if layers[0] < least:
                raise ConfigError(
                    "sweep.trainable_layers: at least 1 with peft (its weights "
                    f"sit in the trainable layers); not {layers[0]}"
                )
        elif layers is not None:
            raise ConfigError(
                f"sweep.trainable_layers: only for freeze.plan top_k, not {spec.freeze.plan!r}"
            )
        # (the pipeline's method was validated as a registered one)
        size = (
            cast(type[PeftMethod[Any]], METHODS.get(spec.peft.method)).size if spec.peft else None
        )
        ranks = None
        if sweep.rank is not None:
            if size is None:
                raise ConfigError(
                    "sweep.rank: needs a peft method with a size (lora, adapter, "
                    f"prefix); the pipeline has {spec.peft and spec.peft.method}"
                )
            low, high = sweep.rank
            ranks = tuple(2**e for e in range(0, 17) if low <= 2**e <= high)
            if not ranks:
                raise ConfigError(f"sweep.rank: no power of two in {list(sweep.rank)}")
            # The pipeline's own size is the first trial's: Optuna takes an enqueued
            # categorical value only from among the choices.
            ranks = tuple(sorted({*ranks, getattr(spec.peft, size)}))
        return cls(
            lr_top=sweep.lr_top,
            lr_head=sweep.lr_head,
            epochs=sweep.epochs or (1, spec.train.epochs),
            trainable_layers=layers,
            ranks=ranks,
            size_setting=size,
        )

    def defaults(self, spec: PipelineSpec) -> dict[str, Any]:
        """The pipeline's own values of what the space varies: the sweep's first trial."""
        params: dict[str, Any] = {
            "lr_top": spec.train.lr_top,
            "lr_head": spec.train.lr_head,
            "epochs": spec.train.epochs,
        }
        if self.trainable_layers is not None:
            assert isinstance(spec.freeze, TopKSpec)  # only top_k's layers are swept
            params["trainable_layers"] = spec.freeze.trainable_layers
        if self.ranks is not None and spec.peft is not None:
            assert self.size_setting is not None  # ranks come with the setting they vary
            params["rank"] = getattr(spec.peft, self.size_setting)
        return params

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """One point of the space (a fixed range is the same value every trial)."""
        params: dict[str, Any] = {
            "lr_top": _float(trial, "lr_top", self.lr_top),
            "lr_head": _float(trial, "lr_head", self.lr_head),
            "epochs": trial.suggest_int("epochs", *self.epochs),
        }
        if self.trainable_layers is not None:
            params["trainable_layers"] = trial.suggest_int(
                "trainable_layers", *self.trainable_layers
            )
        if self.ranks is not None:
            params["rank"] = trial.suggest_categorical("rank", list(self.ranks))
        return params

    def apply(self, spec: PipelineSpec, params: dict[str, Any]) -> PipelineSpec:
        """The pipeline's settings with a trial's values in place."""
        update: dict[str, Any] = {
            "train": spec.train.model_copy(
                update={key: params[key] for key in ("lr_top", "lr_head", "epochs")}
            )
        }
        if "trainable_layers" in params:
            update["freeze"] = spec.freeze.model_copy(
                update={"trainable_layers": params["trainable_layers"]}
            )
        if "rank" in params and spec.peft is not None:
            assert self.size_setting is not None  # ranks come with the setting they vary
            update["peft"] = spec.peft.model_copy(update={self.size_setting: params["rank"]})
        return spec.model_copy(update=update)


def _float(trial: optuna.Trial, name: str, bounds: tuple[float, float]) -> float:
    low, high = bounds
    return low if low == high else trial.suggest_float(name, low, high, log=low > 0)


@dataclass
class Best:
    """A trial kept with its trained model (to ship without retraining): the best so far,
    and the pipeline's own settings."""

    value: float
    number: int
    params: dict[str, Any]
    spec: PipelineSpec
    model: PlannedModel  # the plan as training started (digested before training)
    trained: TrainResult  # `trained.plan`: where an adaptive plan ended
    outputs: Outputs  # on the validation split, for the paired comparison


def sweep(
    pipeline: Pipeline,
    options: BuildOptions,
    reporter: Reporter,
    trials: int | None = None,
    timeout_s: float | None = None,
) -> BuildResult:
    """Search the pipeline's `sweep:` space, then ship the best trial's model; raises
    `GateRefused` (after keeping the report) when that model fails the gate."""
    spec = pipeline.spec
    trials = trials or spec.sweep.trials
    timeout_s = timeout_s or spec.sweep.timeout_s
    if not (spec.data.validation or spec.data.split.validation):
        raise ConfigError(
            "sweep: needs a validation split to choose by "
            "(data.split.validation or data.validation)"
        )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("sweep: runs in one process; launch it without torchrun")
    space = SearchSpace.of(spec)
    # The one model and cache the trials start from: the pipeline's plan without its PEFT
    # weights (each trial attaches its own).
    prepared = prepare(
        pipeline.model_copy(update={"spec": spec.model_copy(update={"peft": None})}),
        options,
        reporter,
    )
    try:
        search = _Search(prepared, spec, space)
        with prepared.ctx.stage("sweep"):
            search.run(trials, timeout_s)
            chosen, record = search.choose()
            training = chosen.trained.record(
                (chosen.trained.plan or chosen.model.plan).record(), prepared.warm_start
            )
        shipped = replace(prepared, pipeline=pipeline.model_copy(update={"spec": chosen.spec}))
        return ship(shipped, chosen.model, training, sweep=record)
    finally:
        prepared.release()


@dataclass
class _Search:
    """The trials of one sweep, on a prepared (claimed) build: each trains a replica of
    the prepared model from the prepared activations."""

    prepared: Prepared
    spec: PipelineSpec
    space: SearchSpace
    best: Best | None = None
    default: Best | None = None  # trial 0, the pipeline's own settings
    seconds: dict[int, float] = field(default_factory=dict)
    epochs_run: dict[int, float] = field(default_factory=dict)
    moved: dict[tuple[int, int | None], dict[str, StemActivations]] = field(default_factory=dict)
    study: optuna.Study = field(init=False)
    started: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        pruner = (
            optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=REDUCTION)
            if self.spec.sweep.prune
            else optuna.pruners.NopPruner()
        )
        self.study = optuna.create_study(
            direction="maximize",
            pruner=pruner,
            sampler=optuna.samplers.TPESampler(seed=self.spec.sweep.seed),
        )
        self.study.enqueue_trial(self.space.defaults(self.spec), skip_if_exists=False)

    def run(self, trials: int, timeout_s: float | None) -> None:
        reporter, metric = self.prepared.ctx.reporter, self.prepared.task.gate_metric
        for _ in reporter.progress(range(trials), total=trials, desc="trials"):
            if timeout_s is not None and time.perf_counter() - self.started > timeout_s:
                break
            with warnings.catch_warnings():  # the defaults may lie outside the space searched
                warnings.filterwarnings("ignore", message="Fixed parameter ")
                self.study.optimize(self.objective, n_trials=1)
            if self.best is not None:
                reporter.info(
                    f"  trial {len(self.study.trials) - 1}: "
                    f"{self.study.trials[-1].state.name.lower()}; best so far "
                    f"trial {self.best.number}, validation {metric} "
                    f"{self.best.value:.4f}"
                )
        if self.best is None:
            raise ConfigError("sweep: every trial was pruned or failed; nothing to ship")

    def features_for(self, model: PlannedModel) -> dict[str, StemActivations]:
        """The trial's training inputs: the prepared activations, moved up to its boundary
        once per boundary; without a cache, its own model's live stem (it may train it)."""
        prepared = self.prepared
        if any(isinstance(f, LiveFeatures) for f in prepared.features.values()):
            return {
                # without a cache every split's features are live
                name: LiveFeatures(cast(LiveFeatures, f).encoded, model.backbone, model.plan)
                for name, f in prepared.features.items()
            }
        plan = model.plan
        if plan.boundary == prepared.model.plan.boundary:
            return prepared.features
        key = (plan.boundary, plan.kept_rows)
        if key not in self.moved:
            self.moved[key] = {
                name: advance_features(
                    features,
                    prepared.model.backbone,
                    prepared.model.plan,
                    plan,
                    prepared.ctx.device,
                )
                for name, features in prepared.features.items()
            }
        return self.moved[key]

    def objective(self, trial: optuna.Trial) -> float:
        """Train one trial; keep its model when it is the best so far or the default."""
        begun = time.perf_counter()
        params = self.space.suggest(trial)
        if trial.number == 0:  # a range fixed at one value still gives the pipeline's own
            params = {**params, **self.space.defaults(self.spec)}
        trial_spec = self.space.apply(self.spec, params)
        prepared, task = self.prepared, self.prepared.task
        model = PlannedModel.of(
            prepared.model.loaded.replica(task),
            trial_spec.freeze,
            trial_spec.peft,
            trial_spec.train.seed,
        )

        def on_check(k: int, score: float) -> None:
            self.epochs_run[trial.number] = trial_spec.train.epochs * k / CHECKS
            self.seconds[trial.number] = time.perf_counter() - begun
            trial.report(score, k)
            if trial.should_prune():
                raise optuna.TrialPruned()

        checks = Checks(CHECKS if self.spec.sweep.prune else 0, on_check, RUNGS)
        trained = train(
            model.backbone,
            model.plan,
            task,
            prepared.splits(self.features_for(model)),
            trial_spec.train,
            prepared.ctx.quiet(),
            checks,
        )
        self.seconds[trial.number] = time.perf_counter() - begun
        self.epochs_run[trial.number] = len(trained.epochs)  # early stopping may end it sooner
        value = trained.kept_epoch().validation[task.gate_metric]
        if not math.isnan(value) and (
            trial.number == 0 or self.best is None or value > self.best.value
        ):
            kept = Best(
                value,
                trial.number,
                params,
                trial_spec,
                model,
                trained,
                self.validation_outputs(model, trained, trial_spec),
            )
            if trial.number == 0:
                self.default = kept
            if self.best is None or value > self.best.value:
                self.best = kept
        return value

    def validation_outputs(
        self, model: PlannedModel, trained: TrainResult, trial_spec: PipelineSpec
    ) -> Outputs:
        """A kept trial's outputs on the validation split, from its own weights."""
        final = trained.plan or model.plan
        validation = self.features_for(model)["validation"]
        if final.boundary != model.plan.boundary:  # an adaptive plan froze layers it had
            # trained: move its activations up through its own weights, not the cached model's
            validation = advance_features(
                validation, model.backbone, model.plan, final, self.prepared.ctx.device
            )
        return top_outputs(
            model.backbone,
            final,
            self.prepared.task,
            validation,
            trial_spec.train.batch_size,
            self.prepared.ctx.device,
        )

    def choose(self) -> tuple[Best, SweepRecord]:
        """The trial to ship, and the manifest's record of the search and the choice."""
        best, task = self.best, self.prepared.task
        assert best is not None
        validation = self.prepared.data.validation
        assert validation is not None
        chosen, choice = _choose(best, self.default, task, validation.targets, self.spec.sweep)
        reporter = self.prepared.ctx.reporter
        if chosen is not best:
            reporter.warn(f"sweep: {choice['why']}")
        else:
            reporter.info(f"  sweep: {choice['why']}")
        complete = optuna.trial.TrialState.COMPLETE
        return chosen, SweepRecord(
            objective=f"validation {task.gate_metric}",
            sampler="TPESampler",
            pruner=type(self.study.pruner).__name__ if self.spec.sweep.prune else None,
            seconds=round(time.perf_counter() - self.started, 3),
            best_trial=best.number,
            best_value=best.value,
            best_params=best.params,
            trials=[
                TrialRecord(
                    number=t.number,
                    state=t.state.name.lower(),
                    params=t.params,
                    value=t.value
                    if t.state == complete and t.value is not None and not math.isnan(t.value)
                    else None,
                    epochs_run=round(self.epochs_run.get(t.number, 0.0), 3),
                    seconds=round(self.seconds.get(t.number, 0.0), 3),
                )
                for t in self.study.trials
            ],
            **choice,
        )


def _choose(
    best: Best, default: Best | None, task: Task, targets: Any, settings: SweepSpec
) -> tuple[Best, dict[str, Any]]:
    """The trial to ship: the best by validation only when it beats the pipeline's own
    settings beyond the validation rows' noise; with the manifest's record of why."""
    metric = task.gate_metric
    record: dict[str, Any] = {
        "default_trial": None if default is None else default.number,
        "default_value": None if default is None else default.value,
        "comparison": None,
    }
    if default is None:
        return best, {
            **record,
            "chosen_trial": best.number,
            "why": f"the pipeline's own settings gave no validation {metric}; "
            f"shipping trial {best.number}, the best",
        }
    if best is default:
        return default, {
            **record,
            "chosen_trial": default.number,
            "why": f"the pipeline's own settings (trial {default.number}) scored "
            f"best, validation {metric} {default.value:.4f}",
        }
    comparison = compare(
        task,
        best.outputs,
        default.outputs,
        targets,
        confidence=settings.confidence,
        seed=settings.seed,
    )
    record["comparison"] = comparison.record()
    odds = (
        f"ahead in {comparison.ahead:.1%} of {comparison.resamples:,} paired resamples "
        f"of the validation rows ({comparison.confidence:.0%} needed)"
    )
    if comparison.better:
        return best, {
            **record,
            "chosen_trial": best.number,
            "why": f"trial {best.number} (validation {metric} {best.value:.4f}) beats "
            f"the pipeline's own settings ({default.value:.4f}): {odds}",
        }
    return default, {
        **record,
        "chosen_trial": default.number,
        "why": f"shipping the pipeline's own settings: the best trial, "
        f"{best.number} (validation {metric} {best.value:.4f} against "
        f"{default.value:.4f}), is within the validation rows' noise, "
        f"{odds}",
    }
