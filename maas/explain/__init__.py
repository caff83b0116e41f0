"""Explanations: attributions of a model's outputs to its inputs, with an
API shaped as Captum's (``method.attribute(x, target=None, ...)``, the
attributions in ``x``'s shape, ``target`` one output index per row,
default the predicted class).

Gradient methods (a maas model): :class:`Saliency`, :class:`InputXGradient`,
:class:`IntegratedGradients`, :class:`NoiseTunnel` / :class:`SmoothGrad`;
they run the forward and backward passes of every row and step as one
compiled plan per chunk (the input's gradient, one C call). Perturbation
methods (any model, a ServedModel or a function too): :class:`Occlusion`,
:class:`FeatureAblation`, :class:`KernelShap`, :class:`Lime`; every
perturbed row goes through the model's compiled forward plan in chunks.
:func:`plot` draws attributions (matplotlib).

>>> import numpy as np, maas
>>> m = maas.Sequential([maas.Input((4,)), maas.layers.Dense(3)])
>>> x = np.ones((2, 4), np.float32)
>>> maas.explain.IntegratedGradients(m).attribute(x, target=0).shape
(2, 4)
"""
from ._model import ExplainArgumentError, NoGradientError
from .gradient import (InputXGradient, IntegratedGradients, NoiseTunnel, Saliency, SmoothGrad,
                       approximation_parameters)
from .kernel_shap import KernelShap
from .lime import Lime
from .perturbation import FeatureAblation, Occlusion


def plot(attributions, x=None, kind: str = "image", **kwargs):
    """Draws attributions with matplotlib (see :mod:`maas.explain.plot`)."""
    from .plotting import plot as _plot

    return _plot(attributions, x, kind=kind, **kwargs)


__all__ = ["Saliency", "InputXGradient", "IntegratedGradients", "NoiseTunnel", "SmoothGrad",
           "Occlusion", "FeatureAblation", "KernelShap", "Lime", "plot", "ExplainArgumentError",
           "NoGradientError", "approximation_parameters"]
