"""Model files: one safetensors file holding the architecture (from
``get_config()``), the weights, and optionally the optimizer's state.

Loading never runs code from the file: only maas's built-in classes and
classes registered with :func:`register_serializable` are instantiated, and
every malformed file raises :class:`maas.errors.ModelFormatError`. Weights
are wrapped around the file's memory mapping without a copy (pages are
private and copy-on-write, so training a loaded model never writes the file).

>>> import numpy as np, os, tempfile, maas
>>> model = maas.Sequential([maas.Input((4,)), maas.layers.Dense(2)])
>>> path = os.path.join(tempfile.mkdtemp(), "tiny.maas")
>>> model.save(path)
>>> loaded = maas.load_model(path)
>>> x = np.ones((1, 4), np.float32)
>>> bool((loaded.predict(x, verbose=0) == model.predict(x, verbose=0)).all())
True
"""
from __future__ import annotations

import contextlib
import json
import os

import numpy as np

from .. import _core
from .. import random as _random
from ..errors import ModelFormatError
from .object_registration import (GLOBAL_CUSTOM_NAMES, GLOBAL_CUSTOM_OBJECTS,
                                  register_serializable, visible_objects)
from .repository import version_path
from .safetensors import (CONFIG_KEY, FORMAT_VERSION_KEY, MAAS_VERSION_KEY, TRAINING_CONFIG_KEY,
                          load_tensors, save_tensors)

FORMAT_VERSION = "1"
ITERATIONS_KEY = "maas.optimizer_iterations"
ORDER_KEY = "maas.weight_order"  # the weights' names in the model's order
WEIGHTS = "weights/"
OPTIMIZER = "optimizer/"
_REGISTERED = GLOBAL_CUSTOM_OBJECTS  # "package>Name" -> class (object_registration holds it)

__all__ = ["register_serializable", "save_model", "load_model", "save_weights", "load_weights",
           "load_from_repository", "weight_names"]


def weight_names(model) -> list[tuple[str, object]]:
    """``(name, variable)`` for each weight: ``layer_name/variable_name``,
    unique within the model, in the order of ``model.weights``."""
    owner = {}
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for w in getattr(layer, "_weights_own", []):
            owner.setdefault(id(w), layer.name)
    out, seen = [], set()
    for w in model.weights:
        base = f"{owner.get(id(w), model.name)}/{getattr(w, 'name', 'variable')}"
        name, k = base, 1
        while name in seen:
            name, k = f"{base}_{k}", k + 1
        seen.add(name)
        out.append((name, w))
    return out


# ------------------------------------------------------------------ saving

def _architecture(model) -> dict:
    from ..models import Model, Sequential

    if type(model) is Sequential:
        arch = {"class_name": "Sequential", "config": model.get_config()}
    elif type(model) is Model and getattr(model, "_is_graph_network", False):
        arch = {"class_name": "Functional", "config": model.get_config()}
    else:
        key = GLOBAL_CUSTOM_NAMES.get(type(model))
        if key is None or _REGISTERED.get(key) is not type(model):
            raise ValueError(f"cannot save a {type(model).__name__}: register its class with "
                             f"@maas.saving.register_serializable() so that load_model can "
                             f"rebuild it (and give it get_config() if __init__ takes arguments)")
        try:
            config = model.get_config()
        except NotImplementedError:
            config = {}
        arch = {"class_name": key, "config": config}
    shape = getattr(model, "_build_shape", None)
    if shape is not None:
        arch["build_input_shape"] = json.loads(json.dumps(shape, default=list))
    return arch


def _serialize_loss(loss):
    from .. import losses

    if loss is None or isinstance(loss, str):
        return loss
    if isinstance(loss, losses.Loss):
        return {"class_name": type(loss).__name__, "config": loss.get_config()}
    if isinstance(loss, dict):
        return {k: _serialize_loss(v) for k, v in loss.items()}
    if isinstance(loss, (list, tuple)):
        return [_serialize_loss(v) for v in loss]
    return getattr(loss, "__name__", None)


def _training_config(model):
    if not getattr(model, "compiled", False):
        return None
    opt = model.optimizer
    config = {k: v for k, v in opt.get_config().items() if v is not None}
    metrics = getattr(model, "_metric_spec", None)
    return {"optimizer": {"class_name": type(opt).__name__, "config": config},
            "loss": _serialize_loss(getattr(model, "_loss_spec", model.loss)),
            "metrics": [m if isinstance(m, str) else getattr(m, "name", None)
                        for m in (metrics or [])] or None,
            "loss_weights": getattr(model, "_loss_weights", None)}


def save_model(model, filepath, overwrite: bool = True, include_optimizer: bool = True,
               zipped=None, encryption_key=None) -> None:
    """Writes ``model`` to one file (see the module doc); atomic. Keras's
    ``keras.saving.save_model``; the file is one safetensors file, never a
    zip (``zipped=True`` is refused). With ``encryption_key`` (32 bytes,
    hex or base64 text, or a :class:`maas.saving.Encryption`) the tensor
    data is encrypted with AES-256-GCM (see :mod:`maas.saving.encryption`).

    >>> maas.saving.save_model(model, "digits.maas")  # doctest: +SKIP
    """
    from .. import __version__

    if zipped:
        raise ValueError("save_model(zipped=True): a maas model file is one safetensors file, "
                         "never a zip archive; leave zipped unset")

    filepath = os.fspath(filepath)
    if not overwrite and os.path.exists(filepath):
        raise FileExistsError(f"{filepath} exists; pass overwrite=True to replace it")
    if not model.weights:
        raise ValueError("the model has no weights yet: call it on data (or build it) before save()")
    tensors = {WEIGHTS + name: w for name, w in weight_names(model)}
    metadata = {FORMAT_VERSION_KEY: FORMAT_VERSION, MAAS_VERSION_KEY: __version__,
                CONFIG_KEY: json.dumps(_architecture(model)),
                ORDER_KEY: json.dumps([n for n, _ in weight_names(model)])}
    training = _training_config(model)
    if training is not None:
        metadata[TRAINING_CONFIG_KEY] = json.dumps(training)
        if include_optimizer:
            opt = model.optimizer
            for name, w in weight_names(model):
                for slot, value in opt._slots.get(id(w), {}).items():
                    if slot != "__var__":
                        tensors[f"{OPTIMIZER}{name}/{slot}"] = value
            metadata[ITERATIONS_KEY] = str(int(opt.iterations))
    from ..pruning import _sparse  # mostly-zero weights (pruned) as bitmask + values

    _sparse.encode(tensors, metadata)
    if encryption_key is not None:
        from .encryption import save_tensors_encrypted

        save_tensors_encrypted(filepath, tensors, metadata, encryption_key)
        return
    save_tensors(filepath, tensors, metadata)


def save_weights(model, filepath, overwrite: bool = True) -> None:
    """Writes the weights alone, named ``layer/variable``, as safetensors."""
    filepath = os.fspath(filepath)
    if not overwrite and os.path.exists(filepath):
        raise FileExistsError(f"{filepath} exists; pass overwrite=True to replace it")
    named = weight_names(model)
    save_tensors(filepath, dict(named), {FORMAT_VERSION_KEY: FORMAT_VERSION,
                                         ORDER_KEY: json.dumps([n for n, _ in named])})


# ----------------------------------------------------------------- loading

@contextlib.contextmanager
def _rng_untouched():
    """Building a model to load into must not move the global random stream:
    fit after load then shuffles as it would have without the save."""
    state = dict(_random._state)
    try:
        yield
    finally:
        _random._state.update(state)


def _classes(custom_objects):
    """The classes a file may name: maas's own (layers, initializers,
    regularizers, losses, metrics, optimizers), registered ones, and
    ``custom_objects``."""
    from .. import initializers, layers, losses, metrics, optimizers, regularizers
    from ..models import Model, Sequential

    classes = {"Sequential": Sequential, "Functional": Model, "Model": Model}
    for mod in (initializers, regularizers, losses, metrics, optimizers):
        classes.update({k: v for k, v in vars(mod).items()
                        if isinstance(v, type) and v.__module__.startswith("maas.")})
    classes.update(layers._CLASSES)
    classes.update(visible_objects(custom_objects))  # registered, scoped, passed
    return classes


def _rebuild(arch, custom_objects, path):
    if not isinstance(arch, dict) or not isinstance(arch.get("class_name"), str) \
            or not isinstance(arch.get("config"), dict):
        raise ModelFormatError(f"{path}: the architecture must be an object with a class_name "
                               f"and a config")
    name = arch["class_name"]
    classes = _classes(custom_objects)
    if name not in classes:
        raise ModelFormatError(f"{path}: refusing to load unknown class {name!r}: only maas's "
                               f"built-in classes and classes registered with "
                               f"@maas.saving.register_serializable() are loaded")
    _check_layer_classes(arch["config"], classes, path)
    cls = classes[name]
    try:
        if name in ("Sequential", "Functional", "Model"):
            model = cls.from_config(arch["config"], custom_objects=visible_objects(custom_objects))
        else:
            model = cls.from_config(arch["config"]) if hasattr(cls, "from_config") and arch["config"] \
                else cls(**arch["config"])
        shape = arch.get("build_input_shape")
        if not model.weights and shape is not None:
            model.build(tuple(shape))
    except ModelFormatError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, NotImplementedError) as e:
        raise ModelFormatError(f"{path}: the architecture cannot be rebuilt: {type(e).__name__}: {e}") from None
    return model


def _check_layer_classes(config, classes, path):
    """Every class_name nested in the config must be a known class."""
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            cn, rn = node.get("class_name"), node.get("registered_name")
            if isinstance(cn, str) and "config" in node and cn not in classes \
                    and not (isinstance(rn, str) and rn in classes):
                raise ModelFormatError(f"{path}: refusing to load unknown class {cn!r}"
                                       + (f" (registered as {rn!r})" if isinstance(rn, str) else "")
                                       + ": register it with @maas.saving.register_keras_serializable()"
                                       " in the loading process, or pass custom_objects=")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _json_meta(metadata, key, path, required=True):
    if key not in metadata:
        if required:
            raise ModelFormatError(f"{path}: not a maas model file: the metadata has no {key!r}")
        return None
    try:
        return json.loads(metadata[key])
    except (TypeError, ValueError) as e:
        raise ModelFormatError(f"{path}: the metadata {key!r} is not valid JSON: {e}") from None


def _pair_weights(model, tensors, metadata, prefix=""):
    """[(model name, variable, file name)] and a list of problems. Weights
    pair by position when the file records its order (layer names are
    numbered per process, so two builds of one architecture differ in names
    but not in order, as Keras pairs them), else by name."""
    expected = weight_names(model)
    order = metadata.get(ORDER_KEY)
    if order is not None:
        try:
            order = json.loads(order)
        except ValueError:
            order = None
        if not (isinstance(order, list) and all(isinstance(n, str) for n in order)):
            return [], [f"the metadata {ORDER_KEY!r} is not a list of names"]
    else:
        order = [k[len(prefix):] for k in tensors if k.startswith(prefix)]
        by_name = {n for n, _ in expected}
        if set(order) != by_name:  # no recorded order: names must match
            missing = [n for n, _ in expected if n not in set(order)]
            extra = [n for n in order if n not in by_name]
            return [], [f"missing {n}" for n in missing] + [f"unexpected {n}" for n in extra]
        order = [n for n, _ in expected]
    problems = []
    if len(order) != len(expected):
        problems.append(f"the file holds {len(order)} weights, the model {len(expected)}")
    pairs = []
    for (name, w), fname in zip(expected, order):
        t = tensors.get(prefix + fname)
        if t is None:
            problems.append(f"missing {prefix}{fname}")
        elif tuple(t.shape) != tuple(w.shape):
            problems.append(f"{name}: the file's {fname} has shape {tuple(t.shape)}, the model "
                            f"{tuple(w.shape)}")
        elif t.dtype != w.dtype:
            problems.append(f"{name}: the file's {fname} is {t.dtype}, the model's weight "
                            f"{w.dtype}")
        else:
            pairs.append((name, w, fname))
    stored = {k for k in tensors if k.startswith(prefix)}
    extra = sorted(stored - {prefix + f for f in order})
    if extra:
        problems.append(f"unexpected {extra[:5]}")
    return pairs, problems


def _bind_weights(model, tensors, metadata, path):
    pairs, problems = _pair_weights(model, tensors, metadata, WEIGHTS)
    if problems:
        raise ModelFormatError(f"{path}: the weights do not match the architecture: "
                               + "; ".join(problems))
    for _, w, fname in pairs:
        _core.share_memory(w, tensors[WEIGHTS + fname])
    return {fname: w for _, w, fname in pairs}


def _check_int8_scales(tensors, path):
    """An int8 weight ``.../X`` (a quantized kernel) is only meaningful with
    its float32 scales ``.../X_scale`` in the same file."""
    for k, t in tensors.items():
        if k.startswith(WEIGHTS) and t.dtype == "int8":
            sc = tensors.get(k + "_scale")
            if sc is None or sc.dtype != "float32":
                raise ModelFormatError(f"{path}: the int8 tensor {k!r} has no float32 scales "
                                       f"{k + '_scale'!r}: the quantized model file is incomplete; "
                                       f"save the quantized model again")


def load_model(filepath, custom_objects=None, compile: bool = True, safe_mode: bool = True,
               mmap: bool = True, encryption_key=None, trusted_keys=None):
    """Loads a model written by ``model.save``; predictions are bit-identical
    to the saved model's. With ``mmap=True`` (the default) the weights share
    the file's mapped pages; ``mmap=False`` copies them. Custom classes come
    from ``custom_objects``, an active ``custom_object_scope`` or the
    registry (``register_keras_serializable``). ``safe_mode`` is Keras's
    argument: maas never deserializes code (no lambdas), whatever its value.

    An encrypted file needs its key: ``encryption_key`` (or the
    ``MAAS_MODEL_KEY`` / ``MAAS_MODEL_KEY_FILE`` variables); it is
    decrypted into memory. With ``trusted_keys`` (Ed25519 public keys, PEM
    files or a folder of them) the file must carry a valid detached
    signature (``MODEL.maas.sig``) by one of them. Either failing is a
    ModelFormatError saying which (see :mod:`maas.saving.encryption`,
    :mod:`maas.saving.signing`).

    >>> model = maas.load_model("digits.maas")  # doctest: +SKIP
    """
    from .encryption import read_model_file

    path = os.fspath(filepath)
    tensors, metadata, file_info = read_model_file(path, mmap, encryption_key, trusted_keys)
    version = metadata.get(FORMAT_VERSION_KEY)
    if version != FORMAT_VERSION:
        raise ModelFormatError(f"{path}: unsupported maas format version {version!r} "
                               f"(this maas reads version {FORMAT_VERSION})")
    arch = _json_meta(metadata, CONFIG_KEY, path)
    from ..pruning import _sparse

    _sparse.decode(tensors, metadata, path)
    known = (WEIGHTS, OPTIMIZER)
    extra = [k for k in tensors if not k.startswith(known)]
    if extra:
        raise ModelFormatError(f"{path}: unexpected tensors {extra[:5]}")
    _check_int8_scales(tensors, path)
    with _rng_untouched():
        model = _rebuild(arch, custom_objects, path)
    by_file_name = _bind_weights(model, tensors, metadata, path)
    model._file_info = file_info  # encrypted? signed by? (maas serve's audit log reads it)
    training = _json_meta(metadata, TRAINING_CONFIG_KEY, path, required=False)
    if compile and training:
        _compile_from(model, training, tensors, metadata, path, by_file_name)
    return model


def _compile_from(model, training, tensors, metadata, path, by_file_name):
    from .. import losses, optimizers

    try:
        opt = optimizers.get(training["optimizer"])
        loss = training.get("loss")
        loss = losses.get(loss) if isinstance(loss, dict) and "class_name" in loss else loss
        model.compile(optimizer=opt, loss=loss, metrics=training.get("metrics"),
                      loss_weights=training.get("loss_weights"))
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFormatError(f"{path}: the training configuration is invalid: {e}") from None
    slots = {k[len(OPTIMIZER):]: t for k, t in tensors.items() if k.startswith(OPTIMIZER)}
    if not slots:
        return
    for key, value in slots.items():
        var_name, _, slot = key.rpartition("/")
        if var_name not in by_file_name:
            raise ModelFormatError(f"{path}: optimizer state for unknown weight {var_name!r}")
        target = opt.slot(by_file_name[var_name], slot)
        if tuple(target.shape) != tuple(value.shape):
            raise ModelFormatError(f"{path}: optimizer slot {key} has shape {tuple(value.shape)}")
        target.assign(value)
    try:
        opt.iterations = int(metadata.get(ITERATIONS_KEY, "0"))
    except ValueError:
        raise ModelFormatError(f"{path}: {ITERATIONS_KEY} is not an integer") from None


def load_weights(model, filepath, skip_mismatch: bool = False, name_map=None) -> None:
    """Loads weights saved by ``save_weights`` (or any safetensors file).

    ``name_map`` maps a weight's maas name (``layer/variable``, see
    :func:`weight_names`) to the file's tensor name, or to ``(name,
    "transpose")`` for a tensor stored transposed, as PyTorch stores a
    Linear layer's ``weight`` as (out, in) where a Dense kernel is (in, out),
    or to ``(name, axes)`` for one whose axes are permuted (a PyTorch Conv2d
    weight (out, in, kh, kw) is a Conv2D kernel with axes ``(2, 3, 1, 0)``).
    Names or shapes that do not match raise ValueError listing every
    mismatch (``skip_mismatch=True`` loads what matches).
    """
    tensors, metadata = load_tensors(os.fspath(filepath), mmap=False, verify=True)
    if "maas.encryption" in metadata:  # the tensors are ciphertext: never weights
        raise ModelFormatError(f"{os.fspath(filepath)}: the file is encrypted; load it with "
                               f"maas.load_model(path, encryption_key=...)")
    if not name_map and ORDER_KEY in metadata:  # a maas weights file: by position
        pairs, problems = _pair_weights(model, tensors, metadata)
        if problems and not skip_mismatch:
            raise ValueError(f"load_weights({os.fspath(filepath)!r}): the file does not match "
                             f"the model: " + "; ".join(problems))
        for _, w, fname in pairs:
            w.assign(tensors[fname])
        return
    name_map = name_map or {}
    problems, used, assignments = [], set(), []
    for name, w in weight_names(model):
        src, how = name_map.get(name, name), None
        if isinstance(src, (tuple, list)):
            src, how = src
            if how is not None and how != "transpose" and not (
                    isinstance(how, (tuple, list)) and all(isinstance(a, int) for a in how)):
                raise ValueError(f"name_map[{name!r}]: the transform must be 'transpose' or a "
                                 f"tuple of axes to permute, got {how!r}")
        if src not in tensors:
            problems.append(f"{name}: no tensor {src!r} in the file")
            continue
        used.add(src)
        value = np.asarray(tensors[src])
        if how == "transpose":
            value = value.T
        elif how is not None:  # axes: a PyTorch conv weight (out, in, kh, kw) takes (2, 3, 1, 0)
            if len(how) != value.ndim:
                problems.append(f"{name}: the axes {tuple(how)} do not fit {src!r} of shape {value.shape}")
                continue
            value = np.transpose(value, how)
        if value.shape != tuple(w.shape):
            problems.append(f"{name}: the file's {src!r} has shape {value.shape}, the weight "
                            f"{tuple(w.shape)}" + (" (a PyTorch Linear weight? map it with "
                                                    f"(name, 'transpose'))" if value.shape[::-1] == tuple(w.shape) else ""))
            continue
        assignments.append((w, np.ascontiguousarray(value)))
    unused = sorted(set(tensors) - used)
    if unused:
        problems.append(f"tensors in the file that no weight takes: {unused}")
    if problems and not skip_mismatch:  # nothing is assigned unless everything fits
        raise ValueError(f"load_weights({os.fspath(filepath)!r}): the file does not match the model: "
                         + "; ".join(problems))
    for w, value in assignments:
        w.assign(value)


def load_from_repository(repo, name: str, version: int | None = None, **kwargs):
    """Loads ``REPO/<name>/<version>/model.maas`` (the latest version by default)."""
    return load_model(version_path(repo, name, version), **kwargs)


# ------------------------------------------------------------------- JSON

def model_to_json(model, **kwargs) -> str:
    """The architecture (no weights) as JSON: ``model.to_json()``."""
    arch = _architecture(model)
    key = GLOBAL_CUSTOM_NAMES.get(type(model))
    arch = {"module": type(model).__module__ if key else "maas.models", **arch,
            "registered_name": key}
    return json.dumps(arch, **kwargs)


def model_from_json(json_string: str, custom_objects=None):
    """A new model (fresh weights) from :func:`model_to_json`'s text, built
    from maas's own and registered classes only, as ``load_model`` builds.

    >>> model = maas.Sequential([maas.Input((4,)), maas.layers.Dense(2)])
    >>> clone = maas.models.model_from_json(model.to_json())
    >>> [w.shape for w in clone.weights]
    [(4, 2), (2,)]
    """
    try:
        arch = json.loads(json_string)
    except (TypeError, ValueError) as e:
        raise ModelFormatError(f"model_from_json: not valid JSON: {e}") from None
    if isinstance(arch, dict) and isinstance(arch.get("registered_name"), str) \
            and arch["registered_name"] in visible_objects(custom_objects):
        arch = {**arch, "class_name": arch["registered_name"]}
    return _rebuild(arch, custom_objects, "model_from_json")
