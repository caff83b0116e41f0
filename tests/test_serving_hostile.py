"""Hostile clients against a real ``maas serve`` (the default server:
gunicorn with maas's gevent worker, 2 workers) on loopback, with short
configured timeouts so that the tests stay quick: slowloris (partial
headers, trickled), slow and stalled bodies, the server's own error pages,
malformed and over-limit chunked bodies, bodies that once answered 500, the
per-client connection cap, and memory under 1,000 large requests.

Every attack is bounded in time and count. After each, good requests are
still answered correctly and no worker died (same PIDs); after the module,
no process of the server is left.
"""
from __future__ import annotations

import http.client
import json
import os
import select
import socket
import threading
import time

import numpy as np
import pytest
import requests

import maas
import serving_fixture as sf
from serving_fixture import Server

pytest.importorskip("gunicorn")
pytest.importorskip("gevent")

HEADER_TIMEOUT, BODY_TIMEOUT = 1, 2
MAX_BODY = 2_000_000
X = np.random.default_rng(11).normal(size=(3, sf.IN)).astype(np.float32)
WAIT = 60.0  # generous bound for anything the server must do "after a timeout"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    r = str(tmp_path_factory.mktemp("repo"))
    sf.save_model(r, "mlp", 1, 0)
    return r


@pytest.fixture(scope="module")
def expected(repo):
    return maas.load_model(os.path.join(repo, "mlp", "1", "model.maas")).predict(X, verbose=0)


@pytest.fixture(scope="module")
def srv(repo, tmp_path_factory):
    s = Server(repo, str(tmp_path_factory.mktemp("srv")),
               extra=("--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT),
                      "--max-body-bytes", str(MAX_BODY), "--audit-log", "off"))
    try:
        yield s
    finally:
        s.stop()
    assert not s.group_alive(), s.group()


def good_requests(s, expected, threads=4, each=5):
    """threads x each good requests at once; every one must be answered right."""
    failures = []

    def client():
        with requests.Session() as sess:
            for _ in range(each):
                try:
                    r = sess.post(s.url + "/models/mlp/predict", json={"x": X.tolist()}, timeout=30)
                    if r.status_code != 200 or not np.allclose(r.json()["predictions"], expected,
                                                               rtol=1e-6, atol=1e-7):
                        failures.append((r.status_code, r.text[:200]))
                except requests.RequestException as e:
                    failures.append(repr(e))

    ts = [threading.Thread(target=client) for _ in range(threads)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert not failures, failures[:3]


@pytest.fixture
def healthy(srv, expected):
    """Around each attack: the workers before it are the workers after it,
    and they still answer good requests."""
    pids = srv.worker_pids()
    assert len(pids) == 2
    yield
    good_requests(srv, expected, threads=2, each=3)
    assert srv.worker_pids() == pids, "a worker died"


def connect(port):
    return socket.create_connection(("127.0.0.1", port), timeout=WAIT)


def read_to_close(sock, limit=WAIT) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(limit)
    out = b""
    try:
        while True:
            b = sock.recv(65536)
            if not b:
                return out
            out += b
    except ConnectionResetError:
        return out


def exchange(port, data: bytes) -> bytes:
    with connect(port) as s:
        s.sendall(data)
        return read_to_close(s)


def parse(raw: bytes):
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
    return status, headers, body


def assert_json_error(raw: bytes, status: int, words: str):
    assert raw, "the server closed the connection without an answer"
    got, headers, body = parse(raw)
    assert got == status, raw[:300]
    assert headers["content-type"] == "application/json", raw[:300]
    err = json.loads(body)["error"]
    assert words in err, err


class Trickle:
    """n connections that each send ``first`` and then one byte of
    ``more`` every 0.2 s, never finishing their request. A connection the
    server closes is counted (with what it answered) and opened again, so
    that n stay open until :meth:`stop`."""

    def __init__(self, port, n, first: bytes, more: bytes = b"a"):
        self.port, self.n, self.first, self.more = port, n, first, more
        self.closed, self.answers = 0, []
        self._stop = threading.Event()
        self.socks = [self._open() for _ in range(n)]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _open(self):
        s = connect(self.port)
        s.sendall(self.first)
        s.setblocking(False)
        return s

    def _run(self):
        bufs = {}
        while not self._stop.is_set():
            readable, _, _ = select.select(self.socks, [], [], 0.2)
            for s in readable:
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if data:
                    bufs[s] = bufs.get(s, b"") + data
                    continue
                self.closed += 1
                self.answers.append(bufs.pop(s, b""))
                s.close()
                i = self.socks.index(s)
                try:
                    self.socks[i] = self._open()
                except OSError:
                    self.socks[i] = connect(self.port)  # once more: must not fail twice
            for s in self.socks:
                try:
                    s.send(self.more)
                except OSError:
                    pass

    def wait_closed(self, count):
        deadline = time.monotonic() + WAIT
        while self.closed < count and time.monotonic() < deadline:
            time.sleep(0.1)

    def stop(self):
        self._stop.set()
        self.thread.join()
        for s in self.socks:
            s.close()


# ---------------------------------------------------------------- slow clients
def test_slowloris_good_requests_served_and_partial_headers_closed(srv, expected, healthy):
    """100 connections trickling headers that never end: good requests are
    answered meanwhile, and the server closes every one after the header
    timeout (then they reconnect, so 100 stay open throughout)."""
    t = Trickle(srv.port, 100, b"POST /models/mlp/predict HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    try:
        good_requests(srv, expected, threads=8, each=5)
        t.wait_closed(100)
    finally:
        t.stop()
    assert t.closed >= 100
    assert all(a == b"" for a in t.answers)  # closed without an answer: no request was made


def test_slow_bodies_answered_408_and_good_requests_served(srv, expected, healthy):
    """40 connections trickling a body that never reaches its Content-Length:
    good requests are answered meanwhile; each slow one gets a 408 JSON error
    after the body timeout and is closed."""
    head = (b"POST /models/mlp/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n{\"x\": [[")
    t = Trickle(srv.port, 40, head, b" ")
    try:
        good_requests(srv, expected, threads=8, each=5)
        t.wait_closed(40)
    finally:
        t.stop()
    assert t.closed >= 40
    for a in t.answers:
        assert_json_error(a, 408, f"did not arrive within {BODY_TIMEOUT:g} s")


@pytest.mark.parametrize("kind", ["partial headers", "short body", "idle"])
def test_a_stalled_client_is_closed(srv, healthy, kind):
    """A client that stops sending is not held open: partial headers and an
    idle connection are closed after the header timeout, a body shorter than
    its Content-Length is answered 408 after the body timeout."""
    data = {"partial headers": b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Le",
            "short body": b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"x\": ",
            "idle": b""}[kind]
    with connect(srv.port) as s:
        s.sendall(data)
        raw = read_to_close(s)  # returns when the server closes; at most WAIT
    if kind == "short body":
        assert_json_error(raw, 408, "body did not arrive")
    else:
        assert raw == b""


def test_per_client_connection_cap(repo, tmp_path, expected):
    """More connections from one address than --max-client-connections to
    a worker are answered 429; once they close, requests are served again."""
    s = Server(repo, str(tmp_path), extra=("--workers", "1", "--max-client-connections", "4",
                                           "--audit-log", "off"))
    try:
        held = [connect(s.port) for _ in range(4)]
        try:
            raw = exchange(s.port, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            assert_json_error(raw, 429, "the limit is 4")
        finally:
            for h in held:
                h.close()
        deadline, status = time.monotonic() + WAIT, None
        while time.monotonic() < deadline and status != 200:
            status = requests.post(s.url + "/models/mlp/predict", json={"x": X.tolist()}, timeout=30).status_code
        assert status == 200
    finally:
        s.stop()
    assert not s.group_alive()


# ---------------------------------------------------------------- bad requests
CHUNKED = b"POST /models/mlp/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
RAW = [
    # (id, bytes sent, status, words in the JSON error)
    ("request line too long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "URI Too Long"),
    ("header too large", b"GET /v2 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431,
     "Request Header Fields Too Large"),
    ("too many headers", b"GET /v2 HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150))
     + b"\r\n", 431, "Request Header Fields Too Large"),
    ("garbage request line", b"HELLO\r\n\r\n", 400, "Bad Request"),
    ("bad method", b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400, "Bad Request"),
    ("unsupported transfer coding", b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
     400, "TRANSFER-ENCODING"),
    ("malformed chunk size", CHUNKED + b"ZZ\r\nabc\r\n0\r\n\r\n", 400, "could not be read: InvalidChunkSize"),
    ("chunk missing terminator", CHUNKED + b"3\r\nabcXY0\r\n\r\n", 400, "could not be read"),
    ("declared body over the limit", b"POST /models/mlp/predict HTTP/1.1\r\nHost: x\r\nContent-Length: "
     + str(MAX_BODY + 1).encode() + b"\r\n\r\n{", 413, f"over the limit of {MAX_BODY} bytes"),
]


@pytest.mark.parametrize("case", RAW, ids=[c[0] for c in RAW])
def test_server_errors_are_json(srv, healthy, case):
    """What the HTTP server itself refuses (before the app) and what the app
    refuses while reading the body: a 4xx/501 with a JSON error, never an
    HTML page or a 500."""
    _, data, status, words = case
    assert_json_error(exchange(srv.port, data), status, words)


def test_over_limit_chunked_body_is_413(srv, healthy):
    """A chunked body past --max-body-bytes is refused as such, not cut at
    the limit and then parsed."""
    row = b"[0.5, 0.5, 0.5, 0.5], "
    chunk = row * (65536 // len(row))
    n = MAX_BODY // len(chunk) + 2
    with connect(srv.port) as s:
        out = []
        reader = threading.Thread(target=lambda: out.append(read_to_close(s)))
        reader.start()
        try:
            s.sendall(CHUNKED + b"5\r\n{\"x\":\r\n")
            for _ in range(n):
                s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            s.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server may stop reading once it has answered
        reader.join()
    assert_json_error(out[0], 413, f"over the limit of {MAX_BODY} bytes")


def _v2(shape, data=None, params=None):
    inp = {"name": "input", "shape": shape, "datatype": "FP32"}
    if data is not None:
        inp["data"] = data
    if params is not None:
        inp["parameters"] = params
    return json.dumps({"inputs": [inp]})


BODIES = [
    ("nested 1000 deep", "/models/mlp/predict", '{"x": ' + "[" * 1000 + "1" + "]" * 1000 + "}", {}, "nested"),
    ("5000-digit integer", "/models/mlp/predict", '{"x": [[' + "9" * 5000 + ", 1, 2, 3]]}", {}, "cannot be read"),
    ("v2 shape over int64", "/v2/models/mlp/infer", _v2([4294967296, 4294967296], []), {}, "too large"),
    ("v2 binary 2^62 rows, size 0", "/v2/models/mlp/infer", _v2([2 ** 62, 4], params={"binary_data_size": 0}),
     {"Inference-Header-Content-Length": str(len(_v2([2 ** 62, 4], params={"binary_data_size": 0})))},
     "too large"),
]


@pytest.mark.parametrize("case", BODIES, ids=[c[0] for c in BODIES])
def test_bodies_that_were_500_are_400(srv, healthy, case):
    _, path, body, headers, words = case
    r = requests.post(srv.url + path, data=body, headers=headers, timeout=30)
    assert r.status_code == 400 and r.headers["Content-Type"] == "application/json", r.text[:300]
    assert words in r.json()["error"]


# ---------------------------------------------------------------- memory
def _rss_kb(pids):
    total = 0
    for p in pids:
        with open(f"/proc/{p}/status") as f:
            total += next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))
    return total


def test_memory_stays_bounded_under_large_requests(srv, repo, healthy):
    """1,000 requests of 8,192 rows (4 client threads): the workers' RSS
    after them stays within 25% of its value after a warm-up."""
    rows = np.random.default_rng(5).normal(size=(8192, sf.IN)).astype(np.float32)
    body = json.dumps({"x": rows.tolist()}).encode()
    r = requests.post(srv.url + "/models/mlp/predict", data=body, timeout=60)
    want = maas.load_model(os.path.join(repo, "mlp", "1", "model.maas")).predict(rows, verbose=0)
    np.testing.assert_allclose(r.json()["predictions"], want, rtol=1e-6, atol=1e-7)
    failures = []

    def client(n):  # http.client and a pre-encoded body: the client must cost little
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
        try:
            for _ in range(n):
                c.request("POST", "/models/mlp/predict", body, {"Content-Type": "application/json"})
                r = c.getresponse()
                data = r.read()
                if r.status != 200 or not data.startswith(b'{"predictions":[['):
                    failures.append((r.status, data[:200]))
        finally:
            c.close()

    def run(total):
        ts = [threading.Thread(target=client, args=(total // 4,)) for _ in range(4)]
        [t.start() for t in ts]
        [t.join() for t in ts]

    pids = srv.worker_pids()
    run(40)
    before = _rss_kb(pids)
    run(1000)
    after = _rss_kb(pids)
    assert not failures, failures[:5]
    assert after <= before * 1.25, (before, after)
