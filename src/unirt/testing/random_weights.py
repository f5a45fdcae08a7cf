"""Random-weight copies of the onnx wheel's "light" models.

The light models build every weight at run time with ConstantOfShape(0.02), so their outputs are degenerate (every
class scores alike) and a backend that mixed up channels would still match. The copies replace those nodes with
seeded random initializers of the same shapes, scaled so activations stay in range (LeCun init for weights, positive
variances for BatchNormalization), and the final Softmax's input is added as an output (`logits`), since deep
random nets often saturate the softmax to one-hot. ONNX Runtime on the copy is then the reference.
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np

from .cases import ConformanceCase, _data_root
from .models import _onnx

__all__ = ["random_weight_copy", "random_weight_cases", "DEFAULT_MAX_PARAMS"]

#: Copies are made for light models up to this many parameters (resnet50: 25.6M); alexnet, vgg19 and zfnet512
#: (60-140M, mostly fully connected) would add hundreds of MB for no extra coverage.
DEFAULT_MAX_PARAMS = 30_000_000


def _consumers(graph) -> dict[str, tuple[str, int]]:
    used: dict[str, tuple[str, int]] = {}
    for node in graph.node:
        for slot, name in enumerate(node.input):
            used.setdefault(name, (node.op_type, slot))
    return used


def _random(shape: tuple[int, ...], consumer: tuple[str, int], rng: np.random.Generator) -> np.ndarray:
    op, slot = consumer
    if op == "BatchNormalization":
        if slot in (1, 4):  # scale, variance: positive, near 1
            return rng.uniform(0.5, 1.5, shape).astype(np.float32)
        return (0.1 * rng.standard_normal(shape)).astype(np.float32)  # bias, mean
    if len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) * np.sqrt(1.0 / max(fan_in, 1))).astype(np.float32)
    return (0.01 * rng.standard_normal(shape)).astype(np.float32)


def random_weight_copy(source: Path, target: Path, seed: int = 0, max_params: int = DEFAULT_MAX_PARAMS) -> bool:
    """Write `source` with its ConstantOfShape weights replaced by random initializers. False if it is too big."""
    onnx, T, h, nh = _onnx()
    model = onnx.load(str(source), load_external_data=False)
    graph = model.graph
    shapes = {i.name: tuple(int(v) for v in nh.to_array(i)) for i in graph.initializer if i.data_type == T.INT64}
    fills = [n for n in graph.node if n.op_type == "ConstantOfShape" and n.input and n.input[0] in shapes]
    if sum(int(np.prod(shapes[n.input[0]])) for n in fills) > max_params:
        return False
    rng = np.random.default_rng(seed)
    consumers = _consumers(graph)
    keep = [n for n in graph.node if n not in fills]
    new_inits = [
        nh.from_array(_random(shapes[n.input[0]], consumers.get(n.output[0], ("", 0)), rng), n.output[0]) for n in fills
    ]
    used_shapes = {n.input[0] for n in fills}
    others = [i for i in graph.initializer if i.name not in used_shapes]
    del graph.node[:]
    graph.node.extend(keep)
    del graph.initializer[:]
    graph.initializer.extend(others + new_inits)
    softmax = [n for n in graph.node if n.op_type == "Softmax" and n.output[0] in {o.name for o in graph.output}]
    if softmax:
        graph.output.append(h.make_tensor_value_info(softmax[-1].input[0], T.FLOAT, None))
    stale = [i for i in graph.input if i.name in used_shapes]  # IR < 4 lists initializers as inputs too
    for vi in stale:
        graph.input.remove(vi)
    onnx.save(model, str(target))
    return True


def random_weight_cases(
    directory: Path | str, seed: int = 0, max_params: int = DEFAULT_MAX_PARAMS
) -> list[ConformanceCase]:
    """Random-weight copies of the light models (made once into `directory`), with seeded normal inputs.

    `outputs` is empty: the reference is ONNX Runtime on the copy (see `unirt.testing.conformance`).
    """
    onnx, *_ = _onnx()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cases = []
    for source in sorted(glob.glob(str(_data_root() / "light" / "*.onnx"))):
        name = Path(source).stem
        target = directory / f"{name}_random.onnx"
        if not target.exists() and not random_weight_copy(Path(source), target, seed, max_params):
            continue
        model = onnx.load(str(target), load_external_data=False)
        inits = {i.name for i in model.graph.initializer}
        rng = np.random.default_rng(seed)
        inputs = []
        for vi in model.graph.input:
            if vi.name in inits:
                continue
            shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim)
            inputs.append(rng.standard_normal(shape).astype(np.float32))
        cases.append(ConformanceCase(f"{name}_random", target, inputs, []))
    return cases
