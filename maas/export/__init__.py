"""Exporting models to other formats: ONNX (``model.export(path,
format="onnx")``, the ``onnx`` extra).

>>> import maas
>>> # model.export("model.onnx", format="onnx")
"""
from .onnx import ExportError, export_onnx

__all__ = ["ExportError", "export_onnx"]
