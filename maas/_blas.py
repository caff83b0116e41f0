"""Loads the OpenBLAS library of the scipy-openblas32 wheel before maas._core.

_core links against ``libscipy_openblas.so``; loading it here first (by its
soname, globally) lets the dynamic linker resolve _core's dependency wherever
pip put the wheel, for regular and editable installs alike. A build linked to
a system OpenBLAS (MAAS_SYSTEM_BLAS=1) does not need the wheel.
"""
import ctypes
import os


def load() -> None:
    try:
        import scipy_openblas32
    except ImportError:  # a build against a system OpenBLAS
        return
    path = os.path.join(scipy_openblas32.get_lib_dir(), f"lib{scipy_openblas32.get_library()}.so")
    if os.path.exists(path):
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
