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
        try:
            self.manifest = json.loads((self.path / "manifest.json").read_text())
            id2label = json.loads((self.path / "labels.json").read_text())["id2label"]
        except (OSError, ValueError, KeyError) as exc:
            raise BundleError(f"{self.path}: not a bundle ({exc})") from None
        if not self.manifest.get("gate", {}).get("passed"):
            raise BundleError(f"{self.path}: the gate did not pass this bundle; refusing it")
        self.labels = [id2label[str(i)] for i in range(len(id2label))]
        self.max_length = int(self.manifest["data"]["max_length"])
        # The ONNX Runtime settings the gate ran with; a bundle that names none ran with
        # ONNX Runtime's defaults.
        self.session_config: dict[str, str] = self.manifest.get("runtime", {}).get(
            "session_config", {})

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

    def classifier(self, variant: str = "int8", threads: int = 0) -> OnnxClassifier:
        if variant not in MODEL_FILES:
            raise BundleError(f"unknown model variant {variant!r} (choose from "
                              f"{', '.join(MODEL_FILES)})")
        return OnnxClassifier([self.verified(name) for name in MODEL_FILES[variant]],
                              self.verified("tokenizer.json"), self.max_length, threads,
                              self.session_config)

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
