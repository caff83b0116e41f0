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
        # the statistics extension's figures (GET /v2/models/{m}/stats reads
        # them back, summed over every process of the server)
        mv = ["model", "version"]
        tb = (.0001, .0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5)
        self.inference = Histogram("maas_inference_seconds", "Inference requests by outcome "
                                   "(success, fail), whole request", mv + ["outcome"], registry=r,
                                   buckets=tb)
        self.queue = Histogram("maas_queue_seconds", "Time an inference request waited for its "
                               "forward pass (batching queue, model lock)", mv, registry=r, buckets=tb)
        self.compute = Histogram("maas_compute_seconds", "Forward-pass time of an inference "
                                 "request's batch", mv, registry=r, buckets=tb)
        self.compute_input = Counter("maas_compute_input_seconds", "Parsing and checking inputs",
                                     mv, registry=r)
        self.compute_output = Counter("maas_compute_output_seconds", "Building the answer", mv,
                                      registry=r)
        self.rows = Counter("maas_inference_rows", "Rows inferred (Triton's inference_count)",
                            mv, registry=r)
        self.executions = Counter("maas_executions", "Forward passes by batch size", mv + ["batch_size"],
                                  registry=r)
        self.execution_seconds = Counter("maas_execution_seconds", "Forward-pass seconds by batch "
                                         "size", mv + ["batch_size"], registry=r)
        self.last = Gauge("maas_last_inference_ms", "When the last inference ended (ms since the "
                          "epoch)", mv, registry=r,
                          **({"multiprocess_mode": "max"} if self.multiprocess else {}))

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
        mv = (model, str(version))
        self._child(self.batch, mv).observe(n)
        if seconds is not None:
            self._child(self.executions, mv + (str(n),)).inc()
            self._child(self.execution_seconds, mv + (str(n),)).inc(seconds)

    def on_infer(self, model, version, ok, seconds, queue, compute, c_in, c_out, rows):
        """One inference request as the statistics extension counts it."""
        import time as _t

        mv = (model, str(version))
        self._child(self.inference, mv + ("success" if ok else "fail",)).observe(seconds)
        if ok:
            self._child(self.queue, mv).observe(queue)
            self._child(self.compute, mv).observe(compute)
            self._child(self.compute_input, mv).inc(max(0.0, c_in))
            self._child(self.compute_output, mv).inc(max(0.0, c_out))
            self._child(self.rows, mv).inc(rows)
            self._child(self.last, mv).set(int(_t.time() * 1000))

    def samples(self):
        """Every sample, summed over the server's processes in multiprocess mode."""
        if self.multiprocess:
            from prometheus_client import CollectorRegistry, multiprocess

            reg = CollectorRegistry()
            multiprocess.MultiProcessCollector(reg)
        else:
            reg = self.registry
        for metric in reg.collect():
            for smp in metric.samples:
                yield smp.name, smp.labels, smp.value

    def stats(self, versions) -> list[dict]:
        """Triton's model_stats for ``versions`` (``[(model, version)]``)."""
        want = {(m, str(v)) for m, v in versions}
        acc = {}

        def slot(key):
            return acc.setdefault(key, {"c": {}, "b": {}})

        for name, labels, value in self.samples():
            key = (labels.get("model"), labels.get("version"))
            if key not in want:
                continue
            d = slot(key)["c"]
            if name.startswith("maas_inference_seconds_"):
                tag = labels["outcome"] + name[len("maas_inference_seconds"):]
            elif name in ("maas_queue_seconds_count", "maas_queue_seconds_sum",
                          "maas_compute_seconds_count", "maas_compute_seconds_sum"):
                tag = name[len("maas_"):].replace("_seconds", "")
            elif name in ("maas_compute_input_seconds_total", "maas_compute_output_seconds_total",
                          "maas_inference_rows_total"):
                tag = name[len("maas_"):-len("_total")]
            elif name == "maas_last_inference_ms":
                tag = "last"
            elif name in ("maas_executions_total", "maas_execution_seconds_total"):
                b = slot(key)["b"].setdefault(int(labels["batch_size"]), [0, 0.0])
                b[0 if name == "maas_executions_total" else 1] += value
                continue
            else:
                continue
            if tag.endswith("_bucket"):
                continue
            d[tag] = d.get(tag, 0) + value if tag != "last" else max(d.get(tag, 0), value)

        def dur(count, seconds):
            return {"count": int(round(count)), "ns": int(round(seconds * 1e9))}

        out = []
        for m, v in sorted(want, key=lambda t: (t[0], int(t[1]) if t[1].isdigit() else 0)):
            c = acc.get((m, v), {"c": {}, "b": {}})
            d, b = c["c"], c["b"]
            ok = d.get("success_count", 0)
            out.append({
                "name": m, "version": v, "last_inference": int(d.get("last", 0)),
                "inference_count": int(round(d.get("inference_rows", 0))),
                "execution_count": int(round(sum(x[0] for x in b.values()))),
                "inference_stats": {
                    "success": dur(ok, d.get("success_sum", 0)),
                    "fail": dur(d.get("fail_count", 0), d.get("fail_sum", 0)),
                    "queue": dur(d.get("queue_count", 0), d.get("queue_sum", 0)),
                    "compute_input": dur(ok, d.get("compute_input", 0)),
                    "compute_infer": dur(d.get("compute_count", 0), d.get("compute_sum", 0)),
                    "compute_output": dur(ok, d.get("compute_output", 0)),
                    "cache_hit": dur(0, 0), "cache_miss": dur(0, 0)},
                "batch_stats": [{"batch_size": n, "compute_input": dur(x[0], 0),
                                 "compute_infer": dur(x[0], x[1]), "compute_output": dur(x[0], 0)}
                                for n, x in sorted(b.items())]})
        return out

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
