"""maas.applications.ResNet18/ResNet34: torchvision's parameter count, the
same logits as a torchvision-shaped ResNet-18 (written here in plain
torch.nn with torchvision's module names: torchvision itself cannot be
imported here) whose random state_dict is loaded through
load_weights(..., name_map=...), and a training step that changes the loss.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import maas
from maas.applications.resnet import torchvision_name_map
from maas.saving import save_tensors


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class TorchResNet(nn.Module):
    """torchvision.models.resnet.ResNet(BasicBlock, layers), module for
    module (names, padding, initialisation); cifar=True swaps the stem for a
    3x3/1 convolution without the max pool."""

    def __init__(self, layers=(2, 2, 2, 2), num_classes=1000, cifar=False):
        super().__init__()
        self.inplanes = 64
        self.conv1 = (nn.Conv2d(3, 64, 3, 1, 1, bias=False) if cifar
                      else nn.Conv2d(3, 64, 7, 2, 3, bias=False))
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if cifar else nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], 2)
        self.layer3 = self._make_layer(256, layers[2], 2)
        self.layer4 = self._make_layer(512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def torch_model(seed, **kwargs):
    torch.manual_seed(seed)
    net = TorchResNet(**kwargs)
    # move every BatchNorm off its identity initialisation, so that the
    # statistics and affine parameters are really checked
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
    return net.eval()


def load_into(model, net, tmp_path):
    state = {k: v.detach().numpy() for k, v in net.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    path = str(tmp_path / "resnet.safetensors")
    save_tensors(path, state)
    model.load_weights(path, name_map=torchvision_name_map(model))


def relative_error(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_parameter_count_is_torchvisions():
    model = maas.applications.ResNet18(weights=None)   # classes=1000, 224x224x3
    assert tuple(model.inputs[0].shape) == (None, 224, 224, 3)
    assert model.output_shape == (None, 1000)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    net = TorchResNet()
    assert trainable == sum(p.numel() for p in net.parameters()) == 11_689_512
    # the moving statistics are weights too (non-trainable), as in Keras
    assert model.count_params() == trainable + sum(b.numel() for n, b in net.named_buffers()
                                                   if not n.endswith("num_batches_tracked"))
    r34 = maas.applications.ResNet34(weights=None)
    assert sum(int(np.prod(w.shape)) for w in r34.trainable_weights) == sum(
        p.numel() for p in TorchResNet((3, 4, 6, 3)).parameters()) == 21_797_672


def test_imagenet_stem_gives_torchvisions_logits(tmp_path):
    net = torch_model(0)
    model = maas.applications.ResNet18(weights=None, classifier_activation=None)
    load_into(model, net, tmp_path)
    x = np.random.default_rng(0).normal(size=(1, 224, 224, 3)).astype(np.float32)
    got = model.predict(x, verbose=0)
    with torch.no_grad():
        want = net(torch.tensor(x).permute(0, 3, 1, 2)).numpy()
    assert got.shape == want.shape == (1, 1000)
    assert relative_error(got, want) <= 1e-4
    assert model.eager_reason is None


def test_cifar_stem_gives_the_same_logits_and_softmax(tmp_path):
    net = torch_model(1, num_classes=10, cifar=True)
    model = maas.applications.ResNet18(input_shape=(32, 32, 3), classes=10, stem="cifar")
    assert "maxpool" not in [lay.name for lay in model.layers]
    load_into(model, net, tmp_path)
    x = np.random.default_rng(1).normal(size=(3, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        want = torch.softmax(net(torch.tensor(x).permute(0, 3, 1, 2)), -1).numpy()
    assert relative_error(model.predict(x, verbose=0), want) <= 1e-4


def test_one_training_step_changes_the_loss():
    maas.utils.set_random_seed(0)
    model = maas.applications.ResNet18(input_shape=(32, 32, 3), classes=10, stem="cifar")
    model.compile(optimizer=maas.optimizers.SGD(0.01, momentum=0.9),
                  loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 32, 32, 3)).astype(np.float32)
    y = np.array([3, 7])
    before = model.evaluate(x, y, batch_size=2, verbose=0)
    moving = np.asarray(model.get_layer("bn1").moving_mean).copy()
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    after = model.evaluate(x, y, batch_size=2, verbose=0)
    assert np.isfinite(before) and np.isfinite(after) and after != before
    assert model.eager_reason is None
    # training updated BatchNormalization's moving statistics
    assert not np.array_equal(np.asarray(model.get_layer("bn1").moving_mean), moving)


def test_arguments():
    with pytest.raises(ValueError, match="stem must be 'imagenet'.*or 'cifar'"):
        maas.applications.ResNet18(stem="tiny")
    with pytest.raises(ValueError, match="pretrained ImageNet weights are not bundled"):
        maas.applications.ResNet18(weights="imagenet")
    m = maas.applications.ResNet18(include_top=False, pooling="avg", input_shape=(64, 64, 3))
    assert m.output_shape == (None, 512)
    assert maas.applications.ResNet18(include_top=False, input_shape=(64, 64, 3)).output_shape == (None, 2, 2, 512)


def test_inference_folds_every_batchnorm_into_its_convolution(tmp_path):
    """predict's plan folds the 20 BatchNormalizations into the convolutions
    before them; the logits stay within 1e-5 of the plan as traced, and the
    training path keeps its BatchNormalization nodes."""
    import maas.engine as engine

    net = torch_model(2, num_classes=10, cifar=True)
    model = maas.applications.ResNet18(input_shape=(32, 32, 3), classes=10, stem="cifar",
                                       classifier_activation=None)
    load_into(model, net, tmp_path)
    x = np.random.default_rng(3).normal(size=(2, 32, 32, 3)).astype(np.float32)
    engine.FOLD_BATCHNORM = False
    try:
        traced = model.predict(x, verbose=0)
        (tr,) = model._plan._predict.values()
        n_traced = tr.plan.num_nodes
    finally:
        engine.FOLD_BATCHNORM = True
    np.testing.assert_array_equal(traced, np.asarray(model(x, training=False)))
    model.compile(optimizer="sgd", loss="mse")   # a new plan, folded
    got = model.predict(x, verbose=0)
    (tr,) = model._plan._predict.values()
    n_bn = sum(isinstance(lay, maas.layers.BatchNormalization) for lay in model.layers)
    assert n_bn == 20 and tr.plan.num_nodes == n_traced - n_bn
    assert relative_error(got, traced) <= 1e-5
    with torch.no_grad():
        want = net(torch.tensor(x).permute(0, 3, 1, 2)).numpy()
    assert relative_error(got, want) <= 1e-4
