"""A published bundle as a device sees it: verified before anything runs.

Every file a model needs is checked against the manifest's sha256 before it is loaded,
and a bundle whose gate did not pass is refused, so a device never runs a model that was
altered in transit or never accepted.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from edgefreeze.errors import BundleError, ConfigError
from edgefreeze.hashing import file_sha256
from edgefreeze.runtime.forms import FORMS, INT8, ModelForm
from edgefreeze.runtime.inputs import InputEncoder, input_kind
from edgefreeze.runtime.manifest import Manifest
from edgefreeze.runtime.outputs import OutputDecoder, output_kind
from edgefreeze.runtime.session import OnnxModel, providers_for
from edgefreeze.runtime.signature import verify_bundle

K = TypeVar("K")

MANIFEST = "manifest.json"
LABELS = "labels.json"


class Bundle:
    """A bundle folder: its manifest, labels and verified model files."""

    def __init__(self, path: str | Path, trusted_keys: Sequence[str | Path] = ()) -> None:
        """`trusted_keys`: public keys one of which must have signed the bundle, every
        file as it is now (none: the manifest's digests are the only check). The path is
        resolved once: a device's `current` link switched meanwhile cannot mix versions."""
        if not Path(path).is_dir():
            raise BundleError(f"{path}: not a bundle folder")
        self.path = Path(path).resolve()
        self.signature = verify_bundle(self.path, trusted_keys) if trusted_keys else None
        self._verified: set[str] = set()
        self.manifest = Manifest.load(self.path / MANIFEST)
        if not self.manifest.gate.passed:
            raise BundleError(f"{self.path}: the gate did not pass this bundle; refusing it")
        self.labels = self._labels()
        self.max_length = self.manifest.data.max_length
        # The ONNX Runtime settings the gate ran with.
        self.session_config = self.manifest.runtime.session_config

    def _labels(self) -> list[str]:
        path = self.verified(LABELS)
        try:
            id2label = json.loads(path.read_text())["id2label"]
            labels = [id2label[str(i)] for i in range(len(id2label))]
        except (OSError, ValueError, KeyError, TypeError):
            raise BundleError(
                f"{path}: expected {{'id2label': {{'0': NAME, '1': NAME, ...}}}}"
            ) from None
        if len(labels) < 2 or not all(isinstance(label, str) for label in labels):
            raise BundleError(f"{path}: expected two or more label names")
        return labels

    def verified(self, name: str) -> Path:
        """The path of `name` after checking its sha256 against the manifest (once per
        Bundle: a device check and the models it then loads hash each file once)."""
        path = self.path / name
        if name in self._verified:
            return path
        entry = self.manifest.files.get(name)
        if entry is None:
            raise BundleError(f"{self.path}: {name} is not listed in the manifest")
        if not path.is_file():
            raise BundleError(f"{path}: missing")
        if not path.resolve().is_relative_to(self.path.resolve()):
            raise BundleError(
                f"{path}: leads out of the bundle (a link to {path.resolve()}); refusing it"
            )
        if file_sha256(path) != entry.sha256:
            raise BundleError(
                f"{path}: sha256 does not match the manifest; the file was "
                "altered, refusing to load it"
            )
        self._verified.add(name)
        return path

    def forms(self) -> list[ModelForm]:
        """The model forms this bundle carries."""
        return [
            form
            for form in FORMS.values()
            if all(name in self.manifest.files for name in form.files)
        ]

    def default_form(self) -> str:
        """int8, or where a device bundle left it out (`edgefreeze slim`), the first form
        it carries."""
        carried = [form.name for form in self.forms()]
        if not carried:
            raise BundleError(f"{self.path}: carries no model form")
        return INT8.name if INT8.name in carried else carried[0]

    def model_files(self, form: str) -> list[Path]:
        """The verified files of one model form, or one line saying which forms exist."""
        if form not in {f.name for f in self.forms()}:
            raise BundleError(
                f"{self.path}: no {form!r} model in this bundle (it has "
                f"{', '.join(f.name for f in self.forms()) or 'none'})"
            )
        return [self.verified(name) for name in FORMS[form].files]

    def model(self, form: str | None = None, threads: int = 0) -> OnnxModel:
        form = form or self.default_form()
        model = OnnxModel(
            self.model_files(form),
            threads,
            self.session_config,
            providers_for(FORMS[form].precision),
        )
        problem = self.decoder().check(model.output_width, self.labels)
        if problem:
            raise BundleError(f"{self.path}: {LABELS} {problem} ({form})")
        return model

    def input_files(self) -> tuple[str, ...]:
        """The bundle files the input encoder reads (tokenizer.json for text)."""
        return self._kind(input_kind, self.manifest.task.inputs).files

    def encoder(self) -> InputEncoder:
        """What turns one input into the models' feed (a tokenizer for text)."""
        for name in self.input_files():
            self.verified(name)
        return self._kind(input_kind, self.manifest.task.inputs)(self.path, self.max_length)

    def decoder(self) -> OutputDecoder:
        return self._kind(output_kind, self.manifest.task.outputs)()

    def _kind(self, lookup: Callable[[str], K], name: str) -> K:
        try:
            return lookup(name)
        except ValueError as exc:
            raise BundleError(
                f"{self.path}: {exc}; this edgefreeze cannot run the bundle's "
                f"task {self.manifest.task.name!r}"
            ) from None


class Predictor:
    """Predictions per input, from a verified bundle: what a device calls."""

    def __init__(
        self,
        bundle: str | Path | Bundle,
        form: str | None = None,  # default: int8, or a device bundle's first form
        threads: int = 0,
        trusted_keys: Sequence[str | Path] = (),
    ) -> None:
        if isinstance(bundle, Bundle) and trusted_keys:
            raise ConfigError("Predictor: give trusted_keys to the Bundle, not beside one")
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle(bundle, trusted_keys)
        self.model = self.bundle.model(form, threads)
        self.encoder = self.bundle.encoder()
        self.decoder = self.bundle.decoder()

    def outputs(self, example: object) -> np.ndarray:
        """The model's raw outputs for one input, exactly as the gate computed them."""
        return self.model.run(self.encoder.encode(example))

    def predict(self, examples: Sequence[object]) -> list[Any]:
        """One prediction per input (for text classification: label and probabilities),
        each run alone, as the gate ran it."""
        predictions = []
        for example in examples:
            feed = self.encoder.encode(example)
            predictions.append(
                self.decoder.decode(self.model.run(feed), self.bundle.labels, feed, example)
            )
        return predictions
