"""gunicorn settings for ``maas serve``. Loaded by gunicorn as a file (not
as maas.serving.gunicorn_conf) so that the master never imports maas.

The default worker (``--server gevent``) is :class:`MaasGeventWorker`
below: gunicorn's gevent worker (one greenlet per connection, so a slow or
stalled client costs a greenlet, not a thread) with

* a header timeout: a request line and headers not complete within
  ``MAAS_HEADER_TIMEOUT`` seconds (default 10) close the connection (the
  same bound covers an idle keep-alive connection waiting for its next
  request);
* a body timeout: a body not received within ``MAAS_BODY_TIMEOUT`` seconds
  (default 30) of its headers is answered 408 and the connection closed;
* over TLS (``maas serve --certfile``), the handshake bounded by the same
  header timeout (a client that never finishes it is closed);
* a per-client cap: more than ``MAAS_MAX_CLIENT_CONNECTIONS`` open
  connections from one address to one worker (default 256, 0: no cap) are
  answered 429 and closed; ``worker_connections`` caps a worker's total.

Every error page gunicorn itself writes (400, 414, 431, 501, 500) is JSON,
``{"error": "..."}``, like the app's own errors.
"""
import json
import os
import time

preload_app = False  # models and thread pools are made in each worker, after fork
accesslog = None     # maas writes its own audit log
# gunicorn >= 27 opens a control socket at a fixed path in $HOME, which two
# servers on one machine would fight over; maas does not use it
control_socket_disable = True


_grpc = []  # the gRPC process of --grpc-port (maas.serving.grpc_server)


def when_ready(server):
    """Starts the one gRPC process beside the workers (it imports maas; the
    master does not)."""
    if os.environ.get("MAAS_GRPC_PORT"):
        import subprocess
        import sys

        _grpc.append(subprocess.Popen([sys.executable, "-P", "-m", "maas.serving.grpc_server"]))


def on_exit(server):
    """Stops the gRPC process: SIGTERM, it drains its calls (grace period)."""
    import signal
    import subprocess

    for p in _grpc:
        try:
            p.send_signal(signal.SIGTERM)
            p.wait(server.cfg.graceful_timeout + 5)
        except (OSError, subprocess.TimeoutExpired, ChildProcessError):
            p.kill()


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def _write_json_error(sock, status_int, reason, mesg):
    """gunicorn.util.write_error with a JSON body instead of an HTML page."""
    from gunicorn import util

    body = json.dumps({"error": f"{reason}: {mesg}" if mesg else reason}).encode()
    head = (f"HTTP/1.1 {int(status_int)} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin1") + body)


def post_fork(server, worker):
    from gunicorn import util

    util.write_error = _write_json_error  # base.Worker.handle_error calls util.write_error


class _HandshakeInWorker:
    """An SSLContext whose wrap_socket never does the TLS handshake itself:
    gevent's server would otherwise run it when the connection is accepted,
    with no timeout, so a client that connects and never finishes its
    handshake would hold a greenlet for ever. The gevent worker below does
    the handshake under the header timeout instead (gthread does it on the
    first read, as before)."""

    def __init__(self, context):
        self._context = context

    def wrap_socket(self, sock, *args, **kwargs):
        kwargs["do_handshake_on_connect"] = False
        return self._context.wrap_socket(sock, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._context, name)


def ssl_context(config, default_ssl_context_factory):
    """gunicorn's hook: its default context (certfile, keyfile, ca_certs,
    cert_reqs, ciphers), handshaking in the worker."""
    return _HandshakeInWorker(default_ssl_context_factory())


def _float_env(name, default):
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return float(default)


if os.environ.get("MAAS_SERVE_SERVER", "gevent") == "gevent":
    import gevent
    from gunicorn.workers.ggevent import GeventWorker

    class BodyTimeout(OSError):
        """The request body did not arrive in time (the app answers 408)."""
        http_status = 408

    class _TimedBody:
        """A request body whose reads all end by one deadline."""

        def __init__(self, body, seconds):
            self._body = body
            self._seconds = seconds
            self._deadline = time.monotonic() + seconds

        def _call(self, fn, *args):
            left = self._deadline - time.monotonic()
            try:
                if left <= 0:
                    raise gevent.Timeout(0)
                with gevent.Timeout(left):
                    return fn(*args)
            except gevent.Timeout:
                self._body.failed = True  # the connection is not reused
                raise BodyTimeout(f"the request body did not arrive within {self._seconds:g} s "
                                  f"(the server's body timeout)") from None

        def read(self, size=None):
            return self._call(self._body.read, size)

        def readline(self, size=None):
            return self._call(self._body.readline, size)

        def readlines(self, size=None):
            return self._call(self._body.readlines, size)

        def __iter__(self):
            return self

        def __next__(self):
            line = self.readline()
            if not line:
                raise StopIteration
            return line

    class MaasGeventWorker(GeventWorker):
        """gunicorn's gevent worker with header and body timeouts, a
        per-client connection cap and JSON error pages."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.header_timeout = _float_env("MAAS_HEADER_TIMEOUT", 10)
            self.body_timeout = _float_env("MAAS_BODY_TIMEOUT", 30)
            self.max_client = int(_float_env("MAAS_MAX_CLIENT_CONNECTIONS", 256))
            self._per_client = {}

        def timeout_ctx(self):
            # bounds next(parser): the idle wait for a request, its request
            # line and headers (and draining an unread earlier body)
            return gevent.Timeout(self.header_timeout, False)

        def handle(self, listener, client, addr):
            ip = addr[0] if isinstance(addr, tuple) and addr else ""
            n = self._per_client.get(ip, 0)
            tls = hasattr(client, "do_handshake")
            if self.max_client and n >= self.max_client:
                try:
                    if not tls:  # (over TLS the handshake is not done: just close)
                        _write_json_error(client, 429, "Too Many Requests",
                                          f"{n} connections from {ip} are open to this worker, "
                                          f"the limit is {self.max_client}; reuse or close "
                                          f"connections")
                except OSError:
                    pass
                finally:
                    client.close()
                return
            self._per_client[ip] = n + 1
            try:
                if tls:  # the TLS handshake, bounded like the request's headers
                    try:
                        with gevent.Timeout(self.header_timeout):
                            client.do_handshake()
                    except (gevent.Timeout, OSError, ValueError):
                        client.close()  # stalled, not TLS, or a refused certificate
                        return
                super().handle(listener, client, addr)
            finally:
                left = self._per_client.get(ip, 1) - 1
                if left > 0:
                    self._per_client[ip] = left
                else:
                    self._per_client.pop(ip, None)

        def handle_request(self, listener_name, req, sock, addr):
            body = req.body
            if body is not None and self.body_timeout > 0:
                req.body = _TimedBody(body, self.body_timeout)
            try:
                return super().handle_request(listener_name, req, sock, addr)
            finally:
                req.body = body  # the parser drains and checks the real one

    worker_class = MaasGeventWorker
