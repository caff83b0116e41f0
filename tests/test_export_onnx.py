"""model.export(path, format="onnx"): every exported model passes
onnx.checker (full check) and ONNX Runtime gives predict's outputs at batch
1, 7 and 64, for Sequential, functional (several inputs and outputs, dict
outputs) and subclassed models."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import maas  # noqa: E402
from maas import layers as L  # noqa: E402

BATCHES = (1, 7, 64)


def session(path):
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def close(a, b, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def check_single(model, path, features, rtol=1e-5):
    model.export(path, format="onnx")
    s = session(path)
    (inp,) = s.get_inputs()
    assert inp.shape[0] == "batch" and list(inp.shape[1:]) == list(features)
    rng = np.random.default_rng(0)
    for n in BATCHES:
        x = rng.standard_normal((n,) + tuple(features)).astype(np.float32)
        (got,) = s.run(None, {inp.name: x})
        close(got, model.predict(x, verbose=0), rtol=rtol)
    return s


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh", "gelu", "elu", "leaky_relu",
                                        "softplus", "silu", "relu6", "softmax", "log_softmax",
                                        "linear"])
def test_every_activation_exports(tmp_path, activation):
    maas.utils.set_random_seed(1)
    m = maas.Sequential([maas.Input((5,)), L.Dense(8, activation=activation),
                         L.Dense(3, activation=activation)])
    check_single(m, tmp_path / "m.onnx", (5,))


def test_gelu_tanh_dropout_flatten_reshape(tmp_path):
    maas.utils.set_random_seed(2)
    m = maas.Sequential([maas.Input((4, 3)), L.Flatten(), L.Dense(6),
                         L.Activation(lambda x: maas.activations.gelu(x, approximate=True)),
                         L.Dropout(0.5), L.Reshape((2, 3)), L.Flatten(), L.Dense(2)])
    s = check_single(m, tmp_path / "m.onnx", (4, 3))
    ops = {n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    assert "Reshape" in ops and "RandomUniform" not in ops


def test_functional_with_several_inputs_and_outputs(tmp_path):
    maas.utils.set_random_seed(3)
    a, b = maas.Input((4,), name="left"), maas.Input((6,), name="right")
    ha = L.Dense(5, activation="relu", name="ha")(a)
    hb = L.Dense(5, activation="tanh", name="hb")(b)
    added = L.Add()([ha, hb])
    merged = L.Concatenate()([ha, hb, L.Multiply()([ha, hb]), L.Subtract()([ha, hb]),
                              L.Average()([ha, hb]), L.Maximum()([ha, hb]), L.Minimum()([ha, hb])])
    out1 = L.Dense(3, activation="softmax", name="cls")(merged)
    out2 = L.Dense(1, name="reg")(added)
    m = maas.Model([a, b], {"cls": out1, "reg": out2})
    path = tmp_path / "f.onnx"
    m.export(path, format="onnx")
    s = session(path)
    assert [i.name for i in s.get_inputs()] == ["left", "right"]
    assert sorted(o.name for o in s.get_outputs()) == ["cls", "reg"]
    rng = np.random.default_rng(1)
    for n in BATCHES:
        xa = rng.standard_normal((n, 4)).astype(np.float32)
        xb = rng.standard_normal((n, 6)).astype(np.float32)
        got = dict(zip([o.name for o in s.get_outputs()], s.run(None, {"left": xa, "right": xb})))
        want = m.predict([xa, xb], verbose=0)
        close(got["cls"], want["cls"])
        close(got["reg"], want["reg"])


class Sub(maas.Model):
    """A subclassed model: matmul with a transposed operand, a mean over an
    axis, a scalar power, a sliced row block, concatenation."""

    def __init__(self):
        super().__init__()
        self.d1 = L.Dense(6, activation="relu")
        self.d2 = L.Dense(6)
        self.out = L.Dense(2)

    def call(self, x, training=False):
        h = self.d1(x)
        g = maas.ops.matmul(self.d2(x), maas.ops.transpose(self.d2.kernel)) * 0.1
        m = maas.ops.mean(h, axis=-1, keepdims=True)
        z = maas.ops.concatenate([h + m, maas.ops.square(g), maas.ops.sqrt(maas.ops.abs(g) + 1.0)],
                                 axis=-1)
        return maas.ops.softmax(self.out(z), axis=-1)


def test_subclassed_model_exports_through_its_trace(tmp_path):
    maas.utils.set_random_seed(4)
    m = Sub()
    m(np.zeros((2, 5), np.float32))
    check_single(m, tmp_path / "s.onnx", (5,))


def test_unbuilt_subclassed_model_needs_an_input_signature(tmp_path):
    with pytest.raises(ValueError, match="input_signature"):
        Sub().export(tmp_path / "x.onnx")
    m = Sub()
    m.export(tmp_path / "x.onnx", input_signature=[(None, 5)])
    assert session(tmp_path / "x.onnx").get_inputs()[0].shape == ["batch", 5]


class Noisy(L.Layer):
    def call(self, x, training=False):
        return x + maas.random.uniform(tuple(x.shape))


def test_a_layer_that_cannot_export_is_named(tmp_path):
    m = maas.Sequential([maas.Input((3,)), L.Dense(3), Noisy(name="noise_here")])
    with pytest.raises(maas.export.ExportError, match="layer 'noise_here'.*'random'"):
        m.export(tmp_path / "n.onnx")
    with pytest.raises(ValueError, match="format='onnx' only"):
        m.export(tmp_path / "n.onnx", format="tf_saved_model")


def test_the_command_line_exports_a_model_file(tmp_path):
    maas.utils.set_random_seed(5)
    m = maas.Sequential([maas.Input((4,)), L.Dense(3, activation="relu"), L.Dense(2)])
    m.compile("adam", "mse")
    m.save(tmp_path / "m.maas")
    r = subprocess.run([sys.executable, "-m", "maas", "export", str(tmp_path / "m.maas"),
                        str(tmp_path / "m.onnx")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    s = session(tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((7, 4)).astype(np.float32)
    close(s.run(None, {s.get_inputs()[0].name: x})[0], m.predict(x, verbose=0))
    (tmp_path / "bad.maas").write_bytes(b"not a model")
    r = subprocess.run([sys.executable, "-m", "maas", "export", str(tmp_path / "bad.maas"),
                        str(tmp_path / "b.onnx")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "bad.maas" in r.stderr


def test_a_200_layer_model_exports_as_a_chain_with_each_node_named_by_its_layer(tmp_path):
    """The trace notes where each layer's ops start in O(1) (it used to copy
    the whole tape at every layer call: quadratic in depth); the exported
    graph is the 200-layer chain, and an op deep in it is attributed to its
    own layer."""
    from maas.export.onnx import _TRACE_BATCHES, _Trace, _specs

    depth = 200
    maas.utils.set_random_seed(3)
    m = maas.Sequential([maas.Input((6,))] + [L.Dense(6, activation="tanh", name=f"d{i}")
                                               for i in range(depth)]
                        + [Noisy(name="noise_at_the_end")])
    with pytest.raises(maas.export.ExportError, match="layer 'noise_at_the_end'"):
        m.export(tmp_path / "noisy.onnx")
    m = maas.Sequential([maas.Input((6,))] + m.layers[:-1])
    s = check_single(m, tmp_path / "deep.onnx", (6,))
    assert s is not None
    g = onnx.load(str(tmp_path / "deep.onnx")).graph
    ops = [n.op_type for n in g.node]
    assert ops.count("MatMul") == depth and ops.count("Add") == depth
    assert ops.count("Tanh") == depth and ops[-1] == "Identity"
    assert len(g.initializer) == 2 * depth
    # a chain: every MatMul reads the Tanh before it (the first reads the input)
    producer = {o: n for n in g.node for o in n.output}
    matmuls = [n for n in g.node if n.op_type == "MatMul"]
    assert matmuls[0].input[0] == g.input[0].name
    for mm in matmuls[1:]:
        assert producer[mm.input[0]].op_type == "Tanh"
    # every traced op is attributed to the Dense layer that recorded it
    specs, _ = _specs(m, None)
    t = _Trace(m, specs, _TRACE_BATCHES[0])
    names = [t.layer(k) for k in range(len(t.nodes))]
    assert len(names) == 2 * depth
    assert names == [f"d{i}" for i in range(depth) for _ in range(2)]
