"""edgefreeze: partially frozen fine-tuning, ONNX export, int8 quantization and an accuracy gate."""

__version__ = "0.2.0"
