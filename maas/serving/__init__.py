"""maas.serving: serve models over HTTP with Flask, under gunicorn.

>>> from maas.serving import create_app, blueprint           # doctest: +SKIP
>>> app = create_app(model)                                  # one model, as "model"
>>> app = create_app({"digits": model, "iris": "iris.maas"})
>>> app = create_app("models/")            # a repository: models/<name>/<version>/
>>> my_app.register_blueprint(blueprint("models/"), url_prefix="/ml")

It speaks the Open Inference Protocol V2 (KServe, Triton; with the binary
tensor extension), TF Serving's REST API and a simple ``POST /predict``,
with ``/metrics`` for Prometheus. ``maas serve REPO`` runs it under gunicorn.
"""
from .app import blueprint, create_app
from .errors import ServingError
from .model import ServedModel, from_model

__all__ = ["create_app", "blueprint", "ServedModel", "from_model", "ServingError"]
