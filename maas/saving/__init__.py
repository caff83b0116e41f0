"""Saving and loading: the model file (safetensors, read and written in C),
and the versioned model repository.

>>> import numpy as np, tempfile, os, maas
>>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
>>> maas.saving.save_tensors(path, {"w": np.ones(2, np.float32)})
>>> maas.saving.load_tensors(path)[0]["w"].numpy()
array([1., 1.], dtype=float32)
"""
from .model_file import (load_from_repository, load_model, load_weights, model_from_json,
                         model_to_json, save_model, save_weights, weight_names)
from .encryption import Encryption
from .object_registration import (CustomObjectScope, custom_object_scope, get_custom_objects,
                                  get_registered_name, get_registered_object,
                                  register_keras_serializable, register_serializable)
from .repository import MODEL_FILENAME, list_versions, save_to_repository, version_path
from .safetensors import (CHECKSUM_KEY, CONFIG_KEY, FORMAT_VERSION_KEY, MAAS_VERSION_KEY,
                          TRAINING_CONFIG_KEY, data_sha256, load_tensors, save_tensors, verify_file)

__all__ = ["save_model", "load_model", "save_weights", "load_weights", "load_from_repository",
           "register_serializable", "weight_names", "save_tensors", "load_tensors", "verify_file", "data_sha256", "list_versions",
           "version_path", "save_to_repository", "MODEL_FILENAME", "CHECKSUM_KEY", "CONFIG_KEY",
           "FORMAT_VERSION_KEY", "MAAS_VERSION_KEY", "TRAINING_CONFIG_KEY",
           "register_keras_serializable", "custom_object_scope", "CustomObjectScope",
           "get_custom_objects", "get_registered_name", "get_registered_object",
           "model_from_json", "model_to_json", "Encryption"]
