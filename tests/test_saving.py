"""Model files: save/load bit for bit (in this process and a new one),
resumable training, zero-copy loading, refusal of unknown classes and of
malformed files (a 10,000-file fuzz through load_model), weights alone with
name checks, a PyTorch state_dict, the repository and ModelCheckpoint."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import maas
from maas.errors import ModelFormatError


def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data[:400] / 16.0).astype(np.float32), d.target[:400]


def sequential():
    return maas.Sequential([maas.Input((64,)), maas.layers.Dense(32, activation="relu"),
                            maas.layers.Dropout(0.1), maas.layers.Dense(10, activation="softmax")])


def functional():
    inp = maas.Input((64,))
    h = maas.layers.Dense(32, activation="relu")(inp)
    out = maas.layers.Dense(10)(maas.layers.Add()([h, maas.layers.Dense(32)(inp)]))
    return maas.Model(inp, out)


@maas.saving.register_serializable(package="tests")
class SimpleModel(maas.Model):
    def __init__(self, units=16, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.dense1 = maas.layers.Dense(units, activation="relu")
        self.dense2 = maas.layers.Dense(10)

    def call(self, inputs, training=False):
        return self.dense2(self.dense1(inputs))

    def get_config(self):
        return {"units": self.units}


def trained(build, loss="sparse_categorical_crossentropy"):
    maas.utils.set_random_seed(0)
    x, y = digits()
    model = build()
    model.compile(optimizer="adam", loss=loss if build is sequential else
                  maas.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    return model, x


@pytest.mark.parametrize("build", [sequential, functional, SimpleModel],
                         ids=["sequential", "functional", "subclassed"])
def test_round_trip_is_bit_identical(build, tmp_path):
    model, x = trained(build)
    path = tmp_path / "m.maas"
    model.save(path)
    for kwargs in ({}, {"mmap": False}):
        loaded = maas.load_model(path, **kwargs)
        assert type(loaded) is type(model)
        np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
        assert [w.name for w in loaded.weights] == [w.name for w in model.weights]


NEW_PROCESS = """
import sys, numpy as np, maas
sys.path.insert(0, {tests!r})
import test_saving  # registers SimpleModel
m = maas.load_model({path!r})
x = np.load({xpath!r})
np.save({out!r}, m.predict(x, verbose=0))
"""


@pytest.mark.parametrize("build", [sequential, SimpleModel], ids=["sequential", "subclassed"])
def test_round_trip_in_a_new_process(build, tmp_path):
    model, x = trained(build)
    path, xpath, out = str(tmp_path / "m.maas"), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")
    model.save(path)
    np.save(xpath, x)
    code = NEW_PROCESS.format(tests=os.path.dirname(__file__), path=path, xpath=xpath, out=out)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    np.testing.assert_array_equal(np.load(out), model.predict(x, verbose=0))


def test_fit_save_load_fit_equals_fit_in_one_go(tmp_path):
    x, y = digits()

    def fresh():
        maas.utils.set_random_seed(3)
        m = sequential()
        m.compile(optimizer=maas.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
        return m

    once = fresh()
    once.fit(x, y, epochs=4, batch_size=32, verbose=0)

    twice = fresh()
    twice.fit(x, y, epochs=2, batch_size=32, verbose=0)
    twice.save(tmp_path / "half.maas")
    resumed = maas.load_model(tmp_path / "half.maas")
    assert resumed.optimizer.iterations == twice.optimizer.iterations
    resumed.fit(x, y, epochs=2, batch_size=32, verbose=0)
    for a, b in zip(resumed.get_weights(), once.get_weights()):
        np.testing.assert_array_equal(a, b)


def _mapped_ranges(path):
    real = os.path.realpath(path)
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            if line.rstrip().endswith(real):
                lo, hi = (int(v, 16) for v in line.split()[0].split("-"))
                out.append((lo, hi))
    return out


def test_loading_wraps_the_mapped_file_without_copying(tmp_path):
    model, x = trained(sequential)
    path = str(tmp_path / "m.maas")
    model.save(path)
    mapped = maas.load_model(path)
    ranges = _mapped_ranges(path)
    assert ranges, "the file is not mapped"
    inside = lambda w: any(lo <= w._data_ptr < hi for lo, hi in ranges)
    assert all(inside(w) for w in mapped.weights)
    copied = maas.load_model(path, mmap=False)
    assert not any(inside(w) for w in copied.weights)
    # training a mapped model writes private pages, never the file
    before = open(path, "rb").read()
    mapped.fit(x, digits()[1], epochs=1, verbose=0)
    assert open(path, "rb").read() == before


def test_an_unregistered_subclass_cannot_be_saved(tmp_path):
    class Unregistered(maas.Model):
        def __init__(self):
            super().__init__()
            self.d = maas.layers.Dense(2)

        def call(self, x, training=False):
            return self.d(x)

    m = Unregistered()
    m(np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match="register_serializable"):
        m.save(tmp_path / "u.maas")


def _rewrite(src, dst, edit_config=None, drop=None, metadata=None):
    tensors, meta = maas.saving.load_tensors(src, mmap=False)
    meta = dict(meta)
    meta.pop(maas.saving.CHECKSUM_KEY)
    if edit_config:
        cfg = json.loads(meta["maas.config"])
        edit_config(cfg)
        meta["maas.config"] = json.dumps(cfg)
    meta.update(metadata or {})
    tensors = {k: v for k, v in tensors.items() if k != drop}
    maas.saving.save_tensors(dst, tensors, meta)


def test_a_file_naming_an_unknown_class_is_refused(tmp_path):
    model, _ = trained(sequential)
    model.save(tmp_path / "m.maas")

    def evil(cfg):
        cfg["config"]["layers"][1]["class_name"] = "os.system"

    _rewrite(tmp_path / "m.maas", tmp_path / "evil.maas", edit_config=evil)
    with pytest.raises(ModelFormatError, match="unknown class 'os.system'"):
        maas.load_model(tmp_path / "evil.maas")

    def evil_top(cfg):
        cfg["class_name"] = "subprocess.Popen"

    _rewrite(tmp_path / "m.maas", tmp_path / "evil2.maas", edit_config=evil_top)
    with pytest.raises(ModelFormatError, match="refusing to load unknown class 'subprocess.Popen'"):
        maas.load_model(tmp_path / "evil2.maas")


def test_missing_weights_and_bad_versions_are_refused(tmp_path):
    model, _ = trained(sequential)
    model.save(tmp_path / "m.maas")
    names = [n for n, _ in maas.saving.weight_names(model)]
    _rewrite(tmp_path / "m.maas", tmp_path / "missing.maas", drop="weights/" + names[0])
    with pytest.raises(ModelFormatError, match=f"missing weights/{names[0]}"):
        maas.load_model(tmp_path / "missing.maas")
    _rewrite(tmp_path / "m.maas", tmp_path / "v9.maas", metadata={"maas.format_version": "9"})
    with pytest.raises(ModelFormatError, match="unsupported maas format version '9'"):
        maas.load_model(tmp_path / "v9.maas")
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        _rewrite(tmp_path / "m.maas", tmp_path / "j.maas", metadata={"maas.config": "{nope"})
        maas.load_model(tmp_path / "j.maas")


def test_save_and_load_weights_check_names_and_shapes(tmp_path):
    model, x = trained(sequential)
    model.save_weights(tmp_path / "w.safetensors")
    other = sequential()
    other.build((None, 64))
    other.load_weights(tmp_path / "w.safetensors")
    np.testing.assert_array_equal(other.predict(x, verbose=0), model.predict(x, verbose=0))

    wrong = maas.Sequential([maas.Input((64,)), maas.layers.Dense(16, activation="relu", name="dense"),
                             maas.layers.Dense(10, name="head")])
    wrong.build((None, 64))
    before = [w.copy() for w in wrong.get_weights()]
    with pytest.raises(ValueError, match="does not match the model") as e:
        wrong.load_weights(tmp_path / "w.safetensors")
    msg = str(e.value)
    assert "has shape (64, 32), the model (64, 16)" in msg
    assert "head/kernel: the file's" in msg and "has shape (32, 10), the model (16, 10)" in msg
    for a, b in zip(wrong.get_weights(), before):
        np.testing.assert_array_equal(a, b)  # nothing was half-loaded


def test_a_pytorch_state_dict_loads_with_a_name_map(tmp_path):
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    st.save_file(net.state_dict(), str(tmp_path / "torch.safetensors"))
    model = maas.Sequential([maas.Input((64,)), maas.layers.Dense(32, activation="relu", name="fc1"),
                             maas.layers.Dense(10, name="fc2")])
    model.build((None, 64))
    with pytest.raises(ValueError, match="map it with \\(name, 'transpose'\\)"):
        model.load_weights(tmp_path / "torch.safetensors", name_map={"fc1/kernel": "0.weight"})
    model.load_weights(tmp_path / "torch.safetensors", name_map={
        "fc1/kernel": ("0.weight", "transpose"), "fc1/bias": "0.bias",
        "fc2/kernel": ("2.weight", "transpose"), "fc2/bias": "2.bias"})
    x, _ = digits()
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.predict(x, verbose=0), ref, rtol=1e-5, atol=1e-5)


def test_ten_thousand_mutated_files_load_or_raise_model_format_error(tmp_path):
    model = maas.Sequential([maas.Input((4,)), maas.layers.Dense(3, activation="relu"), maas.layers.Dense(2)])
    model.compile("sgd", "mse")
    model.fit(np.ones((8, 4)), np.ones((8, 2)), verbose=0)
    model.save(tmp_path / "m.maas")
    data = (tmp_path / "m.maas").read_bytes()
    rng = np.random.default_rng(1234)
    target = tmp_path / "fuzz.maas"
    outcomes = {"loaded": 0, "refused": 0}
    start = time.monotonic()
    for i in range(10_000):
        buf = bytearray(data)
        kind = i % 4
        if kind == 0:
            buf = buf[: int(rng.integers(0, len(buf)))]
        else:
            for _ in range(int(rng.integers(1, 8))):
                pos = int(rng.integers(0, len(buf)))
                buf[pos] = int(rng.integers(0, 256)) if kind != 3 else buf[pos] ^ (1 << int(rng.integers(0, 8)))
        target.write_bytes(bytes(buf))
        try:
            maas.load_model(target, compile=bool(i % 2))
            outcomes["loaded"] += 1
        except ModelFormatError:
            outcomes["refused"] += 1
        assert time.monotonic() - start < 120, "fuzzing is too slow"
    assert outcomes["refused"] > 9000
    assert maas.load_model(tmp_path / "m.maas").predict(np.ones((1, 4)), verbose=0).shape == (1, 2)


def test_repository_versions_and_latest(tmp_path):
    repo = tmp_path / "models"
    model, x = trained(sequential)
    p1 = maas.saving.save_to_repository(model, repo, "digits")
    model.fit(x, digits()[1], epochs=1, verbose=0)
    p2 = maas.saving.save_to_repository(model, repo, "digits")
    assert p1.endswith(os.path.join("digits", "1", "model.maas")) and p2.endswith(os.path.join("2", "model.maas"))
    assert maas.saving.list_versions(repo, "digits") == [1, 2]
    latest = maas.saving.load_from_repository(repo, "digits")
    np.testing.assert_array_equal(latest.predict(x, verbose=0), model.predict(x, verbose=0))
    first = maas.saving.load_from_repository(repo, "digits", version=1)
    assert not np.array_equal(first.predict(x, verbose=0), latest.predict(x, verbose=0))


def test_save_to_repository_publishes_a_version_whole_or_not_at_all(tmp_path):
    """While a version is written only a hidden folder exists (a polling
    server ignores it); the numbered folder appears complete, by rename; a
    failed save leaves nothing behind."""
    repo = str(tmp_path)
    model = maas.Sequential([maas.Input((4,)), maas.layers.Dense(3)])
    model.build((None, 4))
    seen = []

    class Writer:  # anything with save(path) can be saved to a repository
        def __init__(self, fail=False):
            self.fail = fail

        def save(self, path):
            with open(path + ".part", "wb") as f:
                f.write(b"half a model")
            seen.append((os.listdir(os.path.join(repo, "m")), maas.saving.list_versions(repo, "m")))
            os.unlink(path + ".part")
            if self.fail:
                raise OSError("disk full")
            model.save(path)

    p = maas.saving.save_to_repository(Writer(), repo, "m")
    assert p == os.path.join(repo, "m", "1", "model.maas")
    (names, versions), = seen
    assert versions == [] and len(names) == 1 and names[0].startswith(".tmp-")
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(maas.load_model(p).predict(x, verbose=0), model.predict(x, verbose=0))
    with pytest.raises(OSError, match="disk full"):
        maas.saving.save_to_repository(Writer(fail=True), repo, "m")
    assert os.listdir(os.path.join(repo, "m")) == ["1"]
    with pytest.raises(FileExistsError, match="version 1 of model 'm' already exists"):
        maas.saving.save_to_repository(model, repo, "m", 1)
    assert os.listdir(os.path.join(repo, "m")) == ["1"]
    assert maas.saving.save_to_repository(model, repo, "m").endswith(os.path.join("m", "2", "model.maas"))


def test_model_checkpoint_saves_the_best_epoch(tmp_path):
    x, y = digits()
    maas.utils.set_random_seed(0)
    model = sequential()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    best = tmp_path / "best.maas"
    every = str(tmp_path / "w-{epoch:02d}.safetensors")
    hist = model.fit(x, y, epochs=3, validation_split=0.25, verbose=0, callbacks=[
        maas.callbacks.ModelCheckpoint(best, monitor="val_loss", save_best_only=True),
        maas.callbacks.ModelCheckpoint(every, save_weights_only=True)])
    assert sorted(os.listdir(tmp_path)) == ["best.maas", "w-01.safetensors", "w-02.safetensors", "w-03.safetensors"]
    best_epoch = int(np.argmin(hist.history["val_loss"]))
    saved = maas.load_model(best)
    ref = sequential()
    ref.build((None, 64))
    ref.load_weights(tmp_path / f"w-{best_epoch + 1:02d}.safetensors")
    np.testing.assert_array_equal(saved.predict(x, verbose=0), ref.predict(x, verbose=0))
