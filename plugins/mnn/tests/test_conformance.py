"""MNN against unirt's conformance suite (unirt.testing.conformance), at fp32: every ONNX model is converted by MNN's
own converter on load (verified against ONNX Runtime, cached in this run's private cache dir); ONNX Runtime is the
reference.

Each wheel case is a conversion in a child process (0.2-1 s; the 60-140M-parameter light nets 5-16 s), so this
runs `REPRESENTATIVE_WHEEL_CASES` (one or two cases per kind of model) rather than all 155; the support matrix
(scripts/support_matrix.py, docs/support-matrix.md) runs every case. A refusal here is a ConversionError at load
with the reason below, mostly unirt's verification measuring a wrong conversion by MNN's converter."""

from __future__ import annotations

from unirt.testing.conformance import REPRESENTATIVE_WHEEL_CASES, BackendConformance

_STRINGS = "unirt cannot make random inputs to verify a conversion of it"  # string tensors: nothing to convert
_WRONG = "the mnn conversion disagrees with onnxruntime beyond the fp32 tolerance 0.001: "


class TestMnnConformance(BackendConformance):
    backend = "mnn"
    wheel_subset = REPRESENTATIVE_WHEEL_CASES
    refuses = {
        "strings": _STRINGS,
        "simple/test_strnorm_model_nostopwords_nochangecase": _STRINGS,
        # Expand's input is a shape: random (and zero) inputs are invalid for it, so nothing can verify a conversion
        "simple/test_expand_shape_model1": "the source model fails on random inputs",
        # MNN aborts ("double free or corruption") running its conversion of SplitToSequence/ConcatFromSequence
        "simple/test_sequence_model5": "mnn: the process crashed (signal 6) while running the converted model",
        # MNN's Shrink (bias = lambd = 1.5) answers otherwise; worst on a set where the reference is all zeros
        "simple/test_shrink": _WRONG + "y: error 748 (near-zero output",
        # MNN's converter ignores the `value` attribute of opset < 11 Pad and pads with 0 (ONNX: 2.0); opset 11+ is
        # right
        "pytorch-converted/test_ConstantPad2d": _WRONG + "1: rel-L2 0.971",
        # MNN's converter drops MaxPool's dilations (10): a [1, 1, 97, 97] output where ONNX gives [1, 1, 43, 25]
        "pytorch-converted/test_MaxPool2d_stride_padding_dilation": _WRONG
        + "Y: rel-L2 inf, max abs inf (shape [1, 1, 97, 97] != reference [1, 1, 43, 25])",
        "pytorch-converted/test_MaxPool3d": _WRONG + "1: rel-L2 0.571",  # MNN's 3-D max pooling (kernel 2, stride 2)
    }
