"""What to build for a precision on a TensorRT version: network creation flags, builder flags, and the ONNX
transform to apply first. Pure logic (no tensorrt import), so every version's decision is tested without it.

TensorRT 10 keeps the weakly typed path: the network is created with no flag and reduced precision comes from
BuilderFlag FP16/BF16/INT8. TensorRT 11 removed those flags (and `Builder.platform_has_fast_fp16`): every network
is strongly typed, so each tensor has the type the ONNX model gives it. fp16 then means converting the ONNX model
to fp16 first (verified against the fp32 model and cached, `unirt.conversion.mixed_precision`), and int8 means a
model that already has QuantizeLinear/DequantizeLinear nodes (`unirt quantize` makes one).
"""

from __future__ import annotations

from dataclasses import dataclass

from unirt import UnsupportedOptionError

#: The TensorRT major versions whose Python API the plugin is written against (checked call by call: docs/tensorrt.md).
SUPPORTED_MAJORS = (10, 11)
#: The first major version without weak typing (BuilderFlag FP16/BF16/INT8, platform_has_fast_fp16).
STRONGLY_TYPED_ONLY = 11


@dataclass(frozen=True)
class BuildPlan:
    """How one engine is built."""

    #: NetworkDefinitionCreationFlag member names for create_network (empty: create_network(0)).
    network_flags: tuple[str, ...]
    #: BuilderFlag member names to set and to clear on the builder config.
    set_flags: frozenset[str]
    clear_flags: frozenset[str]
    #: None: parse the ONNX model as it is; "fp16": parse its fp16 conversion (inputs and outputs stay as they are).
    onnx_transform: str | None = None

    @property
    def strongly_typed(self) -> bool:
        return "STRONGLY_TYPED" in self.network_flags

    def cache_fields(self) -> dict[str, object]:
        """What the plan adds to the engine cache key."""
        return {
            "network_flags": list(self.network_flags),
            "set": sorted(self.set_flags),
            "clear": sorted(self.clear_flags),
            "onnx_transform": self.onnx_transform,
        }


def parse_version(version: str) -> tuple[int, int]:
    """ "11.4.0.106" -> (11, 4); (0, 0) for a version that does not start with numbers."""
    parts = version.split(".")
    nums = []
    for p in parts[:2]:
        digits = "".join(ch for ch in p if ch.isdigit()) if p[:1].isdigit() else ""
        nums.append(int(digits) if digits else 0)
    while len(nums) < 2:
        nums.append(0)
    return nums[0], nums[1]


def major_minor(version: str) -> str:
    """ "11.4.0.106" -> "11.4": engines are not portable across TensorRT minor versions."""
    major, minor = parse_version(version)
    return f"{major}.{minor}"


def version_problem(version: str) -> str | None:
    """Why this tensorrt version cannot serve the plugin, or None."""
    major, _ = parse_version(version)
    if major in SUPPORTED_MAJORS:
        return None
    lo, hi = SUPPORTED_MAJORS[0], SUPPORTED_MAJORS[-1]
    return (
        f"tensorrt {version} is installed; unirt's TensorRT backend uses the TensorRT {lo}.x and {hi}.x APIs: "
        f"pip install 'tensorrt>={lo},<{hi + 1}'"
    )


def _sm_major(compute_capability: str) -> int:
    head = compute_capability.split(".")[0]
    return int(head) if head.isdigit() else 0


def build_plan(
    trt_version: str, precision: str, model_has_qdq: bool, compute_capability: str = "", fast_fp16: bool | None = None
) -> BuildPlan:
    """The BuildPlan for `precision` on TensorRT `trt_version` ("10.16.1.11", "11.4.0.106") and a GPU of
    `compute_capability` ("8.9"; "" when not known yet). `fast_fp16`: `Builder.platform_has_fast_fp16` on
    TensorRT 10 (None: not asked). UnsupportedOptionError, saying what is supported, when it cannot be built.

    fp32 clears TF32 on both (TensorRT enables it by default on Ampere and later): fp32 must mean fp32.
    """
    problem = version_problem(trt_version)
    if problem is not None:
        raise UnsupportedOptionError(f"tensorrt: {problem}")
    major, _ = parse_version(trt_version)
    if major >= STRONGLY_TYPED_ONLY:
        return _strongly_typed_plan(trt_version, precision, model_has_qdq)
    return _weakly_typed_plan(precision, model_has_qdq, compute_capability, fast_fp16)


def _weakly_typed_plan(precision: str, quantized: bool, compute_capability: str, fast_fp16: bool | None) -> BuildPlan:
    """TensorRT 10: create_network(0) (explicit batch is the only mode) and the precision's BuilderFlag."""
    major = _sm_major(compute_capability)
    has_fp16 = fast_fp16 is not False
    supported = (
        ["fp32"]
        + (["fp16"] if has_fp16 else [])
        + (["bf16"] if major >= 8 or not compute_capability else [])
        + ["int8 (quantized models)"]
    )
    flag = {"fp32": None, "fp16": "FP16", "bf16": "BF16", "int8": "INT8"}
    if precision not in flag:
        raise UnsupportedOptionError(f"tensorrt: unknown precision {precision!r}; it supports {', '.join(supported)}")
    if precision == "fp16" and not has_fp16:
        raise UnsupportedOptionError(
            f"tensorrt: this GPU (sm {compute_capability}) has no fast fp16; it supports {', '.join(supported)}"
        )
    if precision == "bf16" and compute_capability and major < 8:
        raise UnsupportedOptionError(
            f"tensorrt: bf16 needs an Ampere or later GPU (sm 8.0+), this one is sm "
            f"{compute_capability}; it supports {', '.join(supported)}"
        )
    if precision == "int8" and not quantized:
        raise UnsupportedOptionError(
            "tensorrt runs int8 from a quantized (QDQ) ONNX model; this one has no "
            "QuantizeLinear/DequantizeLinear (make one with `unirt quantize --int8 "
            "--calibration ...`). It supports fp32, fp16, bf16 for it"
        )
    # A QDQ model runs as it is whatever was asked (it cannot be un-quantized): its Q/DQ layers need INT8 at fp32 too.
    wanted = "INT8" if quantized and precision == "fp32" else flag[precision]
    return BuildPlan((), frozenset({wanted} if wanted else ()), frozenset({"TF32"}))


#: Why bf16 is refused on TensorRT 11 (no well-kept ONNX bf16 converter that unirt can verify).
BF16_ON_11 = (
    "tensorrt {version}: bf16 needs the ONNX model converted to bf16 before the build (TensorRT 11 has no "
    "BF16 builder flag), and unirt has no verified bf16 converter: ONNX Runtime's float16 tool (as "
    "onnxconverter-common's) converts to fp16 only, and ONNX Runtime's CPU provider, which verifies "
    "every conversion, lacks bf16 kernels for most ops. Convert the model yourself (e.g. NVIDIA ModelOpt: "
    "python -m modelopt.onnx.autocast --onnx_path model.onnx --low_precision_type bf16 --keep_io_types) "
    "and load the result at precision='fp32': a "
    "strongly typed network runs each tensor in the type the model gives it. It supports fp32, fp16 and "
    "int8 (quantized models)"
)


def _strongly_typed_plan(trt_version: str, precision: str, quantized: bool) -> BuildPlan:
    """TensorRT 11: a strongly typed network (STRONGLY_TYPED: the only mode, named explicitly), no precision flag."""
    network = ("STRONGLY_TYPED",)
    clear = frozenset({"TF32"})  # still a BuilderFlag in 11: it governs the layers the model keeps in fp32
    if precision == "fp32":
        return BuildPlan(network, frozenset(), clear)
    if precision == "fp16":
        return BuildPlan(network, frozenset(), clear, onnx_transform="fp16")
    if precision == "bf16":
        raise UnsupportedOptionError(BF16_ON_11.format(version=trt_version))
    if precision == "int8":
        if not quantized:
            raise UnsupportedOptionError(
                f"tensorrt {trt_version} builds int8 only from a quantized ONNX model (QuantizeLinear/"
                "DequantizeLinear nodes: TensorRT 11 removed the INT8 builder flag and calibrators); this one has "
                "none. Quantize it first: unirt quantize model.onnx -o model_int8.onnx --int8 --calibration "
                "samples.npz, then load model_int8.onnx with precision='int8'. It supports fp32 and fp16 for this "
                "model"
            )
        return BuildPlan(network, frozenset(), clear)
    raise UnsupportedOptionError(
        f"tensorrt: unknown precision {precision!r}; it supports fp32, fp16, int8 (quantized models)"
    )


def precision_info(
    plan: BuildPlan, precision: str, compute_capability: str, gpu: str, converter: str | None = None
) -> str:
    """What Session.precision_info says for an engine built with `plan` (`converter`: how the ONNX model was
    converted, for onnx_transform)."""
    where = f"{gpu}, sm {compute_capability}"
    if plan.strongly_typed:
        if precision == "fp16":
            return (
                f"fp16 (the ONNX model converted to fp16 by {converter or 'its converter'}, verified against "
                f"the fp32 model; TensorRT strongly typed network, TF32 cleared; {where})"
            )
        if precision == "int8":
            return f"int8 (the model's Q/DQ nodes in a TensorRT strongly typed network; {where})"
        return f"fp32 (TensorRT strongly typed network: each tensor as the model types it, TF32 cleared; {where})"
    if precision == "fp32":
        return f"fp32 (TensorRT BuilderFlag TF32 cleared; {where})"
    if precision == "int8":
        return f"int8 (TensorRT BuilderFlag INT8 on a QDQ model: the quantized layers; {where})"
    why = "Builder.platform_has_fast_fp16" if precision == "fp16" else "bf16 tensor cores (sm 8.0+)"
    return (
        f"{precision} (TensorRT BuilderFlag {precision.upper()}, TF32 cleared; {where}, {why}: TensorRT uses "
        f"{precision} kernels per layer where they are faster, fp32 elsewhere)"
    )
