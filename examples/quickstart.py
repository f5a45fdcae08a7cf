"""Quick start: load a model with backend="auto", run it, print the backend chosen and the result.

pip install . ./plugins/onnxruntime && python examples/quickstart.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import unirt

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "classifier.onnx"


def main(model: Path = DEFAULT_MODEL) -> None:
    print(f"unirt {unirt.__version__} on {unirt.hardware().describe()}\n")
    print(unirt.explain(model), end="\n\n")
    with unirt.Session(model) as sess:  # backend="auto", device="auto", precision="fp32"
        print(sess, end="\n\n")
        info = sess.inputs[0]
        batch = np.random.default_rng(0).standard_normal((4, info.shape[1])).astype(info.dtype)
        outputs = sess.run(batch)  # one array is enough for a single-input model
        print(f"backend chosen: {sess.backend} on {sess.device}")
        for name, value in outputs.items():
            print(f"{name} {value.dtype}{list(value.shape)}:\n{np.array2string(value, precision=4)}")
        if "probs" in outputs:
            print("predicted classes:", outputs["probs"].argmax(axis=1).tolist())


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_MODEL)
