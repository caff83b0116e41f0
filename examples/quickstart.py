"""The Keras-style quickstart: an MLP on scikit-learn's bundled digits.

    python examples/quickstart.py
"""
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import maas


def main() -> None:
    maas.utils.set_random_seed(0)
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, digits.target, test_size=0.2,
                                                        random_state=0, stratify=digits.target)
    model = maas.Sequential([
        maas.Input((64,)),
        maas.layers.Dense(128, activation="relu"),
        maas.layers.Dropout(0.1),
        maas.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.summary()
    model.fit(x_train, y_train, epochs=20, batch_size=32, validation_split=0.1, verbose=2)
    loss, acc = model.evaluate(x_test, y_test, verbose=0)
    print(f"test loss {loss:.4f}, test accuracy {acc:.4f}")
    print("predicted classes of the first 10 test digits:", np.argmax(model.predict(x_test[:10], verbose=0), axis=1))
    print("their labels:                                 ", y_test[:10])


if __name__ == "__main__":
    main()
