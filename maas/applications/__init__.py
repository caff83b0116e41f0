"""Ready-made models: classic architectures (Keras's ``keras.applications``)
and pretrained encoders.

>>> import maas
>>> model = maas.applications.ResNet18(input_shape=(32, 32, 3), classes=10, stem="cifar")
>>> model.output_shape
(None, 10)
"""
from .bert import BertEncoder, SentenceEncoder  # noqa: F401
from .resnet import ResNet18, ResNet34  # noqa: F401
