"""maas's exceptions: subclasses of the built-in ones, so that ``except
ValueError`` still catches them.

>>> import maas
>>> issubclass(maas.errors.ModelFormatError, ValueError)
True
"""


class MaasError(Exception):
    """Base class of maas's own exceptions."""


class ModelFormatError(MaasError, ValueError):
    """A model file is malformed, truncated, or not what the model expects."""


class NotFittedError(MaasError, ValueError, RuntimeError):
    """The model must be compiled (or built) before this call. A ValueError,
    as Keras raises for ``fit`` before ``compile``; also a RuntimeError, which
    maas raised before, so that older ``except RuntimeError`` still works."""
