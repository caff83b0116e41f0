/* bind_plan.c -- maas._core.Plan: a tape's nodes frozen into a compiled
 * plan (csrc/plan.c), replayed with the GIL released. A plan is used by one
 * thread at a time: every method refuses while another thread runs it, so
 * no buffer is freed or changed under a running step. */
#include "common.h"

#include <string.h>

typedef struct {
    PyObject_HEAD
    maas_plan *plan;
    int nparams;
    int busy;
} PlanObject;

static int check_idle(PlanObject *self)
{
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        "this plan is running on another thread; a plan runs one step at a time");
        return -1;
    }
    return 0;
}

/* A list of Tensors (None allowed when allow_none) as borrowed core
 * pointers; *out is PyMem-allocated. */
static int tensor_list(module_state *st, PyObject *o, const char *what, int allow_none,
                       maas_tensor ***out, int *n)
{
    PyObject *seq = PySequence_Fast(o, what);
    if (!seq)
        return -1;
    Py_ssize_t k = PySequence_Fast_GET_SIZE(seq);
    maas_tensor **ts = PyMem_Calloc((size_t)k + 1, sizeof *ts);
    if (!ts) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < k; i++) {
        PyObject *t = PySequence_Fast_GET_ITEM(seq, i);
        if (t == Py_None && allow_none)
            continue;
        if (!is_tensor(st, t)) {
            PyErr_Format(PyExc_TypeError, "Plan: %s[%zd] must be a maas Tensor, got %.100s", what, i,
                         Py_TYPE(t)->tp_name);
            Py_DECREF(seq);
            PyMem_Free(ts);
            return -1;
        }
        ts[i] = TENSOR(t);
    }
    Py_DECREF(seq);
    *out = ts;
    *n = (int)k;
    return 0;
}

/* Plan(tape, inputs, outputs, loss, params) */
static PyObject *plan_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"tape", "inputs", "outputs", "loss", "params", NULL};
    PyObject *tape_o, *inputs_o, *outputs_o, *loss_o = Py_None, *params_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOO:Plan", kwlist, &tape_o, &inputs_o,
                                     &outputs_o, &loss_o, &params_o))
        return NULL;
    module_state *st = state_of_type(type);
    if (!st)
        return NULL;
    maas_tape *tape = tape_core(tape_o, st);
    if (!tape)
        return NULL;
    if (loss_o != Py_None && !is_tensor(st, loss_o))
        return PyErr_Format(PyExc_TypeError, "Plan: loss must be a maas Tensor or None");
    maas_tensor **in = NULL, **out = NULL, **par = NULL;
    int nin, nout, npar;
    PyObject *result = NULL;
    if (tensor_list(st, inputs_o, "inputs", 0, &in, &nin) < 0 ||
        tensor_list(st, outputs_o, "outputs", 0, &out, &nout) < 0 ||
        tensor_list(st, params_o, "params", 0, &par, &npar) < 0)
        goto done;
    int64_t nnodes;
    const maas_node *nodes = maas_tape_nodes(tape, &nnodes);
    maas_plan *plan;
    maas_status s = maas_plan_build(&plan, nnodes, nodes, nin, in, nout, out,
                                    loss_o == Py_None ? NULL : TENSOR(loss_o), npar, par);
    if (s != MAAS_OK) {
        raise_status(s);
        goto done;
    }
    PlanObject *self = (PlanObject *)type->tp_alloc(type, 0);
    if (!self) {
        maas_plan_free(plan);
        goto done;
    }
    self->plan = plan;
    self->nparams = npar;
    result = (PyObject *)self;
done:
    PyMem_Free(in);
    PyMem_Free(out);
    PyMem_Free(par);
    return result;
}

static void plan_dealloc(PlanObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    maas_plan_free(self->plan);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

/* set_optimizer(kind, slots, decay, momentum=0, nesterov=False, beta_1=0.9,
 * beta_2=0.999, epsilon=1e-7, amsgrad=False, rho=0.9, centered=False,
 * weight_decay=0, clipnorm=0, clipvalue=0, global_clipnorm=0); slots holds 3
 * Tensors-or-None per parameter, in the order the plan was given them. */
static PyObject *plan_set_optimizer(PlanObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"kind", "slots", "decay", "momentum", "nesterov", "beta_1",
                             "beta_2", "epsilon", "amsgrad", "rho", "centered",
                             "weight_decay", "clipnorm", "clipvalue", "global_clipnorm", NULL};
    maas_optim_config c = {.beta_1 = 0.9f, .beta_2 = 0.999f, .eps = 1e-7f, .rho = 0.9f};
    int kind;
    PyObject *slots_o, *decay_o;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iOO|fpfffpfpfddd:set_optimizer", kwlist, &kind,
                                     &slots_o, &decay_o, &c.momentum, &c.nesterov, &c.beta_1,
                                     &c.beta_2, &c.eps, &c.amsgrad, &c.rho, &c.centered,
                                     &c.weight_decay, &c.clipnorm, &c.clipvalue,
                                     &c.global_clipnorm))
        return NULL;
    if (check_idle(self) < 0)
        return NULL;
    if (kind < MAAS_OPT_SGD || kind > MAAS_OPT_RMSPROP)
        return PyErr_Format(PyExc_ValueError, "Plan.set_optimizer: unknown kind %d", kind);
    c.kind = (maas_optim_kind)kind;
    module_state *st = state_of_type(Py_TYPE(self));
    maas_tensor **slots = NULL;
    int ns;
    if (tensor_list(st, slots_o, "slots", 1, &slots, &ns) < 0)
        return NULL;
    PyObject *dseq = PySequence_Fast(decay_o, "Plan.set_optimizer: decay must be a sequence");
    int *decay = PyMem_Calloc((size_t)self->nparams + 1, sizeof *decay);
    PyObject *r = NULL;
    if (!dseq || !decay)
        goto done;
    if (ns != 3 * self->nparams || PySequence_Fast_GET_SIZE(dseq) != self->nparams) {
        PyErr_Format(PyExc_ValueError, "Plan.set_optimizer: expected %d slots and %d decay flags "
                     "for %d parameters", 3 * self->nparams, self->nparams, self->nparams);
        goto done;
    }
    for (int i = 0; i < self->nparams; i++) {
        int b = PyObject_IsTrue(PySequence_Fast_GET_ITEM(dseq, i));
        if (b < 0)
            goto done;
        decay[i] = b;
    }
    maas_status s = maas_plan_set_optimizer(self->plan, &c, slots, decay);
    if (s != MAAS_OK) {
        raise_status(s);
        goto done;
    }
    r = Py_None;
    Py_INCREF(r);
done:
    Py_XDECREF(dseq);
    PyMem_Free(decay);
    PyMem_Free(slots);
    return r;
}

/* run(data, keys=None, lr=0.0, step=0, train=False) -> loss or None.
 * data: one array per input, of the placeholder's shape (converted to its
 * dtype); keys: (seed, stream) per random node; train: forward, backward
 * and update (set_optimizer first); else forward only. */
static PyObject *plan_run(PlanObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"data", "keys", "lr", "step", "train", NULL};
    PyObject *data_o, *keys_o = Py_None;
    float lr = 0.0f;
    long long step = 0;
    int train = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OfLp:run", kwlist, &data_o, &keys_o, &lr,
                                     &step, &train))
        return NULL;
    if (check_idle(self) < 0)
        return NULL;
    maas_plan *p = self->plan;
    int nr = maas_plan_num_random(p);
    PyObject *seq = PySequence_Fast(data_o, "Plan.run: data must be a sequence of arrays");
    if (!seq)
        return NULL;
    Py_ssize_t nd = PySequence_Fast_GET_SIZE(seq);
    if (nd != maas_plan_num_inputs(p)) {
        Py_DECREF(seq);
        return PyErr_Format(PyExc_ValueError, "Plan.run: expected %d arrays, one per input, got %zd",
                            maas_plan_num_inputs(p), nd);
    }
    PyArrayObject **arrs = PyMem_Calloc((size_t)nd + 1, sizeof *arrs);
    uint64_t *keys = PyMem_Calloc((size_t)(2 * nr) + 1, sizeof *keys);
    PyObject *r = NULL;
    if (!arrs || !keys) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < nd; i++) {
        maas_tensor *ph = maas_plan_input(p, (int)i);
        arrs[i] = (PyArrayObject *)PyArray_FROM_OTF(PySequence_Fast_GET_ITEM(seq, i),
                                                    npy_type_of_dtype(ph->dtype), NPY_ARRAY_CARRAY_RO);
        if (!arrs[i])
            goto done;
        int ok = PyArray_NDIM(arrs[i]) == ph->ndim;
        for (int d = 0; ok && d < ph->ndim; d++)
            ok = PyArray_DIM(arrs[i], d) == ph->shape[d];
        if (!ok) {
            char a[160];
            PyErr_Format(PyExc_ValueError, "Plan.run: data[%zd] must have shape %s (this plan was "
                         "traced for it)", i, maas_shape_str(ph->ndim, ph->shape, a, sizeof a));
            goto done;
        }
    }
    if (keys_o != Py_None) {
        PyObject *kseq = PySequence_Fast(keys_o, "Plan.run: keys must be a sequence of ints");
        if (!kseq)
            goto done;
        if (PySequence_Fast_GET_SIZE(kseq) != 2 * nr) {
            Py_DECREF(kseq);
            PyErr_Format(PyExc_ValueError, "Plan.run: expected %d keys (a seed and a stream for "
                         "each of %d random ops)", 2 * nr, nr);
            goto done;
        }
        for (int k = 0; k < 2 * nr; k++) {
            keys[k] = PyLong_AsUnsignedLongLongMask(PySequence_Fast_GET_ITEM(kseq, k));
            if (keys[k] == (uint64_t)-1 && PyErr_Occurred()) {
                Py_DECREF(kseq);
                goto done;
            }
        }
        Py_DECREF(kseq);
    } else if (nr) {
        PyErr_Format(PyExc_ValueError, "Plan.run: this plan has %d random ops; pass their keys", nr);
        goto done;
    }
    maas_status s = MAAS_OK;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < nd; i++) {
        maas_tensor *ph = maas_plan_input(p, (int)i);
        memcpy(ph->ptr, PyArray_DATA(arrs[i]), (size_t)ph->size * maas_dtype_size(ph->dtype));
    }
    s = maas_plan_forward(p, keys);
    if (s == MAAS_OK && train)
        s = maas_plan_backward(p);
    if (s == MAAS_OK && train)
        s = maas_plan_update(p, lr, step);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (s != MAAS_OK) {
        raise_status(s);
        goto done;
    }
    maas_tensor *loss = maas_plan_loss(p);
    r = loss ? PyFloat_FromDouble((double)loss->data[0]) : (Py_INCREF(Py_None), Py_None);
done:
    for (Py_ssize_t i = 0; arrs && i < nd; i++)
        Py_XDECREF(arrs[i]);
    PyMem_Free(arrs);
    PyMem_Free(keys);
    Py_DECREF(seq);
    return r;
}

/* backward(), then update(lr, step) when `update` is true: for the step
 * that was traced (its forward already ran eagerly). */
static PyObject *plan_backward(PlanObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"update", "lr", "step", NULL};
    int update = 0;
    float lr = 0.0f;
    long long step = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|pfL:backward", kwlist, &update, &lr, &step))
        return NULL;
    if (check_idle(self) < 0)
        return NULL;
    maas_status s;
    maas_plan *p = self->plan;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    s = maas_plan_backward(p);
    if (s == MAAS_OK && update)
        s = maas_plan_update(p, lr, step);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (s != MAAS_OK)
        return raise_status(s);
    Py_RETURN_NONE;
}

/* update(lr, step): the fused optimizer update alone, from the gradients a
 * backward() left (and that the caller may have changed in place: a
 * data-parallel step sums them over processes first). */
static PyObject *plan_update(PlanObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"lr", "step", NULL};
    float lr = 0.0f;
    long long step = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "fL:update", kwlist, &lr, &step))
        return NULL;
    if (check_idle(self) < 0)
        return NULL;
    maas_status s;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    s = maas_plan_update(self->plan, lr, step);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    if (s != MAAS_OK)
        return raise_status(s);
    Py_RETURN_NONE;
}

/* Every parameter gradient end to end, one float32 Tensor sharing the
 * plan's memory (each grads() entry is a view into it); None when no
 * parameter gets a gradient. */
static PyObject *plan_flat_grad(PlanObject *self, PyObject *unused)
{
    if (check_idle(self) < 0)
        return NULL;
    maas_tensor *g = maas_plan_flat_grad(self->plan);
    if (!g)
        Py_RETURN_NONE;
    maas_tensor_incref(g);
    return tensor_wrap(state_of_type(Py_TYPE(self)), g);
}

/* The parameters' gradients (Tensors sharing the plan's buffers, None where
 * the loss does not depend on one). */
static PyObject *plan_grads(PlanObject *self, PyObject *unused)
{
    if (check_idle(self) < 0)
        return NULL;
    module_state *st = state_of_type(Py_TYPE(self));
    PyObject *list = PyList_New(self->nparams);
    for (int i = 0; list && i < self->nparams; i++) {
        maas_tensor *g = maas_plan_grad(self->plan, i);
        PyObject *o = Py_None;
        if (g) {
            maas_tensor_incref(g);
            if (!(o = tensor_wrap(st, g))) {
                Py_CLEAR(list);
                break;
            }
        } else {
            Py_INCREF(o);
        }
        PyList_SET_ITEM(list, i, o);
    }
    return list;
}

static PyObject *copy_out(maas_tensor *t)
{
    npy_intp dims[MAAS_MAX_DIMS];
    for (int d = 0; d < t->ndim; d++)
        dims[d] = (npy_intp)t->shape[d];
    PyObject *a = PyArray_SimpleNew(t->ndim, dims, npy_type_of_dtype(t->dtype));
    if (a)
        memcpy(PyArray_DATA((PyArrayObject *)a), t->ptr, (size_t)t->size * maas_dtype_size(t->dtype));
    return a;
}

/* outputs() -> copies of the output tensors after the last run. */
static PyObject *plan_outputs(PlanObject *self, PyObject *unused)
{
    if (check_idle(self) < 0)
        return NULL;
    int n = maas_plan_num_outputs(self->plan);
    PyObject *list = PyList_New(n);
    for (int i = 0; list && i < n; i++) {
        PyObject *a = copy_out(maas_plan_output(self->plan, i));
        if (!a) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, a);
    }
    return list;
}

/* fold_batchnorm() -> the number of batch normalizations folded into the
 * convolution or dense node before them (inference plans only). */
static PyObject *plan_fold_batchnorm(PlanObject *self, PyObject *unused)
{
    if (check_idle(self) < 0)
        return NULL;
    int n = 0;
    maas_status s = maas_plan_fold_batchnorm(self->plan, &n);
    if (s != MAAS_OK)
        return raise_status(s);
    return PyLong_FromLong(n);
}

static PyObject *plan_num_random(PlanObject *self, void *c)
{
    return PyLong_FromLong(maas_plan_num_random(self->plan));
}

static PyObject *plan_num_nodes(PlanObject *self, void *c)
{
    return PyLong_FromLongLong(maas_plan_num_nodes(self->plan));
}

static PyMethodDef plan_methods[] = {
    {"set_optimizer", (PyCFunction)(void (*)(void))plan_set_optimizer, METH_VARARGS | METH_KEYWORDS,
     "set_optimizer(kind, slots, decay, **hyperparameters)"},
    {"run", (PyCFunction)(void (*)(void))plan_run, METH_VARARGS | METH_KEYWORDS,
     "run(data, keys=None, lr=0.0, step=0, train=False) -> loss or None"},
    {"backward", (PyCFunction)(void (*)(void))plan_backward, METH_VARARGS | METH_KEYWORDS,
     "backward(update=False, lr=0.0, step=0): gradients (and the update) after a forward"},
    {"grads", (PyCFunction)plan_grads, METH_NOARGS, "The parameters' gradient buffers."},
    {"flat_grad", (PyCFunction)plan_flat_grad, METH_NOARGS,
     "flat_grad() -> Tensor: every parameter gradient end to end (grads() are views into it)."},
    {"update", (PyCFunction)(void (*)(void))plan_update, METH_VARARGS | METH_KEYWORDS,
     "update(lr, step): the fused optimizer update alone, from the current gradients."},
    {"outputs", (PyCFunction)plan_outputs, METH_NOARGS, "Copies of the outputs of the last run."},
    {"fold_batchnorm", (PyCFunction)plan_fold_batchnorm, METH_NOARGS,
     "fold_batchnorm() -> int: inference batch normalizations folded into the conv/dense before them."},
    {NULL}};

static PyGetSetDef plan_getset[] = {
    {"num_random", (getter)plan_num_random, NULL, "Random ops, each taking a (seed, stream) key.", NULL},
    {"num_nodes", (getter)plan_num_nodes, NULL, "Nodes replayed per forward pass.", NULL},
    {NULL}};

static PyType_Slot plan_slots[] = {
    {Py_tp_doc, (void *)"Plan(tape, inputs, outputs, loss, params): a traced step, frozen."},
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

int plan_type_init(PyObject *module, module_state *st)
{
    PyTypeObject *tp = (PyTypeObject *)PyType_FromModuleAndSpec(module, &plan_spec, NULL);
    if (!tp)
        return -1;
    int r = PyModule_AddType(module, tp);
    Py_DECREF(tp);
    return r;
}
