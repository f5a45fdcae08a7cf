"""Prometheus metrics on their own port, with Triton's names, agreeing with the statistics endpoint."""

from __future__ import annotations

import re
import urllib.request

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values = {}
    for line in text.splitlines():
        m = re.match(r"^(\w+)\{(.*)\} ([0-9.e+-]+)$", line)
        if m and 'model="mlp"' in m.group(2) and 'version="2"' in m.group(2):
            reason = re.search(r'reason="(\w+)"', m.group(2))
            values[m.group(1) + (f":{reason.group(1)}" if reason else "")] = float(m.group(3))
        elif line.startswith("process_resident_memory_bytes"):
            values["rss"] = float(line.split()[-1])
    return values


def test_metrics_follow_requests(server, http_client):
    port = server.ports["metrics"]
    before = _scrape(port)
    tensor = httpclient.InferInput("x", [3, 8], "FP32")
    tensor.set_data_from_numpy(np.ones((3, 8), np.float32))
    http_client.infer("mlp", [tensor])
    http_client.infer("mlp", [tensor])
    bad = httpclient.InferInput("x", [1, 8], "FP64")
    bad.set_data_from_numpy(np.ones((1, 8), np.float64))
    try:
        http_client.infer("mlp", [bad])
    except InferenceServerException:
        pass
    after = _scrape(port)
    assert after["nv_inference_request_success"] - before["nv_inference_request_success"] == 2
    assert after["nv_inference_request_failure:REJECTED"] - before["nv_inference_request_failure:REJECTED"] == 1
    assert after["nv_inference_count"] - before["nv_inference_count"] == 6  # batch rows
    assert after["nv_inference_exec_count"] - before["nv_inference_exec_count"] == 2
    for name in (
        "nv_inference_request_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_input_duration_us",
        "nv_inference_compute_output_duration_us",
    ):
        assert after[name] >= before[name]
    assert after["nv_inference_compute_infer_duration_us"] > before["nv_inference_compute_infer_duration_us"]
    assert after["nv_inference_pending_request_count"] == 0 and after["rss"] > 0
    stats = http_client.get_inference_statistics("mlp", "2")["model_stats"][0]
    assert stats["inference_count"] == after["nv_inference_count"]
    assert stats["execution_count"] == after["nv_inference_exec_count"]
