"""What runs on the device: ONNX Runtime, tokenizers and numpy, never torch.

Import nothing here that pulls in torch or transformers (a test makes sure).
"""

from edgefreeze.runtime.bundle import Bundle, BundleError, Prediction, Predictor
from edgefreeze.runtime.classifier import (SESSION_CONFIG, OnnxClassifier, encode_text,
                                           load_tokenizer, session_options)

__all__ = ["SESSION_CONFIG", "Bundle", "BundleError", "OnnxClassifier", "Prediction", "Predictor",
           "encode_text", "load_tokenizer", "session_options"]
