/* bind_ops.c -- the ops of maas._core: argument parsing, shape checks with
 * the GIL held, output allocation, the kernel (GIL released when large), and
 * recording on active tapes. Nothing else. */
#include "common.h"

#include <string.h>

#define SHAPE(t, buf) maas_shape_str((t)->ndim, (t)->shape, buf, sizeof buf)

/* Wraps `out` (reference stolen) after recording nd on active tapes. nd may
 * be NULL for ops without a gradient. */
static PyObject *finish(module_state *st, maas_tensor *out, maas_node *nd)
{
    if (nd && tapes_active()) {
        nd->out = out;
        if (record_node(nd) < 0) {
            maas_tensor_decref(out);
            return NULL;
        }
    }
    return tensor_wrap(st, out);
}

static void decref_all(maas_tensor **ts, int n)
{
    for (int i = 0; i < n; i++)
        maas_tensor_decref(ts[i]);
}

/* A view of x (recorded, so gradients flow through it). New reference. */
static maas_tensor *make_view(maas_tensor *x, int64_t offset, int ndim, const int64_t *shape)
{
    maas_tensor *v = maas_tensor_view(x, offset, ndim, shape);
    if (!v) {
        raise_status(MAAS_ERR_VALUE);
        return NULL;
    }
    if (tapes_active()) {
        maas_node nd = {.backward = maas_grad_view, .name = "view", .ninputs = 1,
                        .in = {x}, .out = v, .i = {offset}};
        if (record_node(&nd) < 0) {
            maas_tensor_decref(v);
            return NULL;
        }
    }
    return v;
}

static int normalize_axis(int64_t axis, int ndim, const char *op, int *out)
{
    int n = ndim ? ndim : 1;
    if (axis < -n || axis >= n) {
        PyErr_Format(PyExc_ValueError, "%s: axis %lld is out of bounds for a tensor of %d dimensions",
                     op, (long long)axis, ndim);
        return -1;
    }
    *out = (int)(axis < 0 ? axis + n : axis);
    return 0;
}

/* (outer, n, inner) of x around `axis`. */
static void split_axis(const maas_tensor *x, int axis, int64_t *outer, int64_t *n, int64_t *inner)
{
    *outer = 1;
    *inner = 1;
    for (int d = 0; d < axis; d++)
        *outer *= x->shape[d];
    *n = x->ndim ? x->shape[axis] : 1;
    for (int d = axis + 1; d < x->ndim; d++)
        *inner *= x->shape[d];
}

/* ------------------------------------------------------------ elementwise */

PyObject *op_unary(module_state *st, maas_unary_op op, PyObject *x, float alpha)
{
    if (!st)
        return NULL;
    maas_tensor *a = as_tensor(st, x);
    if (!a)
        return NULL;
    maas_tensor *out = maas_tensor_new_like(a);
    maas_status s = MAAS_ERR_NOMEM;
    if (out)
        MAAS_NOGIL_IF(a->size > MAAS_NOGIL_WORK,
                      s = maas_unary_forward(op, out->data, a->data, a->size, alpha));
    if (s != MAAS_OK) {
        maas_tensor_decref(a);
        maas_tensor_decref(out);
        return raise_status(s);
    }
    maas_node nd = {.backward = maas_grad_unary, .name = "unary", .ninputs = 1,
                    .in = {a}, .i = {op}, .f = {alpha}};
    PyObject *r = finish(st, out, &nd);
    maas_tensor_decref(a);
    return r;
}

static const char *binary_names[] = {"add", "subtract", "multiply", "divide", "power",
                                     "maximum", "minimum", "less", "less_equal",
                                     "greater", "greater_equal", "equal", "not_equal"};

PyObject *op_binary(module_state *st, maas_binary_op op, PyObject *x, PyObject *y)
{
    if (!st)
        return NULL;
    maas_tensor *in[2] = {as_tensor(st, x), NULL};
    if (!in[0])
        return NULL;
    if (!(in[1] = as_tensor(st, y))) {
        maas_tensor_decref(in[0]);
        return NULL;
    }
    int on;
    int64_t os[MAAS_MAX_DIMS];
    maas_tensor *out = NULL;
    maas_status s = maas_broadcast_shape(binary_names[op], in[0]->ndim, in[0]->shape,
                                         in[1]->ndim, in[1]->shape, &on, os);
    if (s == MAAS_OK) {
        s = MAAS_ERR_NOMEM;
        if ((out = maas_tensor_new(on, os)))
            MAAS_NOGIL_IF(out->size > MAAS_NOGIL_WORK,
                          s = maas_binary_forward(op, out, in[0], in[1]));
    }
    if (s != MAAS_OK) {
        decref_all(in, 2);
        maas_tensor_decref(out);
        return raise_status(s);
    }
    maas_node nd = {.backward = maas_grad_binary, .name = binary_names[op], .ninputs = 2,
                    .in = {in[0], in[1]}, .i = {op}};
    PyObject *r = finish(st, out, op < MAAS_B_LT ? &nd : NULL);
    decref_all(in, 2);
    return r;
}

static PyObject *py_unary(PyObject *m, PyObject *args)
{
    int op;
    PyObject *x;
    float alpha = 0.0f;
    if (!PyArg_ParseTuple(args, "iO|f:unary", &op, &x, &alpha))
        return NULL;
    if (op < 0 || op >= MAAS_U_COUNT)
        return PyErr_Format(PyExc_ValueError, "unary: unknown op %d", op);
    return op_unary(state_of_module(m), (maas_unary_op)op, x, alpha);
}

static PyObject *py_binary(PyObject *m, PyObject *args)
{
    int op;
    PyObject *x, *y;
    if (!PyArg_ParseTuple(args, "iOO:binary", &op, &x, &y))
        return NULL;
    if (op < 0 || op >= MAAS_B_COUNT)
        return PyErr_Format(PyExc_ValueError, "binary: unknown op %d", op);
    return op_binary(state_of_module(m), (maas_binary_op)op, x, y);
}

static PyObject *py_softmax(PyObject *m, PyObject *args)
{
    PyObject *x;
    long long axis = -1;
    int log = 0;
    if (!PyArg_ParseTuple(args, "O|Lp:softmax", &x, &axis, &log))
        return NULL;
    module_state *st = state_of_module(m);
    maas_tensor *a = as_tensor(st, x);
    if (!a)
        return NULL;
    int ax;
    if (normalize_axis(axis, a->ndim, log ? "log_softmax" : "softmax", &ax) < 0) {
        maas_tensor_decref(a);
        return NULL;
    }
    int64_t outer, n, inner;
    split_axis(a, ax, &outer, &n, &inner);
    maas_tensor *out = maas_tensor_new_like(a);
    maas_status s = MAAS_ERR_NOMEM;
    if (out)
        MAAS_NOGIL_IF(a->size > MAAS_NOGIL_WORK,
                      s = maas_softmax_forward(out->data, a->data, outer, n, inner, log));
    if (s != MAAS_OK) {
        maas_tensor_decref(a);
        maas_tensor_decref(out);
        return raise_status(s);
    }
    maas_node nd = {.backward = maas_grad_softmax, .name = "softmax", .ninputs = 1,
                    .in = {a}, .i = {outer, n, inner, log}};
    PyObject *r = finish(st, out, &nd);
    maas_tensor_decref(a);
    return r;
}

/* ------------------------------------------------------------- reductions */

static const char *reduce_names[] = {"sum", "mean", "max", "min"};

/* Reduces x over one axis (axis < 0: over everything). New reference. */
static maas_tensor *reduce_one(maas_reduce_op op, maas_tensor *x, int axis, int keepdims)
{
    int64_t outer, n, inner, os[MAAS_MAX_DIMS];
    int on = 0;
    if (axis < 0) {
        outer = inner = 1;
        n = x->size;
        if (keepdims)
            for (on = 0; on < x->ndim; on++)
                os[on] = 1;
    } else {
        split_axis(x, axis, &outer, &n, &inner);
        for (int d = 0; d < x->ndim; d++)
            if (d != axis)
                os[on++] = x->shape[d];
            else if (keepdims)
                os[on++] = 1;
    }
    maas_tensor *out = maas_tensor_new(on, os);
    maas_status s = MAAS_ERR_NOMEM;
    if (out)
        MAAS_NOGIL_IF(x->size > MAAS_NOGIL_WORK,
                      s = maas_reduce_forward(op, out->data, x->data, outer, n, inner));
    if (s != MAAS_OK) {
        maas_tensor_decref(out);
        raise_status(s);
        return NULL;
    }
    if (tapes_active()) {
        maas_node nd = {.backward = maas_grad_reduce, .name = reduce_names[op],
                        .ninputs = 1, .in = {x}, .out = out, .i = {op, outer, n, inner}};
        if (record_node(&nd) < 0) {
            maas_tensor_decref(out);
            return NULL;
        }
    }
    return out;
}

PyObject *op_reduce(module_state *st, maas_reduce_op op, PyObject *x, PyObject *axis,
                    int keepdims)
{
    if (!st)
        return NULL;
    maas_tensor *cur = as_tensor(st, x);
    if (!cur)
        return NULL;
    int axes[MAAS_MAX_DIMS], naxes = 0;
    if (axis != Py_None) {
        PyObject *seq = PySequence_Check(axis) ? PySequence_Fast(axis, "axis") : NULL;
        Py_ssize_t k = seq ? PySequence_Fast_GET_SIZE(seq) : 1;
        if (PyErr_Occurred() || k > MAAS_MAX_DIMS) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "%s: too many axes", reduce_names[op]);
            Py_XDECREF(seq);
            maas_tensor_decref(cur);
            return NULL;
        }
        for (Py_ssize_t i = 0; i < k; i++) {
            long long a = PyLong_AsLongLong(seq ? PySequence_Fast_GET_ITEM(seq, i) : axis);
            int ax;
            if ((a == -1 && PyErr_Occurred()) ||
                normalize_axis(a, cur->ndim, reduce_names[op], &ax) < 0) {
                Py_XDECREF(seq);
                maas_tensor_decref(cur);
                return NULL;
            }
            for (int j = 0; j < naxes; j++)
                if (axes[j] == ax) {
                    Py_XDECREF(seq);
                    maas_tensor_decref(cur);
                    return PyErr_Format(PyExc_ValueError, "%s: repeated axis %d",
                                        reduce_names[op], ax);
                }
            axes[naxes++] = ax;
        }
        Py_XDECREF(seq);
        if (cur->ndim == 0)
            naxes = 0; /* numpy: reducing a 0-d tensor over axis 0 is the identity */
    }
    if (axis == Py_None) {
        maas_tensor *r = reduce_one(op, cur, -1, keepdims);
        maas_tensor_decref(cur);
        return r ? finish(st, r, NULL) : NULL;
    }
    /* one axis at a time, the highest first so that lower indices stay valid */
    for (int i = 0; i < naxes; i++)
        for (int j = i + 1; j < naxes; j++)
            if (axes[j] > axes[i]) {
                int t = axes[i];
                axes[i] = axes[j];
                axes[j] = t;
            }
    for (int i = 0; i < naxes; i++) {
        maas_tensor *r = reduce_one(op, cur, axes[i], keepdims);
        maas_tensor_decref(cur);
        if (!r)
            return NULL;
        cur = r;
    }
    return tensor_wrap(st, cur);
}

static PyObject *py_reduce(PyObject *m, PyObject *args)
{
    int op, keepdims = 0;
    PyObject *x, *axis = Py_None;
    if (!PyArg_ParseTuple(args, "iO|Op:reduce", &op, &x, &axis, &keepdims))
        return NULL;
    if (op < 0 || op > MAAS_R_MIN)
        return PyErr_Format(PyExc_ValueError, "reduce: unknown op %d", op);
    return op_reduce(state_of_module(m), (maas_reduce_op)op, x, axis, keepdims);
}

/* ----------------------------------------------------------------- matmul */

static maas_tensor *matmul_core(maas_tensor *a, maas_tensor *b, int ta, int tb)
{
    char sa[160], sb[160];
    if (a->ndim < 2 || b->ndim < 2) {
        PyErr_Format(PyExc_ValueError, "matmul: operands need 2 or more dimensions here, got shapes %s and %s",
                     SHAPE(a, sa), SHAPE(b, sb));
        return NULL;
    }
    int an = a->ndim, bn = b->ndim;
    int64_t M = ta ? a->shape[an - 1] : a->shape[an - 2];
    int64_t Ka = ta ? a->shape[an - 2] : a->shape[an - 1];
    int64_t Kb = tb ? b->shape[bn - 1] : b->shape[bn - 2];
    int64_t N = tb ? b->shape[bn - 2] : b->shape[bn - 1];
    if (Ka != Kb) {
        PyErr_Format(PyExc_ValueError,
                     "matmul: shapes %s and %s not aligned: %lld (dim %d) != %lld (dim %d)",
                     SHAPE(a, sa), SHAPE(b, sb), (long long)Ka, ta ? an - 2 : an - 1,
                     (long long)Kb, tb ? bn - 1 : bn - 2);
        return NULL;
    }
    int64_t batch = 1, os[MAAS_MAX_DIMS];
    int on;
    if (bn == 2 && an > 2 && !ta) {
        /* (..., M, K) @ (K, N): fold the leading dims into M */
        for (int d = 0; d < an - 2; d++)
            M *= a->shape[d];
        on = an;
        memcpy(os, a->shape, sizeof(int64_t) * (size_t)an);
    } else if (an == bn) {
        for (int d = 0; d < an - 2; d++) {
            if (a->shape[d] != b->shape[d]) {
                PyErr_Format(PyExc_ValueError,
                             "matmul: batch dimensions of shapes %s and %s do not match",
                             SHAPE(a, sa), SHAPE(b, sb));
                return NULL;
            }
            batch *= a->shape[d];
            os[d] = a->shape[d];
        }
        on = an;
        os[an - 2] = M;
    } else {
        PyErr_Format(PyExc_ValueError,
                     "matmul: cannot batch shapes %s and %s: give both the same batch "
                     "dimensions, or make the second 2-D",
                     SHAPE(a, sa), SHAPE(b, sb));
        return NULL;
    }
    os[on - 1] = N;
    maas_tensor *out = maas_tensor_new(on, os);
    if (!out) {
        raise_status(MAAS_ERR_NOMEM);
        return NULL;
    }
    maas_status s;
    double work = (double)batch * (double)M * (double)N * (double)Ka;
    MAAS_NOGIL_IF(work > MAAS_NOGIL_WORK,
                  s = maas_matmul_forward(out->data, a->data, b->data, batch, M, N, Ka, ta, tb));
    if (s != MAAS_OK) {
        maas_tensor_decref(out);
        raise_status(s);
        return NULL;
    }
    if (tapes_active()) {
        maas_node nd = {.backward = maas_grad_matmul, .name = "matmul", .ninputs = 2,
                        .in = {a, b}, .out = out, .i = {batch, M, N, Ka, ta, tb}};
        if (record_node(&nd) < 0) {
            maas_tensor_decref(out);
            return NULL;
        }
    }
    return out;
}

PyObject *op_matmul(module_state *st, PyObject *x, PyObject *y, int ta, int tb)
{
    if (!st)
        return NULL;
    maas_tensor *in[2] = {as_tensor(st, x), NULL}, *out = NULL;
    if (!in[0] || !(in[1] = as_tensor(st, y))) {
        maas_tensor_decref(in[0]);
        return NULL;
    }
    /* NumPy's 1-D rules: a vector on the left is a row, on the right a
     * column, and that axis is dropped from the result */
    int squeeze_a = in[0]->ndim == 1, squeeze_b = in[1]->ndim == 1;
    if (squeeze_a) {
        maas_tensor *v = make_view(in[0], 0, 2, (int64_t[]){1, in[0]->shape[0]});
        maas_tensor_decref(in[0]);
        in[0] = v;
        ta = 0;
    }
    if (squeeze_b && in[0]) {
        maas_tensor *v = make_view(in[1], 0, 2, (int64_t[]){in[1]->shape[0], 1});
        maas_tensor_decref(in[1]);
        in[1] = v;
        tb = 0;
    }
    if (in[0] && in[1])
        out = matmul_core(in[0], in[1], ta, tb);
    decref_all(in, 2);
    if (out && (squeeze_a || squeeze_b)) {
        int64_t os[MAAS_MAX_DIMS];
        int on = 0;
        for (int d = 0; d < out->ndim; d++)
            if (!((squeeze_a && d == out->ndim - 2) || (squeeze_b && d == out->ndim - 1)))
                os[on++] = out->shape[d];
        maas_tensor *v = make_view(out, 0, on, os);
        maas_tensor_decref(out);
        out = v;
    }
    return out ? tensor_wrap(st, out) : NULL;
}

static PyObject *py_matmul(PyObject *m, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"a", "b", "transpose_a", "transpose_b", NULL};
    PyObject *a, *b;
    int ta = 0, tb = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|pp:matmul", kwlist, &a, &b, &ta, &tb))
        return NULL;
    return op_matmul(state_of_module(m), a, b, ta, tb);
}

static PyObject *py_dense(PyObject *m, PyObject *args)
{
    PyObject *x, *w, *b = Py_None;
    if (!PyArg_ParseTuple(args, "OO|O:dense", &x, &w, &b))
        return NULL;
    module_state *st = state_of_module(m);
    maas_tensor *in[3] = {NULL, NULL, NULL}, *out = NULL;
    int nin = b == Py_None ? 2 : 3;
    PyObject *objs[3] = {x, w, b};
    for (int i = 0; i < nin; i++)
        if (!(in[i] = as_tensor(st, objs[i]))) {
            decref_all(in, 3);
            return NULL;
        }
    char sx[160], sw[160];
    if (in[0]->ndim < 1 || in[1]->ndim != 2 || in[0]->shape[in[0]->ndim - 1] != in[1]->shape[0]) {
        if (in[1]->ndim != 2 || in[0]->ndim < 1)
            PyErr_Format(PyExc_ValueError, "dense: input shape %s and kernel shape %s: the kernel must be 2-D (in, units) and the input at least 1-D",
                         SHAPE(in[0], sx), SHAPE(in[1], sw));
        else
            PyErr_Format(PyExc_ValueError,
                         "dense: input shape %s and kernel shape %s not aligned: %lld (dim %d) != %lld (dim 0)",
                         SHAPE(in[0], sx), SHAPE(in[1], sw),
                         (long long)in[0]->shape[in[0]->ndim - 1], in[0]->ndim - 1,
                         (long long)in[1]->shape[0]);
        decref_all(in, 3);
        return NULL;
    }
    int64_t C = in[1]->shape[0], U = in[1]->shape[1];
    if (nin == 3 && !(in[2]->ndim == 1 && in[2]->shape[0] == U)) {
        PyErr_Format(PyExc_ValueError, "dense: bias shape %s does not match %lld units",
                     SHAPE(in[2], sx), (long long)U);
        decref_all(in, 3);
        return NULL;
    }
    int64_t N = C ? in[0]->size / C : 1, os[MAAS_MAX_DIMS];
    if (C == 0)
        for (int d = 0; d < in[0]->ndim - 1; d++)
            N = d ? N * in[0]->shape[d] : in[0]->shape[d];
    memcpy(os, in[0]->shape, sizeof(int64_t) * (size_t)in[0]->ndim);
    os[in[0]->ndim - 1] = U;
    maas_status s = MAAS_ERR_NOMEM;
    if ((out = maas_tensor_new(in[0]->ndim, os)))
        MAAS_NOGIL_IF((double)N * (double)C * (double)U > MAAS_NOGIL_WORK,
                      s = maas_dense_forward(out->data, in[0]->data, in[1]->data,
                                             nin == 3 ? in[2]->data : NULL, N, C, U));
    if (s != MAAS_OK) {
        decref_all(in, 3);
        maas_tensor_decref(out);
        return raise_status(s);
    }
    maas_node nd = {.backward = maas_grad_dense, .name = "dense", .ninputs = nin,
                    .in = {in[0], in[1], in[2]}, .i = {N, C, U}};
    PyObject *r = finish(st, out, &nd);
    decref_all(in, 3);
    return r;
}

/* ------------------------------------------------------------------ shape */

PyObject *op_reshape(module_state *st, PyObject *x, PyObject *shape)
{
    if (!st)
        return NULL;
    PyObject *seq = PySequence_Fast(shape, "reshape: the shape must be a sequence of ints");
    if (!seq)
        return NULL;
    Py_ssize_t nd = PySequence_Fast_GET_SIZE(seq);
    if (nd > MAAS_MAX_DIMS) {
        Py_DECREF(seq);
        return PyErr_Format(PyExc_ValueError, "reshape: at most %d dimensions", MAAS_MAX_DIMS);
    }
    int64_t os[MAAS_MAX_DIMS], known = 1;
    int infer = -1;
    for (Py_ssize_t d = 0; d < nd; d++) {
        long long v = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, d));
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return NULL;
        }
        if (v == -1 && infer < 0)
            infer = (int)d;
        else if (v < 0) {
            Py_DECREF(seq);
            return PyErr_Format(PyExc_ValueError, "reshape: invalid dimension %lld", v);
        } else if (maas_mul_size(known, v, &known) != 0) {
            Py_DECREF(seq);
            return PyErr_Format(PyExc_ValueError, "reshape: shape too large");
        }
        os[d] = v;
    }
    Py_DECREF(seq);
    maas_tensor *a = as_tensor(st, x);
    if (!a)
        return NULL;
    if (infer >= 0)
        os[infer] = known ? a->size / known : 0;
    int64_t total;
    if (maas_shape_size((int)nd, os, &total) != 0 || total != a->size ||
        (infer >= 0 && known == 0)) {
        char sa[160], sb[160];
        PyErr_Format(PyExc_ValueError, "reshape: cannot reshape a tensor of shape %s (%lld elements) into shape %s",
                     SHAPE(a, sa), (long long)a->size,
                     maas_shape_str((int)nd, os, sb, sizeof sb));
        maas_tensor_decref(a);
        return NULL;
    }
    maas_tensor *v = make_view(a, 0, (int)nd, os);
    maas_tensor_decref(a);
    return v ? tensor_wrap(st, v) : NULL;
}

static PyObject *py_reshape(PyObject *m, PyObject *args)
{
    PyObject *x, *shape;
    if (!PyArg_ParseTuple(args, "OO:reshape", &x, &shape))
        return NULL;
    return op_reshape(state_of_module(m), x, shape);
}

/* A float index array (e.g. a maas tensor of labels) is accepted when every
 * value is a whole number. */
static int is_tensor_index_ok(PyArrayObject *a)
{
    if (PyArray_TYPE(a) != NPY_FLOAT32 && PyArray_TYPE(a) != NPY_FLOAT64)
        return 0;
    PyArrayObject *d = (PyArrayObject *)PyArray_FromArray(a, PyArray_DescrFromType(NPY_FLOAT64),
                                                          NPY_ARRAY_CARRAY);
    if (!d) {
        PyErr_Clear();
        return 0;
    }
    const double *v = (const double *)PyArray_DATA(d);
    int ok = 1;
    for (npy_intp i = 0; i < PyArray_SIZE(d) && ok; i++)
        ok = v[i] == (double)(int64_t)v[i];
    Py_DECREF(d);
    return ok;
}

/* Rows of x picked by an integer array (negative indices count from the end). */
static maas_tensor *take_rows(maas_tensor *a, PyObject *key)
{
    PyArrayObject *raw = (PyArrayObject *)PyArray_FromAny(key, NULL, 0, 1, 0, NULL);
    if (!raw)
        return NULL;
    char kind = PyArray_DESCR(raw)->kind;
    if (kind != 'i' && kind != 'u' && !(kind == 'f' && is_tensor_index_ok(raw))) {
        Py_DECREF(raw);
        PyErr_SetString(PyExc_IndexError,
                        "arrays used as indices must be of integer type (or a maas tensor of "
                        "whole numbers)");
        return NULL;
    }
    PyArrayObject *idx = (PyArrayObject *)PyArray_FromArray(
        raw, PyArray_DescrFromType(NPY_INT64), NPY_ARRAY_CARRAY | NPY_ARRAY_FORCECAST);
    Py_DECREF(raw);
    if (!idx)
        return NULL;
    int64_t k = PyArray_SIZE(idx), row = a->shape[0] ? a->size / a->shape[0] : 0;
    const int64_t *ix = (const int64_t *)PyArray_DATA(idx);
    int64_t os[MAAS_MAX_DIMS];
    memcpy(os, a->shape, sizeof(int64_t) * (size_t)a->ndim);
    os[0] = k;
    maas_tensor *out = maas_tensor_new(a->ndim, os), *saved = maas_tensor_new(1, &k);
    if (!out || !saved) {
        Py_DECREF(idx);
        maas_tensor_decref(out);
        maas_tensor_decref(saved);
        raise_status(MAAS_ERR_NOMEM);
        return NULL;
    }
    for (int64_t r = 0; r < k; r++) {
        int64_t i = ix[r] < 0 ? ix[r] + a->shape[0] : ix[r];
        if (i < 0 || i >= a->shape[0]) {
            PyErr_Format(PyExc_IndexError, "index %lld is out of bounds for axis 0 with size %lld",
                         (long long)ix[r], (long long)a->shape[0]);
            Py_DECREF(idx);
            maas_tensor_decref(out);
            maas_tensor_decref(saved);
            return NULL;
        }
        saved->data[r] = (float)i;
        memcpy(out->data + r * row, a->data + i * row, (size_t)row * sizeof(float));
    }
    Py_DECREF(idx);
    if (tapes_active()) {
        maas_node nd = {.backward = maas_grad_take, .name = "take", .ninputs = 1, .in = {a},
                        .out = out, .saved = saved, .i = {row}};
        if (record_node(&nd) < 0) {
            maas_tensor_decref(out);
            out = NULL;
        }
    }
    maas_tensor_decref(saved);
    return out;
}

PyObject *op_getitem(module_state *st, PyObject *x, PyObject *key)
{
    if (!st)
        return NULL;
    if (PyTuple_Check(key) && PyTuple_GET_SIZE(key) == 1)
        key = PyTuple_GET_ITEM(key, 0);
    maas_tensor *a = as_tensor(st, x), *out = NULL;
    if (!a)
        return NULL;
    if (a->ndim == 0) {
        maas_tensor_decref(a);
        PyErr_SetString(PyExc_IndexError, "a 0-d tensor cannot be indexed");
        return NULL;
    }
    int64_t len = a->shape[0], row = len ? a->size / len : 0;
    /* an ndarray has nb_index too, but only a 0-d one is an int index */
    int array_key = PyList_Check(key) || is_tensor(st, key) ||
                    (PyArray_Check(key) && PyArray_NDIM((PyArrayObject *)key) > 0);
    if (array_key) {
        out = take_rows(a, key);
    } else if (PyIndex_Check(key)) {
        Py_ssize_t i = PyNumber_AsSsize_t(key, PyExc_IndexError);
        if (i == -1 && PyErr_Occurred())
            goto done;
        if (i < 0)
            i += (Py_ssize_t)len;
        if (i < 0 || i >= (Py_ssize_t)len) {
            PyErr_Format(PyExc_IndexError, "index %zd is out of bounds for axis 0 with size %lld",
                         i < 0 ? i - (Py_ssize_t)len : i, (long long)len);
            goto done;
        }
        out = make_view(a, (int64_t)i * row, a->ndim - 1, a->shape + 1);
    } else if (PySlice_Check(key)) {
        Py_ssize_t start, stop, step;
        if (PySlice_Unpack(key, &start, &stop, &step) < 0)
            goto done;
        Py_ssize_t count = PySlice_AdjustIndices((Py_ssize_t)len, &start, &stop, step);
        int64_t os[MAAS_MAX_DIMS];
        memcpy(os, a->shape, sizeof(int64_t) * (size_t)a->ndim);
        os[0] = count;
        if (step == 1 || count <= 1) {
            out = make_view(a, count ? (int64_t)start * row : 0, a->ndim, os);
        } else if ((out = maas_tensor_new(a->ndim, os))) {
            maas_gather_rows(out->data, a->data, start, step, count, row);
            if (tapes_active()) {
                maas_node nd = {.backward = maas_grad_rows, .name = "slice", .ninputs = 1,
                                .in = {a}, .out = out, .i = {start, step, count, row}};
                if (record_node(&nd) < 0) {
                    maas_tensor_decref(out);
                    out = NULL;
                }
            }
        } else {
            raise_status(MAAS_ERR_NOMEM);
        }
    } else {
        PyErr_Format(PyExc_IndexError,
                     "maas tensors are indexed on their first axis by an int, a slice, or "
                     "a list or array of ints; got %.100s (use .numpy() for general indexing)",
                     Py_TYPE(key)->tp_name);
    }
done:
    maas_tensor_decref(a);
    return out ? tensor_wrap(st, out) : NULL;
}

PyObject *op_transpose(module_state *st, PyObject *x)
{
    if (!st)
        return NULL;
    maas_tensor *a = as_tensor(st, x);
    if (!a)
        return NULL;
    if (a->ndim < 2) {
        maas_tensor_decref(a);
        return PyErr_Format(PyExc_ValueError, "transpose: needs at least 2 dimensions, got %d",
                            a->ndim);
    }
    int64_t rows = a->shape[a->ndim - 2], cols = a->shape[a->ndim - 1];
    int64_t batch = (rows && cols) ? a->size / (rows * cols) : 0, os[MAAS_MAX_DIMS];
    memcpy(os, a->shape, sizeof(int64_t) * (size_t)a->ndim);
    os[a->ndim - 2] = cols;
    os[a->ndim - 1] = rows;
    maas_tensor *out = maas_tensor_new(a->ndim, os);
    if (!out) {
        maas_tensor_decref(a);
        return raise_status(MAAS_ERR_NOMEM);
    }
    MAAS_NOGIL_IF(a->size > MAAS_NOGIL_WORK, maas_transpose2d(out->data, a->data, batch, rows, cols));
    maas_node nd = {.backward = maas_grad_transpose, .name = "transpose", .ninputs = 1,
                    .in = {a}, .i = {batch, rows, cols}};
    PyObject *r = finish(st, out, &nd);
    maas_tensor_decref(a);
    return r;
}

static PyObject *py_transpose(PyObject *m, PyObject *x) { return op_transpose(state_of_module(m), x); }

static PyObject *py_concat(PyObject *m, PyObject *args)
{
    PyObject *list;
    long long axis = 0;
    if (!PyArg_ParseTuple(args, "O|L:concatenate", &list, &axis))
        return NULL;
    module_state *st = state_of_module(m);
    PyObject *seq = PySequence_Fast(list, "concatenate: expected a sequence of tensors");
    if (!seq)
        return NULL;
    Py_ssize_t k = PySequence_Fast_GET_SIZE(seq);
    if (k < 1 || k > 6) {
        Py_DECREF(seq);
        return PyErr_Format(PyExc_ValueError, "concatenate: the C op takes 1 to 6 tensors, got %zd", k);
    }
    maas_tensor *in[MAAS_NODE_MAX_IN] = {NULL}, *out = NULL;
    PyObject *r = NULL;
    for (Py_ssize_t j = 0; j < k; j++)
        if (!(in[j] = as_tensor(st, PySequence_Fast_GET_ITEM(seq, j))))
            goto done;
    int ax;
    if (normalize_axis(axis, in[0]->ndim, "concatenate", &ax) < 0)
        goto done;
    int64_t ns[6], outer, inner, n0, os[MAAS_MAX_DIMS], total = 0;
    split_axis(in[0], ax, &outer, &n0, &inner);
    for (Py_ssize_t j = 0; j < k; j++) {
        int ok = in[j]->ndim == in[0]->ndim && in[0]->ndim > 0;
        for (int d = 0; ok && d < in[0]->ndim; d++)
            ok = d == ax || in[j]->shape[d] == in[0]->shape[d];
        if (!ok) {
            char s0[160], sj[160];
            PyErr_Format(PyExc_ValueError,
                         "concatenate: shapes %s and %s differ outside axis %d",
                         SHAPE(in[0], s0), SHAPE(in[j], sj), ax);
            goto done;
        }
        ns[j] = in[j]->shape[ax];
        total += ns[j];
    }
    memcpy(os, in[0]->shape, sizeof(int64_t) * (size_t)in[0]->ndim);
    os[ax] = total;
    if (!(out = maas_tensor_new(in[0]->ndim, os))) {
        raise_status(MAAS_ERR_NOMEM);
        goto done;
    }
    const float *xs[6];
    for (Py_ssize_t j = 0; j < k; j++)
        xs[j] = in[j]->data;
    maas_concat_forward(out->data, xs, ns, (int)k, outer, inner);
    maas_node nd = {.backward = maas_grad_concat, .name = "concatenate", .ninputs = (int)k,
                    .i = {outer, inner}};
    for (Py_ssize_t j = 0; j < k; j++) {
        nd.in[j] = in[j];
        nd.i[2 + j] = ns[j];
    }
    r = finish(st, out, &nd);
done:
    decref_all(in, MAAS_NODE_MAX_IN);
    Py_DECREF(seq);
    return r;
}

/* ---------------------------------------------------------- loss, dropout */

static const char *loss_names[] = {"mean_squared_error", "mean_absolute_error",
                                   "binary_crossentropy", "categorical_crossentropy",
                                   "sparse_categorical_crossentropy", "hinge"};

/* Shapes equal once trailing 1-dims are dropped from both. */
static int same_up_to_trailing_ones(const maas_tensor *a, const maas_tensor *b)
{
    int an = a->ndim, bn = b->ndim;
    while (an > 0 && a->shape[an - 1] == 1)
        an--;
    while (bn > 0 && b->shape[bn - 1] == 1)
        bn--;
    if (an != bn)
        return 0;
    for (int d = 0; d < an; d++)
        if (a->shape[d] != b->shape[d])
            return 0;
    return 1;
}

static PyObject *py_loss(PyObject *m, PyObject *args)
{
    int op, from_logits = 0;
    PyObject *yt, *yp;
    if (!PyArg_ParseTuple(args, "iOO|p:loss", &op, &yt, &yp, &from_logits))
        return NULL;
    if (op < 0 || op >= MAAS_L_COUNT)
        return PyErr_Format(PyExc_ValueError, "loss: unknown op %d", op);
    module_state *st = state_of_module(m);
    /* y_true: cast to float32 as Keras's losses do (integer label tensors) */
    maas_tensor *in[2] = {as_float_converted(st, yt), NULL}, *out = NULL;
    if (!in[0] || !(in[1] = as_tensor(st, yp))) {
        maas_tensor_decref(in[0]);
        return NULL;
    }
    maas_tensor *t = in[0], *p = in[1];
    PyObject *r = NULL;
    char st_[160], sp[160];
    if (p->ndim < 1) {
        PyErr_Format(PyExc_ValueError, "%s: y_pred must have at least 1 dimension, got shape %s",
                     loss_names[op], SHAPE(p, sp));
        goto done;
    }
    int64_t C = p->shape[p->ndim - 1], N = C ? p->size / C : 0;
    if (C == 0)
        for (int d = 0; d < p->ndim - 1; d++)
            N = d ? N * p->shape[d] : p->shape[d];
    if (op == MAAS_L_SCCE) {
        int ok = t->size == N;
        int tn = t->ndim;
        if (ok && tn == p->ndim && t->shape[tn - 1] == 1)
            tn--;
        ok = ok && tn == p->ndim - 1;
        for (int d = 0; ok && d < tn; d++)
            ok = t->shape[d] == p->shape[d];
        if (!ok) {
            PyErr_Format(PyExc_ValueError,
                         "sparse_categorical_crossentropy: y_true shape %s does not fit y_pred "
                         "shape %s: expected integer labels of shape %s (or with a trailing 1); "
                         "for one-hot labels use categorical_crossentropy",
                         SHAPE(t, st_), SHAPE(p, sp),
                         maas_shape_str(p->ndim - 1, p->shape, st_ + 80, 80));
            goto done;
        }
    } else if (!same_up_to_trailing_ones(t, p)) {
        PyErr_Format(PyExc_ValueError, "%s: y_true shape %s does not match y_pred shape %s%s",
                     loss_names[op], SHAPE(t, st_), SHAPE(p, sp),
                     op == MAAS_L_CCE ? " (for integer labels use sparse_categorical_crossentropy)" : "");
        goto done;
    }
    maas_status s = MAAS_ERR_NOMEM;
    if ((out = maas_tensor_new(p->ndim - 1, p->shape)))
        MAAS_NOGIL_IF(p->size > MAAS_NOGIL_WORK,
                      s = maas_loss_forward((maas_loss_op)op, out->data, t->data, p->data, N, C,
                                            from_logits));
    if (s != MAAS_OK) {
        maas_tensor_decref(out);
        raise_status(s);
        goto done;
    }
    /* y_true is kept as `saved`, not an input: no gradient flows to it */
    maas_node nd = {.backward = maas_grad_loss, .name = loss_names[op], .ninputs = 1,
                    .in = {p}, .saved = t, .i = {op, N, C, from_logits}};
    r = finish(st, out, &nd);
done:
    decref_all(in, 2);
    return r;
}

static PyObject *py_dropout(PyObject *m, PyObject *args)
{
    PyObject *x;
    float rate;
    unsigned long long seed, stream;
    if (!PyArg_ParseTuple(args, "OfKK:dropout", &x, &rate, &seed, &stream))
        return NULL;
    module_state *st = state_of_module(m);
    maas_tensor *a = as_tensor(st, x);
    if (!a)
        return NULL;
    maas_tensor *out = maas_tensor_new_like(a), *mask = maas_tensor_new_like(a);
    maas_status s = MAAS_ERR_NOMEM;
    if (out && mask)
        MAAS_NOGIL_IF(a->size > MAAS_NOGIL_WORK,
                      s = maas_dropout_forward(out->data, mask->data, a->data, a->size, rate,
                                               seed, stream));
    PyObject *r = NULL;
    if (s != MAAS_OK) {
        maas_tensor_decref(out);
        raise_status(s);
    } else {
        maas_node nd = {.backward = maas_grad_dropout, .name = "dropout", .ninputs = 1,
                        .in = {a}, .saved = mask};
        r = finish(st, out, &nd);
    }
    maas_tensor_decref(mask);
    maas_tensor_decref(a);
    return r;
}

/* -------------------------------------------- in-place: optimizers, fills */

/* The core tensor of a Tensor argument that is written in place: a NEW
 * reference (release it with maas_tensor_decref, with the GIL held), so
 * that a share_memory on another thread, which swaps the Tensor's core
 * tensor while a kernel runs without the GIL, cannot free it under the
 * kernel. `float_only`: the tensor must be float32. NULL with TypeError
 * (None included: a caller for which None is allowed checks that first). */
static maas_tensor *inplace_ref(module_state *st, PyObject *o, const char *op, const char *what,
                                int float_only)
{
    if (!is_tensor(st, o)) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be a maas Tensor or Variable, got %.100s",
                     op, what, o == Py_None ? "None" : Py_TYPE(o)->tp_name);
        return NULL;
    }
    maas_tensor *t = TENSOR(o);
    if (float_only && t->dtype != MAAS_F32) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be a float32 tensor, received %s", op, what,
                     maas_dtype_name(t->dtype));
        return NULL;
    }
    maas_tensor_incref(t);
    return t;
}

/* A float32 tensor written in place (a new reference; see inplace_ref). */
static maas_tensor *inplace_arg(module_state *st, PyObject *o, const char *op, const char *what)
{
    return inplace_ref(st, o, op, what, 1);
}

/* Checks that each non-NULL slot has p's shape. */
static int check_slots(const char *op, maas_tensor *p, maas_tensor *const *slots,
                       const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (slots[i] && !maas_same_shape(slots[i], p)) {
            char a[160], b[160];
            PyErr_Format(PyExc_ValueError, "%s: %s shape %s does not match variable shape %s",
                         op, names[i], SHAPE(slots[i], a), SHAPE(p, b));
            return -1;
        }
    return 0;
}

/* The common end of an optimizer binding: releases the gradient and the
 * in-place arguments (refs[0] is the variable), reports a shape error
 * (already set) or a kernel status, and marks the write. */
static PyObject *finish_update(maas_tensor *g, maas_tensor **refs, int nrefs, int bad,
                               maas_status s)
{
    maas_tensor_decref(g);
    if (!bad && s == MAAS_OK)
        refs[0]->version++;
    decref_all(refs, nrefs);
    if (bad)
        return NULL;
    if (s != MAAS_OK)
        return raise_status(s);
    Py_RETURN_NONE;
}

static PyObject *py_sgd_update(PyObject *m, PyObject *args)
{
    PyObject *po, *go, *vo;
    float lr, momentum, wd;
    int nesterov;
    if (!PyArg_ParseTuple(args, "OOOffpf:sgd_update", &po, &go, &vo, &lr, &momentum, &nesterov, &wd))
        return NULL;
    module_state *st = state_of_module(m);
    maas_tensor *p = inplace_arg(st, po, "sgd", "the variable"), *v = NULL, *g;
    if (!p || (vo != Py_None && !(v = inplace_arg(st, vo, "sgd", "the velocity"))) ||
        !(g = as_tensor(st, go))) {
        maas_tensor_decref(p);
        maas_tensor_decref(v);
        return NULL;
    }
    int bad = check_slots("sgd", p, (maas_tensor *[]){g, v}, (const char *[]){"gradient", "velocity"}, 2);
    maas_status s = MAAS_OK;
    if (!bad)
        MAAS_NOGIL_IF(p->size > MAAS_NOGIL_WORK,
                      s = maas_sgd_update(p->data, v ? v->data : NULL, g->data, p->size, lr,
                                          momentum, nesterov, wd));
    return finish_update(g, (maas_tensor *[]){p, v}, 2, bad, s);
}

static PyObject *py_adam_update(PyObject *m, PyObject *args)
{
    PyObject *po, *go, *mo, *vo, *ho;
    float lr, b1, b2, eps, wd;
    long long step;
    if (!PyArg_ParseTuple(args, "OOOOOffffLf:adam_update", &po, &go, &mo, &vo, &ho, &lr, &b1,
                          &b2, &eps, &step, &wd))
        return NULL;
    module_state *st = state_of_module(m);
    maas_tensor *p = inplace_arg(st, po, "adam", "the variable");
    maas_tensor *mm = p ? inplace_arg(st, mo, "adam", "the first moment") : NULL;
    maas_tensor *v = mm ? inplace_arg(st, vo, "adam", "the second moment") : NULL;
    maas_tensor *h = NULL, *g = NULL;
    if (!v || (ho != Py_None && !(h = inplace_arg(st, ho, "adam", "vhat"))) ||
        !(g = as_tensor(st, go))) {
        decref_all((maas_tensor *[]){p, mm, v, h}, 4);
        return NULL;
    }
    int bad = check_slots("adam", p, (maas_tensor *[]){g, mm, v, h},
                          (const char *[]){"gradient", "m", "v", "vhat"}, 4);
    maas_status s = MAAS_OK;
    if (!bad)
        MAAS_NOGIL_IF(p->size > MAAS_NOGIL_WORK,
                      s = maas_adam_update(p->data, mm->data, v->data, h ? h->data : NULL,
                                           g->data, p->size, lr, b1, b2, eps, step, wd));
    return finish_update(g, (maas_tensor *[]){p, mm, v, h}, 4, bad, s);
}

static PyObject *py_rmsprop_update(PyObject *m, PyObject *args)
{
    PyObject *po, *go, *vo, *ao, *mo;
    float lr, rho, momentum, eps, wd;
    int centered;
    if (!PyArg_ParseTuple(args, "OOOOOffffpf:rmsprop_update", &po, &go, &vo, &ao, &mo, &lr,
                          &rho, &momentum, &eps, &centered, &wd))
        return NULL;
    module_state *st = state_of_module(m);
    maas_tensor *p = inplace_arg(st, po, "rmsprop", "the variable");
    maas_tensor *v = p ? inplace_arg(st, vo, "rmsprop", "the velocity") : NULL;
    maas_tensor *a = NULL, *mm = NULL, *g = NULL;
    if (!v || (ao != Py_None && !(a = inplace_arg(st, ao, "rmsprop", "the average gradient"))) ||
        (mo != Py_None && !(mm = inplace_arg(st, mo, "rmsprop", "the momentum"))) ||
        !(g = as_tensor(st, go))) {
        decref_all((maas_tensor *[]){p, v, a, mm}, 4);
        return NULL;
    }
    int bad = check_slots("rmsprop", p, (maas_tensor *[]){g, v, a, mm},
                          (const char *[]){"gradient", "velocity", "average gradient", "momentum"}, 4);
    maas_status s = MAAS_OK;
    if (!bad)
        MAAS_NOGIL_IF(p->size > MAAS_NOGIL_WORK,
                      s = maas_rmsprop_update(p->data, v->data, a ? a->data : NULL,
                                              mm ? mm->data : NULL, g->data, p->size, lr, rho,
                                              momentum, eps, centered, wd));
    return finish_update(g, (maas_tensor *[]){p, v, a, mm}, 4, bad, s);
}

/* assign(dst, src, mode): dst = src (0), dst += src (1), dst -= src (2);
 * src has dst's shape or one element. */
static PyObject *py_assign(PyObject *m, PyObject *args)
{
    PyObject *dobj, *sobj;
    int mode = 0;
    if (!PyArg_ParseTuple(args, "OO|i:assign", &dobj, &sobj, &mode))
        return NULL;
    if (mode < 0 || mode > 2)
        return PyErr_Format(PyExc_ValueError, "assign: mode must be 0 (=), 1 (+=) or 2 (-=), got %d",
                            mode);
    module_state *st = state_of_module(m);
    maas_tensor *d = inplace_arg(st, dobj, "assign", "the target"), *s = NULL;
    if (!d || !(s = as_float_tensor(st, sobj, "assign"))) {
        maas_tensor_decref(d);
        return NULL;
    }
    /* the value has the variable's shape, or is a single element (broadcast) */
    if (!(maas_same_shape(d, s) || s->size == 1)) {
        char a[160], b[160];
        PyErr_Format(PyExc_ValueError, "assign: value shape %s does not match variable shape %s",
                     SHAPE(s, a), SHAPE(d, b));
        maas_tensor_decref(s);
        maas_tensor_decref(d);
        return NULL;
    }
    if (s->size == 1 && d->size != 1) {
        float v = s->data[0];
        for (int64_t i = 0; i < d->size; i++)
            d->data[i] = mode == 0 ? v : mode == 1 ? d->data[i] + v : d->data[i] - v;
    } else if (mode == 0) {
        if (s->data != d->data)
            memmove(d->data, s->data, (size_t)d->size * sizeof(float));
    } else {
        for (int64_t i = 0; i < d->size; i++)
            d->data[i] = mode == 1 ? d->data[i] + s->data[i] : d->data[i] - s->data[i];
    }
    d->version++;
    maas_tensor_decref(s);
    maas_tensor_decref(d);
    Py_RETURN_NONE;
}

static PyObject *py_sum_squares(PyObject *m, PyObject *x)
{
    maas_tensor *t = as_tensor(state_of_module(m), x);
    if (!t)
        return NULL;
    double r;
    MAAS_NOGIL_IF(t->size > MAAS_NOGIL_WORK, r = maas_sum_squares(t->data, t->size));
    maas_tensor_decref(t);
    return PyFloat_FromDouble(r);
}

static PyObject *py_scale_(PyObject *m, PyObject *args)
{
    PyObject *x;
    float s;
    if (!PyArg_ParseTuple(args, "Of:scale_", &x, &s))
        return NULL;
    maas_tensor *t = inplace_arg(state_of_module(m), x, "scale_", "the tensor");
    if (!t)
        return NULL;
    maas_status st;
    MAAS_NOGIL_IF(t->size > MAAS_NOGIL_WORK, st = maas_scale_inplace(t->data, t->size, s));
    if (st == MAAS_OK)
        t->version++;
    maas_tensor_decref(t);
    if (st != MAAS_OK)
        return raise_status(st);
    Py_RETURN_NONE;
}

static PyObject *py_clip_(PyObject *m, PyObject *args)
{
    PyObject *x;
    float lo, hi;
    if (!PyArg_ParseTuple(args, "Off:clip_", &x, &lo, &hi))
        return NULL;
    maas_tensor *t = inplace_arg(state_of_module(m), x, "clip_", "the tensor");
    if (!t)
        return NULL;
    maas_status st;
    MAAS_NOGIL_IF(t->size > MAAS_NOGIL_WORK, st = maas_clip_inplace(t->data, t->size, lo, hi));
    if (st == MAAS_OK)
        t->version++;
    maas_tensor_decref(t);
    if (st != MAAS_OK)
        return raise_status(st);
    Py_RETURN_NONE;
}

/* fill_random(t, kind, a, b, seed, stream): kind 0 uniform [a, b), 1 normal (a, b). */
static PyObject *py_fill_random(PyObject *m, PyObject *args)
{
    PyObject *x;
    int kind;
    float a, b;
    unsigned long long seed, stream;
    if (!PyArg_ParseTuple(args, "OiffKK:fill_random", &x, &kind, &a, &b, &seed, &stream))
        return NULL;
    maas_tensor *t = inplace_arg(state_of_module(m), x, "fill_random", "the tensor");
    if (!t)
        return NULL;
    maas_status s;
    MAAS_NOGIL_IF(t->size > MAAS_NOGIL_WORK,
                  s = kind ? maas_rng_fill_normal(t->data, t->size, a, b, seed, stream)
                           : maas_rng_fill_uniform(t->data, t->size, a, b, seed, stream));
    if (s == MAAS_OK)
        t->version++;
    maas_tensor_decref(t);
    if (s != MAAS_OK)
        return raise_status(s);
    Py_RETURN_NONE;
}

/* share_memory(dst, src): dst (a Tensor or Variable) becomes a view of src's
 * memory, keeping its own requires_grad. Used by loading to wrap a Variable
 * around a memory-mapped file without copying. Shapes must be equal. */
static PyObject *py_share_memory(PyObject *m, PyObject *args)
{
    PyObject *dobj, *sobj;
    if (!PyArg_ParseTuple(args, "OO:share_memory", &dobj, &sobj))
        return NULL;
    module_state *st = state_of_module(m);
    maas_tensor *d = inplace_ref(st, dobj, "share_memory", "the target", 0);
    maas_tensor *s = d ? inplace_ref(st, sobj, "share_memory", "the source", 0) : NULL;
    PyObject *r = NULL;
    char a[160], b[160];
    if (!s)
        goto done;
    if (!maas_same_shape(d, s)) {
        PyErr_Format(PyExc_ValueError, "share_memory: source shape %s does not match %s",
                     SHAPE(s, a), SHAPE(d, b));
        goto done;
    }
    if (d->dtype != s->dtype) {
        PyErr_Format(PyExc_TypeError, "share_memory: the source is %s but the target is %s",
                     maas_dtype_name(s->dtype), maas_dtype_name(d->dtype));
        goto done;
    }
    maas_tensor *v = maas_tensor_view(s, 0, s->ndim, s->shape);
    if (!v) {
        raise_status(MAAS_ERR_NOMEM);
        goto done;
    }
    v->requires_grad = d->requires_grad;
    v->version = d->version + 1;
    /* the Tensor's own reference to d goes; ours is released below, after
     * which a kernel of another thread still holding d keeps it alive */
    ((TensorObject *)dobj)->t = v;
    maas_tensor_decref(d);
    r = Py_NewRef(Py_None);
done:
    maas_tensor_decref(s);
    maas_tensor_decref(d);
    return r;
}

/* ---------------------------------------------------------------- threads */

static PyObject *py_set_num_threads(PyObject *m, PyObject *arg)
{
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 1)
        return PyErr_Format(PyExc_ValueError, "set_num_threads: n must be a positive integer, received n=%ld", n);
    maas_set_num_threads((int)n);
    Py_RETURN_NONE;
}

static PyObject *py_get_num_threads(PyObject *m, PyObject *unused)
{
    return PyLong_FromLong(maas_get_num_threads());
}

static PyObject *py_blas_info(PyObject *m, PyObject *unused)
{
    return Py_BuildValue("{s:s,s:i}", "config", maas_blas_name(), "num_threads",
                         maas_blas_get_num_threads());
}

#define VARKW(f) (PyCFunction)(void (*)(void))(f)
PyMethodDef bind_ops_methods[] = {
    {"unary", py_unary, METH_VARARGS, "unary(op, x, alpha=0.0)"},
    {"binary", py_binary, METH_VARARGS, "binary(op, a, b) with NumPy broadcasting"},
    {"softmax", py_softmax, METH_VARARGS, "softmax(x, axis=-1, log=False)"},
    {"reduce", py_reduce, METH_VARARGS, "reduce(op, x, axis=None, keepdims=False)"},
    {"matmul", VARKW(py_matmul), METH_VARARGS | METH_KEYWORDS,
     "matmul(a, b, transpose_a=False, transpose_b=False)"},
    {"dense", py_dense, METH_VARARGS, "dense(x, kernel, bias=None) = x @ kernel + bias"},
    {"reshape", py_reshape, METH_VARARGS, "reshape(x, shape) -> a view"},
    {"transpose", py_transpose, METH_O, "transpose(x): swaps the last two axes"},
    {"concatenate", py_concat, METH_VARARGS, "concatenate(tensors, axis=0), 1 to 6 tensors"},
    {"loss", py_loss, METH_VARARGS, "loss(op, y_true, y_pred, from_logits=False) -> per sample"},
    {"dropout", py_dropout, METH_VARARGS, "dropout(x, rate, seed, stream)"},
    {"sgd_update", py_sgd_update, METH_VARARGS, "sgd_update(p, g, velocity, lr, momentum, nesterov, wd)"},
    {"adam_update", py_adam_update, METH_VARARGS,
     "adam_update(p, g, m, v, vhat, lr, beta_1, beta_2, eps, step, wd)"},
    {"rmsprop_update", py_rmsprop_update, METH_VARARGS,
     "rmsprop_update(p, g, v, avg, mom, lr, rho, momentum, eps, centered, wd)"},
    {"assign", py_assign, METH_VARARGS, "assign(dst, src, mode=0): =, +=, -= in place"},
    {"share_memory", py_share_memory, METH_VARARGS, "share_memory(dst, src): dst views src's memory"},
    {"sum_squares", py_sum_squares, METH_O, "sum_squares(x) -> float (double accumulation)"},
    {"scale_", py_scale_, METH_VARARGS, "scale_(x, s): x *= s in place"},
    {"clip_", py_clip_, METH_VARARGS, "clip_(x, lo, hi) in place"},
    {"fill_random", py_fill_random, METH_VARARGS, "fill_random(x, kind, a, b, seed, stream)"},
    {"set_num_threads", py_set_num_threads, METH_O, "set_num_threads(n)"},
    {"get_num_threads", py_get_num_threads, METH_NOARGS, "get_num_threads()"},
    {"blas_info", py_blas_info, METH_NOARGS, "blas_info() -> dict"},
    {NULL}};
