/* bind_plan.c -- maas._core.Plan: builds a compiled plan from the layers'
 * variables and runs whole training steps and forward passes with the GIL
 * released. A plan is used by one thread at a time (a second caller gets
 * RuntimeError rather than corrupting its buffers). */
#include "common.h"

typedef struct {
    PyObject_HEAD
    maas_plan *plan;
    int64_t in_features;
    int loss_op;
    int busy;
} PlanObject;

static PyObject *plan_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    long long in_features;
    if (!PyArg_ParseTuple(args, "L:Plan", &in_features))
        return NULL;
    PlanObject *self = (PlanObject *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    if (!(self->plan = maas_plan_new(in_features))) {
        Py_DECREF(self);
        return raise_status(MAAS_ERR_VALUE);
    }
    self->in_features = in_features;
    self->loss_op = -1;
    return (PyObject *)self;
}

static void plan_dealloc(PlanObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    maas_plan_free(self->plan);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int parse_slots(module_state *st, PyObject *seq, maas_tensor *out[3])
{
    out[0] = out[1] = out[2] = NULL;
    if (seq == Py_None)
        return 0;
    if (!PyTuple_Check(seq) || PyTuple_GET_SIZE(seq) != 3) {
        PyErr_SetString(PyExc_TypeError, "Plan.add_dense: slots must be a 3-tuple of Tensor or None");
        return -1;
    }
    for (int k = 0; k < 3; k++) {
        PyObject *o = PyTuple_GET_ITEM(seq, k);
        if (o == Py_None)
            continue;
        if (!is_tensor(st, o)) {
            PyErr_SetString(PyExc_TypeError, "Plan.add_dense: a slot must be a maas Tensor");
            return -1;
        }
        out[k] = TENSOR(o);
    }
    return 0;
}

static PyObject *plan_add_dense(PlanObject *self, PyObject *args)
{
    PyObject *w, *b, *sw, *sb;
    int trainable, dw, db;
    float reg[4];
    if (!PyArg_ParseTuple(args, "OOp(ffff)OO(pp):add_dense", &w, &b, &trainable, &reg[0], &reg[1],
                          &reg[2], &reg[3], &sw, &sb, &dw, &db))
        return NULL;
    module_state *st = state_of_type(Py_TYPE(self));
    if (!st)
        return NULL;
    if (!is_tensor(st, w) || (b != Py_None && !is_tensor(st, b)))
        return PyErr_Format(PyExc_TypeError, "Plan.add_dense: kernel and bias must be maas Variables");
    maas_tensor *slots_w[3], *slots_b[3];
    if (parse_slots(st, sw, slots_w) < 0 || parse_slots(st, sb, slots_b) < 0)
        return NULL;
    int decay[2] = {dw, db};
    maas_status s = maas_plan_add_dense(self->plan, TENSOR(w), b == Py_None ? NULL : TENSOR(b),
                                        trainable, reg, slots_w, slots_b, decay);
    if (s != MAAS_OK)
        return raise_status(s);
    Py_RETURN_NONE;
}

static PyObject *plan_add_unary(PlanObject *self, PyObject *args)
{
    int op;
    float alpha = 0.0f;
    if (!PyArg_ParseTuple(args, "i|f:add_unary", &op, &alpha))
        return NULL;
    maas_status s = maas_plan_add_unary(self->plan, (maas_unary_op)op, alpha);
    return s == MAAS_OK ? Py_NewRef(Py_None) : raise_status(s);
}

static PyObject *plan_add_softmax(PlanObject *self, PyObject *args)
{
    int log = 0;
    if (!PyArg_ParseTuple(args, "|p:add_softmax", &log))
        return NULL;
    maas_status s = maas_plan_add_softmax(self->plan, log);
    return s == MAAS_OK ? Py_NewRef(Py_None) : raise_status(s);
}

static PyObject *plan_add_dropout(PlanObject *self, PyObject *args)
{
    float rate;
    if (!PyArg_ParseTuple(args, "f:add_dropout", &rate))
        return NULL;
    maas_status s = maas_plan_add_dropout(self->plan, rate);
    return s == MAAS_OK ? Py_NewRef(Py_None) : raise_status(s);
}

static PyObject *plan_set_input(PlanObject *self, PyObject *args)
{
    int id;
    if (!PyArg_ParseTuple(args, "i:set_input", &id))
        return NULL;
    maas_status s = maas_plan_set_input(self->plan, id);
    return s == MAAS_OK ? Py_NewRef(Py_None) : raise_status(s);
}

static PyObject *plan_add_merge(PlanObject *self, PyObject *args)
{
    int op, a, b;
    if (!PyArg_ParseTuple(args, "iii:add_merge", &op, &a, &b))
        return NULL;
    maas_status s = maas_plan_add_merge(self->plan, (maas_merge_op)op, a, b);
    return s == MAAS_OK ? Py_NewRef(Py_None) : raise_status(s);
}

static PyObject *plan_set_loss(PlanObject *self, PyObject *args)
{
    int op, from_logits = 0;
    if (!PyArg_ParseTuple(args, "i|p:set_loss", &op, &from_logits))
        return NULL;
    maas_status s = maas_plan_set_loss(self->plan, (maas_loss_op)op, from_logits);
    if (s != MAAS_OK)
        return raise_status(s);
    self->loss_op = op;
    Py_RETURN_NONE;
}

static PyObject *plan_set_optimizer(PlanObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"kind", "momentum", "nesterov", "beta_1", "beta_2", "epsilon",
                             "amsgrad", "rho", "centered", "weight_decay", "clipnorm",
                             "clipvalue", "global_clipnorm", NULL};
    maas_optim_config c = {0};
    int kind;
    c.beta_1 = 0.9f;
    c.beta_2 = 0.999f;
    c.eps = 1e-7f;
    c.rho = 0.9f;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i|fpfffpfpffff:set_optimizer", kwlist, &kind,
                                     &c.momentum, &c.nesterov, &c.beta_1, &c.beta_2, &c.eps,
                                     &c.amsgrad, &c.rho, &c.centered, &c.weight_decay, &c.clipnorm,
                                     &c.clipvalue, &c.global_clipnorm))
        return NULL;
    if (kind < MAAS_OPT_SGD || kind > MAAS_OPT_RMSPROP)
        return PyErr_Format(PyExc_ValueError, "Plan.set_optimizer: unknown kind %d", kind);
    c.kind = (maas_optim_kind)kind;
    maas_status s = maas_plan_set_optimizer(self->plan, &c);
    return s == MAAS_OK ? Py_NewRef(Py_None) : raise_status(s);
}

/* x as a core tensor of n rows and `width` columns. */
static maas_tensor *rows_arg(module_state *st, PyObject *o, const char *what, int64_t width,
                             int64_t n_expected)
{
    maas_tensor *t = as_tensor(st, o);
    if (!t)
        return NULL;
    int64_t n = t->ndim ? t->shape[0] : 1;
    int64_t w = n ? t->size / n : 0;
    if ((n_expected >= 0 && n != n_expected) || (t->ndim >= 1 && w != width && n != 0)) {
        char buf[160];
        PyErr_Format(PyExc_ValueError, "%s of shape %s does not fit: expected %lld rows of %lld values",
                     what, maas_shape_str(t->ndim, t->shape, buf, sizeof buf),
                     (long long)(n_expected >= 0 ? n_expected : n), (long long)width);
        maas_tensor_decref(t);
        return NULL;
    }
    return t;
}

static int enter(PlanObject *self)
{
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "this plan is running in another thread");
        return -1;
    }
    self->busy = 1;
    return 0;
}

static PyObject *plan_train_step(PlanObject *self, PyObject *args)
{
    PyObject *xo, *yo, *swo;
    float lr;
    long long step;
    unsigned long long seed, stream;
    if (!PyArg_ParseTuple(args, "OOOfLKK:train_step", &xo, &yo, &swo, &lr, &step, &seed, &stream))
        return NULL;
    module_state *st = state_of_type(Py_TYPE(self));
    if (!st)
        return NULL;
    maas_tensor *x = rows_arg(st, xo, "x", self->in_features, -1), *y = NULL, *sw = NULL;
    PyObject *r = NULL;
    if (!x)
        return NULL;
    int64_t n = x->ndim ? x->shape[0] : 1;
    int64_t ywidth = self->loss_op == MAAS_L_SCCE ? 1 : maas_plan_out_features(self->plan);
    if (!(y = rows_arg(st, yo, "y", ywidth, n)))
        goto done;
    if (swo != Py_None && !(sw = rows_arg(st, swo, "sample_weight", 1, n)))
        goto done;
    if (enter(self) < 0)
        goto done;
    double loss = 0.0;
    maas_status s;
    maas_plan *plan = self->plan;
    Py_BEGIN_ALLOW_THREADS
    s = maas_plan_train_step(plan, x->data, y->data, sw ? sw->data : NULL, n, lr, step, seed,
                             stream, &loss);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    r = s == MAAS_OK ? PyFloat_FromDouble(loss) : raise_status(s);
done:
    maas_tensor_decref(x);
    maas_tensor_decref(y);
    maas_tensor_decref(sw);
    return r;
}

static PyObject *plan_predict(PlanObject *self, PyObject *args)
{
    PyObject *xo;
    long long chunk = 1024;
    if (!PyArg_ParseTuple(args, "O|L:predict", &xo, &chunk))
        return NULL;
    module_state *st = state_of_type(Py_TYPE(self));
    if (!st)
        return NULL;
    maas_tensor *x = rows_arg(st, xo, "x", self->in_features, -1);
    if (!x)
        return NULL;
    npy_intp dims[2] = {x->ndim ? (npy_intp)x->shape[0] : 1,
                        (npy_intp)maas_plan_out_features(self->plan)};
    PyObject *out = PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (!out || enter(self) < 0) {
        Py_XDECREF(out);
        maas_tensor_decref(x);
        return NULL;
    }
    maas_status s;
    maas_plan *plan = self->plan;
    float *dst = (float *)PyArray_DATA((PyArrayObject *)out);
    Py_BEGIN_ALLOW_THREADS
    s = maas_plan_predict(plan, x->data, (int64_t)dims[0], chunk, dst);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    maas_tensor_decref(x);
    if (s != MAAS_OK) {
        Py_DECREF(out);
        return raise_status(s);
    }
    return out;
}

static PyObject *plan_last_output(PlanObject *self, PyObject *unused)
{
    int64_t n;
    const float *src = maas_plan_last_output(self->plan, &n);
    if (!src)
        Py_RETURN_NONE;
    npy_intp dims[2] = {(npy_intp)n, (npy_intp)maas_plan_out_features(self->plan)};
    PyObject *out = PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (out)
        memcpy(PyArray_DATA((PyArrayObject *)out), src, (size_t)(dims[0] * dims[1]) * sizeof(float));
    return out;
}

static PyObject *plan_out_features(PlanObject *self, void *c)
{
    return PyLong_FromLongLong(maas_plan_out_features(self->plan));
}

static PyMethodDef plan_methods[] = {
    {"add_dense", (PyCFunction)plan_add_dense, METH_VARARGS,
     "add_dense(kernel, bias, trainable, (l1_k, l2_k, l1_b, l2_b), slots_k, slots_b, (decay_k, decay_b))"},
    {"add_unary", (PyCFunction)plan_add_unary, METH_VARARGS, "add_unary(op, alpha=0.0)"},
    {"add_softmax", (PyCFunction)plan_add_softmax, METH_VARARGS, "add_softmax(log=False)"},
    {"add_dropout", (PyCFunction)plan_add_dropout, METH_VARARGS, "add_dropout(rate)"},
    {"set_input", (PyCFunction)plan_set_input, METH_VARARGS,
     "set_input(step): the next step reads that step's output (-1: x)"},
    {"add_merge", (PyCFunction)plan_add_merge, METH_VARARGS,
     "add_merge(op, a, b): 0 add, 1 subtract, 2 multiply, 3 concatenate two steps' outputs"},
    {"set_loss", (PyCFunction)plan_set_loss, METH_VARARGS, "set_loss(op, from_logits=False)"},
    {"set_optimizer", (PyCFunction)(void (*)(void))plan_set_optimizer, METH_VARARGS | METH_KEYWORDS,
     "set_optimizer(kind, **hyperparameters)"},
    {"train_step", (PyCFunction)plan_train_step, METH_VARARGS,
     "train_step(x, y, sample_weight, lr, step, seed, stream) -> loss"},
    {"predict", (PyCFunction)plan_predict, METH_VARARGS, "predict(x, chunk=1024) -> ndarray"},
    {"last_output", (PyCFunction)plan_last_output, METH_NOARGS,
     "The last training batch's predictions (a copy), or None."},
    {NULL}};

static PyObject *plan_cursor(PlanObject *self, void *c)
{
    return PyLong_FromLong(maas_plan_cursor(self->plan));
}

static PyGetSetDef plan_getset[] = {
    {"cursor", (getter)plan_cursor, NULL, "The step the next step reads (-1: x).", NULL},
    {"out_features", (getter)plan_out_features, NULL, "The width of the output.", NULL},
    {NULL}};

static PyType_Slot plan_slots[] = {
    {Py_tp_doc, (void *)"Plan(in_features): a compiled chain of layer kernels."},
    {Py_tp_new, plan_new},
    {Py_tp_dealloc, plan_dealloc},
    {Py_tp_methods, plan_methods},
    {Py_tp_getset, plan_getset},
    {0, NULL}};

static PyType_Spec plan_spec = {
    .name = "maas._core.Plan",
    .basicsize = sizeof(PlanObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = plan_slots,
};

int plan_type_init(PyObject *module)
{
    PyTypeObject *tp = (PyTypeObject *)PyType_FromModuleAndSpec(module, &plan_spec, NULL);
    if (!tp)
        return -1;
    int r = PyModule_AddType(module, tp);
    Py_DECREF(tp);
    return r;
}
