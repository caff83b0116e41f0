"""Serving benchmark: ``maas serve`` under every candidate HTTP server
(``--server gevent|gthread|granian|uvicorn``) against a Flask + PyTorch
``/predict`` server written by hand, run under the *same* HTTP server with
the same settings (2 workers; 16 threads where the server has threads),
in one run on one machine.

    PYTHONPATH=.:tests python benchmarks/serve.py [--seconds 3] [--servers gevent,gthread]
    PYTHONPATH=.:tests python benchmarks/serve.py --protocols    # gRPC against HTTP

The model is the digits MLP of ``maas demo`` (64 -> 128 relu -> 10
softmax; seeded weights, as the cost does not depend on their values),
saved as a real model.maas; the torch model gets the same weights. Cells:
single-row requests at concurrency 1, 8, 32, 64 and 64-row requests at
1 and 8; then, per server, the resilience cell: single-row requests at
concurrency 8 while 100 slowloris connections hold partial headers open
(each sends a header byte every second and reconnects when closed); a
request not answered within 5 s counts as an error. Each cell runs
``--repeats`` times, maas and torch taking turns; the run with the median
throughput is shown.

The client is http.client in this process, one keep-alive connection per
thread and a pre-encoded body, so that it takes as little of the shared
machine as it can; client and server share the same cores (their CPU use
is shown per cell: cores busy, client = this process, server = the
master and its workers). Prints a Markdown table for RESULTS.md.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from types import SimpleNamespace

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
import serving_fixture as sf  # noqa: E402
from maas.serving.cli import SERVERS, server_command  # noqa: E402

N_IN, HIDDEN, N_OUT = 64, 128, 10

TORCH_APP = textwrap.dedent('''
    import numpy as np, torch
    from flask import Flask, request, jsonify
    torch.set_num_threads(1)
    w = np.load({npz!r})
    model = torch.nn.Sequential(torch.nn.Linear(w["w1"].shape[0], w["w1"].shape[1]), torch.nn.ReLU(),
                                torch.nn.Linear(w["w2"].shape[0], w["w2"].shape[1]), torch.nn.Softmax(-1))
    with torch.no_grad():
        model[0].weight.copy_(torch.from_numpy(w["w1"].T)); model[0].bias.copy_(torch.from_numpy(w["b1"]))
        model[2].weight.copy_(torch.from_numpy(w["w2"].T)); model[2].bias.copy_(torch.from_numpy(w["b2"]))
    model.eval()
    app = Flask(__name__)

    @app.post("/predict")
    def predict():
        x = torch.tensor(request.get_json()["x"], dtype=torch.float32)
        with torch.no_grad():
            y = model(x)
        return jsonify({{"predictions": y.tolist()}})


    def asgi():
        from a2wsgi import WSGIMiddleware
        return WSGIMiddleware(app, workers=int({threads!r}))
''')


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, path, proc, body):
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server died")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("POST", path, body, {"Content-Type": "application/json"})
            if c.getresponse().status == 200:
                c.close()
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server not ready")


def _proc_cpu(pid):
    """CPU seconds (user + system) used so far by pid and its children."""
    total = 0.0
    for q in [pid] + _children(pid):
        try:
            with open(f"/proc/{q}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
            total += (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def _children(pid):
    out = []
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def measure(port, path, body, conc, seconds, server_pid=None, timeout=30.0):
    """conc client threads, each with one keep-alive connection. Returns
    req/s, p50, p99 (ms), errors, client and server CPU (cores busy)."""
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    lat, stop, errors = [], threading.Event(), []

    def client():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        mine = []
        clock = time.perf_counter
        while not stop.is_set():
            t = clock()
            try:
                c.request("POST", path, body, headers)
                r = c.getresponse()
                r.read()
                ok = r.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
            mine.append(clock() - t)
            if not ok:
                errors.append(1)
        c.close()
        lat.extend(mine)

    ts = [threading.Thread(target=client) for _ in range(conc)]
    c0, s0 = time.process_time(), (_proc_cpu(server_pid) if server_pid else 0.0)
    t0 = time.perf_counter()
    [t.start() for t in ts]
    time.sleep(seconds)
    stop.set()
    [t.join() for t in ts]
    dt = time.perf_counter() - t0
    ccpu = (time.process_time() - c0) / dt
    scpu = ((_proc_cpu(server_pid) - s0) / dt) if server_pid else float("nan")
    a = np.asarray(lat) * 1000 if lat else np.asarray([float("nan")])
    return (len(lat) - len(errors)) / dt, float(np.percentile(a, 50)), float(np.percentile(a, 99)), \
        len(errors), ccpu, scpu


class Slowloris:
    """n connections that send a request line and then one header byte a
    second, never finishing; a closed one is opened again."""

    def __init__(self, port, n=100):
        self.port, self.n, self.stop = port, n, threading.Event()
        self.reopened = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def _open(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nX-a: ")
        return s

    def run(self):
        socks = []
        for _ in range(self.n):
            try:
                socks.append(self._open())
            except OSError:
                socks.append(None)
        while not self.stop.wait(1.0):
            for i, s in enumerate(socks):
                try:
                    if s is None:
                        raise OSError
                    s.sendall(b"a")
                except OSError:
                    if s is not None:
                        s.close()
                    self.reopened += 1
                    try:
                        socks[i] = self._open()
                    except OSError:
                        socks[i] = None
        for s in socks:
            if s is not None:
                s.close()

    def __enter__(self):
        self.thread.start()
        time.sleep(2.0)  # all open and past their first bytes
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def start(server, app, port, repo, tmp, args, env):
    a = SimpleNamespace(server=server, host="127.0.0.1", port=port, workers=args.workers,
                        threads=args.threads, header_timeout=10.0, body_timeout=30.0,
                        max_client_connections=256, max_connections=1000, graceful_timeout=5.0,
                        timeout=60.0, certfile=None, keyfile=None, ca_certs=None,
                        require_client_cert=False, forwarded_allow_ips=None)
    e = dict(env)
    cmd = server_command(a, e)
    if app == "maas":
        from maas.serving.cli import OPTIONS_ENV, _options

        opts = SimpleNamespace(repo=repo, poll_interval=0, max_body_bytes=16 << 20, audit_log="off",
                               loader=None, batching=False, api_key=None, model_threads=None,
                               workers=args.workers)
        e[OPTIONS_ENV] = json.dumps(_options(opts))
        e.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="prom-", dir=tmp))
    else:  # the same command, serving the hand-written app
        if "--factory" in cmd:
            cmd.remove("--factory")
        cmd[-1] = "torch_app:asgi" if server == "uvicorn" else "torch_app:app"
        if server == "uvicorn":
            cmd.insert(cmd.index("--workers"), "--factory")
    return subprocess.Popen(cmd, env=e, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def measure_calls(make, conc, seconds, server_pid=None):
    """conc client threads, each with its own ``make()`` (a callable doing
    one request, True when it succeeded). Same figures as :func:`measure`."""
    lat, stop, errors = [], threading.Event(), []

    def client():
        call = make()
        mine = []
        clock = time.perf_counter
        while not stop.is_set():
            t = clock()
            try:
                ok = call()
            except Exception:
                ok = False
            mine.append(clock() - t)
            if not ok:
                errors.append(1)
        lat.extend(mine)

    ts = [threading.Thread(target=client) for _ in range(conc)]
    c0, s0 = time.process_time(), (_proc_cpu(server_pid) if server_pid else 0.0)
    t0 = time.perf_counter()
    [t.start() for t in ts]
    time.sleep(seconds)
    stop.set()
    [t.join() for t in ts]
    dt = time.perf_counter() - t0
    ccpu = (time.process_time() - c0) / dt
    scpu = ((_proc_cpu(server_pid) - s0) / dt) if server_pid else float("nan")
    a = np.asarray(lat) * 1000 if lat else np.asarray([float("nan")])
    return (len(lat) - len(errors)) / dt, float(np.percentile(a, 50)), float(np.percentile(a, 99)), \
        len(errors), ccpu, scpu


def protocols(args):
    """gRPC against HTTP on one server: `maas serve --grpc-port` (gunicorn,
    --workers gevent workers, plus its one gRPC process)."""
    import grpc

    import serving_prod_fixture as pf
    from maas.serving.proto import grpc_service_pb2 as pb, grpc_service_pb2_grpc as pbg

    tmp = tempfile.mkdtemp(prefix="maas-bench-")
    repo = os.path.join(tmp, "repo")
    sf.save_model(repo, "digits", 1, 0, n_in=N_IN, hidden=HIDDEN, n_out=N_OUT)
    pf.save_two(repo, "two", 1, 0)
    port, gport = free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]),
               PROMETHEUS_MULTIPROC_DIR=os.path.join(tmp, "prom"))
    env.pop("MAAS_SERVING_LOADER", None)
    env.pop("MAAS_API_KEYS", None)
    proc = subprocess.Popen([sys.executable, "-m", "maas.serving.cli", repo, "--port", str(port),
                             "--grpc-port", str(gport), "--workers", str(args.workers),
                             "--audit-log", "off", "--poll-interval", "0"],
                            env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    rng = np.random.default_rng(0)
    cases = {}  # name -> (http path, http body, http headers, grpc request)
    for rows in (1, 64):
        x = rng.random((rows, N_IN)).astype(np.float32)
        head = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                       "parameters": {"binary_data_size": x.nbytes}}],
                           "parameters": {"binary_data_output": True}}).encode()
        req = pb.ModelInferRequest(model_name="digits", inputs=[pb.ModelInferRequest.InferInputTensor(
            name="input", datatype="FP32", shape=list(x.shape))], raw_input_contents=[x.tobytes()])
        cases[f"digits {rows} row{'s' if rows > 1 else ''}"] = (
            ("/v2/models/digits/infer", head + x.tobytes(), {"Inference-Header-Content-Length": str(len(head))}),
            ("/v2/models/digits/infer", json.dumps({"inputs": [{"name": "input", "shape": list(x.shape),
                                                                 "datatype": "FP32",
                                                                 "data": x.ravel().tolist()}]}).encode(), {}),
            ("/models/digits/predict", json.dumps({"x": x.tolist()}).encode(), {}), req)
    a, b = rng.random((1, pf.A)).astype(np.float32), rng.random((1, pf.B)).astype(np.float32)
    head = json.dumps({"inputs": [{"name": "a", "shape": [1, pf.A], "datatype": "FP32",
                                   "parameters": {"binary_data_size": a.nbytes}},
                                  {"name": "b", "shape": [1, pf.B], "datatype": "FP32",
                                   "parameters": {"binary_data_size": b.nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()
    T = pb.ModelInferRequest.InferInputTensor
    cases["two inputs, 1 row"] = (
        ("/v2/models/two/infer", head + a.tobytes() + b.tobytes(), {"Inference-Header-Content-Length": str(len(head))}),
        ("/v2/models/two/infer", json.dumps({"inputs": [
            {"name": "a", "shape": [1, pf.A], "datatype": "FP32", "data": a.ravel().tolist()},
            {"name": "b", "shape": [1, pf.B], "datatype": "FP32", "data": b.ravel().tolist()}]}).encode(), {}),
        ("/models/two/predict", json.dumps({"x": {"a": a.tolist(), "b": b.tolist()}}).encode(), {}),
        pb.ModelInferRequest(model_name="two", inputs=[T(name="a", datatype="FP32", shape=[1, pf.A]),
                                                       T(name="b", datatype="FP32", shape=[1, pf.B])],
                             raw_input_contents=[a.tobytes(), b.tobytes()]))

    def http_call(path, body, extra):
        def make():
            c = [http.client.HTTPConnection("127.0.0.1", port, timeout=30)]
            h = {"Content-Type": "application/json", "Content-Length": str(len(body)), **extra}

            def call():
                try:
                    c[0].request("POST", path, body, h)
                    r = c[0].getresponse()
                    r.read()
                    return r.status == 200
                except (OSError, http.client.HTTPException):
                    c[0].close()
                    c[0] = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    return False
            return call
        return make

    def grpc_call(req):
        def make():
            ch = grpc.insecure_channel(f"127.0.0.1:{gport}")
            stub = pbg.GRPCInferenceServiceStub(ch)
            return lambda: bool(stub.ModelInfer(req, timeout=30).outputs)
        return make

    results = {}
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                ch = grpc.insecure_channel(f"127.0.0.1:{gport}")
                if pbg.GRPCInferenceServiceStub(ch).ServerReady(pb.ServerReadyRequest(), timeout=2).ready \
                        and http_call(*cases["digits 1 row"][0])()():
                    break
            except Exception:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server not ready")
            time.sleep(0.3)
        kinds = ("HTTP V2 binary", "HTTP V2 JSON", "HTTP /predict", "gRPC raw")
        for name, (hb, hj, hp, greq) in cases.items():
            makers = dict(zip(kinds, (http_call(*hb), http_call(*hj), http_call(*hp), grpc_call(greq))))
            for conc in (1, 8):
                runs = {k: [] for k in kinds}
                for _ in range(args.repeats):
                    for k, mk in makers.items():
                        measure_calls(mk, conc, 0.3)  # warm up
                        runs[k].append(measure_calls(mk, conc, args.seconds, proc.pid))
                for k in kinds:
                    results[name, conc, k] = sorted(runs[k])[len(runs[k]) // 2]
                    print(name, conc, k, "%.0f req/s p50 %.2f p99 %.2f err %d cpu %.2f/%.2f"
                          % results[name, conc, k], file=sys.stderr)
    finally:
        stop(proc)
    print("| request | concurrency | protocol | req/s | p50 ms | p99 ms | errors | client CPU | server CPU |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (name, conc, k), (rps, p50, p99, err, cc, sc) in results.items():
        print(f"| {name} | {conc} | {k} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {err} | {cc:.2f} | {sc:.2f} |")
    print(f"(one `maas serve --grpc-port` with {args.workers} gevent workers for HTTP and its one "
          f"gRPC process; server CPU = master, workers and the gRPC process; cores busy of "
          f"{os.cpu_count()}; median of {args.repeats} runs of {args.seconds:g} s)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=3, help="runs per cell; the median is shown")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--protocols", action="store_true",
                    help="instead: gRPC against HTTP (V2 binary, V2 JSON, /predict) on one "
                         "`maas serve --grpc-port` for single-row and 64-row requests and a "
                         "two-input model")
    args = ap.parse_args()
    if args.protocols:
        return protocols(args)
    tmp = tempfile.mkdtemp(prefix="maas-bench-")
    repo = os.path.join(tmp, "repo")
    sf.save_model(repo, "digits", 1, 0, config={"batching": {"max_batch_size": 32, "max_delay_ms": 1}},
                  n_in=N_IN, hidden=HIDDEN, n_out=N_OUT)
    npz = os.path.join(tmp, "digits.npz")
    np.savez(npz, **sf.weights(0, N_IN, HIDDEN, N_OUT))
    with open(os.path.join(tmp, "torch_app.py"), "w") as f:
        f.write(TORCH_APP.format(npz=npz, threads=args.threads))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests"), tmp]))
    env.pop("MAAS_SERVING_LOADER", None)
    rng = np.random.default_rng(0)
    bodies = {n: json.dumps({"x": rng.random((n, N_IN)).round(4).tolist()}).encode() for n in (1, 64)}
    cells = [(1, 1), (1, 8), (1, 32), (1, 64), (64, 1), (64, 8)]
    apps = ["maas"] + ([] if args.no_torch else ["flask+torch"])
    results, slow = {}, {}
    for server in args.servers.split(","):
        procs = {}
        try:
            for app in apps:
                port = free_port()
                path = "/models/digits/predict" if app == "maas" else "/predict"
                procs[app] = (port, path, start(server, app, port, repo, tmp, args, env))
            for port, path, proc in procs.values():
                wait_ready(port, path, proc, bodies[1])
            for rows, conc in cells:
                runs = {app: [] for app in apps}
                for _ in range(args.repeats):  # the apps take turns, so both see the same machine
                    for app, (port, path, proc) in procs.items():
                        measure(port, path, bodies[rows], conc, 0.3)  # warm up
                        runs[app].append(measure(port, path, bodies[rows], conc, args.seconds, proc.pid))
                for app in apps:  # the run with the median throughput
                    results[server, app, rows, conc] = sorted(runs[app])[len(runs[app]) // 2]
                    print(server, app, rows, conc, "%.0f req/s p50 %.2f p99 %.2f err %d cpu %.2f/%.2f"
                          % results[server, app, rows, conc], file=sys.stderr)
            port, path, proc = procs["maas"]
            with Slowloris(port) as sl:
                slow[server] = measure(port, path, bodies[1], 8, args.seconds * 2, proc.pid,
                                       timeout=5.0) + (sl.reopened,)
            print(server, "slowloris", slow[server], file=sys.stderr)
        finally:
            for _, _, proc in procs.values():
                stop(proc)
    print("| server | rows | concurrency | app | req/s | p50 ms | p99 ms | errors | client CPU | server CPU |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for server in args.servers.split(","):
        for rows, conc in cells:
            for app in apps:
                rps, p50, p99, err, cc, sc = results[server, app, rows, conc]
                print(f"| {server} | {rows} | {conc} | {app} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {err} "
                      f"| {cc:.2f} | {sc:.2f} |")
            if not args.no_torch:
                r = results[server, "maas", rows, conc][0] / results[server, "flask+torch", rows, conc][0]
                print(f"| {server} | {rows} | {conc} | ratio maas/torch | {r:.2f}x | | | | | |")
    print()
    print("| server | good req/s | p50 ms | p99 ms | errors (no answer in 5 s) | slowloris reconnects |")
    print("|---|---|---|---|---|---|")
    for server, (rps, p50, p99, err, cc, sc, re) in slow.items():
        print(f"| {server} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {err} | {re} |")
    print(f"(CPU columns: cores busy, of {os.cpu_count()}; server = master + workers; "
          f"resilience: single-row requests at concurrency 8, 100 slowloris connections, "
          f"{args.seconds * 2:g} s)")


if __name__ == "__main__":
    main()
