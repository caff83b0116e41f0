"""Ready-made model architectures (Keras's ``keras.applications``).

>>> import maas
>>> model = maas.applications.ResNet18(input_shape=(32, 32, 3), classes=10, stem="cifar")
>>> model.output_shape
(None, 10)
"""
from .resnet import ResNet18, ResNet34
