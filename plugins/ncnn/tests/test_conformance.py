"""ncnn against unirt's conformance suite (unirt.testing.conformance), at fp32: every ONNX model is converted by pnnx
on load (verified against ONNX Runtime, cached in this run's private cache dir); ONNX Runtime is the reference.

Each wheel case is a conversion in a child process (0.3-2 s; the 60-140M-parameter light nets 13-30 s), so this
runs `REPRESENTATIVE_WHEEL_CASES` (one or two cases per kind of model) rather than all 155; the support matrix
(scripts/support_matrix.py, docs/support-matrix.md) runs every case. A refusal here is a ConversionError (or a
ModelLoadError) at load with the reason below: ncnn cannot hold the model, pnnx cannot lower it, or unirt's
verification measured a wrong conversion and refused it."""

from __future__ import annotations

from unirt.testing.conformance import REPRESENTATIVE_WHEEL_CASES, BackendConformance

_NOT_FLOAT = "(ncnn takes float32 inputs only)"  # ncnn's Mats hold float32: integer/bool inputs are refused
_STRINGS = "unirt cannot make random inputs to verify a conversion of it"  # string tensors: nothing to convert
# pnnx writes an AveragePool with asymmetric pads (0,0,1,1; count_include_pad=0) as an op ncnn has no layer for
_AVGPOOL = "pnnx left operators that ncnn 1.0.20261020 has no layer for: AveragePool"


class TestNcnnConformance(BackendConformance):
    backend = "ncnn"
    wheel_subset = REPRESENTATIVE_WHEEL_CASES
    refuses = {
        "multi_io": "input 'idx' is int64 (ncnn takes float32 inputs only); input 'scale' is a scalar (pnnx cannot "
        "take rank-0 inputs)",
        "int_ops": "input 'a' is int32 " + _NOT_FLOAT,
        "strings": _STRINGS,
        "byte_transformer": "input 'tokens' is int64 " + _NOT_FLOAT,
        "light_inception_v1": _AVGPOOL,
        "light_inception_v1_random": _AVGPOOL,
        # Expand's input is a shape: random (and zero) inputs are invalid for it, so nothing can verify a conversion
        "simple/test_expand_shape_model1": "the source model fails on random inputs",
        "simple/test_sequence_model1": "pnnx failed (killed by signal 11)",  # pnnx crashes on SequenceConstruct
        "simple/test_sequence_model5": "has no layer for: pnnx.Expression (line 6), ConcatFromSequence (line 7)",
        # pnnx writes Shrink without its bias/lambd (1.5): ncnn's Shrink then passes x through unchanged (worst on a
        # set where the reference is all zeros: judged on absolute error)
        "simple/test_shrink": "the ncnn conversion disagrees with onnxruntime beyond the fp32 tolerance 0.001: "
        "y: error 969 (near-zero output",
        "simple/test_strnorm_model_nostopwords_nochangecase": _STRINGS,
        "pytorch-converted/test_Embedding": "input '0' is int64 " + _NOT_FLOAT,
        # ncnn's Pooling has no dilation (this one dilates by 10)
        "pytorch-converted/test_MaxPool2d_stride_padding_dilation": "has no layer for: F.max_pool2d",
        "pytorch-converted/test_Softmin": "has no layer for: F.softmin",
        "pytorch-operator/test_operator_permute2": "input '0' has rank 6; ncnn holds at most 4 dims per sample",
        "pytorch-operator/test_operator_repeat": "has no layer for: torch.tile",  # ONNX Tile
    }
    # unknown_dims (dynamic H and W) used to fail here, converted at a 224x224 guess: it converts at the first
    # run's shapes now, keeping H and W dynamic (pnnx's inputshape2)
    known_failures: dict[str, str] = {}
