"""What `edgefreeze verify-target` runs on the target's own interpreter: a bundle's model
over given inputs, with the versions that ran it. Torch-free, like all of the runtime, so
it runs with only ONNX Runtime, tokenizers, numpy and pydantic installed (an aarch64
Python under qemu-user, or a fleet's older ONNX Runtime).

    python -m edgefreeze.runtime.probe BUNDLE FORM INPUTS.json OUTPUTS.npz
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import numpy as np
import onnxruntime

from edgefreeze.runtime.bundle import Predictor


def main(bundle: str, form: str, inputs: str, outputs: str) -> None:
    examples = json.loads(Path(inputs).read_text(encoding="utf-8"))
    predictor = Predictor(bundle, form)
    results = {str(i): predictor.outputs(example) for i, example in enumerate(examples)}
    partial = Path(outputs).with_suffix(".partial.npz")
    # numpy's stubs read ** of a dict as its `allow_pickle` flag; the names are the keys.
    np.savez(partial, **results)  # type: ignore[arg-type]
    partial.replace(outputs)
    print(
        json.dumps(
            {
                "machine": platform.machine(),
                "python": platform.python_version(),
                "onnxruntime": onnxruntime.__version__,
                "numpy": np.__version__,
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:5])
