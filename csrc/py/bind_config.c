/* bind_config.c -- run-time settings of the core that are not ops:
 * deterministic GEMMs (csrc/threads.c, csrc/blas.c). */
#include "common.h"

static PyObject *py_set_deterministic(PyObject *m, PyObject *arg)
{
    int on = PyObject_IsTrue(arg);
    if (on < 0)
        return NULL;
    maas_set_deterministic(on);
    Py_RETURN_NONE;
}

static PyObject *py_get_deterministic(PyObject *m, PyObject *unused)
{
    return PyBool_FromLong(maas_get_deterministic());
}

/* gemm_split(M, N, K, nthreads) -> (blocks, over_rows): how deterministic
 * mode splits a product (for tests and benchmarks). */
static PyObject *py_gemm_split(PyObject *m, PyObject *args)
{
    long long M, N, K;
    int nthreads;
    if (!PyArg_ParseTuple(args, "LLLi", &M, &N, &K, &nthreads))
        return NULL;
    if (M < 0 || N < 0 || K < 0 || nthreads < 1)
        return PyErr_Format(PyExc_ValueError,
                            "gemm_split: sizes must be >= 0 and nthreads >= 1, received "
                            "M=%lld, N=%lld, K=%lld, nthreads=%d", M, N, K, nthreads);
    int rows = 0;
    int tiles = maas_sgemm_tiles(M, N, K, nthreads, &rows);
    return Py_BuildValue("(iO)", tiles, rows ? Py_True : Py_False);
}

PyMethodDef bind_config_methods[] = {
    {"set_deterministic", py_set_deterministic, METH_O,
     "set_deterministic(flag)\n\nTrue (the default unless MAAS_DETERMINISTIC=0): GEMMs give the "
     "same bits at any thread count."},
    {"get_deterministic", py_get_deterministic, METH_NOARGS, "get_deterministic() -> bool"},
    {"gemm_split", py_gemm_split, METH_VARARGS,
     "gemm_split(M, N, K, nthreads) -> (blocks, over_rows): deterministic mode's split of a product"},
    {NULL}};
