import subprocess
import sys

ENGINES = [
    "onnxruntime",
    "openvino",
    "tensorrt",
    "ai_edge_litert",
    "tflite_runtime",
    "ncnn",
    "MNN",
    "onnx",
    "torch",
    "cuda",
]


def run_python(code: str, cwd) -> str:
    # cwd outside the source tree, so the installed package (with its compiled _core) is imported
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=cwd).stdout


def test_import_unirt_imports_no_backend_library(tmp_path):
    code = (
        f"import sys, unirt; unirt.Session; unirt.backends; print(sorted(m for m in {ENGINES!r} if m in sys.modules))"
    )
    out = run_python(code, tmp_path)
    assert out.strip() == "[]"


def test_listing_backends_imports_no_engine_until_probed(tmp_path):
    code = (
        "import sys, unirt.registry as r; r.installed_names(); "
        f"print(sorted(m for m in {ENGINES!r} if m in sys.modules))"
    )
    out = run_python(code, tmp_path)
    assert out.strip() == "[]"


def test_public_surface():
    import unirt

    for name in [
        "Session",
        "TensorInfo",
        "backends",
        "explain",
        "UnirtError",
        "ModelLoadError",
        "InputError",
        "BackendUnavailableError",
    ]:
        assert hasattr(unirt, name), name
    assert issubclass(unirt.InputError, unirt.UnirtError) and issubclass(unirt.ModelLoadError, unirt.UnirtError)
    assert issubclass(unirt.BackendUnavailableError, unirt.UnirtError)
    assert unirt.errors.ModelFormatError is unirt.ModelFormatError
