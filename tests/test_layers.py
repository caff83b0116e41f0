"""Layers, activations, initializers and regularizers."""
import numpy as np
import pytest
import torch

import maas
from maas import layers


@pytest.fixture(autouse=True)
def _seed():
    maas.utils.set_random_seed(0)


def test_dense_lazy_build_and_forward_matches_numpy():
    layer = layers.Dense(4, activation="relu", name="d")
    assert not layer.built and layer.weights == []
    x = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    out = layer(x)
    assert layer.built and [w.path for w in layer.weights] == ["d/kernel", "d/bias"]
    k, b = layer.get_weights()
    assert k.shape == (5, 4) and np.all(b == 0)
    np.testing.assert_allclose(np.asarray(out), np.maximum(x @ k + b, 0), rtol=1e-5, atol=1e-6)
    assert layer.compute_output_shape((None, 5)) == (None, 4)
    assert layers.Dense(4, use_bias=False)(x).shape == (3, 4)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "3", None])
def test_dense_units_validation(bad):
    with pytest.raises(ValueError, match=rf"units must be a positive integer, received units={bad!r}"):
        layers.Dense(bad)


def test_dropout_only_when_training():
    x = np.ones((200, 50), np.float32)
    d = layers.Dropout(0.5)
    assert np.array_equal(np.asarray(d(x)), x)
    assert np.array_equal(np.asarray(d(x, training=False)), x)
    y = np.asarray(d(x, training=True))
    assert set(np.unique(y)) <= {0.0, 2.0}
    assert 0.4 < (y == 0).mean() < 0.6
    with pytest.raises(ValueError, match="rate"):
        layers.Dropout(1.5)


def test_training_flag_reaches_nested_layers():
    class Net(maas.Model):
        def __init__(self):
            super().__init__()
            self.drop = layers.Dropout(0.9)

        def call(self, x):  # does not pass training on: the call context does
            return self.drop(x)

    net = Net()
    x = np.ones((10, 100), np.float32)
    assert np.array_equal(np.asarray(net(x)), x)
    assert (np.asarray(net(x, training=True)) == 0).mean() > 0.7


def test_flatten_reshape_activation():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert layers.Flatten()(x).shape == (2, 12)
    assert layers.Reshape((4, 3))(x).shape == (2, 4, 3)
    assert layers.Reshape((-1, 2))(x).shape == (2, 6, 2)
    assert layers.Flatten().compute_output_shape((None, 3, 4)) == (None, 12)
    np.testing.assert_allclose(np.asarray(layers.Activation("tanh")(x[0])), np.tanh(x[0]), rtol=1e-6)
    with pytest.raises(ValueError, match="cannot be reshaped"):
        layers.Reshape((5,))(x)


def test_merge_layers():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(np.asarray(layers.Add()([a, b])), a + b)
    np.testing.assert_array_equal(np.asarray(layers.Subtract()([a, b])), a - b)
    np.testing.assert_array_equal(np.asarray(layers.Multiply()([a, a, b])), a * a)
    np.testing.assert_array_equal(np.asarray(layers.Concatenate()([a, b])), np.concatenate([a, b], 1))
    x = maas.Input((3,)); y = maas.Input((5,))
    assert layers.Concatenate()([x, y]).shape == (None, 8)
    with pytest.raises(ValueError, match="incompatible shapes"):
        layers.Add()([x, y])
    with pytest.raises(ValueError, match="list of at least 2 inputs"):
        layers.Add()(x)


def test_symbolic_call_records_the_graph():
    inp = maas.Input((8,), name="features")
    assert repr(inp).startswith("<KerasTensor shape=(None, 8)")
    h = layers.Dense(4, name="hidden")(inp)
    assert h.shape == (None, 4)
    assert h._keras_history[0].name == "hidden"
    with pytest.raises(TypeError, match="symbolic"):
        np.asarray(h)


def test_activations_match_torch():
    x = np.linspace(-4, 4, 41, dtype=np.float32)
    t = torch.from_numpy(x)
    ref = {"relu": torch.relu(t), "sigmoid": torch.sigmoid(t), "tanh": torch.tanh(t),
           "gelu": torch.nn.functional.gelu(t), "elu": torch.nn.functional.elu(t),
           "leaky_relu": torch.nn.functional.leaky_relu(t, 0.2),
           "softplus": torch.nn.functional.softplus(t), "silu": torch.nn.functional.silu(t),
           "swish": torch.nn.functional.silu(t), "linear": t,
           "softmax": torch.softmax(t, -1)}
    for name, r in ref.items():
        out = maas.activations.get(name)(maas.tensor(x))
        np.testing.assert_allclose(np.asarray(out), r.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
    with pytest.raises(ValueError, match="valid names are"):
        maas.activations.get("relu7")


def test_initializers_statistics_and_names():
    I = maas.initializers
    fan_in, fan_out = 400, 300
    shape = (fan_in, fan_out)
    w = np.asarray(I.get("glorot_uniform")(shape))
    limit = np.sqrt(6 / (fan_in + fan_out))
    assert w.max() <= limit and w.min() >= -limit and abs(w.std() - limit / np.sqrt(3)) < 0.002
    w = np.asarray(I.get("he_uniform")(shape))
    assert abs(w.std() - np.sqrt(2 / fan_in)) < 0.002
    for name, std in (("glorot_normal", np.sqrt(2 / (fan_in + fan_out))),
                      ("he_normal", np.sqrt(2 / fan_in)), ("lecun_normal", np.sqrt(1 / fan_in))):
        w = np.asarray(I.get(name)(shape))
        assert abs(w.std() - std) / std < 0.02, name
        assert np.abs(w).max() <= 2 * std / 0.87962566103423978 + 1e-6, name   # truncated at 2 sigma
    assert np.all(np.asarray(I.get("zeros")((3,))) == 0) and np.all(np.asarray(I.get("ones")((3,))) == 1)
    w = np.asarray(I.RandomNormal(stddev=0.05)((10000,)))
    assert abs(w.std() - 0.05) < 0.002
    w = np.asarray(I.RandomUniform()((10000,)))
    assert w.min() >= -0.05 and w.max() <= 0.05
    seeded = I.GlorotUniform(seed=3)
    assert np.array_equal(np.asarray(seeded((4, 4))), np.asarray(seeded((4, 4))))
    assert layers.Dense(3).kernel_initializer.__class__.__name__ == "GlorotUniform"
    with pytest.raises(ValueError, match="valid names are"):
        I.get("glorot")


def test_set_random_seed_gives_identical_weights():
    def weights():
        maas.utils.set_random_seed(7)
        model = maas.Sequential([maas.Input((10,)), layers.Dense(8, kernel_initializer="he_normal"),
                                 layers.Dense(3)])
        return model.get_weights()

    for a, b in zip(weights(), weights()):
        assert np.array_equal(a, b)


def test_regularizers_add_losses_with_gradients():
    w = maas.Variable(np.array([1.0, -2.0, 3.0]))
    assert float(maas.regularizers.L1(0.1)(w)) == pytest.approx(0.6)
    assert float(maas.regularizers.L2(0.1)(w)) == pytest.approx(1.4)
    assert float(maas.regularizers.L1L2(0.1, 0.1)(w)) == pytest.approx(2.0)
    assert maas.regularizers.get("l2").l2 == 0.01 and maas.regularizers.get("l1").l1 == 0.01
    with maas.GradientTape() as tape:
        loss = maas.regularizers.L2(0.5)(w)
    np.testing.assert_allclose(np.asarray(tape.gradient(loss, w)), [1.0, -2.0, 3.0])
    layer = layers.Dense(2, kernel_regularizer="l2", bias_regularizer=maas.regularizers.L1(1.0),
                         activity_regularizer="l1")
    x = np.ones((4, 3), np.float32)
    out = layer(x)
    assert len(layer.losses) == 3
    k = layer.get_weights()[0]
    # Keras 3's order: add_loss (activity) losses of the call, then the weights'
    assert float(layer.losses[0]) == pytest.approx(0.01 * np.abs(np.asarray(out)).sum() / 4, rel=1e-5)
    assert float(layer.losses[1]) == pytest.approx(0.01 * (k ** 2).sum(), rel=1e-5)


def test_custom_layer_with_add_weight():
    class Scale(layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="w")
            self.n = self.add_weight(shape=(), initializer="zeros", trainable=False, name="n")

        def call(self, x):
            return x * self.w

    s = Scale()
    out = s(np.full((2, 3), 2.0, np.float32))
    assert np.all(np.asarray(out) == 2.0)
    assert len(s.trainable_weights) == 1 and len(s.non_trainable_weights) == 1
    s.trainable = False
    assert s.trainable_weights == [] and len(s.non_trainable_weights) == 2


@pytest.mark.parametrize("layer", [
    layers.Dense(5, activation="relu", use_bias=False, kernel_initializer="he_normal",
                 kernel_regularizer=maas.regularizers.L1L2(0.01, 0.02)),
    layers.Activation("softmax"), layers.Dropout(0.3, seed=1), layers.Flatten(),
    layers.Reshape((2, -1)), layers.Add(), layers.Subtract(), layers.Multiply(),
    layers.Concatenate(axis=1), layers.InputLayer(shape=(4,)),
])
def test_layer_config_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    again = maas.layers.deserialize(maas.layers.serialize(layer))
    assert type(again) is type(layer)
