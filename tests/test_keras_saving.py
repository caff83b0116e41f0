"""Keras 3's saving names: keras.models.load_model/save_model,
keras.saving.register_keras_serializable (a registered custom layer saved in
one process loads in another), custom_object_scope, get_custom_objects,
model.to_json/model_from_json and clone_model (fresh weights, same config)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import maas
from maas.errors import ModelFormatError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CUSTOM = textwrap.dedent('''
    import maas


    @maas.saving.register_keras_serializable(package="my_pkg")
    class Scale(maas.layers.Layer):
        """x * w, one weight per feature, initialized to `init`."""

        def __init__(self, init=1.0, **kwargs):
            super().__init__(**kwargs)
            self.init = float(init)

        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1],),
                                     initializer=maas.initializers.Constant(self.init), name="w")

        def call(self, x):
            return x * self.w

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return {**super().get_config(), "init": self.init}


    def build(kind):
        maas.utils.set_random_seed(3)
        if kind == "sequential":
            return maas.Sequential([maas.Input((5,)), maas.layers.Dense(4, activation="relu"),
                                    Scale(0.5), maas.layers.Dense(3)])
        inp = maas.Input((5,))
        h = Scale(2.0)(maas.layers.Dense(4, activation="tanh")(inp))
        return maas.Model(inp, maas.layers.Dense(3)(maas.layers.Add()([h, Scale(-1.0)(h)])))
''')


@pytest.fixture
def custom_module(tmp_path, monkeypatch):
    path = tmp_path / "my_custom_layers.py"
    path.write_text(CUSTOM)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_custom_layers", None)
    import my_custom_layers

    yield my_custom_layers
    sys.modules.pop("my_custom_layers", None)
    maas.saving.get_custom_objects().pop("my_pkg>Scale", None)


def _child(code, cwd):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, str(cwd)]))
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


X = np.random.default_rng(0).normal(size=(16, 5)).astype(np.float32)
Y = np.random.default_rng(1).normal(size=(16, 3)).astype(np.float32)


@pytest.mark.parametrize("kind", ["sequential", "functional"])
def test_registered_custom_layer_saves_and_loads_in_a_new_process(custom_module, tmp_path, kind):
    model = custom_module.build(kind)
    model.compile(optimizer="adam", loss="mse")
    model.fit(X, Y, epochs=2, batch_size=8, verbose=0)
    path = tmp_path / "custom.maas"
    maas.models.save_model(model, path)
    expected = model.predict(X, verbose=0)
    # the config holds the bare class name and the registered "package>Name", as Keras writes it
    cfg = json.loads(model.to_json())
    scales = [l for l in cfg["config"]["layers"] if l["class_name"] == "Scale"]
    assert scales and all(l["registered_name"] == "my_pkg>Scale" for l in scales)
    np.save(tmp_path / "x.npy", X)
    out = _child(textwrap.dedent(f"""
        import numpy as np, maas, my_custom_layers
        m = maas.models.load_model({str(path)!r})
        np.save({str(tmp_path / 'got.npy')!r}, m.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0))
        print(type(m.layers[2 if {kind!r} == 'sequential' else 3]).__name__, m.optimizer.iterations)
    """), tmp_path)
    assert out.returncode == 0, out.stderr
    got = np.load(tmp_path / "got.npy")
    assert np.array_equal(got, expected)  # bit for bit
    assert out.stdout.split()[1] == "4"   # the optimizer state came along


def test_an_unregistered_class_is_refused_with_what_to_do(custom_module, tmp_path):
    model = custom_module.build("sequential")
    path = tmp_path / "m.maas"
    model.save(path)
    # a process that never imports the module does not know my_pkg>Scale
    out = _child(f"import maas; maas.models.load_model({str(path)!r})", tmp_path)
    assert out.returncode == 1
    assert "refusing to load unknown class 'Scale' (registered as 'my_pkg>Scale')" in out.stderr
    assert "register_keras_serializable" in out.stderr


class Doubler(maas.layers.Layer):
    """Not registered: loadable only through custom_objects or a scope."""

    def call(self, x):
        return x * 2.0

    def compute_output_shape(self, input_shape):
        return input_shape


def _doubler_file(tmp_path):
    model = maas.Sequential([maas.Input((3,)), maas.layers.Dense(2), Doubler()])
    path = tmp_path / "doubler.maas"
    model.save(path)
    return model, path


@pytest.mark.parametrize("scope", [maas.saving.custom_object_scope, maas.utils.custom_object_scope])
def test_custom_object_scope_makes_a_class_loadable_in_its_block_only(tmp_path, scope):
    model, path = _doubler_file(tmp_path)
    with pytest.raises(ModelFormatError, match="unknown class 'Doubler'"):
        maas.models.load_model(path)
    with scope({"Doubler": Doubler}):
        loaded = maas.models.load_model(path)
        seen_elsewhere = []
        t = threading.Thread(target=lambda: seen_elsewhere.append(
            maas.saving.get_registered_object("Doubler")))
        t.start()
        t.join()
        assert seen_elsewhere == [None]  # the scope is this thread's
        assert maas.saving.get_registered_object("Doubler") is Doubler
    x = np.ones((2, 3), np.float32)
    assert np.array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    with pytest.raises(ModelFormatError, match="unknown class 'Doubler'"):
        maas.models.load_model(path)
    # custom_objects= works without a scope
    assert isinstance(maas.models.load_model(path, custom_objects={"Doubler": Doubler}).layers[1],
                      Doubler)


def test_get_custom_objects_is_the_global_registry(tmp_path):
    _, path = _doubler_file(tmp_path)
    objects = maas.saving.get_custom_objects()
    assert maas.utils.get_custom_objects() is objects
    objects["Doubler"] = Doubler
    try:
        assert isinstance(maas.models.load_model(path).layers[1], Doubler)
    finally:
        del objects["Doubler"]

    @maas.saving.register_keras_serializable(package="tests_kv")
    def my_activation(x):
        return x

    assert objects["tests_kv>my_activation"] is my_activation
    assert maas.saving.get_registered_name(my_activation) == "tests_kv>my_activation"
    assert maas.saving.register_serializable is maas.saving.register_keras_serializable
    try:
        with pytest.raises(ValueError, match="already been registered"):
            maas.saving.register_keras_serializable(package="tests_kv", name="my_activation")(Doubler)
        with pytest.raises(ValueError, match="get_config"):
            maas.saving.register_keras_serializable(package="tests_kv")(type("NoConfig", (), {}))
    finally:
        del objects["tests_kv>my_activation"]


def test_keras_save_and_load_names(tmp_path):
    model = maas.Sequential([maas.Input((3,)), maas.layers.Dense(2)])
    path = tmp_path / "k.maas"
    maas.models.save_model(model, path)
    for load in (maas.models.load_model, maas.saving.load_model, maas.load_model):
        assert np.array_equal(load(path, safe_mode=True).predict(np.ones((1, 3)), verbose=0),
                              model.predict(np.ones((1, 3)), verbose=0))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        maas.saving.save_model(model, path, overwrite=False)
    with pytest.raises(ValueError, match="never a zip"):
        maas.saving.save_model(model, path, zipped=True)


def _shared_functional():
    inp = maas.Input((6,), name="pixels")
    shared = maas.layers.Dense(6, activation="relu", name="shared")
    a = shared(inp)
    b = shared(a)  # the same layer twice: one set of weights
    out = maas.layers.Dense(2, name="head")(maas.layers.Concatenate()([a, b]))
    return maas.Model(inp, out, name="twice")


def test_to_json_and_model_from_json_rebuild_the_architecture(custom_module):
    for model in (_shared_functional(), custom_module.build("functional"),
                  custom_module.build("sequential")):
        text = model.to_json(indent=1)
        assert json.loads(text)["class_name"] in ("Sequential", "Functional")
        rebuilt = maas.models.model_from_json(text)
        assert rebuilt.get_config() == model.get_config()
        assert [w.shape for w in rebuilt.weights] == [w.shape for w in model.weights]
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        maas.models.model_from_json("{not json")
    bad = json.loads(_shared_functional().to_json())
    bad["config"]["layers"][1]["class_name"] = "os.system"
    with pytest.raises(ModelFormatError, match="refusing to load unknown class 'os.system'"):
        maas.models.model_from_json(json.dumps(bad))


def _weights_equal(a, b):
    return len(a.weights) == len(b.weights) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a.weights, b.weights))


@maas.saving.register_keras_serializable(package="tests_kv")
class Tower(maas.Model):
    def __init__(self, units=4, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.hidden = maas.layers.Dense(units, activation="relu")
        self.out = maas.layers.Dense(1)

    def call(self, x, training=False):
        return self.out(self.hidden(x))

    def get_config(self):
        return {"units": self.units, "name": self.name}


@pytest.mark.parametrize("kind", ["sequential", "functional", "shared", "subclassed"])
def test_clone_model_gives_fresh_weights_and_the_same_config(kind, custom_module):
    if kind in ("sequential", "functional"):
        model = custom_module.build(kind)
    elif kind == "shared":
        model = _shared_functional()
    else:
        model = Tower(3)
        model.build((None, 6))
    shape = (4, 5) if kind in ("sequential", "functional") else (4, 6)
    x = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    before = model.get_weights()
    maas.utils.set_random_seed(11)
    clone = maas.models.clone_model(model)
    if not clone.weights:  # a subclassed model comes back unbuilt, as in Keras
        assert kind == "subclassed"
        clone.build((None, 6))
    assert type(clone) is type(model) and clone.get_config() == model.get_config()
    assert [w.shape for w in clone.weights] == [w.shape for w in model.weights]
    # fresh: drawn by the initializers, exactly as a new model of that config with that seed
    maas.utils.set_random_seed(11)
    if kind == "subclassed":
        fresh = Tower.from_config(model.get_config())
        fresh.build((None, 6))
    else:
        fresh = type(model).from_config(model.get_config(),
                                        custom_objects={"Scale": custom_module.Scale})
    assert _weights_equal(clone, fresh)
    assert not _weights_equal(clone, model)
    assert clone.predict(x, verbose=0).shape == model.predict(x, verbose=0).shape
    # independent: training the clone leaves the original alone
    clone.compile(optimizer="sgd", loss="mse")
    clone.fit(x, np.ones((4,) + clone.predict(x, verbose=0).shape[1:], np.float32), epochs=1,
              verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_clone_model_clone_function_input_tensors_and_call_function():
    model = _shared_functional()
    renamed = maas.models.clone_model(model, clone_function=lambda layer: type(layer).from_config(
        {**layer.get_config(), "name": layer.name + "_c"}))
    assert [l.name for l in renamed.layers[1:]] == [l.name + "_c" for l in model.layers[1:]]
    assert len(renamed.weights) == len(model.weights)  # the shared layer is still shared
    inp = maas.Input((6,), name="new_input")
    on_new = maas.models.clone_model(model, input_tensors=inp)
    assert on_new.inputs[0] is inp
    calls = []

    def call_function(layer, *args, **kwargs):
        calls.append(layer.name)
        return layer(*args, **kwargs)

    maas.models.clone_model(model, call_function=call_function)
    assert len(calls) == 4 and calls[:2] == ["shared", "shared"] and calls[-1] == "head"
    with pytest.raises(ValueError, match="subclassed model"):
        t = Tower(2)
        t.build((None, 3))
        maas.models.clone_model(t, clone_function=lambda l: l)
    with pytest.raises(TypeError, match="expects a maas Model"):
        maas.models.clone_model(maas.layers.Dense(2))
