"""PyTorch -> ONNX with dynamic batch and sequence axes, through Optimum's exporter.

Optimum's per-architecture configs name each family's inputs and dynamic axes, and its
exports matched PyTorch within 1e-5 in every check on these machines. Any exporter is still
treated as untrusted: the gate checks the result over several unseen shapes.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

import onnx
import torch

from edgefreeze.backbones import Backbone
from edgefreeze.freeze import FreezePlan
from edgefreeze.runtime.manifest import ExportRecord


def export_onnx(
    model: torch.nn.Module, destination: Path, opset: int, task: str, sequential: bool
) -> ExportRecord:
    """Write `model` as a single fp32 ONNX file at `destination`; `task` is Optimum's name
    for what the model's head does (it picks the inputs, outputs and dynamic axes:
    batch, and sequence for `sequential` inputs such as tokens; images have none)."""
    from optimum.exporters.onnx import onnx_export_from_model

    model = model.to("cpu").eval()
    for name in ("optimum", "optimum.exporters", "optimum.exporters.onnx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(dir=destination.parent) as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_export_from_model(
            model, output=Path(scratch), task=task, opset=opset, do_validation=False
        )
        shutil.move(str(Path(scratch) / "model.onnx"), destination)
    return ExportRecord(
        exporter="optimum.exporters.onnx",
        opset=opset,
        dynamic_axes=["batch_size", "sequence_length"] if sequential else ["batch_size"],
    )


class _Stem(torch.nn.Module):
    """The frozen part as a module of its own: model inputs (token ids and mask, or
    pixels) -> hidden states at the boundary."""

    def __init__(self, backbone: Backbone, boundary: int) -> None:
        super().__init__()
        self.model = backbone.model  # registered, so export sees its weights
        self.run_stem: _StemRun = lambda inputs: backbone.stem(inputs, boundary)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
    ) -> torch.Tensor:
        inputs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": token_type_ids,
            "pixel_values": pixel_values,
        }
        return self.run_stem({name: value for name, value in inputs.items() if value is not None})


class _Top(torch.nn.Module):
    """The trained part: hidden states at the boundary (+ the attention mask, for tokens)
    -> outputs."""

    def __init__(self, backbone: Backbone, boundary: int) -> None:
        super().__init__()
        self.model = backbone.model
        self.run_top: _TopRun = lambda hidden, mask: backbone.top(hidden, mask, boundary)

    def forward(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.run_top(hidden, attention_mask)


_StemRun = Callable[[dict[str, torch.Tensor]], torch.Tensor]  # Backbone.stem at a boundary
_TopRun = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]  # Backbone.top at one


def export_split(
    backbone: Backbone,
    plan: FreezePlan,
    example: dict[str, torch.Tensor],
    sequential: bool,
    stem_path: Path,
    top_path: Path,
    opset: int,
) -> ExportRecord:
    """Write the frozen stem and the trainable top as two ONNX graphs, for delta updates:
    retraining never changes the stem's weights, so its file stays byte-identical and a
    device that has it downloads only the top.

    Exported with `torch.onnx.export(dynamo=True)` (Optimum has no config for half a
    model) from `example` inputs (a batch of two), with a dynamic batch axis and, for
    `sequential` (token) inputs, a dynamic sequence axis; the gate checks the pair like
    the whole.
    """
    model = backbone.model.to("cpu").eval()
    boundary = plan.boundary
    names = list(example)
    batch, sequence = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=2)
    axes = {0: batch, 1: sequence} if sequential else {0: batch}
    with torch.no_grad():
        hidden = torch.zeros_like(backbone.stem(example, boundary))
    top_args = (hidden, example["attention_mask"]) if sequential else (hidden,)
    top_names = ["hidden", "attention_mask"] if sequential else ["hidden"]
    with warnings.catch_warnings(), _quiet_torch_onnx():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Stem(backbone, boundary),
            (),
            str(stem_path),
            kwargs=example,
            input_names=names,
            output_names=["hidden"],
            dynamic_shapes={name: axes for name in names},
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
        torch.onnx.export(
            _Top(backbone, boundary),
            top_args,
            str(top_path),
            input_names=top_names,
            output_names=["logits"],
            dynamic_shapes=tuple(axes for _ in top_args),
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    for path in (stem_path, top_path):
        strip_provenance(path)
    model.eval()
    return ExportRecord(
        exporter="torch.onnx.export(dynamo=True)", opset=opset, boundary=boundary, stem_inputs=names
    )


PROVENANCE = ("pkg.", "namespace")  # node metadata the exporter and its optimizer write


def strip_provenance(path: Path) -> None:
    """Drop what torch's dynamo exporter records of where each node came from: the Python
    stack (file paths and line numbers of the forward methods it ran, the install's
    site-packages included), module names, FX nodes, rewrite rules. None of it runs, and
    with it the same stem exported from another checkout, virtualenv or edgefreeze version
    had other bytes, so a device's delta update fetched a stem it already had."""
    model = onnx.load(str(path))
    for graph in [model.graph, *(function for function in model.functions)]:
        for node in graph.node:
            kept = [p for p in node.metadata_props if not p.key.startswith(PROVENANCE)]
            del node.metadata_props[:]
            node.metadata_props.extend(kept)
    onnx.save(model, str(path))


@contextmanager
def _quiet_torch_onnx() -> Iterator[None]:
    """torch.onnx's dynamo exporter prints its progress and logs warnings about optional
    packages; a --quiet build must not."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with open(os.devnull, "w") as devnull, redirect_stdout(devnull):
            yield
    finally:
        logger.setLevel(level)
