"""Models by name and version: in-memory models, model folders and a model
repository, with version policies, per-model configuration and hot reload.

A repository is a folder ``REPO/<name>/<version>/`` (version a positive
integer in ASCII digits without a leading zero; other folder names, such as
a ``.tmp`` being written, are ignored) holding ``model.maas``, or ``model.onnx`` (served through ONNX Runtime;
when a folder has both, ``model.maas`` is served), with an optional
``REPO/<name>/config.json``::

    {"batching": {"max_batch_size": 32, "max_delay_ms": 2,   # or true/false
                  "max_queue_rows": 4096},
     "version_policy": "latest",  # or "all", {"latest": {"num_versions": 2}},
                                  # {"specific": {"versions": [1, 3]}}
     "max_rows": 8192,            # rows per request
     "allow_nan": false,          # accept NaN and infinity in inputs
     "input_name": "input", "output_name": "output"}

The config is validated strictly (types, ranges; an unknown key is an error
naming it). A poll thread rescans the repository:

- a new version folder is loaded and then published (requests never see a
  half-loaded version); a version whose load fails is reported (status,
  repository index, log) and never unloads a serving version: the policy
  picks among the versions that loaded, and when it picks none the serving
  ones stay;
- a loaded version whose files change (size, inode or mtime of any file in
  its folder) is reloaded; when the new files fail to load, the version
  keeps serving what it loaded and says so in its status;
- a valid change to config.json applies to the loaded versions; an invalid
  one is reported and the last good config stays;
- a removed version is unpublished at once and unloaded when its in-flight
  requests have finished.

The default loader copies the weights into memory (``mmap=False``), so no
change to a file on disk can reach a served model. Publish a new version by
writing it under a hidden name beside its place and renaming it into place
(``maas.saving.save_to_repository`` does), so that it is never read half
written.

Messages for clients name files relative to the repository, never by the
server's absolute paths (the log has the full paths).
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import stat
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable

from ..saving.repository import MAX_VERSION
from ..saving.repository import _is_version as is_version_name  # one rule for saving and serving
from .batching import Batcher
from .errors import ServingError
from .model import ServedModel, from_model

log = logging.getLogger("maas.serving")

_CONFIG_KEYS = ("batching", "dynamic_batching", "version_policy", "max_rows", "allow_nan",
                "input_name", "output_name", "platform", "explain")
_BATCH_KEYS = ("enabled", "max_batch_size", "max_delay_ms", "max_queue_rows")
_BATCH_DEFAULTS = {"max_batch_size": 32, "max_delay_ms": 2.0, "max_queue_rows": 4096}
MAX_BATCH_SIZE = 65536
MAX_DELAY_MS = 10000.0
MAX_QUEUE_ROWS = 2 ** 31 - 1
CONFIG_MAX_BYTES = 1 << 20


def _unknown(d: dict, known: Iterable[str], where: str) -> None:
    for k in d:
        if k not in known:
            raise ValueError(f"unknown key {where + k!r} in the model config; known keys here: "
                             f"{', '.join(sorted(known))}")


def _check_name(value, key):
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} must be a non-empty string, received {value!r}")
    return value


class ModelConfig:
    """A model's serving settings, from defaults, create_app and config.json.

    >>> ModelConfig.from_dict({"max_rows": 2}).max_rows
    2
    >>> ModelConfig.from_dict({"max_rowz": 2})
    Traceback (most recent call last):
    ValueError: unknown key 'max_rowz' in the model config; known keys here: allow_nan, batching, dynamic_batching, explain, input_name, max_rows, output_name, platform, version_policy
    """

    def __init__(self, batching=None, version_policy="latest", max_rows=8192, allow_nan=False,
                 input_name=None, output_name=None, platform=None, dynamic_batching=None,
                 explain=None):
        if dynamic_batching is not None:
            if batching is not None:
                raise ValueError("give one of 'batching' and 'dynamic_batching' (two names of one "
                                 "setting), not both")
            batching = dynamic_batching
        self.batching = _batching(batching)
        self.version_policy = _policy(version_policy)
        if not isinstance(max_rows, int) or isinstance(max_rows, bool) or max_rows < 1:
            raise ValueError(f"max_rows must be a positive integer, received {max_rows!r}")
        self.max_rows = max_rows
        if not isinstance(allow_nan, bool):
            raise ValueError(f"allow_nan must be true or false, received {allow_nan!r}")
        self.allow_nan = allow_nan
        self.input_name = _check_name(input_name, "input_name")
        self.output_name = _check_name(output_name, "output_name")
        if platform is not None and not isinstance(platform, str):
            raise ValueError(f"platform must be a string, received {platform!r}")
        self.platform = platform
        from .explain import check_config  # the "explain" object: maas/serving/explain.py
        self.explain = check_config(explain)

    def _key(self):
        b = None if self.batching is None else tuple(sorted(self.batching.items()))
        return (b, self.version_policy, self.max_rows, self.allow_nan, self.input_name,
                self.output_name, self.platform, repr(self.explain))

    def __eq__(self, other):
        return isinstance(other, ModelConfig) and self._key() == other._key()

    __hash__ = None

    def __repr__(self):
        return (f"ModelConfig(batching={self.batching!r}, version_policy={self.version_policy!r}, "
                f"max_rows={self.max_rows}, allow_nan={self.allow_nan}, "
                f"input_name={self.input_name!r}, output_name={self.output_name!r})")

    @classmethod
    def from_dict(cls, d: dict | None, base: "ModelConfig | None" = None) -> "ModelConfig":
        """``d``'s settings over ``base``'s (or the defaults); ValueError
        naming the key for anything unknown or of the wrong type."""
        if d is None:
            d = {}
        if not isinstance(d, dict):
            raise ValueError(f"a model config must be an object, received {type(d).__name__}")
        _unknown(d, _CONFIG_KEYS, "")
        d = dict(d)
        if "dynamic_batching" in d:
            if "batching" in d:
                raise ValueError("give one of 'batching' and 'dynamic_batching' (two names of one "
                                 "setting), not both")
            d["batching"] = d.pop("dynamic_batching")
        kw = {} if base is None else dict(batching=base.batching, version_policy=base.version_policy,
                                          max_rows=base.max_rows, allow_nan=base.allow_nan,
                                          input_name=base.input_name, output_name=base.output_name,
                                          platform=base.platform, explain=base.explain)
        kw.update(d)
        return cls(**kw)

    @classmethod
    def from_file(cls, path: str, base: "ModelConfig | None" = None,
                  label: str | None = None) -> "ModelConfig":
        """The config in ``path`` over ``base`` (``base`` when there is no
        file). Errors start with ``label`` (default: the file's name), not
        the path."""
        label = label or os.path.basename(path)
        try:
            # O_NONBLOCK: a FIFO put in its place must not hang the poll thread
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return cls.from_dict({}, base)
        except OSError as e:
            raise ValueError(f"{label}: cannot be read: {e.strerror or type(e).__name__}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise ValueError(f"{label}: not a regular file")
            with os.fdopen(fd, "rb", closefd=False) as f:
                raw = f.read(CONFIG_MAX_BYTES + 1)
        except OSError as e:
            raise ValueError(f"{label}: cannot be read: {e.strerror or type(e).__name__}") from None
        finally:
            os.close(fd)
        if len(raw) > CONFIG_MAX_BYTES:
            raise ValueError(f"{label}: larger than {CONFIG_MAX_BYTES} bytes")

        def pairs(items):
            out = {}
            for k, v in items:
                if k in out:
                    raise ValueError(f"duplicate key {k!r}")
                out[k] = v
            return out

        def constant(name):
            raise ValueError(f"{name} is not a JSON number")

        try:
            d = json.loads(raw.decode("utf-8"), object_pairs_hook=pairs, parse_constant=constant)
        except UnicodeDecodeError:
            raise ValueError(f"{label}: not UTF-8 text") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{label}: invalid JSON: {e}") from None
        except RecursionError:
            raise ValueError(f"{label}: nested too deeply") from None
        except ValueError as e:
            raise ValueError(f"{label}: {e}") from None
        if not isinstance(d, dict):
            raise ValueError(f"{label}: the config must be a JSON object")
        try:
            return cls.from_dict(d, base)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{label}: {e}") from None

    def select(self, versions) -> list[int]:
        """The versions this config's policy serves out of ``versions``."""
        kind, arg = self.version_policy
        versions = sorted(versions)
        if kind == "all":
            return versions
        if kind == "specific":
            return [v for v in versions if v in arg]
        return versions[-arg:] if versions else []


def _int_in(value, key, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{key} must be an integer from {lo} to {hi}, received {value!r}")
    return value


def _batching(b):
    if b is None or b is False:
        return None
    if b is True:
        b = {}
    if not isinstance(b, dict):
        raise ValueError(f"batching must be true, false or an object, received {b!r}")
    _unknown(b, _BATCH_KEYS, "batching.")
    enabled = b.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ValueError(f"batching.enabled must be true or false, received {enabled!r}")
    out = dict(_BATCH_DEFAULTS)
    out.update({k: v for k, v in b.items() if k != "enabled"})
    _int_in(out["max_batch_size"], "batching.max_batch_size", 1, MAX_BATCH_SIZE)
    _int_in(out["max_queue_rows"], "batching.max_queue_rows", 1, MAX_QUEUE_ROWS)
    d = out["max_delay_ms"]
    if (isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d)
            or not 0 <= d <= MAX_DELAY_MS):
        raise ValueError(f"batching.max_delay_ms must be a number from 0 to {MAX_DELAY_MS:g}, "
                         f"received {d!r}")
    out["max_delay_ms"] = float(d)
    if out["max_queue_rows"] < out["max_batch_size"]:
        raise ValueError(f"batching.max_queue_rows ({out['max_queue_rows']}) must be at least "
                         f"batching.max_batch_size ({out['max_batch_size']})")
    return out if enabled else None


def _policy(p):
    if isinstance(p, tuple):
        return p
    if p in ("latest", None):
        return ("latest", 1)
    if p == "all":
        return ("all", None)
    if isinstance(p, dict) and len(p) == 1:
        (kind, arg), = p.items()
        if kind in ("latest", "all", "specific"):
            if not isinstance(arg, dict):
                raise ValueError(f"version_policy.{kind} must be an object, received {arg!r}")
            if kind == "latest":
                _unknown(arg, ("num_versions",), "version_policy.latest.")
                n = arg.get("num_versions", 1)
                if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                    raise ValueError(f"version_policy.latest.num_versions must be a positive "
                                     f"integer, received {n!r}")
                return ("latest", n)
            if kind == "all":
                _unknown(arg, (), "version_policy.all.")
                return ("all", None)
            _unknown(arg, ("versions",), "version_policy.specific.")
            vs = arg.get("versions")
            if (not isinstance(vs, list) or not vs or not all(
                    isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_VERSION
                    for v in vs)):
                raise ValueError(f"version_policy.specific.versions must be a non-empty list of "
                                 f"positive integers, received {vs!r}")
            return ("specific", frozenset(vs))
    raise ValueError(f"version_policy must be 'latest', 'all', {{'latest': {{'num_versions': n}}}} "
                     f"or {{'specific': {{'versions': [...]}}}}, received {p!r}")


# an absolute path's folders: '/a/b/' in '/a/b/model.maas' (not inside a
# relative path or a URL)
_ABS_DIRS = re.compile(r"(?<![\w.~:/-])/(?:[^\s/'\"]+/)+")


def public_message(msg: str, roots: Iterable[str | None] = ()) -> str:
    """``msg`` with the server's paths taken out, for a client: a path under
    one of ``roots`` becomes relative to it, any other absolute path its
    last component.

    >>> public_message("/srv/repo/m/1/model.maas: bad", ["/srv/repo"])
    'm/1/model.maas: bad'
    >>> public_message("cannot open '/etc/x/y.maas'")
    "cannot open 'y.maas'"
    """
    prefixes = set()
    for r in roots:
        if r:
            for p in (os.path.abspath(r), os.path.realpath(r)):
                p = p.rstrip(os.sep)
                if p:
                    prefixes.add(p)
    for p in sorted(prefixes, key=len, reverse=True):
        msg = msg.replace(p + os.sep, "")
        msg = re.sub(re.escape(p) + r"(?=$|[\s'\":,;)\]])", ".", msg)
    return _ABS_DIRS.sub("", msg)


def _error_code(e: BaseException) -> str:
    """The canonical (gRPC) code TF Serving reports for a failed load."""
    from ..errors import ModelFormatError
    from ..saving.signing import ModelSignatureError

    if isinstance(e, ModelSignatureError):  # unsigned, untrusted signer, changed after signing
        return "PERMISSION_DENIED"
    if isinstance(e, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        return "NOT_FOUND"
    if isinstance(e, PermissionError):
        return "PERMISSION_DENIED"
    if isinstance(e, ModelFormatError):
        return "DATA_LOSS"
    if isinstance(e, (ValueError, TypeError)):
        return "INVALID_ARGUMENT"
    return "UNKNOWN"


def _fingerprint(folder: str) -> tuple:
    """What identifies a version folder's contents without reading them:
    every file's relative name, device, inode, size, mtime and ctime (hidden
    files, such as a save in progress, left out)."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if f.startswith("."):
                continue
            p = os.path.join(root, f)
            rel = os.path.relpath(p, folder)
            try:
                st = os.stat(p)
            except OSError:
                out.append((rel, None))
                continue
            out.append((rel, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        if len(out) > 10000:
            break
    return tuple(out)


LABELS_MAX_BYTES = 16 << 20


def read_labels(*folders) -> list[str] | None:
    """The class names of ``labels.txt`` (one a line) in the first folder
    that has one: the version folder, then the model folder (Triton's
    classification extension names classes with them)."""
    for d in folders:
        if not d:
            continue
        p = os.path.join(d, "labels.txt")
        if os.path.isfile(p):
            with open(p, "rb") as f:
                raw = f.read(LABELS_MAX_BYTES + 1)
            if len(raw) > LABELS_MAX_BYTES:
                raise ValueError(f"labels.txt is larger than {LABELS_MAX_BYTES} bytes")
            return raw.decode("utf-8").splitlines()
    return None


class LoadedVersion:
    """One served version: the model, its config, its batcher and its
    in-flight count. ``source`` is the model as loaded (before the config's
    input and output names), ``fingerprint`` its folder's files when loaded
    and ``reload_error`` ``(fingerprint, code, message)`` when changed files
    failed to load."""

    def __init__(self, model: ServedModel, config: "ModelConfig", on_batch=None,
                 fingerprint=None, source: ServedModel | None = None):
        self.model = model
        self.config = config
        self.fingerprint = fingerprint
        self.source = source or model
        self.reload_error: tuple | None = None
        self.inflight = 0
        self._idle = threading.Condition()
        self.batcher = None
        if config.batching:
            cb = None if on_batch is None else (
                lambda n, dt: on_batch(model.name, model.version, n, dt))
            self.batcher = Batcher(model.run, name=f"{model.name}-{model.version}", on_batch=cb,
                                   in_flight=lambda: self.inflight, **config.batching)
        self._on_batch = on_batch

    def run(self, x, timing: list | None = None):
        """The model's answer for ``x``: a dict ``{input name: batch}``
        answered ``{output name: batch}``, or (a single-input model) one
        batch answered with the first output. ``timing`` (a list) gets the
        queue and compute seconds appended."""
        feeds = x if isinstance(x, dict) else {self.model.input_name: x}
        if self.batcher is not None:
            y = self.batcher.submit(feeds, timing=timing)
        else:
            t = time.perf_counter()
            y = self.model.run(feeds)
            dt = time.perf_counter() - t
            if self._on_batch is not None:
                self._on_batch(self.model.name, self.model.version, len(next(iter(feeds.values()))), dt)
            if timing is not None:
                timing += (0.0, dt)
        return y if isinstance(x, dict) else y[self.model.output_name]

    def release(self):
        with self._idle:
            self.inflight -= 1
            if self.inflight == 0:
                self._idle.notify_all()

    def unload(self, timeout: float = 120.0):
        """Waits for the in-flight requests, then stops the batcher."""
        with self._idle:
            self._idle.wait_for(lambda: self.inflight == 0, timeout)
        if self.batcher is not None:
            self.batcher.stop()
        log.info("unloaded model %s version %d", self.model.name, self.model.version)


def _named(source: ServedModel, name: str, version: int, config: ModelConfig) -> ServedModel:
    """``source`` under the repository's name and version and the config's
    input/output names (sharing its predict function and lock)."""
    m = source.with_identity(name, version)
    if config.input_name:
        m.input_name = config.input_name
    if config.output_name:
        m.output_name = config.output_name
    if config.platform:
        m.platform = config.platform
    return m


class ModelEntry:
    """A served model: its versions, its config and what went wrong."""

    def __init__(self, name: str, config: ModelConfig | None, path: str | None = None,
                 base: ModelConfig | None = None, roots=()):
        self.name = name
        self.config = config                 # the last good config (None: never one)
        self.base = base or config           # create_app's settings under config.json
        self.path = path                     # a model folder with version subfolders
        self.roots = tuple(roots)            # where messages' paths are relative to
        self.versions: dict[int, LoadedVersion] = {}
        self.errors: dict[int, tuple] = {}   # version -> (fingerprint, code, message)
        self.missing: list[int] = []         # versions a specific policy names, not on disk
        self.kept: list[int] = []            # served although the policy does not pick them
        self.on_disk: list[int] = []
        self.config_error: str | None = None  # config.json is invalid (the last good is used)
        self.error: str | None = None        # the model as a whole (a file that did not load)
        self.ever_loaded = False

    def latest(self) -> LoadedVersion | None:
        return self.versions[max(self.versions)] if self.versions else None

    @property
    def ready(self) -> bool:
        return bool(self.versions)

    def problems(self) -> list[str]:
        out = []
        if self.error:
            out.append(self.error)
        if self.config_error:
            out.append(self.config_error)
        out += [f"version {v}: {m}" for v, (_, _, m) in sorted(self.errors.items())]
        out += [f"version {v} is not in the model folder" for v in self.missing]
        return out

    def statuses(self) -> list[dict]:
        """TF Serving's model_version_status entries, by version."""
        rows = []
        for v, lv in self.versions.items():
            notes = []
            if lv.reload_error is not None:
                notes.append((lv.reload_error[1], f"reloading version {v} failed: its files changed "
                              f"and do not load ({lv.reload_error[2]}); it serves what it loaded "
                              f"before"))
            if self.config_error:
                notes.append(("INVALID_ARGUMENT", f"{self.config_error}; the last good config "
                              f"is in use"))
            if v in self.kept:
                notes.append(("FAILED_PRECONDITION", "served although the version_policy does "
                              "not select it: no version it selects has loaded"))
            code = notes[0][0] if notes else "OK"
            rows.append((v, {"version": str(v), "state": "AVAILABLE",
                             "status": {"error_code": code,
                                        "error_message": "; ".join(m for _, m in notes)}}))
        for v, (_, code, msg) in self.errors.items():
            rows.append((v, {"version": str(v), "state": "END",
                             "status": {"error_code": code, "error_message": msg}}))
        for v in self.missing:
            rows.append((v, {"version": str(v), "state": "END",
                             "status": {"error_code": "NOT_FOUND", "error_message":
                                        f"version {v} is not in the model folder (the "
                                        f"version_policy names it)"}}))
        if self.config is None and self.config_error:
            for v in self.on_disk:
                rows.append((v, {"version": str(v), "state": "END",
                                 "status": {"error_code": "INVALID_ARGUMENT", "error_message":
                                            f"{self.config_error}; the model loads once it is "
                                            f"valid"}}))
        if self.error and not rows:
            rows.append((1, {"version": "1", "state": "END",
                             "status": {"error_code": "UNKNOWN", "error_message": self.error}}))
        return [r for _, r in sorted(rows, key=lambda t: t[0])]


def _version_number(version) -> int:
    s = str(version)
    if not is_version_name(s):
        raise ServingError(404, f"model version must be a positive integer (ASCII digits, no "
                                f"leading zero), received {s!r}")
    return int(s)


class ControlFile:
    """The loaded-model set of explicit model control, in a JSON file that
    every process of one server (gunicorn workers, the gRPC process) reads
    before it serves a request when its stamp changed; written whole and
    renamed into place under an flock, so a reader never sees half of it."""

    def __init__(self, folder: str):
        os.makedirs(folder, exist_ok=True)
        self.path = os.path.join(folder, "model-control.json")
        self.lock_path = self.path + ".lock"

    def stamp(self):
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def read(self) -> dict | None:
        try:
            with open(self.path) as f:
                return json.load(f)["models"]
        except FileNotFoundError:
            return None

    def update(self, fn) -> dict:
        import fcntl

        with open(self.lock_path, "a") as lk:
            fcntl.flock(lk, fcntl.LOCK_EX)
            state = fn(self.read() or {})
            tmp = f"{self.path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump({"models": state}, f)
            os.replace(tmp, self.path)
        return state


class Registry:
    """The served models; thread-safe. See the module's docstring.

    ``required``: the model names readiness covers (default: every model
    that has ever loaded, and at least one).
    """

    def __init__(self, loader: Callable[[str], Any], defaults: ModelConfig | None = None,
                 on_batch=None, on_change=None, required: Iterable[str] | None = None):
        self.loader = loader
        self.defaults = defaults or ModelConfig()
        self.on_batch = on_batch
        self.on_change = on_change
        if required is not None:
            if isinstance(required, (str, bytes)) or not all(
                    isinstance(n, str) and n for n in required):
                raise ValueError(f"require_models must be a list of model names, received "
                                 f"{required!r}")
            required = tuple(required) or None
        self.required = required
        self.entries: dict[str, ModelEntry] = {}
        self.repo: str | None = None
        self._lock = threading.RLock()
        self._scan_lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._said_missing: set[str] = set()
        # --model-control explicit: only these repository models are loaded
        # (name -> config override dict or None); None: every model (poll mode)
        self.explicit: dict[str, dict | None] | None = None
        self._control = None  # a ControlFile shared by the server's processes
        self._control_seen = None

    # -- building ------------------------------------------------------
    def add_object(self, name: str, obj: Any, config: dict | None = None):
        cfg = ModelConfig.from_dict(config, self.defaults)
        entry = ModelEntry(name, cfg, base=cfg)
        if isinstance(obj, (str, os.PathLike)):
            path = os.fspath(obj)
            entry.roots = (os.path.dirname(os.path.abspath(path)),)
            if os.path.isdir(path):
                entry.path = path
                entry.config = None
                with self._lock:
                    self.entries[name] = entry
                self._scan_model(entry)
                return
            try:
                obj = self.loader(path)
            except Exception as e:
                log.exception("could not load model %s from %s", name, path)
                entry.error = public_message(f"could not load {path}: {type(e).__name__}: {e}",
                                             entry.roots)
                with self._lock:
                    self.entries[name] = entry
                return
        source = from_model(obj, name, getattr(obj, "version", None)
                            if isinstance(obj, ServedModel) else 1)
        entry.versions[source.version] = LoadedVersion(_named(source, name, source.version, cfg),
                                                       cfg, self.on_batch, source=source)
        entry.ever_loaded = True
        with self._lock:
            self.entries[name] = entry
        self._changed()

    def set_repository(self, path: str):
        if not os.path.isdir(path):
            raise FileNotFoundError(f"model repository {path!r} is not a folder")
        self.repo = path
        self.scan()

    # -- scanning ------------------------------------------------------
    def scan(self):
        """Loads, reloads, reconfigures and unloads (the poll thread's step)."""
        with self._scan_lock:
            if self.repo is not None:
                try:
                    names = sorted(n for n in os.listdir(self.repo)
                                   if not n.startswith(".") and os.path.isdir(os.path.join(self.repo, n)))
                except OSError as e:
                    log.error("cannot list the model repository %s: %s", self.repo, e)
                    names = None
                if names is not None:
                    if self.explicit is not None:
                        names = [n for n in names if n in self.explicit]
                    for name in names:
                        entry = self.entries.get(name)
                        if entry is None:
                            entry = ModelEntry(name, None, os.path.join(self.repo, name),
                                               base=self.defaults, roots=(self.repo,))
                            with self._lock:
                                self.entries[name] = entry
                    for name, entry in list(self.entries.items()):
                        if entry.path and os.path.dirname(entry.path) == self.repo and name not in names:
                            self._remove_entry(entry)
            for entry in list(self.entries.values()):
                if entry.path:
                    try:
                        self._scan_model(entry)
                    except Exception:  # one model must not stop the others' scan
                        log.exception("scanning model %s failed", entry.name)
            for name in self.required or ():
                if name not in self.entries and name not in self._said_missing:
                    log.error("required model %r is not served (no such model); the server is "
                              "not ready until it loads", name)
                    self._said_missing.add(name)

    def _remove_entry(self, entry: ModelEntry):
        with self._lock:
            self.entries.pop(entry.name, None)
            gone = list(entry.versions.values())
            entry.versions = {}
        for lv in gone:
            self._reap(lv)
        self._changed()

    def _read_config(self, entry: ModelEntry) -> ModelConfig | None:
        """The config to use: config.json when valid, else the last good one
        (a load call's config override instead of config.json)."""
        label = f"{entry.name}/config.json"
        override = (self.explicit or {}).get(entry.name)
        try:
            if override is not None:
                label = f"the config override of {entry.name}"
                cfg = ModelConfig.from_dict(override, entry.base)
            else:
                cfg = ModelConfig.from_file(os.path.join(entry.path, "config.json"), entry.base, label)
        except (ValueError, TypeError) as e:
            msg = public_message(str(e), entry.roots)
            if entry.config_error != msg:
                log.error("model %s: %s; %s", entry.name, msg,
                          "keeping the last good config" if entry.config is not None
                          else "the model is not loaded until it is fixed")
            entry.config_error = msg
            return entry.config
        if entry.config_error is not None:
            log.info("model %s: %s is valid again", entry.name, label)
        elif entry.config is not None and cfg != entry.config:
            log.info("model %s: %s changed; applying it to the loaded versions", entry.name, label)
        entry.config_error = None
        entry.config = cfg
        return cfg

    def _load(self, entry: ModelEntry, v: int, vdir: str, fp, cfg: ModelConfig):
        """``(LoadedVersion, None)`` or ``(None, (fingerprint, code, message))``."""
        try:
            obj = self.loader(vdir)
            source = from_model(obj, entry.name, v)
            if source.labels is None:
                source.labels = read_labels(vdir, entry.path)
            return LoadedVersion(_named(source, entry.name, v, cfg), cfg, self.on_batch,
                                 fingerprint=fp, source=source), None
        except Exception as e:
            log.exception("could not load model %s version %d from %s", entry.name, v, vdir)
            msg = public_message(f"{type(e).__name__}: {e}", entry.roots)
            return None, (fp, _error_code(e), msg)

    def _swap(self, entry: ModelEntry, v: int, lv: LoadedVersion):
        with self._lock:
            old = entry.versions.get(v)
            entry.versions = {**entry.versions, v: lv}
            entry.ever_loaded = True
        if old is not None and old is not lv:
            self._reap(old)
        self._changed()

    def _scan_model(self, entry: ModelEntry):
        cfg = self._read_config(entry)
        try:
            names = os.listdir(entry.path)
        except FileNotFoundError:
            names = []
        except OSError as e:
            log.error("cannot list model folder %s: %s", entry.path, e)
            return  # keep what is served
        on_disk = {int(n): os.path.join(entry.path, n) for n in names
                   if is_version_name(n) and os.path.isdir(os.path.join(entry.path, n))}
        entry.on_disk = sorted(on_disk)
        if cfg is None:
            return  # never a valid config: nothing loads (statuses() says why)
        fps = {v: _fingerprint(d) for v, d in on_disk.items()}

        # a changed config applies to the loaded versions
        for v, lv in list(entry.versions.items()):
            if lv.config != cfg:
                new = LoadedVersion(_named(lv.source, entry.name, v, cfg), cfg, self.on_batch,
                                    fingerprint=lv.fingerprint, source=lv.source)
                new.reload_error = lv.reload_error
                self._swap(entry, v, new)
        # a loaded version whose files changed is reloaded; on failure it stays
        for v, lv in list(entry.versions.items()):
            fp = fps.get(v)
            if fp is None or fp == lv.fingerprint or (lv.reload_error and lv.reload_error[0] == fp):
                continue
            new, err = self._load(entry, v, on_disk[v], fp, cfg)
            if new is not None:
                log.info("reloaded model %s version %d (its files changed)", entry.name, v)
                self._swap(entry, v, new)
            else:
                log.error("model %s version %d: its files changed and failed to load; it keeps "
                          "serving what it loaded before", entry.name, v)
                lv.reload_error = err
        # a failed version is tried again when its files change
        # (entry.errors is replaced, never changed in place: requests read it unlocked)
        entry.errors = {v: err for v, err in entry.errors.items() if fps.get(v) == err[0]}
        # the policy picks among the versions that load
        while True:
            target = set(cfg.select(set(on_disk) - set(entry.errors)))
            failed = False
            for v in sorted(target - set(entry.versions), reverse=True):
                lv, err = self._load(entry, v, on_disk[v], fps[v], cfg)
                if lv is None:
                    entry.errors = {**entry.errors, v: err}
                    failed = True
                    break
                log.info("loaded model %s version %d", entry.name, v)
                self._swap(entry, v, lv)
            if not failed:
                break
        kind, arg = cfg.version_policy
        missing = sorted(set(arg) - set(on_disk)) if kind == "specific" else []
        if missing and missing != entry.missing:
            log.error("model %s: the version_policy names versions %s that are not in the model "
                      "folder", entry.name, missing)
        entry.missing = missing
        loaded = set(entry.versions)
        if target:
            gone = loaded - target
            kept = []
        else:  # nothing the policy picks has loaded: keep serving, unless removed from disk
            gone = loaded - set(on_disk)
            kept = sorted(loaded - gone)
            if kept and kept != entry.kept:
                log.warning("model %s: the version_policy selects no version that loads; still "
                            "serving %s", entry.name, kept)
        entry.kept = kept
        for v in gone:
            with self._lock:
                lv = entry.versions.get(v)
                entry.versions = {k: x for k, x in entry.versions.items() if k != v}
            if lv is not None:
                self._reap(lv)
            self._changed()

    def _reap(self, lv: LoadedVersion):
        threading.Thread(target=lv.unload, name="maas-unload", daemon=True).start()

    def _changed(self):
        if self.on_change is not None:
            try:
                self.on_change(self)
            except Exception:  # metrics must not break loading
                log.exception("on_change hook failed")

    def start_polling(self, interval: float):
        if interval and interval > 0 and self._poller is None and (
                self.repo or any(e.path for e in self.entries.values())):
            def loop():
                while not self._stop.wait(interval):
                    try:
                        self.scan()
                    except Exception:
                        log.exception("repository scan failed")
            self._poller = threading.Thread(target=loop, name="maas-repo-poll", daemon=True)
            self._poller.start()

    def close(self):
        self._stop.set()
        with self._lock:
            all_lv = [lv for e in self.entries.values() for lv in e.versions.values()]
        for lv in all_lv:
            if lv.batcher is not None:
                lv.batcher.stop(wait=False)

    # -- status --------------------------------------------------------
    @property
    def ready(self) -> bool:
        """Every required model has a serving version (by default: every
        model that has ever loaded, and at least one has)."""
        with self._lock:
            if self.required:
                return all(n in self.entries and self.entries[n].ready for n in self.required)
            loaded = [e for e in self.entries.values() if e.ever_loaded]
            return bool(loaded) and all(e.ready for e in loaded)

    def version_status(self, name: str, version=None) -> list[dict]:
        """TF Serving's ``model_version_status`` for a model (or one version)."""
        e = self.entry(name)
        with self._lock:
            rows = e.statuses()
        if version is None:
            return rows
        v = _version_number(version)
        rows = [r for r in rows if r["version"] == str(v)]
        if not rows:
            have = ", ".join(str(k) for k in sorted(e.versions)) or "none"
            raise ServingError(404, f"model {name!r} has no version {v}; loaded versions: {have}")
        return rows

    # -- explicit model control (Triton's repository extension) -----------
    def model_folder(self, name: str) -> str:
        """The folder of repository model ``name``; only a plain folder name
        directly inside the repository, resolving inside it."""
        if self.repo is None:
            raise ServingError(400, "the server serves no model repository; load and unload "
                                    "need one (maas serve REPO)")
        if (not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}", name)
                or name in (".", "..")):
            raise ServingError(400, f"model name {str(name)[:80]!r} is not a folder name of the "
                                    f"repository (letters, digits, '_', '-', '.'; no path)")
        root = os.path.realpath(self.repo)
        path = os.path.join(self.repo, name)
        real = os.path.realpath(path)
        if os.path.dirname(real) != root:
            raise ServingError(400, f"model {name!r} resolves outside the repository; only "
                                    f"folders inside it are loaded")
        if not os.path.isdir(real):
            raise ServingError(404, f"the repository has no model folder {name!r}")
        return path

    def set_control(self, control, initial: Iterable[str] = ()):
        """Explicit model control: only loaded models are served; with a
        ControlFile the set is shared by every process of the server."""
        self.explicit = {}
        self._control = control
        if control is not None:
            state = control.read()
            if state is None:
                state = control.update(lambda st: {n: None for n in initial})
            self.explicit = dict(state)
            self._control_seen = control.stamp()
        else:
            self.explicit = {n: None for n in initial}

    def sync(self):
        """Applies the shared load/unload state when another process changed it."""
        c = self._control
        if c is None:
            return
        stamp = c.stamp()
        if stamp == self._control_seen:
            return
        with self._scan_lock:
            stamp = c.stamp()
            if stamp == self._control_seen:
                return
            state = c.read() or {}
            self._control_seen = stamp
            self._apply(state)

    def _apply(self, state: dict):
        """Loads, reconfigures and unloads to match ``state`` (caller holds the scan lock)."""
        old = self.explicit or {}
        self.explicit = dict(state)
        for name in list(self.entries):
            if name not in state:
                self._remove_entry(self.entries[name])
        for name, override in state.items():
            e = self.entries.get(name)
            if e is None:
                try:
                    path = self.model_folder(name)
                except ServingError as err:
                    log.error("cannot load model %s: %s", name, err.message)
                    continue
                e = ModelEntry(name, None, path, base=self.defaults, roots=(self.repo,))
                with self._lock:
                    self.entries[name] = e
            elif old.get(name) != override:
                for v in list(e.versions):  # a new config: load again from disk
                    with self._lock:
                        lv = e.versions.pop(v, None)
                    if lv is not None:
                        self._reap(lv)
                e.config = None
            try:
                self._scan_model(e)
            except Exception:
                log.exception("loading model %s failed", name)

    def load(self, name: str, override: dict | None = None) -> ModelEntry:
        """Loads (or reloads, with a new config) repository model ``name``."""
        path = self.model_folder(name)
        if override is not None:
            try:
                ModelConfig.from_dict(override, self.defaults)
            except (ValueError, TypeError) as e:
                raise ServingError(400, f"the config override of {name!r} is invalid: {e}") from None
        with self._scan_lock:
            state = dict(self.explicit or {})
            state[name] = override
            prev = self.entries.get(name)
            if prev is not None and (self.explicit or {}).get(name) == override:
                # a load of a loaded model reloads it from disk, as Triton does
                self._remove_entry(prev)
            self._apply(state)
            e = self.entries.get(name)
            if e is None or not e.versions:
                why = "; ".join(e.problems()) if e is not None else "no such folder"
                state.pop(name)
                self._apply(state)
                raise ServingError(400, f"failed to load {name!r}: {why or 'no version folder'}"
                                   [:2000])
            if self._control is not None:
                self._control.update(lambda st: {**st, name: override})
                self._control_seen = self._control.stamp()
        return e

    def unload(self, name: str):
        if not isinstance(name, str) or name not in (self.explicit or {}):
            raise ServingError(400, f"model {str(name)[:80]!r} is not loaded")
        with self._scan_lock:
            state = dict(self.explicit)
            state.pop(name, None)
            if self._control is not None:
                self._control.update(lambda st: {k: v for k, v in st.items() if k != name})
                self._control_seen = self._control.stamp()
            self._apply(state)

    def index(self, ready_only: bool = False) -> list[dict]:
        """The V2 repository index: every model version with its state (in
        explicit mode also the repository's models that are not loaded)."""
        out = self._index()
        if self.explicit is not None and self.repo is not None:
            try:
                names = sorted(n for n in os.listdir(self.repo) if not n.startswith(".")
                               and os.path.isdir(os.path.join(self.repo, n)))
            except OSError:
                names = []
            have = {r["name"] for r in out}
            out += [{"name": n, "version": "", "state": "UNAVAILABLE", "reason": "unloaded"}
                    for n in names if n not in have]
            out.sort(key=lambda r: (r["name"], r.get("version", "")))
        if ready_only:
            out = [r for r in out if r["state"] == "READY"]
        return out

    def _index(self) -> list[dict]:
        out = []
        with self._lock:
            entries = sorted(self.entries.items())
        for n, e in entries:
            rows = e.statuses()
            for r in rows:
                row = {"name": n, "version": r["version"],
                       "state": "READY" if r["state"] == "AVAILABLE" else "UNAVAILABLE"}
                if r["status"]["error_message"]:
                    row["reason"] = r["status"]["error_message"]
                out.append(row)
            if not rows:
                out.append({"name": n, "state": "UNAVAILABLE",
                            "reason": "; ".join(e.problems()) or "no version in the model folder"})
        return out

    # -- serving -------------------------------------------------------
    def entry(self, name: str) -> ModelEntry:
        e = self.entries.get(name)
        if e is None:
            served = ", ".join(sorted(self.entries)) or "none"
            raise ServingError(404, f"model {name!r} is not served; served models: {served}")
        return e

    def lookup(self, name: str, version=None) -> LoadedVersion:
        e = self.entry(name)
        if version is None:
            lv = e.latest()
            if lv is None:
                why = "; ".join(e.problems())
                raise ServingError(503, f"model {name!r} has no loaded version" + (f" ({why})" if why else ""))
            return lv
        v = _version_number(version)
        lv = e.versions.get(v)
        if lv is None:
            err = e.errors.get(v)
            if err is not None:
                raise ServingError(503, f"model {name!r} version {v} failed to load: {err[2]}")
            have = ", ".join(str(k) for k in sorted(e.versions)) or "none"
            raise ServingError(404, f"model {name!r} has no version {v}; loaded versions: {have}")
        return lv

    @contextmanager
    def acquire(self, name: str, version=None):
        """The version to run a request on, counted in flight until released."""
        with self._lock:
            lv = self.lookup(name, version)
            with lv._idle:
                lv.inflight += 1
        try:
            yield lv
        finally:
            lv.release()
