/* errors.c -- maps a maas_status and the core's message to an exception. */
#include "common.h"

PyObject *raise_status(maas_status s)
{
    const char *msg = maas_last_error();
    PyObject *exc;
    switch (s) {
    case MAAS_ERR_NOMEM: exc = PyExc_MemoryError; break;
    case MAAS_ERR_TYPE: exc = PyExc_TypeError; break;
    case MAAS_ERR_IO: exc = PyExc_OSError; break;
    case MAAS_ERR_STATE: exc = PyExc_RuntimeError; break;
    case MAAS_ERR_FORMAT: /* maas.errors.ModelFormatError when importable */
    {
        PyObject *mod = PyImport_ImportModule("maas.errors");
        PyObject *cls = mod ? PyObject_GetAttrString(mod, "ModelFormatError") : NULL;
        Py_XDECREF(mod);
        if (cls) {
            PyErr_SetString(cls, msg);
            Py_DECREF(cls);
            return NULL;
        }
        PyErr_Clear();
        exc = PyExc_ValueError;
        break;
    }
    default: exc = PyExc_ValueError; break;
    }
    PyErr_SetString(exc, msg);
    return NULL;
}
