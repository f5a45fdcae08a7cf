"""Shape strings, dynamic-dim resolution and the tools' missing-dependency errors."""

from __future__ import annotations

import sys

import pytest

from unirt import InputError, TensorInfo, UnsupportedOptionError
from unirt.cli import main
from unirt.tools import MissingDependencyError, optimize, parse_shapes, resolve_shapes

X = TensorInfo("x", ("N", 3, "H", "W"), "float32")
MASK = TensorInfo("mask", ("N", 77), "int64")
SCALE = TensorInfo("scale", (), "float32")


def test_parse_trtexec_style():
    assert parse_shapes("x:1x3x224x224,mask:1x77") == {"x": (1, 3, 224, 224), "mask": (1, 77)}
    assert parse_shapes(["input:0:2x3", "y=4"]) == {"input:0": (2, 3), "y": (4,)}  # TF names keep their colon
    assert parse_shapes("scale:") == {"scale": ()}
    assert parse_shapes(None) == {} and parse_shapes("") == {}


@pytest.mark.parametrize("bad", ["x", "x:1x", "x:axb", ":1x2", "x:1,x:2", "x:-1x3", "x:1.5"])
def test_malformed_shapes_name_the_problem(bad):
    with pytest.raises(UnsupportedOptionError, match="shape"):
        parse_shapes(bad)


def test_resolve_shared_symbols_batch_and_defaults():
    shapes = resolve_shapes([X, MASK, SCALE], {"x": (2, 3, 32, 48)})
    assert shapes == {"x": (2, 3, 32, 48), "mask": (2, 77), "scale": ()}  # N shared with mask
    assert resolve_shapes([X, MASK], {"x": (2, 3, 8, 8)}, batch=5)["mask"] == (5, 77)
    assert resolve_shapes([X], dynamic_default=1) == {"x": (1, 3, 1, 1)}


def test_resolve_errors_name_the_dim_and_the_input():
    with pytest.raises(InputError, match=r"'x' dim 0 \('N'\) is dynamic"):
        resolve_shapes([X])
    with pytest.raises(InputError, match="dim 'N' is 2 in one input and 3 in 'mask'"):
        resolve_shapes([X, MASK], {"x": (2, 3, 8, 8), "mask": (3, 77)})
    with pytest.raises(InputError, match="rank 3"):
        resolve_shapes([X], {"x": (1, 3, 8)})
    with pytest.raises(InputError, match="dim 1: the model fixes it to 3"):
        resolve_shapes([X], {"x": (1, 4, 8, 8)})
    with pytest.raises(InputError, match="unknown input 'y'"):
        resolve_shapes([X], {"y": (1,)})
    with pytest.raises(InputError, match="batch 2 contradicts input 'b'"):
        resolve_shapes([TensorInfo("b", (1, 4), "float32")], batch=2)


def test_unknown_rank_takes_any_rank_given_and_is_named_when_missing(tmp_path, capsys):
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    from unirt.tools import info
    from unirt.tools import onnx_model as om

    graph = h.make_graph(
        [h.make_node("Relu", ["x"], ["y"]), h.make_node("Add", ["y", "b"], ["z"])],
        "ur",
        [
            h.make_tensor_value_info("x", T.FLOAT, None),  # no shape: rank unknown
            h.make_tensor_value_info("b", T.FLOAT, []),
        ],  # a real scalar
        [h.make_tensor_value_info("z", T.FLOAT, None)],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 9
    path = tmp_path / "unknown_rank.onnx"
    onnx.save(model, str(path))
    x, b = om.graph_inputs(model)
    assert x.shape is None and x.rank is None and x.shape_str() == "[unknown rank]"
    assert b.shape == () and b.rank == 0
    assert resolve_shapes([x, b], {"x": (2, 3)}) == {"x": (2, 3), "b": ()}
    assert resolve_shapes([x], {"x": (4, 1, 5)}, batch=8) == {"x": (4, 1, 5)}  # the shape given stands whole
    with pytest.raises(
        InputError,
        match=r"input 'x' \(float32\) has no shape in the model, so its rank is unknown; "
        r"give its whole shape, e.g. --shapes x:2x3",
    ):
        resolve_shapes([x, b], {}, dynamic_default=1)
    with pytest.raises(InputError, match=r"rank 1; the model's 'b' is float32\[\] \(rank 0\)"):
        resolve_shapes([x, b], {"x": (2,), "b": (2,)})
    r = info(path, "x:2x3")
    assert r.inputs[0].shape is None and r.inputs[0].resolved == [2, 3] and r.outputs[0].resolved == [2, 3]
    assert r.flops == 12 and r.activation_bytes_total == 2 * 24  # Relu and Add, 6 elements each
    assert main(["info", str(path), "--shapes", "x:2x3"]) == 0
    assert "x  float32[unknown rank] -> 2x3" in capsys.readouterr().out
    assert main(["info", str(path)]) == 2
    assert "its rank is unknown" in capsys.readouterr().err


def test_missing_optional_dependency_names_the_extra(monkeypatch, model, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "onnxslim", None)  # what an environment without onnxslim looks like
    with pytest.raises(MissingDependencyError, match=r"needs the package 'onnxslim'.*pip install '\.\[tools\]'"):
        optimize(model("dynamic_mlp"), tmp_path / "o.onnx")
    assert main(["optimize", str(model("dynamic_mlp")), "-o", str(tmp_path / "o.onnx")]) == 2
    assert ".[tools]" in capsys.readouterr().err
