"""Reading the three PyTorch formats into one shape: a callable on flat tensors, and what its inputs and outputs are.

- ExportedProgram (`torch.export.save`): names, dtypes and shapes from the graph's placeholders; a dim is its
  symbol's name ("s0": two inputs sharing s0 must agree, unirt's InputChecker ties them), a fixed size, or None for
  an expression of symbols. Outputs are named by the keys of a dict the model returns, else by the graph's names.
- AOTInductor package: a compiled function that records no shapes or dtypes: inputs `input_<i>` (or the dict keys
  its call spec names) of unknown rank, dtype float32 unless `backend_options={"input_dtypes": {...}}` says otherwise;
  outputs of unknown rank until a run shows them.
- TorchScript: argument names from the `forward` schema, the rest as for AOTInductor.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from unirt import ModelFile, ModelFormat, ModelLoadError, TensorInfo, UnsupportedOptionError
from unirt.plugin_sdk import UnknownRankInfo

__all__ = ["Loaded", "load_model", "numpy_dtype"]


@dataclass
class Loaded:
    call: Callable[..., Any]  # flat input tensors -> the model's (nested) outputs
    flatten: Callable[[Any], list]  # the model's outputs -> flat list in `outputs` order
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    #: inputs the program writes into (an ExportedProgram may mutate a user input): copied before each run
    mutated: frozenset[str] = frozenset()
    #: why fp16/bf16 cannot be applied at run time (an AOTInductor package is compiled at its precision)
    fixed_precision: str | None = None


def numpy_dtype(dtype: Any) -> np.dtype:
    """The numpy dtype of a torch dtype (bfloat16 and float8 through ml_dtypes)."""
    name = str(dtype).removeprefix("torch.")
    aliases = {"bool": "bool", "bfloat16": "bfloat16", "complex64": "complex64", "complex128": "complex128"}
    name = aliases.get(name, name)
    try:
        return np.dtype(name)
    except TypeError:
        try:
            import ml_dtypes

            return np.dtype(getattr(ml_dtypes, name))
        except (ImportError, AttributeError):
            raise ModelLoadError(f"torch dtype {dtype} has no numpy counterpart here (install ml_dtypes)") from None


def _dim(size: Any) -> Any:
    """A placeholder dim: an int, a symbol's name, or None for an expression of symbols (2*s0)."""
    if isinstance(size, int):
        return size
    node = getattr(size, "node", None)
    expr = getattr(node, "expr", None)
    if expr is not None and getattr(expr, "is_Symbol", False):
        return str(expr)
    if expr is not None and getattr(expr, "is_Integer", False):
        return int(expr)
    return None


def _children(spec: Any) -> list:
    """A pytree spec's child specs (`children()` since torch 2.10, the `children_specs` field before)."""
    children = getattr(spec, "children", None)
    return list(children()) if callable(children) else list(spec.children_specs)


def _leaves(spec: Any) -> list[str]:
    """Names for the leaves of a pytree spec: dict keys where there are any (joined by '.'), else positions."""
    names: list[str] = []

    def walk(s: Any, prefix: str) -> None:
        if s.is_leaf():
            names.append(prefix or "output_0")
            return
        keys = s.context if s.type is dict else None
        for k, child in enumerate(_children(s)):
            part = str(keys[k]) if keys else str(k)
            walk(child, f"{prefix}.{part}" if prefix else part)

    walk(spec, "")
    return names


def _tensor_info(name: str, value: Any, what: str) -> TensorInfo:
    import torch

    if not isinstance(value, torch.Tensor):
        raise ModelLoadError(
            f"{what} {name!r} is a {type(value).__name__}, not a tensor: unirt feeds and returns "
            "tensors only (export with the non-tensor values fixed)"
        )
    return TensorInfo(name, tuple(_dim(s) for s in value.shape), numpy_dtype(value.dtype))


def _load_export(model: ModelFile, device: Any) -> Loaded:
    import torch
    from torch.utils import _pytree as pytree

    try:
        ep = torch.export.load(model.path if model.path is not None else _bytes_file(model))
    except Exception as exc:
        raise ModelLoadError(f"{model.name}: torch.export.load failed: {type(exc).__name__}: {exc}") from exc
    if device.type != "cpu":
        from torch.export.passes import move_to_device_pass

        ep = move_to_device_pass(ep, device)
    sig = ep.graph_signature
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    user = [n for n in sig.user_inputs]
    inputs = [_tensor_info(n, placeholders[n].meta.get("val"), "input") for n in user]
    out_node = next(n for n in ep.graph.nodes if n.op == "output")
    values = (
        [a.meta.get("val") if hasattr(a, "meta") else a for a in out_node.args[0]][-len(sig.user_outputs) :]
        if sig.user_outputs
        else []
    )
    out_spec = ep.call_spec.out_spec
    names = (
        _leaves(out_spec)
        if out_spec is not None and not out_spec.is_leaf() and out_spec.type is dict
        else list(sig.user_outputs)
    )
    outputs = [_tensor_info(n, v, "output") for n, v in zip(names, values, strict=True)]
    in_spec = ep.call_spec.in_spec
    module = ep.module()
    positional = in_spec is not None and in_spec.num_leaves == len(user) and _flat_positional(in_spec)
    call: Callable[..., Any]
    if positional:
        call = module
    else:

        def call_flat(*flat: Any) -> Any:
            args, kwargs = pytree.tree_unflatten(list(flat), in_spec)
            return module(*args, **kwargs)

        call = call_flat

    mutated = frozenset(getattr(sig, "user_inputs_to_mutate", {}).values())
    return Loaded(call, pytree.tree_leaves, inputs, outputs, mutated)


def _flat_positional(spec: Any) -> bool:
    """Whether a call spec is (args: tuple of tensors, kwargs: {}): the program is called with the inputs as they
    are, without rebuilding a structure."""
    parts = _children(spec)
    if spec.type is not tuple or len(parts) != 2:
        return False
    args, kwargs = parts
    return all(c.is_leaf() for c in _children(args)) and not _children(kwargs)


def _declared_dtypes(names: Sequence[str], options: Mapping[str, Any], fmt: ModelFormat) -> list[np.dtype]:
    given = options.get("input_dtypes", {})
    if not isinstance(given, Mapping):
        raise UnsupportedOptionError(f"torch: input_dtypes must be a dict {{input: dtype}}, got {given!r}")
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise UnsupportedOptionError(
            f"torch: input_dtypes names unknown input {unknown[0]!r}; this {fmt} model's inputs are: {', '.join(names)}"
        )
    try:
        return [np.dtype(given.get(n, "float32")) for n in names]
    except TypeError as exc:
        raise UnsupportedOptionError(f"torch: input_dtypes: {exc}") from None


def _load_aoti(model: ModelFile, device: Any, options: Mapping[str, Any]) -> Loaded:
    import torch
    from torch.utils import _pytree as pytree

    if model.path is None:
        raise ModelLoadError(
            "an AOTInductor package must be loaded from its .pt2 path (its compiled library is extracted from the file)"
        )
    try:
        index = (device.index or 0) if device.type != "cpu" else -1
        compiled = torch._inductor.aoti_load_package(str(model.path), device_index=index)
        in_spec, out_spec = (pytree.treespec_loads(s) for s in compiled.loader.get_call_spec())
        built_for = compiled.get_metadata().get("AOTI_DEVICE_KEY", "cpu")
    except Exception as exc:
        raise ModelLoadError(
            f"{model.name}: cannot load this AOTInductor package: {type(exc).__name__}: {exc}"
        ) from exc
    if built_for != device.type:
        raise ModelLoadError(
            f"{model.name}: this AOTInductor package was compiled for {built_for}, not "
            f"{device.type}: compile it for {device.type} (aoti_compile_and_package on a program "
            f"exported with {device.type} tensors), or load it with device={built_for!r}"
        )
    names = [f"input_{k}" for k in range(in_spec.num_leaves)]
    dtypes = _declared_dtypes(names, options, ModelFormat.TORCH_AOTI)
    inputs = [UnknownRankInfo(n, (), d) for n, d in zip(names, dtypes, strict=True)]
    outputs = [UnknownRankInfo(n, (), np.float32) for n in _leaves(out_spec)]
    positional = _flat_positional(in_spec)

    def call(*flat: Any) -> Any:
        if positional:
            return compiled(*flat)
        args, kwargs = pytree.tree_unflatten(list(flat), in_spec)
        return compiled(*args, **kwargs)

    return Loaded(
        call,
        pytree.tree_leaves,
        inputs,
        outputs,
        fixed_precision="an AOTInductor package runs at the precision it was compiled at",
    )


def _load_torchscript(model: ModelFile, device: Any, options: Mapping[str, Any]) -> Loaded:
    import torch
    from torch.utils import _pytree as pytree

    try:
        source = str(model.path) if model.path is not None else _bytes_file(model)
        with warnings.catch_warnings():  # torch 2.10+ calls TorchScript deprecated; it still reads it
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(source, map_location=device)
        module.eval()
        schema = module.forward.schema
    except Exception as exc:
        raise ModelLoadError(f"{model.name}: torch.jit.load failed: {type(exc).__name__}: {exc}") from exc
    args = schema.arguments[1:]  # self first
    for a in args:
        if str(a.type) not in ("Tensor", "Optional[Tensor]"):
            raise ModelLoadError(
                f"{model.name}: forward argument {a.name!r} is a {a.type}: unirt feeds tensors "
                "only (script a wrapper whose forward takes tensors)"
            )
    names = [a.name for a in args]
    dtypes = _declared_dtypes(names, options, ModelFormat.TORCHSCRIPT)
    inputs = [UnknownRankInfo(n, (), d) for n, d in zip(names, dtypes, strict=True)]
    returns = schema.returns[0].type if schema.returns else None
    text = str(returns)
    if text == "Tensor":
        outs = ["output_0"]
    elif text.startswith("Tuple[") and all(p.strip() == "Tensor" for p in text[6:-1].split(",")):
        outs = [f"output_{k}" for k in range(len(text[6:-1].split(",")))]
    else:
        raise ModelLoadError(
            f"{model.name}: forward returns {text}; unirt reads TorchScript models that return a "
            "tensor or a tuple of tensors (export with torch.export for other structures)"
        )
    return Loaded(module, pytree.tree_leaves, inputs, [UnknownRankInfo(n, (), np.float32) for n in outs])


def _bytes_file(model: ModelFile) -> Any:
    import io

    return io.BytesIO(model.read_bytes())


def load_model(model: ModelFile, device: Any, options: Mapping[str, Any]) -> Loaded:
    if model.format is ModelFormat.TORCH_EXPORT:
        if "input_dtypes" in options:
            raise UnsupportedOptionError(
                "torch: input_dtypes is for AOTInductor and TorchScript models; an "
                "ExportedProgram records its inputs' dtypes"
            )
        return _load_export(model, device)
    if model.format is ModelFormat.TORCH_AOTI:
        return _load_aoti(model, device, options)
    return _load_torchscript(model, device, options)
