"""`edgefreeze build`: the recipe, read top to bottom.

data -> model -> freeze -> train -> export -> quantize -> evaluate -> gate -> bundle.
Each stage takes plain values and returns plain values; this function only wires them.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from edgefreeze import __version__
from edgefreeze.backbones import LoadedModel, load_model
from edgefreeze.batching import Encoded, encode
from edgefreeze.bundle import Staging, check_destination, default_destination
from edgefreeze.cache import ActivationStore, CacheStats, cache_root, describe_keyset, fetch_activations
from edgefreeze.data import LabelledData, load_data
from edgefreeze.errors import ConfigError, GateRefused
from edgefreeze.evaluate import evaluate, reference_logits
from edgefreeze.export import export_onnx, export_split
from edgefreeze.fallback import quantize_gated
from edgefreeze.features import CachedFeatures, LiveFeatures
from edgefreeze.freeze import apply_freeze
from edgefreeze.gate import judge
from edgefreeze.progress import Reporter
from edgefreeze.quantize import Architecture, to_fp16
from edgefreeze.runtime import SESSION_CONFIG, encode_text, load_tokenizer
from edgefreeze.report import render_report
from edgefreeze.spec import Pipeline, PipelineSpec
from edgefreeze.train import Features, resolve_device, train
from edgefreeze.warm_start import load_trainable, save_trainable

LIBRARIES = ("torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime",
             "tokenizers", "numpy")


@dataclass(frozen=True)
class BuildResult:
    path: Path  # the bundle, or DESTINATION.rejected when the gate refused
    manifest: dict

    @property
    def passed(self) -> bool:
        return bool(self.manifest["gate"]["passed"])


def build(pipeline: Pipeline, output: Path | None = None, device: str | None = None,
          reporter: Reporter | None = None, models_dir: Path = Path("models"),
          cache_dir: Path | None = None, use_cache: bool | None = None,
          added_rows: list[Path] | None = None, warm_start: Path | None = None,
          epochs: int | None = None) -> BuildResult:
    """Build, gate and publish a bundle; raises `GateRefused` after keeping the report.

    `added_rows` are extra labelled files appended to the training split (a retrain on
    new data); with the cache on, only their texts pass through the frozen stem.
    `warm_start` is a bundle whose trained top training starts from; `epochs` overrides
    the pipeline's.
    """
    reporter = reporter or Reporter()
    spec = pipeline.spec
    destination = (output or (pipeline.resolve(spec.output) if spec.output else None)
                   or default_destination(models_dir, spec.name))
    check_destination(destination)
    torch_device = resolve_device(device or spec.train.device)

    with reporter.stage("data"):
        data = load_data(spec.data, pipeline.resolve, added_rows or [])
        reporter.info(f"  {len(data.train)} train, "
                      f"{len(data.validation) if data.validation else 0} validation, "
                      f"{len(data.test)} held-out rows; labels {data.label_names}"
                      + (f"; {data.dropped_rows} empty rows dropped" if data.dropped_rows else ""))
    with reporter.stage("model"):
        loaded = load_model(spec.model, data.label_names, pipeline.resolve,
                            spec.trust_remote_code, spec.train.seed)
        if spec.data.max_length > loaded.backbone.max_tokens:
            raise ConfigError(f"data.max_length: {spec.data.max_length} is more than the "
                              f"{loaded.backbone.max_tokens} tokens {spec.model} takes")
        plan = apply_freeze(loaded.backbone, spec.freeze.trainable_layers)
        started_from = (load_trainable(loaded, warm_start, data.label_names,
                                       spec.freeze.trainable_layers) if warm_start else None)
        reporter.info(f"  trainable parameters: {plan.trainable_parameters:,} of "
                      f"{plan.total_parameters:,} ({100 * plan.trainable_share:.1f} %), "
                      f"layers {plan.trainable_layers} of {loaded.backbone.depth} + head")
    with reporter.stage("tokenize"):
        max_length = spec.data.max_length
        encoded = {name: encode(loaded.tokenizer, split.texts, max_length)
                   for name, split in data.named_splits().items()}
    boundary = loaded.backbone.depth - spec.freeze.trainable_layers
    loaded.model.to(torch_device)
    with reporter.stage("cache"):
        enabled = spec.cache.enabled if use_cache is None else use_cache
        root = cache_root(cache_dir, spec.cache.dir, pipeline.resolve) if enabled else None
        features, cache_info = _features(loaded, encoded, data, boundary, max_length, root,
                                         spec.cache.dtype, torch_device, reporter)
    with reporter.stage("train"):
        trained = train(loaded.backbone, boundary, features["train"], data.train.labels,
                        features.get("validation"),
                        data.validation.labels if data.validation else None,
                        spec.train.model_copy(update={"epochs": epochs or spec.train.epochs}),
                        torch_device, reporter)

    with Staging(destination) as staging:
        with reporter.stage("export"):
            loaded.tokenizer.save_pretrained(staging.path)
            loaded.model.config.save_pretrained(staging.path)
            (staging.path / "labels.json").write_text(
                json.dumps({"id2label": dict(enumerate(data.label_names))}, indent=2))
            save_trainable(loaded.model, staging.path)
            fp32_models, export_info = _export(loaded, boundary, staging.path, spec)
        model = loaded.model.to(torch_device)
        reference = reference_logits(model, encoded["test"], torch_device)
        with reporter.stage("quantize"):
            architecture = Architecture(loaded.backbone.fusion_type,
                                        loaded.model.config.num_attention_heads,
                                        loaded.backbone.hidden_size)
            int8_models, quantize_info, int8_logits = {}, {}, {}
            for name, paths in fp32_models.items():
                int8_name = name.replace("fp32", "int8")
                int8_models[int8_name] = [path.with_suffix(".int8.onnx") for path in paths]
                # The split graphs are quantized dynamically and unfused: fusion patterns
                # are written for whole-model exports, and the top's inputs are activations.
                settings = spec.quantize if name == "onnx_fp32" else \
                    spec.quantize.model_copy(update={"fuse": False, "mode": "dynamic"})
                quantize_info[int8_name], int8_logits[int8_name] = quantize_gated(
                    int8_name, paths, int8_models[int8_name], settings, spec, architecture,
                    reference, data.test.texts, data.test.labels,
                    staging.path / "tokenizer.json", reporter,
                    _calibration(data.train.texts, staging.path / "tokenizer.json", spec)
                    if settings.mode == "static" else None)
            if spec.quantize.fp16:
                int8_models["onnx_fp16"] = [staging.path / "model.fp16.onnx"]
                quantize_info["onnx_fp16"] = to_fp16(fp32_models["onnx_fp32"][0],
                                                     int8_models["onnx_fp16"][0])
        models = {**fp32_models, **int8_models}
        with reporter.stage("evaluate"):
            evaluation = evaluate(model, reference, data.test.texts, data.test.labels,
                                  encoded["test"], models, staging.path / "tokenizer.json",
                                  max_length, spec.gate.batch_sizes,
                                  spec.shape_check_lengths(), torch_device, reporter,
                                  known_logits=int8_logits)
        verdict = judge(evaluation.metrics,
                        {name: float(check["max_logit_error"])
                         for name, check in evaluation.shape_check.items()}, spec.gate)
        manifest = {
            "edgefreeze_version": __version__,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "pipeline": {"name": spec.name, "path": str(pipeline.path),
                         "sha256": pipeline.sha256},
            "settings": spec.model_dump(mode="json"),
            "model": {**loaded.source, "model_type": loaded.model.config.model_type,
                      "layers": loaded.backbone.depth},
            "data": {"sources": data.sources, "fingerprint": data.fingerprint(),
                     "dropped_rows": data.dropped_rows,
                     "label_names": data.label_names, "max_length": max_length,
                     "splits": {name: {"rows": len(split), "fingerprint": split.fingerprint()}
                                for name, split in data.named_splits().items()}},
            "training": {"device": trained.device, "precision": trained.precision,
                         "warm_start": started_from,
                         "steps": trained.steps, "epochs": trained.epochs,
                         "trainable_layers": plan.trainable_layers,
                         "trainable_parameters": plan.trainable_parameters,
                         "total_parameters": plan.total_parameters,
                         "trainable_share": plan.trainable_share},
            "cache": cache_info,
            "export": export_info,
            "quantize": quantize_info,
            "metrics": evaluation.metrics,
            "sizes": {name: sum(path.stat().st_size for path in paths)
                      for name, paths in models.items()},
            "shape_check": evaluation.shape_check,
            "gate": verdict.to_dict(),
            "runtime": {"session_config": SESSION_CONFIG},
            "versions": _versions(),
            "timings_s": reporter.timings,
        }
        report = render_report(manifest)
        if not verdict.passed:
            rejected = staging.reject(manifest, report)
            raise GateRefused("gate refused the build: " + "; ".join(verdict.to_dict()["failures"])
                              + f" (report: {rejected / 'report.md'})", manifest, rejected)
        published = staging.publish(manifest, report)
    return BuildResult(path=published, manifest=manifest)


def _export(loaded: LoadedModel, boundary: int, folder: Path, spec: PipelineSpec
            ) -> tuple[dict[str, list[Path]], dict[str, object]]:
    """The fp32 ONNX models: the whole model, and with export.split the stem and top."""
    models = {"onnx_fp32": [folder / "model.onnx"]}
    info = export_onnx(loaded.model, models["onnx_fp32"][0], spec.export.opset)
    if spec.export.split:
        models["onnx_split_fp32"] = [folder / "stem.onnx", folder / "top.onnx"]
        input_names = [n for n in ("input_ids", "attention_mask", "token_type_ids")
                       if n in loaded.tokenizer.model_input_names]
        info = {"composed": info, "split": export_split(
            loaded.backbone, boundary, input_names, *models["onnx_split_fp32"],
            spec.export.opset)}
    return models, info


def _calibration(texts: list[str], tokenizer_json: Path, spec: PipelineSpec
                 ) -> list[dict[str, np.ndarray]]:
    """Static quantization's calibration feeds: a seeded sample of training texts,
    tokenized as the device does, one example per feed."""
    rng = np.random.default_rng(spec.train.seed)
    chosen = rng.choice(len(texts), min(spec.quantize.calibration_rows, len(texts)),
                        replace=False)
    tokenizer = load_tokenizer(tokenizer_json, spec.data.max_length)
    return [encode_text(tokenizer, texts[index]) for index in sorted(chosen.tolist())]


def _features(loaded: LoadedModel, encoded: dict[str, Encoded], data: LabelledData,
              boundary: int, max_length: int, root: Path | None, dtype: str,
              device: torch.device,
              reporter: Reporter) -> tuple[dict[str, Features], dict[str, object]]:
    """Training inputs for the train and validation splits: from the activation cache
    when `root` is set (computing only what it lacks), else the live stem."""
    names = [name for name in ("train", "validation") if name in encoded]
    if root is None:
        return ({name: LiveFeatures(encoded[name], loaded.backbone, boundary) for name in names},
                {"enabled": False})
    keyset, description = describe_keyset(loaded.backbone, loaded.tokenizer,
                                          max_length, boundary, dtype)
    store = ActivationStore(root, keyset, description, dtype, loaded.backbone.hidden_size)
    stats, features = CacheStats(), {}
    try:
        for name in names:
            arrays, split_stats = fetch_activations(
                store, data.named_splits()[name].texts, encoded[name], loaded.backbone,
                boundary, device, reporter, desc=f"cache {name}")
            features[name] = CachedFeatures(arrays)
            stats.add(split_stats)
    finally:
        store.close()
    reporter.info(f"  cache {root}: {stats.hits} hits, {stats.misses} misses, "
                  f"{stats.corrupt} corrupt, {stats.bytes / 1e6:.1f} MB served, "
                  f"{stats.bytes_written / 1e6:.1f} MB written")
    return features, {"enabled": True, "dir": str(root), "keyset": keyset, "dtype": dtype,
                      "boundary": boundary, **asdict(stats)}


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "platform": platform.platform(),
                "edgefreeze": __version__}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    versions["cuda"] = torch.version.cuda or "none"
    return versions
