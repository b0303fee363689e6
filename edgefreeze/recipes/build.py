"""`edgefreeze build`: the recipe, read top to bottom.

data -> model + freezing plan -> encode -> cache -> train -> export -> quantize ->
evaluate -> gate -> publish. Each stage takes plain values and returns plain values; this
function only wires them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from edgefreeze.backbones import LoadedModel, load_model
from edgefreeze.cache import cache_root
from edgefreeze.cache.features import Features, stem_features
from edgefreeze.context.device import resolve_device
from edgefreeze.context.world import World, join_world
from edgefreeze.data import LabelledData, load_data
from edgefreeze.export import export_models, write_model_files
from edgefreeze.failpoints import failpoint
from edgefreeze.freeze import FreezePlan, frozen_digest, make_plan
from edgefreeze.gate import Verdict, evaluate, judge, reference_outputs
from edgefreeze.gate.baseline import compare_with_baseline, open_baseline
from edgefreeze.progress import Reporter
from edgefreeze.publish import (
    DestinationClaim,
    Staging,
    check_destination,
    destination_for,
    manifest_for,
    publish_or_refuse,
)
from edgefreeze.quantize import quantize_models
from edgefreeze.runtime.bundle import Bundle
from edgefreeze.runtime.forms import INT8, requested
from edgefreeze.runtime.inputs import input_kind
from edgefreeze.runtime.manifest import Manifest
from edgefreeze.schema import Pipeline
from edgefreeze.tasks import Task, task_for
from edgefreeze.tasks.encoding import ModelInputs
from edgefreeze.train.loop import TrainResult, train
from edgefreeze.train.warm_start import load_trainable, save_trainable


@dataclass(frozen=True)
class BuildOptions:
    """What the command line adds to a pipeline file.

    Args:
        output: the bundle folder (else the pipeline's `output`, else models/NAME/vN).
        device: overrides `train.device`.
        models_dir: where default outputs go.
        cache_dir: the activation cache (else $EDGEFREEZE_CACHE_DIR, `cache.dir`, ...).
        use_cache: overrides `cache.enabled`.
        added_rows: labelled files appended to the training split (a retrain on new data;
            with the cache on, only their inputs pass through the frozen stem).
        warm_start: a bundle whose trained top training starts from.
        epochs: overrides `train.epochs`.
        baseline: the release in the field to gate against (overrides `gate.baseline.bundle`).
    """

    output: Path | None = None
    device: str | None = None
    models_dir: Path = Path("models")
    cache_dir: Path | None = None
    use_cache: bool | None = None
    added_rows: list[Path] = field(default_factory=list)
    warm_start: Path | None = None
    epochs: int | None = None
    baseline: Path | None = None


@dataclass(frozen=True)
class BuildResult:
    path: Path  # the published bundle
    manifest: Manifest


@dataclass(frozen=True)
class Prepared:
    """Everything up to training: the data, the model with its plan applied, and the
    training inputs (cached stem activations or the live stem). `sweep` trains many tops
    from one of these."""

    pipeline: Pipeline
    task: Task
    destination: Path
    device: torch.device
    world: World
    data: LabelledData
    loaded: LoadedModel
    plan: FreezePlan
    frozen_sha256: str
    warm_start: dict[str, str] | None
    encoded: dict[str, ModelInputs]
    features: dict[str, Features]
    cache: dict[str, Any]
    reporter: Reporter  # quiet on every process but the leader
    claim: DestinationClaim | None  # the leader's hold on `destination` until it ships
    baseline: Bundle | None  # the release the new model must not regress from

    def release(self) -> None:
        """Let the next build have the destination (this one published, refused or died)."""
        if self.claim is not None:
            self.claim.release()


def build(pipeline: Pipeline, options: BuildOptions = BuildOptions(),
          reporter: Reporter | None = None) -> BuildResult | None:
    """Build, gate and publish a bundle; raises `GateRefused` after keeping the report.
    Launched by torchrun, every process trains and process 0 alone goes on from there
    (the others return None)."""
    prepared = prepare(pipeline, options, reporter or Reporter())
    reporter, spec = prepared.reporter, pipeline.spec
    try:
        with reporter.stage("train"):
            trained = train(prepared.loaded.backbone, prepared.plan, prepared.task,
                            prepared.features["train"], prepared.data.train.targets,
                            prepared.features.get("validation"),
                            prepared.data.validation.targets if prepared.data.validation
                            else None,
                            spec.train.with_epochs(options.epochs), prepared.device, reporter,
                            prepared.world)
        if not prepared.world.leader:
            return None
        return ship(prepared, trained, reporter)
    finally:
        prepared.release()


def prepare(pipeline: Pipeline, options: BuildOptions, reporter: Reporter) -> Prepared:
    """The stages before training: data, model and plan, tokens, the activation cache.
    The leader claims the destination first (the caller releases it: `Prepared.release`)."""
    spec = pipeline.spec
    task = task_for(spec.task)
    destination = destination_for(pipeline, options.output, options.models_dir)
    check_destination(destination)
    device = resolve_device(options.device or spec.train.device)
    world = join_world(device)
    if not world.leader:
        reporter = Reporter(quiet=True)
    claim = DestinationClaim(destination) if world.leader else None
    try:
        if claim is not None:
            check_destination(destination)  # published by a build that held it just before
            if claim.removed:
                reporter.info(f"  removed what a build that died left: {', '.join(claim.removed)}")
        return _prepare(pipeline, task, destination, device, world, claim, options, reporter)
    except BaseException:
        if claim is not None:
            claim.release()
        raise


def _prepare(pipeline: Pipeline, task: Task, destination: Path, device: torch.device,
             world: World, claim: DestinationClaim | None, options: BuildOptions,
             reporter: Reporter) -> Prepared:
    """`prepare`'s stages, run while the destination is claimed."""
    spec = pipeline.spec
    max_length = spec.data.max_length
    with reporter.stage("data"):
        data = load_data(spec.data, task, pipeline.resolve, options.added_rows)
        reporter.info(f"  {data.describe()}")
        if (overlap := data.overlap_warning()) is not None:
            reporter.warn(overlap)
        baseline_path = options.baseline or (pipeline.resolve(spec.gate.baseline.bundle)
                                             if spec.gate.baseline.bundle else None)
        baseline = (open_baseline(baseline_path, task, data.label_names)
                    if baseline_path and world.leader else None)
        failpoint("data")
    with reporter.stage("model"):
        loaded = load_model(spec.model, task, data.label_names, pipeline.resolve,
                            spec.trust_remote_code, spec.train.seed, max_length)
        torch.manual_seed(spec.train.seed)  # PEFT weights start the same in a sweep's trial
        plan = make_plan(spec.freeze, loaded.backbone, spec.peft)
        frozen_sha256 = frozen_digest(loaded.model)
        warm_start = (load_trainable(loaded.model, plan, frozen_sha256, task.name,
                                     options.warm_start, data.label_names)
                      if options.warm_start else None)
        reporter.info(f"  {plan.summary()}")
    with reporter.stage("encode"):
        encoded = {name: task.encode(loaded.processor, split.inputs, max_length)
                   for name, split in data.named_splits().items()}
        loaded.backbone.check_split(encoded["train"], plan.boundary)
        data = data.aligned(task, encoded)
        cut = {name: e.truncated for name, e in encoded.items() if e.truncated}
        if cut:
            reporter.info(f"  cut to {max_length} tokens: "
                          + ", ".join(f"{n} {name} rows" for name, n in cut.items()))
    loaded.model.to(device)
    with reporter.stage("cache"):
        root = cache_root(options.cache_dir, spec.cache, pipeline.resolve, options.use_cache)
        features, cache = stem_features(loaded, task, plan, frozen_sha256, data, encoded,
                                        max_length=max_length, root=root,
                                        dtype=spec.cache.dtype, device=device,
                                        reporter=reporter, world=world)
    return Prepared(pipeline=pipeline, task=task, destination=destination, device=device,
                    world=world, data=data, loaded=loaded, plan=plan,
                    frozen_sha256=frozen_sha256, warm_start=warm_start, encoded=encoded,
                    features=features, cache=cache, reporter=reporter, claim=claim,
                    baseline=baseline)


def ship(prepared: Prepared, trained: TrainResult, reporter: Reporter,
         sweep: dict[str, Any] | None = None) -> BuildResult:
    """The stages after training: export, quantize, evaluate, gate, publish. `sweep` is
    the record of the search that chose the settings, when one did."""
    pipeline, task, loaded, data = (prepared.pipeline, prepared.task, prepared.loaded,
                                    prepared.data)
    # The plan training started with decides what is saved and exported (an adaptive plan
    # may have frozen layers that trained before); the manifest records where it ended.
    spec, plan, device = pipeline.spec, prepared.plan, prepared.device
    forms = requested(spec.model_dump())
    with Staging(prepared.destination) as staging:
        with reporter.stage("export"):
            write_model_files(loaded, data.label_names, staging.path)
            save_trainable(loaded.model, plan, staging.path)
            exported, export_record = export_models(loaded, plan, task, forms, staging.path,
                                                    spec.export.opset, prepared.encoded["test"])
            failpoint("export")
        model = loaded.model.to(device)
        reference = reference_outputs(model, task, prepared.encoded["test"], device)
        encoder = input_kind(task.inputs)(staging.path, spec.data.max_length)
        with reporter.stage("quantize"):
            reduced, quantize_record, known = quantize_models(
                forms, exported, staging.path, spec, loaded.backbone, task, reference,
                examples=data.test.inputs, targets=data.test.targets,
                training_inputs=data.train.inputs, encoder=encoder, reporter=reporter)
            failpoint("quantize")
        models = {**exported, **reduced}
        with reporter.stage("evaluate"):
            evaluation = evaluate(model, task, reference, examples=data.test.inputs,
                                  targets=data.test.targets, encoded=prepared.encoded["test"],
                                  forms=models, encoder=encoder,
                                  batch_sizes=spec.gate.batch_sizes,
                                  sequence_lengths=spec.shape_check_lengths()
                                  if prepared.encoded["test"].sequential else [],
                                  device=device,
                                  reporter=reporter, known=known)
            compared = (compare_with_baseline(
                prepared.baseline, task, data.test.inputs, data.test.targets,
                evaluation.outputs[INT8.name], data.label_names, data.test.fingerprint(),
                reporter) if prepared.baseline else None)
        sizes = {name: sum(path.stat().st_size for path in paths)
                 for name, paths in models.items()}
        verdict = judge(evaluation, task.gate_metric, spec.gate, sizes)
        if compared is not None:
            verdict = Verdict(verdict.rules + compared.rules(spec.gate.baseline))
        failpoint("gate")
        manifest = manifest_for(
            pipeline=pipeline, task=task, loaded=loaded, frozen_sha256=prepared.frozen_sha256,
            data=data, truncated={name: e.truncated for name, e in prepared.encoded.items()},
            plan=trained.plan or plan, trained=trained, warm_start=prepared.warm_start,
            cache=prepared.cache, exported=export_record, quantized=quantize_record,
            sizes=sizes, evaluation=evaluation, verdict=verdict,
            timings_s=reporter.timings, sweep=sweep,
            baseline=compared.record() if compared else None)
        return BuildResult(path=publish_or_refuse(staging, manifest), manifest=manifest)
