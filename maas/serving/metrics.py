"""Prometheus metrics. Under gunicorn (``PROMETHEUS_MULTIPROC_DIR`` set)
prometheus-client's multiprocess mode sums the figures over workers; the
CLI's gunicorn config calls ``mark_process_dead`` when a worker exits."""
from __future__ import annotations

import os
import threading

_lock = threading.Lock()
_shared = None


class Metrics:
    def __init__(self, registry=None):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter("maas_requests", "Requests by model, version, protocol and status",
                                ["model", "version", "protocol", "status"], registry=r)
        self.latency = Histogram("maas_request_latency_seconds", "Request latency in seconds",
                                 ["model", "protocol"], registry=r,
                                 buckets=(.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5))
        self.batch = Histogram("maas_batch_size", "Rows per forward pass", ["model", "version"],
                               registry=r, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024))
        gauge_kw = {"multiprocess_mode": "livemax"} if self.multiprocess else {}
        self.loaded = Gauge("maas_models_loaded", "Model versions loaded (per worker, max)",
                            registry=r, **gauge_kw)

        # labelled children, looked up once: labels() validates and locks
        # on every call, which costs more than the observation itself
        self._children = {}

    def _child(self, metric, labels):
        key = (id(metric), labels)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*labels)
        return c

    def on_request(self, model, version, protocol, status, seconds):
        """One request: counted by status, its latency observed."""
        self._child(self.requests, (model, version, protocol, str(status))).inc()
        self._child(self.latency, (model, protocol)).observe(seconds)

    def on_batch(self, model, version, n, seconds=None):
        self._child(self.batch, (model, str(version))).observe(n)

    def on_change(self, registry):
        self.loaded.set(sum(len(e.versions) for e in registry.entries.values()))

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if self.multiprocess:
            from prometheus_client import multiprocess

            reg = CollectorRegistry()
            multiprocess.MultiProcessCollector(reg)
            return generate_latest(reg), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def get_metrics() -> Metrics:
    """One Metrics per process in multiprocess mode (values live in files
    keyed by pid), a fresh one per app otherwise (so tests stay apart)."""
    global _shared
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        with _lock:
            if _shared is None:
                _shared = Metrics()
            return _shared
    return Metrics()
