"""A published bundle as a device sees it: verified before anything runs.

Every file a model needs is checked against the manifest's sha256 before it is loaded,
and a bundle whose gate did not pass is refused, so a device never runs a model that was
altered in transit or never accepted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefreeze.errors import EdgefreezeError
from edgefreeze.hashing import file_sha256
from edgefreeze.runtime.classifier import OnnxClassifier

MODEL_FILES = {"int8": ("model.int8.onnx",), "fp32": ("model.onnx",),
               "fp16": ("model.fp16.onnx",),
               "split-int8": ("stem.int8.onnx", "top.int8.onnx"),
               "split-fp32": ("stem.onnx", "top.onnx")}


class BundleError(EdgefreezeError):
    """The bundle is missing, incomplete, tampered with, or was never accepted."""

    exit_code = 2


@dataclass(frozen=True)
class Prediction:
    label: str
    probabilities: dict[str, float]


class Bundle:
    """A bundle folder: its manifest, labels and verified model files."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise BundleError(f"{self.path}: not a bundle folder")
        try:
            manifest = json.loads((self.path / "manifest.json").read_text())
        except (OSError, ValueError) as exc:
            raise BundleError(f"{self.path}: not a bundle (manifest.json: {exc})") from None
        self.manifest = _checked_manifest(manifest, self.path / "manifest.json")
        if not self.manifest["gate"]["passed"]:
            raise BundleError(f"{self.path}: the gate did not pass this bundle; refusing it")
        self.labels = self._labels()
        self.max_length: int = self.manifest["data"]["max_length"]
        # The ONNX Runtime settings the gate ran with; a bundle that names none ran with
        # ONNX Runtime's defaults.
        self.session_config = _session_config(self.manifest, self.path / "manifest.json")

    def _labels(self) -> list[str]:
        path = self.verified("labels.json")
        try:
            id2label = json.loads(path.read_text())["id2label"]
            labels = [id2label[str(i)] for i in range(len(id2label))]
        except (OSError, ValueError, KeyError, TypeError):
            raise BundleError(f"{path}: expected {{'id2label': {{'0': NAME, '1': NAME, ...}}}}"
                              ) from None
        if len(labels) < 2 or not all(isinstance(label, str) for label in labels):
            raise BundleError(f"{path}: expected two or more label names")
        return labels

    def verified(self, name: str) -> Path:
        """The path of `name` after checking its sha256 against the manifest."""
        entry = self.manifest.get("files", {}).get(name)
        path = self.path / name
        if entry is None:
            raise BundleError(f"{self.path}: {name} is not listed in the manifest")
        if not path.is_file():
            raise BundleError(f"{path}: missing")
        if file_sha256(path) != entry["sha256"]:
            raise BundleError(f"{path}: sha256 does not match the manifest; the file was "
                              "altered, refusing to load it")
        return path

    def model_files(self, variant: str) -> list[Path]:
        """The verified files of one model form, or one line saying which forms exist."""
        if variant not in self.variants():
            raise BundleError(f"{self.path}: no {variant!r} model in this bundle (it has "
                              f"{', '.join(self.variants()) or 'none'})")
        return [self.verified(name) for name in MODEL_FILES[variant]]

    def classifier(self, variant: str = "int8", threads: int = 0) -> OnnxClassifier:
        classifier = OnnxClassifier(self.model_files(variant), self.verified("tokenizer.json"),
                                    self.max_length, threads, self.session_config)
        if classifier.num_labels not in (None, len(self.labels)):
            raise BundleError(f"{self.path}: labels.json names {len(self.labels)} labels but "
                              f"the {variant} model has {classifier.num_labels} outputs")
        return classifier

    def variants(self) -> list[str]:
        """The model forms this bundle carries."""
        return [v for v, names in MODEL_FILES.items()
                if all(name in self.manifest.get("files", {}) for name in names)]


class Predictor:
    """Label and probabilities per text, from a verified bundle."""

    def __init__(self, bundle: str | Path | Bundle, variant: str = "int8",
                 threads: int = 0) -> None:
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle(bundle)
        self.classifier = self.bundle.classifier(variant, threads)

    def predict(self, texts: list[str]) -> list[Prediction]:
        logits = self.classifier.logits(texts)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        return [Prediction(self.bundle.labels[int(row.argmax())],
                           {label: float(p) for label, p in zip(self.bundle.labels, row)})
                for row in probabilities]


# What the runtime reads from a manifest, and the type each must have.
_REQUIRED = {("gate", "passed"): bool, ("data", "max_length"): int, ("files",): dict}


def _checked_manifest(manifest: object, path: Path) -> dict:
    """The manifest if it has what the runtime reads; else one line naming the first gap."""
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: expected a JSON object")
    for keys, kind in _REQUIRED.items():
        value = manifest
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise BundleError(f"{path}: missing or invalid '{'.'.join(keys)}'")
    for name, entry in manifest["files"].items():
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                and isinstance(entry.get("size"), int)):
            raise BundleError(f"{path}: missing or invalid 'files.{name}' (sha256, size)")
    return manifest


def _session_config(manifest: dict, path: Path) -> dict[str, str]:
    """runtime.session_config ({} when absent: the gate ran with ONNX Runtime's defaults)."""
    runtime = manifest.get("runtime", {})
    config = runtime.get("session_config", {}) if isinstance(runtime, dict) else None
    if not (isinstance(config, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in config.items())):
        raise BundleError(f"{path}: missing or invalid 'runtime.session_config'")
    return config
