/* bind_ops.c -- the ops of maas._core. Every differentiable op runs through
 * one generic path (run_node): inputs converted with the GIL held, the op
 * table's infer and allocation, the forward kernel with the GIL released
 * when the work is large, and recording on the active tapes. `_core.op`
 * exposes that path for any table op; the named entry points below (unary,
 * binary, reduce, matmul, getitem, ...) only parse their arguments into a
 * node. The in-place helpers (optimizer updates, assign, fills) follow. */
#include "common.h"

#include <string.h>

#define SHAPE(t, buf) maas_shape_str((t)->ndim, (t)->shape, buf, sizeof buf)

static void decref_all(maas_tensor **ts, int n)
{
    for (int i = 0; i < n; i++)
        maas_tensor_decref(ts[i]);
}

/* Runs a node whose op, inputs (borrowed) and given attributes are set;
 * its outputs stay in nd->out (the first one moved to the result). */
static maas_tensor *run_node_keep(maas_node *nd)
{
    maas_status s = maas_op_setup(nd);
    if (s != MAAS_OK) {
        raise_status(s);
        return NULL;
    }
    MAAS_NOGIL_IF(maas_op_work(nd) > MAAS_NOGIL_WORK, s = maas_op_forward(nd));
    if (s != MAAS_OK) {
        maas_node_release_outputs(nd);
        raise_status(s);
        return NULL;
    }
    const maas_op_def *def = maas_op_get(nd->op);
    if (tapes_active() && (def->backward || (def->flags & MAAS_OPF_RANDOM)) && record_node(nd) < 0) {
        maas_node_release_outputs(nd);
        return NULL;
    }
    maas_tensor *out = nd->out[0];
    nd->out[0] = NULL;
    return out;
}

/* Runs a node whose op, inputs (borrowed) and given attributes are set.
 * Returns a new reference to its first output, or NULL with an exception. */
static maas_tensor *run_node(maas_node *nd)
{
    maas_tensor *out = run_node_keep(nd);
    if (out)
        maas_node_release_outputs(nd);
    return out;
}

/* run_node keeping every output: new references in outs[0..*nout). */
static int run_node_all(maas_node *nd, maas_tensor **outs, int *nout)
{
    maas_tensor *first = run_node_keep(nd);
    if (!first)
        return -1;
    outs[0] = first;
    *nout = nd->nout;
    for (int k = 1; k < nd->nout; k++) {
        outs[k] = nd->out[k];
        nd->out[k] = NULL;
    }
    maas_node_release_outputs(nd);
    return 0;
}

/* A node of op `op` over inputs (new references, released here). */
maas_tensor *run_op(int op, int nin, maas_tensor **in, const void *attr, size_t attr_size)
{
    maas_node nd;
    memset(&nd, 0, offsetof(maas_node, attr));
    nd.op = op;
    nd.nin = nin;
    for (int i = 0; i < nin; i++)
        nd.in[i] = in[i];
    memset(nd.attr, 0, sizeof nd.attr);
    memcpy(nd.attr, attr, attr_size);
    maas_tensor *out = run_node(&nd);
    decref_all(in, nin);
    return out;
}

static PyObject *wrap_or_null(module_state *st, maas_tensor *t)
{
    return t ? tensor_wrap(st, t) : NULL;
}

/* Converts n objects; on failure releases the ones converted. typed: keep
 * each Tensor's dtype and infer an array's (the generic op, whose infer
 * checks dtypes); else float32 (the named float ops). */
static int convert_any(module_state *st, int n, PyObject *const *objs, maas_tensor **in, int typed)
{
    for (int i = 0; i < n; i++)
        if (!(in[i] = typed ? as_typed_tensor(st, objs[i], -1, 0) : as_tensor(st, objs[i]))) {
            decref_all(in, i);
            return -1;
        }
    return 0;
}

static int convert_inputs(module_state *st, int n, PyObject *const *objs, maas_tensor **in)
{
    return convert_any(st, n, objs, in, 0);
}

/* --------------------------------------------------- the generic entry */

/* Parses positional attribute values into a node's attribute block by the
 * op's field list. */
static int parse_attrs(const maas_op_def *def, PyObject *const *args, Py_ssize_t n,
                       unsigned char *attr)
{
    Py_ssize_t k = 0;
    for (const maas_attr_field *f = def->fields; f->name; f++, k++) {
        if (k >= n)
            break;
        PyObject *o = args[k];
        unsigned char *dst = attr + f->offset;
        if (f->type == 'l') {
            long long v = PyLong_AsLongLong(o);
            if (v == -1 && PyErr_Occurred())
                goto bad;
            int64_t x = v;
            memcpy(dst, &x, sizeof x);
        } else if (f->type == 'u') {
            unsigned long long v = PyLong_AsUnsignedLongLongMask(o);
            if (v == (unsigned long long)-1 && PyErr_Occurred())
                goto bad;
            uint64_t x = v;
            memcpy(dst, &x, sizeof x);
        } else if (f->type == 'd') {
            double v = PyFloat_AsDouble(o);
            if (v == -1.0 && PyErr_Occurred())
                goto bad;
            memcpy(dst, &v, sizeof v);
        } else if (f->type == 'S') {
            PyObject *seq = PySequence_Fast(o, "a shape must be a sequence of ints");
            if (!seq)
                return -1;
            Py_ssize_t nd = PySequence_Fast_GET_SIZE(seq);
            if (nd > MAAS_MAX_DIMS) {
                Py_DECREF(seq);
                PyErr_Format(PyExc_ValueError, "%s: at most %d dimensions", def->name, MAAS_MAX_DIMS);
                return -1;
            }
            int64_t v[1 + MAAS_MAX_DIMS] = {nd};
            for (Py_ssize_t d = 0; d < nd; d++) {
                long long x = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, d));
                if (x == -1 && PyErr_Occurred()) {
                    Py_DECREF(seq);
                    return -1;
                }
                v[1 + d] = x;
            }
            Py_DECREF(seq);
            memcpy(dst, v, sizeof v);
        }
        continue;
    bad: /* the conversion's TypeError or OverflowError stands */
        return -1;
    }
    if (k < n) {
        PyErr_Format(PyExc_TypeError, "%s: takes %zd attributes, got %zd", def->name, k, n);
        return -1;
    }
    return 0;
}

/* op(op_id, inputs, *attributes) -> Tensor: any op of the table. */
static PyObject *py_op(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 2)
        return PyErr_Format(PyExc_TypeError, "op(op_id, inputs, *attributes): got %zd arguments", nargs);
    int op = PyLong_AsLong(args[0]);
    if (op == -1 && PyErr_Occurred())
        return NULL;
    const maas_op_def *def = maas_op_get(op);
    if (!def)
        return PyErr_Format(PyExc_ValueError, "op: unknown op id %d", op);
    module_state *st = state_of_module(m);
    PyObject *seq = PySequence_Fast(args[1], "op: inputs must be a sequence of tensors");
    if (!seq)
        return NULL;
    Py_ssize_t nin = PySequence_Fast_GET_SIZE(seq);
    if (nin < def->min_in || nin > def->max_in) {
        Py_DECREF(seq);
        return PyErr_Format(PyExc_ValueError, "%s: takes %d to %d inputs, got %zd", def->name,
                            def->min_in, def->max_in, nin);
    }
    maas_node nd;
    memset(&nd, 0, sizeof nd);
    nd.op = op;
    nd.nin = (int)nin;
    if (parse_attrs(def, args + 2, nargs - 2, nd.attr) < 0 ||
        convert_any(st, (int)nin, PySequence_Fast_ITEMS(seq), nd.in, 1) < 0) {
        Py_DECREF(seq);
        return NULL;
    }
    Py_DECREF(seq);
    maas_tensor *in[MAAS_OP_MAX_IN];
    memcpy(in, nd.in, sizeof in);
    maas_tensor *outs[MAAS_OP_MAX_OUT];
    int nout = 0;
    int rc = run_node_all(&nd, outs, &nout);
    decref_all(in, (int)nin);
    if (rc < 0)
        return NULL;
    if (nout == 1)
        return wrap_or_null(st, outs[0]);
    /* an op of several outputs (a recurrent layer's sequence and states):
     * a tuple of them */
    PyObject *tuple = PyTuple_New(nout);
    if (!tuple) {
        decref_all(outs, nout);
        return NULL;
    }
    for (int k = 0; k < nout; k++) {
        PyObject *o = tensor_wrap(st, outs[k]); /* steals outs[k] */
        if (!o) {
            decref_all(outs + k + 1, nout - k - 1);
            Py_DECREF(tuple);
            return NULL;
        }
        PyTuple_SET_ITEM(tuple, k, o);
    }
    return tuple;
}

/* op_table() -> [(name, min_inputs, max_inputs, (attribute names...))] by id. */
static PyObject *py_op_table(PyObject *m, PyObject *unused)
{
    PyObject *list = PyList_New(MAAS_OP_COUNT);
    for (int op = 0; list && op < MAAS_OP_COUNT; op++) {
        const maas_op_def *def = maas_op_get(op);
        int nf = 0;
        while (def->fields[nf].name)
            nf++;
        PyObject *names = PyTuple_New(nf);
        for (int k = 0; names && k < nf; k++) {
            PyObject *s = PyUnicode_FromString(def->fields[k].name);
            if (!s) {
                Py_CLEAR(names);
                break;
            }
            PyTuple_SET_ITEM(names, k, s);
        }
        PyObject *row = names ? Py_BuildValue("(siiN)", def->name, def->min_in, def->max_in, names) : NULL;
        if (!row) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, op, row);
    }
    return list;
}

/* ---------------------------------------------------- named entry points */

PyObject *op_unary(module_state *st, maas_unary_op op, PyObject *x, float alpha)
{
    if (!st)
        return NULL;
    maas_tensor *in[1];
    if (convert_inputs(st, 1, &x, in) < 0)
        return NULL;
    struct { int64_t op; double alpha; } a = {op, alpha};
    return wrap_or_null(st, run_op(MAAS_OP_UNARY, 1, in, &a, sizeof a));
}

PyObject *op_binary(module_state *st, maas_binary_op op, PyObject *x, PyObject *y)
{
    if (!st)
        return NULL;
    maas_tensor *in[2];
    PyObject *objs[2] = {x, y};
    if (convert_inputs(st, 2, objs, in) < 0)
        return NULL;
    int64_t a = op;
    return wrap_or_null(st, run_op(MAAS_OP_BINARY, 2, in, &a, sizeof a));
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
    maas_tensor *in[1];
    if (convert_inputs(st, 1, &x, in) < 0)
        return NULL;
    int64_t a[2] = {axis, log};
    return wrap_or_null(st, run_op(MAAS_OP_SOFTMAX, 1, in, a, sizeof a));
}

/* ------------------------------------------------------------- reductions */

static const char *reduce_names[] = {"sum", "mean", "max", "min"};

/* One reduce node (axis < 0: every element). Releases x. */
static maas_tensor *reduce_one(maas_reduce_op op, maas_tensor *x, int axis, int keepdims)
{
    int64_t a[4] = {op, axis < 0 ? 0 : axis, axis < 0, keepdims};
    return run_op(MAAS_OP_REDUCE, 1, &x, a, sizeof a);
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
        int n = cur->ndim ? cur->ndim : 1;
        for (Py_ssize_t i = 0; i < k; i++) {
            long long a = PyLong_AsLongLong(seq ? PySequence_Fast_GET_ITEM(seq, i) : axis);
            if (a == -1 && PyErr_Occurred()) {
                Py_XDECREF(seq);
                maas_tensor_decref(cur);
                return NULL;
            }
            if (a < -n || a >= n) {
                Py_XDECREF(seq);
                maas_tensor_decref(cur);
                return PyErr_Format(PyExc_ValueError,
                                    "%s: axis %lld is out of bounds for a tensor of %d dimensions",
                                    reduce_names[op], a, cur->ndim);
            }
            int ax = (int)(a < 0 ? a + n : a);
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
    if (axis == Py_None)
        return wrap_or_null(st, reduce_one(op, cur, -1, keepdims));
    /* one axis at a time, the highest first so that lower indices stay valid */
    for (int i = 0; i < naxes; i++)
        for (int j = i + 1; j < naxes; j++)
            if (axes[j] > axes[i]) {
                int t = axes[i];
                axes[i] = axes[j];
                axes[j] = t;
            }
    for (int i = 0; i < naxes; i++)
        if (!(cur = reduce_one(op, cur, axes[i], keepdims)))
            return NULL;
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

/* ------------------------------------------------------------ views, matmul */

/* A view node of x (released): a reshape (offset < 0) or the part from
 * `offset` with a shape. */
static maas_tensor *make_view(maas_tensor *x, int64_t offset, int ndim, const int64_t *shape)
{
    int64_t a[3 + MAAS_MAX_DIMS] = {offset >= 0, offset < 0 ? 0 : offset, ndim};
    memcpy(a + 3, shape, sizeof(int64_t) * (size_t)ndim);
    return run_op(MAAS_OP_VIEW, 1, &x, a, sizeof a);
}

PyObject *op_matmul(module_state *st, PyObject *x, PyObject *y, int ta, int tb)
{
    if (!st)
        return NULL;
    maas_tensor *in[2];
    PyObject *objs[2] = {x, y};
    if (convert_inputs(st, 2, objs, in) < 0)
        return NULL;
    /* NumPy's 1-D rules: a vector on the left is a row, on the right a
     * column, and that axis is dropped from the result */
    int squeeze_a = in[0]->ndim == 1, squeeze_b = in[1]->ndim == 1;
    if (squeeze_a) {
        maas_tensor_incref(in[0]);
        maas_tensor *v = make_view(in[0], -1, 2, (int64_t[]){1, in[0]->shape[0]});
        maas_tensor_decref(in[0]);
        if (!(in[0] = v)) {
            maas_tensor_decref(in[1]);
            return NULL;
        }
        ta = 0;
    }
    if (squeeze_b) {
        maas_tensor_incref(in[1]);
        maas_tensor *v = make_view(in[1], -1, 2, (int64_t[]){in[1]->shape[0], 1});
        maas_tensor_decref(in[1]);
        if (!(in[1] = v)) {
            maas_tensor_decref(in[0]);
            return NULL;
        }
        tb = 0;
    }
    int64_t a[2] = {ta, tb};
    maas_tensor *out = run_op(MAAS_OP_MATMUL, 2, in, a, sizeof a);
    if (out && (squeeze_a || squeeze_b)) {
        int64_t os[MAAS_MAX_DIMS];
        int on = 0;
        for (int d = 0; d < out->ndim; d++)
            if (!((squeeze_a && d == out->ndim - 2) || (squeeze_b && d == out->ndim - 1)))
                os[on++] = out->shape[d];
        out = make_view(out, -1, on, os);
    }
    return wrap_or_null(st, out);
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
    PyObject *objs[3] = {NULL, NULL, Py_None};
    if (!PyArg_ParseTuple(args, "OO|O:dense", &objs[0], &objs[1], &objs[2]))
        return NULL;
    module_state *st = state_of_module(m);
    maas_tensor *in[3];
    int nin = objs[2] == Py_None ? 2 : 3;
    if (convert_inputs(st, nin, objs, in) < 0)
        return NULL;
    return wrap_or_null(st, run_op(MAAS_OP_DENSE, nin, in, "", 0));
}

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
    int64_t os[MAAS_MAX_DIMS];
    for (Py_ssize_t d = 0; d < nd; d++) {
        long long v = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, d));
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return NULL;
        }
        os[d] = v;
    }
    Py_DECREF(seq);
    maas_tensor *a = as_tensor(st, x);
    return a ? wrap_or_null(st, make_view(a, -1, (int)nd, os)) : NULL;
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

/* Rows of x (released) picked by an integer array (negative indices count
 * from the end): a take node with an int64 index tensor. */
static maas_tensor *take_rows(maas_tensor *a, PyObject *key)
{
    PyArrayObject *raw = (PyArrayObject *)PyArray_FromAny(key, NULL, 0, 1, 0, NULL);
    if (!raw) {
        maas_tensor_decref(a);
        return NULL;
    }
    char kind = PyArray_DESCR(raw)->kind;
    if (kind != 'i' && kind != 'u' && !(kind == 'f' && is_tensor_index_ok(raw))) {
        Py_DECREF(raw);
        maas_tensor_decref(a);
        PyErr_SetString(PyExc_IndexError,
                        "arrays used as indices must be of integer type (or a maas tensor of "
                        "whole numbers)");
        return NULL;
    }
    PyArrayObject *idx = (PyArrayObject *)PyArray_FromArray(
        raw, PyArray_DescrFromType(NPY_INT64), NPY_ARRAY_CARRAY | NPY_ARRAY_FORCECAST);
    Py_DECREF(raw);
    if (!idx) {
        maas_tensor_decref(a);
        return NULL;
    }
    int64_t k = PyArray_SIZE(idx);
    const int64_t *ix = (const int64_t *)PyArray_DATA(idx);
    maas_tensor *it = maas_tensor_new_typed(MAAS_I64, 1, &k);
    if (!it) {
        Py_DECREF(idx);
        maas_tensor_decref(a);
        raise_status(MAAS_ERR_NOMEM);
        return NULL;
    }
    for (int64_t r = 0; r < k; r++) {
        int64_t i = ix[r] < 0 ? ix[r] + a->shape[0] : ix[r];
        if (i < 0 || i >= a->shape[0]) {
            PyErr_Format(PyExc_IndexError, "index %lld is out of bounds for axis 0 with size %lld",
                         (long long)ix[r], (long long)a->shape[0]);
            Py_DECREF(idx);
            maas_tensor_decref(a);
            maas_tensor_decref(it);
            return NULL;
        }
        ((int64_t *)it->ptr)[r] = i;
    }
    Py_DECREF(idx);
    maas_tensor *in[2] = {a, it};
    return run_op(MAAS_OP_TAKE, 2, in, "", 0);
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
    if (array_key)
        return wrap_or_null(st, take_rows(a, key));
    if (PyIndex_Check(key)) {
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
        return wrap_or_null(st, make_view(a, (int64_t)i * row, a->ndim - 1, a->shape + 1));
    }
    if (PySlice_Check(key)) {
        Py_ssize_t start, stop, step;
        if (PySlice_Unpack(key, &start, &stop, &step) < 0)
            goto done;
        Py_ssize_t count = PySlice_AdjustIndices((Py_ssize_t)len, &start, &stop, step);
        int64_t os[MAAS_MAX_DIMS];
        memcpy(os, a->shape, sizeof(int64_t) * (size_t)a->ndim);
        os[0] = count;
        if (step == 1 || count <= 1)
            return wrap_or_null(st, make_view(a, count ? (int64_t)start * row : 0, a->ndim, os));
        int64_t r[3] = {start, step, count};
        return wrap_or_null(st, run_op(MAAS_OP_ROWS, 1, &a, r, sizeof r));
    }
    PyErr_Format(PyExc_IndexError,
                 "maas tensors are indexed on their first axis by an int, a slice, or "
                 "a list or array of ints; got %.100s (use .numpy() for general indexing)",
                 Py_TYPE(key)->tp_name);
done:
    maas_tensor_decref(a);
    return out ? tensor_wrap(st, out) : NULL;
}

PyObject *op_transpose(module_state *st, PyObject *x)
{
    if (!st)
        return NULL;
    maas_tensor *in[1];
    if (convert_inputs(st, 1, &x, in) < 0)
        return NULL;
    return wrap_or_null(st, run_op(MAAS_OP_TRANSPOSE, 1, in, "", 0));
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
    if (k < 1 || k > MAAS_OP_MAX_IN) {
        Py_DECREF(seq);
        return PyErr_Format(PyExc_ValueError, "concatenate: the C op takes 1 to %d tensors, got %zd",
                            MAAS_OP_MAX_IN, k);
    }
    maas_tensor *in[MAAS_OP_MAX_IN];
    int r = convert_inputs(st, (int)k, PySequence_Fast_ITEMS(seq), in);
    Py_DECREF(seq);
    if (r < 0)
        return NULL;
    int64_t a = axis;
    return wrap_or_null(st, run_op(MAAS_OP_CONCAT, (int)k, in, &a, sizeof a));
}

/* ---------------------------------------------------------- loss, dropout */

static PyObject *py_loss(PyObject *m, PyObject *args)
{
    int op, from_logits = 0;
    PyObject *objs[2];
    if (!PyArg_ParseTuple(args, "iOO|p:loss", &op, &objs[1], &objs[0], &from_logits))
        return NULL;
    if (op < 0 || op >= MAAS_L_COUNT)
        return PyErr_Format(PyExc_ValueError, "loss: unknown op %d", op);
    module_state *st = state_of_module(m);
    maas_tensor *in[2]; /* y_pred, y_true */
    if (!(in[0] = as_float_tensor(st, objs[0], "loss: y_pred")))
        return NULL;
    /* y_true: cast to float32 as Keras's losses do (integer label tensors),
     * by a recorded cast node, so that a traced step replays it */
    if (!(in[1] = as_typed_tensor(st, objs[1], -1, 0))) {
        maas_tensor_decref(in[0]);
        return NULL;
    }
    if (in[1]->dtype != MAAS_F32) {
        int64_t to = MAAS_F32;
        if (!(in[1] = run_op(MAAS_OP_CAST, 1, &in[1], &to, sizeof to))) {
            maas_tensor_decref(in[0]);
            return NULL;
        }
    }
    int64_t a[2] = {op, from_logits};
    return wrap_or_null(st, run_op(MAAS_OP_LOSS, 2, in, a, sizeof a));
}

static PyObject *py_dropout(PyObject *m, PyObject *args)
{
    PyObject *x;
    float rate;
    unsigned long long seed, stream;
    if (!PyArg_ParseTuple(args, "OfKK:dropout", &x, &rate, &seed, &stream))
        return NULL;
    module_state *st = state_of_module(m);
    maas_tensor *in[1];
    if (convert_inputs(st, 1, &x, in) < 0)
        return NULL;
    struct { uint64_t seed, stream; double rate; } a = {seed, stream, rate};
    return wrap_or_null(st, run_op(MAAS_OP_DROPOUT, 1, in, &a, sizeof a));
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
    trace_note("the step (call() or compute_loss) writes a tensor in place (assign, an "
               "optimizer update, a random fill)");
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
maas_tensor *inplace_arg(module_state *st, PyObject *o, const char *op, const char *what)
{
    return inplace_ref(st, o, op, what, 1);
}

/* Checks that each non-NULL slot has p's shape. */
int check_slots(const char *op, maas_tensor *p, maas_tensor *const *slots,
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
PyObject *finish_update(maas_tensor *g, maas_tensor **refs, int nrefs, int bad, maas_status s)
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

/* core_ids(tensors) -> tuple of the addresses of their core tensors: a plan
 * holds core tensors, so a Variable given new memory (share_memory) makes
 * a plan stale. */
static PyObject *py_core_ids(PyObject *m, PyObject *arg)
{
    module_state *st = state_of_module(m);
    PyObject *seq = PySequence_Fast(arg, "core_ids: expected a sequence of tensors");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *r = PyTuple_New(n);
    for (Py_ssize_t i = 0; r && i < n; i++) {
        PyObject *o = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *v = is_tensor(st, o) ? PyLong_FromVoidPtr(TENSOR(o)) : PyErr_Format(
            PyExc_TypeError, "core_ids: item %zd is not a maas Tensor", i);
        if (!v) {
            Py_CLEAR(r);
            break;
        }
        PyTuple_SET_ITEM(r, i, v);
    }
    Py_DECREF(seq);
    return r;
}

#define VARKW(f) (PyCFunction)(void (*)(void))(f)
PyMethodDef bind_ops_methods[] = {
    {"op", VARKW(py_op), METH_FASTCALL, "op(op_id, inputs, *attributes): run any op of the table"},
    {"core_ids", py_core_ids, METH_O, "core_ids(tensors) -> addresses of their core tensors"},
    {"op_table", py_op_table, METH_NOARGS, "op_table() -> [(name, min_inputs, max_inputs, attributes)]"},
    {"unary", py_unary, METH_VARARGS, "unary(op, x, alpha=0.0)"},
    {"binary", py_binary, METH_VARARGS, "binary(op, a, b) with NumPy broadcasting"},
    {"softmax", py_softmax, METH_VARARGS, "softmax(x, axis=-1, log=False)"},
    {"reduce", py_reduce, METH_VARARGS, "reduce(op, x, axis=None, keepdims=False)"},
    {"matmul", VARKW(py_matmul), METH_VARARGS | METH_KEYWORDS,
     "matmul(a, b, transpose_a=False, transpose_b=False)"},
    {"dense", py_dense, METH_VARARGS, "dense(x, kernel, bias=None) = x @ kernel + bias"},
    {"reshape", py_reshape, METH_VARARGS, "reshape(x, shape) -> a view"},
    {"transpose", py_transpose, METH_O, "transpose(x): swaps the last two axes"},
    {"concatenate", py_concat, METH_VARARGS, "concatenate(tensors, axis=0), 1 to 32 tensors"},
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
