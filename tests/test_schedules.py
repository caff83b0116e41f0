"""maas.optimizers.schedules against Keras 3's formulas (written out here
from keras/src/optimizers/schedules/learning_rate_schedule.py, in NumPy,
float64) over many steps; an optimizer given a schedule uses the rate at
``optimizer.iterations`` on each step, on the compiled plan and on the eager
path, checked against a float64 NumPy SGD; and the schedule is saved with
the model and restored."""
from __future__ import annotations


import numpy as np
import pytest

import maas
from maas.optimizers import schedules

STEPS = np.arange(0, 400)


# ---- Keras's formulas, vectorized over steps

def keras_exponential(step, lr0, decay_steps, rate, staircase):
    p = step / decay_steps
    return lr0 * rate ** (np.floor(p) if staircase else p)


def keras_piecewise(step, boundaries, values):
    out = np.zeros(step.shape)
    out += (step <= boundaries[0]) * values[0]
    out += (step > boundaries[-1]) * values[-1]
    for low, high, v in zip(boundaries[:-1], boundaries[1:], values[1:-1]):
        out += ((step > low) & (step <= high)) * v
    return out


def keras_polynomial(step, lr0, decay_steps, end, power, cycle):
    step = step.astype(np.float64)
    if cycle:
        mult = np.where(step == 0, 1.0, np.ceil(step / decay_steps))
        ds = decay_steps * mult
    else:
        ds = np.full(step.shape, float(decay_steps))
        step = np.minimum(step, decay_steps)
    return (lr0 - end) * (1 - step / ds) ** power + end


def keras_inverse_time(step, lr0, decay_steps, rate, staircase):
    p = step / decay_steps
    return lr0 / (1 + rate * (np.floor(p) if staircase else p))


def keras_cosine(step, lr0, decay_steps, alpha, warmup_target, warmup_steps):
    def decay(s, frm):
        return frm * ((1 - alpha) * 0.5 * (1 + np.cos(np.pi * s / decay_steps)) + alpha)

    step = step.astype(np.float64)
    if warmup_target is None:
        return decay(np.minimum(step, decay_steps), lr0)
    step = np.minimum(step, decay_steps + warmup_steps)
    warm = (warmup_target - lr0) * (step / warmup_steps) + lr0
    return np.where(step < warmup_steps, warm, decay(step - warmup_steps, warmup_target))


def keras_cosine_restarts(step, lr0, first, t_mul, m_mul, alpha):
    frac = step / first
    if t_mul == 1.0:
        i = np.floor(frac)
        frac = frac - i
    else:
        i = np.floor(np.log(1.0 - frac * (1.0 - t_mul)) / np.log(t_mul))
        sum_r = (1.0 - t_mul ** i) / (1.0 - t_mul)
        frac = (frac - sum_r) / t_mul ** i
    cosine = 0.5 * m_mul ** i * (1.0 + np.cos(np.pi * frac))
    return lr0 * ((1 - alpha) * cosine + alpha)


CASES = [
    (schedules.ExponentialDecay(0.1, 30, 0.8), keras_exponential, (0.1, 30, 0.8, False)),
    (schedules.ExponentialDecay(0.1, 30, 0.8, staircase=True), keras_exponential,
     (0.1, 30, 0.8, True)),
    (schedules.PiecewiseConstantDecay([50, 120, 300], [1.0, 0.5, 0.1, 0.01]), keras_piecewise,
     ([50, 120, 300], [1.0, 0.5, 0.1, 0.01])),
    (schedules.PolynomialDecay(0.1, 100), keras_polynomial, (0.1, 100, 0.0001, 1.0, False)),
    (schedules.PolynomialDecay(0.1, 70, 0.01, power=0.5, cycle=True), keras_polynomial,
     (0.1, 70, 0.01, 0.5, True)),
    (schedules.InverseTimeDecay(0.1, 20, 0.5), keras_inverse_time, (0.1, 20, 0.5, False)),
    (schedules.InverseTimeDecay(0.1, 20, 0.5, staircase=True), keras_inverse_time,
     (0.1, 20, 0.5, True)),
    (schedules.CosineDecay(0.1, 150, alpha=0.1), keras_cosine, (0.1, 150, 0.1, None, 0)),
    (schedules.CosineDecay(0.0, 150, warmup_target=0.2, warmup_steps=60), keras_cosine,
     (0.0, 150, 0.0, 0.2, 60)),
    (schedules.CosineDecay(0.01, 100, alpha=0.05, warmup_target=0.1, warmup_steps=25),
     keras_cosine, (0.01, 100, 0.05, 0.1, 25)),
    (schedules.CosineDecayRestarts(0.1, 40), keras_cosine_restarts, (0.1, 40, 2.0, 1.0, 0.0)),
    (schedules.CosineDecayRestarts(0.1, 40, t_mul=1.0, m_mul=0.7, alpha=0.1),
     keras_cosine_restarts, (0.1, 40, 1.0, 0.7, 0.1)),
    (schedules.CosineDecayRestarts(0.1, 25, t_mul=1.5, m_mul=0.5), keras_cosine_restarts,
     (0.1, 25, 1.5, 0.5, 0.0)),
]


@pytest.mark.parametrize("schedule,formula,args", CASES,
                         ids=[f"{type(c[0]).__name__}-{i}" for i, c in enumerate(CASES)])
def test_schedule_matches_keras_formula_over_steps(schedule, formula, args):
    expected = formula(STEPS, *args)
    got = np.array([schedule(int(s)) for s in STEPS])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    # the config round trip rebuilds the same schedule
    again = schedules.deserialize(schedules.serialize(schedule))
    assert type(again) is type(schedule) and again.get_config() == schedule.get_config()
    assert [again(int(s)) for s in STEPS[::37]] == [schedule(int(s)) for s in STEPS[::37]]


def test_landmarks_of_the_schedules():
    """Values a reader can check by hand."""
    assert schedules.ExponentialDecay(1.0, 10, 0.5)(20) == pytest.approx(0.25)
    assert schedules.PiecewiseConstantDecay([10], [1.0, 0.1])(10) == 1.0
    assert schedules.PiecewiseConstantDecay([10], [1.0, 0.1])(11) == 0.1
    assert schedules.PolynomialDecay(1.0, 10, 0.0)(5) == pytest.approx(0.5)
    assert schedules.InverseTimeDecay(1.0, 1, 1.0)(1) == pytest.approx(0.5)
    warm = schedules.CosineDecay(0.0, 100, warmup_target=1.0, warmup_steps=10)
    assert warm(5) == pytest.approx(0.5) and warm(10) == pytest.approx(1.0)
    assert warm(60) == pytest.approx(0.5) and warm(10_000) == pytest.approx(0.0, abs=1e-12)
    sgdr = schedules.CosineDecayRestarts(1.0, 10, t_mul=2.0, m_mul=0.5)
    assert sgdr(10) == pytest.approx(0.5)   # restart: the second period peaks at m_mul
    assert sgdr(30) == pytest.approx(0.25)  # second period lasted 20 steps


def test_schedule_errors_and_base_class():
    with pytest.raises(ValueError, match="decay_steps` must be > 0"):
        schedules.ExponentialDecay(0.1, 0, 0.9)
    with pytest.raises(ValueError, match="1 less than the length of values"):
        schedules.PiecewiseConstantDecay([1, 2], [1.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        schedules.PiecewiseConstantDecay([5, 2], [1.0, 0.5, 0.1])
    with pytest.raises(NotImplementedError, match="must override `__call__"):
        schedules.LearningRateSchedule()(0)
    with pytest.raises(NotImplementedError, match="get_config"):
        schedules.LearningRateSchedule().get_config()
    with pytest.raises(ValueError, match="Unknown learning rate schedule 'Evil'"):
        schedules.deserialize({"class_name": "Evil", "config": {}})
    opt = maas.optimizers.SGD(learning_rate=schedules.ExponentialDecay(0.1, 10, 0.9))
    with pytest.raises(TypeError, match="not settable"):
        opt.learning_rate = 0.5
    import maas.optimizers.schedules as by_import
    assert by_import is schedules


@maas.saving.register_keras_serializable(package="tests_schedules")
class HalfEvery(schedules.LearningRateSchedule):
    def __init__(self, lr, every):
        self.lr, self.every = lr, every

    def __call__(self, step):
        return self.lr * 0.5 ** (step // self.every)

    def get_config(self):
        return {"lr": self.lr, "every": self.every}


def test_a_registered_custom_schedule_round_trips():
    s = schedules.deserialize(schedules.serialize(HalfEvery(0.2, 3)))
    assert isinstance(s, HalfEvery) and s(7) == pytest.approx(0.05)


# ---- in training

def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3).astype(np.float32)
    return x, y


def _numpy_sgd(w, b, x, y, batch, epochs, lr_of_step):
    """Float64 SGD on Dense(1) with mean squared error, no shuffling."""
    w, b = w.astype(np.float64), b.astype(np.float64)
    step = 0
    for _ in range(epochs):
        for i in range(0, len(x), batch):
            xb, yb = x[i:i + batch].astype(np.float64), y[i:i + batch].astype(np.float64)
            err = xb @ w + b - yb
            gw, gb = 2.0 * xb.T @ err / err.size, 2.0 * err.sum(0) / err.size
            lr = lr_of_step(step)
            w, b = w - lr * gw, b - lr * gb
            step += 1
    return w, b


@pytest.mark.parametrize("path", ["plan", "eager"])
@pytest.mark.parametrize("make", [lambda: schedules.ExponentialDecay(0.2, 3, 0.5),
                                  lambda: schedules.CosineDecay(0.0, 6, warmup_target=0.3,
                                                                warmup_steps=4)],
                         ids=["exponential", "cosine-warmup"])
def test_fit_uses_the_rate_at_each_step(path, make):
    x, y = _data()
    maas.utils.set_random_seed(1)
    model = maas.Sequential([maas.Input((3,)), maas.layers.Dense(1)])
    w0, b0 = [np.array(v) for v in model.get_weights()]
    schedule = make()
    model.compile(optimizer=maas.optimizers.SGD(learning_rate=schedule), loss="mse",
                  run_eagerly=(path == "eager"))
    model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    assert (model._plan is not None) == (path == "plan")
    assert model.optimizer.iterations == 12
    w, b = _numpy_sgd(w0, b0, x, y, 8, 3, schedule)
    np.testing.assert_allclose(model.get_weights()[0], w, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(model.get_weights()[1], b, rtol=2e-5, atol=1e-6)
    # the rates differ enough that a constant rate would not pass
    wc, _ = _numpy_sgd(w0, b0, x, y, 8, 3, lambda s: schedule(0) or schedule(5))
    assert np.abs(wc - w).max() > 1e-3
    assert model.optimizer.learning_rate == pytest.approx(schedule(12))


def test_plan_and_eager_paths_agree_with_a_schedule():
    x, y = _data()
    out = []
    for eager in (False, True):
        maas.utils.set_random_seed(2)
        model = maas.Sequential([maas.Input((3,)), maas.layers.Dense(4, activation="tanh"),
                                 maas.layers.Dense(1)])
        model.compile(optimizer=maas.optimizers.Adam(
            learning_rate=schedules.PiecewiseConstantDecay([3, 6], [0.05, 0.02, 0.005])),
            loss="mse", run_eagerly=eager)
        model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
        out.append(model.get_weights())
    for a, b in zip(*out):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_the_schedule_is_saved_with_the_model_and_training_resumes_on_it(tmp_path):
    x, y = _data()
    maas.utils.set_random_seed(3)
    model = maas.Sequential([maas.Input((3,)), maas.layers.Dense(1)])
    schedule = schedules.CosineDecayRestarts(0.1, 3, t_mul=2.0, m_mul=0.5)
    model.compile(optimizer=maas.optimizers.SGD(learning_rate=schedule, momentum=0.9), loss="mse")
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    path = tmp_path / "scheduled.maas"
    model.save(path)
    loaded = maas.models.load_model(path)
    restored = loaded.optimizer._learning_rate
    assert type(restored) is schedules.CosineDecayRestarts
    assert restored.get_config() == schedule.get_config()
    assert loaded.optimizer.iterations == 4
    assert loaded.optimizer.learning_rate == model.optimizer.learning_rate == schedule(4)
    for m in (model, loaded):
        m.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        assert np.array_equal(a, b)
