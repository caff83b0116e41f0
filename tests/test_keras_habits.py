"""Programs written the way the Keras 3 guides write them ("Customizing what
happens in fit()", "The Functional API", "Making new layers and models via
subclassing"), run with ``import maas as keras``. Where maas differs on
purpose, the test's docstring says so and why."""
import numpy as np
import pytest

import maas as keras
from maas import layers, ops


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    keras.utils.clear_session()


def _data(n=256, d=32, out=1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, d)).astype(np.float32)
    w = rng.normal(size=(d, out)).astype(np.float32)
    return x, (x @ w / d).astype(np.float32)


def _functional(cls=keras.Model, d=32):
    inputs = keras.Input(shape=(d,))
    outputs = keras.layers.Dense(1)(inputs)
    return cls(inputs, outputs)


# -- "Customizing what happens in fit()"
class GuideModel(keras.Model):
    """The guide's first example, verbatim but for maas.GradientTape."""
    seen = []

    def train_step(self, data):
        GuideModel.seen.append((type(data), len(data)))
        x, y = data
        with keras.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(y=y, y_pred=y_pred)
        trainable_vars = self.trainable_variables
        gradients = tape.gradient(loss, trainable_vars)
        self.optimizer.apply(gradients, trainable_vars)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            else:
                metric.update_state(y, y_pred)
        return {m.name: m.result() for m in self.metrics}


def test_guide_train_step_gets_data_and_matches_the_builtin_step():
    """train_step(self, data) receives (x, y) and its logs are fit's; since it
    is the built-in step written out, it gives the built-in step's numbers
    from the same weights and the same shuffling."""
    x, y = _data()
    model = _functional(GuideModel)
    ref = _functional()
    ref.set_weights(model.get_weights())
    for m in (model, ref):
        m.compile(optimizer="adam", loss="mse", metrics=["mae"])
    GuideModel.seen.clear()
    keras.utils.set_random_seed(1)
    h = model.fit(x, y, epochs=3, verbose=0)
    keras.utils.set_random_seed(1)
    h_ref = ref.fit(x, y, epochs=3, verbose=0)
    assert GuideModel.seen and set(GuideModel.seen) == {(tuple, 2)}
    assert len(GuideModel.seen) == 3 * 8
    assert set(h.history) == {"loss", "mae"}
    np.testing.assert_allclose(h.history["loss"], h_ref.history["loss"], rtol=1e-5)
    np.testing.assert_allclose(h.history["mae"], h_ref.history["mae"], rtol=1e-5)
    np.testing.assert_allclose(model.predict(x, verbose=0), ref.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    assert model.eager_reason == "train_step is overridden"
    assert model.metrics_names == ["loss", "compile_metrics"]  # Keras 3's names


def test_guide_lower_level_own_metrics_reset_each_epoch():
    """compile(optimizer="adam") alone; the model's own trackers, listed in
    the ``metrics`` property, are reset by fit at each epoch."""

    class CustomModel(keras.Model):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.loss_tracker = keras.metrics.Mean(name="loss")
            self.mae_metric = keras.metrics.MeanAbsoluteError(name="mae")
            self.loss_fn = keras.losses.MeanSquaredError()

        def train_step(self, data):
            x, y = data
            with keras.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = self.loss_fn(y, y_pred)
            trainable_vars = self.trainable_variables
            gradients = tape.gradient(loss, trainable_vars)
            self.optimizer.apply(gradients, trainable_vars)
            self.loss_tracker.update_state(loss)
            self.mae_metric.update_state(y, y_pred)
            return {"loss": self.loss_tracker.result(), "mae": self.mae_metric.result()}

        @property
        def metrics(self):
            return [self.loss_tracker, self.mae_metric]

    x, y = _data()
    model = _functional(CustomModel)
    model.compile(optimizer="adam")
    h = model.fit(x, y, epochs=5, batch_size=32, verbose=0)
    assert set(h.history) == {"loss", "mae"} and len(h.history["loss"]) == 5
    assert h.history["loss"][-1] < h.history["loss"][0]
    assert model.loss_tracker.count == 8  # one epoch's batches: reset at each epoch begin
    pred = model.predict(x, verbose=0)
    assert float(model.mae_metric.result()) == pytest.approx(h.history["mae"][-1])
    assert np.abs(pred - y).mean() < h.history["mae"][0]


def test_guide_sample_weight_in_train_step():
    """With sample_weight, data has three elements; the guide's branch on
    len(data) picks them up and gives the built-in step's numbers."""
    lens = []

    class CustomModel(keras.Model):
        def train_step(self, data):
            lens.append(len(data))
            if len(data) == 3:
                x, y, sample_weight = data
            else:
                sample_weight = None
                x, y = data
            with keras.GradientTape() as tape:
                y_pred = self(x, training=True)
                loss = self.compute_loss(y=y, y_pred=y_pred, sample_weight=sample_weight)
            trainable_vars = self.trainable_variables
            gradients = tape.gradient(loss, trainable_vars)
            self.optimizer.apply(gradients, trainable_vars)
            for metric in self.metrics:
                if metric.name == "loss":
                    metric.update_state(loss)
                else:
                    metric.update_state(y, y_pred, sample_weight=sample_weight)
            return {m.name: m.result() for m in self.metrics}

    x, y = _data()
    sw = np.random.default_rng(3).random((len(x), 1)).astype(np.float32)
    model, ref = _functional(CustomModel), _functional()
    ref.set_weights(model.get_weights())
    for m in (model, ref):
        m.compile(optimizer="adam", loss="mse", metrics=["mae"])
    keras.utils.set_random_seed(2)
    h = model.fit(x, y, sample_weight=sw, epochs=3, verbose=0)
    keras.utils.set_random_seed(2)
    h_ref = ref.fit(x, y, sample_weight=sw, epochs=3, verbose=0)
    assert set(lens) == {3}
    np.testing.assert_allclose(h.history["loss"], h_ref.history["loss"], rtol=1e-5)
    np.testing.assert_allclose(h.history["mae"], h_ref.history["mae"], rtol=1e-5)


def test_guide_test_step_against_numpy():
    """evaluate() calls the guide's test_step(data); [loss, mae] match float64 NumPy."""
    seen = []

    class CustomModel(keras.Model):
        def test_step(self, data):
            seen.append(len(data))
            x, y = data
            y_pred = self(x, training=False)
            loss = self.compute_loss(y=y, y_pred=y_pred)
            for metric in self.metrics:
                if metric.name == "loss":
                    metric.update_state(loss)
                else:
                    metric.update_state(y, y_pred)
            return {m.name: m.result() for m in self.metrics}

    x, y = _data(n=96)
    model = _functional(CustomModel)
    model.compile(loss="mse", metrics=["mae"])
    loss, mae = model.evaluate(x, y, batch_size=32, verbose=0)
    assert seen == [2, 2, 2]
    p = model.predict(x, verbose=0).astype(np.float64)
    # the loss tracker is a mean of per-batch mean losses (equal batches here)
    assert loss == pytest.approx(((p - y) ** 2).mean(), rel=1e-5)
    assert mae == pytest.approx(np.abs(p - y).mean(), rel=1e-5)


def test_guide_gan_train_step_on_a_dataset_of_images():
    """The guide's GAN: compile() overridden with its own signature, two
    optimizers, a dataset yielding image batches alone (train_step(self,
    real_images)). maas differs in the parts the guide writes with
    TensorFlow and Conv2D: Dense networks, maas.ops.concatenate for tf.concat
    and keras.random.normal without a SeedGenerator (maas's generator is
    seeded by keras.utils.set_random_seed)."""
    latent_dim = 8
    discriminator = keras.Sequential([keras.Input(shape=(16,)), layers.Dense(16, activation="relu"),
                                      layers.Dense(1)], name="discriminator")
    generator = keras.Sequential([keras.Input(shape=(latent_dim,)), layers.Dense(16, activation="relu"),
                                  layers.Dense(16, activation="sigmoid")], name="generator")

    class GAN(keras.Model):
        def __init__(self, discriminator, generator, latent_dim):
            super().__init__()
            self.discriminator = discriminator
            self.generator = generator
            self.latent_dim = latent_dim
            self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
            self.g_loss_tracker = keras.metrics.Mean(name="g_loss")

        @property
        def metrics(self):
            return [self.d_loss_tracker, self.g_loss_tracker]

        def compile(self, d_optimizer, g_optimizer, loss_fn):
            super().compile()
            self.d_optimizer = d_optimizer
            self.g_optimizer = g_optimizer
            self.loss_fn = loss_fn

        def train_step(self, real_images):
            if isinstance(real_images, tuple):
                real_images = real_images[0]
            batch_size = real_images.shape[0]
            random_latent_vectors = keras.random.normal(shape=(batch_size, self.latent_dim))
            generated_images = self.generator(random_latent_vectors)
            combined_images = ops.concatenate([generated_images, keras.ops.convert_to_tensor(real_images)], axis=0)
            labels = ops.concatenate([ops.ones((batch_size, 1)), ops.zeros((batch_size, 1))], axis=0)
            labels += 0.05 * keras.random.uniform(labels.shape)
            with keras.GradientTape() as tape:
                predictions = self.discriminator(combined_images)
                d_loss = self.loss_fn(labels, predictions)
            grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
            self.d_optimizer.apply(grads, self.discriminator.trainable_weights)
            random_latent_vectors = keras.random.normal(shape=(batch_size, self.latent_dim))
            misleading_labels = ops.zeros((batch_size, 1))
            with keras.GradientTape() as tape:
                predictions = self.discriminator(self.generator(random_latent_vectors))
                g_loss = self.loss_fn(misleading_labels, predictions)
            grads = tape.gradient(g_loss, self.generator.trainable_weights)
            self.g_optimizer.apply(grads, self.generator.trainable_weights)
            self.d_loss_tracker.update_state(d_loss)
            self.g_loss_tracker.update_state(g_loss)
            return {"d_loss": self.d_loss_tracker.result(), "g_loss": self.g_loss_tracker.result()}

    images = np.random.default_rng(0).random((64, 16)).astype(np.float32)
    dataset = [images[i:i + 16] for i in range(0, 64, 16)]   # batches of images alone
    gan = GAN(discriminator=discriminator, generator=generator, latent_dim=latent_dim)
    gan.compile(d_optimizer=keras.optimizers.Adam(learning_rate=0.0003),
                g_optimizer=keras.optimizers.Adam(learning_rate=0.0003),
                loss_fn=keras.losses.BinaryCrossentropy(from_logits=True))
    d_before, g_before = discriminator.get_weights(), generator.get_weights()
    h = gan.fit(iter(dataset), epochs=1, verbose=0)
    assert set(h.history) == {"d_loss", "g_loss"}
    assert gan.d_optimizer.iterations == 4 and gan.g_optimizer.iterations == 4
    assert all(np.any(a != b) for a, b in zip(d_before, discriminator.get_weights()))
    assert all(np.any(a != b) for a, b in zip(g_before, generator.get_weights()))


def test_compute_loss_override_from_the_keras_docstring():
    """Keras's Trainer.compute_loss example: an override with its own
    tracker, reset_metrics and metrics overridden; fit's built-in
    train_step calls it inside the tape and trains through it."""

    class MyModel(keras.Model):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.loss_tracker = keras.metrics.Mean(name="loss")

        def compute_loss(self, x, y, y_pred, sample_weight, training=True):
            loss = ops.mean((y_pred - y) ** 2)
            loss += ops.sum(self.losses) if self.losses else 0.0
            self.loss_tracker.update_state(loss)
            return loss

        def reset_metrics(self):
            self.loss_tracker.reset_state()

        @property
        def metrics(self):
            return [self.loss_tracker]

    x, y = _data(d=10)
    model = _functional(MyModel, d=10)
    model.compile(keras.optimizers.SGD(0.1), loss="mse")
    # the metric update reads the loss's value: the traced step cannot be
    # frozen, so fit says so and trains eagerly through the override
    with pytest.warns(RuntimeWarning, match="eager path .* reads a tensor's value"):
        h = model.fit(x, y, epochs=4, verbose=0)
    assert "compute_loss" in model.eager_reason
    assert set(h.history) == {"loss"}
    assert h.history["loss"][-1] < 0.5 * h.history["loss"][0]
    assert model.loss_tracker.count == 8


def test_compute_loss_override_without_training_argument():
    """Overrides written before Keras 3.3 have no ``training`` argument;
    maas calls them without it, as Keras does. fit traces the step once per
    batch shape (the plan replays it without calling Python, as a
    tf.function does); evaluate calls it on every batch."""
    calls = []

    class MyModel(keras.Model):
        def compute_loss(self, x, y, y_pred, sample_weight, allow_empty=False):
            calls.append(x is not None)
            return keras.losses.MeanSquaredError()(y, y_pred, sample_weight)

    x, y = _data(n=64, d=4)
    model = _functional(MyModel, d=4)
    model.compile("sgd", loss="mse")
    model.fit(x, y, epochs=1, verbose=0)
    assert calls == [True] and model._plan.traced_shapes() == 1
    model.evaluate(x, y, verbose=0)
    assert calls == [True] * 3


def test_compute_metrics_override_adds_a_metric():
    """Keras's compute_metrics example: super() updates the compiled metrics
    and returns all results; the override adds its own."""

    class MyModel(keras.Sequential):
        def compute_metrics(self, x, y, y_pred, sample_weight):
            metric_results = super().compute_metrics(x, y, y_pred, sample_weight)
            metric_results["pred_mean"] = float(np.mean(np.asarray(y_pred)))
            return metric_results

    x, y = _data(n=64, d=4)
    model = MyModel([keras.Input((4,)), layers.Dense(1)])
    model.compile("sgd", loss="mse", metrics=["mae"])
    h = model.fit(x, y, epochs=2, verbose=0)
    assert set(h.history) == {"loss", "mae", "pred_mean"}
    logs = model.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    assert logs["pred_mean"] == pytest.approx(float(model.predict(x, verbose=0).mean()), rel=1e-5)


def test_predict_step_override():
    class MyModel(keras.Model):
        def predict_step(self, data):
            x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
            return {"value": self(x, training=False), "doubled": 2 * self(x, training=False)}

    x, _ = _data(n=40, d=4)
    model = _functional(MyModel, d=4)
    out = model.predict(x, batch_size=16, verbose=0)
    assert set(out) == {"value", "doubled"} and out["value"].shape == (40, 1)
    np.testing.assert_allclose(out["doubled"], 2 * out["value"], rtol=1e-6)


def test_pack_and_unpack_x_y_sample_weight():
    x, y, sw = np.ones((2, 3)), np.zeros(2), np.ones(2)
    assert keras.utils.pack_x_y_sample_weight(x) is x
    assert keras.utils.pack_x_y_sample_weight([x, x]) == ([x, x],)
    assert keras.utils.pack_x_y_sample_weight(x, y) == (x, y)
    assert keras.utils.pack_x_y_sample_weight(x, y, sw) == (x, y, sw)
    assert keras.utils.unpack_x_y_sample_weight(x)[0] is x
    assert keras.utils.unpack_x_y_sample_weight((x,)) == (x, None, None)
    assert keras.utils.unpack_x_y_sample_weight([x, y]) == (x, y, None)
    assert keras.utils.unpack_x_y_sample_weight((x, y, sw)) == (x, y, sw)
    with pytest.raises(ValueError, match=r"Data is expected to be in format `x`, `\(x,\)`"):
        keras.utils.unpack_x_y_sample_weight((x, y, sw, sw))


# -- "Making new layers and models via subclassing"
class Linear(keras.layers.Layer):
    """The guide's Linear, with weights built lazily and no compute_output_shape."""

    def __init__(self, units=32, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units), initializer="random_normal",
                                 trainable=True)
        self.b = self.add_weight(shape=(self.units,), initializer="random_normal", trainable=True)

    def call(self, inputs):
        return ops.matmul(inputs, self.w) + self.b


def test_custom_layer_without_compute_output_shape_in_functional_and_sequential():
    """Keras infers a custom layer's output shape by running call()
    symbolically; maas runs call() once on a batch of 2 zeros, so the guide's
    layers go into functional and Sequential models without
    compute_output_shape."""
    inputs = keras.Input(shape=(16,))
    h = Linear(32)(inputs)
    assert h.shape == (None, 32)
    outputs = keras.layers.Dense(1)(keras.layers.Activation("relu")(h))
    model = keras.Model(inputs, outputs)
    seq = keras.Sequential([keras.Input((16,)), Linear(8), Linear(1)])
    assert seq.output.shape == (None, 1) and seq.count_params() == 16 * 8 + 8 + 8 + 1
    x, y = _data(n=128, d=16)
    for m in (model, seq):
        m.compile("adam", "mse")
        h = m.fit(x, y, epochs=3, verbose=0)
        assert h.history["loss"][-1] < h.history["loss"][0]
        assert m.predict(x, verbose=0).shape == (128, 1)


def test_subclassed_model_and_guide_mlp_block_as_layers_of_a_functional_model():
    class MLPBlock(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.linear_1 = Linear(32)
            self.linear_2 = Linear(32)
            self.linear_3 = Linear(1)

        def call(self, inputs):
            x = self.linear_1(inputs)
            x = ops.relu(x)
            x = self.linear_2(x)
            x = ops.relu(x)
            return self.linear_3(x)

    class Inner(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(5)

        def call(self, x, training=False):
            return self.d(x)

    inputs = keras.Input((64,))
    block = MLPBlock()
    out = block(Inner()(inputs))
    assert out.shape == (None, 1)
    assert len(block.weights) == 6 and len(block.trainable_weights) == 6
    model = keras.Model(inputs, out)
    x = np.random.default_rng(0).random((3, 64)).astype(np.float32)
    assert model.predict(x, verbose=0).shape == (3, 1)
    assert len(model.trainable_weights) == 8


def test_output_shape_inference_of_unknown_dims_and_several_outputs():
    class SumSteps(keras.layers.Layer):
        def call(self, x):
            return ops.sum(x, axis=1)

    class Twice(keras.layers.Layer):
        def call(self, x):
            return x, ops.concatenate([x, x], axis=1)

    seq_in = keras.Input(shape=(None, 4))
    assert SumSteps()(seq_in).shape == (None, 4)
    a, b = Twice()(seq_in)
    assert a.shape == (None, None, 4) and b.shape == (None, None, 4)
    a, b = Twice()(keras.Input(shape=(3, 4)))
    assert a.shape == (None, 3, 4) and b.shape == (None, 6, 4)

    class Broken(keras.layers.Layer):
        def call(self, x):
            return ops.matmul(x, np.ones((5, 2), np.float32))

    with pytest.raises(ValueError, match=r"could not be called on a symbolic input.*shape \(2, 4\).*"
                                         r"Define compute_output_shape"):
        Broken()(keras.Input(shape=(4,)))


def test_add_loss_guide_outer_layer_losses_reset_each_call():
    class ActivityRegularizationLayer(keras.layers.Layer):
        def __init__(self, rate=1e-2):
            super().__init__()
            self.rate = rate

        def call(self, inputs):
            self.add_loss(self.rate * ops.mean(inputs))
            return inputs

    class OuterLayer(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.activity_reg = ActivityRegularizationLayer(1e-2)

        def call(self, inputs):
            return self.activity_reg(inputs)

    layer = OuterLayer()
    assert len(layer.losses) == 0
    _ = layer(ops.ones((1, 1)))
    assert len(layer.losses) == 1
    _ = layer(ops.ones((1, 1)))
    assert len(layer.losses) == 1
    assert float(layer.losses[0]) == pytest.approx(1e-2)

    class OuterLayerWithKernelRegularizer(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(32, kernel_regularizer=keras.regularizers.l2(1e-3))

        def call(self, inputs):
            return self.dense(inputs)

    layer = OuterLayerWithKernelRegularizer()
    _ = layer(ops.zeros((1, 1)))
    k = np.asarray(layer.dense.kernel, np.float64)
    assert len(layer.losses) == 1
    assert float(layer.losses[0]) == pytest.approx(1e-3 * (k ** 2).sum(), rel=1e-5)


def test_add_loss_is_added_to_the_training_loss_and_trains_without_a_compiled_loss():
    """The guide: add_loss losses are summed into the compiled loss; with no
    loss in compile they are the loss. Checked against float64 NumPy."""
    class ActivityRegularizationLayer(keras.layers.Layer):
        def __init__(self, rate=1e-2):
            super().__init__()
            self.rate = rate

        def call(self, inputs):
            self.add_loss(self.rate * ops.mean(inputs))
            return inputs

    inputs = keras.Input(shape=(3,))
    h = keras.layers.Dense(3)(inputs)
    outputs = ActivityRegularizationLayer(rate=0.5)(h)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    x, y = rng.random((8, 3)).astype(np.float32), rng.random((8, 3)).astype(np.float32)
    model.compile(optimizer="adam", loss="mse")
    p = model.predict(x, verbose=0).astype(np.float64)
    expected = ((p - y) ** 2).mean() + 0.5 * p.mean()
    assert model.evaluate(x, y, batch_size=8, verbose=0) == pytest.approx(expected, rel=1e-5)
    model.fit(x, y, verbose=0)
    assert model.eager_reason is None and model._plan.traced_shapes() == 1  # add_loss is traced

    model.compile(optimizer=keras.optimizers.SGD(0.1))   # no loss: add_loss's is the loss
    before = float(model.predict(x, verbose=0).mean())
    h = model.fit(x, y, epochs=5, batch_size=8, verbose=0)
    assert h.history["loss"][0] == pytest.approx(0.5 * before, rel=1e-5)
    assert h.history["loss"][-1] < h.history["loss"][0]
    model.fit(x, epochs=1, verbose=0)   # nor labels


def test_activity_regularizer_is_in_model_losses_and_the_training_loss():
    inputs = keras.Input(shape=(4,))
    outputs = keras.layers.Dense(2, activity_regularizer=keras.regularizers.L1(0.1))(inputs)
    model = keras.Model(inputs, outputs)
    model.compile("sgd", "mse")
    x, y = np.ones((4, 4), np.float32), np.zeros((4, 2), np.float32)
    p = model.predict(x, verbose=0).astype(np.float64)
    model(x)
    assert len(model.losses) == 1
    # Keras 3 divides the activity loss by the batch size
    assert float(model.losses[0]) == pytest.approx(0.1 * np.abs(p).sum() / 4, rel=1e-5)
    assert model.evaluate(x, y, verbose=0) == pytest.approx(
        (p ** 2).mean() + 0.1 * np.abs(p).sum() / 4, rel=1e-5)


def test_guide_non_trainable_weight_and_linear_with_input_dim():
    class ComputeSum(keras.layers.Layer):
        def __init__(self, input_dim):
            super().__init__()
            self.total = self.add_weight(initializer="zeros", shape=(input_dim,), trainable=False)

        def call(self, inputs):
            self.total.assign_add(ops.sum(inputs, axis=0))
            return self.total

    my_sum = ComputeSum(2)
    my_sum(ops.ones((2, 2)))
    y = my_sum(ops.ones((2, 2)))
    np.testing.assert_array_equal(np.asarray(y), [4.0, 4.0])
    assert len(my_sum.weights) == 1 and len(my_sum.non_trainable_weights) == 1
    assert my_sum.trainable_weights == []

    class LinearInit(keras.layers.Layer):
        def __init__(self, units=32, input_dim=32):
            super().__init__()
            self.w = self.add_weight(shape=(input_dim, units), initializer="random_normal",
                                     trainable=True)
            self.b = self.add_weight(shape=(units,), initializer="zeros", trainable=True)

        def call(self, inputs):
            return ops.matmul(inputs, self.w) + self.b

    linear_layer = LinearInit(4, 2)
    assert linear_layer(ops.ones((2, 2))).shape == (2, 4)
    assert linear_layer.weights == [linear_layer.w, linear_layer.b]


def test_metric_attributes_are_tracked_and_reset():
    """Keras tracks Metric objects assigned as attributes: they are in
    model.metrics (after the compiled ones) and fit resets them."""
    class M(keras.Model):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.seen = keras.metrics.Sum(name="seen")

        def train_step(self, data):
            x, y = data
            self.seen.update_state(np.ones(len(x)))
            return super().train_step(data) | {"seen": self.seen.result()}

    inputs = keras.Input((4,))
    model = M(inputs, keras.layers.Dense(1)(inputs))
    model.compile("sgd", "mse")
    assert model.metrics[-1] is model.seen
    x, y = _data(n=48, d=4)
    h = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert h.history["seen"] == [48.0, 48.0]


# -- "The Functional API"
def _dict_model():
    inputs = keras.Input(shape=(6,), name="features")
    h = keras.layers.Dense(8, activation="relu")(inputs)
    priority = keras.layers.Dense(1, activation="sigmoid", name="priority_head")(h)
    department = keras.layers.Dense(3, activation="softmax", name="department_head")(h)
    return keras.Model(inputs=inputs, outputs={"priority": priority, "department": department})


def _dict_data(n=64):
    rng = np.random.default_rng(0)
    x = rng.random((n, 6)).astype(np.float32)
    return x, {"priority": (x[:, 0] > 0.5).astype(np.float32).reshape(-1, 1),
               "department": rng.integers(0, 3, n)}


def test_dict_outputs_predict_returns_a_dict():
    model = _dict_model()
    x, _ = _dict_data()
    out = model.predict(x, batch_size=16, verbose=0)
    assert isinstance(out, dict) and set(out) == {"priority", "department"}
    assert out["priority"].shape == (64, 1) and out["department"].shape == (64, 3)
    direct = model(x)
    np.testing.assert_allclose(np.asarray(direct["department"]), out["department"], rtol=1e-6)
    assert model.output_names == ["priority", "department"]


def test_dict_outputs_compile_fit_evaluate_with_losses_weights_and_metrics_by_name():
    """Losses, loss_weights and metrics keyed by output name, logs named as
    Keras names them, and the total loss equal to the weighted sum (float64
    NumPy reference)."""
    model = _dict_model()
    x, y = _dict_data()
    model.compile(optimizer=keras.optimizers.RMSprop(1e-3),
                  loss={"priority": keras.losses.BinaryCrossentropy(),
                        "department": keras.losses.SparseCategoricalCrossentropy()},
                  loss_weights={"priority": 1.0, "department": 0.2},
                  metrics={"priority": ["accuracy"], "department": ["accuracy"]})
    h = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert set(h.history) == {"loss", "priority_loss", "department_loss", "priority_accuracy",
                              "department_accuracy"}
    assert model.eager_reason is None and model._plan.traced_shapes() >= 1  # traced, not eager
    logs = model.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    p = model.predict(x, verbose=0)
    pp = np.clip(p["priority"].astype(np.float64), 1e-7, 1 - 1e-7)
    bce = -(y["priority"] * np.log(pp) + (1 - y["priority"]) * np.log(1 - pp)).mean()
    pd = np.clip(p["department"].astype(np.float64), 1e-7, 1)
    scce = -np.log(pd[np.arange(64), y["department"]]).mean()
    assert logs["priority_loss"] == pytest.approx(bce, rel=1e-4)
    assert logs["department_loss"] == pytest.approx(scce, rel=1e-4)
    assert logs["loss"] == pytest.approx(bce + 0.2 * scce, rel=1e-4)
    assert logs["department_accuracy"] == pytest.approx(
        (p["department"].argmax(1) == y["department"]).mean())
    assert logs["priority_accuracy"] == pytest.approx(
        ((p["priority"] > 0.5) == (y["priority"] > 0.5)).mean())


def test_dict_outputs_unknown_names_are_errors():
    model = _dict_model()
    x, y = _dict_data()
    model.compile("adam", loss={"priority": "binary_crossentropy", "dept": "mse"})
    with pytest.raises(ValueError, match=r"names outputs \['dept'\].*\['priority', 'department'\]"):
        model.fit(x, y, verbose=0)


def test_functional_guide_multi_input_multi_output_model():
    """The guide's ticket model: three named inputs, a dict of two outputs,
    losses as a list (maas pairs it with the outputs in the dict's order) and then as a dict,
    fit on dicts of arrays. maas differs in the feature extractors: Dense
    layers stand for the guide's Embedding + LSTM."""
    num_tags, num_departments = 12, 4
    title_input = keras.Input(shape=(10,), name="title")
    body_input = keras.Input(shape=(20,), name="body")
    tags_input = keras.Input(shape=(num_tags,), name="tags")
    title_features = layers.Dense(16, activation="relu")(title_input)
    body_features = layers.Dense(8, activation="relu")(body_input)
    x = layers.concatenate([title_features, body_features, tags_input])
    priority_pred = layers.Dense(1, name="priority")(x)
    department_pred = layers.Dense(num_departments, name="department")(x)
    model = keras.Model(inputs=[title_input, body_input, tags_input],
                        outputs={"priority": priority_pred, "department": department_pred})
    rng = np.random.default_rng(0)
    title_data = rng.random((128, 10)).astype(np.float32)
    body_data = rng.random((128, 20)).astype(np.float32)
    tags_data = rng.integers(0, 2, size=(128, num_tags)).astype("float32")
    priority_targets = rng.random((128, 1)).astype(np.float32)
    dept_targets = rng.integers(0, 2, size=(128, num_departments)).astype("float32")
    model.compile(optimizer=keras.optimizers.RMSprop(1e-3),
                  loss=[keras.losses.BinaryCrossentropy(from_logits=True),
                        keras.losses.CategoricalCrossentropy(from_logits=True)],
                  loss_weights=[1.0, 0.2])
    h = model.fit({"title": title_data, "body": body_data, "tags": tags_data},
                  {"priority": priority_targets, "department": dept_targets},
                  epochs=2, batch_size=32, verbose=0)
    assert set(h.history) == {"loss", "priority_loss", "department_loss"}
    np.testing.assert_allclose(h.history["loss"][-1], h.history["priority_loss"][-1]
                               + 0.2 * h.history["department_loss"][-1], rtol=1e-4)
    model.compile(optimizer=keras.optimizers.RMSprop(1e-3),
                  loss={"priority": keras.losses.BinaryCrossentropy(from_logits=True),
                        "department": keras.losses.CategoricalCrossentropy(from_logits=True)},
                  loss_weights={"priority": 1.0, "department": 0.2})
    h2 = model.fit({"title": title_data, "body": body_data, "tags": tags_data},
                   {"priority": priority_targets, "department": dept_targets},
                   epochs=2, batch_size=32, verbose=0)
    assert h2.history["loss"][-1] < h.history["loss"][0]
    out = model.predict({"title": title_data, "body": body_data, "tags": tags_data}, verbose=0)
    assert out["priority"].shape == (128, 1) and out["department"].shape == (128, 4)


def test_dict_inputs_by_key_and_by_input_name():
    a, b = keras.Input((2,), name="a"), keras.Input((3,), name="b")
    out = layers.Dense(1)(layers.concatenate([a, b]))
    x = {"a": np.ones((4, 2), np.float32), "b": np.arange(12, dtype=np.float32).reshape(4, 3)}
    by_name = keras.Model([a, b], out)
    by_key = keras.Model({"first": a, "second": b}, out)
    ref = np.asarray(by_name([x["a"], x["b"]]))
    np.testing.assert_allclose(np.asarray(by_name(x)), ref, rtol=1e-6)
    xk = {"second": x["b"], "first": x["a"]}
    np.testing.assert_allclose(by_key.predict(xk, verbose=0), ref, rtol=1e-6)
    by_key.compile("sgd", "mse")
    assert by_key.evaluate(xk, np.zeros((4, 1)), verbose=0) == pytest.approx((ref ** 2).mean(), rel=1e-5)
    with pytest.raises(ValueError, match=r"expects inputs named \['first', 'second'\]; the dict passed "
                                         r"has no \['second'\]"):
        by_key({"first": x["a"]})


def test_subclassed_model_returning_a_dict_is_compiled_by_its_keys():
    class TwoHeads(keras.Model):
        def __init__(self):
            super().__init__()
            self.body = layers.Dense(8, activation="relu")
            self.a = layers.Dense(1)
            self.b = layers.Dense(2)

        def call(self, x):
            h = self.body(x)
            return {"a": self.a(h), "b": self.b(h)}

    x, y = _data(n=64, d=4, out=3)
    model = TwoHeads()
    model.compile("adam", loss={"a": "mse", "b": "mse"}, metrics={"b": ["mae"]})
    h = model.fit(x, {"a": y[:, :1], "b": y[:, 1:]}, epochs=2, verbose=0)
    assert set(h.history) == {"loss", "a_loss", "b_loss", "b_mae"}


def test_subclassing_guide_vae_trains_with_fit_and_a_hand_written_loop():
    """The guide's VAE: nested custom layers, a tuple passed to a layer, a
    Model whose call() adds the KL loss; trained by hand (loss +=
    sum(vae.losses)) and by fit(x, x). maas differs in the random draw:
    keras.random.normal stands for the guide's keras.backend.random_normal."""
    class Sampling(layers.Layer):
        def call(self, inputs):
            z_mean, z_log_var = inputs
            batch, dim = z_mean.shape[0], z_mean.shape[1]
            epsilon = keras.random.normal(shape=(batch, dim))
            return z_mean + ops.exp(0.5 * z_log_var) * epsilon

    class Encoder(layers.Layer):
        def __init__(self, latent_dim=32, intermediate_dim=64, name="encoder", **kwargs):
            super().__init__(name=name, **kwargs)
            self.dense_proj = layers.Dense(intermediate_dim, activation="relu")
            self.dense_mean = layers.Dense(latent_dim)
            self.dense_log_var = layers.Dense(latent_dim)
            self.sampling = Sampling()

        def call(self, inputs):
            x = self.dense_proj(inputs)
            z_mean = self.dense_mean(x)
            z_log_var = self.dense_log_var(x)
            z = self.sampling((z_mean, z_log_var))
            return z_mean, z_log_var, z

    class Decoder(layers.Layer):
        def __init__(self, original_dim, intermediate_dim=64, name="decoder", **kwargs):
            super().__init__(name=name, **kwargs)
            self.dense_proj = layers.Dense(intermediate_dim, activation="relu")
            self.dense_output = layers.Dense(original_dim, activation="sigmoid")

        def call(self, inputs):
            return self.dense_output(self.dense_proj(inputs))

    class VariationalAutoEncoder(keras.Model):
        def __init__(self, original_dim, intermediate_dim=64, latent_dim=32, name="autoencoder",
                     **kwargs):
            super().__init__(name=name, **kwargs)
            self.original_dim = original_dim
            self.encoder = Encoder(latent_dim=latent_dim, intermediate_dim=intermediate_dim)
            self.decoder = Decoder(original_dim, intermediate_dim=intermediate_dim)

        def call(self, inputs):
            z_mean, z_log_var, z = self.encoder(inputs)
            reconstructed = self.decoder(z)
            kl_loss = -0.5 * ops.mean(z_log_var - ops.square(z_mean) - ops.exp(z_log_var) + 1)
            self.add_loss(kl_loss)
            return reconstructed

    x_train = np.random.default_rng(0).random((256, 24)).astype("float32")
    vae = VariationalAutoEncoder(24, 16, 4)
    optimizer = keras.optimizers.Adam(learning_rate=1e-3)
    mse_loss_fn = keras.losses.MeanSquaredError()
    losses = []
    for step in range(0, 256, 64):
        x_batch_train = x_train[step:step + 64]
        with keras.GradientTape() as tape:
            reconstructed = vae(x_batch_train)
            loss = mse_loss_fn(x_batch_train, reconstructed)
            loss += sum(vae.losses)
        assert len(vae.losses) == 1
        grads = tape.gradient(loss, vae.trainable_weights)
        optimizer.apply_gradients(zip(grads, vae.trainable_weights))
        losses.append(float(loss))
    assert all(np.isfinite(losses))

    vae = VariationalAutoEncoder(24, 16, 4)
    vae.compile(keras.optimizers.Adam(learning_rate=1e-2), loss=keras.losses.MeanSquaredError())
    h = vae.fit(x_train, x_train, epochs=4, batch_size=64, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    assert vae.eager_reason is None and vae._plan.traced_shapes() == 1  # random.normal is traced
    # the KL term is in fit's loss: it is larger than the reconstruction error alone
    z_mean, z_log_var, _ = vae.encoder(x_train)
    zm, zl = np.asarray(z_mean, np.float64), np.asarray(z_log_var, np.float64)
    kl = -0.5 * np.mean(zl - zm ** 2 - np.exp(zl) + 1)
    assert kl > 0
    total = vae.evaluate(x_train, x_train, batch_size=256, verbose=0)
    recon = float(np.mean((np.asarray(vae.decoder(z_mean)) - x_train) ** 2))
    assert total > recon + 0.5 * kl


def test_explicit_training_true_in_a_graph_is_monte_carlo_dropout():
    """layer(x, training=True) when building the graph keeps dropout on at
    inference (Monte-Carlo dropout), as in Keras; a plain Dropout stays off."""
    inputs = keras.Input(shape=(200,))
    mc = keras.layers.Dropout(0.5)(inputs, training=True)
    mc_model = keras.Model(inputs, mc)
    plain_model = keras.Model(inputs, keras.layers.Dropout(0.5)(inputs))
    x = np.ones((4, 200), np.float32)
    a, b = mc_model.predict(x, verbose=0), mc_model.predict(x, verbose=0)
    assert set(np.unique(a)) == {0.0, 2.0} and np.any(a != b)
    assert 0.35 < (a == 0).mean() < 0.65
    np.testing.assert_array_equal(plain_model.predict(x, verbose=0), x)
    off = keras.layers.Dropout(0.5)
    off_model = keras.Model(inputs, off(inputs, training=False))
    np.testing.assert_array_equal(np.asarray(off_model(x, training=True)), x)
    cfg = mc_model.get_config()
    rebuilt = keras.Model.from_config(cfg)
    assert np.any(rebuilt.predict(x, verbose=0) == 0)


def test_transfer_learning_idiom_model_from_base_input_and_inner_output():
    """Model(base.input, base.layers[-2].output) builds and trains; model.input,
    .output, .inputs and .outputs are the graph's tensors."""
    base = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                             keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    assert base.input is base.inputs[0] and base.output is base.outputs[0]
    assert base.output.shape == (None, 3)
    features = keras.Model(base.input, base.layers[-2].output)
    assert features.output.shape == (None, 8) and features.layers[1] is base.layers[0]
    x = np.random.default_rng(0).random((32, 8)).astype(np.float32)
    np.testing.assert_allclose(features.predict(x, verbose=0),
                               np.asarray(base.layers[1](base.layers[0](x))), rtol=1e-6)
    base.trainable = False
    head = keras.layers.Dense(1)(features.output)
    model = keras.Model(features.input, head)
    model.compile("adam", "mse")
    before = [w.copy() for w in base.get_weights()]
    h = model.fit(x, x[:, :1], epochs=3, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    for a, b in zip(before, base.get_weights()):
        np.testing.assert_array_equal(a, b)
    extractor = keras.Model(inputs=base.inputs, outputs=[layer.output for layer in base.layers])
    assert [o.shape for o in extractor.predict(x, verbose=0)] == [(32, 16), (32, 8), (32, 3)]

    lazy = keras.Sequential([keras.layers.Dense(4), keras.layers.Dense(2)])
    lazy(np.ones((1, 5), np.float32))   # built on first call: then it has an input
    assert lazy.input.shape == (None, 5) and lazy.output.shape == (None, 2)


def test_callback_hooks_always_get_a_logs_dict():
    seen = []

    class Recorder(keras.callbacks.Callback):
        def _rec(self, name, logs):
            seen.append((name, type(logs)))

        def on_train_begin(self, logs=None): self._rec("train_begin", logs)
        def on_epoch_begin(self, epoch, logs=None): self._rec("epoch_begin", logs)
        def on_train_batch_begin(self, batch, logs=None): self._rec("batch_begin", logs)
        def on_test_begin(self, logs=None): self._rec("test_begin", logs)
        def on_test_batch_begin(self, batch, logs=None): self._rec("test_batch_begin", logs)
        def on_predict_begin(self, logs=None): self._rec("predict_begin", logs)
        def on_predict_end(self, logs=None): self._rec("predict_end", logs)
        def on_predict_batch_begin(self, batch, logs=None): self._rec("predict_batch_begin", logs)

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x, y = _data(n=16, d=4)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[Recorder()], validation_data=(x, y))
    model.evaluate(x, y, verbose=0, callbacks=[Recorder()])
    model.predict(x, verbose=0, callbacks=[Recorder()])
    names = {n for n, _ in seen}
    assert names == {"train_begin", "epoch_begin", "batch_begin", "test_begin", "test_batch_begin",
                     "predict_begin", "predict_end", "predict_batch_begin"}
    assert {t for _, t in seen} == {dict}
    cb = keras.callbacks.CallbackList([Recorder()])
    seen.clear()
    cb.on_epoch_begin(0)
    cb.on_train_begin(None)
    assert [t for _, t in seen] == [dict, dict]


@pytest.mark.parametrize("loss,activation", [("binary_crossentropy", "sigmoid"), ("mse", None)])
@pytest.mark.parametrize("run_eagerly", [False, True])
def test_labels_of_shape_n_against_outputs_n_1(loss, activation, run_eagerly):
    """y of shape (n,) against outputs (n, 1) trains exactly as y of shape
    (n, 1), on the plan and on the eager path (Keras expands the labels)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    hists = []
    for labels in (y, y.reshape(-1, 1)):
        keras.utils.set_random_seed(0)
        keras.utils.clear_session()
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation=activation)])
        model.compile("adam", loss, metrics=["accuracy"], run_eagerly=run_eagerly)
        hists.append(model.fit(x, labels, epochs=2, batch_size=16, verbose=0).history)
        p = model.predict(x, verbose=0).astype(np.float64)[:, 0]
        if loss == "mse":
            ref = ((p - y) ** 2).mean()
        else:
            pc = np.clip(p, 1e-7, 1 - 1e-7)
            ref = -(y * np.log(pc) + (1 - y) * np.log(1 - pc)).mean()
        assert model.evaluate(x, labels, batch_size=64, verbose=0)[0] == pytest.approx(ref, rel=1e-5)
    assert hists[0] == hists[1]


def test_dropout_noise_shape_broadcasts_one_mask():
    """Dropout(noise_shape=(None, 1, F)): one mask per (sample, feature),
    constant along the broadcast axis, values 0 or 1/(1-rate)."""
    layer = keras.layers.Dropout(0.25, noise_shape=(None, 1, 64))
    x = np.ones((8, 5, 64), np.float32) * np.arange(1, 6, dtype=np.float32)[None, :, None]
    out = np.asarray(layer(x, training=True))
    mask = out / x
    np.testing.assert_allclose(mask, np.broadcast_to(mask[:, :1, :], mask.shape), rtol=1e-6)
    np.testing.assert_allclose(np.unique(mask), [0.0, 1 / 0.75], rtol=1e-6)
    assert 0.15 < (mask[:, 0, :] == 0).mean() < 0.35
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    # gradients flow through the mask: d(sum(out))/dx is the mask
    xt = keras.Variable(x)
    seeded = keras.layers.Dropout(0.5, noise_shape=(None, 1, 64), seed=3)
    with keras.GradientTape() as tape:
        out = seeded(xt, training=True)
        total = ops.sum(out)
    g = np.asarray(tape.gradient(total, xt))
    np.testing.assert_allclose(g * x, np.asarray(out), rtol=1e-6)
    np.testing.assert_allclose(g, np.broadcast_to(g[:, :1, :], g.shape))
    model = keras.Sequential([keras.Input((5, 64)), keras.layers.Dropout(0.5, noise_shape=(None, 1, 64)),
                              keras.layers.Flatten(), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    model.fit(x, np.zeros((8, 1), np.float32), verbose=0)
    assert keras.layers.Dropout.from_config(layer.get_config()).noise_shape == (None, 1, 64)
    with pytest.raises(ValueError, match=r"noise_shape=\(None, 2, 64\) does not broadcast"):
        keras.layers.Dropout(0.5, noise_shape=(None, 2, 64))(x, training=True)


def test_fit_before_compile_raises_kerass_value_error():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match=r"You must call `compile\(\)` before using the model"):
        model.fit(np.zeros((4, 4)), np.zeros(4), verbose=0)
    assert issubclass(keras.errors.NotFittedError, ValueError)
