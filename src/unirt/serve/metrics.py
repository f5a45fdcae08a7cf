"""Prometheus metrics, named as Triton names them, read from the same per-version statistics as the v2
statistics endpoint (so the two never disagree). Served as text on the metrics port.

Triton exposes its counters without the `_total` suffix (`nv_inference_count`); prometheus_client adds that
suffix to anything typed "counter", so these are exposed untyped under Triton's exact names, which is what
existing Triton dashboards and alerts query.

unirt's own metrics (crash containment and bounded work) are typed: `unirt_model_restarts_total`,
`unirt_model_crashes_total`, `unirt_model_dropped_requests_total{reason=rejected|timeout|cancelled}`,
`unirt_model_queue_capacity`, `unirt_model_isolated`, `unirt_model_last_crash_signal_info{signal}` and
`unirt_model_instance_pid{instance}` (the isolated children's process ids).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from .manager import ModelManager

__all__ = ["ServeCollector", "make_registry"]

_LABELS = ("model", "version")


def _family(name: str, doc: str) -> Metric:
    return Metric(name, doc, "unknown")


class ServeCollector(Collector):
    """Yields Triton's per-model metrics from the manager's loaded models at each scrape."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[Metric]:
        fams = {
            "success": _family(
                "nv_inference_request_success", "Number of successful inference requests, all batch sizes"
            ),
            "failure": _family("nv_inference_request_failure", "Number of failed inference requests, all batch sizes"),
            "count": _family(
                "nv_inference_count", "Number of inferences performed (batch rows; does not include cached requests)"
            ),
            "exec": _family(
                "nv_inference_exec_count", "Number of model executions performed (does not include cached requests)"
            ),
            "duration": _family(
                "nv_inference_request_duration_us",
                "Cumulative inference request duration in microseconds (includes cached requests)",
            ),
            "queue": _family(
                "nv_inference_queue_duration_us",
                "Cumulative inference queuing duration in microseconds (includes cached requests)",
            ),
            "input": _family(
                "nv_inference_compute_input_duration_us",
                "Cumulative compute input duration in microseconds (does not include cached requests)",
            ),
            "infer": _family(
                "nv_inference_compute_infer_duration_us",
                "Cumulative compute inference duration in microseconds (does not include cached requests)",
            ),
            "output": _family(
                "nv_inference_compute_output_duration_us",
                "Cumulative inference compute output duration in microseconds (does not include cached requests)",
            ),
        }
        pending = GaugeMetricFamily(
            "nv_inference_pending_request_count",
            "Instantaneous number of pending requests awaiting execution per-model.",
            labels=list(_LABELS),
        )
        labels_ = list(_LABELS)
        restarts = CounterMetricFamily(
            "unirt_model_restarts", "Child processes of isolated instances started again after a crash", labels=labels_
        )
        crashes = CounterMetricFamily(
            "unirt_model_crashes", "Runs that ended in a crash of an isolated instance's child process", labels=labels_
        )
        dropped = CounterMetricFamily(
            "unirt_model_dropped_requests",
            "Requests that never ran: rejected (queue "
            "full), timeout (queued past their timeout), cancelled (client went away)",
            labels=labels_ + ["reason"],
        )
        capacity = GaugeMetricFamily(
            "unirt_model_queue_capacity", "The model's queue bound (0: unbounded)", labels=labels_
        )
        isolated = GaugeMetricFamily(
            "unirt_model_isolated", "1 when the model's instances run in child processes", labels=labels_
        )
        last_signal = InfoMetricFamily(
            "unirt_model_last_crash_signal", "The signal that last killed an instance's child process", labels=labels_
        )
        pids = GaugeMetricFamily(
            "unirt_model_instance_pid", "Process id of each isolated instance's child", labels=labels_ + ["instance"]
        )
        for model in self.manager.loaded():
            s = model.stats.snapshot()
            labels = {"model": model.name, "version": str(model.version)}
            d = s["durations"]
            fams["success"].add_sample("nv_inference_request_success", labels, d["success"][0])
            for reason in ("REJECTED", "CANCELED", "BACKEND", "OTHER"):
                fams["failure"].add_sample(
                    "nv_inference_request_failure", {**labels, "reason": reason}, s["failures"].get(reason, 0)
                )
            fams["count"].add_sample("nv_inference_count", labels, s["inference_count"])
            fams["exec"].add_sample("nv_inference_exec_count", labels, s["execution_count"])
            fams["duration"].add_sample(
                "nv_inference_request_duration_us", labels, (d["success"][1] + d["fail"][1]) // 1000
            )
            for key, name in (
                ("queue", "nv_inference_queue_duration_us"),
                ("input", "nv_inference_compute_input_duration_us"),
                ("infer", "nv_inference_compute_infer_duration_us"),
                ("output", "nv_inference_compute_output_duration_us"),
            ):
                stat = {
                    "queue": "queue",
                    "input": "compute_input",
                    "infer": "compute_infer",
                    "output": "compute_output",
                }[key]
                fams[key].add_sample(name, labels, d[stat][1] // 1000)
            key = [model.name, str(model.version)]
            pending.add_metric(key, s["pending"])
            restarts.add_metric(key, model.restarts)
            crashes.add_metric(key, model.crashes)
            for reason, count in s["dropped"].items():
                dropped.add_metric(key + [reason], count)
            capacity.add_metric(key, model.scheduler.max_queue_size)
            isolated.add_metric(key, 1 if model.isolated else 0)
            if model.last_signal:
                last_signal.add_metric(key, {"signal": model.last_signal})
            for i, pid in enumerate(model.pids):
                if pid is not None:
                    pids.add_metric(key + [str(i)], pid)
        yield from fams.values()
        yield from (pending, restarts, crashes, dropped, capacity, isolated, last_signal, pids)

    def describe(self) -> list[Any]:
        return []


def make_registry(manager: ModelManager) -> CollectorRegistry:
    """A registry with the per-model metrics and the process's own (RSS, CPU time, open files)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServeCollector(manager))
    ProcessCollector(registry=registry)
    return registry
