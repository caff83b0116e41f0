"""The error of ``import maas`` from a source checkout that has no built
extension, as NumPy's "you should not try to import numpy from its source
directory": the usual cause is a command run in the checkout's root, where
``python -m`` and ``python -c`` put the working folder (and its ``maas/``)
first on sys.path, ahead of the installed package."""
from __future__ import annotations

import importlib.machinery
import os


def source_tree_error(init_file: str) -> ImportError | None:
    """An ImportError saying what to do when ``maas/`` (the folder of
    ``init_file``) sits in a source tree and holds no ``_core`` built for
    this Python; None otherwise (the original error then stands)."""
    pkg = os.path.dirname(os.path.abspath(init_file))
    root = os.path.dirname(pkg)
    in_source_tree = os.path.isfile(os.path.join(root, "setup.py")) and \
        os.path.isdir(os.path.join(root, "csrc"))
    built = any(os.path.exists(os.path.join(pkg, "_core" + suffix))
                for suffix in importlib.machinery.EXTENSION_SUFFIXES)
    if not in_source_tree or built:
        return None
    return ImportError(
        f"maas._core is not built: you are importing maas from its source tree ({root}), "
        f"whose maas/ has no compiled extension for this Python. Build it with "
        f"`pip install .` there (or `python setup.py build_ext --inplace` to develop in "
        f"place), or run Python from another folder so that the installed maas is imported.",
        name="maas._core", path=pkg)
