"""`edgefreeze build`: the recipe, read top to bottom.

data -> model + freezing plan -> encode -> cache -> train -> export -> quantize ->
evaluate -> gate -> publish. Each stage takes plain values and returns plain values and
its typed record for the manifest (checked at the end of the stage that made it); this
module only wires them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgefreeze.backbones import LoadedModel, load_model
from edgefreeze.cache import cache_root
from edgefreeze.cache.features import CacheSettings, StemActivations, stem_features
from edgefreeze.context import RunContext
from edgefreeze.data import LabelledData, load_data
from edgefreeze.export import Exported, export_models, write_model_files
from edgefreeze.failpoints import failpoint
from edgefreeze.freeze import PlannedModel
from edgefreeze.gate import HeldOut, ShapeGrid, Verdict, evaluate, judge, reference_outputs
from edgefreeze.gate.baseline import compare_with_baseline, open_baseline
from edgefreeze.progress import Reporter
from edgefreeze.publish import (
    DestinationClaim,
    StageRecords,
    Staging,
    check_destination,
    destination_for,
    manifest_for,
    publish_or_refuse,
)
from edgefreeze.publish.selfcheck import write_self_check
from edgefreeze.quantize import quantize_models
from edgefreeze.recipes.verify_target import check_gate_targets, gate_on_targets
from edgefreeze.runtime.bundle import Bundle
from edgefreeze.runtime.forms import INT8, requested
from edgefreeze.runtime.inputs import input_kind
from edgefreeze.runtime.manifest import (
    CacheRecord,
    DataRecord,
    Manifest,
    SweepRecord,
    TaskRecord,
    TrainingRecord,
    WarmStartRecord,
)
from edgefreeze.schema import Pipeline
from edgefreeze.tasks import Task, task_for
from edgefreeze.tasks.encoding import ModelInputs
from edgefreeze.train.loop import Examples, Splits, train
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
        sign_key: a private key that signs the bundle before it is published.
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
    sign_key: Path | None = None


@dataclass(frozen=True)
class BuildResult:
    path: Path  # the published bundle
    manifest: Manifest


@dataclass(frozen=True)
class Prepared:
    """Everything up to training: the data, the model with its plan applied, and the
    training inputs (cached stem activations or the live stem), with the stages' records.
    `sweep` trains many tops from one of these."""

    pipeline: Pipeline
    task: Task
    destination: Path
    ctx: RunContext  # quiet on every process but the leader
    data: LabelledData
    model: PlannedModel
    warm_start: WarmStartRecord | None
    encoded: dict[str, ModelInputs]
    features: dict[str, StemActivations]
    task_record: TaskRecord
    data_record: DataRecord
    cache_record: CacheRecord
    claim: DestinationClaim | None  # the leader's hold on `destination` until it ships
    baseline: Bundle | None  # the release the new model must not regress from
    sign_key: Path | None  # signs the bundle before it is published

    def splits(self, features: dict[str, StemActivations] | None = None) -> Splits:
        """The training and validation splits as training reads them (from `features`,
        else the prepared ones)."""
        features = features or self.features
        validation = self.data.validation
        return Splits(
            Examples(features["train"], self.data.train.targets),
            Examples(features["validation"], validation.targets)
            if validation is not None
            else None,
        )

    def release(self) -> None:
        """Let the next build have the destination (this one published, refused or died)."""
        if self.claim is not None:
            self.claim.release()


def build(
    pipeline: Pipeline, options: BuildOptions = BuildOptions(), reporter: Reporter | None = None
) -> BuildResult | None:
    """Build, gate and publish a bundle; raises `GateRefused` after keeping the report.
    Launched by torchrun, every process trains and process 0 alone goes on from there
    (the others return None)."""
    prepared = prepare(pipeline, options, reporter or Reporter())
    ctx, model = prepared.ctx, prepared.model
    try:
        with ctx.stage("train"):
            trained = train(
                model.backbone,
                model.plan,
                prepared.task,
                prepared.splits(),
                pipeline.spec.train.with_epochs(options.epochs),
                ctx,
            )
            training = trained.record((trained.plan or model.plan).record(), prepared.warm_start)
        if not ctx.world.leader:
            return None
        return ship(prepared, model, training)
    finally:
        prepared.release()


def prepare(pipeline: Pipeline, options: BuildOptions, reporter: Reporter) -> Prepared:
    """The stages before training: data, model and plan, tokens, the activation cache.
    The leader claims the destination first (the caller releases it: `Prepared.release`)."""
    spec = pipeline.spec
    task = task_for(spec.task)
    destination = destination_for(pipeline, options.output, options.models_dir)
    check_destination(destination)
    ctx = RunContext.start(options.device or spec.train.device, reporter)
    claim = DestinationClaim(destination) if ctx.world.leader else None
    try:
        if claim is not None:
            check_destination(destination)  # published by a build that held it just before
            if claim.removed:
                ctx.reporter.info(
                    "  removed what a build that died left: " + ", ".join(claim.removed)
                )
        return _prepare(pipeline, task, destination, claim, options, ctx)
    except BaseException:
        if claim is not None:
            claim.release()
        raise


def _prepare(
    pipeline: Pipeline,
    task: Task,
    destination: Path,
    claim: DestinationClaim | None,
    options: BuildOptions,
    ctx: RunContext,
) -> Prepared:
    """`prepare`'s stages, run while the destination is claimed."""
    spec = pipeline.spec
    max_length = spec.data.max_length
    with ctx.stage("data"):
        task_record = task.record()
        check_gate_targets(pipeline, task_record.inputs)  # now, not after training
        data = load_data(spec.data, task, pipeline.resolve, options.added_rows)
        ctx.reporter.info(f"  {data.describe()}")
        if (overlap := data.overlap_warning()) is not None:
            ctx.reporter.warn(overlap)
        baseline = _baseline(pipeline, options, task, data, ctx)
        failpoint("data")
    with ctx.stage("model"):
        loaded = load_pipeline_model(pipeline, task, data.label_names)
        model = PlannedModel.of(loaded, spec.freeze, spec.peft, spec.train.seed)
        model.record()  # checked here, written when the bundle ships
        warm_start = (
            load_trainable(model, task.name, options.warm_start, data.label_names)
            if options.warm_start
            else None
        )
        ctx.reporter.info(f"  {model.plan.summary()}")
    with ctx.stage("encode"):
        encoded, data, data_record = _encode(task, model, data, max_length, ctx)
    loaded.model.to(ctx.device)
    with ctx.stage("cache"):
        root = cache_root(options.cache_dir, spec.cache, pipeline.resolve, options.use_cache)
        features, cache_record = stem_features(
            model, task, data, encoded, CacheSettings(root, spec.cache.dtype, max_length), ctx
        )
    return Prepared(
        pipeline=pipeline,
        task=task,
        destination=destination,
        ctx=ctx,
        data=data,
        model=model,
        warm_start=warm_start,
        encoded=encoded,
        features=features,
        task_record=task_record,
        data_record=data_record,
        cache_record=cache_record,
        claim=claim,
        baseline=baseline,
        sign_key=options.sign_key,
    )


def load_pipeline_model(pipeline: Pipeline, task: Task, label_names: list[str]) -> LoadedModel:
    """The pipeline's model with the task's head for these labels (drawn from its seed)."""
    spec = pipeline.spec
    return load_model(
        spec.model,
        task,
        label_names,
        pipeline.resolve,
        spec.trust_remote_code,
        spec.train.seed,
        spec.data.max_length,
    )


def _baseline(
    pipeline: Pipeline, options: BuildOptions, task: Task, data: LabelledData, ctx: RunContext
) -> Bundle | None:
    """The release in the field to gate against (--baseline, else gate.baseline.bundle),
    opened by the leader before training, so a wrong path fails in seconds."""
    configured = pipeline.spec.gate.baseline.bundle
    path = options.baseline or (pipeline.resolve(configured) if configured else None)
    if path is None or not ctx.world.leader:
        return None
    return open_baseline(path, task, data.label_names)


def _encode(
    task: Task, model: PlannedModel, data: LabelledData, max_length: int, ctx: RunContext
) -> tuple[dict[str, ModelInputs], LabelledData, DataRecord]:
    """Every split as the model's inputs; the data with targets aligned to them (a
    tagger's labels go where its words start), and the manifest's data record."""
    encoded = {
        name: task.encode(model.loaded.processor, split.inputs, max_length)
        for name, split in data.named_splits().items()
    }
    model.backbone.check_split(encoded["train"], model.plan.boundary)
    data = data.aligned(task, encoded)
    cut = {name: e.truncated for name, e in encoded.items() if e.truncated}
    if cut:
        ctx.reporter.info(
            f"  cut to {max_length} tokens: "
            + ", ".join(f"{n} {name} rows" for name, n in cut.items())
        )
    return encoded, data, data.record(max_length, cut)


def ship(
    prepared: Prepared,
    model: PlannedModel,
    training: TrainingRecord,
    sweep: SweepRecord | None = None,
) -> BuildResult:
    """The stages after training of `model` (the prepared one, or a sweep's chosen
    trial's): export, quantize, evaluate, gate, publish. `sweep` is the record of the
    search that chose the settings, when one did."""
    spec, ctx, task = prepared.pipeline.spec, prepared.ctx, prepared.task
    with Staging(prepared.destination) as staging:
        with ctx.stage("export"):
            exported = _export(prepared, model, staging.path)
        held_out = _held_out(prepared, model, staging.path)
        with ctx.stage("quantize"):
            reduced, quantized, computed = quantize_models(
                exported, spec, model.backbone, task, held_out, prepared.data.train.inputs, ctx
            )
            failpoint("quantize")
        forms = {**exported.files, **reduced}
        with ctx.stage("evaluate"):
            grid = ShapeGrid(
                spec.gate.batch_sizes,
                spec.shape_check_lengths() if held_out.encoded.sequential else [],
            )
            evaluation = evaluate(model.loaded.model, task, held_out, forms, grid, ctx, computed)
            compared = (
                compare_with_baseline(
                    prepared.baseline, task, held_out, evaluation.outputs[INT8.name], ctx
                )
                if prepared.baseline
                else None
            )
            baseline = compared.record() if compared else None
        sizes = {name: sum(path.stat().st_size for path in paths) for name, paths in forms.items()}
        verdict = judge(evaluation, task.gate_metric, spec.gate, sizes)
        if compared is not None:
            verdict = Verdict(verdict.rules + compared.rules(spec.gate.baseline))
        failpoint("gate")
        records = StageRecords(
            task=prepared.task_record,
            model=model.record(),
            data=prepared.data_record,
            cache=prepared.cache_record,
            training=training,
            export=exported.records,
            quantize=quantized,
            sweep=sweep,
            baseline=baseline,
        )
        manifest = manifest_for(
            prepared.pipeline, records, evaluation, verdict, sizes, ctx.reporter.timings
        )
        write_self_check(staging.path, held_out, evaluation.outputs, spec.gate.max_logit_error)
        if spec.gate.targets and manifest.gate.passed:
            with ctx.stage("targets"):
                manifest = gate_on_targets(staging.path, prepared.pipeline, manifest, verdict)
        published = publish_or_refuse(staging, manifest, prepared.sign_key)
        return BuildResult(path=published, manifest=manifest)


def _export(prepared: Prepared, model: PlannedModel, folder: Path) -> Exported:
    """The model's files and every ONNX form the pipeline asks for, into `folder`. The
    plan training started with decides what is saved and exported (an adaptive plan may
    have frozen layers that trained before); the manifest records where it ended."""
    spec = prepared.pipeline.spec
    write_model_files(model.loaded, prepared.data.label_names, folder)
    save_trainable(model.loaded.model, model.plan, folder)
    exported = export_models(
        model.loaded,
        model.plan,
        prepared.task,
        requested(spec.model_dump()),
        folder,
        spec.export.opset,
        prepared.encoded["test"],
    )
    failpoint("export")
    return exported


def _held_out(prepared: Prepared, model: PlannedModel, folder: Path) -> HeldOut:
    """The held-out split with PyTorch's outputs on it, and the device's encoder read
    from the bundle's files in `folder`."""
    test, encoded = prepared.data.test, prepared.encoded["test"]
    torch_model = model.loaded.model.to(prepared.ctx.device)
    return HeldOut(
        examples=test.inputs,
        targets=test.targets,
        encoded=encoded,
        reference=reference_outputs(torch_model, prepared.task, encoded, prepared.ctx.device),
        encoder=input_kind(prepared.task.inputs)(folder, prepared.pipeline.spec.data.max_length),
        fingerprint=test.fingerprint(),
        label_names=prepared.data.label_names,
    )
