import numpy as np
import pytest


@pytest.fixture(scope="session")
def digits():
    """sklearn's bundled digits, pixels in [0, 1], a fixed stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    return train_test_split(x, d.target, test_size=0.2, random_state=0, stratify=d.target)


@pytest.fixture(scope="session")
def cancer():
    """sklearn's bundled breast-cancer data, standardized on the training rows."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    b = load_breast_cancer()
    xtr, xte, ytr, yte = train_test_split(b.data, b.target, test_size=0.2, random_state=0,
                                          stratify=b.target)
    sc = StandardScaler().fit(xtr)
    return (sc.transform(xtr).astype(np.float32), sc.transform(xte).astype(np.float32), ytr, yte)
