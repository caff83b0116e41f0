"""maas.explain: every method against its guarantee or an independent
reference (float64 NumPy, brute-force Shapley, PyTorch autograd, Captum,
shap.KernelExplainer, scikit-learn's Ridge)."""
import itertools
import math

import numpy as np
import pytest

import maas
from maas import explain as E


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)


@pytest.fixture(scope="module")
def digits_mlp():
    """A digits MLP (64 -> 32 relu -> 10 softmax) trained for a few epochs."""
    x, y = _digits()
    maas.random.set_seed(0) if hasattr(maas.random, "set_seed") else None
    m = maas.Sequential([maas.Input((64,)), maas.layers.Dense(32, activation="relu"),
                         maas.layers.Dense(10, activation="softmax")])
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    m.fit(x[:1500], y[:1500], epochs=5, batch_size=64, verbose=0)
    return m, x[1500:]


def _mlp(n_in, hidden, n_out, seed, act="tanh", out_act=None):
    rng = np.random.default_rng(seed)
    m = maas.Sequential([maas.Input((n_in,)), maas.layers.Dense(hidden, activation=act),
                         maas.layers.Dense(n_out, activation=out_act)])
    w = [rng.normal(0, 0.6, (n_in, hidden)), rng.normal(0, 0.1, hidden),
         rng.normal(0, 0.6, (hidden, n_out)), rng.normal(0, 0.1, n_out)]
    m.set_weights([a.astype(np.float32) for a in w])
    return m


def _np_forward(m, x):
    """The float64 NumPy forward pass of a Dense stack (tanh/relu/softmax/linear)."""
    h = np.asarray(x, np.float64).reshape(len(x), -1)
    for layer in m.layers:
        ws = layer.get_weights()
        if not ws:
            continue
        h = h @ ws[0].astype(np.float64) + ws[1]
        act = getattr(layer.activation, "__name__", str(layer.activation))
        if "tanh" in act:
            h = np.tanh(h)
        elif "relu" in act:
            h = np.maximum(h, 0)
        elif "softmax" in act:
            e = np.exp(h - h.max(1, keepdims=True))
            h = e / e.sum(1, keepdims=True)
    return h


# --------------------------------------------------------------- integrated gradients
def test_ig_completeness_under_one_percent_at_200_steps_on_digits(digits_mlp):
    m, x = digits_mlp
    rows = x[:16]
    ig = E.IntegratedGradients(m)
    a, delta = ig.attribute(rows, n_steps=200, return_convergence_delta=True)
    f = m.predict(rows, verbose=0)
    t = f.argmax(1)
    fb = m.predict(np.zeros_like(rows), verbose=0)[np.arange(16), t]
    gap = np.abs(f[np.arange(16), t] - fb)
    assert a.shape == rows.shape
    assert np.all(np.abs(delta) < 0.01 * gap), (delta, gap)
    # delta is what it says: sum(attributions) - (f(x) - f(b))
    np.testing.assert_allclose(delta, a.sum(1) - (f[np.arange(16), t] - fb), atol=2e-5)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_ig_delta_falls_as_n_steps_grows(digits_mlp, method):
    m, x = digits_mlp
    ig = E.IntegratedGradients(m)
    err = [np.abs(ig.attribute(x[:16], n_steps=s, method=method,
                               return_convergence_delta=True)[1]).mean() for s in (4, 16, 64, 256)]
    assert err[0] > err[1] > err[2] and err[3] < err[2] + 1e-6, err


def test_ig_linear_model_is_x_minus_baseline_times_weight():
    m = maas.Sequential([maas.Input((5,)), maas.layers.Dense(3)])
    rng = np.random.default_rng(1)
    m.set_weights([rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)])
    x = rng.normal(size=(4, 5)).astype(np.float32)
    b = rng.normal(size=(5,)).astype(np.float32)
    w = m.get_weights()[0]
    for method in ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_middle"):
        a = E.IntegratedGradients(m).attribute(x, baselines=b, target=[0, 1, 2, 0], n_steps=7,
                                               method=method)
        want = ((x - b).astype(np.float64) * w[:, [0, 1, 2, 0]].T).astype(np.float32)
        np.testing.assert_allclose(a, want, rtol=1e-6, atol=1e-7)


def test_ig_implementation_invariance():
    """Two networks computing the same function (hidden units permuted and
    one unit split in two halves) give the same attributions."""
    m1 = _mlp(6, 8, 3, seed=2, act="relu")
    w1, b1, w2, b2 = m1.get_weights()
    perm = np.random.default_rng(3).permutation(8)
    w1p, b1p, w2p = w1[:, perm], b1[perm], w2[perm]
    # split unit 0 into two units of half its output weight (relu(z) = relu(z)/2 + relu(z)/2)
    w1s = np.concatenate([w1p, w1p[:, :1]], 1)
    b1s = np.concatenate([b1p, b1p[:1]])
    w2s = np.concatenate([w2p, w2p[:1] / 2], 0)
    w2s[0] /= 2
    m2 = maas.Sequential([maas.Input((6,)), maas.layers.Dense(9, activation="relu"),
                          maas.layers.Dense(3)])
    m2.set_weights([w1s, b1s, w2s, b2])
    x = np.random.default_rng(4).normal(size=(5, 6)).astype(np.float32)
    np.testing.assert_allclose(m1.predict(x, verbose=0), m2.predict(x, verbose=0), atol=1e-5)
    a1 = E.IntegratedGradients(m1).attribute(x, target=1, n_steps=64)
    a2 = E.IntegratedGradients(m2).attribute(x, target=1, n_steps=64)
    np.testing.assert_allclose(a1, a2, atol=1e-5)


def test_ig_equals_captum_on_the_same_network(digits_mlp):
    torch = pytest.importorskip("torch")
    captum = pytest.importorskip("captum.attr")
    m, x = digits_mlp
    net = _torch_copy(torch, m)
    rows = x[:6]
    # (not riemann_trapezoid: Captum's trapezoid weights sum to (n-1)/n, maas's to 1)
    for method in ("gausslegendre", "riemann_left", "riemann_middle"):
        ours = E.IntegratedGradients(m).attribute(rows, baselines=0.1, target=3, n_steps=40,
                                                  method=method)
        ref = captum.IntegratedGradients(net).attribute(
            torch.tensor(rows, dtype=torch.float64), baselines=0.1, target=3, n_steps=40,
            method=method).numpy()
        np.testing.assert_allclose(ours, ref, atol=2e-5)


def _torch_copy(torch, m):
    mods = []
    for layer in m.layers:
        ws = layer.get_weights()
        if not ws:
            continue
        lin = torch.nn.Linear(ws[0].shape[0], ws[0].shape[1]).double()
        with torch.no_grad():
            lin.weight.copy_(torch.tensor(ws[0].T))
            lin.bias.copy_(torch.tensor(ws[1]))
        mods.append(lin)
        act = getattr(layer.activation, "__name__", str(layer.activation))
        if "relu" in act:
            mods.append(torch.nn.ReLU())
        elif "tanh" in act:
            mods.append(torch.nn.Tanh())
        elif "softmax" in act:
            mods.append(torch.nn.Softmax(dim=1))
    return torch.nn.Sequential(*mods).eval()


# -------------------------------------------------------------------- saliency
def test_saliency_and_input_x_gradient_match_torch_autograd(digits_mlp):
    torch = pytest.importorskip("torch")
    m, x = digits_mlp
    net = _torch_copy(torch, m)
    rows = x[:20]
    xt = torch.tensor(rows, dtype=torch.float64, requires_grad=True)
    out = net(xt)
    t = out.argmax(1)
    out.gather(1, t[:, None]).sum().backward()
    ref = xt.grad.numpy()
    g = E.Saliency(m).attribute(rows, abs=False)
    np.testing.assert_allclose(g, ref, atol=1e-5)
    np.testing.assert_allclose(E.Saliency(m).attribute(rows), np.abs(ref), atol=1e-5)
    np.testing.assert_allclose(E.InputXGradient(m).attribute(rows), rows * ref, atol=1e-5)
    # a chunked run (internal_batch_size) gives the same gradients
    np.testing.assert_allclose(E.Saliency(m).attribute(rows, abs=False, internal_batch_size=7), g,
                               atol=1e-6)


def test_gradients_come_from_a_compiled_plan(digits_mlp):
    m, x = digits_mlp
    ig = E.IntegratedGradients(m)
    ig.attribute(x[:4], n_steps=10)
    kinds = {k[0]: v[0] for k, v in ig.evaluator._plans.items()}
    assert kinds.get("g") == "plan" and kinds.get("f") == "plan", kinds


def test_smoothgrad_is_the_mean_gradient_over_seeded_noise(digits_mlp):
    m, x = digits_mlp
    rows = x[:3]
    sg = E.SmoothGrad(m)
    a = sg.attribute(rows, nt_samples=8, stdevs=0.2, seed=5)
    np.testing.assert_array_equal(a, sg.attribute(rows, nt_samples=8, stdevs=0.2, seed=5))
    assert not np.array_equal(a, sg.attribute(rows, nt_samples=8, stdevs=0.2, seed=6))
    noise = np.random.default_rng(5).standard_normal((8,) + rows.shape).astype(np.float32) * np.float32(0.2)
    t = m.predict(rows, verbose=0).argmax(1)
    want = np.mean([E.Saliency(m).attribute(rows + noise[s], target=t, abs=False) for s in range(8)], 0)
    np.testing.assert_allclose(a, want, atol=1e-6)
    nt = E.NoiseTunnel(E.IntegratedGradients(m))
    v = nt.attribute(rows, nt_type="vargrad", nt_samples=4, stdevs=0.1, seed=1, n_steps=8)
    assert v.shape == rows.shape and (v >= 0).all()


# ------------------------------------------------------------------ kernel shap
def _brute_force_shapley(f, x, bg, t):
    """Shapley values by every permutation, v(S) = mean over bg of f."""
    M = x.shape[0]
    cache = {}

    def v(S):
        if S not in cache:
            z = bg.copy()
            idx = list(S)
            z[:, idx] = x[idx]
            cache[S] = f(z)[:, t].mean()
        return cache[S]

    phi = np.zeros(M)
    perms = list(itertools.permutations(range(M)))
    for p in perms:
        S = frozenset()
        for j in p:
            S2 = S | {j}
            phi[j] += v(S2) - v(S)
            S = S2
    return phi / len(perms)


@pytest.mark.parametrize("M", [6, 8])
def test_kernel_shap_equals_brute_force_shapley(M):
    m = _mlp(M, 12, 3, seed=M, act="tanh", out_act="softmax")
    rng = np.random.default_rng(M)
    bg = rng.normal(size=(5, M)).astype(np.float32)
    x = rng.normal(size=(2, M)).astype(np.float32)
    ks = E.KernelShap(m, bg)
    phi = ks.attribute(x, target=2)
    for i in range(2):
        ref = _brute_force_shapley(lambda z: _np_forward(m, z), x[i].astype(np.float64),
                                   bg.astype(np.float64), 2)
        np.testing.assert_allclose(phi[i], ref, atol=1e-5)
    # the kernel regression over every coalition is the same values
    np.testing.assert_allclose(ks.attribute(x, target=2, n_samples=2 ** M), phi, atol=1e-5)


def test_kernel_shap_equals_shap_kernel_explainer():
    shap = pytest.importorskip("shap")
    M = 7
    m = _mlp(M, 10, 2, seed=11, act="tanh")
    rng = np.random.default_rng(11)
    bg = rng.normal(size=(6, M)).astype(np.float32)
    x = rng.normal(size=(3, M)).astype(np.float32)
    ours = E.KernelShap(m, bg).attribute(x, return_all_outputs=True)      # (3, M, 2)
    ke = shap.KernelExplainer(lambda z: m.predict(z, verbose=0), bg)
    ref = np.asarray(ke.shap_values(x, nsamples=2 ** M, silent=True))     # every coalition
    ref = ref if ref.shape == ours.shape else np.moveaxis(ref, 0, -1)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    np.testing.assert_allclose(E.KernelShap(m, bg).expected_value, ke.expected_value, atol=1e-6)


def test_kernel_shap_efficiency_and_seeded_sampling(digits_mlp):
    m, x = digits_mlp
    bg = x[-10:]
    rows = x[:3]
    ks = E.KernelShap(m, bg)
    phi = ks.attribute(rows, n_samples=600, seed=3)          # 64 features: sampled
    f = m.predict(rows, verbose=0)
    t = f.argmax(1)
    np.testing.assert_allclose(phi.sum(1), f[np.arange(3), t] - ks.expected_value[t], atol=1e-5)
    np.testing.assert_array_equal(phi, ks.attribute(rows, n_samples=600, seed=3))
    assert not np.array_equal(phi, ks.attribute(rows, n_samples=600, seed=4))
    # batched equals row by row (the coalitions depend on the seed only)
    rowwise = np.concatenate([ks.attribute(rows[i:i + 1], target=t[i:i + 1], n_samples=600, seed=3)
                              for i in range(3)])
    np.testing.assert_allclose(phi, rowwise, atol=1e-6)


def test_kernel_shap_sampling_converges_to_exact():
    M = 10
    m = _mlp(M, 12, 2, seed=7)
    rng = np.random.default_rng(7)
    bg = rng.normal(size=(4, M)).astype(np.float32)
    x = rng.normal(size=(2, M)).astype(np.float32)
    ks = E.KernelShap(m, bg)
    exact = ks.attribute(x, target=0)
    errs = [np.abs(ks.attribute(x, target=0, n_samples=n, seed=0) - exact).max() for n in (60, 800)]
    assert errs[1] < errs[0] and errs[1] < 0.02 * np.abs(exact).max() + 1e-4, errs


def test_kernel_shap_feature_groups():
    """Groups are players: a 4-group mask over 8 features equals brute force
    over the 4 groups, each group's value given to each of its features."""
    m = _mlp(8, 10, 2, seed=5)
    rng = np.random.default_rng(5)
    bg = rng.normal(size=(3, 8)).astype(np.float32)
    x = rng.normal(size=(1, 8)).astype(np.float32)
    mask = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    phi = E.KernelShap(m, bg).attribute(x, target=1, feature_mask=mask)

    def f_groups(zg):  # zg (B, 4): 1 takes x's group, 0 the background's
        return zg

    ref = np.zeros(4)
    for p in itertools.permutations(range(4)):
        S = []
        for g in p:
            def v(S_):
                z = bg.astype(np.float64).copy()
                for h in S_:
                    z[:, mask == h] = x[0, mask == h]
                return _np_forward(m, z)[:, 1].mean()
            ref[g] += v(S + [g]) - v(S)
            S = S + [g]
    ref /= 24
    np.testing.assert_allclose(phi[0], ref[mask], atol=1e-5)


# ------------------------------------------------------------------ occlusion
def _np_occlusion(f, x, win, strides, base, t):
    n = len(x)
    shape = x.shape[1:]
    total = np.zeros(x.shape)
    count = np.zeros(shape)
    fx = f(x)[np.arange(n), t]
    for p in itertools.product(*[range(0, s - w + 1, k) for s, w, k in zip(shape, win, strides)]):
        sl = tuple(slice(a, a + w) for a, w in zip(p, win))
        z = x.copy()
        z[(slice(None),) + sl] = base
        d = fx - f(z)[np.arange(n), t]
        for i in range(n):
            total[(i,) + sl] += d[i]
        count[sl] += 1
    return np.where(count > 0, total / np.maximum(count, 1), 0)


def test_occlusion_on_images_matches_a_numpy_loop():
    H, W, C = 6, 5, 2
    m = maas.Sequential([maas.Input((H, W, C)), maas.layers.Flatten(),
                         maas.layers.Dense(8, activation="tanh"), maas.layers.Dense(3)])
    rng = np.random.default_rng(0)
    m.set_weights([rng.normal(0, .4, w.shape).astype(np.float32) for w in m.get_weights()])
    x = rng.normal(size=(3, H, W, C)).astype(np.float32)
    a = E.Occlusion(m).attribute(x, (2, 3, C), strides=(2, 1, 1), baselines=0.5, target=1)
    ref = _np_occlusion(lambda z: _np_forward(m, z), x.astype(np.float64), (2, 3, C), (2, 1, 1), 0.5,
                        np.array([1, 1, 1]))
    np.testing.assert_allclose(a, ref, atol=1e-5)


def test_occlusion_on_sequences_matches_a_numpy_loop_and_batched_equals_rowwise():
    T, F = 9, 3
    m = maas.Sequential([maas.Input((T, F)), maas.layers.Flatten(), maas.layers.Dense(4)])
    rng = np.random.default_rng(1)
    m.set_weights([rng.normal(0, .4, w.shape).astype(np.float32) for w in m.get_weights()])
    x = rng.normal(size=(4, T, F)).astype(np.float32)
    occ = E.Occlusion(m)
    a = occ.attribute(x, (3, F), strides=(2, 1))   # the last time step is in no window: 0
    t = m.predict(x, verbose=0).argmax(1)
    ref = _np_occlusion(lambda z: _np_forward(m, z), x.astype(np.float64), (3, F), (2, 1), 0.0, t)
    np.testing.assert_allclose(a, ref, atol=1e-5)
    rowwise = np.concatenate([occ.attribute(x[i:i + 1], (3, F), strides=(2, 1)) for i in range(4)])
    np.testing.assert_allclose(a, rowwise, atol=1e-6)


def test_feature_ablation_with_groups_matches_a_numpy_loop():
    m = _mlp(6, 8, 2, seed=9)
    rng = np.random.default_rng(9)
    x = rng.normal(size=(3, 6)).astype(np.float32)
    mask = np.array([2, 2, 0, 1, 1, 1])
    a = E.FeatureAblation(m).attribute(x, baselines=np.full(6, 0.25, np.float32), target=0,
                                       feature_mask=mask)
    f = lambda z: _np_forward(m, z)[:, 0]  # noqa: E731
    ref = np.zeros((3, 6))
    for g in (0, 1, 2):
        z = x.astype(np.float64).copy()
        z[:, mask == g] = 0.25
        ref[:, mask == g] = (f(x) - f(z))[:, None]
    np.testing.assert_allclose(a, ref, atol=1e-5)
    # a mask per row
    masks = np.stack([mask, np.arange(6), np.zeros(6, int)])
    per = E.FeatureAblation(m).attribute(x, target=0, feature_mask=masks)
    np.testing.assert_allclose(per[2], np.full(6, f(x[2:3])[0] - f(np.zeros((1, 6)))[0]), atol=1e-5)


# ------------------------------------------------------------------------ lime
def test_lime_recovers_a_linear_models_weights():
    rng = np.random.default_rng(2)
    w = rng.normal(size=(6, 2)).astype(np.float32)
    m = maas.Sequential([maas.Input((6,)), maas.layers.Dense(2)])
    m.set_weights([w, np.array([0.3, -0.2], np.float32)])
    x = rng.normal(size=(3, 6)).astype(np.float32)
    exact = E.Lime(m, alpha=1e-9).attribute(x, target=1, n_samples=400, seed=0)
    np.testing.assert_allclose(exact, np.tile(w[:, 1], (3, 1)), atol=1e-4)
    lime = E.Lime(m, training_data=rng.normal(0, 2, size=(50, 6)))   # ridge alpha=1, scaled noise
    coef = lime.attribute(x, target=0, n_samples=2000, seed=1)
    np.testing.assert_allclose(coef, np.tile(w[:, 0], (3, 1)), rtol=2e-3, atol=2e-3)
    assert np.all(lime.score_ > 0.999)
    # the closed form equals scikit-learn's Ridge
    td = rng.normal(0, 2, size=(50, 6))
    closed = E.Lime(m, training_data=td, use_sklearn=False)
    sk = E.Lime(m, training_data=td, use_sklearn=True)
    np.testing.assert_allclose(closed.attribute(x, n_samples=300), sk.attribute(x, n_samples=300),
                               atol=1e-5)


def test_lime_seeded_and_batched_equals_rowwise(digits_mlp):
    m, x = digits_mlp
    lime = E.Lime(m)
    rows = x[:3]
    a = lime.attribute(rows, n_samples=300, seed=2)
    np.testing.assert_array_equal(a, lime.attribute(rows, n_samples=300, seed=2))
    assert not np.array_equal(a, lime.attribute(rows, n_samples=300, seed=3))
    t = m.predict(rows, verbose=0).argmax(1)
    rowwise = np.concatenate([lime.attribute(rows[i:i + 1], target=int(t[i]), n_samples=300, seed=2)
                              for i in range(3)])
    np.testing.assert_allclose(a, rowwise, atol=1e-5)


def test_gradient_methods_batched_equal_rowwise(digits_mlp):
    m, x = digits_mlp
    rows = x[:5]
    ig = E.IntegratedGradients(m)
    a = ig.attribute(rows, n_steps=20)
    t = m.predict(rows, verbose=0).argmax(1)
    rowwise = np.concatenate([ig.attribute(rows[i:i + 1], target=int(t[i]), n_steps=20)
                              for i in range(5)])
    np.testing.assert_allclose(a, rowwise, atol=1e-6)
    np.testing.assert_allclose(ig.attribute(rows, n_steps=20, internal_batch_size=13), a, atol=1e-6)


# ----------------------------------------------------------------------- errors
class _IntegerInput(maas.Model):
    """A model that rounds its input to integers first (as a quantized model
    with integer inputs does): no gradient reaches the input."""

    def __init__(self):
        super().__init__()
        self.dense = maas.layers.Dense(3)

    def call(self, x, training=False):
        from maas._typed import cast

        return self.dense(cast(cast(x, "int32"), "float32"))


def test_errors_name_the_argument(digits_mlp):
    m, x = digits_mlp
    rows = x[:2]
    with pytest.raises(E.ExplainArgumentError, match=r"target 10 is out of range: the model has 10 outputs"):
        E.Saliency(m).attribute(rows, target=10)
    with pytest.raises(ValueError, match=r"target -1 is out of range"):
        E.KernelShap(m, x[:3]).attribute(rows, target=[0, -1])
    with pytest.raises(ValueError, match=r"target must be one int or one per row \(2\)"):
        E.IntegratedGradients(m).attribute(rows, target=[1, 2, 3])
    with pytest.raises(ValueError, match=r"baselines must be a scalar or have the inputs' shape "
                                         r"\(2, 64\).*received shape \(63,\)"):
        E.IntegratedGradients(m).attribute(rows, baselines=np.zeros(63))
    with pytest.raises(ValueError, match=r"baselines must be .*received shape \(3, 64\)"):
        E.Occlusion(m).attribute(rows, (4,), baselines=np.zeros((3, 64)))
    with pytest.raises(ValueError, match=r"feature_mask must have the inputs' shape"):
        E.FeatureAblation(m).attribute(rows, feature_mask=np.zeros(8, int))
    with pytest.raises(ValueError, match=r"n_steps must be a positive integer, received 0"):
        E.IntegratedGradients(m).attribute(rows, n_steps=0)
    with pytest.raises(ValueError, match=r"method must be one of .*received 'simpson'"):
        E.IntegratedGradients(m).attribute(rows, method="simpson")
    with pytest.raises(ValueError, match=r"sliding_window_shapes must give one size per axis"):
        E.Occlusion(m).attribute(rows, (4, 4))


def test_a_model_without_gradient_refuses_gradient_methods():
    def f(z):
        return np.asarray(z, np.float32)[:, :2] * 2.0

    with pytest.raises(E.NoGradientError, match=r"model: IntegratedGradients needs the gradient.*"
                                                r"function.*use a perturbation method"):
        E.IntegratedGradients(f)
    with pytest.raises(TypeError, match=r"model: Saliency needs the gradient"):
        E.Saliency(f)
    # ... while the perturbation methods explain it
    x = np.ones((2, 3), np.float32)
    np.testing.assert_allclose(E.FeatureAblation(f).attribute(x, target=1), [[0, 2, 0], [0, 2, 0]])
    q = _IntegerInput()
    q(maas.tensor(np.zeros((1, 3), np.float32)))
    with pytest.raises(E.NoGradientError, match=r"model: its output does not depend differentiably "
                                                r"on its input"):
        E.Saliency(q).attribute(np.full((2, 3), 1.5, np.float32), target=0)
    assert E.Occlusion(q).attribute(np.full((2, 3), 1.5, np.float32), (1,), target=0).shape == (2, 3)


# ------------------------------------------------------------------------ plots
def test_plot_draws_images_bars_and_tokens(digits_mlp):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m, x = digits_mlp
    a = E.IntegratedGradients(m).attribute(x[:3], n_steps=16)
    fig = E.plot(a, x[:3], kind="image", shape=(8, 8), titles=["a", "b", "c"])
    drawn = [im.get_array() for axi in fig.axes for im in axi.get_images()]
    assert len(drawn) == 6            # each digit in grey, its attributions over it
    np.testing.assert_allclose(drawn[1], a[0].reshape(8, 8))
    lo, hi = fig.axes[0].get_images()[1].get_clim()
    assert lo == -hi == -np.abs(a).max()          # centred on 0
    fig = E.plot(a[0], kind="bar", top_k=5)
    bars = fig.axes[0].patches
    assert len(bars) == 5
    widths = [b.get_width() for b in bars]
    np.testing.assert_allclose(sorted(np.abs(widths)), np.sort(np.abs(a[0]))[-5:])
    fig = E.plot(np.array([0.5, -1.0, 0.0]), ["good", "bad", "movie"], kind="text")
    texts = {t.get_text(): t.get_bbox_patch().get_facecolor() for t in fig.axes[0].texts}
    assert texts["good"][0] > texts["good"][2] and texts["bad"][2] > texts["bad"][0]  # red / blue
    with pytest.raises(ValueError, match="one attribution per token"):
        E.plot(np.zeros(2), ["a"], kind="text")
    plt.close("all")


@pytest.mark.slow
def test_explain_notebook_executes():
    """examples/explain.ipynb runs end to end: it trains the digits MLP,
    explains six digits three ways and draws them."""
    nbclient = pytest.importorskip("nbclient")
    import os
    import pathlib

    import nbformat

    root = pathlib.Path(__file__).resolve().parents[1]
    path = root / "examples" / "explain.ipynb"
    nb = nbformat.read(path, as_version=4)
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs = []
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = str(root) + (os.pathsep + env_path if env_path else "")
    try:
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        os.environ["PYTHONPATH"] = env_path
    outs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outs if o.get("output_type") == "stream")
    pictures = [o for o in outs if "image/png" in o.get("data", {})]
    assert len(pictures) == 4, text
    assert float(text.split("test accuracy ")[1].split()[0]) > 0.8
    assert float(text.split("largest |completeness delta| ")[1].split()[0]) < 0.01
    assert float(text.split("efficiency error ")[1].split()[0]) < 1e-5


class _ReadsAValue(maas.Model):
    """A model whose call() reads a tensor into Python: no plan can stand
    for it, so the gradients come from the tape, op by op."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def call(self, x, training=False):
        if float(np.asarray(x).sum()) > 1e9:   # a value read: the trace falls back to eager
            x = x * 0.0
        return self.inner(x, training=training)


def test_a_model_that_cannot_be_traced_is_explained_on_the_tape():
    m = _mlp(5, 7, 3, seed=13)
    wrapped = _ReadsAValue(m)
    x = np.random.default_rng(13).normal(size=(4, 5)).astype(np.float32)
    wrapped(maas.tensor(x))
    ig = E.IntegratedGradients(wrapped)
    a = ig.attribute(x, target=2, n_steps=16)
    assert {v[0] for v in ig.evaluator._plans.values()} == {"eager"}
    np.testing.assert_allclose(a, E.IntegratedGradients(m).attribute(x, target=2, n_steps=16), atol=1e-6)


def test_kernel_shap_null_players_get_zero(digits_mlp):
    """Pixels equal in the row and every background row (the digits' empty
    border) change nothing: exactly 0, as shap's varying-feature rule."""
    m, x = digits_mlp
    bg = x[-8:]
    rows = x[:2]
    phi = E.KernelShap(m, bg).attribute(rows, n_samples=500, seed=1)
    null = (rows[:, None, :] == bg[None]).all(1)
    assert null.any()
    assert np.all(phi[null] == 0) and np.all(phi[~null] != 0)
