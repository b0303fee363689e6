"""A bundle that checks itself on the device: a few held-out inputs with the outputs each
model form gave for them at the gate (`selfcheck.json`), as ExecuTorch's bundled
programs carry theirs. Before a device serves a bundle it runs them through its own
ONNX Runtime, on its own CPU: the same labels and logits within the tolerance, or the
bundle is not served. That catches what digests cannot: a runtime or CPU on which the
model computes something else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from edgefreeze.errors import BundleError

if TYPE_CHECKING:
    from edgefreeze.runtime.bundle import Bundle

SELF_CHECK = "selfcheck.json"
FOLDER = "selfcheck"  # image inputs are copied here, beside the bundle's models


class CheckedInput(BaseModel):
    """One held-out input and what each form output for it at the gate."""

    model_config = ConfigDict(extra="forbid")

    input: str | list[str]  # a text, a sentence's words, or an image file in the bundle
    file: bool = False  # `input` names a file of the bundle (an image)
    outputs: dict[str, list]  # type: ignore[type-arg] # form -> its logits (nested lists)


class SelfCheck(BaseModel):
    """selfcheck.json: the inputs, and how far a device's logits may be from the gate's
    per form (fp32 forms: the gate's logit bound; reduced forms: a kernel's rounding)."""

    model_config = ConfigDict(extra="forbid")

    tolerance: dict[str, float]
    inputs: list[CheckedInput]


@dataclass(frozen=True)
class FormCheck:
    """One form's self-check on this device."""

    form: str
    inputs: int
    labels_changed: int  # inputs whose predicted label (any position's) changed
    max_logit_error: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.labels_changed == 0 and self.max_logit_error <= self.tolerance

    def describe(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"{self.form}: {verdict} on {self.inputs} inputs: {self.labels_changed} labels "
            f"changed, max logit error {self.max_logit_error:.2g} (at most {self.tolerance:.2g})"
        )


def load_self_check(bundle: Bundle) -> SelfCheck | None:
    """The bundle's self-check (its digest verified), or None for a bundle without one."""
    if SELF_CHECK not in bundle.manifest.files:
        return None
    path = bundle.verified(SELF_CHECK)
    try:
        return SelfCheck.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise BundleError(f"{path}: not a self-check ({exc.errors()[0]['msg']})") from None


def run_self_check(bundle: Bundle, check: SelfCheck, forms: Sequence[str]) -> list[FormCheck]:
    """Each of `forms` run on the check's inputs with this machine's ONNX Runtime."""
    encoder = bundle.encoder()
    try:
        feeds = [encoder.encode(_example(bundle, item, encoder.modality)) for item in check.inputs]
    except (ValueError, TypeError, OSError) as exc:
        raise BundleError(f"{bundle.path}: a self-check input cannot be read ({exc})") from None
    results = []
    for form in forms:
        model = bundle.model(form)
        changed, error = 0, 0.0
        for item, feed in zip(check.inputs, feeds):
            try:
                expected = np.asarray(item.outputs[form], dtype=np.float32)
            except (KeyError, ValueError) as exc:
                raise BundleError(
                    f"{bundle.path}: {SELF_CHECK} lacks {form}'s outputs ({exc})"
                ) from None
            actual = model.run(feed)[0]
            if actual.shape != expected.shape:
                raise BundleError(
                    f"{form}: outputs of shape {actual.shape}, expected {expected.shape}"
                )
            error = max(error, float(np.abs(actual - expected).max()))
            changed += int((actual.argmax(-1) != expected.argmax(-1)).any())
        results.append(FormCheck(form, len(check.inputs), changed, error, check.tolerance[form]))
    return results


def _example(bundle: Bundle, item: CheckedInput, modality: str) -> object:
    """An input as the encoder takes it: an image is always a file of the bundle (its
    digest checked), never a path from outside it."""
    if item.file or modality == "image":
        if not item.file or not isinstance(item.input, str):
            raise BundleError(f"{bundle.path}: a self-check image must be a file of the bundle")
        return str(bundle.verified(item.input))
    return item.input


@dataclass(frozen=True)
class DeviceCheck:
    """What `edgefreeze verify` found: the signature, every file, the self-check."""

    key_sha256: str | None  # the trusted key that signed the bundle (None: not asked)
    files: int  # files whose digests match the manifest
    forms: list[FormCheck]  # empty for a bundle without a self-check

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.forms)

    @property
    def failures(self) -> str:
        """The forms that failed, described, in one line."""
        return "; ".join(check.describe() for check in self.forms if not check.passed)

    def as_json(self) -> dict[str, object]:
        return {
            "key_sha256": self.key_sha256,
            "files": self.files,
            "self_check": {
                check.form: {
                    "passed": check.passed,
                    "inputs": check.inputs,
                    "labels_changed": check.labels_changed,
                    "max_logit_error": check.max_logit_error,
                    "tolerance": check.tolerance,
                }
                for check in self.forms
            },
        }


def check_here(bundle: Bundle, forms: Sequence[str] = ()) -> DeviceCheck:
    """Every file of `bundle` against its manifest, then its self-check on this machine
    for `forms` (default: every form the self-check covers that the bundle carries)."""
    for name in bundle.manifest.files:
        bundle.verified(name)
    check = load_self_check(bundle)
    if check is None:
        results = []
    else:
        unknown = [form for form in forms if form not in check.tolerance]
        if unknown:
            raise BundleError(
                f"{bundle.path}: the self-check covers {', '.join(check.tolerance)}, "
                f"not {', '.join(unknown)}"
            )
        carried = {form.name for form in bundle.forms()}  # a device bundle keeps some
        chosen = list(forms) or [form for form in check.tolerance if form in carried]
        results = run_self_check(bundle, check, chosen)
    key = bundle.signature.key_sha256 if bundle.signature else None
    return DeviceCheck(key, len(bundle.manifest.files), results)
