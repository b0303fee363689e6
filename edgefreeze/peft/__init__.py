"""Parameter-efficient methods (the pipeline's `peft:`), one module per method, each
registered in `METHODS`. LoRA and IA3 come from the `peft` library (well kept, and the
reference implementations); edgefreeze only decides where they go and merges them for
export."""

from edgefreeze.peft import adapter as _adapter  # noqa: F401  (each registers a method)
from edgefreeze.peft import ia3 as _ia3  # noqa: F401
from edgefreeze.peft import lora as _lora  # noqa: F401
from edgefreeze.peft import prefix as _prefix  # noqa: F401
from edgefreeze.peft.method import METHODS, PeftMethod

__all__ = ["METHODS", "PeftMethod"]
