"""PyTorch twins of the ONNX test models (`unirt.testing.models`): the same math on the same weights (read from
the built ONNX file), saved as `torch.export` ExportedProgram archives (.pt2), so ONNX Runtime on the ONNX model is
the reference for the torch backend. Outputs are returned as a dict keyed by the ONNX model's output names (a dict
output names a program's outputs). Needs torch (imported lazily).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .models import build

__all__ = ["TORCH_BUILDERS", "build_torch", "export_module"]


def _weights(onnx_path: Path) -> dict[str, Any]:
    import onnx
    import torch
    from onnx import numpy_helper

    return {
        i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in onnx.load(str(onnx_path)).graph.initializer
    }


class _Weights:
    """The twin's weights by their ONNX initializer names (`m.W`)."""

    def __init__(self, module: Any) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, f"w_{name}")


def _module(forward: Callable[..., Any], weights: dict[str, Any]) -> Any:
    import torch

    class Twin(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for name, value in weights.items():
                self.register_buffer(f"w_{name}", value)  # prefixed: "half" is a Module method

        def forward(self, *args: Any) -> Any:
            return forward(_Weights(self), *args)

    return Twin().eval()


def export_module(
    module: Any, args: tuple, dynamic: dict[int, dict[int, str]], path: Path, names: tuple[str, ...]
) -> Path:
    """torch.export `module` at `args` with `dynamic` {arg position: {axis: dim name}} and save it to `path`;
    `names` are the forward's argument names (the program's input names)."""
    import torch

    dims: dict[str, Any] = {}
    shapes = tuple(
        {axis: dims.setdefault(n, torch.export.Dim(n, max=1 << 16)) for axis, n in dynamic[k].items()}
        if k in dynamic
        else None
        for k in range(len(args))
    )
    wrapper = _named(module, names)
    ep = torch.export.export(wrapper, args, dynamic_shapes=dict(zip(names, shapes, strict=True)))
    torch.export.save(ep, str(path))
    return path


def _named(module: Any, names: tuple[str, ...]) -> Any:
    """A module whose forward takes arguments called `names` (the exported program's input names)."""
    import torch

    params = ", ".join(names)
    scope: dict[str, Any] = {}
    exec(f"def forward(self, {params}):\n    return self.inner({params})\n", scope)
    cls = type("Named", (torch.nn.Module,), {"forward": scope["forward"]})
    wrapper = cls()
    wrapper.inner = module
    return wrapper.eval()


def _t(a: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.array(a, copy=True))


def _matmul_relu(w: dict) -> tuple:
    import torch

    def forward(m: Any, x: Any) -> dict:
        return {"y": torch.relu(x @ m.W)}

    return forward, (np.zeros((64, 64), np.float32),), {}, ("x",)


def _dynamic_mlp(w: dict) -> tuple:
    import torch

    def forward(m: Any, x: Any) -> dict:
        logits = x @ m.W + m.b
        return {"logits": logits, "probs": torch.softmax(logits, 1)}

    return forward, (np.zeros((3, 8), np.float32),), {0: {0: "N"}}, ("x",)


def _multi_io(w: dict) -> tuple:
    import torch

    def forward(m: Any, a: Any, b: Any, idx: Any, scale: Any) -> dict:
        return {"sum": (a + b) * scale, "picked": a[idx], "count": torch.ones_like(idx).sum(), "mask": a > b}

    args = (np.zeros((3, 4), np.float32), np.zeros((3, 4), np.float32), np.arange(4) % 3, np.array(0.5, np.float32))
    return forward, args, {0: {0: "N"}, 1: {0: "N"}, 2: {0: "K"}}, ("a", "b", "idx", "scale")


def _int_ops(w: dict) -> tuple:
    import torch

    def forward(m: Any, a: Any, b: Any) -> dict:
        return {"y": a * b, "z": a.to(torch.float32)}

    return forward, (np.ones((2, 3), np.int32), np.ones((2, 3), np.int32)), {}, ("a", "b")


def _unknown_dims(w: dict) -> tuple:
    def forward(m: Any, x: Any) -> dict:
        return {"y": x * m.two}

    return forward, (np.zeros((2, 3, 4, 5), np.float32),), {0: {0: "B", 2: "H", 3: "W"}}, ("x",)


def _byte_transformer(w: dict) -> tuple:
    import torch

    seq, dim = w["pos"].shape
    heads = int(w["heads_shape"][2])

    def forward(m: Any, tokens: Any) -> dict:
        x0 = m.emb[tokens] + m.pos
        x1 = torch.nn.functional.layer_norm(x0, (dim,), m.ln1_g, m.ln1_b, 1e-5)

        def split(t: Any) -> Any:
            return t.reshape(-1, seq, heads, dim // heads).transpose(1, 2)

        q, k, v = split(x1 @ m.wq), split(x1 @ m.wk), split(x1 @ m.wv)
        p = torch.softmax((q @ k.transpose(2, 3)) * m.scale, -1)
        a = (p @ v).transpose(1, 2).reshape(-1, seq, dim) @ m.wo
        r1 = x0 + a
        x2 = torch.nn.functional.layer_norm(r1, (dim,), m.ln2_g, m.ln2_b, 1e-5)
        f1 = x2 @ m.w1 + m.b1
        g = f1 * (torch.erf(f1 / m.sqrt2) + m.one) * m.half
        r2 = r1 + (g @ m.w2 + m.b2)
        return {"logits": r2.mean(1) @ m.wc + m.bc}

    return forward, (np.zeros((2, 16), np.int64),), {0: {0: "N"}}, ("tokens",)


def _batchnorm(w: dict) -> tuple:
    import torch

    def forward(m: Any, x: Any) -> dict:
        return {"y": torch.nn.functional.batch_norm(x, m.mean, m.var, m.scale, m.bias, False, 0.0, 1e-5)}

    return forward, (np.zeros((2, 8, 4, 4), np.float32),), {0: {0: "N"}}, ("x",)


def _softmax_coerced(w: dict) -> tuple:
    import torch

    def forward(m: Any, x: Any) -> dict:
        c = torch.nn.functional.conv2d(x, m.w)
        return {"y": torch.softmax(c.reshape(1, -1), -1).reshape(c.shape)}  # opset-11 Softmax: coerced to 2-D

    return forward, (np.zeros((1, 3, 4, 5), np.float32),), {}, ("x",)


TORCH_BUILDERS: dict[str, Callable[[dict], tuple]] = {
    "matmul_relu": _matmul_relu,
    "dynamic_mlp": _dynamic_mlp,
    "multi_io": _multi_io,
    "int_ops": _int_ops,
    "unknown_dims": _unknown_dims,
    "byte_transformer": _byte_transformer,
    "batchnorm_default_epsilon": _batchnorm,
    "softmax_coerced": _softmax_coerced,
}


def build_torch(name: str, directory: Path | str) -> Path:
    """The ExportedProgram twin of test model `name` as `<directory>/<name>.pt2` (built once); its weights are the
    ONNX model's, built beside it."""
    path = Path(directory) / f"{name}.pt2"
    if not path.exists():
        weights = _weights(build(name, directory))
        forward, args, dynamic, names = TORCH_BUILDERS[name](weights)
        module = _module(forward, weights)
        export_module(module, tuple(_t(a) for a in args), dynamic, path, names)
    return path
