"""Custom objects, as Keras 3 names them: the global registry that
``register_keras_serializable`` fills (keys ``"package>Name"``),
``custom_object_scope`` (objects visible to loading inside a ``with``
block, per thread), and ``get_custom_objects`` (the global dict).

A saved config names a registered class twice, as Keras writes it:
``class_name`` (the bare class name) and ``registered_name``
(``"package>Name"``); loading looks the registered name up first.

>>> import maas
>>> @maas.saving.register_keras_serializable(package="Docs")
... class Scale(maas.layers.Layer):
...     def call(self, x):
...         return x * 2.0
>>> maas.saving.get_registered_name(Scale)
'Docs>Scale'
>>> maas.saving.get_registered_object("Docs>Scale") is Scale
True
"""
from __future__ import annotations

import inspect
import threading

__all__ = ["register_keras_serializable", "register_serializable", "get_custom_objects",
           "custom_object_scope", "CustomObjectScope", "get_registered_name",
           "get_registered_object"]

GLOBAL_CUSTOM_OBJECTS: dict[str, object] = {}   # "package>Name" (or a user's own key) -> object
GLOBAL_CUSTOM_NAMES: dict[object, str] = {}     # object -> "package>Name"
_local = threading.local()


def _scopes() -> list[dict]:
    if not hasattr(_local, "scopes"):
        _local.scopes = []
    return _local.scopes


def register_keras_serializable(package: str = "Custom", name: str | None = None):
    """Class (or function) decorator: registers the object as
    ``"package>name"`` (``name`` defaults to the class's name) so that
    ``load_model`` and ``from_config`` can rebuild it from a saved config.
    Only maas's own classes and registered (or passed) ones are ever built.

    >>> @maas.saving.register_keras_serializable(package="my_layers")
    ... class Double(maas.layers.Layer):
    ...     def call(self, x):
    ...         return x * 2.0
    """
    if not isinstance(package, str) or not package or ">" in package:
        raise ValueError(f"register_keras_serializable: package must be a non-empty string "
                         f"without '>', received package={package!r}")

    def decorate(obj):
        key = f"{package}>{name or obj.__name__}"
        if inspect.isclass(obj) and not hasattr(obj, "get_config"):
            raise ValueError("Cannot register a class that does not have a get_config() method.")
        prior = GLOBAL_CUSTOM_OBJECTS.get(key)
        if prior is not None and getattr(prior, "__qualname__", None) != obj.__qualname__:
            raise ValueError(f"{key} has already been registered to {prior}; pick another "
                             f"package= or name=")
        GLOBAL_CUSTOM_OBJECTS[key] = obj
        GLOBAL_CUSTOM_NAMES[obj] = key
        return obj

    return decorate


register_serializable = register_keras_serializable  # maas's earlier name


def get_registered_name(obj) -> str:
    """``"package>Name"`` for a registered object, else its ``__name__``."""
    return GLOBAL_CUSTOM_NAMES.get(obj, getattr(obj, "__name__", None))


def get_registered_object(name: str, custom_objects: dict | None = None,
                          module_objects: dict | None = None):
    """The object registered or passed under ``name``: the innermost
    ``custom_object_scope`` first, then ``custom_objects``, the global
    registry, and ``module_objects``; None when none has it."""
    for scope in reversed(_scopes()):
        if name in scope:
            return scope[name]
    for table in (custom_objects, GLOBAL_CUSTOM_OBJECTS, module_objects):
        if table and name in table:
            return table[name]
    return None


def get_custom_objects() -> dict:
    """The global dict of custom objects (what ``register_keras_serializable``
    fills); add to it to make an object loadable everywhere.

    >>> maas.saving.get_custom_objects().update({"MyLayer": MyLayer})  # doctest: +SKIP
    """
    return GLOBAL_CUSTOM_OBJECTS


def visible_objects(custom_objects: dict | None = None) -> dict:
    """Every custom object loading may use now: the global registry, then
    the active scopes (innermost last), then ``custom_objects``."""
    out = dict(GLOBAL_CUSTOM_OBJECTS)
    for scope in _scopes():
        out.update(scope)
    out.update(custom_objects or {})
    return out


class CustomObjectScope:
    """``with custom_object_scope({"MyLayer": MyLayer}):`` makes the objects
    visible to ``load_model``, ``model_from_json`` and ``from_config`` in
    the block (in this thread), and nowhere else.

    >>> with maas.saving.custom_object_scope({"MyLayer": MyLayer}):  # doctest: +SKIP
    ...     model = maas.models.load_model("m.maas")
    """

    def __init__(self, custom_objects: dict | None = None):
        if custom_objects is not None and not isinstance(custom_objects, dict):
            raise TypeError(f"custom_object_scope takes a dict of name -> object, received "
                            f"{type(custom_objects).__name__}")
        self.custom_objects = dict(custom_objects or {})

    def __enter__(self):
        _scopes().append(self.custom_objects)
        return self

    def __exit__(self, *exc):
        scopes = _scopes()
        for i in range(len(scopes) - 1, -1, -1):
            if scopes[i] is self.custom_objects:
                del scopes[i]
                break
        return False


custom_object_scope = CustomObjectScope
