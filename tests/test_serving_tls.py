"""``maas serve`` protecting its wire and its models, on real servers on
loopback: HTTPS with a throwaway CA and certificates made here with
``cryptography`` (the default gevent worker with mutual TLS required, the
gthread worker with TLS alone), talked to with ``requests`` and
``tritonclient[http]``; a client without a certificate, with one from
another CA, or speaking plain HTTP is refused. The same gevent server
decrypts encrypted versions with ``--model-key-file`` and serves only
versions signed by ``--trusted-keys``: unsigned, untrusted and tampered
versions are refused, reported in the model's status and never unload the
good version; the audit log names the signer of every load and, behind a
trusted proxy, the client from X-Forwarded-For. Neither log holds the key.
Every server runs in its own process group, which ``Server.stop`` ends,
pass or fail."""
from __future__ import annotations

import datetime
import ipaddress
import json
import os
import ssl
import time

import numpy as np
import pytest
import requests

import maas
import serving_fixture as sf
from serving_fixture import Server

pytest.importorskip("cryptography")
pytest.importorskip("gunicorn")
pytest.importorskip("gevent")

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

from maas.saving import Encryption, signing  # noqa: E402

X = np.random.default_rng(11).normal(size=(5, sf.IN)).astype(np.float32)
KEY = bytes(range(100, 132))


# ---------------------------------------------------------------- certificates

def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path, key, cert):
    with open(path + ".key", "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(path + ".crt", "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return path + ".crt", path + ".key"


def make_ca(folder, cn):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    crt, _ = _write(os.path.join(folder, cn), key, cert)
    return {"key": key, "cert": cert, "crt": crt}


def issue(ca, folder, cn, server: bool):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca["cert"].subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(hours=1))
         .not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                               else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca["key"].public_key()),
                        critical=False))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                         x509.DNSName("localhost")]), critical=False)
    return _write(os.path.join(folder, cn), key, b.sign(ca["key"], hashes.SHA256()))


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    ca, rogue = make_ca(d, "maas-test-ca"), make_ca(d, "rogue-ca")
    return {"ca": ca["crt"], "server": issue(ca, d, "server", True),
            "client": issue(ca, d, "client", False), "rogue": issue(rogue, d, "rogue-client", False)}


class TLSServer(Server):
    """``maas serve`` over HTTPS; ready when /v2/health/ready answers 200
    over TLS (with the client certificate)."""

    def __init__(self, repo, tmp, pki, extra=(), server=None, require_client_cert=False):
        self.pki = pki
        tls = ["--certfile", pki["server"][0], "--keyfile", pki["server"][1]]
        if require_client_cert:
            tls += ["--ca-certs", pki["ca"], "--require-client-cert"]
        super().__init__(repo, tmp, extra=[*tls, *extra], server=server)

    def _wait_ready(self):
        self.url = self.url.replace("http://", "https://")
        deadline = time.monotonic() + self.BOOT_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + self.output())
            try:
                if requests.get(self.url + "/v2/health/ready", verify=self.pki["ca"],
                                cert=self.pki["client"], timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not become ready:\n" + self.output())

    def get(self, path, **kw):
        kw.setdefault("verify", self.pki["ca"])
        kw.setdefault("cert", self.pki["client"])
        return requests.get(self.url + path, timeout=30, **kw)

    def post(self, path, **kw):
        kw.setdefault("verify", self.pki["ca"])
        kw.setdefault("cert", self.pki["client"])
        return requests.post(self.url + path, timeout=30, **kw)


def _publish(repo, name, version, model, key=None, sign_with=None, tamper=False):
    """Writes REPO/name/version/model.maas (+ .sig) in a hidden folder and
    renames it into place, as save_to_repository does."""
    tmp = os.path.join(repo, name, f".tmp-{version}")
    os.makedirs(tmp)
    path = os.path.join(tmp, "model.maas")
    model.save(path, encryption_key=key)
    if sign_with is not None:
        signing.sign_file(path, sign_with)
    if tamper:
        data = bytearray(open(path, "rb").read())
        data[-20] ^= 0x04
        open(path, "wb").write(bytes(data))
    os.rename(tmp, os.path.join(repo, name, str(version)))


@pytest.fixture(scope="module")
def secure(tmp_path_factory, pki):
    """A gevent server: mutual TLS required, encrypted models, trusted keys,
    127.0.0.1 a trusted proxy."""
    base = tmp_path_factory.mktemp("secure")
    repo = str(base / "repo")
    keys = str(base / "trusted")
    os.makedirs(os.path.join(repo, "secure"))
    os.makedirs(keys)
    priv, pub = signing.generate_keypair(os.path.join(keys, "..", "release.pem"),
                                         os.path.join(keys, "release.pub"))
    untrusted, _ = signing.generate_keypair(str(base / "untrusted.pem"), str(base / "untrusted.pub"))
    key_file = str(base / "model.key")
    Encryption(KEY).write_key_file(key_file)
    good = sf.build_model(0)
    _publish(repo, "secure", 1, good, key=KEY, sign_with=priv)   # encrypted and signed
    _publish(repo, "secure", 2, sf.build_model(1), key=KEY)      # encrypted, unsigned
    s = TLSServer(repo, str(base), pki, require_client_cert=True,
                  extra=["--model-key-file", key_file, "--trusted-keys", keys,
                         "--forwarded-allow-ips", "127.0.0.1", "--poll-interval", "0.3",
                         "--header-timeout", "2"])
    try:
        yield {"server": s, "repo": repo, "priv": priv, "pub": pub, "untrusted": untrusted,
               "expected": good.predict(X, verbose=0), "kid": signing.key_id(pub)}
    finally:
        s.stop()
    assert not s.group_alive()


def test_https_with_a_client_certificate_answers_every_protocol(secure):
    s = secure["server"]
    assert s.get("/v2/health/live").status_code == 200
    assert s.get("/v2/health/ready").status_code == 200
    r = s.post("/models/secure/predict", json={"x": X.tolist()})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["predictions"], secure["expected"], rtol=1e-6, atol=1e-7)
    r = s.post("/v1/models/secure:predict", json={"instances": X.tolist()})
    np.testing.assert_allclose(r.json()["predictions"], secure["expected"], rtol=1e-6, atol=1e-7)


def test_clients_without_a_good_certificate_or_tls_are_refused(secure, pki):
    s = secure["server"]
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(s.url + "/v2/health/live", verify=pki["ca"], timeout=30)  # no certificate
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(s.url + "/v2/health/live", verify=pki["ca"], cert=pki["rogue"], timeout=30)
    with pytest.raises(requests.exceptions.RequestException):  # plain HTTP to the TLS port
        requests.get(s.url.replace("https://", "http://") + "/v2/health/live", timeout=30)
    with pytest.raises(requests.exceptions.SSLError):  # the client checks the server too
        requests.get(s.url + "/v2/health/live", cert=pki["client"], timeout=30)
    # the same client with its certificate is served (the refusals were about the certificate)
    assert s.get("/v2/health/live").status_code == 200


def test_a_stalled_tls_handshake_is_closed_by_the_header_timeout(secure, pki):
    """A client that connects and never sends its ClientHello (a TLS
    slowloris) is closed after --header-timeout (2 s here), and others are
    served meanwhile."""
    import socket

    s = secure["server"]
    stalled = [socket.create_connection(("127.0.0.1", s.port), timeout=60) for _ in range(5)]
    try:
        assert s.get("/v2/health/live").status_code == 200
        for c in stalled:
            assert c.recv(1) == b""  # closed by the server (a hang would raise a timeout)
    finally:
        for c in stalled:
            c.close()


@pytest.mark.parametrize("binary", [False, True])
def test_tritonclient_over_mutual_tls(secure, pki, binary):
    import tritonclient.http as th

    c = th.InferenceServerClient(url=f"127.0.0.1:{secure['server'].port}", ssl=True,
                                 ssl_options={"ca_certs": pki["ca"], "certfile": pki["client"][0],
                                              "keyfile": pki["client"][1]})
    try:
        assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("secure", "1")
        assert not c.is_model_ready("secure", "2")
        inp = th.InferInput("input", list(X.shape), "FP32")
        inp.set_data_from_numpy(X, binary_data=binary)
        res = c.infer("secure", [inp], outputs=[th.InferRequestedOutput("output", binary_data=binary)])
        if binary:  # bit-identical to the in-process model the file was saved from
            np.testing.assert_array_equal(res.as_numpy("output"), secure["expected"])
        else:
            np.testing.assert_allclose(res.as_numpy("output"), secure["expected"], rtol=1e-6, atol=1e-7)
    finally:
        c.close()


def _status(s):
    return {r["version"]: r for r in s.get("/v1/models/secure").json()["model_version_status"]}


def _wait(cond, what, seconds=90.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _audit(s):
    with open(s.audit) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_only_signed_versions_are_served_and_refusals_never_unload_the_good_one(secure):
    s, repo = secure["server"], secure["repo"]
    st = _status(s)
    assert st["1"]["state"] == "AVAILABLE"
    assert st["2"]["state"] == "END" and st["2"]["status"]["error_code"] == "PERMISSION_DENIED"
    assert "not signed" in st["2"]["status"]["error_message"]
    # a version signed by an untrusted key, and a tampered signed one, arrive while serving
    _publish(repo, "secure", 3, sf.build_model(2), key=KEY, sign_with=secure["untrusted"])
    _publish(repo, "secure", 4, sf.build_model(3), key=KEY, sign_with=secure["priv"], tamper=True)
    st = _wait(lambda: (lambda t: t if {"3", "4"} <= set(t) else None)(_status(s)), "versions 3 and 4")
    assert st["3"]["state"] == "END" and "not a trusted key" in st["3"]["status"]["error_message"]
    assert st["4"]["state"] == "END" and "changed after signing" in st["4"]["status"]["error_message"]
    assert st["1"]["state"] == "AVAILABLE"
    r = s.post("/models/secure/predict", json={"x": X.tolist()})
    assert r.status_code == 200
    np.testing.assert_allclose(r.json()["predictions"], secure["expected"], rtol=1e-6, atol=1e-7)
    # a good version 5 (signed, encrypted) then replaces 1
    new = sf.build_model(4)
    _publish(repo, "secure", 5, new, key=KEY, sign_with=secure["priv"])
    want = new.predict(X, verbose=0)

    def serves_new():  # on fresh connections, so that both workers answer
        return all(np.allclose(s.post("/models/secure/predict", json={"x": X.tolist()})
                               .json()["predictions"], want, rtol=1e-6, atol=1e-7) for _ in range(6))

    _wait(serves_new, "version 5 in every worker")
    assert _status(s)["5"]["state"] == "AVAILABLE"
    # the audit log: every load with its signer, every refusal with its reason
    loads = [e for e in _audit(s) if e.get("event") == "model_load"]
    by_version = {}
    for e in loads:
        by_version.setdefault(e["version"], []).append(e)
    assert all(e["outcome"] == "loaded" and e["signer_key_id"] == secure["kid"] and e["encrypted"]
               for v in ("1", "5") for e in by_version[v])
    assert by_version["2"][0]["outcome"] == "refused" and "not signed" in by_version["2"][0]["error"]
    assert by_version["3"][0]["outcome"] == "refused" and "not a trusted key" in by_version["3"][0]["error"]
    assert by_version["4"][0]["outcome"] == "refused"
    assert len({e["model"] for e in loads}) == 1 and loads[0]["model"] == "secure"


def test_the_audit_log_names_the_client_behind_a_trusted_proxy(secure):
    s = secure["server"]
    s.get("/v2/health/live", headers={"X-Forwarded-For": "203.0.113.7, 127.0.0.1",
                                      "X-Request-ID": "via-proxy-1"})
    s.get("/v2/health/live", headers={"X-Request-ID": "direct-1"})
    lines = {e["request_id"]: e for e in _wait(
        lambda: (lambda a: a if {"via-proxy-1", "direct-1"} <= {e.get("request_id") for e in a}
                 else None)(_audit(s)), "the audit lines") if "request_id" in e}
    assert lines["via-proxy-1"]["client"] == "203.0.113.7"
    assert lines["direct-1"]["client"] == "127.0.0.1"


def test_neither_log_holds_the_key(secure):
    s = secure["server"]
    text = open(s.audit).read() + s.output()
    for secret in (KEY.hex(), KEY.hex().upper(), repr(KEY)):
        assert secret not in text
    assert "model_load" in text  # (the logs were read)


def test_gthread_serves_https_to_requests_and_tritonclient(tmp_path, pki):
    import tritonclient.http as th

    repo = str(tmp_path / "repo")
    sf.save_model(repo, "mlp", 1, 0)
    expected = maas.load_model(os.path.join(repo, "mlp", "1", "model.maas")).predict(X, verbose=0)
    s = TLSServer(repo, str(tmp_path), pki, server="gthread")
    try:
        r = s.post("/models/mlp/predict", json={"x": X.tolist()}, cert=None)  # no client cert needed
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["predictions"], expected, rtol=1e-6, atol=1e-7)
        c = th.InferenceServerClient(url=f"127.0.0.1:{s.port}", ssl=True,
                                     ssl_options={"ca_certs": pki["ca"]})
        try:
            inp = th.InferInput("input", list(X.shape), "FP32")
            inp.set_data_from_numpy(X, binary_data=True)
            np.testing.assert_array_equal(c.infer("mlp", [inp]).as_numpy("output"), expected)
        finally:
            c.close()
        with pytest.raises(requests.exceptions.RequestException):
            requests.get(s.url.replace("https://", "http://") + "/v2/health/live", timeout=30)
        # ssl's own client, checking the certificate chain and the address
        ctx = ssl.create_default_context(cafile=pki["ca"])
        import socket

        with socket.create_connection(("127.0.0.1", s.port), timeout=30) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
                assert tls.getpeercert()["subject"] == ((("commonName", "server"),),)
    finally:
        s.stop()
    assert not s.group_alive()


@pytest.mark.parametrize("args, message", [
    (["--certfile", "c.pem"], "--certfile and --keyfile go together"),
    (["--ca-certs", "ca.pem"], "need --certfile and --keyfile"),
    (["--certfile", "SERVER", "--keyfile", "KEY", "--require-client-cert"], "needs --ca-certs"),
    (["--certfile", "SERVER", "--keyfile", "KEY", "--server", "granian"], "gevent or gthread"),
    (["--certfile", "SERVER", "--keyfile", "SERVER"], "cannot load the certificate"),
    (["--model-key-file", "BADKEY"], "an AES-256 key is 32 bytes"),
    (["--trusted-keys", "EMPTY"], "holds no Ed25519 public key"),
    (["--trusted-keys", "EMPTY", "--loader", "x:y"], "cannot be combined with --loader"),
])
def test_bad_security_options_stop_the_server_at_start(tmp_path, pki, capsys, args, message):
    from maas.serving.cli import serve_main

    (tmp_path / "BADKEY").write_text("not a key")
    os.makedirs(tmp_path / "EMPTY")
    subst = {"SERVER": pki["server"][0], "KEY": pki["server"][1],
             "BADKEY": str(tmp_path / "BADKEY"), "EMPTY": str(tmp_path / "EMPTY")}
    assert serve_main([str(tmp_path), *[subst.get(a, a) for a in args]]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "not a key" not in err  # a bad key file's content is never echoed


def test_forwarded_for_is_believed_only_from_trusted_proxies():
    from maas.serving.security import ForwardedFor

    app = ForwardedFor(lambda env, sr: env, "10.0.0.0/8, 127.0.0.1")
    seen = lambda peer, xff: app({"REMOTE_ADDR": peer, **({"HTTP_X_FORWARDED_FOR": xff} if xff else {})},  # noqa: E731
                                 None)["REMOTE_ADDR"]
    # a client's own forged entries are left of the address the proxy saw
    assert seen("10.0.0.6", "6.6.6.6, 203.0.113.7, 10.0.0.5") == "203.0.113.7"
    assert seen("127.0.0.1", "2001:db8::1") == "2001:db8::1"
    assert seen("198.51.100.1", "203.0.113.7") == "198.51.100.1"  # not a proxy: ignored
    assert seen("10.0.0.6", "not-an-address") == "10.0.0.6"
    assert seen("10.0.0.6", None) == "10.0.0.6"
    assert seen("10.0.0.6", "10.0.0.9, 10.0.0.5") == "10.0.0.9"  # all proxies: the first
    with pytest.raises(ValueError):
        ForwardedFor(None, "10.0.0.0/33")


def test_grpc_takes_the_same_tls_as_http_and_refuses_clients_without_a_certificate(
        tmp_path_factory, pki):
    """--grpc-port beside --certfile/--keyfile/--ca-certs/--require-client-cert:
    the gRPC listener speaks TLS with the same certificate and requires a
    client certificate from the same CA; tritonclient[grpc] with one gets
    live, ready and an answer equal to HTTPS's; without one, or in plain
    text, the call fails."""
    tg = pytest.importorskip("tritonclient.grpc")
    base = tmp_path_factory.mktemp("grpc-tls")
    repo = str(base / "repo")
    maas.utils.set_random_seed(0)
    _publish(repo, "m", 1, maas.Sequential([maas.Input((sf.IN,)), maas.layers.Dense(3)]))
    port = sf.free_port()
    s = TLSServer(repo, str(base), pki, require_client_cert=True, extra=["--grpc-port", str(port)])
    try:
        url = f"localhost:{port}"
        good = tg.InferenceServerClient(url, ssl=True, root_certificates=pki["ca"],
                                        private_key=pki["client"][1],
                                        certificate_chain=pki["client"][0])
        deadline = time.monotonic() + 120
        while True:   # the gRPC process boots beside the workers
            try:
                if good.is_server_ready():
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("gRPC over TLS not ready:\n" + s.output())
            time.sleep(0.2)
        assert good.is_server_live() and good.is_model_ready("m")
        x = X[:2].astype(np.float32)
        meta = good.get_model_metadata("m")
        inp = tg.InferInput(meta.inputs[0].name, list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        got = good.infer("m", [inp]).as_numpy(meta.outputs[0].name)
        r = s.post("/v2/models/m/infer", json={"inputs": [{"name": meta.inputs[0].name,
                                                          "shape": list(x.shape),
                                                          "datatype": "FP32",
                                                          "data": x.ravel().tolist()}]})
        assert r.status_code == 200
        np.testing.assert_array_equal(got.ravel(), np.asarray(r.json()["outputs"][0]["data"], np.float32))
        no_cert = tg.InferenceServerClient(url, ssl=True, root_certificates=pki["ca"])
        with pytest.raises(Exception):
            no_cert.is_server_live()
        plain = tg.InferenceServerClient(url)
        with pytest.raises(Exception):
            plain.is_server_live()
    finally:
        s.stop()
