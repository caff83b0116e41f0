"""Explanations served beside predictions.

- KServe V1: ``POST /v1/models/{name}[/versions/{v}]:explain`` with the
  predict body (``{"instances": [...]}``, optionally ``"parameters"``),
  answered ``{"explanations": [...]}``: one attribution per instance, in the
  instance's shape, with ``"method"``, ``"targets"`` (and
  ``"convergence_delta"`` for integrated gradients).
- Open Inference Protocol V2, as the server extension ``"explain"`` listed
  in ``GET /v2``: ``POST /v2/models/{name}[/versions/{v}]/explain`` with an
  infer body (JSON tensors); the answer's ``outputs`` are the tensors
  ``attributions`` (FP32, the input's shape), ``target`` (INT64) and, for
  integrated gradients, ``convergence_delta`` (FP64).

The method and its parameters come from the model's ``config.json``::

    "explain": {"method": "integrated_gradients", "n_steps": 64,
                "max_steps": 256, "max_samples": 4096, "max_rows": 16}

over which the request's ``parameters`` may set the method's own
parameters (``method``, ``target``, ``n_steps``, ...), never the limits:
a request over ``max_steps`` (integrated gradients' steps, the noise
tunnel's samples), ``max_samples`` (KernelShap's and Lime's samples) or
``max_rows`` (rows per request) is a 400 that names the limit, so that one
request cannot hold a worker for long. ``"enabled": false`` turns explain
off for the model. ``background`` (rows, for KernelShap; default one row of
zeros) and ``baselines`` may be given in the config too.

API keys, the audit log (method, steps, samples, rows, latency: never the
payload) and the Prometheus metrics (``maas_explain_requests``,
``maas_explain_latency_seconds``, ``maas_explain_evaluations`` rows
evaluated) cover explain calls.
"""
from __future__ import annotations

import math
import threading
import time
import weakref

import numpy as np

from .codec import (DATATYPES, check_fields, check_rows, check_values, dumps, json_values,
                    parse_json, parse_shape, to_array)
from .errors import ServingError

__all__ = ["METHODS", "check_config", "explain_v1", "explain_v2", "EXTENSION"]

EXTENSION = "explain"

# method -> (the parameters a request or config may set, the defaults)
METHODS = {
    "integrated_gradients": ({"target", "n_steps", "approximation_method", "baselines"},
                             {"n_steps": 50, "approximation_method": "gausslegendre"}),
    "saliency": ({"target", "abs"}, {"abs": True}),
    "input_x_gradient": ({"target"}, {}),
    "smoothgrad": ({"target", "nt_samples", "stdevs", "seed"},
                   {"nt_samples": 25, "stdevs": 0.15, "seed": 0}),
    "occlusion": ({"target", "sliding_window_shapes", "strides", "baselines"}, {}),
    "feature_ablation": ({"target", "baselines", "feature_mask"}, {}),
    "kernel_shap": ({"target", "n_samples", "seed", "feature_mask"}, {"seed": 0}),
    "lime": ({"target", "n_samples", "seed", "kernel_width", "alpha"},
             {"n_samples": 1000, "seed": 0, "alpha": 1.0}),
}
LIMIT_KEYS = {"max_steps": 512, "max_samples": 8192, "max_rows": 32}
CONFIG_ONLY = {"enabled", "method", "background", "training_data_std"} | set(LIMIT_KEYS)
_GRADIENT = {"integrated_gradients", "saliency", "input_x_gradient", "smoothgrad"}


def check_config(d):
    """A model's ``explain`` config, checked (ValueError naming the key);
    None stays None (explain with the defaults)."""
    if d is None:
        return None
    if not isinstance(d, dict):
        raise ValueError(f"explain must be an object, received {type(d).__name__}")
    method = d.get("method", "integrated_gradients")
    if method not in METHODS:
        raise ValueError(f"explain.method must be one of {', '.join(sorted(METHODS))}, "
                         f"received {method!r}")
    known = CONFIG_ONLY | set().union(*(p for p, _ in METHODS.values()))
    for k in d:
        if k not in known:
            raise ValueError(f"unknown key 'explain.{k}' in the model config; known keys here: "
                             f"{', '.join(sorted(known))}")
    for k in LIMIT_KEYS:
        v = d.get(k, LIMIT_KEYS[k])
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"explain.{k} must be a positive integer, received {v!r}")
    if "enabled" in d and not isinstance(d["enabled"], bool):
        raise ValueError(f"explain.enabled must be true or false, received {d['enabled']!r}")
    return dict(d)


# ---------------------------------------------------------------- state
_state_lock = threading.Lock()
_explainers: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # LoadedVersion -> _Explainer
_metrics: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()      # Metrics -> (counter, hist, counter)


class _Explainer:
    """The explanation methods of one served version (its evaluator, whose
    compiled plans are reused by every request, and KernelShap's background
    expected value, computed once)."""

    def __init__(self, lv):
        from ..explain._model import Evaluator

        served = lv.source
        self.evaluator = Evaluator(served)
        lock = getattr(served, "_lock", None)
        if lock is not None:          # the served model's lock: a plan runs one call at a time
            self.evaluator._lock = lock
        self.methods = {}
        self.lock = threading.Lock()

    def method(self, name, cfg, row_shape):
        from .. import explain as E

        key = (name, row_shape)
        with self.lock:
            m = self.methods.get(key)
            if m is not None:
                return m
            ev = self.evaluator
            if name in _GRADIENT and ev.no_grad_reason is not None:
                raise ServingError(400, f"explain method {name!r} needs the model's gradient, and "
                                        f"this model has none ({ev.no_grad_reason}); use "
                                        f"kernel_shap, lime, occlusion or feature_ablation")
            if name == "integrated_gradients":
                m = E.IntegratedGradients(ev)
            elif name == "saliency":
                m = E.Saliency(ev)
            elif name == "input_x_gradient":
                m = E.InputXGradient(ev)
            elif name == "smoothgrad":
                m = E.SmoothGrad(ev)
            elif name == "occlusion":
                m = E.Occlusion(ev)
            elif name == "feature_ablation":
                m = E.FeatureAblation(ev)
            elif name == "kernel_shap":
                bg = cfg.get("background")
                bg = np.zeros((1,) + row_shape, np.float32) if bg is None else \
                    np.asarray(bg, np.float32).reshape((-1,) + row_shape)
                m = E.KernelShap(ev, bg)
            else:
                std = cfg.get("training_data_std")
                m = E.Lime(ev, feature_scale=std)
            self.methods[key] = m
            return m


def _explainer(lv) -> _Explainer:
    with _state_lock:
        e = _explainers.get(lv)
        if e is None:
            e = _explainers[lv] = _Explainer(lv)
        return e


def _metric_set(metrics):
    with _state_lock:
        s = _metrics.get(metrics)
        if s is None:
            from prometheus_client import Counter, Histogram

            r = metrics.registry
            s = (Counter("maas_explain_requests", "Explain requests by model, method and status",
                         ["model", "method", "status"], registry=r),
                 Histogram("maas_explain_latency_seconds", "Explain latency in seconds",
                           ["model", "method"], registry=r,
                           buckets=(.001, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5, 10, 30)),
                 Counter("maas_explain_evaluations", "Model rows evaluated for explanations",
                         ["model", "method"], registry=r))
            _metrics[metrics] = s
        return s


# --------------------------------------------------------------- the work
def _int_param(params, key, lo=1):
    v = params[key]
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise ServingError(400, f"parameters.{key} must be an integer of at least {lo}, received {v!r}")
    return v


def _resolve(cfg_all, params, rows):
    """(method, its keyword arguments, the audit fields) from the config and
    the request's parameters, within the limits."""
    cfg = cfg_all or {}
    if cfg.get("enabled", True) is False:
        raise ServingError(400, "explain is turned off for this model (config.json's "
                                "explain.enabled is false)")
    if not isinstance(params, dict):
        raise ServingError(400, "the request's 'parameters' must be an object")
    for k in params:
        if k in CONFIG_ONLY and k != "method":
            raise ServingError(400, f"parameters.{k} can only be set in the model's config.json "
                                    f"(explain.{k})")
    name = params.get("method", cfg.get("method", "integrated_gradients"))
    if name not in METHODS:
        raise ServingError(400, f"parameters.method must be one of {', '.join(sorted(METHODS))}, "
                                f"received {name!r}")
    allowed, defaults = METHODS[name]
    for k in params:
        if k != "method" and k not in allowed:
            raise ServingError(400, f"parameters.{k} is not a parameter of {name}; it takes "
                                    f"{', '.join(sorted(allowed)) or 'none'}")
    kw = dict(defaults)
    same_method = cfg.get("method", "integrated_gradients") == name
    if same_method:
        kw.update({k: v for k, v in cfg.items() if k in allowed})
    kw.update({k: v for k, v in params.items() if k != "method"})
    limits = {k: cfg.get(k, d) for k, d in LIMIT_KEYS.items()}
    if rows > limits["max_rows"]:
        raise ServingError(400, f"{rows} rows are over this model's explain limit max_rows="
                                f"{limits['max_rows']} (config.json's explain.max_rows); send fewer "
                                f"rows per request")
    audit = {"explain_method": name}
    for k, lim in (("n_steps", "max_steps"), ("nt_samples", "max_steps"), ("n_samples", "max_samples")):
        if k in kw and kw[k] is not None:
            v = _int_param(kw, k, 2 if k == "n_samples" and name == "lime" else 1)
            if v > limits[lim]:
                raise ServingError(400, f"{k}={v} is over this model's explain limit {lim}="
                                        f"{limits[lim]} (config.json's explain.{lim})")
            audit["steps" if lim == "max_steps" else "samples"] = v
    if name == "kernel_shap" and kw.get("n_samples") is None:
        audit["samples"] = None
    if "approximation_method" in kw:
        kw["method"] = kw.pop("approximation_method")
    return name, kw, audit, limits


def _explain(server, call, lv, x, params):
    from ..explain import ExplainArgumentError
    from ..explain._model import count_rows

    m = lv.model
    cfg = getattr(lv.config, "explain", None)
    rows = int(x.shape[0])
    name, kw, audit, limits = _resolve(cfg, params, rows)
    call.info.setdefault("audit", {}).update(audit)
    ex = _explainer(lv)
    row_shape = tuple(x.shape[1:])
    method = ex.method(name, cfg or {}, row_shape)
    if name == "kernel_shap" and kw.get("n_samples") is None:
        groups = len(np.unique(np.asarray(kw["feature_mask"]))) if kw.get("feature_mask") is not None \
            else int(np.prod(row_shape))
        need = 2 ** groups if groups <= method.exact_max else 2 * groups + 2048
        if need > limits["max_samples"]:   # exact or shap's default budget: within the limit
            kw["n_samples"] = limits["max_samples"]
            call.info["audit"]["samples"] = kw["n_samples"]
    for k in ("baselines", "feature_mask", "sliding_window_shapes", "strides", "target"):
        if isinstance(kw.get(k), list):
            kw[k] = np.asarray(kw[k])
    if name == "integrated_gradients":
        kw["return_convergence_delta"] = True
    if name == "smoothgrad":
        kw.pop("abs", None)
    if name == "occlusion" and "sliding_window_shapes" not in kw:
        kw["sliding_window_shapes"] = tuple(1 for _ in row_shape)
    if isinstance(kw.get("sliding_window_shapes"), np.ndarray):
        kw["sliding_window_shapes"] = tuple(int(v) for v in kw["sliding_window_shapes"])
    if isinstance(kw.get("strides"), np.ndarray):
        kw["strides"] = tuple(int(v) for v in kw["strides"])
    counter = count_rows()
    metrics = _metric_set(server.metrics)
    t0 = time.perf_counter()
    status = 200
    try:
        with counter:
            out = method.attribute(x, **kw)
    except (ExplainArgumentError, TypeError, ValueError) as e:
        status = 400
        raise ServingError(400, f"explain {name}: {e}") from None
    finally:
        dt = time.perf_counter() - t0
        try:
            metrics[0].labels(m.name, name, str(status)).inc()
            metrics[1].labels(m.name, name).observe(dt)
            metrics[2].labels(m.name, name).inc(counter.rows)
        except Exception:  # metrics never fail a request
            pass
    delta = None
    if isinstance(out, tuple):
        out, delta = out
    target = kw.get("target")
    if target is None:
        from ..explain._model import resolve_target

        target = resolve_target(None, ex.evaluator.predict(x))
    target = np.broadcast_to(np.asarray(target, np.int64), (rows,))
    call.info["audit"]["evaluated_rows"] = counter.rows
    return name, np.asarray(out, np.float32), target, delta


# -------------------------------------------------------------- protocols
def _numeric_only(m):
    if any(s.datatype == "BYTES" for s in m.inputs):
        raise ServingError(400, f"model {m.name!r} takes text (BYTES); explanations are computed "
                                f"for numeric inputs only")


def explain_v1(server, reg, call, name, version):
    """KServe V1 ``:explain``: the predict body in, ``{"explanations"}`` out."""
    req = parse_json(server.body(call))
    check_fields(req, "the request", [], ["signature_name", "instances", "inputs", "parameters"])
    if ("instances" in req) == ("inputs" in req):
        raise ServingError(400, "send exactly one of 'instances' (row form) or 'inputs' "
                                "(columnar form)")
    params = req.get("parameters") or {}
    with reg.acquire(name, version) as lv:
        m, cfg = lv.model, lv.config
        _note(call, lv, None)
        _numeric_only(m)
        data = req["instances"] if "instances" in req else req["inputs"]
        what = "instances" if "instances" in req else "inputs"
        if isinstance(data, dict):
            if set(data) != {m.input_name}:
                raise ServingError(400, f"'{what}' names {sorted(data)}; the model's only input is "
                                        f"{m.input_name!r}")
            data = data[m.input_name]
        elif isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
            for i, r in enumerate(data):
                if set(r) != {m.input_name}:
                    raise ServingError(400, f"instances[{i}] names {sorted(r)}; the model's only "
                                            f"input is {m.input_name!r}")
            data = [r[m.input_name] for r in data]
        x = check_values(to_array(data, what), what, cfg.allow_nan)
        x = check_rows(x, m.input_shape, what, cfg.max_rows)
        _note(call, lv, int(x.shape[0]))
        method, attr, target, delta = _explain(server, call, lv, x, params)
    values, nonfinite = json_values(attr)
    out = {"explanations": values, "method": method, "targets": target.tolist(),
           "model": name, "version": str(m.version)}
    if delta is not None:
        out["convergence_delta"] = np.asarray(delta, np.float64).tolist()
    if nonfinite:
        out["nonfinite"] = True
    return _reply(out)


def explain_v2(server, reg, call, name, version=None):
    """The V2 extension: an infer body (JSON tensors) in, the attributions,
    targets and (integrated gradients) convergence deltas as tensors out."""
    if call.headers.get("Inference-Header-Content-Length") is not None:
        raise ServingError(400, "explain takes JSON tensors; binary tensor data is not supported here")
    req = parse_json(server.body(call))
    check_fields(req, "the request", ["inputs"], ["id", "parameters", "outputs"])
    rid = req.get("id")
    if rid is not None and not isinstance(rid, str):
        raise ServingError(400, "the request's 'id' must be a string")
    params = req.get("parameters") or {}
    if not isinstance(params, dict):
        raise ServingError(400, "the request's 'parameters' must be an object")
    with reg.acquire(name, version) as lv:
        m, cfg = lv.model, lv.config
        _note(call, lv, None)
        _numeric_only(m)
        inputs = req["inputs"]
        if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
            raise ServingError(400, f"'inputs' must be an array of the model's 1 input tensor "
                                    f"({m.input_name!r})")
        inp = inputs[0]
        check_fields(inp, "inputs[0]", ["name", "shape", "datatype", "data"], ["parameters"])
        if inp["name"] != m.input_name:
            raise ServingError(400, f"unknown input {inp['name']!r}; model {name!r} has the input "
                                    f"{m.input_name!r}")
        dt = inp["datatype"]
        if dt not in DATATYPES:
            raise ServingError(400, f"inputs[0].datatype {dt!r} is not supported; use one of "
                                    f"{', '.join(DATATYPES)}")
        shape = parse_shape(inp["shape"], "inputs[0]")
        arr = to_array(inp["data"], "inputs[0].data", dt)
        count = math.prod(shape)
        if arr.size != count:
            raise ServingError(400, f"inputs[0]: shape {list(shape)} needs {count} values, data has "
                                    f"{arr.size}")
        x = check_values(arr.reshape(shape), "inputs[0]", cfg.allow_nan, dt)
        x = check_rows(x, m.input_shape, "inputs[0]", cfg.max_rows)
        _note(call, lv, int(x.shape[0]))
        method, attr, target, delta = _explain(server, call, lv, x, params)
    data, nonfinite = json_values(attr, flat=True)
    outs = [{"name": "attributions", "datatype": "FP32", "shape": list(attr.shape), "data": data},
            {"name": "target", "datatype": "INT64", "shape": [len(target)], "data": target.tolist()}]
    if nonfinite:
        outs[0]["parameters"] = {"nonfinite": True}
    if delta is not None:
        outs.append({"name": "convergence_delta", "datatype": "FP64", "shape": [len(delta)],
                     "data": np.asarray(delta, np.float64).tolist()})
    resp = {"model_name": name, "model_version": str(m.version), "outputs": outs,
            "parameters": {"method": method}}
    if rid is not None:
        resp["id"] = rid
    return _reply(resp)


def _note(call, lv, rows):
    info = call.info
    info["model"] = lv.model.name
    info["version"] = lv.model.version
    info["rows"] = rows


def _reply(obj):
    from .app import _Reply

    return _Reply(dumps(obj), 200, "application/json")
