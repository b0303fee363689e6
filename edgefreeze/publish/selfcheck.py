"""The self-check a bundle carries (`edgefreeze.runtime.selfcheck`): a few held-out
inputs, chosen where every form's answer is clear (the widest margin between the two top
logits), with the outputs each form gave at the gate."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from edgefreeze.atomic import write_text
from edgefreeze.gate.held_out import HeldOut
from edgefreeze.runtime.forms import FORMS
from edgefreeze.runtime.selfcheck import FOLDER, SELF_CHECK, CheckedInput, SelfCheck
from edgefreeze.tasks import Outputs

INPUTS = 8
# How far a reduced-precision form's logits may move on another CPU or runtime: int8
# kernels round differently (u8 or s8 activations, fused or not); the labels may not.
REDUCED_TOLERANCE = 0.25


def write_self_check(
    folder: Path, held_out: HeldOut, outputs: dict[str, Outputs], max_logit_error: float
) -> None:
    """selfcheck.json (and the images it names, under selfcheck/) into the bundle."""
    rows = _clearest(outputs, INPUTS)
    inputs = [
        CheckedInput(
            **_input(folder, held_out.examples[row], number),
            outputs={form: np.asarray(out[row]).tolist() for form, out in outputs.items()},
        )
        for number, row in enumerate(rows)
    ]
    tolerance = {
        form: max_logit_error if FORMS[form].exact else REDUCED_TOLERANCE for form in outputs
    }
    check = SelfCheck(tolerance=tolerance, inputs=inputs)
    write_text(folder / SELF_CHECK, check.model_dump_json(indent=1))


def _clearest(outputs: dict[str, Outputs], count: int) -> list[int]:
    """The rows whose smallest top-two logit margin, over every form and position, is
    widest: where a device's rounding cannot flip a label."""
    margins = None
    for form_outputs in outputs.values():
        form_margins = np.array([_margin(np.asarray(output)) for output in form_outputs])
        margins = form_margins if margins is None else np.minimum(margins, form_margins)
    assert margins is not None  # every build has at least the fp32 form
    return sorted(np.argsort(-margins, kind="stable")[:count].tolist())


def _margin(output: np.ndarray) -> float:
    top = np.sort(output, axis=-1)
    return float((top[..., -1] - top[..., -2]).min())


def _input(folder: Path, example: object, number: int) -> dict[str, object]:
    """An input as selfcheck.json holds it: a text, a word list, or an image copied in."""
    if isinstance(example, os.PathLike):
        source = Path(os.fspath(example))
        name = f"{FOLDER}/{number}{source.suffix.lower()}"
        (folder / FOLDER).mkdir(exist_ok=True)
        shutil.copyfile(source, folder / name)
        return {"input": name, "file": True}
    if isinstance(example, list):
        return {"input": [str(word) for word in example]}
    return {"input": str(example)}
