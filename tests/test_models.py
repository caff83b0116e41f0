"""Sequential, functional and subclassed models: structure, weights,
summary, config round trips."""
import io
import contextlib

import numpy as np
import pytest

import maas
from maas.layers import Dense, Dropout, Input


@pytest.fixture(autouse=True)
def _seed():
    maas.utils.set_random_seed(0)


def _x(n=5, d=8):
    return np.random.default_rng(1).normal(size=(n, d)).astype(np.float32)


def _summary(model):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        model.summary()
    return buf.getvalue()


def test_sequential_add_layers_and_lazy_build():
    model = maas.Sequential(name="seq")
    model.add(Dense(4, activation="relu", name="a"))
    model.add(Dense(2, name="b"))
    assert not model.built or model.weights == []
    out = model(_x())
    assert out.shape == (5, 2)
    assert [l.name for l in model.layers] == ["a", "b"]
    assert model.get_layer("b") is model.layers[1] and model.get_layer(index=0).name == "a"
    assert len(model.weights) == 4 and len(model.trainable_variables) == 4
    with pytest.raises(ValueError, match="No such layer: c"):
        model.get_layer("c")
    with pytest.raises(TypeError, match="Only instances of maas.layers.Layer"):
        model.add("dense")


def test_summary_table():
    model = maas.Sequential([Input((64,)), Dense(128, activation="relu", name="dense"),
                             Dense(10, activation="softmax", name="dense_1")], name="sequential")
    model.layers[1].trainable = False
    s = _summary(model)
    assert 'Model: "sequential"' in s
    assert "Layer (type)" in s and "Output Shape" in s and "Param #" in s
    assert "dense (Dense)" in s and "(None, 128)" in s and "8,320" in s and "1,290" in s
    assert "Total params: 9,610 (37.54 KB)" in s
    assert "Trainable params: 8,320 (32.50 KB)" in s
    assert "Non-trainable params: 1,290 (5.04 KB)" in s


def test_functional_summary_shows_connections():
    inp = Input((4,), name="inp")
    a, b = Dense(3, name="a")(inp), Dense(3, name="b")(inp)
    model = maas.Model(inp, maas.layers.Add(name="sum")([a, b]))
    s = _summary(model)
    assert "Connected to" in s and "inp (InputLayer)" in s and "a[0][0]" in s and "b[0][0]" in s


def test_subclassed_model_tracks_layers_and_lists():
    class Net(maas.Model):
        def __init__(self):
            super().__init__()
            self.blocks = [Dense(8, activation="relu"), Dense(8, activation="relu")]
            self.head = Dense(3)

        def call(self, x, training=False):
            for b in self.blocks:
                x = b(x)
            return self.head(x)

    net = Net()
    assert net.name.startswith("net")  # snake case of the class name, made unique
    net(_x())
    assert len(net.layers) == 3 and len(net.trainable_variables) == 6
    assert "dense" in _summary(net)
    net.compile("adam", "mse")
    net.fit(_x(), np.zeros((5, 3), np.float32), verbose=0, epochs=2)


def test_get_set_weights_and_errors():
    model = maas.Sequential([Input((8,)), Dense(4), Dense(2)])
    other = maas.Sequential([Input((8,)), Dense(4), Dense(2)])
    other.set_weights(model.get_weights())
    np.testing.assert_array_equal(model.predict(_x(), verbose=0), other.predict(_x(), verbose=0))
    with pytest.raises(ValueError, match="expecting 4 weights"):
        other.set_weights(model.get_weights()[:2])
    bad = model.get_weights()
    bad[0] = bad[0].T
    with pytest.raises(ValueError, match="not compatible"):
        other.set_weights(bad)


def _roundtrip(model, x):
    config = model.get_config()
    clone = type(model).from_config(config)
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(model.predict(x, verbose=0), clone.predict(x, verbose=0))
    assert clone.get_config()["layers"][-1]["class_name"] == config["layers"][-1]["class_name"]
    return clone


def test_sequential_config_round_trip():
    model = maas.Sequential([Input((8,)), Dense(6, activation="relu"), Dropout(0.2),
                             maas.layers.Reshape((2, 3)), maas.layers.Flatten(),
                             maas.layers.Activation("tanh"), Dense(2, activation="softmax")])
    clone = _roundtrip(model, _x())
    assert len(clone.layers) == len(model.layers)
    # without an Input, the config is rebuilt lazily
    lazy = maas.Sequential([Dense(3), Dense(1)])
    lazy(_x())
    _roundtrip(lazy, _x())


def test_functional_config_round_trip_several_inputs_outputs():
    a, b = Input((8,), name="a"), Input((8,), name="b")
    shared = Dense(4, activation="relu", name="shared")
    ha, hb = shared(a), shared(b)
    merged = maas.layers.Concatenate()([ha, hb, maas.layers.Subtract()([ha, hb])])
    out1 = Dense(3, activation="softmax", name="o1")(merged)
    out2 = Dense(1, name="o2")(maas.layers.Multiply()([ha, hb]))
    model = maas.Model([a, b], [out1, out2])
    assert len(model.layers) == 8
    x = [_x(), _x() * 2]
    y1, y2 = model.predict(x, verbose=0)
    config = model.get_config()
    clone = maas.Model.from_config(config)
    clone.set_weights(model.get_weights())
    c1, c2 = clone.predict(x, verbose=0)
    np.testing.assert_array_equal(y1, c1)
    np.testing.assert_array_equal(y2, c2)
    assert clone.get_config() == config


def test_functional_model_errors():
    inp = Input((4,))
    with pytest.raises(ValueError, match="Graph disconnected"):
        maas.Model(Input((4,)), Dense(2)(inp))
    with pytest.raises(ValueError, match="needs both inputs and outputs"):
        maas.Model(inputs=inp)
    model = maas.Model(inp, Dense(2)(inp))
    with pytest.raises(ValueError, match=r"expected shape=\(None, 4\), found shape=\(3, 5\)"):
        model(np.zeros((3, 5), np.float32))


def test_functional_model_as_a_layer_of_a_sequential_and_trainable():
    inp = Input((8,))
    body = maas.Model(inp, Dense(4, activation="relu")(inp), name="body")
    model = maas.Sequential([body, Dense(2)])
    assert model(_x()).shape == (5, 2)
    body.trainable = False
    assert len(model.trainable_weights) == 2 and len(model.non_trainable_weights) == 2
