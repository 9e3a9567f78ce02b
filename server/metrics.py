"""`/metrics` in the Prometheus text format, read from the service at each scrape (nothing is kept twice)."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# per-stream snapshot key -> (metric name, help, counter?)
STREAM_METRICS = {
    "input_fps": ("cliplive_stream_input_fps", "Frames decoded per second", False),
    "sampled_fps": ("cliplive_stream_sampled_fps", "Frames sampled per second", False),
    "dropped": ("cliplive_stream_dropped_frames", "Sampled frames dropped because the encoder was behind", True),
    "reconnects": ("cliplive_stream_reconnects", "Reconnections to the source", True),
    "scored": ("cliplive_stream_scored_frames", "Frames scored against the stream's sentences", True),
    "events": ("cliplive_stream_events", "Highlight events emitted", True),
    "encoder_lag_p50_s": ("cliplive_stream_encoder_lag_seconds", "Median time from decoded to embedded", False),
}
LATENCY_QUANTILES = {"latency_p50_s": "0.5", "latency_p99_s": "0.99"}


class ServiceCollector(Collector):
    def __init__(self, service):
        self.service = service

    def collect(self):
        metrics = self.service.metrics()
        streams = metrics["streams"]
        for key, (name, help_text, is_counter) in STREAM_METRICS.items():
            family = (CounterMetricFamily if is_counter else GaugeMetricFamily)(name, help_text, labels=["stream"])
            for s in streams:
                if s.get(key) is not None:
                    family.add_metric([s["stream"]], s[key])
            yield family
        latency = GaugeMetricFamily("cliplive_stream_latency_seconds", "Frame decoded to events emitted", labels=["stream", "quantile"])
        up = GaugeMetricFamily("cliplive_stream_live", "1 while the source delivers frames", labels=["stream", "state"])
        for s in streams:
            for key, quantile in LATENCY_QUANTILES.items():
                if s.get(key) is not None:
                    latency.add_metric([s["stream"], quantile], s[key])
            up.add_metric([s["stream"], s["state"] or "idle"], 1.0 if s["state"] == "live" else 0.0)
        yield latency
        yield up

        encoder = metrics["encoder"]
        yield CounterMetricFamily("cliplive_encoder_batches", "Batches encoded", value=encoder["batches"])
        yield CounterMetricFamily("cliplive_encoder_frames", "Frames encoded", value=encoder["frames"])
        yield GaugeMetricFamily("cliplive_encoder_batch_size_mean", "Mean frames per batch", value=encoder["mean_batch"])
        yield GaugeMetricFamily("cliplive_encoder_throughput_fps", "Frames encoded per second of encoder time",
                                value=encoder["img_per_busy_s"])

        yield GaugeMetricFamily("cliplive_event_subscribers", "Live event subscribers (SSE, WebSocket, sinks)",
                                value=metrics["subscribers"])
        yield CounterMetricFamily("cliplive_event_subscribers_dropped", "Subscribers dropped for reading too slowly",
                                  value=metrics["subscribers_dropped"])
        store = GaugeMetricFamily("cliplive_store_commit_seconds", "Time to store one event (recent events)", labels=["quantile"])
        if metrics["store_seconds"]:
            for quantile in ("0.5", "0.99"):
                store.add_metric([quantile], float(np.quantile(metrics["store_seconds"], float(quantile))))
        yield store


def registry_for(service) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(service))
    return registry
