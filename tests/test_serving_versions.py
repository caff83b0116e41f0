"""Model files, versions and configuration that change under a running
server: real maas model files (``maas.saving.save_to_repository``) served by
``maas serve`` (gunicorn, 2 workers, in its own process group) or by
``create_app`` under werkzeug's threaded server in this process, both on
loopback and asked with ``requests``. Every test checks the answers against
the saved model's own predict, that good requests are still served, that no
worker died (PIDs unchanged) and that no process is left."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pytest
import requests

import maas
from maas.serving import create_app
from maas.serving.repository import ModelConfig

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
X = np.random.default_rng(5).normal(size=(3, 4)).astype(np.float32)
BOOT_DEADLINE = 120.0  # seconds; the machine is shared and busy
DEADLINE = 60.0        # for a change to show after the next polls


# ------------------------------------------------------------------ models
def build(seed: int, width: int = 16):
    maas.utils.set_random_seed(seed)
    model = maas.Sequential([maas.Input((4,)), maas.layers.Dense(width, activation="relu"),
                             maas.layers.Dense(3, activation="softmax")])
    model.build((None, 4))
    return model


def answer(seed: int, x=X, width: int = 16) -> np.ndarray:
    return build(seed, width).predict(x, verbose=0)


def publish(repo, name: str, version: int, seed: int, width: int = 16) -> str:
    """Saves a version the safe way (maas.saving.save_to_repository)."""
    return maas.saving.save_to_repository(build(seed, width), str(repo), name, version)


def corrupt_copy(src: str, dst: str) -> None:
    """A copy of a model file with its last data bytes changed (checksum mismatch)."""
    data = bytearray(open(src, "rb").read())
    for i in range(1, 9):
        data[-i] ^= 0x5A
    with open(dst, "wb") as f:
        f.write(data)


def publish_corrupt(repo, name: str, version, seed: int) -> None:
    """A version folder whose model file is corrupt, renamed into place."""
    tmp = os.path.join(str(repo), name, f".tmp-corrupt-{version}")
    os.makedirs(tmp)
    good = os.path.join(str(repo), f".good-{name}-{version}")
    build(seed).save(good)
    corrupt_copy(good, os.path.join(tmp, "model.maas"))
    os.unlink(good)
    os.rename(tmp, os.path.join(str(repo), name, str(version)))


def write_config(repo, name: str, config) -> None:
    """config.json written the safe way: beside it, then renamed over it."""
    path = os.path.join(str(repo), name, "config.json")
    text = config if isinstance(config, str) else json.dumps(config)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def delayed_loader(path: str):
    """A loader hook for the gunicorn tests: the default loader's model,
    whose predict, while the file ``MAAS_TEST_HOLD`` exists, first appends
    a line to ``MAAS_TEST_HOLD + ".arrived"`` (the test sees a request
    reach the model) and then waits until the hold file is removed (at most
    ``MAAS_TEST_DELAY`` seconds), so that requests are in flight while a
    test changes files. Each successful load appends the worker's pid to
    ``MAAS_TEST_HOLD + ".loaded"``."""
    from maas.serving.model import default_loader

    model = default_loader(path)
    delay = float(os.environ.get("MAAS_TEST_DELAY", "0") or 0)
    hold = os.environ.get("MAAS_TEST_HOLD", "")
    if hold:  # which workers have loaded a good copy
        with open(hold + ".loaded", "a") as f:
            f.write(f"{os.getpid()}\n")

    class Held:
        def __getattr__(self, name):  # the model's shapes, inputs and outputs
            return getattr(model, name)

        def predict(self, x, verbose=0):
            if hold and os.path.exists(hold):
                with open(hold + ".arrived", "a") as f:
                    f.write(f"{os.getpid()} {len(x)}\n")
                deadline = time.monotonic() + delay
                while os.path.exists(hold) and time.monotonic() < deadline:
                    time.sleep(0.02)
            return model.predict(x, verbose=0)

    return Held()


# ----------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still counts for killpg; look for a live member
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


class Server:
    """``maas serve REPO`` (gunicorn, 2 gthread workers) in its own process group."""

    def __init__(self, repo, tmp, extra=(), env=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        e = dict(os.environ)
        e.pop("MAAS_SERVING_LOADER", None)
        e.update({"PYTHONPATH": os.pathsep.join([ROOT, HERE]),
                  "PROMETHEUS_MULTIPROC_DIR": os.path.join(str(tmp), f"prom-{self.port}")})
        e.update(env or {})
        args = [sys.executable, "-m", "maas.serving.cli", str(repo), "--port", str(self.port),
                "--workers", "2", "--threads", "8", "--poll-interval", "0.2",
                "--audit-log", "off", *extra]
        self.log = open(os.path.join(str(tmp), f"server-{self.port}.log"), "w+")
        self.proc = subprocess.Popen(args, env=e, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.pgid = self.proc.pid

    def wait_up(self):
        """Until both workers exist and one answers /v2/health/live."""
        deadline = time.time() + BOOT_DEADLINE
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + self.output())
            try:
                if (requests.get(self.url + "/v2/health/live", timeout=5).status_code == 200
                        and len(self.workers()) == 2):
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not come up:\n" + self.output())

    def workers(self) -> list[int]:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)],
                             capture_output=True, text=True)
        return sorted(int(p) for p in out.stdout.split())

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> bool:
        """Stops the whole process group; True when nothing of it is left."""
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.pgid, sig)
            except ProcessLookupError:
                pass
            deadline = time.time() + wait
            while time.time() < deadline:
                if self.proc.poll() is not None and not _group_alive(self.pgid):
                    break
                time.sleep(0.05)
            if self.proc.poll() is not None and not _group_alive(self.pgid):
                break
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()
        return self.proc.poll() is not None and not _group_alive(self.pgid)


@contextmanager
def serving(repo, tmp, extra=(), env=None):
    s = Server(repo, tmp, extra, env)
    try:
        yield s.wait_up()
    finally:
        gone = s.stop()
    assert gone, "a process of the server outlived the test"


@contextmanager
def in_process(models, **kwargs):
    """create_app under werkzeug's threaded server on a loopback port."""
    from werkzeug.serving import make_server

    app = create_app(models, **kwargs)
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    t = threading.Thread(target=srv.serve_forever, name="test-server", daemon=True)
    t.start()
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{srv.server_port}", app=app,
                              registry=app.maas_server.registry)
    finally:
        srv.shutdown()
        t.join(30)
        app.maas_server.registry.close()
    assert not t.is_alive()


# ---------------------------------------------------------------- requests
def predict(url, name="m", x=X, version=None):
    path = f"/models/{name}" + (f"/versions/{version}" if version else "") + "/predict"
    return requests.post(url + path, json={"x": np.asarray(x).tolist()}, timeout=60)


def assert_serves(url, seed, name="m", version="1", times=8, x=X, width=16):
    """``times`` requests, each on a fresh connection (so both workers are
    asked): 200 with the saved model's answer."""
    want = answer(seed, x, width)
    for _ in range(times):
        r = predict(url, name, x)
        assert r.status_code == 200, r.text
        assert r.json()["version"] == version, r.json()
        got = np.array(r.json()["predictions"], dtype=np.float64)
        assert np.all(np.isfinite(got)), got
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def status(url, name="m"):
    r = requests.get(f"{url}/v1/models/{name}", timeout=30)
    return r.status_code, r.json()


def version_status(url, name, version):
    code, body = status(url, name)
    for st in body.get("model_version_status", []):
        if st["version"] == str(version):
            return st
    return None


def wait_for(check, what, timeout=DEADLINE):
    """Polls ``check()`` (exceptions count as not yet) until it is truthy."""
    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        try:
            got = check()
            if got:
                return got
        except (requests.RequestException, KeyError, ValueError, TypeError) as e:
            last = e
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last error: {last!r})")


def every(n, check):
    """``check`` true on ``n`` requests in a row (fresh connections: both workers)."""
    return lambda: all(check() for _ in range(n))


# ------------------------------------------------------- 1. files on disk
def test_truncating_a_served_file_kills_no_worker_and_drops_no_request(tmp_path):
    """`cp junk model.maas` over the served file truncates it: no worker may
    die (a mapped file would SIGBUS them), the in-flight requests are
    answered, later ones too, and the failed reload shows in the status."""
    repo = tmp_path / "repo"
    path = publish(repo, "m", 1, seed=2, width=512)  # 28 KB: pages past the junk's end
    junk = tmp_path / "junk.bin"
    junk.write_bytes(np.random.default_rng(0).bytes(1000))
    hold = tmp_path / "hold"
    arrived = tmp_path / "hold.arrived"
    env = {"MAAS_SERVING_LOADER": "test_serving_versions:delayed_loader", "MAAS_TEST_DELAY": "300",
           "MAAS_TEST_HOLD": str(hold)}
    loaded = tmp_path / "hold.loaded"
    with serving(repo, tmp_path, env=env) as s:
        # every worker has loaded the good file before it is truncated (a worker still
        # booting on a busy machine would load the junk and rightly have no version)
        wait_for(lambda: loaded.exists() and len(set(loaded.read_text().split())) >= 2,
                 "both workers to load version 1")
        workers = s.workers()
        assert_serves(s.url, 2, times=2, width=512)
        results = []

        def ask():
            try:
                r = predict(s.url)
                results.append((r.status_code, r.json()))
            except requests.RequestException as e:
                results.append((None, repr(e)))

        hold.touch()
        ts = [threading.Thread(target=ask) for _ in range(6)]
        [t.start() for t in ts]
        # a request is inside the model (held there until the hold file goes)
        wait_for(lambda: arrived.exists() and arrived.read_text().strip(),
                 "a request to reach the model")
        try:
            shutil.copyfile(junk, path)  # opens with O_TRUNC, as cp does
            # the poll sees the truncated file and fails to reload it while requests are held
            st = wait_for(lambda: (lambda v: v if v and v["status"]["error_code"] != "OK" else None)(
                version_status(s.url, "m", 1)), "the failed reload in the status")
        finally:
            hold.unlink()
        for t in ts:
            t.join(timeout=300)
        assert not any(t.is_alive() for t in ts), "a request never came back"
        want = answer(2, width=512)
        assert [code for code, _ in results] == [200] * 6, results
        for _, body in results:
            np.testing.assert_allclose(body["predictions"], want, rtol=1e-6, atol=1e-7)
        assert_serves(s.url, 2, times=6, width=512)
        assert st["state"] == "AVAILABLE"
        assert "reload" in st["status"]["error_message"]
        assert requests.get(s.url + "/v2/health/ready", timeout=30).status_code == 200
        other = str(tmp_path / "six.maas")
        build(6, width=512).save(other)
        shutil.copyfile(other, path)  # a good file by cp: the poll may see it half written
        wait_for(every(6, lambda: np.allclose(predict(s.url).json()["predictions"],
                                              answer(6, width=512), rtol=1e-6, atol=1e-7)),
                 "version 1 reloaded from the copied file in both workers")
        assert s.workers() == workers, s.output()


def test_overwriting_a_served_file_in_place_never_answers_from_it(tmp_path, caplog):
    """The data section overwritten in place with NaN bytes, same size: the
    served version answers as loaded, never from the changed file, and says
    in its status and the log that the new contents failed to load."""
    repo = tmp_path / "repo"
    path = publish(repo, "m", 1, seed=3)
    with in_process(str(repo), poll_interval=0.05) as s:
        assert_serves(s.url, 3, times=2)
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            (hlen,) = struct.unpack("<Q", f.read(8))
            f.seek(8 + hlen)
            f.write(b"\xff" * (size - 8 - hlen))  # every float a NaN
        assert os.path.getsize(path) == size
        assert_serves(s.url, 3, times=3)
        st = wait_for(lambda: (lambda v: v if v and v["status"]["error_code"] != "OK" else None)(
            version_status(s.url, "m", 1)), "the failed reload in the status")
        assert st["state"] == "AVAILABLE"
        assert "checksum mismatch" in st["status"]["error_message"]
        assert_serves(s.url, 3, times=3)
        assert "checksum mismatch" in caplog.text


def test_a_replaced_file_is_reloaded_and_a_bad_one_is_not(tmp_path):
    """A new model file published over a version (written beside it and
    renamed into place) is served after the next poll; a bad one is not
    (the version keeps the model it has, and says so) until a good one
    replaces it."""
    repo = tmp_path / "repo"
    path = publish(repo, "m", 1, seed=4)
    with in_process(str(repo), poll_interval=0.05) as s:
        assert_serves(s.url, 4, times=2)
        build(5).save(path)  # maas saves beside the file and renames over it
        wait_for(lambda: np.allclose(predict(s.url).json()["predictions"], answer(5), rtol=1e-6,
                                     atol=1e-7), "version 1 reloaded from the new file")
        assert_serves(s.url, 5, times=3)
        assert version_status(s.url, "m", 1)["status"] == {"error_code": "OK", "error_message": ""}
        bad = str(tmp_path / "bad.maas")
        corrupt_copy(path, bad)
        os.replace(bad, path)
        wait_for(lambda: version_status(s.url, "m", 1)["status"]["error_code"] != "OK",
                 "the failed reload in the status")
        assert_serves(s.url, 5, times=3)
        build(6).save(path)  # a good file again: served, and the error is gone
        wait_for(lambda: np.allclose(predict(s.url).json()["predictions"], answer(6), rtol=1e-6,
                                     atol=1e-7), "version 1 reloaded from the good file")
        assert version_status(s.url, "m", 1)["status"] == {"error_code": "OK", "error_message": ""}


def test_the_default_loader_copies_the_weights_out_of_the_file(tmp_path):
    """maas.serving's default loader does not map the file: the loaded
    weights survive the file's truncation (in a child process: a mapping
    would die of SIGBUS on the next read)."""
    path = publish(tmp_path, "m", 1, seed=7, width=512)
    code = (
        "import sys, numpy as np\n"
        "from maas.serving.model import default_loader\n"
        "model = default_loader(sys.argv[1])\n"
        "open(sys.argv[2], 'wb').close()\n"  # truncated to 0 bytes
        "np.save(sys.stdout.buffer, model.predict(np.load(sys.argv[3]), verbose=0))\n")
    np.save(tmp_path / "x.npy", X)
    p = subprocess.run([sys.executable, "-c", code, os.path.dirname(path), path,
                        str(tmp_path / "x.npy")], capture_output=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": ROOT})
    assert p.returncode == 0, (p.returncode, p.stderr.decode()[-2000:])
    import io
    got = np.load(io.BytesIO(p.stdout))
    np.testing.assert_allclose(got, answer(7, width=512), rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------ 2. versions
def test_a_failed_new_version_never_unloads_the_serving_one(tmp_path):
    """A corrupt version 2, a folder named with a non-ASCII digit and a
    policy naming a missing version: version 1 keeps serving in both
    workers, the server stays ready, and each failure is in the status."""
    repo = tmp_path / "repo"
    publish(repo, "m", 1, seed=8)
    with serving(repo, tmp_path) as s:
        workers = s.workers()
        assert_serves(s.url, 8, times=4)
        publish_corrupt(repo, "m", 2, seed=9)
        st = wait_for(lambda: version_status(s.url, "m", 2), "version 2 in the status")
        assert st["state"] == "END" and st["status"]["error_code"] != "OK"
        assert "checksum mismatch" in st["status"]["error_message"]
        assert_serves(s.url, 8, times=6)
        assert requests.get(s.url + "/v2/health/ready", timeout=30).status_code == 200
        assert requests.get(s.url + "/v2/models/m/ready", timeout=30).status_code == 200
        assert requests.get(s.url + "/v2/models/m", timeout=30).json()["versions"] == ["1"]
        r = requests.get(s.url + "/v2/models/m/versions/2/ready", timeout=30)
        assert r.status_code == 503 and r.json()["ready"] is False
        r = requests.get(s.url + "/v2/models/m/versions/2", timeout=30)
        assert r.status_code == 503 and "checksum mismatch" in r.json()["error"]
        index = requests.post(s.url + "/v2/repository/index", timeout=30).json()
        assert {"name": "m", "version": "1", "state": "READY"} in index
        assert any(e["version"] == "2" and e["state"] == "UNAVAILABLE" and "checksum" in e["reason"]
                   for e in index)
        assert "could not load model m version 2" in s.output()

        # '٣' is ARABIC-INDIC DIGIT THREE: not a version, even holding a good model
        os.makedirs(repo / "m" / ".tmp-3")
        build(10).save(repo / "m" / ".tmp-3" / "model.maas")
        os.rename(repo / "m" / ".tmp-3", repo / "m" / "\u0663")
        for v in ("\u0663", "\uff13", "03"):  # FULLWIDTH DIGIT THREE, a leading zero
            r = predict(s.url, version=v)
            assert r.status_code == 404, (v, r.text)
        time.sleep(1.0)  # several polls (0.2 s): nothing may pick the folder up
        assert_serves(s.url, 8, times=4)
        assert {st["version"] for st in status(s.url)[1]["model_version_status"]} == {"1", "2"}

        write_config(repo, "m", {"version_policy": {"specific": {"versions": [99]}}})
        st = wait_for(lambda: version_status(s.url, "m", 99), "version 99 in the status")
        assert st["status"]["error_code"] == "NOT_FOUND"
        assert_serves(s.url, 8, times=6)
        assert requests.get(s.url + "/v2/health/ready", timeout=30).status_code == 200
        assert s.workers() == workers, s.output()


def test_a_fixed_version_loads_and_replaces_the_old_one(tmp_path):
    """After a failed version 2, publishing a good version 3 serves 3 and
    unloads 1 (the policy moves on only to a version that loaded)."""
    repo = tmp_path / "repo"
    publish(repo, "m", 1, seed=11)
    with in_process(str(repo), poll_interval=0.05) as s:
        publish_corrupt(repo, "m", 2, seed=12)
        wait_for(lambda: version_status(s.url, "m", 2), "version 2 in the status")
        assert_serves(s.url, 11, times=2)
        publish(repo, "m", 3, seed=13)
        wait_for(lambda: predict(s.url).json()["version"] == "3", "version 3 served")
        assert_serves(s.url, 13, version="3", times=3)
        wait_for(lambda: version_status(s.url, "m", 1) is None, "version 1 unloaded")
        assert predict(s.url, version=1).status_code == 404


def test_version_names_in_urls_are_ascii_digits(tmp_path):
    repo = tmp_path / "repo"
    publish(repo, "m", 3, seed=14)
    with in_process(str(repo), poll_interval=0) as s:
        assert predict(s.url, version="3").status_code == 200
        for v in ("\u0663", "\uff13", "+3", "03", "3.0", "-3", "0"):
            r = predict(s.url, version=v)
            assert r.status_code == 404 and "positive integer" in r.json()["error"], (v, r.text)
        r = requests.post(f"{s.url}/v2/models/m/versions/\u0663/infer", timeout=30,
                          json={"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                            "data": [0, 0, 0, 0]}]})
        assert r.status_code == 404


# ----------------------------------------------------------- 3. readiness
def test_readiness_covers_the_required_models(tmp_path):
    """One broken model and one bad config.json do not make the server not
    ready; a required model that never loaded does, and is reported."""
    repo = tmp_path / "repo"
    publish(repo, "good", 1, seed=15)
    os.makedirs(repo / "broken")
    publish_corrupt(repo, "broken", 1, seed=16)
    publish(repo, "badcfg", 1, seed=17)
    write_config(repo, "badcfg", {"max_rows": "many"})
    with serving(repo, tmp_path) as s:
        workers = s.workers()
        wait_for(every(4, lambda: requests.get(s.url + "/v2/health/ready", timeout=30).status_code
                       == 200), "ready")
        assert_serves(s.url, 15, name="good", times=4)
        st = version_status(s.url, "broken", 1)
        assert st["state"] == "END" and "checksum mismatch" in st["status"]["error_message"]
        r = requests.get(s.url + "/v2/models/broken/ready", timeout=30)
        assert r.status_code == 503 and r.json() == {"name": "broken", "ready": False}
        r = predict(s.url, "badcfg")
        assert r.status_code == 503 and "max_rows" in r.json()["error"]
        assert s.workers() == workers
    with serving(repo, tmp_path, extra=("--require-model", "good", "--require-model", "broken")) as s:
        assert_serves(s.url, 15, name="good", times=4)  # the workers are up and serving
        for _ in range(6):
            r = requests.get(s.url + "/v2/health/ready", timeout=30)
            assert r.status_code == 503 and r.json()["ready"] is False


def test_a_model_that_loaded_and_lost_its_versions_is_not_ready(tmp_path):
    repo = tmp_path / "repo"
    publish(repo, "a", 1, seed=18)
    publish(repo, "b", 1, seed=19)
    os.makedirs(repo / "never")  # a model folder with nothing loadable in it
    with in_process(str(repo), poll_interval=0.05) as s:
        assert requests.get(s.url + "/v2/health/ready", timeout=30).status_code == 200
        shutil.rmtree(repo / "b" / "1")
        wait_for(lambda: requests.get(s.url + "/v2/health/ready", timeout=30).status_code == 503,
                 "not ready without b")
        assert_serves(s.url, 18, name="a", times=2)
        publish(repo, "b", 2, seed=20)
        wait_for(lambda: requests.get(s.url + "/v2/health/ready", timeout=30).status_code == 200,
                 "ready with b version 2")
        assert_serves(s.url, 20, name="b", version="2", times=2)
    with in_process(str(repo), poll_interval=0, require_models=["never"]) as s:
        assert requests.get(s.url + "/v2/health/ready", timeout=30).status_code == 503
        assert_serves(s.url, 18, name="a", times=1)
    with in_process(str(repo), poll_interval=0, require_models=["a", "b"]) as s:
        assert requests.get(s.url + "/v2/health/ready", timeout=30).status_code == 200
    with pytest.raises(ValueError, match="require_models"):
        create_app(str(repo), poll_interval=0, require_models="a")


# -------------------------------------------------------------- 4. config
def test_config_changes_apply_to_loaded_versions_and_bad_ones_are_kept_out(tmp_path):
    """max_rows 1 applies to the loaded version in both workers at the next
    poll; input_name 123 and an unknown key are refused (named in the status
    and the log) and the last good config stays; removing config.json goes
    back to the defaults."""
    repo = tmp_path / "repo"
    publish(repo, "m", 1, seed=21)
    two = X[:2]
    with serving(repo, tmp_path) as s:
        workers = s.workers()
        assert_serves(s.url, 21, x=two, times=4)
        write_config(repo, "m", {"max_rows": 1})
        wait_for(every(8, lambda: predict(s.url, x=two).status_code == 400), "max_rows 1 applied")
        assert "limit of 1 rows" in predict(s.url, x=two).json()["error"]
        assert_serves(s.url, 21, x=X[:1], times=4)

        write_config(repo, "m", {"max_rows": 1, "input_name": 123})
        st = wait_for(lambda: (lambda v: v if "input_name" in v["status"]["error_message"] else None)(
            version_status(s.url, "m", 1)), "the refused config in the status")
        assert st["state"] == "AVAILABLE" and st["status"]["error_code"] == "INVALID_ARGUMENT"
        for _ in range(6):  # the last good config is kept
            assert predict(s.url, x=two).status_code == 400
            md = requests.get(s.url + "/v2/models/m", timeout=30).json()
            assert md["inputs"][0]["name"] == "input"
        assert_serves(s.url, 21, x=X[:1], times=4)

        write_config(repo, "m", {"max_rows": 1, "max_rowz": 5})
        wait_for(lambda: "max_rowz" in version_status(s.url, "m", 1)["status"]["error_message"],
                 "the unknown key in the status")
        assert predict(s.url, x=two).status_code == 400

        write_config(repo, "m", {"input_name": "pixels"})
        wait_for(every(8, lambda: requests.get(s.url + "/v2/models/m", timeout=30).json()["inputs"][0]
                       ["name"] == "pixels"), "input_name applied")
        assert version_status(s.url, "m", 1)["status"]["error_code"] == "OK"
        r = requests.post(s.url + "/v1/models/m:predict", timeout=30,
                          json={"instances": [{"pixels": row} for row in two.tolist()]})
        assert r.status_code == 200
        np.testing.assert_allclose(r.json()["predictions"], answer(21, two), rtol=1e-6, atol=1e-7)

        os.unlink(repo / "m" / "config.json")
        wait_for(every(8, lambda: requests.get(s.url + "/v2/models/m", timeout=30).json()["inputs"][0]
                       ["name"] == "input"), "the defaults back")
        assert_serves(s.url, 21, x=two, times=4)
        log = s.output()
        assert "input_name" in log and "max_rowz" in log
        assert s.workers() == workers


def test_a_batching_change_applies_to_the_loaded_version(tmp_path):
    repo = tmp_path / "repo"
    publish(repo, "m", 1, seed=22)
    with in_process(str(repo), poll_interval=0.05) as s:
        lv = s.registry.lookup("m")
        assert lv.batcher is None
        write_config(repo, "m", {"batching": {"max_batch_size": 4, "max_delay_ms": 1}})
        wait_for(lambda: s.registry.lookup("m").batcher is not None, "batching on")
        assert s.registry.lookup("m").batcher.max_batch_size == 4
        assert_serves(s.url, 22, times=3)
        write_config(repo, "m", {"batching": False})
        wait_for(lambda: s.registry.lookup("m").batcher is None, "batching off")
        assert_serves(s.url, 22, times=3)


@pytest.mark.parametrize("config, message", [
    ({"input_name": 123}, r"input_name must be a non-empty string, received 123"),
    ({"output_name": ""}, r"output_name must be a non-empty string"),
    ({"platform": ["x"]}, r"platform must be a string"),
    ({"max_rows": "8"}, r"max_rows must be a positive integer, received '8'"),
    ({"max_rows": 0}, r"max_rows must be a positive integer, received 0"),
    ({"max_rows": True}, r"max_rows must be a positive integer, received True"),
    ({"max_rows": 2.0}, r"max_rows must be a positive integer, received 2.0"),
    ({"allow_nan": 1}, r"allow_nan must be true or false"),
    ({"max_rowz": 1}, r"unknown key 'max_rowz'"),
    ({"batching": {"max_batch_sise": 3}}, r"unknown key 'batching.max_batch_sise'"),
    ({"batching": {"max_batch_size": 3.5}}, r"batching.max_batch_size must be an integer"),
    ({"batching": {"max_batch_size": 0}}, r"batching.max_batch_size must be an integer from 1"),
    ({"batching": {"max_delay_ms": -1}}, r"batching.max_delay_ms must be a number from 0"),
    ({"batching": {"max_delay_ms": float("nan")}}, r"batching.max_delay_ms must be a number from 0"),
    ({"batching": {"max_delay_ms": "2"}}, r"batching.max_delay_ms must be a number"),
    ({"batching": {"enabled": "yes"}}, r"batching.enabled must be true or false"),
    ({"batching": {"max_queue_rows": 2, "max_batch_size": 4}}, r"max_queue_rows"),
    ({"batching": "on"}, r"batching must be true, false or an object"),
    ({"batching": {}, "dynamic_batching": {}}, r"give one of 'batching' and 'dynamic_batching'"),
    ({"version_policy": "newest"}, r"version_policy must be"),
    ({"version_policy": {"latest": {"num_version": 2}}}, r"unknown key 'version_policy.latest.num_version'"),
    ({"version_policy": {"latest": {"num_versions": 0}}}, r"num_versions must be a positive integer"),
    ({"version_policy": {"latest": None}}, r"version_policy.latest must be an object"),
    ({"version_policy": {"specific": {"versions": []}}}, r"specific.versions must be a non-empty list"),
    ({"version_policy": {"specific": {"versions": [1, True]}}}, r"specific.versions must be a non-empty list"),
    ({"version_policy": {"specific": {"versions": [0]}}}, r"specific.versions must be a non-empty list"),
    ({"version_policy": {"latest": {}, "all": {}}}, r"version_policy must be"),
])
def test_config_is_validated_strictly(config, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_dict(config)


def test_config_file_errors_name_the_file_not_the_path(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    for text, message in (("{oops", r"^config.json: invalid JSON"),
                          ('{"max_rows": 1, "max_rows": 2}', r"^config.json: duplicate key 'max_rows'"),
                          ("[1]", r"^config.json: the config must be a JSON object"),
                          ("[" * 100000, r"^config.json: nested too deeply"),
                          ('{"max_rows": NaN}', r"^config.json: NaN is not a JSON number"),
                          ("x" * (1 << 21), r"^config.json: larger than"),
                          ('{"max_rows": 0}', r"^config.json: max_rows must be")):
        (d / "config.json").write_text(text)
        with pytest.raises(ValueError, match=message) as e:
            ModelConfig.from_file(str(d / "config.json"))
        assert str(tmp_path) not in str(e.value)
    (d / "config.json").unlink()
    os.mkfifo(d / "config.json")  # would block a plain open() for ever
    with pytest.raises(ValueError, match=r"^config.json: not a regular file"):
        ModelConfig.from_file(str(d / "config.json"))
    (d / "config.json").unlink()
    # the good ones: the defaults, the Triton spelling and the policies
    (d / "config.json").write_text(json.dumps({
        "dynamic_batching": {"max_batch_size": 8, "max_delay_ms": 0.5, "max_queue_rows": 64},
        "version_policy": {"latest": {"num_versions": 2}}, "max_rows": 5, "allow_nan": True,
        "input_name": "in", "output_name": "out", "platform": "maas"}))
    cfg = ModelConfig.from_file(str(d / "config.json"))
    assert cfg.batching == {"max_batch_size": 8, "max_delay_ms": 0.5, "max_queue_rows": 64}
    assert (cfg.version_policy, cfg.max_rows, cfg.allow_nan, cfg.input_name, cfg.output_name) == (
        ("latest", 2), 5, True, "in", "out")
    assert cfg.select([1, 2, 3]) == [2, 3]
    assert ModelConfig.from_dict({}) == ModelConfig()
    assert ModelConfig.from_dict({"max_rows": 3}) != ModelConfig()


# --------------------------------------------------------------- 5. paths
def test_error_bodies_carry_no_server_paths(tmp_path):
    """Every error a client can get from a repository full of broken
    models names model-relative files, never the server's absolute paths."""
    repo = tmp_path / "repo"
    publish(repo, "good", 1, seed=23)
    os.makedirs(repo / "corrupt")
    publish_corrupt(repo, "corrupt", 1, seed=24)
    os.makedirs(repo / "nofile" / "1")                # a version without model.maas
    publish(repo, "badjson", 1, seed=25)
    write_config(repo, "badjson", "{oops")
    publish(repo, "badkey", 1, seed=26)
    write_config(repo, "badkey", {"nope": 1})
    os.makedirs(repo / "dirfile" / "1" / "model.maas")  # a folder where the file should be
    single = tmp_path / "single.maas"
    single.write_bytes(b"not a model")
    names = ["good", "corrupt", "nofile", "badjson", "badkey", "dirfile", "missing"]
    bodies = []
    secret = {str(tmp_path), os.path.realpath(tmp_path), str(repo), os.path.realpath(repo)}
    with in_process(str(repo), poll_interval=0) as s:
        u = s.url
        for n in names:
            for method, path, body in (
                    ("POST", f"/models/{n}/predict", {"x": X.tolist()}),
                    ("POST", f"/models/{n}/versions/1/predict", {"x": X.tolist()}),
                    ("POST", f"/models/{n}/versions/2/predict", {"x": X.tolist()}),
                    ("POST", f"/v1/models/{n}:predict", {"instances": X.tolist()}),
                    ("POST", f"/v2/models/{n}/infer", {"inputs": [{"name": "input", "shape": [3, 4],
                                                                   "datatype": "FP32",
                                                                   "data": X.ravel().tolist()}]}),
                    ("GET", f"/v1/models/{n}", None), ("GET", f"/v1/models/{n}/versions/1", None),
                    ("GET", f"/v1/models/{n}/metadata", None), ("GET", f"/v2/models/{n}", None),
                    ("GET", f"/v2/models/{n}/versions/1", None), ("GET", f"/v2/models/{n}/ready", None)):
                r = requests.request(method, u + path, json=body, timeout=30)
                bodies.append((path, r.status_code, r.text))
        for path in ("/v2/repository/index", "/models", "/v2/health/ready", "/nope"):
            r = requests.get(u + path, timeout=30)
            bodies.append((path, r.status_code, r.text))
    with in_process({"single": str(single)}, poll_interval=0) as s:
        for path in ("/models/single/predict", "/v2/models/single", "/v1/models/single"):
            r = requests.request("POST" if path.endswith("predict") else "GET", s.url + path,
                                 json={"x": X.tolist()}, timeout=30)
            bodies.append((path, r.status_code, r.text))
    errors = [b for b in bodies if b[1] >= 400 or "error_message" in b[2]]
    text = "\n".join(t for _, _, t in bodies)
    for p in secret:
        assert p not in text, [b for b in bodies if p in b[2]][:3]
    # the errors are there, naming files inside the repository
    for needle in ("corrupt/1/model.maas", "checksum mismatch", "nofile/1/model.maas",
                   "badjson/config.json", "invalid JSON", "unknown key 'nope'", "dirfile/1/model.maas",
                   "single.maas"):
        assert needle in text, needle
    assert len(errors) > 40
