"""ncnn plugin tests: ONNX test models converted to ncnn once per run (unirt.testing.fixtures)."""

from unirt.testing.fixtures import conversion_fixtures

private_cache, model, squeezenet, converted = conversion_fixtures("ncnn", ".param")
