"""`peft:`: a parameter-efficient method (`edgefreeze.peft`) that trains small added
weights in the plan's trainable layers. Each method's settings class registers under the
method's name; the method reads it as its `config`."""

from __future__ import annotations

from pydantic import Field

from edgefreeze.schema.section import KindSettings, Section


class PeftSpec(Section):
    """What every parameter-efficient method's settings share; each method subclasses it,
    and `peft.method` picks which one validates."""

    method: str = Field(description="the method (edgefreeze.peft.METHODS): lora, ia3, ...")


PEFT_SETTINGS: KindSettings[PeftSpec] = KindSettings(
    "parameter-efficient method", PeftSpec, "method"
)


@PEFT_SETTINGS.register("lora")
class LoraSpec(PeftSpec):
    r: int = Field(8, ge=1, le=1024, description="rank of the update")
    alpha: float = Field(16.0, gt=0.0, description="scale: the update is alpha / r times BA")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the LoRA branch's input")
    targets: list[str] = Field(
        ["query", "value"],
        min_length=1,
        description="linear modules "
        "of each trainable layer that get an update: roles (query, key, "
        "value, attention_output, intermediate, output) or name "
        "suffixes",
    )


@PEFT_SETTINGS.register("ia3")
class IA3Spec(PeftSpec):
    targets: list[str] = Field(
        ["key", "value", "output"],
        min_length=1,
        description="linear modules rescaled: roles or name suffixes",
    )
    feedforward: list[str] = Field(
        ["output"],
        description="those among the targets whose input, not output, is rescaled (feed-forward)",
    )


@PEFT_SETTINGS.register("adapter")
class AdapterSpec(PeftSpec):
    bottleneck: int = Field(64, ge=1, le=4096, description="width of the adapter's middle")
    targets: list[str] = Field(
        ["attention_output", "output"],
        min_length=1,
        description="linear modules followed by an adapter: roles "
        "(after attention, after the feed-forward block) or name "
        "suffixes",
    )


@PEFT_SETTINGS.register("prefix")
class PrefixSpec(PeftSpec):
    tokens: int = Field(16, ge=1, le=512, description="virtual tokens the layers attend to")
