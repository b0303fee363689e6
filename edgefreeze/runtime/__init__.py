"""What runs on the device: ONNX Runtime, tokenizers, numpy, pydantic and (for image models)
Pillow, never torch.

Import nothing here that pulls in torch or transformers (a test makes sure). The bundle's
contract lives here too, since the device is who reads it: the model forms
(`runtime.forms`) and the manifest schema (`runtime.manifest`).
"""

from edgefreeze.errors import BundleError
from edgefreeze.runtime.bundle import Bundle, Predictor
from edgefreeze.runtime.forms import FORMS, ModelForm
from edgefreeze.runtime.inputs import TextInputs, input_kind, load_tokenizer
from edgefreeze.runtime.manifest import Manifest
from edgefreeze.runtime.outputs import Prediction, output_kind
from edgefreeze.runtime.session import SESSION_CONFIG, OnnxModel, session_options

__all__ = [
    "FORMS",
    "SESSION_CONFIG",
    "Bundle",
    "BundleError",
    "Manifest",
    "ModelForm",
    "OnnxModel",
    "Prediction",
    "Predictor",
    "TextInputs",
    "input_kind",
    "load_tokenizer",
    "output_kind",
    "session_options",
]
