"""`/metrics` in the Prometheus text format, read from the service's snapshot at each scrape (nothing is
kept twice). Stream and encoder metrics follow the snapshot dataclasses' field metadata, so a new field
there is exported without a second list to keep in step."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from cliplive.server.service import Service
from cliplive.server.sinks import SinkMetrics
from cliplive.server.storage import StorageSnapshot
from cliplive.stream.pipeline import EncoderSnapshot, StreamSnapshot, exported

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FAMILY = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily}


class ServiceCollector(Collector):
    def __init__(self, service: Service):
        self.service = service

    def collect(self):
        snapshot = self.service.snapshot()
        streams = snapshot.pipeline.streams
        for key, name, help_text, kind in exported(StreamSnapshot):
            family = FAMILY[kind](f"cliplive_stream_{name}", help_text, labels=["stream"])
            for s in streams:
                if (value := getattr(s, key)) is not None:
                    family.add_metric([s.stream], value)
            yield family
        latency = GaugeMetricFamily("cliplive_stream_latency_seconds", "Frame decoded to events emitted", labels=["stream", "quantile"])
        up = GaugeMetricFamily("cliplive_stream_live", "1 while the source delivers frames", labels=["stream", "state"])
        for s in streams:
            for quantile, value in (("0.5", s.latency_p50_s), ("0.99", s.latency_p99_s)):
                if value is not None:
                    latency.add_metric([s.stream, quantile], value)
            up.add_metric([s.stream, s.state], 1.0 if s.state == "live" else 0.0)
        yield latency
        yield up

        encoder = snapshot.pipeline.encoder
        for key, name, help_text, kind in exported(EncoderSnapshot):
            yield FAMILY[kind](f"cliplive_encoder_{name}", help_text, value=getattr(encoder, key))

        for key, name, help_text, kind in exported(SinkMetrics):
            family = FAMILY[kind](f"cliplive_sink_{name}", help_text, labels=["sink", "index"])  # index: names may repeat
            for index, (sink, metrics) in enumerate(snapshot.sinks):
                family.add_metric([sink, str(index)], getattr(metrics, key))
            yield family

        yield GaugeMetricFamily("cliplive_event_subscribers", "Live event subscribers (SSE, WebSocket, sinks)",
                                value=snapshot.subscribers)
        yield CounterMetricFamily("cliplive_event_subscribers_dropped", "Subscribers dropped for reading too slowly",
                                  value=snapshot.subscribers_dropped)
        store = GaugeMetricFamily("cliplive_store_commit_seconds", "Time to store one event (recent events)", labels=["quantile"])
        if snapshot.store_seconds:
            for quantile in ("0.5", "0.99"):
                store.add_metric([quantile], float(np.quantile(snapshot.store_seconds, float(quantile))))
        yield store
        yield from storage_families(snapshot.storage)


def storage_families(storage: StorageSnapshot):
    """The store's health: failing writes (a full disk), the events waiting for them, the low-disk watermark."""
    yield CounterMetricFamily("cliplive_store_write_errors", "Store writes that failed (events, thumbnails)",
                              value=storage.write_errors)
    yield GaugeMetricFamily("cliplive_store_failing", "1 while the store cannot write", value=float(storage.failing))
    yield GaugeMetricFamily("cliplive_store_backlog_events", "Events waiting in memory to be stored, then sent",
                            value=storage.backlog)
    yield CounterMetricFamily("cliplive_store_dropped_events", "Events dropped unstored from a full backlog",
                              value=storage.dropped)
    yield GaugeMetricFamily("cliplive_low_disk", "1 while free space is under min_free_mb", value=float(storage.low_disk))
    skipped = CounterMetricFamily("cliplive_low_disk_skipped", "Clips and thumbnails not written for low disk space",
                                  labels=["what"])
    for what, count in storage.skipped.items():
        skipped.add_metric([what], count)
    yield skipped


def registry_for(service: Service) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(service))
    return registry
