"""int8 input projections of SimpleRNN/LSTM/GRU (maas.quantization.recurrent):
the kernel quantized as Keras quantizes a Dense kernel, the projection of
every step one int8 GEMM within the stated bound, the rest of the layer the
float kernel on that projection bit for bit; save and reload in a new
process bit for bit; a quantized LSTM classifier keeps its accuracy."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import maas
from maas import _core
from maas import quantization as Q
from maas.quantization import recurrent as QR

L = maas.layers
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = {"lstm": lambda **k: L.LSTM(6, **k), "gru": lambda **k: L.GRU(6, **k),
         "gru1": lambda **k: L.GRU(6, reset_after=False, **k),
         "simple": lambda **k: L.SimpleRNN(6, **k)}


def rng(seed):
    return np.random.default_rng(seed)


def built(kind, seed=0, **kw):
    maas.utils.set_random_seed(seed)
    m = maas.Sequential([maas.Input((7, 5)), KINDS[kind](**kw)])
    layer = m.layers[0]
    if layer.bias is not None:
        layer.bias.assign(rng(seed + 1).normal(0, 0.3, layer.bias.shape).astype(np.float32))
    return m, layer


@pytest.mark.parametrize("kind", list(KINDS))
def test_kernel_is_quantized_per_output_channel_and_projection_is_within_the_bound(kind):
    m, layer = built(kind)
    kernel = np.array(layer.kernel)
    x = rng(2).normal(size=(4, 7, 5)).astype(np.float32) * 3
    m.quantize("int8")
    q, scale = Q.quantize_kernel(kernel)
    np.testing.assert_array_equal(QR.int8_recurrent_kernel(layer), q)
    np.testing.assert_array_equal(np.asarray(layer.kernel_scale), scale)
    assert layer.kernel.dtype == "int8" and not layer.kernel_scale.trainable
    got = np.asarray(QR.projection(layer, maas.tensor(x)), np.float64)
    exact = x.astype(np.float64) @ kernel.astype(np.float64)
    bound = QR.projection_error_bound(x, kernel).reshape(got.shape)
    err = np.abs(got - exact)
    assert (err <= bound * 1.0001 + 1e-6).all(), float((err / bound).max())
    assert err.max() > 0   # it is int8 arithmetic, not the float product


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_layer_is_the_float_recurrence_on_the_int8_projection(kind):
    """Everything but the projection stays float32: the quantized layer
    equals the float rnn op fed the int8 projection, bit for bit (masks,
    return_state and go_backwards included)."""
    m, layer = built(kind, 3, return_sequences=True, return_state=True, go_backwards=True)
    x = maas.tensor(rng(4).normal(size=(3, 7, 5)).astype(np.float32))
    mask = np.ones((3, 7), np.float32)
    mask[0, 5:] = 0
    mask[2, :2] = 0
    m.quantize("int8")
    got = layer(x, mask=maas.tensor(mask))
    p = QR.projection(layer, x)
    ins = [p, layer.recurrent_kernel] + ([layer.bias] if layer.bias is not None else []) + \
        [maas.tensor(mask)]
    want = _core.op(_core.OP_RNN, ins, layer._cell, layer._act, layer._ract, 1, 1, 0,
                    int(layer.bias is not None), 1, 0, 0, 0, 0,
                    int(kind == "gru1"), 1)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("kind", ["lstm", "simple"])
def test_one_step_output_error_is_within_the_propagated_bound(kind):
    """One step from zero states: |dh| <= 1 x the projection bound for
    SimpleRNN (tanh is 1-Lipschitz), 1.5 x for LSTM (i, o through sigmoid'
    <= 1/4, g through tanh, h = o tanh(i g))."""
    maas.utils.set_random_seed(5)
    m = maas.Sequential([maas.Input((1, 9)), KINDS[kind]()])
    layer = m.layers[0]
    x = rng(6).normal(size=(64, 1, 9)).astype(np.float32) * 2
    kernel = np.array(layer.kernel)
    before = np.asarray(m(x), np.float64)
    m.quantize("int8")
    after = np.asarray(m(x), np.float64)
    u = layer.units
    bound = QR.projection_error_bound(x, kernel)          # (rows, gates*units)
    per_unit = bound.reshape(len(x), -1, u).max(1)        # the worst gate of each unit
    factor = 1.0 if kind == "simple" else 1.5
    assert (np.abs(after - before) <= factor * per_unit + 1e-6).all()
    assert np.abs(after - before).max() > 0


def test_plan_gives_the_eager_bits_and_fine_tuning_keeps_the_int8_kernel():
    maas.utils.set_random_seed(7)
    x = rng(8).normal(size=(32, 7, 5)).astype(np.float32)
    y = rng(9).normal(size=(32, 1)).astype(np.float32)

    def make():
        maas.utils.set_random_seed(7)
        m = maas.Sequential([maas.Input((7, 5)), L.LSTM(6), L.Dense(1)])
        m(x[:1])
        m.quantize("int8")
        m.compile(optimizer="adam", loss="mse")
        return m
    plan, eager = make(), make()
    eager.run_eagerly = True
    k0 = np.array(plan.layers[0].kernel)
    r0 = np.array(plan.layers[0].recurrent_kernel)
    for m in (plan, eager):
        m.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    assert plan._plan.traced_shapes() >= 1 and plan._plan.eager_reason is None
    for a, b in zip(plan.get_weights(), eager.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.asarray(plan.layers[0].kernel), k0)     # int8 stays
    assert np.abs(np.asarray(plan.layers[0].recurrent_kernel) - r0).max() > 0  # float trains
    np.testing.assert_array_equal(plan.predict(x, verbose=0), np.asarray(eager(x)))


def test_save_and_reload_in_a_new_process_bit_for_bit(tmp_path):
    maas.utils.set_random_seed(10)
    inp = maas.Input((7,), dtype="int32")
    h = L.Embedding(20, 5, mask_zero=True)(inp)
    h = L.Bidirectional(L.GRU(4, return_sequences=True))(h)
    out = L.Dense(2)(L.LSTM(6)(h))
    m = maas.Model(inp, out)
    ids = rng(11).integers(0, 20, (16, 7)).astype(np.int32)
    ids[:4, 5:] = 0
    cal = ids[:8]
    for mode, kw in (("dynamic", {}), ("static", {"calibration_data": cal})):
        q = maas.models.clone_model(m)
        q.set_weights(m.get_weights())
        q.quantize("int8", **kw)
        path = tmp_path / f"{mode}.maas"
        q.save(path)
        want = q.predict(ids, verbose=0)
        np.save(tmp_path / "x.npy", ids)
        code = ("import json, sys, numpy as np, maas; m = maas.load_model(sys.argv[1]); "
                "np.save(sys.argv[2], m.predict(np.load(sys.argv[3]), verbose=0)); "
                "print(json.dumps([w.dtype for w in m.weights]))")
        out = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "y.npy"),
                              str(tmp_path / "x.npy")], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": ROOT}, timeout=300)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout.strip().splitlines()[-1]).count("int8") >= 4   # 3 rnn + Dense (+ Embedding once it has a quantizer)
        np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), want)


def test_a_quantized_lstm_classifier_keeps_its_accuracy():
    """A seeded synthetic task (is the running sum of feature 0 positive at
    the end, with distractor features): the int8 model loses at most 0.5
    points of test accuracy."""
    r = rng(12)
    n, t = 3000, 12
    x = r.normal(size=(n, t, 4)).astype(np.float32)
    y = (x[:, :, 0].sum(1) + 0.5 * x[:, -3:, 1].sum(1) > 0).astype(np.int64)
    maas.utils.set_random_seed(13)
    m = maas.Sequential([maas.Input((t, 4)), L.LSTM(16), L.Dense(2)])
    m.compile(optimizer=maas.optimizers.Adam(0.01),
              loss=maas.losses.SparseCategoricalCrossentropy(from_logits=True))
    m.fit(x[:2000], y[:2000], batch_size=64, epochs=8, verbose=0)
    acc = float(np.mean(m.predict(x[2000:], verbose=0).argmax(1) == y[2000:]))
    q = Q.quantize(m, "int8")
    qacc = float(np.mean(q.predict(x[2000:], verbose=0).argmax(1) == y[2000:]))
    assert acc >= 0.9, acc
    assert qacc >= acc - 0.005, (acc, qacc)


def test_int8_recurrent_layers_refuse_onnx_export_by_name(tmp_path):
    pytest.importorskip("onnx")
    m = maas.Sequential([maas.Input((7, 5)), L.LSTM(4, name="qlstm")])
    m.quantize("int8")
    with pytest.raises(maas.export.ExportError, match="layer 'qlstm'.*int8 input projection"):
        m.export(tmp_path / "q.onnx", format="onnx")
