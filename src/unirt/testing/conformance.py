"""The conformance suite every backend plugin runs against itself, a third party's too.

    # plugins/myengine/tests/test_conformance.py
    from unirt.testing.conformance import BackendConformance

    class TestMyEngineConformance(BackendConformance):
        backend = "myengine"

pytest collects the inherited tests: I/O metadata, dtypes, batch 1 and N, dynamic dims, scalar inputs, several
inputs and outputs, int and bool tensors, outputs that survive the next run, writing into caller memory,
concurrent runs, the error paths, honest precision, and outputs against ONNX Runtime as the reference within the
per-precision tolerances below — on the models `unirt.testing.models` builds, on the models inside the onnx wheel,
and on random-weight copies of the wheel's light models.

A backend that reads another format overrides `model_file` to give the same model in its format (the TFLite
plugin builds twins with `unirt.testing.tflite`); ONNX Runtime on the ONNX model stays the reference. A backend
that converts ONNX on load (`Backend.converts_from`: ncnn, MNN) gets the ONNX models and converts each one.
Models the backend refuses on purpose are listed in `refuses` with a piece of the reason; a refusal is a clear
unirt error at load: `ModelLoadError`, and `ConversionError` where the backend converts the model (the converter's
own message, or the measured error of a conversion its verification rejected) — `refusal_errors` says which. Models
it is known to answer wrongly or fail on are listed in `known_failures` with why, and run as strict xfails (built
models too: every test that loads one). Anything else it refuses, or answers wrongly, fails. Every case is a
conversion in a child process on a converting backend, so such a backend may run `wheel_subset` (e.g.
`REPRESENTATIVE_WHEEL_CASES`) instead of all of the onnx wheel's cases. `check_case` is also what
`scripts/support_matrix.py` uses to write the support matrix (every case, every backend).

Tolerances (`TOLERANCES`), both must hold for float outputs; int and bool outputs must be equal:
| precision | relative L2 error | max abs error / max abs reference |
|---|---|---|
| fp32 | 1e-4 | 1e-4 |
| fp16 | 1e-2 | 5e-2 |
| bf16 | 1e-1 | 2e-1 |
| int8 | 1e-1 | 2e-1 |
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from ..errors import ConversionError, ModelLoadError, UnsupportedOptionError
from ..formats import ModelFormat
from .cases import ConformanceCase, conformance_cases
from .models import MODEL_BUILDERS, build
from .random_weights import random_weight_cases
from .threads import run_concurrently

__all__ = [
    "BackendConformance",
    "Tolerance",
    "TOLERANCES",
    "Outcome",
    "check_case",
    "check_built",
    "compare",
    "sample_feeds",
    "wheel_cases",
    "random_cases",
    "refusal_errors",
    "reads_onnx",
    "ill_conditioned",
    "reference_outputs",
    "BUILT_MODELS",
    "REPRESENTATIVE_WHEEL_CASES",
]


@dataclass(frozen=True)
class Tolerance:
    """Float outputs pass when rel-L2 <= rel_l2 and max|actual - expected| <= max_rel * max|expected| + atol."""

    rel_l2: float
    max_rel: float
    atol: float = 1e-6


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(1e-4, 1e-4),
    "fp16": Tolerance(1e-2, 5e-2),
    "bf16": Tolerance(1e-1, 2e-1),
    "int8": Tolerance(1e-1, 2e-1),
}

BUILT_MODELS: tuple[str, ...] = tuple(MODEL_BUILDERS)

#: One or two of the onnx wheel's cases per kind of model, for backends whose every case is a conversion (a child
#: process, 0.3-30 s each): two light CNNs (the three 60-140M-parameter fully connected nets, 13-30 s each to
#: convert and verify, add nothing the random-weight CNNs do not cover), elementwise ops and activations, softmax
#: variants, 1-D/2-D/3-D convolutions (static batch 2), transposed and depthwise ones, pooling, padding,
#: reductions, reshapes and permutes, tiling, sequences, string and integer inputs, an expand whose random inputs
#: are invalid, and models ONNX Runtime itself refuses (opset-6 AveragePool and Gemm, a training op).
REPRESENTATIVE_WHEEL_CASES: tuple[str, ...] = (
    "light_inception_v1",
    "light_squeezenet",
    "simple/test_single_relu_model",
    "simple/test_sign_model",
    "simple/test_shrink",
    "simple/test_expand_shape_model1",
    "simple/test_sequence_model1",
    "simple/test_sequence_model5",
    "simple/test_gradient_of_add",
    "simple/test_strnorm_model_nostopwords_nochangecase",
    "pytorch-converted/test_AvgPool2d",
    "pytorch-converted/test_Conv1d",
    "pytorch-converted/test_Conv2d",
    "pytorch-converted/test_Conv2d_depthwise",
    "pytorch-converted/test_Conv3d",
    "pytorch-converted/test_ConvTranspose2d",
    "pytorch-converted/test_ConstantPad2d",
    "pytorch-converted/test_ELU",
    "pytorch-converted/test_Embedding",
    "pytorch-converted/test_LogSoftmax",
    "pytorch-converted/test_MaxPool1d",
    "pytorch-converted/test_MaxPool3d",
    "pytorch-converted/test_MaxPool2d_stride_padding_dilation",
    "pytorch-converted/test_PixelShuffle",
    "pytorch-converted/test_ReflectionPad2d",
    "pytorch-converted/test_Sigmoid",
    "pytorch-converted/test_Softmax",
    "pytorch-converted/test_Softmin",
    "pytorch-converted/test_Tanh",
    "pytorch-operator/test_operator_chunk",
    "pytorch-operator/test_operator_clip",
    "pytorch-operator/test_operator_conv",
    "pytorch-operator/test_operator_flatten",
    "pytorch-operator/test_operator_index",
    "pytorch-operator/test_operator_mm",
    "pytorch-operator/test_operator_permute2",
    "pytorch-operator/test_operator_reduced_mean",
    "pytorch-operator/test_operator_repeat",
    "pytorch-operator/test_operator_view",
)


def compare(actual: Any, expected: np.ndarray, tolerance: Tolerance, what: str = "") -> str | None:
    """None when `actual` matches `expected` (shape, dtype, values within `tolerance`), else what differs."""
    actual = np.asarray(actual)
    if actual.shape != expected.shape:
        return f"{what}: shape {actual.shape}, expected {expected.shape}"
    if actual.dtype != expected.dtype:
        return f"{what}: dtype {actual.dtype}, expected {expected.dtype}"
    if expected.dtype.kind not in "fc":
        if not np.array_equal(actual, expected):
            bad = int(np.sum(actual != expected))
            return f"{what}: {bad} of {expected.size} values differ"
        return None
    if expected.size == 0:
        return None
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    if not np.array_equal(np.isnan(a), np.isnan(e)):
        return f"{what}: NaNs in different places"
    a, e = np.nan_to_num(a, nan=0.0), np.nan_to_num(e, nan=0.0)
    if not (np.isfinite(a).all() and np.isfinite(e).all()):
        return None if np.array_equal(a, e) else f"{what}: infinities differ"
    scale = float(np.abs(e).max())
    unit = scale if scale > 0 else 1.0  # norms of values near 1e300 overflow: measure in units of the largest
    diff = (a - e) / unit
    max_err = float(np.abs(diff).max()) * unit
    norm = float(np.linalg.norm(e / unit))
    rel_l2 = float(np.linalg.norm(diff)) / norm if norm > 0 else float(np.linalg.norm(diff))
    limit = tolerance.max_rel * scale + tolerance.atol
    if rel_l2 > tolerance.rel_l2 or max_err > limit:
        return (
            f"{what}: rel-L2 error {rel_l2:.2e} (limit {tolerance.rel_l2:.0e}), max abs error {max_err:.2e} "
            f"(limit {limit:.2e})"
        )
    return None


def sample_feeds(name: str, seed: int = 0, batch: int = 3, hw: tuple[int, int] = (5, 7)) -> dict[str, np.ndarray]:
    """Seeded inputs for test model `name` (a `unirt.testing.models` name); `batch` sets the dynamic dims."""
    rng = np.random.default_rng(seed)
    if name == "matmul_relu":
        return {"x": rng.standard_normal((64, 64)).astype(np.float32)}
    if name == "dynamic_mlp":
        return {"x": rng.standard_normal((batch, 8)).astype(np.float32)}
    if name == "multi_io":
        n = max(batch, 1)
        return {
            "a": rng.standard_normal((n, 4)).astype(np.float32),
            "b": rng.standard_normal((n, 4)).astype(np.float32),
            "idx": rng.integers(0, n, size=batch + 1).astype(np.int64),
            "scale": np.array(0.5, np.float32),
        }
    if name == "int_ops":
        return {
            "a": rng.integers(-100, 100, (2, 3)).astype(np.int32),
            "b": rng.integers(-100, 100, (2, 3)).astype(np.int32),
        }
    if name == "unknown_dims":
        return {"x": rng.standard_normal((batch, 3, *hw)).astype(np.float32)}
    if name == "strings":
        return {"s": np.array(["a", "bc", "déf"][: max(batch, 1)], dtype=object)}
    if name == "byte_transformer":
        return {"tokens": rng.integers(0, 256, (batch, 16)).astype(np.int64)}
    if name == "batchnorm_default_epsilon":
        return {"x": rng.standard_normal((batch, 8, 4, 4)).astype(np.float32)}
    if name == "softmax_coerced":
        return {"x": rng.standard_normal((1, 3, 4, 5)).astype(np.float32)}
    raise KeyError(f"no sample inputs for model {name!r}")


def reads_onnx(backend: str) -> bool:
    """Whether `backend` takes an ONNX model: it reads ONNX, or converts it on load (`Backend.converts_from`)."""
    from .. import registry

    plugin = registry.get_backend(backend)
    return ModelFormat.ONNX in plugin.formats or ModelFormat.ONNX in plugin.converts_from


def refusal_errors(backend: str, fmt: ModelFormat = ModelFormat.ONNX) -> tuple[type[Exception], ...]:
    """The unirt errors that are a clear refusal when `backend` loads a `fmt` model: ModelLoadError, and
    ConversionError where the backend converts that format on load (the converter's own message, or the measured
    error of a conversion that failed verification)."""
    from .. import registry

    plugin = registry.get_backend(backend)
    return (ModelLoadError,) + ((ConversionError,) if fmt in plugin.converts_from and fmt not in plugin.formats else ())


_ort_lock = threading.Lock()
_ort_sessions: dict[str, Any] = {}


def reference_outputs(onnx_path: Path, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """ONNX Runtime's outputs (CPU, fp32, graph optimizations on) for an ONNX model: the reference."""
    import onnxruntime as ort

    key = str(onnx_path)
    with _ort_lock:
        sess = _ort_sessions.get(key)
        if sess is None:
            so = ort.SessionOptions()
            so.log_severity_level = 3
            sess = _ort_sessions[key] = ort.InferenceSession(key, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, dict(feeds))))


@dataclass(frozen=True)
class Outcome:
    """How one backend did on one model: "pass", "refused" (a unirt error at load, with its reason), "wrong"
    (outputs off the reference), "error" (a unirt error while running) or "unsupported" (it cannot read the
    format)."""

    status: str
    detail: str = ""

    def __str__(self) -> str:
        return self.status + (f": {self.detail}" if self.detail else "")


def check_case(
    backend: str,
    case: ConformanceCase,
    precision: str = "fp32",
    session_kwargs: Mapping[str, Any] | None = None,
    refusals: tuple[type[Exception], ...] | None = None,
) -> Outcome:
    """Run one onnx-wheel case (or random-weight copy) on `backend` and judge it against its reference.
    `refusals`: the errors at load that make it "refused" (default `refusal_errors(backend)`). A "wrong" answer, or a
    frontend refused for disagreeing with ONNX Runtime, on an ill-conditioned model starts "ill-conditioned: "
    (`ill_conditioned`)."""
    import unirt

    if not reads_onnx(backend):
        return Outcome("unsupported", f"{backend} neither reads nor converts onnx")
    refused = (refusals or refusal_errors(backend)) + (UnsupportedOptionError,)
    try:
        sess = unirt.Session(case.model, backend=backend, precision=precision, **dict(session_kwargs or {}))
    except refused as exc:
        return Outcome("refused", f"{type(exc).__name__}: {exc}")
    with sess:
        if len(sess.inputs) != len(case.inputs):
            return Outcome("wrong", f"{len(sess.inputs)} inputs, the model has {len(case.inputs)}")
        feeds = {info.name: value for info, value in zip(sess.inputs, case.inputs)}
        try:
            outputs = sess.run(feeds)
        except unirt.FrontendMismatchError as exc:  # its frontend disagrees with the format's reference: refused
            # (on an ill-conditioned model, where ONNX Runtime's own answer moves as far, the detail says so)
            shaky = ill_conditioned(case.model, feeds, reference_outputs(case.model, feeds), TOLERANCES[precision])
            return Outcome("refused", (f"ill-conditioned: {shaky}; " if shaky else "") + f"{type(exc).__name__}: {exc}")
        except unirt.RunError as exc:
            return Outcome("error", f"{type(exc).__name__}: {exc}")
        if case.outputs:
            expected = dict(zip([o.name for o in sess.outputs], case.outputs))
        else:
            expected = reference_outputs(case.model, feeds)
        if list(outputs) != list(expected):
            return Outcome("wrong", f"outputs {list(outputs)}, expected {list(expected)}")
        tolerance = TOLERANCES[precision]
        problems = [p for name in expected if (p := compare(outputs[name], expected[name], tolerance, name))]
        if not problems:
            return Outcome("pass")
        shaky = ill_conditioned(case.model, feeds, expected, tolerance)
        return Outcome("wrong", (f"ill-conditioned: {shaky}; " if shaky else "") + "; ".join(problems))


def ill_conditioned(
    model: Path, feeds: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], tolerance: Tolerance
) -> str | None:
    """Whether ONNX Runtime's answer moves beyond `tolerance` of `expected` once every float32 intermediate
    result of a static shape moves by one float32 rounding step (times 1 +- 2**-23, at random: Monte Carlo
    arithmetic). Then another float32 engine's order of operations can give another answer, and a differing one
    is no evidence of a bug. None if not, or if ONNX Runtime cannot run the model."""
    import onnx
    from onnx import helper, numpy_helper

    try:
        proto = onnx.shape_inference.infer_shapes(onnx.load(str(model)))
        shapes = {
            vi.name: [d.dim_value if d.HasField("dim_value") else 0 for d in vi.type.tensor_type.shape.dim]
            for vi in proto.graph.value_info
            if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        }
        rng = np.random.default_rng(0)
        nodes = []
        for node in proto.graph.node:
            nodes.append(node)
            for k, name in enumerate(node.output):
                shape = shapes.get(name)
                if shape is None or 0 in shape or not shape:
                    continue
                node.output[k] = raw = f"{name}__unirt_unrounded"
                noise = 1 + rng.choice(np.float32([-(2.0**-23), 2.0**-23]), shape)
                proto.graph.initializer.append(numpy_helper.from_array(noise.astype(np.float32), f"{raw}_step"))
                nodes.append(helper.make_node("Mul", [raw, f"{raw}_step"], [name]))
        del proto.graph.node[:]
        proto.graph.node.extend(nodes)
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        got = dict(zip(names, sess.run(names, dict(feeds))))
    except Exception:
        return None
    moved = [p for name in expected if name in got and (p := compare(got[name], expected[name], tolerance, name))]
    return (
        (
            f"the reference moves beyond the tolerance when each float32 intermediate result moves by one "
            f"rounding step ({moved[0].split(': ', 1)[1]})"
        )
        if moved
        else None
    )


def check_built(
    backend: str, name: str, directory: Path, precision: str = "fp32", session_kwargs: Mapping[str, Any] | None = None
) -> Outcome:
    """Run built test model `name` on `backend`, in ONNX or (for TFLite readers) as its TFLite twin, against
    ONNX Runtime on the ONNX model."""
    import unirt

    from .. import registry

    onnx_path = build(name, directory)
    if reads_onnx(backend):
        path, fmt = onnx_path, ModelFormat.ONNX
    else:
        from .tflite import TFLITE_BUILDERS, build_tflite

        if ModelFormat.TFLITE not in registry.get_backend(backend).formats:
            return Outcome("unsupported", f"{backend} reads neither onnx nor tflite")
        if name not in TFLITE_BUILDERS:
            return Outcome("unsupported", "no TFLite twin of this model")
        path, fmt = build_tflite(name, directory), ModelFormat.TFLITE
    try:
        sess = unirt.Session(path, backend=backend, precision=precision, **dict(session_kwargs or {}))
    except refusal_errors(backend, fmt) + (UnsupportedOptionError,) as exc:
        return Outcome("refused", f"{type(exc).__name__}: {exc}")
    with sess:
        return _judge_built(sess, name, onnx_path, precision)


def _judge_built(sess: Any, name: str, onnx_path: Path, precision: str) -> Outcome:
    """Run a loaded built model on its sample inputs and judge it against ONNX Runtime on `onnx_path`."""
    import unirt

    feeds = sample_feeds(name, seed=1)
    try:
        got = sess.run(feeds)
    except unirt.FrontendMismatchError as exc:  # its frontend disagrees with the format's reference: refused
        return Outcome("refused", f"{type(exc).__name__}: {exc}")
    except unirt.UnirtError as exc:
        return Outcome("error", f"{type(exc).__name__}: {exc}")
    expected = reference_outputs(onnx_path, feeds)
    problems = (
        [p for n in expected if (p := compare(got.get(n), expected[n], TOLERANCES[precision], n))]
        if list(got) == list(expected)
        else [f"outputs {list(got)}, expected {list(expected)}"]
    )
    return Outcome("wrong", "; ".join(problems)) if problems else Outcome("pass")


_cache: dict[str, list[ConformanceCase]] = {}


def wheel_cases() -> list[ConformanceCase]:
    """The onnx wheel's models with stored reference outputs (cached per process)."""
    if "wheel" not in _cache:
        _cache["wheel"] = conformance_cases()
    return _cache["wheel"]


def _random_dir() -> Path:
    """A temporary folder for this process's random-weight copies (about 200 MB), removed at exit."""
    import atexit
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="unirt_random_weights_"))
    atexit.register(shutil.rmtree, path, True)
    return path


def random_cases() -> list[ConformanceCase]:
    """Random-weight copies of the light models (made once into unirt's cache dir)."""
    if "random" not in _cache:
        _cache["random"] = random_weight_cases(_random_dir())
    return _cache["random"]


def _case_names(loader: Callable[[], list[ConformanceCase]]) -> list[str]:
    try:
        return [c.name for c in loader()]
    except ImportError:  # onnx missing: the suite reports it when a test runs
        return []


_WHEEL_NAMES = _case_names(wheel_cases)
_RANDOM_NAMES = _case_names(random_cases)


def _by_name(loader: Callable[[], list[ConformanceCase]], name: str) -> ConformanceCase:
    return next(c for c in loader() if c.name == name)


class BackendConformance:
    """Subclass as `Test<Engine>Conformance` and set `backend`. Every test loads through `unirt.Session`."""

    #: The backend under test (its entry-point name).
    backend: ClassVar[str] = ""
    #: Device and precision every test asks for; tolerances follow the precision.
    device: ClassVar[str] = "cpu"
    precision: ClassVar[str] = "fp32"
    #: Extra Session keyword arguments (threads, backend_options).
    session_kwargs: ClassVar[dict[str, Any]] = {"threads": 1}
    #: Built models or wheel cases the backend refuses on purpose: {name: a piece of its refusal's message}.
    refuses: ClassVar[dict[str, str]] = {}
    #: Cases the backend is known to answer wrongly or fail to run: {name: why}. They run as strict xfails; a
    #: built model listed here makes every test that loads it one.
    known_failures: ClassVar[dict[str, str]] = {}
    #: The unirt errors that are a refusal at load. None: `refusal_errors(backend, format)` — ModelLoadError, and
    #: ConversionError where the backend converts the model's format on load.
    refusal_errors: ClassVar[tuple[type[Exception], ...] | None] = None
    #: The onnx wheel's cases to run (names, e.g. REPRESENTATIVE_WHEEL_CASES); None runs every one.
    wheel_subset: ClassVar[Sequence[str] | None] = None

    def pytest_generate_tests(self, metafunc: Any) -> None:
        """Parametrize the wheel-case test with this class's `wheel_subset` (pytest calls this per class)."""
        if "case_name" not in metafunc.fixturenames:
            return
        if metafunc.function.__name__ == "test_random_weight_model":
            names = _RANDOM_NAMES
        else:
            subset = type(self).wheel_subset
            names = _WHEEL_NAMES if subset is None else [n for n in _WHEEL_NAMES if n in set(subset)]
        metafunc.parametrize("case_name", names)

    # -- hooks -------------------------------------------------------------------------------------------------
    def model_file(self, name: str, directory: Path) -> Path:
        """Test model `name` in a format this backend reads; by default the ONNX model. Call pytest.skip for a
        model the format cannot express."""
        return build(name, directory)

    # -- helpers -----------------------------------------------------------------------------------------------
    @pytest.fixture(scope="class")
    @classmethod
    def model_dir(cls, tmp_path_factory: Any) -> Path:
        return tmp_path_factory.mktemp(f"conformance_{cls.backend}")

    @pytest.fixture(scope="class")
    @classmethod
    def onnx_dir(cls, tmp_path_factory: Any) -> Path:
        return tmp_path_factory.mktemp("conformance_onnx")

    def open(self, path: Path, **kwargs: Any) -> Any:
        import unirt

        options = {"device": self.device, "precision": self.precision, **self.session_kwargs, **kwargs}
        return unirt.Session(path, backend=self.backend, **options)

    def refusals(self, path: Path) -> tuple[type[Exception], ...]:
        """The errors that count as this backend refusing the model at `path`."""
        from ..formats import open_model

        return self.refusal_errors or refusal_errors(self.backend, open_model(path).format)

    def load(self, name: str, model_dir: Path, **kwargs: Any) -> Any:
        """A Session on built model `name`; for a model in `refuses`, the declared refusal checked and the test
        skipped; for one in `known_failures`, its failure checked and the test xfailed (strict: it must fail)."""
        path = self.model_file(name, model_dir)
        if name in self.refuses:
            with pytest.raises(self.refusals(path)) as err:
                self.open(path, **kwargs)
            assert self.refuses[name] in str(err.value), str(err.value)
            pytest.skip(f"{self.backend} refuses {name}, as declared: {err.value}")
        if name in self.known_failures:
            outcome = self._built_outcome(name, path)
            if outcome.status == "pass":
                pytest.fail(f"{name} is listed in known_failures but passes: remove it")
            pytest.xfail(f"{self.known_failures[name]} ({outcome})")
        return self.open(path, **kwargs)

    def _built_outcome(self, name: str, path: Path) -> Outcome:
        """How built model `name` does: loaded, run on its sample inputs, compared with ONNX Runtime."""
        import tempfile

        import unirt

        try:
            sess = self.open(path)
        except self.refusals(path) + (unirt.UnsupportedOptionError,) as exc:
            return Outcome("refused", f"{type(exc).__name__}: {exc}")
        with sess, tempfile.TemporaryDirectory() as tmp:
            return _judge_built(sess, name, build(name, Path(tmp)), self.precision)

    def check(
        self,
        name: str,
        sess: Any,
        feeds: dict[str, np.ndarray],
        onnx_dir: Path,
        output_names: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        got = sess.run(feeds) if output_names is None else sess.run(feeds, output_names)
        expected = reference_outputs(build(name, onnx_dir), feeds)
        wanted = list(expected) if output_names is None else list(output_names)
        assert list(got) == wanted
        tolerance = TOLERANCES[self.precision]
        problems = [p for n in wanted if (p := compare(got[n], expected[n], tolerance, f"{name}:{n}"))]
        assert not problems, "\n".join(problems)
        return got

    # -- the suite ---------------------------------------------------------------------------------------------
    def test_backend_is_available(self) -> None:
        import unirt

        info = {b.name: b for b in unirt.backends()}
        assert self.backend in info, f"{self.backend} is not installed"
        assert info[self.backend].available, info[self.backend].reason

    @pytest.mark.parametrize("name", BUILT_MODELS)
    def test_io_metadata(self, name: str, model_dir: Path, onnx_dir: Path) -> None:
        import onnxruntime as ort

        sess = self.load(name, model_dir)
        ref = ort.InferenceSession(str(build(name, onnx_dir)), providers=["CPUExecutionProvider"])
        for mine, theirs in ((sess.inputs, ref.get_inputs()), (sess.outputs, ref.get_outputs())):
            assert [i.name for i in mine] == [t.name for t in theirs]
            for info, t in zip(mine, theirs):
                assert info.dtype == _ort_dtype(t.type), (info, t.type)
                assert info.rank == len(t.shape), (info, t.shape)
                for d, r in zip(info.shape, t.shape):
                    if isinstance(r, int):
                        assert d == r, f"{info}: static dim {r} reported as {d!r}"
                    else:
                        assert not isinstance(d, int), f"{info}: dynamic dim reported as {d!r}"

    @pytest.mark.parametrize("name", BUILT_MODELS)
    def test_outputs_match_reference(self, name: str, model_dir: Path, onnx_dir: Path) -> None:
        with self.load(name, model_dir) as sess:
            self.check(name, sess, sample_feeds(name, seed=1), onnx_dir)

    def test_batch_1_and_n_in_one_session(self, model_dir: Path, onnx_dir: Path) -> None:
        with self.load("dynamic_mlp", model_dir) as sess:
            for batch in (1, 4, 1, 7, 4):
                got = self.check("dynamic_mlp", sess, sample_feeds("dynamic_mlp", seed=batch, batch=batch), onnx_dir)
                assert got["probs"].shape == (batch, 3)

    def test_dynamic_dims_change_between_runs(self, model_dir: Path, onnx_dir: Path) -> None:
        with self.load("unknown_dims", model_dir) as sess:
            for batch, hw in ((1, (4, 5)), (2, (6, 3)), (1, (4, 5)), (3, (1, 9))):
                got = self.check("unknown_dims", sess, sample_feeds("unknown_dims", batch, batch, hw), onnx_dir)
                assert got["y"].shape == (batch, 3, *hw)

    def test_scalars_several_inputs_and_output_selection(self, model_dir: Path, onnx_dir: Path) -> None:
        with self.load("multi_io", model_dir) as sess:
            feeds = sample_feeds("multi_io", seed=2, batch=4)
            got = self.check("multi_io", sess, feeds, onnx_dir)
            assert got["count"].shape == () and got["count"].dtype == np.int64 and int(got["count"]) == 5
            assert got["mask"].dtype == np.bool_
            picked = self.check("multi_io", sess, feeds, onnx_dir, output_names=["mask", "sum"])
            assert list(picked) == ["mask", "sum"]
            # Python scalars and lists take the model's dtypes
            plain = dict(feeds, scale=0.5, idx=feeds["idx"].tolist())
            np.testing.assert_array_equal(sess.run(plain)["sum"], got["sum"])

    def test_integer_tensors(self, model_dir: Path, onnx_dir: Path) -> None:
        import unirt

        with self.load("int_ops", model_dir) as sess:
            got = self.check("int_ops", sess, sample_feeds("int_ops", seed=3), onnx_dir)
            assert got["y"].dtype == np.int32
            feeds = sample_feeds("int_ops", seed=3)
            with pytest.raises(unirt.InputError, match="expected int32, got float32"):
                sess.run({"a": feeds["a"].astype(np.float32), "b": feeds["b"]})

    def test_outputs_survive_the_next_run(self, model_dir: Path) -> None:
        with self.load("dynamic_mlp", model_dir) as sess:
            first = sess.run(sample_feeds("dynamic_mlp", seed=4, batch=2))
            kept = {k: v.copy() for k, v in first.items()}
            sess.run(sample_feeds("dynamic_mlp", seed=5, batch=2))
            sess.run(sample_feeds("dynamic_mlp", seed=6, batch=5))
            for k in kept:
                np.testing.assert_array_equal(first[k], kept[k])
                assert first[k].flags.writeable or first[k].size == 0

    def test_inputs_are_not_modified(self, model_dir: Path) -> None:
        with self.load("matmul_relu", model_dir) as sess:
            feeds = sample_feeds("matmul_relu", seed=7)
            kept = feeds["x"].copy()
            sess.run(feeds)
            np.testing.assert_array_equal(feeds["x"], kept)

    def test_read_only_and_strided_inputs(self, model_dir: Path, onnx_dir: Path) -> None:
        with self.load("matmul_relu", model_dir) as sess:
            x = sample_feeds("matmul_relu", seed=8)["x"]
            frozen = x.copy()
            frozen.flags.writeable = False
            expected = reference_outputs(build("matmul_relu", onnx_dir), {"x": x})["y"]
            assert compare(sess.run(frozen)["y"], expected, TOLERANCES[self.precision], "read-only") is None
            big = np.zeros((128, 128), np.float32)
            big[::2, ::2] = x
            assert compare(sess.run(big[::2, ::2])["y"], expected, TOLERANCES[self.precision], "strided") is None

    def test_run_into_caller_memory(self, model_dir: Path, onnx_dir: Path) -> None:
        import unirt

        with self.load("matmul_relu", model_dir) as sess:  # a static output: backends may write into it directly
            feeds = sample_feeds("matmul_relu", seed=11)
            y = np.full((64, 64), np.nan, np.float32)
            assert sess.run(feeds, out={"y": y})["y"] is y
            expected = reference_outputs(build("matmul_relu", onnx_dir), feeds)["y"]
            assert compare(y, expected, TOLERANCES[self.precision], "y") is None
            kept = y.copy()
            fresh = sess.run(sample_feeds("matmul_relu", seed=12))["y"]
            np.testing.assert_array_equal(y, kept)
            assert not np.shares_memory(fresh, y)

        with self.load("dynamic_mlp", model_dir) as sess:
            feeds = sample_feeds("dynamic_mlp", seed=9, batch=6)
            probs = np.full((6, 3), np.nan, np.float32)
            got = sess.run(feeds, out={"probs": probs})
            assert got["probs"] is probs
            expected = reference_outputs(build("dynamic_mlp", onnx_dir), feeds)
            tolerance = TOLERANCES[self.precision]
            assert compare(probs, expected["probs"], tolerance, "probs") is None
            assert compare(got["logits"], expected["logits"], tolerance, "logits") is None
            # the caller's array is not written by later runs that do not pass it
            kept = probs.copy()
            sess.run(sample_feeds("dynamic_mlp", seed=10, batch=6))
            np.testing.assert_array_equal(probs, kept)
            with pytest.raises((unirt.RunError, unirt.InputError)):
                sess.run(feeds, out={"probs": np.empty((5, 3), np.float32)})

    def test_concurrent_runs_from_threads(self, model_dir: Path) -> None:
        with self.load("dynamic_mlp", model_dir) as sess:
            xs = [sample_feeds("dynamic_mlp", seed=20 + i, batch=1 + i % 3) for i in range(6)]
            expected = [sess.run(x)["probs"] for x in xs]

            def worker(i: int) -> None:
                for _ in range(25):
                    np.testing.assert_array_equal(sess.run(xs[i])["probs"], expected[i])

            run_concurrently(worker, len(xs))

    def test_input_errors(self, model_dir: Path) -> None:
        import unirt

        with self.load("dynamic_mlp", model_dir) as sess:
            x = sample_feeds("dynamic_mlp", batch=2)["x"]
            cases = [
                ({"nope": x}, "missing input 'x'; unexpected input 'nope'"),
                ({"x": x.astype(np.float64)}, "expected float32, got float64"),
                ({"x": x[0]}, "expected rank 2"),
                ({"x": np.ones((2, 5), np.float32)}, "dim 1 is static"),
                ({"x": x, "y": x}, "unexpected input 'y'"),
            ]
            for feeds, message in cases:
                with pytest.raises(unirt.InputError, match=message.replace("(", r"\(")):
                    sess.run(feeds)
            with pytest.raises(unirt.InputError, match="unknown output 'nope'"):
                sess.run(x, output_names=["nope"])
            sess.close()
            with pytest.raises(unirt.SessionClosedError):
                sess.run(x)

    def test_unknown_backend_option_is_refused(self, model_dir: Path) -> None:
        import unirt

        with pytest.raises(unirt.UnsupportedOptionError, match=self.backend):
            self.open(
                self.model_file("dynamic_mlp", model_dir), backend_options={"surely_not_an_option_of_any_engine": 1}
            )

    def test_precision_is_honest(self, model_dir: Path) -> None:
        """The default is fp32 and shown; every other precision is honoured (and shown) or refused, naming the
        backend and what it supports."""
        import unirt

        path = self.model_file("dynamic_mlp", model_dir)
        with self.open(path, precision="fp32") as sess:
            assert sess.precision == "fp32" and "precision='fp32'" in repr(sess)
        for precision in ("fp16", "bf16", "int8"):
            try:
                sess = self.open(path, precision=precision)
            except unirt.UnsupportedOptionError as exc:
                assert self.backend in str(exc) and "fp32" in str(exc), str(exc)
                continue
            with sess:
                assert sess.precision == precision, f"asked for {precision}, in force: {sess.precision}"
                assert f"precision={precision!r}" in repr(sess)

    def test_damaged_model_files(self, model_dir: Path, tmp_path: Path) -> None:
        """Empty, truncated, bit-flipped and garbage copies of a model (and of its companion files) end in a unirt
        error or a working session: the shared harness runs them in child processes, so a crash in the engine is
        a failure naming the variant, not the end of the test run."""
        from .fuzz import check_malformed

        model = self.model_file("dynamic_mlp", model_dir)
        options = {"device": self.device, "precision": self.precision, **self.session_kwargs}
        refusals = [e.__name__ for e in self.refusals(model)]
        check_malformed(model, backend=self.backend, workdir=tmp_path, session=options, refusals=refusals).assert_ok()

    def test_declarations_name_real_cases(self) -> None:
        """Every name in `refuses` and `known_failures` is a built model or a case this class runs."""
        subset = self.wheel_subset
        run = set(BUILT_MODELS) | set(_RANDOM_NAMES) | set(_WHEEL_NAMES if subset is None else subset)
        stale = sorted((set(self.refuses) | set(self.known_failures)) - run)
        assert not stale, f"declared for cases this class does not run: {stale}"
        unknown = sorted(set(subset or ()) - set(_WHEEL_NAMES))
        assert not unknown or not _WHEEL_NAMES, f"wheel_subset names cases this onnx wheel lacks: {unknown}"

    def test_onnx_wheel_model(self, case_name: str) -> None:  # parametrized by pytest_generate_tests
        self._judge(_by_name(wheel_cases, case_name))

    def test_random_weight_model(self, case_name: str) -> None:
        self._judge(_by_name(random_cases, case_name))

    def _judge(self, case: ConformanceCase) -> None:
        outcome = check_case(self.backend, case, self.precision, self.session_kwargs, self.refusal_errors)
        if outcome.status == "unsupported":
            pytest.skip(outcome.detail)
        if outcome.status in ("wrong", "refused") and outcome.detail.startswith("ill-conditioned: "):
            # The reference itself moves this far under one rounding step per intermediate result: whether an
            # engine lands inside the tolerance (of the wheel's answer, or of ONNX Runtime's when its frontend is
            # checked) depends on its kernels' order of operations (their version, the CPU's instruction set).
            pytest.xfail(str(outcome))
        if case.name in self.known_failures:
            if outcome.status == "pass":
                pytest.fail(f"{case.name} is listed in known_failures but passes: remove it")
            pytest.xfail(f"{self.known_failures[case.name]} ({outcome})")
        if case.name in self.refuses:
            assert outcome.status == "refused" and self.refuses[case.name] in outcome.detail, str(outcome)
            return
        if outcome.status == "refused" and _reference_refuses(case):
            return  # ONNX Runtime refuses it too (an old opset, a training op): a clear error is right
        assert outcome.status == "pass", f"{case.name} on {self.backend}: {outcome}"


def _reference_refuses(case: ConformanceCase) -> bool:
    import onnxruntime as ort

    try:
        ort.InferenceSession(str(case.model), providers=["CPUExecutionProvider"])
    except Exception:
        return True
    return False


def _ort_dtype(type_text: str) -> np.dtype:
    names = {
        "float": np.float32,
        "double": np.float64,
        "float16": np.float16,
        "int8": np.int8,
        "int16": np.int16,
        "int32": np.int32,
        "int64": np.int64,
        "uint8": np.uint8,
        "bool": np.bool_,
        "string": np.object_,
    }
    return np.dtype(names[type_text[len("tensor(") : -1]])
