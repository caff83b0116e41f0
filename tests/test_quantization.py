"""Keras 3's int8 quantization in maas: ``Dense.quantize`` and
``model.quantize`` (dynamic and calibrated static modes), against float32
within the error int8 implies and against PyTorch's quantize_dynamic on the
same weights; accuracy and file size on the digits; saving, reloading in a
new process bit for bit, serving with ``maas serve``, fine-tuning; and the
refusals (unsupported layers, bad modes, files missing their scales)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import maas
from maas import quantization as Q
from maas.errors import ModelFormatError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mlp(n_in=64, hidden=512, n_out=10, seed=0):
    maas.random.set_seed(seed) if hasattr(maas.random, "set_seed") else None
    return maas.Sequential([maas.Input((n_in,)), maas.layers.Dense(hidden, activation="relu"),
                            maas.layers.Dense(hidden, activation="relu"),
                            maas.layers.Dense(n_out, activation="softmax")])


def float_copy(model):
    clone = maas.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


@pytest.fixture(scope="module")
def trained(digits):
    xtr, xte, ytr, yte = digits
    maas.utils.set_random_seed(0) if hasattr(maas.utils, "set_random_seed") else None
    model = mlp()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(xtr, ytr, epochs=8, batch_size=32, verbose=0)
    return model


def _accuracy(model, x, y):
    return float((model.predict(x, verbose=0).argmax(1) == y).mean())


def test_dense_quantize_keras_weights_and_error_bound():
    rng = np.random.default_rng(0)
    layer = maas.layers.Dense(37)
    x = rng.standard_normal((9, 23)).astype(np.float32)
    before = np.asarray(layer(x))
    w, b = np.asarray(layer.kernel).copy(), np.asarray(layer.bias).copy()
    layer.quantize("int8")
    assert [v.name for v in layer.weights] == ["kernel", "bias", "kernel_scale"]
    assert [v.dtype for v in layer.weights] == ["int8", "float32", "float32"]
    assert [v.name for v in layer.trainable_weights] == ["bias"]
    q, s = Q.quantize_kernel(w)
    np.testing.assert_array_equal(Q.int8_kernel(layer), q)
    np.testing.assert_array_equal(np.asarray(layer.kernel_scale), s)
    np.testing.assert_allclose(s, 127 / (np.abs(w).max(0) + 1e-7), rtol=1e-6)
    after = np.asarray(layer(x))
    # each operand is off by at most half an int8 step (absmax / 254)
    hx = np.abs(x).max(1, keepdims=True) / 254.0
    hw = np.abs(w).max(0, keepdims=True) / 254.0
    bound = np.abs(x) @ np.broadcast_to(hw, w.shape) + hx * np.abs(w).sum(0) + hx * hw * 23
    assert (np.abs(after - before) <= bound * 1.001 + 1e-6).all()
    assert np.abs(after - before).max() > 0   # really int8
    with pytest.raises(ValueError, match="already quantized"):
        layer.quantize("int8")


def test_against_torch_quantize_dynamic_same_tolerance():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    w1 = rng.normal(0, 0.2, (64, 128)).astype(np.float32)
    w2 = rng.normal(0, 0.2, (128, 10)).astype(np.float32)
    b1, b2 = rng.normal(0, 0.1, 128).astype(np.float32), rng.normal(0, 0.1, 10).astype(np.float32)
    x = rng.standard_normal((32, 64)).astype(np.float32)
    model = maas.Sequential([maas.Input((64,)), maas.layers.Dense(128, activation="relu"),
                             maas.layers.Dense(10)])
    model.set_weights([w1, b1, w2, b2])
    ref = model.predict(x, verbose=0)
    model.quantize("int8")
    ours = model.predict(x, verbose=0)

    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(w1.T)); net[0].bias.copy_(torch.from_numpy(b1))
        net[2].weight.copy_(torch.from_numpy(w2.T)); net[2].bias.copy_(torch.from_numpy(b2))
        np.testing.assert_allclose(net(torch.from_numpy(x)).numpy(), ref, rtol=1e-4, atol=1e-5)
        qnet = torch.ao.quantization.quantize_dynamic(
            net, {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig},
            dtype=torch.qint8)
        theirs = qnet(torch.from_numpy(x)).numpy()
    # 3% of the output range: int8 error through two layers (PyTorch quantizes the inputs per
    # tensor with 7-bit range on x86, maas per row with 8 bits; both must fit)
    tol = 0.03 * np.abs(ref).max()
    err_ours, err_theirs = np.abs(ours - ref).max(), np.abs(theirs - ref).max()
    assert err_ours <= tol and err_theirs <= tol, (err_ours, err_theirs, tol)
    np.testing.assert_allclose(ours, theirs, atol=2 * tol)


def test_digits_accuracy_size_and_report(trained, digits, tmp_path):
    _, xte, _, yte = digits
    acc = _accuracy(trained, xte, yte)
    quantized = Q.quantize(trained, "int8")
    assert [w.dtype for w in trained.weights][0] == "float32"   # the original is untouched
    qacc = _accuracy(quantized, xte, yte)
    assert acc > 0.9
    assert qacc >= acc - 0.005, (acc, qacc)
    trained.save(tmp_path / "f.maas", include_optimizer=False)
    quantized.save(tmp_path / "q.maas", include_optimizer=False)
    ratio = os.path.getsize(tmp_path / "q.maas") / os.path.getsize(tmp_path / "f.maas")
    assert ratio <= 0.27, ratio
    lines = []
    r = Q.report(trained, quantized, xte, yte, repeats=3, print_fn=lines.append)
    assert r["float32"]["accuracy"] == acc and r["compressed"]["accuracy"] == qacc
    assert r["ratios"]["size"] == pytest.approx(ratio, rel=0.02)
    assert "accuracy" in lines[0] and "latency_ms_batch1" in lines[0]


def test_static_calibration(trained, digits):
    xtr, xte, _, yte = digits
    static = float_copy(trained)
    static.quantize("int8", calibration_data=xtr[:256])
    first = static.layers[0]
    assert first.quantization_config == {"mode": "int8", "activation": "static"}
    assert float(np.asarray(first.input_scale)) == pytest.approx(127 / np.abs(xtr[:256]).max(), rel=1e-6)
    assert _accuracy(static, xte, yte) >= _accuracy(trained, xte, yte) - 0.01


def test_save_reload_in_new_process_bit_for_bit(trained, digits, tmp_path):
    _, xte, _, _ = digits
    for mode, kw in (("dynamic", {}), ("static", {"calibration_data": xte[:64]})):
        q = float_copy(trained)
        q.quantize("int8", **kw)
        path = tmp_path / f"{mode}.maas"
        q.save(path)
        want = q.predict(xte, verbose=0)
        np.save(tmp_path / "x.npy", xte)
        code = ("import maas, numpy as np, sys; m = maas.load_model(sys.argv[1]); "
                "np.save(sys.argv[2], m.predict(np.load(sys.argv[3]), verbose=0)); "
                "print(json.dumps([w.dtype for w in m.weights]))").replace("print(json", "import json; print(json")
        out = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "y.npy"),
                              str(tmp_path / "x.npy")], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": ROOT}, timeout=300)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout.strip().splitlines()[-1])[0] == "int8"
        np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), want)


def test_file_without_scales_is_refused(trained, tmp_path):
    from maas.saving import load_tensors, save_tensors

    q = Q.quantize(trained, "int8")
    q.save(tmp_path / "q.maas")
    tensors, meta = load_tensors(tmp_path / "q.maas")
    name = next(k for k, t in tensors.items() if t.dtype == "int8")
    del tensors[name + "_scale"]
    meta.pop("maas.data_sha256")
    save_tensors(tmp_path / "broken.maas", {k: np.array(v) for k, v in tensors.items()}, meta)
    with pytest.raises(ModelFormatError, match=f"int8 tensor '{name}' has no float32 scales"):
        maas.load_model(tmp_path / "broken.maas")


def test_unsupported_layers_and_modes():
    class Scale(maas.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="w")

        def call(self, x):
            return x * self.w

    model = maas.Sequential([maas.Input((4,)), Scale(name="scale"), maas.layers.Dense(2)])
    with pytest.warns(RuntimeWarning, match=r"layer 'scale' \(Scale\) stays float32: maas has no int8 kernel"):
        model.quantize("int8")
    assert model.layers[1].kernel.dtype == "int8"
    only = maas.Sequential([maas.Input((4,)), Scale(name="scale2")])
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="has no layer to quantize"):
        only.quantize("int8")
    with pytest.raises(ValueError, match=r"Invalid quantization mode.*float8 and int4 are not"):
        mlp(4, 8, 2).quantize("float8")
    with pytest.raises(ValueError, match="not built yet"):
        maas.layers.Dense(3).quantize("int8")


def test_fine_tune_quantized_model_compiled(trained, digits):
    xtr, xte, ytr, yte = digits
    q = Q.quantize(trained, "int8")
    kernel = np.array(q.layers[0].kernel)
    bias = np.array(q.layers[0].bias)
    q.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    before = q.evaluate(xte, yte, verbose=0)
    q.fit(xtr, ytr, epochs=1, batch_size=64, verbose=0)
    assert q.eager_reason is None and q._plan is not None and q._plan.traced_shapes() >= 1
    np.testing.assert_array_equal(np.asarray(q.layers[0].kernel), kernel)   # int8 stays
    assert not np.array_equal(np.asarray(q.layers[0].bias), bias)           # biases train
    assert q.evaluate(xte, yte, verbose=0) < before + 0.05
    # the plan and the eager path give the same bits
    np.testing.assert_array_equal(q.predict(xte[:7], verbose=0), np.asarray(q(xte[:7])))


@pytest.mark.slow
def test_served_by_maas_serve(trained, digits, tmp_path):
    pytest.importorskip("gunicorn")
    requests = pytest.importorskip("requests")
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from serving_fixture import Server

    _, xte, _, _ = digits
    q = Q.quantize(trained, "int8")
    repo = str(tmp_path / "repo")
    maas.saving.save_to_repository(q, repo, "digits_int8", 1)
    want = maas.load_model(os.path.join(repo, "digits_int8", "1", "model.maas")).predict(
        xte[:5], verbose=0)
    s = Server(repo, str(tmp_path))
    try:
        r = requests.post(s.url + "/v1/models/digits_int8:predict",
                          json={"instances": xte[:5].tolist()}, timeout=60)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["predictions"], want, rtol=1e-6, atol=1e-7)
    finally:
        s.stop()
