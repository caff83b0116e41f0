/* bind_cast.c -- _core.cast (typed tensors) and _core.scce_int (sparse
 * categorical crossentropy on integer labels). Temporary home: both move
 * onto the op table with the rest of the op bindings. */
#include "common.h"

#include <math.h>
#include <string.h>

#define SHAPE(t, buf) maas_shape_str((t)->ndim, (t)->shape, buf, sizeof buf)

/* cast(x, dtype) -> Tensor of dtype. x itself (shared, not copied) when it
 * already has that dtype, so a float32 -> float32 cast passes gradients
 * through unchanged; any other cast is a new tensor that no tape tracks
 * (integers carry no gradient, as in Keras). */
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
    maas_tensor *out = maas_tensor_new_typed(dt, src->ndim, src->shape);
    maas_status s = MAAS_ERR_NOMEM;
    if (out)
        MAAS_NOGIL_IF(src->size > MAAS_NOGIL_WORK,
                      s = maas_cast(out->ptr, dt, src->ptr, src->dtype, src->size));
    maas_tensor_decref(src);
    if (s != MAAS_OK) {
        maas_tensor_decref(out);
        return raise_status(s);
    }
    return tensor_wrap(st, out);
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

/* The labels as an integer tensor: integer tensors and arrays as they are
 * (no copy), float ones converted to int64 when every value is a whole
 * number. New reference, or NULL with an exception. */
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
    maas_tensor *l = maas_tensor_new_typed(MAAS_I64, t->ndim, t->shape);
    maas_status s = MAAS_ERR_NOMEM;
    if (l)
        s = maas_cast(l->ptr, MAAS_I64, t->ptr, MAAS_F32, t->size);
    maas_tensor_decref(t);
    if (s != MAAS_OK) {
        maas_tensor_decref(l);
        raise_status(s);
        return NULL;
    }
    return l;
}

/* node: in {y_pred}, saved = the integer labels, i = {N, C, from_logits} */
static maas_status grad_scce_int(const maas_node *nd, const maas_tensor *gout,
                                 maas_tensor *const *gin)
{
    return maas_scce_backward_typed(gin[0]->data, gout->data, nd->saved->ptr, nd->saved->dtype,
                                    nd->in[0]->data, nd->i[0], nd->i[1], (int)nd->i[2]);
}

/* scce_int(y_true, y_pred, from_logits=False) -> per-sample losses (N...),
 * recorded on active tapes (gradient to y_pred only). */
static PyObject *py_scce_int(PyObject *m, PyObject *args)
{
    PyObject *yt, *yp, *r = NULL;
    int from_logits = 0;
    if (!PyArg_ParseTuple(args, "OO|p:scce_int", &yt, &yp, &from_logits))
        return NULL;
    module_state *st = state_of_module(m);
    maas_tensor *t = integer_labels(st, yt), *p = NULL, *out = NULL;
    if (!t || !(p = as_float_tensor(st, yp, scce_name)))
        goto done;
    char st_[160], sp[160];
    if (p->ndim < 1) {
        PyErr_Format(PyExc_ValueError, "%s: y_pred must have at least 1 dimension, got shape %s",
                     scce_name, SHAPE(p, sp));
        goto done;
    }
    int64_t C = p->shape[p->ndim - 1], N = C ? p->size / C : 0;
    if (C == 0)
        for (int d = 0; d < p->ndim - 1; d++)
            N = d ? N * p->shape[d] : p->shape[d];
    int ok = t->size == N, tn = t->ndim;
    if (ok && tn == p->ndim && t->shape[tn - 1] == 1)
        tn--;
    ok = ok && tn == p->ndim - 1;
    for (int d = 0; ok && d < tn; d++)
        ok = t->shape[d] == p->shape[d];
    if (!ok) {
        PyErr_Format(PyExc_ValueError,
                     "%s: y_true shape %s does not fit y_pred shape %s: expected integer labels "
                     "of shape %s (or with a trailing 1); for one-hot labels use "
                     "categorical_crossentropy",
                     scce_name, SHAPE(t, st_), SHAPE(p, sp),
                     maas_shape_str(p->ndim - 1, p->shape, st_ + 80, 80));
        goto done;
    }
    maas_status s = MAAS_ERR_NOMEM;
    if ((out = maas_tensor_new(p->ndim - 1, p->shape)))
        MAAS_NOGIL_IF(p->size > MAAS_NOGIL_WORK,
                      s = maas_scce_forward_typed(out->data, t->ptr, t->dtype, p->data, N, C,
                                                  from_logits));
    if (s != MAAS_OK) {
        raise_status(s);
        goto done;
    }
    if (tapes_active()) {
        /* the labels are `saved`, not an input: no gradient flows to them */
        maas_node nd = {.backward = grad_scce_int, .name = scce_name, .ninputs = 1,
                        .in = {p}, .out = out, .saved = t, .i = {N, C, from_logits}};
        if (record_node(&nd) < 0)
            goto done;
    }
    r = tensor_wrap(st, out);
    out = NULL; /* stolen */
done:
    maas_tensor_decref(out);
    maas_tensor_decref(p);
    maas_tensor_decref(t);
    return r;
}

PyMethodDef bind_cast_methods[] = {
    {"cast", py_cast, METH_VARARGS,
     "cast(x, dtype) -> Tensor: NumPy's astype between float32, int32, int64, int8, uint8, bool"},
    {"scce_int", py_scce_int, METH_VARARGS,
     "scce_int(y_true, y_pred, from_logits=False) -> per-sample sparse categorical crossentropy\n"
     "with integer labels (int32/int64/int8/uint8 as they are; whole-number floats converted)"},
    {NULL}};
