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

static const int npy_of_dtype[MAAS_DTYPE_COUNT] = {
    [MAAS_F32] = NPY_FLOAT32, [MAAS_I32] = NPY_INT32, [MAAS_I64] = NPY_INT64,
    [MAAS_I8] = NPY_INT8,     [MAAS_U8] = NPY_UINT8,  [MAAS_BOOL] = NPY_BOOL,
};

int npy_type_of_dtype(maas_dtype dt) { return npy_of_dtype[dt]; }

/* The maas dtype whose elements are exactly NumPy's type `typenum`, or -1. */
static int dtype_of_typenum(int typenum)
{
    for (int d = 0; d < MAAS_DTYPE_COUNT; d++)
        if (PyArray_EquivTypenums(typenum, npy_of_dtype[d]))
            return d;
    return -1;
}

static PyObject *no_dtype_error(PyArray_Descr *descr)
{
    PyObject *dt = PyObject_Str((PyObject *)descr);
    PyErr_Format(PyExc_TypeError,
                 "maas has no dtype %S: tensors are float32, int32, int64, int8, uint8 or "
                 "bool (convert first, e.g. with .astype(np.float32))",
                 dt ? dt : Py_None);
    Py_XDECREF(dt);
    return NULL;
}

int dtype_converter(PyObject *o, maas_dtype *out)
{
    PyArray_Descr *descr = NULL;
    if (!PyArray_DescrConverter(o, &descr)) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError,
                     "dtype must be one of 'float32', 'int32', 'int64', 'int8', 'uint8', "
                     "'bool' (or the NumPy type), received %R",
                     o);
        return 0;
    }
    int d = dtype_of_typenum(descr->type_num);
    if (d < 0 || PyArray_ISNBO(descr->byteorder) == 0) {
        if (d < 0)
            no_dtype_error(descr);
        else
            PyErr_Format(PyExc_TypeError, "dtype %R is not in the machine's byte order", o);
        Py_DECREF(descr);
        return 0;
    }
    Py_DECREF(descr);
    *out = (maas_dtype)d;
    return 1;
}

/* The dtype a tensor made from an array of this dtype gets when none is
 * asked for: its own when maas has it; float64 and float16 -> float32 (as
 * Keras's default float); int16/uint16 -> int32, uint32 -> int64 (the
 * smallest that holds every value). -1 with TypeError otherwise. */
static int inferred_dtype(PyArray_Descr *descr)
{
    int d = dtype_of_typenum(descr->type_num);
    if (d >= 0)
        return d;
    int size = (int)PyDataType_ELSIZE(descr);
    switch (descr->kind) {
    case 'f': return MAAS_F32;
    case 'i': if (size == 2) return MAAS_I32; break;
    case 'u': if (size == 2) return MAAS_I32; if (size == 4) return MAAS_I64; break;
    default: break;
    }
    no_dtype_error(descr);
    return -1;
}

/* Takes a reference to a C-contiguous aligned writeable array of a maas
 * dtype in native byte order and wraps its memory. */
static maas_tensor *wrap_array(PyArrayObject *arr, maas_dtype dt)
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
    maas_tensor *t = maas_tensor_wrap_typed(PyArray_DATA(arr), dt, nd, shape, arr,
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

/* Any array-like as an ndarray (a new reference), with a message saying
 * what a tensor needs when NumPy cannot make one. */
static PyArrayObject *any_array(PyObject *o)
{
    PyArrayObject *arr = (PyArrayObject *)PyArray_FromAny(o, NULL, 0, 0, 0, NULL);
    if (!arr && PyErr_ExceptionMatches(PyExc_ValueError)) {
        /* e.g. a ragged nested list: say what a tensor needs */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_Format(PyExc_ValueError, "cannot make a tensor from %.100s: %S",
                     Py_TYPE(o)->tp_name, value ? value : Py_None);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
    }
    return arr;
}

/* An array of dtype `dt`, C-contiguous, aligned, writeable, native byte
 * order: `arr` itself (a new reference) when it already is one and no copy
 * is forced, else a converted copy (NumPy's astype rules). */
static PyArrayObject *array_as(PyArrayObject *arr, maas_dtype dt, int force_copy)
{
    char kind = PyArray_DESCR(arr)->kind;
    if (kind != 'f' && kind != 'i' && kind != 'u' && kind != 'b') {
        PyObject *d = PyObject_Str((PyObject *)PyArray_DESCR(arr));
        PyErr_Format(PyExc_TypeError,
                     "cannot convert data of dtype %S to a %s tensor: "
                     "only numeric and boolean data can be",
                     d ? d : Py_None, maas_dtype_name(dt));
        Py_XDECREF(d);
        return NULL;
    }
    int flags = NPY_ARRAY_CARRAY | NPY_ARRAY_FORCECAST | (force_copy ? NPY_ARRAY_ENSURECOPY : 0);
    return (PyArrayObject *)PyArray_FromArray(arr, PyArray_DescrFromType(npy_of_dtype[dt]), flags);
}

static maas_tensor *array_to_tensor(PyArrayObject *arr, int dtype, int force_copy)
{
    if (dtype < 0) {
        char kind = PyArray_DESCR(arr)->kind;
        if (kind != 'f' && kind != 'i' && kind != 'u' && kind != 'b') {
            PyObject *d = PyObject_Str((PyObject *)PyArray_DESCR(arr));
            PyErr_Format(PyExc_TypeError,
                         "cannot convert data of dtype %S to a float32 tensor (or any maas "
                         "tensor): only numeric and boolean data can be",
                         d ? d : Py_None);
            Py_XDECREF(d);
            return NULL;
        }
        if ((dtype = inferred_dtype(PyArray_DESCR(arr))) < 0)
            return NULL;
    }
    PyArrayObject *c = array_as(arr, (maas_dtype)dtype, force_copy);
    if (!c)
        return NULL;
    maas_tensor *t = wrap_array(c, (maas_dtype)dtype);
    Py_DECREF(c);
    return t;
}

/* A new tensor of dtype dt holding src's values (maas_cast). */
static maas_tensor *cast_copy(maas_tensor *src, maas_dtype dt)
{
    maas_tensor *t = maas_tensor_new_typed(dt, src->ndim, src->shape);
    if (!t) {
        raise_status(MAAS_ERR_NOMEM);
        return NULL;
    }
    maas_status s;
    MAAS_NOGIL_IF(src->size > MAAS_NOGIL_WORK,
                  s = maas_cast(t->ptr, dt, src->ptr, src->dtype, src->size));
    if (s != MAAS_OK) {
        maas_tensor_decref(t);
        raise_status(s);
        return NULL;
    }
    return t;
}

maas_tensor *as_typed_tensor(module_state *st, PyObject *o, int dtype, int force_copy)
{
    if (is_tensor(st, o)) {
        maas_tensor *src = TENSOR(o);
        if ((dtype < 0 || dtype == (int)src->dtype) && !force_copy) {
            maas_tensor_incref(src);
            return src;
        }
        return cast_copy(src, dtype < 0 ? src->dtype : (maas_dtype)dtype);
    }
    PyArrayObject *arr = any_array(o);
    if (!arr)
        return NULL;
    maas_tensor *t = array_to_tensor(arr, dtype, force_copy);
    Py_DECREF(arr);
    return t;
}

maas_tensor *as_float_tensor(module_state *st, PyObject *o, const char *opname)
{
    if (is_tensor(st, o)) {
        maas_tensor *t = TENSOR(o);
        if (t->dtype != MAAS_F32) {
            PyErr_Format(PyExc_TypeError,
                         "%s: expected a float32 tensor, received a tensor of dtype %s; cast it "
                         "first, e.g. maas.ops.cast(x, \"float32\")",
                         opname ? opname : "this op", maas_dtype_name(t->dtype));
            return NULL;
        }
        maas_tensor_incref(t);
        return t;
    }
    if (PyFloat_CheckExact(o))
        return scalar_tensor(PyFloat_AS_DOUBLE(o));
    if (PyLong_CheckExact(o)) {
        double v = PyLong_AsDouble(o);
        if (v == -1.0 && PyErr_Occurred())
            return NULL;
        return scalar_tensor(v);
    }
    PyArrayObject *arr = any_array(o);
    if (!arr)
        return NULL;
    maas_tensor *t = array_to_tensor(arr, MAAS_F32, 0);
    Py_DECREF(arr);
    return t;
}

maas_tensor *as_float_converted(module_state *st, PyObject *o)
{
    if (is_tensor(st, o) && TENSOR(o)->dtype != MAAS_F32)
        return cast_copy(TENSOR(o), MAAS_F32);
    return as_float_tensor(st, o, NULL);
}

maas_tensor *as_tensor(module_state *st, PyObject *o)
{
    return as_float_tensor(st, o, NULL);
}

/* ------------------------------------------------------------ type slots */

static PyObject *tensor_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"data", "requires_grad", "copy", "dtype", NULL};
    PyObject *data, *dtype_obj = Py_None;
    int requires_grad = 0, copy = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|ppO:Tensor", kwlist, &data,
                                     &requires_grad, &copy, &dtype_obj))
        return NULL;
    module_state *st = state_of_type(type);
    if (!st)
        return NULL;
    maas_dtype dt = MAAS_F32;
    if (dtype_obj != Py_None && !dtype_converter(dtype_obj, &dt))
        return NULL;
    maas_tensor *t = as_typed_tensor(st, data, dtype_obj == Py_None ? -1 : (int)dt, copy);
    if (!t)
        return NULL;
    if (requires_grad && t->dtype != MAAS_F32) {
        PyErr_Format(PyExc_TypeError,
                     "Tensor: only float32 tensors can require gradients, this one is %s",
                     maas_dtype_name(t->dtype));
        maas_tensor_decref(t);
        return NULL;
    }
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

static int tensor_traverse(TensorObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self)); /* a heap type */
    Py_VISIT(self->grad);
    return 0;
}

static int tensor_clear(TensorObject *self)
{
    Py_CLEAR(self->grad);
    return 0;
}

static void tensor_dealloc(TensorObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
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
    static const char *formats[MAAS_DTYPE_COUNT] = {
        [MAAS_F32] = "f", [MAAS_I32] = "i", [MAAS_I64] = sizeof(long) == 8 ? "l" : "q",
        [MAAS_I8] = "b", [MAAS_U8] = "B", [MAAS_BOOL] = "?"};
    Py_ssize_t itemsize = (Py_ssize_t)maas_dtype_size(t->dtype);
    Py_ssize_t stride = itemsize;
    for (int d = t->ndim - 1; d >= 0; d--) {
        dims[d] = (Py_ssize_t)t->shape[d];
        dims[t->ndim + d] = stride;
        stride *= (Py_ssize_t)t->shape[d];
    }
    view->buf = t->ptr;
    view->obj = (PyObject *)self;
    Py_INCREF(self);
    view->len = (Py_ssize_t)t->size * itemsize;
    view->readonly = 0;
    view->itemsize = itemsize;
    view->format = (flags & PyBUF_FORMAT) ? (char *)formats[t->dtype] : NULL;
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

/* ---- number slots: each converts the other operand, or defers to it.
 * The kernels behind them are float32. A tensor of another dtype meets a
 * float operand (a float32 tensor, a Python float, a float array) by being
 * promoted to float32, as Keras promotes int and float to float; with
 * anything else (an int tensor, a Python int) the op raises TypeError
 * naming itself and the dtype. */

/* A tensor type check usable before the state is known: the slot owner's
 * type is a Tensor (sub)type when its tp_as_buffer getter is ours. */
static int is_tensor_any(PyObject *o);

static int nonfloat_tensor(PyObject *o)
{
    return is_tensor_any(o) && TENSOR(o)->dtype != MAAS_F32;
}

/* 1 when o is of a kind an arithmetic operand may be (so a dtype error is
 * the right answer rather than NotImplemented). */
static int operand_like(PyObject *o)
{
    return is_tensor_any(o) || PyFloat_Check(o) || PyLong_Check(o) || PyArray_Check(o) ||
           PyArray_IsScalar(o, Generic) || PyList_Check(o) || PyTuple_Check(o);
}

/* 1 when o is floating point data. */
static int float_like(PyObject *o)
{
    if (is_tensor_any(o))
        return TENSOR(o)->dtype == MAAS_F32;
    if (PyFloat_Check(o) || PyArray_IsScalar(o, Floating))
        return 1;
    return PyArray_Check(o) && PyArray_DESCR((PyArrayObject *)o)->kind == 'f';
}

static PyObject *dtype_type_error(const char *opname, PyObject *x)
{
    PyErr_Format(PyExc_TypeError,
                 "%s: expected a float32 tensor, received a tensor of dtype %s; cast it first, "
                 "e.g. maas.ops.cast(x, \"float32\")",
                 opname, maas_dtype_name(TENSOR(x)->dtype));
    return NULL;
}

/* A float32 Tensor object of x's values (a copy). */
static PyObject *promoted(module_state *st, PyObject *x)
{
    maas_tensor *t = cast_copy(TENSOR(x), MAAS_F32);
    return t ? tensor_wrap(st, t) : NULL;
}

/* *pa, *pb: new references to the operands, a non-float tensor promoted to
 * float32 when the other operand is float. Returns 1 to go on, 0 to return
 * NotImplemented, -1 on error (TypeError naming the op). */
static int promote_pair(module_state *st, const char *opname, PyObject *a, PyObject *b,
                        PyObject **pa, PyObject **pb)
{
    PyObject *in[2] = {a, b}, *out[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++) {
        PyObject *x = in[i], *y = in[1 - i];
        if (!nonfloat_tensor(x)) {
            out[i] = Py_NewRef(x);
            continue;
        }
        if (!operand_like(y)) {
            Py_XDECREF(out[0]);
            return 0;
        }
        if (!float_like(y) || !(out[i] = promoted(st, x))) {
            if (!PyErr_Occurred())
                dtype_type_error(opname, x);
            Py_XDECREF(out[0]);
            return -1;
        }
    }
    *pa = out[0];
    *pb = out[1];
    return 1;
}

static PyObject *binary_slot(maas_binary_op op, const char *opname, PyObject *a, PyObject *b)
{
    module_state *st = state_of_type(is_tensor_any(a) ? Py_TYPE(a) : Py_TYPE(b));
    if (!st)
        return NULL;
    PyObject *pa, *pb;
    int go = promote_pair(st, opname, a, b, &pa, &pb);
    if (go <= 0) {
        if (go < 0)
            return NULL;
        Py_RETURN_NOTIMPLEMENTED;
    }
    PyObject *r = op_binary(st, op, pa, pb);
    Py_DECREF(pa);
    Py_DECREF(pb);
    if (!r && PyErr_ExceptionMatches(PyExc_TypeError)) {
        PyErr_Clear();
        Py_RETURN_NOTIMPLEMENTED;
    }
    return r;
}

#define BINARY_SLOT(fname, OP, NAME)                                             \
    static PyObject *fname(PyObject *a, PyObject *b) { return binary_slot(OP, NAME, a, b); }

static int is_tensor_any(PyObject *o)
{
    return Py_TYPE(o)->tp_as_buffer &&
           Py_TYPE(o)->tp_as_buffer->bf_getbuffer == (getbufferproc)tensor_getbuffer;
}

BINARY_SLOT(tensor_add, MAAS_B_ADD, "add")
BINARY_SLOT(tensor_sub, MAAS_B_SUB, "subtract")
BINARY_SLOT(tensor_mul, MAAS_B_MUL, "multiply")
BINARY_SLOT(tensor_div, MAAS_B_DIV, "divide")

static PyObject *tensor_pow(PyObject *a, PyObject *b, PyObject *mod)
{
    if (mod != Py_None)
        Py_RETURN_NOTIMPLEMENTED;
    module_state *st = state_of_type(is_tensor_any(a) ? Py_TYPE(a) : Py_TYPE(b));
    if (!st)
        return NULL;
    PyObject *pa, *pb;
    int go = promote_pair(st, "power", a, b, &pa, &pb);
    if (go <= 0) {
        if (go < 0)
            return NULL;
        Py_RETURN_NOTIMPLEMENTED;
    }
    PyObject *r;
    if (is_tensor_any(pa) && (PyFloat_Check(pb) || PyLong_Check(pb))) {
        double e = PyFloat_AsDouble(pb);
        r = (e == -1.0 && PyErr_Occurred()) ? NULL : op_unary(st, MAAS_U_POW_SCALAR, pa, (float)e);
    } else {
        r = op_binary(st, MAAS_B_POW, pa, pb);
        if (!r && PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            r = Py_NewRef(Py_NotImplemented);
        }
    }
    Py_DECREF(pa);
    Py_DECREF(pb);
    return r;
}

static PyObject *tensor_matmul(PyObject *a, PyObject *b)
{
    module_state *st = state_of_type(is_tensor_any(a) ? Py_TYPE(a) : Py_TYPE(b));
    if (!st)
        return NULL;
    PyObject *pa, *pb;
    int go = promote_pair(st, "matmul", a, b, &pa, &pb);
    if (go <= 0) {
        if (go < 0)
            return NULL;
        Py_RETURN_NOTIMPLEMENTED;
    }
    PyObject *r = op_matmul(st, pa, pb, 0, 0);
    Py_DECREF(pa);
    Py_DECREF(pb);
    return r;
}

static PyObject *tensor_neg(PyObject *a)
{
    if (nonfloat_tensor(a))
        return dtype_type_error("negative", a);
    return op_unary(state_of_type(Py_TYPE(a)), MAAS_U_NEG, a, 0.0f);
}

static PyObject *tensor_pos(PyObject *a) { return Py_NewRef(a); }

static PyObject *tensor_abs(PyObject *a)
{
    if (nonfloat_tensor(a))
        return dtype_type_error("absolute", a);
    return op_unary(state_of_type(Py_TYPE(a)), MAAS_U_ABS, a, 0.0f);
}

/* The value of a one-element tensor, as a double (every maas dtype's values
 * fit one exactly except int64 beyond 2**53: *iv holds those). */
static int scalar_value(PyObject *a, double *v, long long *iv)
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
    long long i = 0;
    switch (t->dtype) {
    case MAAS_F32: *v = t->data[0]; return 0;
    case MAAS_I32: i = ((const int32_t *)t->ptr)[0]; break;
    case MAAS_I64: i = ((const int64_t *)t->ptr)[0]; break;
    case MAAS_I8: i = ((const int8_t *)t->ptr)[0]; break;
    case MAAS_U8: i = ((const uint8_t *)t->ptr)[0]; break;
    case MAAS_BOOL: i = ((const uint8_t *)t->ptr)[0] != 0; break;
    default: break;
    }
    *v = (double)i;
    if (iv)
        *iv = i;
    return 0;
}

static int tensor_bool(PyObject *a)
{
    double v;
    return scalar_value(a, &v, NULL) < 0 ? -1 : v != 0.0;
}

static PyObject *tensor_float(PyObject *a)
{
    double v;
    return scalar_value(a, &v, NULL) < 0 ? NULL : PyFloat_FromDouble(v);
}

static PyObject *tensor_int(PyObject *a)
{
    double v;
    long long i;
    if (scalar_value(a, &v, &i) < 0)
        return NULL;
    return TENSOR(a)->dtype == MAAS_F32 ? PyLong_FromDouble(v) : PyLong_FromLongLong(i);
}

static PyObject *tensor_richcompare(PyObject *a, PyObject *b, int op)
{
    static const maas_binary_op ops[] = {MAAS_B_LT, MAAS_B_LE, MAAS_B_EQ,
                                         MAAS_B_NE, MAAS_B_GT, MAAS_B_GE};
    static const char *names[] = {"less", "less_equal", "equal",
                                  "not_equal", "greater", "greater_equal"};
    module_state *st = state_of_type(Py_TYPE(a));
    if (!st)
        return NULL;
    PyObject *pa, *pb;
    int go = promote_pair(st, names[op], a, b, &pa, &pb);
    if (go <= 0) {
        if (go < 0)
            return NULL;
        Py_RETURN_NOTIMPLEMENTED;
    }
    PyObject *r = op_binary(st, ops[op], pa, pb);
    Py_DECREF(pa);
    Py_DECREF(pb);
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

/* Indexing and reshaping a tensor of a dtype the ops do not take (the ops
 * are float32): NumPy's indexing on the shared memory, wrapped again
 * (without a copy when the result is contiguous). Not recorded on tapes:
 * such tensors carry no gradient. */
static PyObject *via_numpy(PyObject *self, PyObject *result)
{
    if (!result)
        return NULL;
    module_state *st = state_of_type(Py_TYPE(self));
    maas_tensor *t = st ? as_typed_tensor(st, result, -1, 0) : NULL;
    Py_DECREF(result);
    return t ? tensor_wrap(st, t) : NULL;
}

static PyObject *tensor_subscript(PyObject *a, PyObject *key)
{
    if (nonfloat_tensor(a)) {
        PyObject *arr = PyArray_FromAny(a, NULL, 0, 0, 0, NULL);
        if (!arr)
            return NULL;
        PyObject *r = PyObject_GetItem(arr, key);
        Py_DECREF(arr);
        return via_numpy(a, r);
    }
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
    return PyUnicode_FromString(maas_dtype_name(self->t->dtype));
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
    if (b && self->t->dtype != MAAS_F32) {
        PyErr_Format(PyExc_TypeError, "only float32 tensors can require gradients, this one is %s",
                     maas_dtype_name(self->t->dtype));
        return -1;
    }
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
    return PyLong_FromVoidPtr(self->t->ptr);
}

static PyGetSetDef tensor_getset[] = {
    {"shape", (getter)get_shape, NULL, "The tensor's shape, a tuple of ints.", NULL},
    {"ndim", (getter)get_ndim, NULL, "The number of dimensions.", NULL},
    {"size", (getter)get_size, NULL, "The number of elements.", NULL},
    {"dtype", (getter)get_dtype, NULL,
     "The element type's name: 'float32', 'int32', 'int64', 'int8', 'uint8' or 'bool'.", NULL},
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
            descr = PyArray_DescrFromType(npy_of_dtype[TENSOR(self)->dtype]);
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
    if (nonfloat_tensor(self)) {
        PyObject *arr = PyArray_FromAny(self, NULL, 0, 0, 0, NULL);
        if (!arr)
            return NULL;
        PyObject *r = PyObject_CallMethod(arr, "reshape", "(O)", shape);
        Py_DECREF(arr);
        return via_numpy(self, r);
    }
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

/* item(): a Python float, int or bool, after the dtype (as NumPy's). */
static PyObject *tensor_item(PyObject *self, PyObject *unused)
{
    switch (TENSOR(self)->dtype) {
    case MAAS_F32: return tensor_float(self);
    case MAAS_BOOL: {
        int b = tensor_bool(self);
        return b < 0 ? NULL : PyBool_FromLong(b);
    }
    default: return tensor_int(self);
    }
}

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
    {Py_tp_doc, (void *)"Tensor(data, requires_grad=False, copy=False, dtype=None)\n\n"
                "A typed (float32, int32, int64, int8, uint8, bool), C-contiguous,\n"
                "N-dimensional array whose ops run in C. A C-contiguous NumPy array of\n"
                "one of those dtypes is wrapped without copying; float64 data becomes\n"
                "float32 unless dtype says otherwise. The ops take float32 tensors."},
    {Py_tp_traverse, tensor_traverse},
    {Py_tp_clear, tensor_clear},
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
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
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
