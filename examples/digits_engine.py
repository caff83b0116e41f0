"""Train a 64-128-10 MLP on scikit-learn's bundled digits with the engine
alone: maas tensors, a GradientTape and Adam, in a hand-written loop.

    python examples/digits_engine.py
"""
import numpy as np
from sklearn.datasets import load_digits

import maas


def main() -> None:
    maas.random.set_seed(0)
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.float32)
    perm = np.random.default_rng(0).permutation(len(x))
    x, y = x[perm], y[perm]
    split = int(0.8 * len(x))
    x_train, y_train, x_test, y_test = x[:split], y[:split], x[split:], y[split:]

    limit = np.sqrt(6 / (64 + 128))
    w1 = maas.Variable(maas.random.uniform((64, 128), -limit, limit), name="w1")
    b1 = maas.Variable(np.zeros(128), name="b1")
    limit = np.sqrt(6 / (128 + 10))
    w2 = maas.Variable(maas.random.uniform((128, 10), -limit, limit), name="w2")
    b2 = maas.Variable(np.zeros(10), name="b2")
    params = [w1, b1, w2, b2]
    opt = maas.optimizers.Adam(learning_rate=1e-2)

    def forward(xb):
        return maas.ops.dense(maas.ops.relu(maas.ops.dense(xb, w1, b1)), w2, b2)

    for epoch in range(15):
        order = np.random.default_rng(epoch).permutation(len(x_train))
        for i in range(0, len(order), 32):
            idx = order[i:i + 32]
            with maas.GradientTape() as tape:
                logits = forward(x_train[idx])
                loss = maas.losses.sparse_categorical_crossentropy(y_train[idx], logits, from_logits=True).mean()
            opt.apply_gradients(zip(tape.gradient(loss, params), params))
        acc = float(np.mean(np.argmax(forward(x_test).numpy(), axis=1) == y_test))
        print(f"epoch {epoch + 1:2d}  loss {float(loss):.4f}  test accuracy {acc:.4f}")


if __name__ == "__main__":
    main()
