"""ResNet18 and ResNet34 (He et al. 2015, the torchvision layout) from maas
layers.

The layers are named after torchvision's modules (``conv1``, ``bn1``,
``layer2.0.conv1``, ``layer2.0.downsample.0``, ``fc``, ...), so a
torchvision ``state_dict`` saved as safetensors loads with
``model.load_weights(path, name_map=torchvision_name_map(model))``. The
padding is PyTorch's (symmetric: ZeroPadding2D before each strided
convolution and the max pool, where Keras's "same" would pad the bottom
and right only), and BatchNormalization uses PyTorch's defaults
(``epsilon=1e-5``, ``momentum=0.9``, i.e. PyTorch's 0.1), so the logits
match torchvision's in inference mode.

>>> import maas
>>> model = maas.applications.ResNet18(weights=None)
>>> sum(int(np.prod(w.shape)) for w in model.trainable_weights)
11689512
"""
from __future__ import annotations

import os

from .. import layers as L
from ..layers.base import Input
from ..models import Model

_BN = dict(epsilon=1e-5, momentum=0.9)


def _conv_bn(x, filters, kernel, stride, name, bn_name, relu):
    pad = kernel // 2
    if stride > 1 and pad:
        x = L.ZeroPadding2D(pad, name=name + ".pad")(x)
        padding = "valid"
    else:
        padding = "same" if pad else "valid"
    x = L.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False,
                 kernel_initializer="he_normal", name=name)(x)
    x = L.BatchNormalization(name=bn_name, **_BN)(x)
    return L.Activation("relu", name=bn_name + ".relu")(x) if relu else x


def _basic_block(x, filters, stride, name):
    shortcut = x
    h = _conv_bn(x, filters, 3, stride, name + ".conv1", name + ".bn1", relu=True)
    h = _conv_bn(h, filters, 3, 1, name + ".conv2", name + ".bn2", relu=False)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, stride, name + ".downsample.0",
                            name + ".downsample.1", relu=False)
    h = L.Add(name=name + ".add")([h, shortcut])
    return L.Activation("relu", name=name + ".relu")(h)


def _resnet(blocks, model_name, include_top, weights, input_tensor, input_shape, pooling,
            classes, classifier_activation, stem):
    if stem not in ("imagenet", "cifar"):
        raise ValueError(f"{model_name}: stem must be 'imagenet' (7x7/2 convolution and 3x3/2 "
                         f"max pool) or 'cifar' (3x3/1 convolution, no pool), received stem={stem!r}")
    if weights == "imagenet":
        raise ValueError(f"{model_name}: pretrained ImageNet weights are not bundled with maas; "
                         f"use weights=None, or a path to a weights file (a torchvision "
                         f"state_dict saved as safetensors loads with name_map="
                         f"maas.applications.resnet.torchvision_name_map(model))")
    if weights is not None and not os.path.exists(os.fspath(weights)):
        raise ValueError(f"{model_name}: weights must be None or the path to a weights file, "
                         f"received weights={weights!r}")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"{model_name}: pooling must be None, 'avg' or 'max', received {pooling!r}")
    if input_shape is None:
        input_shape = (224, 224, 3) if stem == "imagenet" else (32, 32, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"{model_name}: input_shape must be (height, width, channels), "
                         f"received input_shape={input_shape}")
    inputs = input_tensor if input_tensor is not None else Input(input_shape, name="input")
    if stem == "imagenet":
        x = L.ZeroPadding2D(3, name="conv1.pad")(inputs)
        x = L.Conv2D(64, 7, strides=2, use_bias=False, kernel_initializer="he_normal",
                     name="conv1")(x)
        x = L.BatchNormalization(name="bn1", **_BN)(x)
        x = L.Activation("relu", name="relu")(x)
        x = L.ZeroPadding2D(1, name="maxpool.pad")(x)   # after a ReLU, zeros act as -inf
        x = L.MaxPooling2D(3, strides=2, name="maxpool")(x)
    else:
        x = _conv_bn(inputs, 64, 3, 1, "conv1", "bn1", relu=True)
    for stage, (n, filters) in enumerate(zip(blocks, (64, 128, 256, 512))):
        for b in range(n):
            stride = 2 if stage > 0 and b == 0 else 1
            x = _basic_block(x, filters, stride, f"layer{stage + 1}.{b}")
    if include_top:
        x = L.GlobalAveragePooling2D(name="avgpool")(x)
        x = L.Dense(classes, activation=classifier_activation, name="fc")(x)
    elif pooling == "avg":
        x = L.GlobalAveragePooling2D(name="avgpool")(x)
    elif pooling == "max":
        x = L.GlobalMaxPooling2D(name="maxpool_top")(x)
    model = Model(inputs, x, name=model_name)
    if weights is not None:
        model.load_weights(weights)
    return model


def ResNet18(include_top: bool = True, weights=None, input_tensor=None, input_shape=None,
             pooling=None, classes: int = 1000, classifier_activation="softmax",
             stem: str = "imagenet", name: str = "resnet18") -> Model:
    """ResNet-18: the ImageNet stem (7x7/2 convolution, 3x3/2 max pool) by
    default, ``stem="cifar"`` for small images (3x3/1 convolution, no pool);
    four stages of two basic blocks (64, 128, 256, 512 filters), global
    average pooling and a ``classes``-way Dense head (``include_top``).
    With ``classes=1000`` it has torchvision's 11,689,512 trainable
    parameters. ``weights``: None (random) or a weights file path.

    >>> model = maas.applications.ResNet18(input_shape=(32, 32, 3), classes=10, stem="cifar")
    >>> model.predict(np.zeros((2, 32, 32, 3), np.float32), verbose=0).shape
    (2, 10)
    """
    return _resnet((2, 2, 2, 2), name, include_top, weights, input_tensor, input_shape, pooling,
                   classes, classifier_activation, stem)


def ResNet34(include_top: bool = True, weights=None, input_tensor=None, input_shape=None,
             pooling=None, classes: int = 1000, classifier_activation="softmax",
             stem: str = "imagenet", name: str = "resnet34") -> Model:
    """ResNet-34: as :func:`ResNet18` with (3, 4, 6, 3) basic blocks
    (21,797,672 trainable parameters with ``classes=1000``)."""
    return _resnet((3, 4, 6, 3), name, include_top, weights, input_tensor, input_shape, pooling,
                   classes, classifier_activation, stem)


def torchvision_name_map(model) -> dict:
    """``name_map`` for ``model.load_weights`` from a torchvision ResNet's
    ``state_dict`` (saved as safetensors, without its ``num_batches_tracked``
    counters): convolution kernels permuted from PyTorch's (out, in, kh, kw),
    the Dense kernel transposed, BatchNormalization's weight/bias/running
    statistics as gamma/beta/moving mean and variance."""
    from ..saving.model_file import weight_names

    bn = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
          "moving_variance": "running_var"}
    out = {}
    for name, w in weight_names(model):
        layer, var = name.rsplit("/", 1)
        if var in bn:
            out[name] = f"{layer}.{bn[var]}"
        elif layer == "fc":
            out[name] = ("fc.weight", "transpose") if var == "kernel" else "fc.bias"
        else:
            out[name] = (f"{layer}.weight", (2, 3, 1, 0))
    return out
