"""Regenerate the small models shipped in examples/models (needs `pip install onnx`)."""

from pathlib import Path

from unirt.testing import dynamic_mlp

HERE = Path(__file__).parent / "models"

if __name__ == "__main__":
    HERE.mkdir(exist_ok=True)
    # A 4-feature, 3-class classifier with a dynamic batch dim "N": outputs logits and softmax probabilities.
    print(dynamic_mlp(HERE / "classifier.onnx", features=4, classes=3, seed=42))
