/* tensor_type.c -- maas.Tensor: a Python object around a core maas_tensor.
 * Conversion from array-likes, the buffer protocol (zero copy to NumPy),
 * number slots (arithmetic with broadcasting), first-axis indexing. */
#include "common.h"

#include <string.h>
#include <structmember.h>

module_state *state_of_type(PyTypeObject *tp)
{
    PyObject *m = PyType_GetModuleByDef(tp, &maas_core_module);
    return m ? state_of_module(m) : NULL;
}

int is_tensor(module_state *st, PyObject *o)
{
    return PyObject_TypeCheck(o, st->tensor_type);
}

PyObject *tensor_wrap(module_state *st, maas_tensor *t)
{
    if (!t)
        return raise_status(MAAS_ERR_NOMEM);
    TensorObject *self = (TensorObject *)st->tensor_type->tp_alloc(st->tensor_type, 0);
    if (!self) {
        maas_tensor_decref(t);
        return NULL;
    }
    self->t = t;
    return (PyObject *)self;
}

static void release_pyobject(void *o) { Py_DECREF((PyObject *)o); }

/* Takes a reference to a float32 C-contiguous aligned writeable array. */
static maas_tensor *wrap_array(PyArrayObject *arr)
{
    int nd = PyArray_NDIM(arr);
    if (nd > MAAS_MAX_DIMS) {
        PyErr_Format(PyExc_ValueError, "maas tensors have at most %d dimensions, got %d",
                     MAAS_MAX_DIMS, nd);
        return NULL;
    }
    int64_t shape[MAAS_MAX_DIMS];
    for (int d = 0; d < nd; d++)
        shape[d] = (int64_t)PyArray_DIM(arr, d);
    maas_tensor *t = maas_tensor_wrap((float *)PyArray_DATA(arr), nd, shape, arr,
                                      release_pyobject);
    if (!t) {
        raise_status(MAAS_ERR_NOMEM);
        return NULL;
    }
    Py_INCREF(arr);
    return t;
}

static maas_tensor *scalar_tensor(double v)
{
    maas_tensor *t = maas_tensor_new(0, NULL);
    if (!t) {
        raise_status(MAAS_ERR_NOMEM);
        return NULL;
    }
    t->data[0] = (float)v;
    return t;
}

/* Converts any array-like to a float32 C-contiguous writeable array (a new
 * reference; the input itself when it already is one). */
static PyArrayObject *to_float_array(PyObject *o, int force_copy)
{
    PyArrayObject *arr = (PyArrayObject *)PyArray_FromAny(o, NULL, 0, 0, 0, NULL);
    if (!arr) {
        if (PyErr_ExceptionMatches(PyExc_ValueError)) {
            /* e.g. a ragged nested list: say what a tensor needs */
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            PyErr_Format(PyExc_ValueError, "cannot make a tensor from %.100s: %S",
                         Py_TYPE(o)->tp_name, value ? value : Py_None);
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
        }
        return NULL;
    }
    char kind = PyArray_DESCR(arr)->kind;
    if (kind != 'f' && kind != 'i' && kind != 'u' && kind != 'b') {
        PyObject *dt = PyObject_Str((PyObject *)PyArray_DESCR(arr));
        PyErr_Format(PyExc_TypeError,
                     "cannot convert data of dtype %S to a float32 tensor: "
                     "only numeric and boolean data can be",
                     dt ? dt : Py_None);
        Py_XDECREF(dt);
        Py_DECREF(arr);
        return NULL;
    }
    int flags = NPY_ARRAY_CARRAY | NPY_ARRAY_FORCECAST | (force_copy ? NPY_ARRAY_ENSURECOPY : 0);
    PyArrayObject *f = (PyArrayObject *)PyArray_FromArray(arr, PyArray_DescrFromType(NPY_FLOAT32), flags);
    Py_DECREF(arr);
    return f;
}

maas_tensor *as_tensor(module_state *st, PyObject *o)
{
    if (is_tensor(st, o)) {
        maas_tensor_incref(TENSOR(o));
        return TENSOR(o);
    }
    if (PyFloat_CheckExact(o))
        return scalar_tensor(PyFloat_AS_DOUBLE(o));
    if (PyLong_CheckExact(o)) {
        double v = PyLong_AsDouble(o);
        if (v == -1.0 && PyErr_Occurred())
            return NULL;
        return scalar_tensor(v);
    }
    PyArrayObject *arr = to_float_array(o, 0);
    if (!arr)
        return NULL;
    maas_tensor *t = wrap_array(arr);
    Py_DECREF(arr);
    return t;
}

/* ------------------------------------------------------------ type slots */

/* A new tensor owning a copy of any array-like's data. */
static maas_tensor *copy_tensor(module_state *st, PyObject *data)
{
    maas_tensor *src = as_tensor(st, data);
    if (!src)
        return NULL;
    maas_tensor *t = maas_tensor_new_like(src);
    if (t)
        memcpy(t->data, src->data, (size_t)src->size * sizeof(float));
    else
        raise_status(MAAS_ERR_NOMEM);
    maas_tensor_decref(src);
    return t;
}

static PyObject *tensor_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"data", "requires_grad", "copy", NULL};
    PyObject *data;
    int requires_grad = 0, copy = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|pp:Tensor", kwlist, &data,
                                     &requires_grad, &copy))
        return NULL;
    module_state *st = state_of_type(type);
    if (!st)
        return NULL;
    maas_tensor *t = copy ? copy_tensor(st, data) : as_tensor(st, data);
    if (!t)
        return NULL;
    if (t->refcount > 1) {
        /* shared with another Tensor object: requires_grad lives on the core
         * tensor, so give this object a view of its own */
        maas_tensor *v = maas_tensor_view(t, 0, t->ndim, t->shape);
        maas_tensor_decref(t);
        if (!(t = v))
            return raise_status(MAAS_ERR_NOMEM);
    }
    t->requires_grad = requires_grad;
    TensorObject *self = (TensorObject *)type->tp_alloc(type, 0);
    if (!self) {
        maas_tensor_decref(t);
        return NULL;
    }
    self->t = t;
    return (PyObject *)self;
}

static void tensor_dealloc(TensorObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (self->weakrefs)
        PyObject_ClearWeakRefs((PyObject *)self);
    Py_CLEAR(self->grad);
    maas_tensor_decref(self->t);
    self->t = NULL;
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int tensor_getbuffer(TensorObject *self, Py_buffer *view, int flags)
{
    trace_note("the step (call() or compute_loss) reads a tensor's values into Python (.numpy(), "
               "np.asarray, a buffer, a metric update)");
    maas_tensor *t = self->t;
    Py_ssize_t *dims = PyMem_Malloc(sizeof(Py_ssize_t) * 2 * (t->ndim ? t->ndim : 1));
    if (!dims) {
        PyErr_NoMemory();
        view->obj = NULL;
        return -1;
    }
    Py_ssize_t stride = sizeof(float);
    for (int d = t->ndim - 1; d >= 0; d--) {
        dims[d] = (Py_ssize_t)t->shape[d];
        dims[t->ndim + d] = stride;
        stride *= (Py_ssize_t)t->shape[d];
    }
    view->buf = t->data;
    view->obj = (PyObject *)self;
    Py_INCREF(self);
    view->len = (Py_ssize_t)t->size * (Py_ssize_t)sizeof(float);
    view->readonly = 0;
    view->itemsize = sizeof(float);
    view->format = (flags & PyBUF_FORMAT) ? "f" : NULL;
    view->ndim = t->ndim;
    view->shape = (flags & PyBUF_ND) ? dims : NULL;
    view->strides = (flags & PyBUF_STRIDES) == PyBUF_STRIDES ? dims + t->ndim : NULL;
    view->suboffsets = NULL;
    view->internal = dims;
    return 0;
}

static void tensor_releasebuffer(TensorObject *self, Py_buffer *view)
{
    PyMem_Free(view->internal);
}

/* ---- number slots: each converts the other operand, or defers to it */

#define BINARY_SLOT(fname, OP)                                                   \
    static PyObject *fname(PyObject *a, PyObject *b)                             \
    {                                                                            \
        module_state *st = state_of_type(is_tensor_any(a) ? Py_TYPE(a) : Py_TYPE(b)); \
        if (!st)                                                                 \
            return NULL;                                                         \
        PyObject *r = op_binary(st, OP, a, b);                                   \
        if (!r && PyErr_ExceptionMatches(PyExc_TypeError)) {                     \
            PyErr_Clear();                                                       \
            Py_RETURN_NOTIMPLEMENTED;                                            \
        }                                                                        \
        return r;                                                                \
    }

/* A tensor type check usable before the state is known: the slot owner's
 * type is a Tensor (sub)type when its tp_as_buffer getter is ours. */
static int is_tensor_any(PyObject *o)
{
    return Py_TYPE(o)->tp_as_buffer &&
           Py_TYPE(o)->tp_as_buffer->bf_getbuffer == (getbufferproc)tensor_getbuffer;
}

BINARY_SLOT(tensor_add, MAAS_B_ADD)
BINARY_SLOT(tensor_sub, MAAS_B_SUB)
BINARY_SLOT(tensor_mul, MAAS_B_MUL)
BINARY_SLOT(tensor_div, MAAS_B_DIV)

static PyObject *tensor_pow(PyObject *a, PyObject *b, PyObject *mod)
{
    if (mod != Py_None)
        Py_RETURN_NOTIMPLEMENTED;
    module_state *st = state_of_type(is_tensor_any(a) ? Py_TYPE(a) : Py_TYPE(b));
    if (!st)
        return NULL;
    if (is_tensor_any(a) && (PyFloat_Check(b) || PyLong_Check(b))) {
        double e = PyFloat_AsDouble(b);
        if (e == -1.0 && PyErr_Occurred())
            return NULL;
        return op_unary(st, MAAS_U_POW_SCALAR, a, (float)e);
    }
    PyObject *r = op_binary(st, MAAS_B_POW, a, b);
    if (!r && PyErr_ExceptionMatches(PyExc_TypeError)) {
        PyErr_Clear();
        Py_RETURN_NOTIMPLEMENTED;
    }
    return r;
}

static PyObject *tensor_matmul(PyObject *a, PyObject *b)
{
    module_state *st = state_of_type(is_tensor_any(a) ? Py_TYPE(a) : Py_TYPE(b));
    if (!st)
        return NULL;
    return op_matmul(st, a, b, 0, 0);
}

static PyObject *tensor_neg(PyObject *a)
{
    return op_unary(state_of_type(Py_TYPE(a)), MAAS_U_NEG, a, 0.0f);
}

static PyObject *tensor_pos(PyObject *a) { return Py_NewRef(a); }

static PyObject *tensor_abs(PyObject *a)
{
    return op_unary(state_of_type(Py_TYPE(a)), MAAS_U_ABS, a, 0.0f);
}

static int scalar_value(PyObject *a, float *v)
{
    trace_note("the step (call() or compute_loss) reads a tensor's value into Python (float(), "
               "int(), bool() or .item(): e.g. an `if` on a tensor)");
    maas_tensor *t = TENSOR(a);
    if (t->size != 1) {
        char buf[160];
        PyErr_Format(PyExc_ValueError,
                     "only a tensor of one element can be converted to a Python "
                     "scalar; this one has shape %s",
                     maas_shape_str(t->ndim, t->shape, buf, sizeof buf));
        return -1;
    }
    *v = t->data[0];
    return 0;
}

static int tensor_bool(PyObject *a)
{
    float v;
    return scalar_value(a, &v) < 0 ? -1 : v != 0.0f;
}

static PyObject *tensor_float(PyObject *a)
{
    float v;
    return scalar_value(a, &v) < 0 ? NULL : PyFloat_FromDouble(v);
}

static PyObject *tensor_int(PyObject *a)
{
    float v;
    return scalar_value(a, &v) < 0 ? NULL : PyLong_FromDouble(v);
}

static PyObject *tensor_richcompare(PyObject *a, PyObject *b, int op)
{
    static const maas_binary_op ops[] = {MAAS_B_LT, MAAS_B_LE, MAAS_B_EQ,
                                         MAAS_B_NE, MAAS_B_GT, MAAS_B_GE};
    module_state *st = state_of_type(Py_TYPE(a));
    if (!st)
        return NULL;
    PyObject *r = op_binary(st, ops[op], a, b);
    if (!r && PyErr_ExceptionMatches(PyExc_TypeError)) {
        PyErr_Clear();
        Py_RETURN_NOTIMPLEMENTED;
    }
    return r;
}

static Py_ssize_t tensor_len(PyObject *a)
{
    maas_tensor *t = TENSOR(a);
    if (t->ndim == 0) {
        PyErr_SetString(PyExc_TypeError, "len() of a 0-d tensor");
        return -1;
    }
    return (Py_ssize_t)t->shape[0];
}

static PyObject *tensor_subscript(PyObject *a, PyObject *key)
{
    return op_getitem(state_of_type(Py_TYPE(a)), a, key);
}

/* ---- attributes */

static PyObject *get_shape(TensorObject *self, void *c)
{
    PyObject *tup = PyTuple_New(self->t->ndim);
    if (!tup)
        return NULL;
    for (int d = 0; d < self->t->ndim; d++) {
        PyObject *v = PyLong_FromLongLong(self->t->shape[d]);
        if (!v) {
            Py_DECREF(tup);
            return NULL;
        }
        PyTuple_SET_ITEM(tup, d, v);
    }
    return tup;
}

static PyObject *get_ndim(TensorObject *self, void *c) { return PyLong_FromLong(self->t->ndim); }
static PyObject *get_size(TensorObject *self, void *c) { return PyLong_FromLongLong(self->t->size); }
static PyObject *get_dtype(TensorObject *self, void *c)
{
    return (PyObject *)PyArray_DescrFromType(NPY_FLOAT32);
}
static PyObject *get_requires_grad(TensorObject *self, void *c)
{
    return PyBool_FromLong(self->t->requires_grad);
}
static int set_requires_grad(TensorObject *self, PyObject *v, void *c)
{
    int b = v ? PyObject_IsTrue(v) : 0;
    if (b < 0)
        return -1;
    self->t->requires_grad = b;
    return 0;
}
static PyObject *get_grad(TensorObject *self, void *c)
{
    return Py_NewRef(self->grad ? self->grad : Py_None);
}
static int set_grad(TensorObject *self, PyObject *v, void *c)
{
    Py_XSETREF(self->grad, v && v != Py_None ? Py_NewRef(v) : NULL);
    return 0;
}
static PyObject *get_T(TensorObject *self, void *c)
{
    if (self->t->ndim != 2) {
        PyErr_Format(PyExc_ValueError,
                     "T is defined for 2-D tensors; this one has %d dimensions "
                     "(use maas.ops.transpose or reshape)",
                     self->t->ndim);
        return NULL;
    }
    return op_transpose(state_of_type(Py_TYPE(self)), (PyObject *)self);
}
static PyObject *get_version(TensorObject *self, void *c)
{
    return PyLong_FromUnsignedLongLong(self->t->version);
}
static PyObject *get_data_ptr(TensorObject *self, void *c)
{
    return PyLong_FromVoidPtr(self->t->data);
}

static PyGetSetDef tensor_getset[] = {
    {"shape", (getter)get_shape, NULL, "The tensor's shape, a tuple of ints.", NULL},
    {"ndim", (getter)get_ndim, NULL, "The number of dimensions.", NULL},
    {"size", (getter)get_size, NULL, "The number of elements.", NULL},
    {"dtype", (getter)get_dtype, NULL, "Always numpy.float32.", NULL},
    {"requires_grad", (getter)get_requires_grad, (setter)set_requires_grad,
     "Whether any active GradientTape records ops on this tensor.", NULL},
    {"grad", (getter)get_grad, (setter)set_grad,
     "The gradient last computed for this tensor by GradientTape.gradient, or None.", NULL},
    {"T", (getter)get_T, NULL, "The transpose of a 2-D tensor (a copy).", NULL},
    {"_version", (getter)get_version, NULL, "Bumped by each in-place write.", NULL},
    {"_data_ptr", (getter)get_data_ptr, NULL, "The address of the first element.", NULL},
    {NULL}};

/* ---- methods */

static PyObject *tensor_numpy(PyObject *self, PyObject *unused)
{
    return PyArray_FromAny(self, NULL, 0, 0, 0, NULL);
}

static PyObject *tensor_array(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"dtype", "copy", NULL};
    PyObject *dtype = Py_None, *copy = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OO:__array__", kwlist, &dtype, &copy))
        return NULL;
    PyObject *arr = PyArray_FromAny(self, NULL, 0, 0, 0, NULL);
    if (!arr)
        return NULL;
    if (dtype != Py_None || copy == Py_True) {
        PyArray_Descr *descr = NULL;
        if (dtype != Py_None && !PyArray_DescrConverter(dtype, &descr)) {
            Py_DECREF(arr);
            return NULL;
        }
        if (!descr)
            descr = PyArray_DescrFromType(NPY_FLOAT32);
        PyObject *r = PyArray_FromArray((PyArrayObject *)arr, descr,
                                        copy == Py_True ? NPY_ARRAY_ENSURECOPY : 0);
        Py_DECREF(arr);
        return r;
    }
    return arr;
}

static PyObject *tensor_reshape(PyObject *self, PyObject *args)
{
    PyObject *shape = args;
    if (PyTuple_GET_SIZE(args) == 1 && !PyLong_Check(PyTuple_GET_ITEM(args, 0)))
        shape = PyTuple_GET_ITEM(args, 0);
    return op_reshape(state_of_type(Py_TYPE(self)), self, shape);
}

#define REDUCE_METHOD(fname, OP)                                                 \
    static PyObject *fname(PyObject *self, PyObject *args, PyObject *kwds)       \
    {                                                                            \
        static char *kwlist[] = {"axis", "keepdims", NULL};                      \
        PyObject *axis = Py_None;                                                \
        int keepdims = 0;                                                        \
        if (!PyArg_ParseTupleAndKeywords(args, kwds, "|Op", kwlist, &axis, &keepdims)) \
            return NULL;                                                         \
        return op_reduce(state_of_type(Py_TYPE(self)), OP, self, axis, keepdims); \
    }
REDUCE_METHOD(tensor_sum, MAAS_R_SUM)
REDUCE_METHOD(tensor_mean, MAAS_R_MEAN)
REDUCE_METHOD(tensor_max, MAAS_R_MAX)
REDUCE_METHOD(tensor_min, MAAS_R_MIN)

static PyObject *tensor_item(PyObject *self, PyObject *unused) { return tensor_float(self); }

static PyMethodDef tensor_methods[] = {
    {"numpy", tensor_numpy, METH_NOARGS,
     "numpy() -> ndarray sharing this tensor's memory (no copy)."},
    {"__array__", (PyCFunction)(void (*)(void))tensor_array, METH_VARARGS | METH_KEYWORDS,
     "__array__(dtype=None, copy=None): NumPy's conversion hook."},
    {"reshape", tensor_reshape, METH_VARARGS,
     "reshape(*shape) -> a tensor sharing memory, one dimension may be -1."},
    {"sum", (PyCFunction)(void (*)(void))tensor_sum, METH_VARARGS | METH_KEYWORDS,
     "sum(axis=None, keepdims=False)"},
    {"mean", (PyCFunction)(void (*)(void))tensor_mean, METH_VARARGS | METH_KEYWORDS,
     "mean(axis=None, keepdims=False)"},
    {"max", (PyCFunction)(void (*)(void))tensor_max, METH_VARARGS | METH_KEYWORDS,
     "max(axis=None, keepdims=False)"},
    {"min", (PyCFunction)(void (*)(void))tensor_min, METH_VARARGS | METH_KEYWORDS,
     "min(axis=None, keepdims=False)"},
    {"item", tensor_item, METH_NOARGS, "item() -> the value of a one-element tensor."},
    {NULL}};

static PyMemberDef tensor_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(TensorObject, weakrefs), READONLY, NULL},
    {NULL}};

static PyType_Slot tensor_slots[] = {
    {Py_tp_doc, (void *)"Tensor(data, requires_grad=False, copy=False)\n\n"
                "A float32, C-contiguous, N-dimensional array whose ops run in C.\n"
                "A float32 C-contiguous NumPy array is wrapped without copying."},
    {Py_tp_new, tensor_new},
    {Py_tp_dealloc, tensor_dealloc},
    {Py_tp_getset, tensor_getset},
    {Py_tp_methods, tensor_methods},
    {Py_tp_members, tensor_members},
    {Py_tp_richcompare, tensor_richcompare},
    {Py_bf_getbuffer, tensor_getbuffer},
    {Py_bf_releasebuffer, tensor_releasebuffer},
    {Py_nb_add, tensor_add},
    {Py_nb_subtract, tensor_sub},
    {Py_nb_multiply, tensor_mul},
    {Py_nb_true_divide, tensor_div},
    {Py_nb_power, tensor_pow},
    {Py_nb_matrix_multiply, tensor_matmul},
    {Py_nb_negative, tensor_neg},
    {Py_nb_positive, tensor_pos},
    {Py_nb_absolute, tensor_abs},
    {Py_nb_bool, tensor_bool},
    {Py_nb_float, tensor_float},
    {Py_nb_int, tensor_int},
    {Py_mp_length, tensor_len},
    {Py_sq_length, tensor_len},
    {Py_mp_subscript, tensor_subscript},
    {0, NULL}};

static PyType_Spec tensor_spec = {
    .name = "maas._core.Tensor",
    .basicsize = sizeof(TensorObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = tensor_slots,
};

int tensor_type_init(PyObject *module, module_state *st)
{
    st->tensor_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &tensor_spec, NULL);
    if (!st->tensor_type)
        return -1;
    /* hash by identity, as PyTorch tensors do, despite elementwise == */
    st->tensor_type->tp_hash = PyBaseObject_Type.tp_hash;
    return PyModule_AddType(module, st->tensor_type);
}
