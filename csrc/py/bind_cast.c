/* bind_cast.c -- _core.cast (typed tensors) and _core.scce_int (sparse
 * categorical crossentropy on integer labels). Temporary home: both move
 * onto the op table with the rest of the op bindings. */
#include "common.h"

#include <math.h>
#include <string.h>

#define SHAPE(t, buf) maas_shape_str((t)->ndim, (t)->shape, buf, sizeof buf)

/* cast(x, dtype) -> Tensor of dtype. x itself (shared, not copied) when it
 * already has that dtype, so a float32 -> float32 cast passes gradients
 * through unchanged; any other cast is a cast node of the op table (traced
 * like any op; integers carry no gradient, as in Keras). */
static PyObject *py_cast(PyObject *m, PyObject *args)
{
    PyObject *x;
    maas_dtype dt;
    if (!PyArg_ParseTuple(args, "OO&:cast", &x, dtype_converter, &dt))
        return NULL;
    module_state *st = state_of_module(m);
    if (is_tensor(st, x) && TENSOR(x)->dtype == dt)
        return Py_NewRef(x);
    maas_tensor *src = as_typed_tensor(st, x, -1, 0);
    if (!src)
        return NULL;
    if (src->dtype == dt)
        return tensor_wrap(st, src);
    int64_t to = dt;
    maas_tensor *out = run_op(MAAS_OP_CAST, 1, &src, &to, sizeof to);
    return out ? tensor_wrap(st, out) : NULL;
}

/* ------------------------------------------------ integer-label SCCE */

static const char scce_name[] = "sparse_categorical_crossentropy";

/* maas._typed.IntegerLabelError (a TypeError and a ValueError), or
 * ValueError when it cannot be imported. */
static PyObject *raise_label_error(const char *msg)
{
    PyObject *mod = PyImport_ImportModule("maas._typed");
    PyObject *cls = mod ? PyObject_GetAttrString(mod, "IntegerLabelError") : NULL;
    Py_XDECREF(mod);
    if (!cls)
        PyErr_Clear();
    PyErr_SetString(cls ? cls : PyExc_ValueError, msg);
    Py_XDECREF(cls);
    return NULL;
}

/* The labels: integer tensors and arrays as they are (no copy), float ones
 * when every value is a whole number. New reference, or NULL with an
 * exception. */
static maas_tensor *integer_labels(module_state *st, PyObject *o)
{
    maas_tensor *t = as_typed_tensor(st, o, -1, 0);
    if (!t)
        return NULL;
    if (t->dtype == MAAS_BOOL) {
        maas_tensor_decref(t);
        raise_label_error("sparse_categorical_crossentropy: labels must be an integer tensor, "
                          "received bool");
        return NULL;
    }
    if (t->dtype != MAAS_F32)
        return t;
    int whole = 1;
    for (int64_t i = 0; i < t->size && whole; i++)
        whole = isfinite(t->data[i]) && t->data[i] == truncf(t->data[i]);
    if (!whole) {
        maas_tensor_decref(t);
        raise_label_error("sparse_categorical_crossentropy: labels must be an integer tensor, "
                          "received float32 with non-integer values");
        return NULL;
    }
    /* whole numbers: the loss op reads float32 labels as they are (the same
     * bits as integer labels), so a traced step replays with new labels */
    return t;
}

/* scce_int(y_true, y_pred, from_logits=False) -> per-sample losses (N...):
 * the loss op of the table with integer (or whole-number float) labels. */
static PyObject *py_scce_int(PyObject *m, PyObject *args)
{
    PyObject *yt, *yp;
    int from_logits = 0;
    if (!PyArg_ParseTuple(args, "OO|p:scce_int", &yt, &yp, &from_logits))
        return NULL;
    module_state *st = state_of_module(m);
    maas_tensor *in[2] = {as_float_tensor(st, yp, scce_name), NULL}; /* y_pred, y_true */
    if (!in[0])
        return NULL;
    if (!(in[1] = integer_labels(st, yt))) {
        maas_tensor_decref(in[0]);
        return NULL;
    }
    int64_t a[2] = {MAAS_L_SCCE, from_logits};
    maas_tensor *out = run_op(MAAS_OP_LOSS, 2, in, a, sizeof a);
    return out ? tensor_wrap(st, out) : NULL;
}

PyMethodDef bind_cast_methods[] = {
    {"cast", py_cast, METH_VARARGS,
     "cast(x, dtype) -> Tensor: NumPy's astype between float32, int32, int64, int8, uint8, bool"},
    {"scce_int", py_scce_int, METH_VARARGS,
     "scce_int(y_true, y_pred, from_logits=False) -> per-sample sparse categorical crossentropy\n"
     "with integer labels (int32/int64/int8/uint8 as they are; whole-number floats converted)"},
    {NULL}};
