"""Ready-made models: pretrained encoders and classic architectures.

>>> import maas
>>> maas.applications.BertEncoder.__name__
'BertEncoder'
"""
from .bert import BertEncoder, SentenceEmbeddingModel, SentenceEncoder  # noqa: F401
