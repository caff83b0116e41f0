"""ONNX export of the vision, text and recurrent layers: each model passes
onnx.checker (full) and ONNX Runtime equals predict at batch 1, 7 and 64."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import maas  # noqa: E402

L = maas.layers


def check(model, make_x, path, rtol=1e-5):
    model.export(path, format="onnx")
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert s.get_inputs()[0].shape[0] == "batch"
    for n in (1, 7, 64):
        x = make_x(n)
        got = s.run(None, {s.get_inputs()[0].name: x})
        want = model.predict(x, verbose=0)
        want = want if isinstance(want, list) else [want]
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=rtol, atol=1e-5 * max(1.0, float(np.abs(w).max())))


def normal(shape):
    return lambda n: np.random.default_rng(n).standard_normal((n,) + shape).astype(np.float32)


def test_a_cnn_with_every_vision_layer_exports(tmp_path):
    maas.utils.set_random_seed(0)
    m = maas.Sequential([
        maas.Input((12, 12, 3)), L.Conv2D(8, 3, padding="same", activation="relu"),
        L.BatchNormalization(), L.MaxPooling2D(), L.Conv2D(8, 3, strides=2, padding="valid"),
        L.AveragePooling2D(padding="same"), L.DepthwiseConv2D(3, padding="same"),
        L.SeparableConv2D(6, 3, padding="same"),
        L.Conv2DTranspose(4, 3, strides=2, padding="same", output_padding=1),
        L.GroupNormalization(groups=2), L.ZeroPadding2D(1), L.Cropping2D(((1, 0), (0, 1))),
        L.UpSampling2D(2), L.LayerNormalization(), L.GlobalAveragePooling2D(), L.Dense(3)])
    m.compile("adam", "mse")   # a step so that BatchNormalization's statistics move
    m.fit(np.random.default_rng(0).random((16, 12, 12, 3), np.float32),
          np.random.default_rng(1).random((16, 3), np.float32), epochs=1, verbose=0)
    check(m, normal((12, 12, 3)), tmp_path / "cnn.onnx")


def test_conv1d_pooling_permute_repeat_and_bilinear_upsampling_export(tmp_path):
    maas.utils.set_random_seed(1)
    check(maas.Sequential([maas.Input((10, 4)), L.Conv1D(5, 3, padding="causal", dilation_rate=2),
                           L.MaxPooling1D(2), L.Conv1D(4, 2), L.GlobalMaxPooling1D(), L.Dense(2)]),
          normal((10, 4)), tmp_path / "c1d.onnx")
    check(maas.Sequential([maas.Input((6, 5)), L.Permute((2, 1)), L.Flatten(), L.RepeatVector(3),
                           L.UpSampling1D(2), L.Flatten(), L.Dense(2)]),
          normal((6, 5)), tmp_path / "perm.onnx")
    check(maas.Sequential([maas.Input((8, 8, 2)), L.UpSampling2D(2, interpolation="bilinear"),
                           L.Flatten(), L.Dense(2)]), normal((8, 8, 2)), tmp_path / "bil.onnx")


@pytest.mark.parametrize("kind", ["lstm", "lstm_seq", "gru", "simple", "backwards", "bidirectional",
                                  "hard_sigmoid"])
def test_recurrent_layers_export(tmp_path, kind):
    maas.utils.set_random_seed(2)
    layer = {"lstm": lambda: L.LSTM(6), "lstm_seq": lambda: L.LSTM(6, return_sequences=True),
             "gru": lambda: L.GRU(6), "simple": lambda: L.SimpleRNN(6, return_sequences=True),
             "backwards": lambda: L.LSTM(6, go_backwards=True, return_sequences=True),
             "bidirectional": lambda: L.Bidirectional(L.GRU(4, return_sequences=True)),
             "hard_sigmoid": lambda: L.LSTM(6, recurrent_activation="hard_sigmoid")}[kind]()
    m = maas.Sequential([maas.Input((9, 5)), layer, L.Flatten(), L.Dense(2)])
    check(m, normal((9, 5)), tmp_path / f"{kind}.onnx")


def test_an_lstm_with_its_states_exports_every_output(tmp_path):
    maas.utils.set_random_seed(3)
    inp = maas.Input((9, 5))
    o, h, c = L.LSTM(6, return_state=True)(inp)
    check(maas.Model(inp, [o, h, c]), normal((9, 5)), tmp_path / "states.onnx")


def ids(n, pad=False):
    x = np.random.default_rng(n).integers(1, 50, (n, 12)).astype(np.int32)
    if pad:
        x[:, 8:] = 0
    return x


def test_embedding_attention_and_transformer_export(tmp_path):
    maas.utils.set_random_seed(4)
    inp = maas.Input((12,), dtype="int32")
    h = L.Embedding(50, 16)(inp)
    h = L.LayerNormalization()(L.MultiHeadAttention(num_heads=2, key_dim=8)(h, h))
    check(maas.Model(inp, L.Dense(3)(L.GlobalAveragePooling1D()(h))), ids, tmp_path / "mha.onnx")
    inp = maas.Input((12,), dtype="int32")
    h = L.TransformerEncoder(32, 2)(L.TokenAndPositionEmbedding(50, 12, 16)(inp))
    check(maas.Model(inp, L.Dense(2)(L.GlobalAveragePooling1D()(h))), ids, tmp_path / "enc.onnx")
    # padding masks flow from mask_zero into the attention
    inp = maas.Input((12,), dtype="int32")
    h = L.TransformerEncoder(32, 2)(L.Embedding(50, 16, mask_zero=True)(inp))
    check(maas.Model(inp, L.Dense(2)(L.GlobalAveragePooling1D()(h))), lambda n: ids(n, True),
          tmp_path / "masked.onnx")


def padded_ids(n):
    """Token ids (0 = padding) with right padding, left padding, holes and
    rows of padding only."""
    r = np.random.default_rng(n)
    x = r.integers(1, 20, (n, 7)).astype(np.int32)
    for i in range(n):
        kind = i % 5
        cut = int(r.integers(1, 7))
        if kind == 0:
            x[i, cut:] = 0          # right padding: the op's sequence_lens as such
        elif kind == 1:
            x[i, :cut] = 0          # left padding
        elif kind == 2:
            x[i, r.random(7) < 0.4] = 0   # holes
        elif kind == 3:
            x[i] = 0                # nothing kept
    return x


@pytest.mark.parametrize("kind", ["lstm", "lstm_seq", "gru_seq_back", "gru_v1", "simple_seq",
                                  "bi_lstm", "lstm_back_states", "zero_output"])
def test_masked_recurrent_layers_export_with_sequence_lens(tmp_path, kind):
    """Embedding(mask_zero=True) -> Dense -> recurrent layer: the mask goes
    to the ONNX op's sequence_lens (kept steps first, gathered back), and
    ONNX Runtime equals predict for any padding."""
    maas.utils.set_random_seed(8)
    layer = {"lstm": lambda: L.LSTM(5),
             "lstm_seq": lambda: L.LSTM(5, return_sequences=True),
             "gru_seq_back": lambda: L.GRU(5, return_sequences=True, go_backwards=True),
             "gru_v1": lambda: L.GRU(5, reset_after=False, return_sequences=True),
             "simple_seq": lambda: L.SimpleRNN(5, return_sequences=True),
             "bi_lstm": lambda: L.Bidirectional(L.LSTM(3, return_sequences=True)),
             "lstm_back_states": lambda: L.LSTM(5, go_backwards=True, return_state=True),
             "zero_output": lambda: L.GRU(5, zero_output_for_mask=True, go_backwards=True)}[kind]()
    inp = maas.Input((7,), dtype="int32")
    h = L.Dense(4, activation="tanh")(L.Embedding(20, 6, mask_zero=True)(inp))
    out = layer(h)
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    if kind.endswith("seq") or kind in ("gru_seq_back", "gru_v1", "bi_lstm"):
        outs = [L.Flatten()(outs[0])]
    check(maas.Model(inp, outs if len(outs) > 1 else outs[0]), padded_ids, tmp_path / f"{kind}.onnx")
    graph = onnx.load(str(tmp_path / f"{kind}.onnx")).graph
    rnn = [n for n in graph.node if n.op_type in ("LSTM", "GRU", "RNN")]
    assert rnn and all(len(n.input) > 4 and n.input[4] for n in rnn)   # sequence_lens given


@pytest.mark.parametrize("static", [False, True])
def test_an_int8_model_exports_with_the_same_arithmetic(tmp_path, static):
    """quantize("int8") (dynamic per-row, or calibrated) as MatMulInteger
    with maas's scales and rounding: ONNX Runtime gives maas's own int8
    outputs bit for bit."""
    maas.utils.set_random_seed(5)
    m = maas.Sequential([maas.Input((20,)), L.Dense(16, activation="relu"), L.Dense(5)])
    x0 = np.random.default_rng(0).standard_normal((64, 20)).astype(np.float32)
    m.quantize("int8", calibration_data=x0) if static else m.quantize("int8")
    path = tmp_path / "q.onnx"
    m.export(path, format="onnx")
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    assert "MatMulInteger" in {n.op_type for n in onnx.load(str(path)).graph.node}
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 7, 64):
        x = np.random.default_rng(n).standard_normal((n, 20)).astype(np.float32)
        assert np.array_equal(s.run(None, {s.get_inputs()[0].name: x})[0], m.predict(x, verbose=0))


@pytest.mark.parametrize("kind", ["gru_v1", "gru_v1_nobias", "gru_nobias", "bigru_v1"])
def test_gru_variants_export_with_their_linear_before_reset(tmp_path, kind):
    """GRU(reset_after=False) is ONNX's GRU with linear_before_reset=0; the
    default (with or without a bias) is linear_before_reset=1."""
    maas.utils.set_random_seed(6)
    layer = {"gru_v1": lambda: L.GRU(6, reset_after=False),
             "gru_v1_nobias": lambda: L.GRU(6, reset_after=False, use_bias=False),
             "gru_nobias": lambda: L.GRU(6, use_bias=False),
             "bigru_v1": lambda: L.Bidirectional(L.GRU(4, reset_after=False,
                                                       return_sequences=True))}[kind]()
    m = maas.Sequential([maas.Input((9, 5)), layer, L.Flatten(), L.Dense(2)])
    m(np.zeros((1, 9, 5), np.float32))
    for w in m.weights:   # biases away from zero, so that their placement matters
        if w.name == "bias":
            w.assign(np.random.default_rng(7).normal(0, 0.5, w.shape).astype(np.float32))
    check(m, normal((9, 5)), tmp_path / f"{kind}.onnx")
    lbr = [a.i for n in onnx.load(str(tmp_path / f"{kind}.onnx")).graph.node if n.op_type == "GRU"
           for a in n.attribute if a.name == "linear_before_reset"]
    assert set(lbr) == {0 if "v1" in kind else 1}
