"""Builds maas._core, the C extension.

OpenBLAS comes from the scipy-openblas32 wheel (what NumPy's own wheels use),
so `pip install .` needs no system package. Set MAAS_SYSTEM_BLAS=1 to link a
system OpenBLAS found by pkg-config instead. Set MAAS_PORTABLE=1 to build
without -march=native (e.g. for a wheel that runs on other CPUs).
"""
import glob
import os
import shlex
import subprocess

import numpy
from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def blas_flags():
    if os.environ.get("MAAS_SYSTEM_BLAS") == "1":
        def pkg(flag):
            return shlex.split(subprocess.check_output(["pkg-config", flag, "openblas"], text=True))
        return dict(extra_compile_args=pkg("--cflags"), extra_link_args=pkg("--libs"),
                    define_macros=[("MAAS_SYSTEM_BLAS", "1")])
    import scipy_openblas32

    return dict(
        include_dirs=[scipy_openblas32.get_include_dir()],
        library_dirs=[scipy_openblas32.get_lib_dir()],
        libraries=[scipy_openblas32.get_library()],
        # At run time maas/_blas.py loads the wheel's library before _core;
        # the rpath finds it too when both live in the same site-packages.
        extra_link_args=["-Wl,-rpath,$ORIGIN/../scipy_openblas32/lib"],
    )


def extension():
    sources = sorted(glob.glob("csrc/*.c") + glob.glob("csrc/ops/*.c") + glob.glob("csrc/py/*.c"))
    blas = blas_flags()
    cflags = ["-std=gnu11", "-O3", "-fopenmp", "-Wall", "-Wextra", "-Wshadow",
              "-Wno-unused-parameter", "-Wno-missing-field-initializers",
              "-fno-math-errno", "-fvisibility=hidden"]
    if os.environ.get("MAAS_PORTABLE") != "1":
        cflags.append("-march=native")
    if os.environ.get("MAAS_ASAN") == "1":
        cflags += ["-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    return Extension(
        "maas._core",
        sources=sources,
        include_dirs=["csrc", numpy.get_include()] + blas.get("include_dirs", []),
        library_dirs=blas.get("library_dirs", []),
        libraries=blas.get("libraries", []),
        define_macros=blas.get("define_macros", []),
        extra_compile_args=cflags + blas.get("extra_compile_args", []),
        extra_link_args=["-fopenmp"] + blas.get("extra_link_args", []),
        depends=glob.glob("csrc/*.h") + glob.glob("csrc/py/*.h"),
    )


setup(ext_modules=[extension()])
