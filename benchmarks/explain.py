"""Explanation benchmark: maas.explain against what a user would pick
instead, each framework in its own process, in one run on one machine.

    flock /tmp/maas-bench.lock python benchmarks/explain.py [--repeats 7]

Cells:
1. IntegratedGradients, 50 steps (Gauss-Legendre), 32 rows, on the digits
   MLP (64 -> 128 relu -> 10 softmax, seeded weights): maas against
   Captum's IntegratedGradients on the same network in PyTorch (float32).
2. KernelShap, 2,048 coalitions, 64 features, 4 rows, a background of 20
   digits: maas against shap.KernelExplainer calling the same maas model
   (``model.predict(z, batch_size=4096)``, the fastest way to call it).
3. The served explain call (``POST /v1/models/mlp:explain``, one row,
   integrated gradients 50 steps) against ``maas serve`` (gunicorn +
   gevent, 2 workers) on loopback at concurrency 1 and 8: latency
   percentiles and requests/s.

Each timing is the median of ``--repeats`` runs after a warm-up. Prints a
Markdown table for RESULTS.md.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
N_IN, HIDDEN, N_OUT = 64, 128, 10


def weights():
    rng = np.random.default_rng(0)
    return [rng.normal(0, 0.3, (N_IN, HIDDEN)).astype(np.float32), rng.normal(0, .1, HIDDEN).astype(np.float32),
            rng.normal(0, 0.3, (HIDDEN, N_OUT)).astype(np.float32), rng.normal(0, .1, N_OUT).astype(np.float32)]


def digits(n, offset=0):
    from sklearn.datasets import load_digits

    return (load_digits().data[offset:offset + n] / 16.0).astype(np.float32)


def maas_model():
    import maas

    m = maas.Sequential([maas.Input((N_IN,), name="input"), maas.layers.Dense(HIDDEN, activation="relu"),
                         maas.layers.Dense(N_OUT, activation="softmax")])
    m.set_weights(weights())
    return m


def torch_model():
    import torch

    w1, b1, w2, b2 = weights()
    net = torch.nn.Sequential(torch.nn.Linear(N_IN, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, N_OUT),
                              torch.nn.Softmax(-1))
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(w1.T)); net[0].bias.copy_(torch.from_numpy(b1))
        net[2].weight.copy_(torch.from_numpy(w2.T)); net[2].bias.copy_(torch.from_numpy(b2))
    return net.eval()


def timed(fn, repeats):
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), out


# --------------------------------------------------------------- workers
def worker(name, repeats, threads, background=20):
    import maas

    maas.set_num_threads(threads)
    if name.endswith("captum"):
        import torch

        torch.set_num_threads(threads)
    x = digits(32)
    if name == "ig-maas":
        from maas import explain

        m = maas_model()
        t = m.predict(x, verbose=0).argmax(1)
        ig = explain.IntegratedGradients(m)
        s, a = timed(lambda: ig.attribute(x, target=t, n_steps=50), repeats)
        return {"seconds": s, "attr": a.tolist()}
    if name == "ig-captum":
        import torch
        from captum.attr import IntegratedGradients

        net = torch_model()
        xt = torch.from_numpy(x)
        t = net(xt).argmax(1)
        ig = IntegratedGradients(net)
        s, a = timed(lambda: ig.attribute(xt, target=t, n_steps=50).detach().numpy(), repeats)
        return {"seconds": s, "attr": a.tolist(), "torch_threads": torch.get_num_threads()}
    xs, bg = digits(4, 100), digits(background, 200)
    if name == "ks-maas":
        from maas import explain

        from maas.explain import kernel_shap

        ks = explain.KernelShap(maas_model(), bg)

        def run():   # the coalitions are drawn anew each time (maas caches them per game size)
            kernel_shap._coalitions_cached.cache_clear()
            return ks.attribute(xs, n_samples=2048, seed=0, return_all_outputs=True)
        s, a = timed(run, repeats)
        return {"seconds": s, "attr": a.tolist()}
    if name == "ks-shap":
        import shap

        m = maas_model()
        ke = shap.KernelExplainer(lambda z: m.predict(z, batch_size=4096, verbose=0), bg)
        s, a = timed(lambda: np.asarray(ke.shap_values(xs, nsamples=2048, silent=True)),
                     max(1, repeats // 3))
        return {"seconds": s, "attr": a.tolist(), "shap": shap.__version__}
    raise SystemExit(f"unknown worker {name}")


def run_worker(name, repeats, threads, background=20):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]),
               OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", name, "--repeats", str(repeats),
                        "--threads", str(threads), "--background", str(background)],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"worker {name} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- served
def served(seconds):
    import maas
    import serving_fixture as sf

    tmp = tempfile.mkdtemp(prefix="maas-bench-explain-")
    repo = os.path.join(tmp, "repo")
    os.makedirs(os.path.join(repo, "mlp"))
    with open(os.path.join(repo, "mlp", "config.json"), "w") as f:
        json.dump({"explain": {"method": "integrated_gradients", "n_steps": 50}}, f)
    maas.saving.save_to_repository(maas_model(), repo, "mlp", 1)
    srv = sf.Server(repo, tmp)
    body = json.dumps({"instances": digits(1).tolist()}).encode()
    rows = []
    try:
        for conc in (1, 8):
            lat, stop = [], time.monotonic() + seconds
            lock = threading.Lock()
            errors = [0]

            def client():
                c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
                mine = []
                for _ in range(3):   # warm-up (each worker traces its plans once)
                    c.request("POST", "/v1/models/mlp:explain", body, {"Content-Type": "application/json"})
                    c.getresponse().read()
                while time.monotonic() < stop:
                    t0 = time.perf_counter()
                    c.request("POST", "/v1/models/mlp:explain", body, {"Content-Type": "application/json"})
                    r = c.getresponse()
                    r.read()
                    if r.status != 200:
                        errors[0] += 1
                    mine.append(time.perf_counter() - t0)
                c.close()
                with lock:
                    lat.extend(mine)

            th = [threading.Thread(target=client) for _ in range(conc)]
            t0 = time.perf_counter()
            for t in th:
                t.start()
            for t in th:
                t.join()
            wall = time.perf_counter() - t0
            a = np.array(lat) * 1000
            rows.append((conc, len(a), np.percentile(a, 50), np.percentile(a, 90), np.percentile(a, 99),
                         len(a) / wall, errors[0]))
    finally:
        srv.stop()
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", default=None)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--background", type=int, default=20, help=argparse.SUPPRESS)
    p.add_argument("--backgrounds", default="1,10,20",
                   help="KernelShap background sizes to run (default 1,10,20)")
    p.add_argument("--threads", type=int, default=1,
                   help="threads for maas, torch and NumPy in the workers (default 1: steadier on a "
                        "shared machine)")
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.repeats, args.threads, args.background)))
        return 0
    print(f"# explain benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"load average {os.getloadavg()[0]:.2f}, threads {args.threads} (maas, torch, NumPy)")
    res = {n: run_worker(n, args.repeats, args.threads) for n in ("ig-maas", "ig-captum")}
    ig_diff = np.abs(np.array(res["ig-maas"]["attr"]) - np.array(res["ig-captum"]["attr"])).max()
    print("\n| cell | maas | reference | maas speed-up | target | max abs difference |")
    print("|---|---|---|---|---|---|")
    a, b = res["ig-maas"]["seconds"], res["ig-captum"]["seconds"]
    print(f"| IntegratedGradients 50 steps x 32 rows (digits MLP) | {a * 1e3:.2f} ms | Captum 0.9 / "
          f"torch: {b * 1e3:.2f} ms | {b / a:.1f}x | 3x | {ig_diff:.1e} |")
    for nb in [int(v) for v in args.backgrounds.split(",")]:
        km, kr = run_worker("ks-maas", args.repeats, args.threads, nb), \
            run_worker("ks-shap", args.repeats, args.threads, nb)
        ks_m, ks_s = np.array(km["attr"]), np.array(kr["attr"])
        if ks_s.shape != ks_m.shape:
            ks_s = np.moveaxis(ks_s, 0, -1)
        a, b = km["seconds"], kr["seconds"]
        print(f"| KernelShap 2048 samples, 64 features, 4 rows, background {nb} | {a * 1e3:.1f} ms | "
              f"shap {kr['shap']} KernelExplainer on the maas model: {b * 1e3:.1f} ms | {b / a:.1f}x "
              f"| 5x | {np.abs(ks_m - ks_s).max():.1e} (own random coalitions) |")
    print("\n| served IG explain, 1 row, 50 steps | requests | p50 ms | p90 ms | p99 ms | req/s | errors |")
    print("|---|---|---|---|---|---|---|")
    for conc, n, p50, p90, p99, rps, err in served(args.seconds):
        print(f"| concurrency {conc} | {n} | {p50:.2f} | {p90:.2f} | {p99:.2f} | {rps:.0f} | {err} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
