"""`gate:`: what the built models must show before anything ships."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, model_validator

from edgefreeze.schema.section import Fraction, Section


class BaselineSpec(Section):
    """The regression gate against the release the fleet runs (`--baseline` overrides
    `bundle`)."""

    bundle: str | None = Field(
        None,
        description="the current release's bundle folder; its "
        "int8 model runs on this build's held-out rows",
    )
    max_metric_drop: Fraction = Field(
        0.01,
        description="largest loss of the gate metric of the new int8 model against the baseline's",
    )
    max_flip_share: Fraction = Field(
        0.05,
        description="largest share of held-out predictions that may differ from the baseline's",
    )


class GateSpec(Section):
    max_metric_drop: Fraction = Field(
        0.01,
        validation_alias=AliasChoices("max_metric_drop", "max_accuracy_drop"),
        description="largest loss of the task's gate metric (accuracy for text "
        "classification) of an int8 or fp16 model against PyTorch (0.01 = 1 point); "
        "max_accuracy_drop is the same key's earlier name",
    )
    min_agreement: Fraction = Field(
        0.95, description="smallest share of int8 / fp16 predictions equal to PyTorch's"
    )
    max_logit_error: float = Field(
        1e-3, gt=0.0, description="largest |logit| difference of ONNX fp32 against PyTorch"
    )
    max_int8_size_share: Fraction = Field(
        0.4,
        description="largest size of an int8 form as a share of its fp32 form's: the "
        "fallback may keep segments in fp32 only up to this",
    )
    batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(
        [1, 3, 17], min_length=3, description="batch sizes of the fp32 shape check"
    )
    sequence_lengths: list[Annotated[int, Field(ge=2)]] | None = Field(
        None, min_length=3, description="sequence lengths of the shape check; default 5, 23, max"
    )
    baseline: BaselineSpec = BaselineSpec()
    targets: list[Literal["node", "browser"]] = Field(
        [],
        description="JavaScript runtimes the int8 model must pass in before the bundle ships "
        "(node: transformers.js in Node; browser: headless Chromium, WebAssembly), checked as "
        "`verify-target --node/--browser` checks them; needs `make js`",
    )

    @model_validator(mode="before")
    @classmethod
    def _one_name_per_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and {"max_metric_drop", "max_accuracy_drop"} <= set(data):
            raise ValueError(
                "max_accuracy_drop is the earlier name of max_metric_drop; give one of them"
            )
        return data
