"""maas: train a neural network with a Keras-like API on a C core, and serve it.

>>> import maas, numpy as np
>>> x = maas.tensor(np.ones((2, 3), np.float32))
>>> (x @ x.T).numpy()
array([[3., 3.],
       [3., 3.]], dtype=float32)
"""
import os as _os

from ._blas import load as _load_blas

_load_blas()

# maas runs two thread pools: OpenMP (its own kernels) and OpenBLAS's
# (GEMMs). libgomp's default lets idle OpenMP threads spin after each
# region, taking the cores OpenBLAS's threads need next: on a shared
# machine a batch-128 forward pass measured 30x slower. Passive waiting is
# the default here unless the user chose a policy; libgomp reads it once,
# when it loads with the extension, and it is removed again so that no
# other library or child process inherits it.
_omp_policy_set = "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ
if _omp_policy_set:
    _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
try:
    from . import _core  # noqa: E402
except ImportError as _e:  # a source checkout without the built extension?
    from ._source_tree import source_tree_error as _source_tree_error

    _err = _source_tree_error(__file__)
    if _err is None:
        raise
    raise _err from _e
finally:
    if _omp_policy_set:
        _os.environ.pop("OMP_WAIT_POLICY", None)
from . import errors, losses, ops, optimizers, random, saving  # noqa: E402
from .autodiff import GradientTape  # noqa: E402
from .tensor import Tensor, Variable, convert_to_numpy, convert_to_tensor, tensor  # noqa: E402
from . import activations, initializers, regularizers, metrics, callbacks  # noqa: E402
from . import distribution, export, layers, models, utils  # noqa: E402
from .layers import Input  # noqa: E402
from .models import Model, Sequential  # noqa: E402
from .saving import load_model  # noqa: E402
from . import applications, distillation, explain, pruning, quantization  # noqa: E402

__version__ = "0.1.0"


def set_num_threads(n: int) -> None:
    """Sets the threads used by maas's kernels and by OpenBLAS together."""
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """The number of threads maas's kernels and OpenBLAS use."""
    return _core.get_num_threads()


def set_deterministic(flag: bool) -> None:
    """Whether matrix products give the same bits at any thread count.

    On by default (``MAAS_DETERMINISTIC=0`` in the environment turns it off):
    maas splits each large product over output blocks on its own threads,
    OpenBLAS single-threaded inside, so training does not drift with
    :func:`set_num_threads`. Off, OpenBLAS threads products itself. Set it
    between computations, not while another thread runs maas kernels.

    >>> import maas
    >>> maas.set_deterministic(False); maas.set_deterministic(True)
    """
    _core.set_deterministic(bool(flag))


__all__ = ["Tensor", "Variable", "tensor", "convert_to_tensor", "convert_to_numpy",
           "GradientTape", "ops", "losses", "optimizers", "random", "errors", "saving",
           "set_num_threads", "get_num_threads", "set_deterministic", "activations", "initializers",
           "regularizers", "metrics", "callbacks", "layers", "models", "utils", "Input",
           "Model", "Sequential", "load_model", "applications", "distribution", "export",
           "explain", "quantization", "pruning", "distillation"]
