"""Serving benchmark: maas serve (batching on) against a Flask + PyTorch
/predict server written by hand, both under gunicorn with the same settings
(2 gthread workers, 16 threads), single-row requests at concurrency 1, 8, 32.

    PYTHONPATH=.:tests python benchmarks/serve.py [--seconds 5]

Prints requests/s, p50/p99 latency, and the CPU cores used by the client
and by each server per cell, and the ratio. The client is http.client with
one keep-alive connection per thread and a pre-encoded body, so that it
takes as little of the shared machine as it can. Uses the
serving test fixture's MLP (tests/serving_fixture.py) until maas.load_model
exists; the torch model gets the same weights.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import numpy as np
import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
import serving_fixture as sf  # noqa: E402

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
''')


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url, proc):
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError("server died")
        try:
            requests.post(url, json={"x": [[0.0] * sf.IN]}, timeout=10)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise RuntimeError("server not ready")


def _proc_cpu(pids):
    """CPU seconds (user + system) used so far by these processes and their children."""
    total = 0.0
    for pid in pids:
        for q in [pid] + _children(pid):
            try:
                with open(f"/proc/{q}/stat") as f:
                    parts = f.read().rsplit(")", 1)[1].split()
                total += (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, IndexError, ValueError):
                pass
    return total


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def measure(url, conc, seconds, server_pid=None):
    """conc client threads, each with one keep-alive http.client connection
    and a pre-encoded body (the client must cost little: it shares the
    machine with the server). Returns req/s, p50, p99, errors and the CPU
    cores used by the client and the server during the run."""
    import http.client
    import json
    from urllib.parse import urlsplit

    u = urlsplit(url)
    body = json.dumps({"x": np.random.default_rng(0).normal(size=(1, sf.IN)).tolist()}).encode()
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    lat, stop, errors = [], threading.Event(), []

    def client():
        c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        mine = []
        clock = time.perf_counter
        while not stop.is_set():
            t = clock()
            c.request("POST", u.path, body, headers)
            r = c.getresponse()
            r.read()
            mine.append(clock() - t)
            if r.status != 200:
                errors.append(r.status)
        c.close()
        lat.extend(mine)

    ts = [threading.Thread(target=client) for _ in range(conc)]
    c0, s0 = time.process_time(), (_proc_cpu([server_pid]) if server_pid else 0.0)
    t0 = time.perf_counter()
    [t.start() for t in ts]
    time.sleep(seconds)
    stop.set()
    [t.join() for t in ts]
    dt = time.perf_counter() - t0
    ccpu = (time.process_time() - c0) / dt
    scpu = ((_proc_cpu([server_pid]) - s0) / dt) if server_pid else float("nan")
    a = np.asarray(lat) * 1000
    return len(a) / dt, float(np.percentile(a, 50)), float(np.percentile(a, 99)), len(errors), ccpu, scpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=16, help="gthread threads per worker, both servers")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="maas-bench-")
    repo = os.path.join(tmp, "repo")
    sf.save_version(repo, "mlp", 1, 0, config={"batching": {"max_batch_size": 32, "max_delay_ms": 1}})
    npz = os.path.join(repo, "mlp", "1", "weights.npz")
    with open(os.path.join(tmp, "torch_app.py"), "w") as f:
        f.write(TORCH_APP.format(npz=npz))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests"), tmp]),
               MAAS_SERVING_LOADER="serving_fixture:load_npz")
    gun = ["--worker-class", "gthread", "--workers", str(args.workers), "--threads", str(args.threads)]
    servers = {}
    p1 = free_port()
    servers["maas"] = (f"http://127.0.0.1:{p1}/models/mlp/predict", subprocess.Popen(
        [sys.executable, "-m", "maas.serving.cli", repo, "--port", str(p1), "--workers", str(args.workers),
         "--threads", str(args.threads), "--audit-log", "off"], env=env, stderr=subprocess.DEVNULL))
    p2 = free_port()
    servers["flask+torch"] = (f"http://127.0.0.1:{p2}/predict", subprocess.Popen(
        [sys.executable, "-m", "gunicorn", *gun, "--bind", f"127.0.0.1:{p2}", "--no-control-socket",
         "torch_app:app"], env=env, stderr=subprocess.DEVNULL, cwd=tmp))
    try:
        for url, proc in servers.values():
            wait_ready(url, proc)
        rows = []
        for conc in (1, 8, 32):
            res = {}
            for name, (url, proc) in servers.items():
                measure(url, conc, 0.5)  # warm up
                res[name] = measure(url, conc, args.seconds, proc.pid)
            rows.append((conc, res))
        print("| concurrency | server | req/s | p50 ms | p99 ms | errors | client CPU | server CPU |")
        print("|---|---|---|---|---|---|---|---|")
        for conc, res in rows:
            for name, (rps, p50, p99, err, ccpu, scpu) in res.items():
                print(f"| {conc} | {name} | {rps:.0f} | {p50:.2f} | {p99:.2f} | {err} | {ccpu:.2f} | {scpu:.2f} |")
            print(f"| {conc} | ratio maas/torch | {res['maas'][0] / res['flask+torch'][0]:.2f}x | | | | | |")
        print(f"(CPU columns: cores busy, of {os.cpu_count()}; server = gunicorn master + workers)")
    finally:
        for _, proc in servers.values():
            proc.terminate()
            proc.wait(20)


if __name__ == "__main__":
    main()
