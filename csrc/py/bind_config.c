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

/* gemm_split(M, N, K, max_blocks) -> (blocks, over_rows): how deterministic
 * mode splits a product on a machine with that block cap (for tests and
 * benchmarks). */
static PyObject *py_gemm_split(PyObject *m, PyObject *args)
{
    long long M, N, K;
    int max_blocks;
    if (!PyArg_ParseTuple(args, "LLLi", &M, &N, &K, &max_blocks))
        return NULL;
    if (M < 0 || N < 0 || K < 0 || max_blocks < 1)
        return PyErr_Format(PyExc_ValueError,
                            "gemm_split: sizes must be >= 0 and max_blocks >= 1, received "
                            "M=%lld, N=%lld, K=%lld, max_blocks=%d", M, N, K, max_blocks);
    int rows = 0;
    int tiles = maas_sgemm_tiles(M, N, K, max_blocks, &rows);
    return Py_BuildValue("(iO)", tiles, rows ? Py_True : Py_False);
}

static PyObject *py_gemm_max_blocks(PyObject *m, PyObject *noargs)
{
    return PyLong_FromLong(maas_gemm_max_blocks());
}

PyMethodDef bind_config_methods[] = {
    {"gemm_max_blocks", py_gemm_max_blocks, METH_NOARGS,
     "gemm_max_blocks() -> int: the most blocks deterministic mode cuts a product into (the "
     "machine's processor count, at least 2; never the thread count)"},
    {"set_deterministic", py_set_deterministic, METH_O,
     "set_deterministic(flag)\n\nTrue (the default unless MAAS_DETERMINISTIC=0): GEMMs give the "
     "same bits at any thread count."},
    {"get_deterministic", py_get_deterministic, METH_NOARGS, "get_deterministic() -> bool"},
    {"gemm_split", py_gemm_split, METH_VARARGS,
     "gemm_split(M, N, K, max_blocks) -> (blocks, over_rows): deterministic mode's split of a "
     "product on a machine with that block cap (see gemm_max_blocks)"},
    {NULL}};
