"""Models by name and version: in-memory models, model folders and a model
repository, with version policies, per-model configuration and hot reload.

A repository is a folder ``REPO/<name>/<version>/`` (version a positive
integer; other folder names, such as a ``.tmp`` being written, are ignored)
with an optional ``REPO/<name>/config.json``::

    {"batching": {"max_batch_size": 32, "max_delay_ms": 2},   # or true/false
     "version_policy": "latest",  # or "all", {"latest": {"num_versions": 2}},
                                  # {"specific": {"versions": [1, 3]}}
     "max_rows": 8192,            # rows per request
     "allow_nan": false,          # accept NaN and infinity in inputs
     "input_name": "input", "output_name": "output"}

A poll thread rescans the repository: a new version folder is loaded and
then published (requests never see a half-loaded version); a removed one is
unpublished at once and unloaded when its in-flight requests have finished.
Write a new version under a hidden name and rename it into place so that it
is never read half-written.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from contextlib import contextmanager
from typing import Any, Callable

from .batching import Batcher
from .errors import ServingError
from .model import ServedModel, from_model

log = logging.getLogger("maas.serving")

_CONFIG_KEYS = {"batching", "dynamic_batching", "version_policy", "max_rows", "allow_nan",
                "input_name", "output_name", "platform"}
_BATCH_KEYS = {"enabled", "max_batch_size", "max_delay_ms", "max_queue_rows", "preferred_batch_size"}


class ModelConfig:
    """A model's serving settings, from defaults, create_app and config.json."""

    def __init__(self, batching=None, version_policy="latest", max_rows=8192, allow_nan=False,
                 input_name=None, output_name=None, platform=None, dynamic_batching=None):
        if dynamic_batching is not None and batching is None:
            batching = dynamic_batching
        self.batching = _batching(batching)
        self.version_policy = _policy(version_policy)
        if not isinstance(max_rows, int) or isinstance(max_rows, bool) or max_rows < 1:
            raise ValueError(f"max_rows must be a positive integer, received {max_rows!r}")
        self.max_rows = max_rows
        if not isinstance(allow_nan, bool):
            raise ValueError(f"allow_nan must be true or false, received {allow_nan!r}")
        self.allow_nan = allow_nan
        self.input_name = input_name
        self.output_name = output_name
        self.platform = platform

    @classmethod
    def from_dict(cls, d: dict | None, base: "ModelConfig | None" = None) -> "ModelConfig":
        d = dict(d or {})
        unknown = set(d) - _CONFIG_KEYS
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}; known: {sorted(_CONFIG_KEYS)}")
        kw = {} if base is None else dict(batching=base.batching, version_policy=base.version_policy,
                                          max_rows=base.max_rows, allow_nan=base.allow_nan,
                                          input_name=base.input_name, output_name=base.output_name,
                                          platform=base.platform)
        kw.update(d)
        return cls(**kw)

    @classmethod
    def from_file(cls, path: str, base: "ModelConfig | None" = None) -> "ModelConfig":
        if not os.path.exists(path):
            return cls.from_dict({}, base)
        with open(path, encoding="utf-8") as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: invalid JSON: {e}") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: the config must be a JSON object")
        return cls.from_dict(d, base)

    def select(self, versions: list[int]) -> list[int]:
        """The versions this config's policy serves out of those on disk."""
        kind, arg = self.version_policy
        versions = sorted(versions)
        if kind == "all":
            return versions
        if kind == "specific":
            return [v for v in versions if v in arg]
        return versions[-arg:] if versions else []


def _batching(b):
    if b is None or b is False:
        return None
    if b is True:
        b = {}
    if not isinstance(b, dict):
        raise ValueError(f"batching must be true, false or an object, received {b!r}")
    unknown = set(b) - _BATCH_KEYS
    if unknown:
        raise ValueError(f"unknown batching keys {sorted(unknown)}; known: {sorted(_BATCH_KEYS)}")
    if b.get("enabled", True) is False:
        return None
    out = {"max_batch_size": int(b.get("max_batch_size", 32)),
           "max_delay_ms": float(b.get("max_delay_ms", 2.0)),
           "max_queue_rows": int(b.get("max_queue_rows", 4096))}
    if out["max_batch_size"] < 1 or out["max_delay_ms"] < 0 or out["max_queue_rows"] < 1:
        raise ValueError(f"batching values must be positive, received {b!r}")
    return out


def _policy(p):
    if isinstance(p, tuple):
        return p
    if p in ("latest", None):
        return ("latest", 1)
    if p == "all":
        return ("all", None)
    if isinstance(p, dict) and len(p) == 1:
        (kind, arg), = p.items()
        arg = arg or {}
        if kind == "latest":
            n = arg.get("num_versions", 1)
            if not isinstance(n, int) or n < 1:
                raise ValueError(f"latest.num_versions must be a positive integer, received {n!r}")
            return ("latest", n)
        if kind == "all":
            return ("all", None)
        if kind == "specific":
            vs = arg.get("versions")
            if not isinstance(vs, list) or not vs or not all(isinstance(v, int) for v in vs):
                raise ValueError(f"specific.versions must be a list of integers, received {vs!r}")
            return ("specific", frozenset(vs))
    raise ValueError(f"version_policy must be 'latest', 'all', {{'latest': {{'num_versions': n}}}} "
                     f"or {{'specific': {{'versions': [...]}}}}, received {p!r}")


class LoadedVersion:
    """One served version: the model, its batcher and its in-flight count."""

    def __init__(self, model: ServedModel, config: ModelConfig, on_batch=None):
        self.model = model
        self.config = config
        self.inflight = 0
        self._idle = threading.Condition()
        self.batcher = None
        if config.batching:
            cb = None if on_batch is None else (lambda n: on_batch(model.name, model.version, n))
            self.batcher = Batcher(model.predict, name=f"{model.name}-{model.version}", on_batch=cb,
                                   in_flight=lambda: self.inflight, **config.batching)
        self._on_batch = on_batch

    def run(self, x):
        if self.batcher is not None:
            return self.batcher.submit(x)
        y = self.model.predict(x)
        if self._on_batch is not None:
            self._on_batch(self.model.name, self.model.version, len(x))
        return y

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


class ModelEntry:
    def __init__(self, name: str, config: ModelConfig, path: str | None = None):
        self.name = name
        self.config = config
        self.path = path                     # a model folder with version subfolders
        self.versions: dict[int, LoadedVersion] = {}
        self.errors: dict[int, tuple[float, str]] = {}  # version -> (folder mtime, message)
        self.error: str | None = None        # the model as a whole (bad config)

    def latest(self) -> LoadedVersion | None:
        return self.versions[max(self.versions)] if self.versions else None

    @property
    def ready(self) -> bool:
        return bool(self.versions)


def _is_version(name: str) -> bool:
    return name.isdigit() and int(name) > 0 and not name.startswith("0")


class Registry:
    """The served models; thread-safe. See the module's docstring."""

    def __init__(self, loader: Callable[[str], Any], defaults: ModelConfig | None = None,
                 on_batch=None, on_change=None):
        self.loader = loader
        self.defaults = defaults or ModelConfig()
        self.on_batch = on_batch
        self.on_change = on_change
        self.entries: dict[str, ModelEntry] = {}
        self.repo: str | None = None
        self._lock = threading.RLock()
        self._scan_lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # -- building ------------------------------------------------------
    def add_object(self, name: str, obj: Any, config: dict | None = None):
        cfg = ModelConfig.from_dict(config, self.defaults)
        entry = ModelEntry(name, cfg)
        if isinstance(obj, (str, os.PathLike)):
            path = os.fspath(obj)
            if os.path.isdir(path):
                entry.path = path
                entry.config = ModelConfig.from_file(os.path.join(path, "config.json"), cfg)
                with self._lock:
                    self.entries[name] = entry
                self._scan_model(entry)
                return
            try:
                obj = self.loader(path)
            except Exception as e:
                log.exception("could not load model %s from %s", name, path)
                entry.error = f"could not load {path}: {e}"
                with self._lock:
                    self.entries[name] = entry
                return
        model = from_model(obj, name, getattr(obj, "version", None) if isinstance(obj, ServedModel) else 1,
                           **self._names(cfg, obj))
        entry.versions[model.version] = LoadedVersion(model, cfg, self.on_batch)
        with self._lock:
            self.entries[name] = entry
        self._changed()

    def _names(self, cfg, obj=None):
        kw = {}
        if cfg.input_name:
            kw["input_name"] = cfg.input_name
        elif isinstance(obj, ServedModel):
            kw["input_name"] = obj.input_name
        if cfg.output_name:
            kw["output_name"] = cfg.output_name
        elif isinstance(obj, ServedModel):
            kw["output_name"] = obj.output_name
        return kw

    def set_repository(self, path: str):
        if not os.path.isdir(path):
            raise FileNotFoundError(f"model repository {path!r} is not a folder")
        self.repo = path
        self.scan()

    # -- scanning ------------------------------------------------------
    def scan(self):
        """Loads new versions and unloads removed ones (the poll thread's step)."""
        with self._scan_lock:
            if self.repo is not None:
                try:
                    names = sorted(n for n in os.listdir(self.repo)
                                   if not n.startswith(".") and os.path.isdir(os.path.join(self.repo, n)))
                except OSError as e:
                    log.error("cannot list the model repository %s: %s", self.repo, e)
                    names = None
                if names is not None:
                    for name in names:
                        entry = self.entries.get(name)
                        if entry is None:
                            entry = ModelEntry(name, self.defaults, os.path.join(self.repo, name))
                            with self._lock:
                                self.entries[name] = entry
                    for name, entry in list(self.entries.items()):
                        if entry.path and os.path.dirname(entry.path) == self.repo and name not in names:
                            self._remove_entry(entry)
            for entry in list(self.entries.values()):
                if entry.path:
                    self._scan_model(entry)

    def _remove_entry(self, entry: ModelEntry):
        with self._lock:
            self.entries.pop(entry.name, None)
            gone = list(entry.versions.values())
            entry.versions = {}
        for lv in gone:
            self._reap(lv)
        self._changed()

    def _scan_model(self, entry: ModelEntry):
        try:
            base = self.defaults
            entry.config = ModelConfig.from_file(os.path.join(entry.path, "config.json"), base)
            entry.error = None
        except (OSError, ValueError, TypeError) as e:
            msg = f"bad config.json for model {entry.name!r}: {e}"
            if entry.error != msg:
                log.error("%s", msg)
            entry.error = msg
            return
        try:
            on_disk = [int(n) for n in os.listdir(entry.path)
                       if _is_version(n) and os.path.isdir(os.path.join(entry.path, n))]
        except OSError:
            on_disk = []
        wanted = set(entry.config.select(on_disk))
        for v in sorted(wanted - set(entry.versions)):
            vdir = os.path.join(entry.path, str(v))
            try:
                mtime = os.stat(vdir).st_mtime
            except OSError:
                continue
            if v in entry.errors and entry.errors[v][0] == mtime:
                continue  # failed before and unchanged since
            try:
                obj = self.loader(vdir)
                model = from_model(obj, entry.name, v, **self._names(entry.config, obj))
                lv = LoadedVersion(model, entry.config, self.on_batch)
            except Exception as e:
                log.exception("could not load model %s version %d from %s", entry.name, v, vdir)
                entry.errors[v] = (mtime, f"{type(e).__name__}: {e}")
                continue
            entry.errors.pop(v, None)
            with self._lock:
                entry.versions = {**entry.versions, v: lv}
            log.info("loaded model %s version %d", entry.name, v)
            self._changed()
        for v in set(entry.versions) - wanted:
            with self._lock:
                lv = entry.versions.get(v)
                entry.versions = {k: x for k, x in entry.versions.items() if k != v}
            if lv is not None:
                self._reap(lv)
            self._changed()
        for v in list(entry.errors):
            if v not in wanted:
                entry.errors.pop(v)

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

    # -- serving -------------------------------------------------------
    @property
    def ready(self) -> bool:
        with self._lock:
            return bool(self.entries) and all(e.ready and e.error is None for e in self.entries.values())

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
                why = e.error or "; ".join(f"version {v}: {m}" for v, (_, m) in sorted(e.errors.items()))
                raise ServingError(503, f"model {name!r} has no loaded version" + (f" ({why})" if why else ""))
            return lv
        try:
            v = int(str(version))
            if v < 1 or not str(version).isdigit():
                raise ValueError
        except ValueError:
            raise ServingError(404, f"model version must be a positive integer, received {str(version)!r}") from None
        lv = e.versions.get(v)
        if lv is None:
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
