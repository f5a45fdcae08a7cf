#!/usr/bin/env bash
# One prepared GPU check (a CUDA machine with cuda-python, onnx, onnxruntime, scikit-build-core, pybind11, cmake and
# pytest, no network): build unirt + the ONNX Runtime and TensorRT plugins into /tmp/site, show what unirt sees
# (hardware, pinned memory, backends, explain), run the tests that touch CUDA (the TensorRT plugin's CUDA glue, the
# pinned pool, device selection, the ONNX Runtime plugin), and time host<->device copies from pinned vs pageable
# memory. Run from the checkout root: bash scripts/gpu_check.sh
# TensorRT itself is not on that machine (its wheels are several GB, and it has no network): the TensorRT plugin's
# build/run tests skip there with the reason; its version logic, API surface check and fp16 conversion run on CPU
# (docs/tensorrt.md).
set -x
export PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -P -c "import sys, numpy, onnx, onnxruntime; print(sys.version, numpy.__version__, onnx.__version__, onnxruntime.__version__, onnxruntime.get_available_providers())"
python3 -P -c "import cuda.bindings; print('cuda-bindings', cuda.bindings.__version__)"
rm -rf /tmp/site; time python3 -m pip install -q --no-deps --no-build-isolation --no-index --no-compile --target /tmp/site . ./plugins/onnxruntime ./plugins/tensorrt 2>&1 | tail -20
export PYTHONPATH=/tmp/site
REPO=$PWD
cd /tmp
python3 - <<"PY"
import unirt
print(unirt.hardware())
print(unirt.pinned_memory_status())
for b in unirt.backends(): print(b)
PY
cd "$REPO"
python3 -P -c "import unirt, sys; print(unirt.explain('examples/models/classifier.onnx'))" 
python3 -P -c "
import unirt
try:
    unirt.Session('examples/models/classifier.onnx', backend='onnxruntime', device='cuda')
except unirt.errors.UnirtError as e: print('ORT cuda ->', type(e).__name__, e)
s = unirt.Session('examples/models/classifier.onnx'); print(s)
try:
    unirt.Session('examples/models/classifier.onnx', backend='tensorrt')
except unirt.errors.UnirtError as e: print('TRT ->', type(e).__name__, e)
"
timeout 300 python3 -P -m pytest -q -p no:cacheprovider --timeout 120 -rfs \
  plugins/tensorrt/tests tests/test_pool.py tests/test_arena.py tests/test_devices.py tests/test_selection.py \
  tests/test_session.py tests/test_registry.py tests/test_concurrency.py plugins/onnxruntime/tests 2>&1 | tail -45
cd /tmp
python3 - <<"PY"
# Host->device copy bandwidth: unirt's pinned pool vs pageable numpy memory (64 MiB, cudaMemcpy, 20 reps).
import time, numpy as np, unirt
from cuda.bindings import runtime as rt
n = 64 << 20
err, d = rt.cudaMalloc(n); assert err == rt.cudaError_t.cudaSuccess
pool = unirt.BufferPool(pinned=True)
pinned = pool.empty(n, np.uint8); pinned[:] = 1
page = np.ones(n, np.uint8)
def bw(a, kind):
    dst, src = (d, a.ctypes.data) if kind == H2D else (a.ctypes.data, d)
    for _ in range(3): rt.cudaMemcpy(dst, src, n, kind)
    t = time.perf_counter()
    for _ in range(20): rt.cudaMemcpy(dst, src, n, kind)
    return 20 * n / (time.perf_counter() - t) / 1e9
H2D = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
D2H = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
for name, a in (("pinned (unirt.BufferPool)", pinned), ("pageable (numpy)", page)):
    print(f"{name:28s} H2D {bw(a, H2D):6.1f} GB/s  D2H {bw(a, D2H):6.1f} GB/s")
rt.cudaFree(d)
PY
# The torch plugin on CUDA (issue 15): its conformance suite and CUDA tests (TF32 off for fp32, DLPack in/out), then
# the figures: fp32/fp16/bf16 answers and timings on resnet50 and a small BERT, overhead vs the ExportedProgram and
# an AOTInductor package at batch 1 and 32, pointer identity and no D2H copy, run_many vs one by one.
cd "$REPO"
python3 -m pip install -q --no-deps --no-build-isolation --no-index --no-compile --target /tmp/site ./plugins/torch 2>&1 | tail -5
UNIRT_TEST_TORCH_DEVICE=cuda timeout 420 python3 -P -m pytest -q -p no:cacheprovider --timeout 200 -rfs \
  plugins/torch/tests tests/test_device_tensors.py 2>&1 | tail -30
timeout 600 python3 -P scripts/gpu_torch_check.py --device cuda --aoti 2>&1 | grep -v Warning | tail -40
