"""edgefreeze: partially frozen fine-tuning, ONNX export, int8 quantization and a gate on
held-out data."""

__version__ = "0.2.0"
