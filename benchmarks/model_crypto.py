"""What encryption and signing cost when loading a ~100 MB model file.

Each case loads the same model (Dense 5000 -> 5000, 25 M float32
parameters, 100 MB of weights) in a fresh process and reports the median
time over ``--repeats`` runs of reading the file (``read_model_file``:
parse, checksum or signature, decryption; what encryption and signing
change), the private (anonymous) and file-backed resident memory that adds,
the peak RSS during it above the RSS before it (VmHWM, reset through
/proc/self/clear_refs), and the whole ``load_model`` (which also builds
the layers, whose initializers fill the weights before the file's values
are bound: a cost of every load, encrypted or not). Cases: plain mmap (the default), plain copied
(``mmap=False``, what ``maas serve`` uses), encrypted, plain signed
(checked, copied), encrypted and signed. The page cache is warm (the file
was just written and read): a cold cache adds the disk read to every case.

    flock /tmp/maas-bench.lock python benchmarks/model_crypto.py --repeats 5
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, os, resource, sys, time
import maas
from maas.saving import Encryption, signing

def status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0]) / 1024
    return out

path, case, folder = sys.argv[1], sys.argv[2], sys.argv[3]
kw = {}
if case in ("encrypted", "encrypted+signed"):
    kw["encryption_key"] = Encryption(key_file=os.path.join(folder, "model.key"))
if case in ("signed", "encrypted+signed"):
    kw["trusted_keys"] = [os.path.join(folder, "k.pub")]
if case == "plain copied":
    kw["mmap"] = False
from maas.saving.encryption import read_model_file
import gc
mmap = kw.pop("mmap", True)
def reset():
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM (the peak RSS) to the current RSS
    return status()
# 1. the file alone: read, check, decrypt (what encryption and signing change)
base = reset()
t0 = time.perf_counter()
tensors, metadata, info = read_model_file(path, mmap, kw.get("encryption_key"), kw.get("trusted_keys"))
read_s = time.perf_counter() - t0
after = status()
row = {"read_s": read_s, "anon_mb": after["RssAnon"] - base["RssAnon"],
       "file_mb": after["RssFile"] - base["RssFile"], "peak_mb": after["VmHWM"] - base["VmRSS"]}
del tensors, metadata
# 2. the whole load_model (which also builds the layers, initializing their weights first)
reset()
t0 = time.perf_counter()
model = maas.load_model(path, compile=False, mmap=mmap, **kw)
row["load_s"] = time.perf_counter() - t0
print(json.dumps(row))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--units", type=int, default=5000)
    a = ap.parse_args()
    import time

    import maas
    from maas.saving import Encryption, signing

    d = tempfile.mkdtemp(prefix="maas-crypto-bench-")
    model = maas.Sequential([maas.Input((a.units,)), maas.layers.Dense(a.units)])
    enc = Encryption(Encryption.generate_key())
    enc.write_key_file(os.path.join(d, "model.key"))
    priv, _ = signing.generate_keypair(os.path.join(d, "k.pem"), os.path.join(d, "k.pub"))
    plain, secret = os.path.join(d, "plain.maas"), os.path.join(d, "enc.maas")
    t = time.perf_counter()
    model.save(plain)
    save_plain = time.perf_counter() - t
    t = time.perf_counter()
    model.save(secret, encryption_key=enc)
    save_enc = time.perf_counter() - t
    t = time.perf_counter()
    signing.sign_file(plain, priv)
    sign_s = time.perf_counter() - t
    signing.sign_file(secret, priv)
    size = os.path.getsize(plain) / 1e6
    env = dict(os.environ)
    cases = [("plain mmap", plain), ("plain copied", plain), ("encrypted", secret),
             ("signed", plain), ("encrypted+signed", secret)]
    results = {c: [] for c, _ in cases}
    for _ in range(a.repeats):  # interleaved, so a burst of load hits every case alike
        for case, path in cases:
            out = subprocess.run([sys.executable, "-c", CHILD, path, case, d], env=env,
                                 capture_output=True, text=True, check=True).stdout
            results[case].append(json.loads(out.strip().splitlines()[-1]))
    print(f"model file: {size:.1f} MB ({a.units}x{a.units} Dense), {a.repeats} repeats, medians")
    print(f"save: plain {save_plain:.3f} s, encrypted {save_enc:.3f} s; sign {sign_s:.3f} s")
    ref = statistics.median(r["read_s"] for r in results["plain copied"])
    print("| case | read+check+decrypt (s) | vs plain copied | private RSS added (MB) | "
          "file-backed RSS added (MB) | peak RSS during the read (MB) | whole load_model (s) |")
    print("|---|---|---|---|---|---|---|")
    for case, _ in cases:
        rs = results[case]
        med = {k: statistics.median(r[k] for r in rs)
               for k in ("read_s", "anon_mb", "file_mb", "peak_mb", "load_s")}
        print(f"| {case} | {med['read_s']:.3f} | {med['read_s'] / ref:.2f}x | {med['anon_mb']:.0f} | "
              f"{med['file_mb']:.0f} | {med['peak_mb']:.0f} | {med['load_s']:.3f} |")
    import shutil

    shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
