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


class NotFittedError(MaasError, RuntimeError):
    """The model must be compiled (or built) before this call."""
