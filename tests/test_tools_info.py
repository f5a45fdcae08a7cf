"""unirt.tools.info on models built here (FLOPs checked against hand-computed counts) and the onnx wheel's."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from unirt import BackendUnavailableError, InputError, UnsupportedOptionError
from unirt.cli import main
from unirt.testing import conformance_cases
from unirt.tools import info
from unirt.tools.flops import NodeShapes, count_flops

rng = np.random.default_rng(0)


def _save(path, nodes, inputs, outputs, inits=(), opset=17):
    graph = h.make_graph(nodes, path.stem, inputs, outputs, [nh.from_array(a, n) for n, a in inits])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)], producer_name="unirt-tests")
    model.ir_version = 10 if opset >= 23 else 9
    onnx.save(model, str(path))
    return path


def _w(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def test_conv_with_and_without_bias_follows_the_seed(tmp_path):
    # Conv 3->16, 3x3, pad 1 on 8x8 (H=W=8, M=16, C=3, K=3), then the same conv without bias.
    path = _save(
        tmp_path / "conv.onnx",
        [
            h.make_node("Conv", ["x", "w", "b"], ["y1"], pads=[1, 1, 1, 1]),
            h.make_node("Conv", ["x", "w"], ["y2"], pads=[1, 1, 1, 1]),
        ],
        [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
        [h.make_tensor_value_info("y1", T.FLOAT, None), h.make_tensor_value_info("y2", T.FLOAT, None)],
        [("w", _w(16, 3, 3, 3)), ("b", _w(16))],
    )
    r = info(path)
    H = W = 8
    M, C, K = 16, 3, 3
    assert r.params == M * C * K * K + M  # weights M*C*K*K + bias M
    with_bias = 2 * H * W * M * C * K * K  # multiplies + adds, with bias
    without_bias = H * W * M * (2 * C * K * K - 1)  # multiplies + adds, without bias
    assert r.flops_by_op == {"Conv": with_bias + without_bias}
    assert r.flops == with_bias + without_bias
    assert "multiplies + adds" in r.flops_convention
    assert [o.resolved for o in r.outputs] == [[1, 16, 8, 8], [1, 16, 8, 8]]


def test_depthwise_grouped_strided_conv_and_pooling(tmp_path):
    path = _save(
        tmp_path / "dw.onnx",
        [
            h.make_node("Conv", ["x", "dw", "db"], ["a"], group=8, pads=[1, 1, 1, 1]),  # depthwise
            h.make_node("Conv", ["a", "gw"], ["b"], group=2, strides=[2, 2]),  # grouped
            h.make_node("MaxPool", ["b"], ["c"], kernel_shape=[2, 2], strides=[1, 1]),
            h.make_node("GlobalAveragePool", ["c"], ["y"]),
        ],
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 8, 10, 10])],
        [h.make_tensor_value_info("y", T.FLOAT, None)],
        [("dw", _w(8, 1, 3, 3)), ("db", _w(8)), ("gw", _w(4, 4, 3, 3))],
    )
    r = info(path, {"x": [2, 8, 10, 10]})
    depthwise = 2 * (10 * 10 * 8 * (2 * 1 * 3 * 3))  # N=2, C/group = 1, with bias
    grouped = 2 * (4 * 4 * 4 * (2 * 4 * 3 * 3 - 1))  # out 4x4 (10-3)/2+1, M=4, C/group=4, no bias
    maxpool = 2 * 4 * 3 * 3 * (2 * 2 - 1)  # 3 comparisons per 2x2 window, out 3x3
    gap = 2 * 4 * (3 * 3)  # 8 adds + 1 divide per output
    assert r.flops_by_op == {"Conv": depthwise + grouped, "MaxPool": maxpool, "GlobalAveragePool": gap}
    assert r.params == 8 * 9 + 8 + 4 * 4 * 9


def test_gemm_matmul_and_elementwise(tmp_path):
    path = _save(
        tmp_path / "fc.onnx",
        [
            h.make_node("Gemm", ["x", "w", "b"], ["a"], transB=1),
            h.make_node("Gemm", ["a", "w2"], ["g"], alpha=0.5),
            h.make_node("Relu", ["g"], ["r"]),
            h.make_node("MatMul", ["r", "m"], ["y0"]),
            h.make_node("Add", ["y0", "y0"], ["y1"]),
            h.make_node("Softmax", ["y1"], ["y"]),
        ],
        [h.make_tensor_value_info("x", T.FLOAT, [4, 32])],
        [h.make_tensor_value_info("y", T.FLOAT, None)],
        [("w", _w(16, 32)), ("b", _w(16)), ("w2", _w(16, 8)), ("m", _w(8, 5))],
    )
    r = info(path)
    gemm = 2 * 4 * 16 * 32 + (4 * 8 * (2 * 16 - 1) + 4 * 8)  # with bias; second: no bias, alpha scaling
    assert r.flops_by_op["Gemm"] == gemm
    assert r.flops_by_op["MatMul"] == 4 * 5 * (2 * 8 - 1)
    assert r.flops_by_op["Relu"] == 4 * 8 and r.flops_by_op["Add"] == 4 * 5
    assert r.flops_by_op["Softmax"] == 3 * 4 * 5
    assert r.params_by_op == {"Gemm": 16 * 32 + 16 + 16 * 8, "MatMul": 8 * 5}
    # Weight memory by dtype and activation memory (elements x bytes)
    assert r.weights_by_dtype == {"float32": {"count": r.params, "bytes": 4 * r.params}}
    intermediates = [4 * 16, 4 * 8, 4 * 8, 4 * 5, 4 * 5, 4 * 5]
    assert r.activation_bytes_total == 4 * sum(intermediates)
    assert r.activation_bytes_peak == 4 * max(
        4 * 32 + 4 * 16, 4 * 16 + 4 * 8, 4 * 8 + 4 * 8, 4 * 8 + 4 * 5, 4 * 5 + 4 * 5, 4 * 5 + 4 * 5
    )


def test_attention_and_normalization(tmp_path):
    B, H, S, L, D = 2, 4, 6, 6, 8
    path = _save(
        tmp_path / "attn.onnx",
        [
            h.make_node("Attention", ["q", "k", "v"], ["a"]),
            h.make_node("LayerNormalization", ["a", "scale", "bias"], ["y"], axis=-1),
        ],
        [h.make_tensor_value_info(n, T.FLOAT, [B, H, S, D]) for n in "qkv"],
        [h.make_tensor_value_info("y", T.FLOAT, None)],
        [("scale", _w(D)), ("bias", _w(D))],
        opset=23,
    )
    r = info(path)
    scores = B * H * S * L
    attention = scores * (2 * D - 1) + scores + 3 * scores + B * H * S * D * (2 * L - 1)
    assert r.flops_by_op["Attention"] == attention
    assert r.flops_by_op["LayerNormalization"] == B * H * S * D * 7


def test_unknown_ops_are_reported_not_guessed(tmp_path):
    path = _save(
        tmp_path / "custom.onnx",
        [h.make_node("TopK", ["x", "k"], ["v", "i"]), h.make_node("Relu", ["v"], ["y"])],
        [h.make_tensor_value_info("x", T.FLOAT, [3, 10])],
        [h.make_tensor_value_info("y", T.FLOAT, None), h.make_tensor_value_info("i", T.INT64, None)],
        [("k", np.array([4], np.int64))],
    )
    r = info(path)
    assert r.flops_not_counted == {"TopK": 1}
    assert r.flops == r.flops_by_op["Relu"] == 3 * 4
    assert any("lower bound" in n for n in r.notes)


def test_constant_node_weights_are_parameters_not_activations(tmp_path):
    w, b = _w(8, 3, 3, 3), _w(8)
    path = _save(
        tmp_path / "const.onnx",
        [
            h.make_node("Constant", [], ["w"], value=nh.from_array(w)),
            h.make_node("Constant", [], ["b"], value_floats=b.tolist()),
            h.make_node("Constant", [], ["unused"], value_ints=[1, 2, 3]),
            h.make_node("Conv", ["x", "w", "b"], ["y"]),
        ],
        [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
        [h.make_tensor_value_info("y", T.FLOAT, [1, 8, 6, 6])],
    )
    r = info(path)
    assert r.params == 216 + 8 + 3 and r.params_by_op == {"Conv": 224, "Constant": 3}
    assert r.weights_by_dtype == {"float32": {"count": 224, "bytes": 896}, "int64": {"count": 3, "bytes": 24}}
    assert r.weight_bytes == 920
    assert r.activation_bytes_total == 8 * 6 * 6 * 4  # y only: the constants are weights
    assert r.activation_bytes_peak == 3 * 8 * 8 * 4 + 8 * 6 * 6 * 4  # x and y
    # The same weights as initializers count the same.
    folded = _save(
        tmp_path / "folded.onnx",
        [h.make_node("Conv", ["x", "w", "b"], ["y"])],
        [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
        [h.make_tensor_value_info("y", T.FLOAT, [1, 8, 6, 6])],
        [("w", w), ("b", b)],
    )
    f = info(folded)
    assert (f.params, f.weight_bytes, f.activation_bytes_total) == (224, 896, r.activation_bytes_total)


@pytest.mark.parametrize("case", conformance_cases(("light", "pytorch-converted")), ids=lambda c: c.name)
def test_params_equal_the_sum_of_initializer_and_constant_sizes(case):
    model = onnx.load(str(case.model))
    weights = [nh.to_array(t) for t in model.graph.initializer] + [
        nh.to_array(n.attribute[0].t) for n in model.graph.node if n.op_type == "Constant"
    ]  # all as `value` here
    expected = sum(a.size for a in weights)
    shapes = {
        vi.name: list(a.shape)
        for vi, a in zip(
            [vi for vi in model.graph.input if vi.name not in {t.name for t in model.graph.initializer}], case.inputs
        )
    }
    r = info(case.model, shapes)
    assert r.params == expected
    assert sum(r.params_by_op.values()) == expected
    assert r.weight_bytes == sum(a.nbytes for a in weights)
    assert r.flops is not None and r.flops >= 0
    assert r.activation_bytes_peak is not None and r.activation_bytes_peak <= r.activation_bytes_total + sum(
        a.nbytes for a in case.inputs
    )


def test_light_convnets_have_their_conv_flops_counted():
    root = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
    r = info(os.path.join(root, "light_resnet50.onnx"))
    # ResNet-50 at 224x224 is ~4.1 G multiply-accumulates: ~8.2 GFLOPs in multiplies + adds.
    assert 7.5e9 < r.flops_by_op["Conv"] < 8.5e9
    assert r.flops_not_counted == {}
    assert len(glob.glob(os.path.join(root, "*.onnx"))) >= 5


def test_dynamic_dims_need_shapes_and_shapes_must_fit(model):
    path = model("dynamic_mlp")
    with pytest.raises(InputError, match=r"'x' dim 0 \('N'\) is dynamic.*--shapes x:1x8"):
        info(path)
    with pytest.raises(InputError, match="contradicts the model at dim 1"):
        info(path, "x:2x9")
    with pytest.raises(InputError, match="unknown input 'y'"):
        info(path, "x:2x8,y:1")
    with pytest.raises(UnsupportedOptionError, match="malformed shape"):
        info(path, "x:2by8")
    r = info(path, "x:5x8")
    assert r.inputs[0].resolved == [5, 8] and r.outputs[0].resolved == [5, 3]
    assert r.flops_by_op["Gemm"] == 2 * 5 * 3 * 8


def test_shapes_that_contradict_the_graph_are_input_errors(tmp_path):
    # The reshape target fixes the batch to 2: asking for 3 contradicts the model.
    path = _save(
        tmp_path / "reshape.onnx",
        [h.make_node("Reshape", ["x", "s"], ["y"]), h.make_node("Add", ["y", "c"], ["z"])],
        [h.make_tensor_value_info("x", T.FLOAT, ["N", 8])],
        [h.make_tensor_value_info("z", T.FLOAT, None)],
        [("s", np.array([-1, 8], np.int64)), ("c", _w(2, 8))],
    )
    info(path, "x:2x8")
    with pytest.raises(InputError, match="contradict the model"):
        info(path, "x:3x8")


def test_cli_text_and_json(model, capsys):
    assert main(["info", str(model("dynamic_mlp")), "--shapes", "x:4x8"]) == 0
    out = capsys.readouterr().out
    assert "FLOPs:" in out and "multiplies + adds" in out and "parameters:  27" in out and "Gemm" in out
    assert main(["info", str(model("dynamic_mlp")), "--shapes", "x:4x8", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["params"] == 8 * 3 + 3 and data["flops_by_op"]["Gemm"] == 2 * 4 * 3 * 8
    assert data["weights_by_dtype"]["float32"]["bytes"] == 4 * 27


def test_non_onnx_formats_need_a_backend_that_reads_them(tmp_path):
    from formats_samples import tensorrt_bytes  # test helper shared with the formats tests

    path = tmp_path / "m.engine"  # the TensorRT plugin is installed but cannot run without a GPU
    path.write_bytes(tensorrt_bytes())
    with pytest.raises(BackendUnavailableError, match="for this tensorrt model unirt shows its inputs and outputs"):
        info(path)


def test_non_onnx_formats_show_io_through_a_backend(tmp_path):
    pytest.importorskip("ai_edge_litert")
    from unirt.testing.tflite import dynamic_mlp as tflite_mlp

    result = info(tflite_mlp(tmp_path / "mlp.tflite"))
    assert result.format == "tflite"
    assert [i.name for i in result.inputs] and [o.name for o in result.outputs]
    assert any("inputs and outputs that backend" in n for n in result.notes)


@pytest.mark.parametrize(
    "node,expected",
    [
        # ConvTranspose 4->2 channels, 3x3 kernel, 5x5 input -> 7x7 output, with bias: 2*MACs
        (
            NodeShapes(
                "ConvTranspose",
                inputs=[(1, 4, 5, 5), (4, 2, 3, 3), (2,)],
                outputs=[(1, 2, 7, 7)],
                present=[True, True, True],
            ),
            2 * (4 * 5 * 5) * (2 * 3 * 3),
        ),
        # Batched MatMul [2,3,4,5] @ [2,3,5,6]: 2K-1 per output
        (
            NodeShapes("MatMul", inputs=[(2, 3, 4, 5), (2, 3, 5, 6)], outputs=[(2, 3, 4, 6)], present=[True, True]),
            2 * 3 * 4 * 6 * (2 * 5 - 1),
        ),
        # Einsum as a matmul: same count as MatMul
        (
            NodeShapes(
                "Einsum",
                attrs={"equation": "ij,jk->ik"},
                inputs=[(4, 5), (5, 6)],
                outputs=[(4, 6)],
                present=[True, True],
            ),
            4 * 6 * (2 * 5 - 1),
        ),
        # Bilinear 2x upsampling of H and W: 4 taps -> 7 FLOPs per output
        (
            NodeShapes(
                "Resize", attrs={"mode": "linear"}, inputs=[(1, 3, 4, 4)], outputs=[(1, 3, 8, 8)], present=[True]
            ),
            3 * 64 * 7,
        ),
        (
            NodeShapes(
                "Resize", attrs={"mode": "nearest"}, inputs=[(1, 3, 4, 4)], outputs=[(1, 3, 8, 8)], present=[True]
            ),
            0,
        ),
        # ONNX Attention with 3-D inputs and 4 query heads / 2 kv heads (grouped-query)
        (
            NodeShapes(
                "Attention",
                attrs={"q_num_heads": 4, "kv_num_heads": 2},
                inputs=[(2, 5, 32), (2, 7, 16), (2, 7, 16)],
                outputs=[(2, 5, 32)],
                present=[True] * 3,
            ),
            2 * 4 * 5 * 7 * (2 * 8 - 1) + 4 * (2 * 4 * 5 * 7) + 2 * 4 * 5 * 8 * (2 * 7 - 1),
        ),
        # ONNX Runtime's MultiHeadAttention, 2 heads
        (
            NodeShapes(
                "MultiHeadAttention",
                domain="com.microsoft",
                attrs={"num_heads": 2},
                inputs=[(1, 3, 8), (1, 4, 8), (1, 4, 8)],
                outputs=[(1, 3, 8)],
                present=[True] * 3,
            ),
            2 * 3 * 4 * (2 * 4 - 1) + 4 * (2 * 3 * 4) + 2 * 3 * 4 * (2 * 4 - 1),
        ),
        (
            NodeShapes(
                "BatchNormalization", inputs=[(2, 4, 3, 3)] + [(4,)] * 4, outputs=[(2, 4, 3, 3)], present=[True] * 5
            ),
            2 * 72,
        ),
        (NodeShapes("Sum", inputs=[(3,), (3,), (3,)], outputs=[(3,)], present=[True] * 3), 2 * 3),
        (NodeShapes("Transpose", inputs=[(3, 4)], outputs=[(4, 3)], present=[True]), 0),
        (NodeShapes("Conv", inputs=[(1, 3, 8, 8), None], outputs=[(1, 4, 8, 8)], present=[True, True]), None),
        (NodeShapes("NoSuchOp", domain="my.domain", inputs=[(3,)], outputs=[(3,)], present=[True]), None),
    ],
)
def test_flop_rules_by_hand(node, expected):
    assert count_flops(node) == expected
