"""What runs on the device: ONNX Runtime, tokenizers and numpy, never torch.

Import nothing here that pulls in torch or transformers.
"""

from edgefreeze.runtime.classifier import OnnxClassifier

__all__ = ["OnnxClassifier"]
