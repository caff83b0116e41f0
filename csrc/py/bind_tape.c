/* bind_tape.c -- maas._core.Tape: a core tape on this thread's stack of
 * recording tapes. The Python GradientTape (maas/autodiff.py) wraps it. */
#include "common.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    maas_tape *tape;
    int paused;
    int busy;      /* gradient() runs on the core tape without the GIL */
} TapeObject;

static int check_live(TapeObject *self);

static int check_idle(TapeObject *self)
{
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        "this GradientTape is computing gradients on another thread; wait for "
                        "gradient() to return before using it");
        return -1;
    }
    return 0;
}

/* Tapes recording on this thread, innermost last (strong references). */
#define MAX_TAPES 32
static _Thread_local TapeObject *tape_stack[MAX_TAPES];
static _Thread_local int tape_depth;

int tapes_active(void) { return tape_depth > 0; }

/* ---- tracing: while a model's step is traced into a plan, anything that
 * a frozen node list cannot stand for (a tensor's value read into Python,
 * an in-place write) is noted, and the engine falls back to eager. */
static _Thread_local int trace_depth;
static _Thread_local char trace_reason[256];

void trace_note(const char *what)
{
    if (trace_depth > 0 && !trace_reason[0]) {
        PyOS_snprintf(trace_reason, sizeof trace_reason, "%s", what);
        /* MAAS_TRACE_DEBUG=1 prints where the trace was broken */
        const char *dbg = getenv("MAAS_TRACE_DEBUG");
        if (dbg && dbg[0] == '1')
            PyRun_SimpleString("import traceback; traceback.print_stack()");
    }
}

static PyObject *py_trace_begin(PyObject *m, PyObject *unused)
{
    if (trace_depth++ == 0)
        trace_reason[0] = '\0';
    Py_RETURN_NONE;
}

/* trace_end() -> None, or why the trace cannot stand for the step. */
static PyObject *py_trace_end(PyObject *m, PyObject *unused)
{
    if (trace_depth == 0) {
        PyErr_SetString(PyExc_RuntimeError, "trace_end without trace_begin");
        return NULL;
    }
    if (--trace_depth > 0 || !trace_reason[0])
        Py_RETURN_NONE;
    return PyUnicode_FromString(trace_reason);
}

/* trace_note(what): marks the active trace as not replayable. */
static PyObject *py_trace_note(PyObject *m, PyObject *arg)
{
    const char *what = PyUnicode_AsUTF8(arg);
    if (!what)
        return NULL;
    trace_note(what);
    Py_RETURN_NONE;
}

maas_tape *tape_core(PyObject *o, module_state *st)
{
    if (!PyObject_TypeCheck(o, st->tape_type)) {
        PyErr_Format(PyExc_TypeError, "expected a maas._core.Tape, got %.100s", Py_TYPE(o)->tp_name);
        return NULL;
    }
    TapeObject *t = (TapeObject *)o;
    if (check_live(t) < 0 || check_idle(t) < 0)
        return NULL;
    return t->tape;
}

PyMethodDef bind_trace_methods[] = {
    {"trace_begin", py_trace_begin, METH_NOARGS, "trace_begin(): start noting what a plan cannot replay"},
    {"trace_end", py_trace_end, METH_NOARGS, "trace_end() -> None or the reason the trace cannot be replayed"},
    {"trace_note", py_trace_note, METH_O, "trace_note(what): the trace cannot be replayed because of `what`"},
    {NULL}};

int record_node(const maas_node *nd)
{
    for (int k = 0; k < tape_depth; k++) {
        TapeObject *t = tape_stack[k];
        if (t->paused || !t->tape)
            continue;
        /* a random op starts a new value every step: recorded even on
         * constants, so that a trace replays it (a dropout mask of ones) */
        int tracked = (maas_op_get(nd->op)->flags & MAAS_OPF_RANDOM) != 0;
        /* inputs without a gradient count too: a trace must replay the cast
         * of its integer labels */
        for (int i = 0; i < nd->nin && !tracked; i++)
            tracked = maas_tape_tracks(t->tape, nd->in[i]);
        if (tracked) {
            if (check_idle(t) < 0)
                return -1;
            maas_status s = maas_tape_record(t->tape, nd);
            if (s != MAAS_OK) {
                raise_status(s);
                return -1;
            }
        }
    }
    return 0;
}

static PyObject *tape_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (!PyArg_ParseTuple(args, ":Tape"))
        return NULL;
    TapeObject *self = (TapeObject *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    if (!(self->tape = maas_tape_new())) {
        Py_DECREF(self);
        return raise_status(MAAS_ERR_NOMEM);
    }
    return (PyObject *)self;
}

static void tape_dealloc(TapeObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    maas_tape_free(self->tape);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static int check_live(TapeObject *self)
{
    if (!self->tape) {
        PyErr_SetString(PyExc_RuntimeError, "this GradientTape has been released");
        return -1;
    }
    return 0;
}

static PyObject *tape_push(TapeObject *self, PyObject *unused)
{
    if (check_live(self) < 0)
        return NULL;
    if (tape_depth == MAX_TAPES)
        return PyErr_Format(PyExc_RuntimeError, "more than %d nested GradientTapes", MAX_TAPES);
    Py_INCREF(self);
    tape_stack[tape_depth++] = self;
    Py_RETURN_NONE;
}

static PyObject *tape_pop(TapeObject *self, PyObject *unused)
{
    for (int k = tape_depth - 1; k >= 0; k--)
        if (tape_stack[k] == self) {
            for (int j = k; j < tape_depth - 1; j++)
                tape_stack[j] = tape_stack[j + 1];
            tape_depth--;
            Py_DECREF(self);
            Py_RETURN_NONE;
        }
    PyErr_SetString(PyExc_RuntimeError, "this GradientTape is not recording on this thread");
    return NULL;
}

static PyObject *tape_pause(TapeObject *self, PyObject *arg)
{
    int b = PyObject_IsTrue(arg);
    if (b < 0)
        return NULL;
    self->paused = b;
    Py_RETURN_NONE;
}

static PyObject *tape_watch(TapeObject *self, PyObject *x)
{
    module_state *st = state_of_type(Py_TYPE(self));
    if (!st || check_live(self) < 0 || check_idle(self) < 0)
        return NULL;
    if (!is_tensor(st, x))
        return PyErr_Format(PyExc_TypeError, "GradientTape.watch: expected a maas Tensor, got %.100s",
                            Py_TYPE(x)->tp_name);
    maas_status s = maas_tape_watch(self->tape, TENSOR(x));
    if (s != MAAS_OK)
        return raise_status(s);
    Py_RETURN_NONE;
}

/* gradient(target, sources) -> list of Tensor or None, one per source. */
static PyObject *tape_gradient(TapeObject *self, PyObject *args)
{
    PyObject *target, *sources;
    if (!PyArg_ParseTuple(args, "OO!:gradient", &target, &PyList_Type, &sources))
        return NULL;
    module_state *st = state_of_type(Py_TYPE(self));
    if (!st || check_live(self) < 0 || check_idle(self) < 0)
        return NULL;
    if (!is_tensor(st, target))
        return PyErr_Format(PyExc_TypeError, "GradientTape.gradient: the target must be a maas Tensor, got %.100s",
                            Py_TYPE(target)->tp_name);
    Py_ssize_t n = PyList_GET_SIZE(sources);
    maas_tensor **srcs = PyMem_Calloc((size_t)n + 1, sizeof *srcs);
    maas_tensor **grads = PyMem_Calloc((size_t)n + 1, sizeof *grads);
    PyObject *result = NULL;
    if (!srcs || !grads) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = PyList_GET_ITEM(sources, i);
        if (!is_tensor(st, o)) {
            PyErr_Format(PyExc_TypeError,
                         "GradientTape.gradient: source %zd is a %.100s, not a maas Tensor or Variable",
                         i, Py_TYPE(o)->tp_name);
            goto done;
        }
        srcs[i] = TENSOR(o);
    }
    /* hold the target and the sources, and mark the tape busy, so that no
     * other thread can free or change them while the GIL is released */
    maas_status s;
    maas_tape *tape = self->tape;
    maas_tensor *tgt = TENSOR(target);
    maas_tensor_incref(tgt);
    for (Py_ssize_t i = 0; i < n; i++)
        maas_tensor_incref(srcs[i]);
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    s = maas_tape_gradient(tape, tgt, (int)n, srcs, grads);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    maas_tensor_decref(tgt);
    for (Py_ssize_t i = 0; i < n; i++)
        maas_tensor_decref(srcs[i]);
    if (s != MAAS_OK) {
        raise_status(s);
        goto done;
    }
    if (!(result = PyList_New(n)))
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *g = Py_None;
        if (grads[i]) {
            g = tensor_wrap(st, grads[i]);
            grads[i] = NULL;
            if (!g) {
                Py_CLEAR(result);
                goto done;
            }
        } else {
            Py_INCREF(g);
        }
        PyList_SET_ITEM(result, i, g);
    }
done:
    for (Py_ssize_t i = 0; grads && i < n; i++)
        maas_tensor_decref(grads[i]);
    PyMem_Free(srcs);
    PyMem_Free(grads);
    return result;
}

/* release(): frees the recorded ops now (non-persistent tapes after use). */
/* A tuple of Tensors wrapping n core tensors (new references each). */
static PyObject *wrap_all(module_state *st, int n, maas_tensor *const *ts)
{
    PyObject *t = PyTuple_New(n);
    for (int i = 0; t && i < n; i++) {
        maas_tensor_incref(ts[i]);
        PyObject *o = tensor_wrap(st, ts[i]);
        if (!o) {
            Py_CLEAR(t);
            break;
        }
        PyTuple_SET_ITEM(t, i, o);
    }
    return t;
}

/* The given attributes of a node, by the op's field list. */
static PyObject *node_attrs(const maas_node *nd)
{
    const maas_op_def *def = maas_op_get(nd->op);
    PyObject *d = PyDict_New();
    for (int k = 0; d && def->fields[k].name; k++) {
        const maas_attr_field *f = &def->fields[k];
        const unsigned char *at = nd->attr + f->offset;
        PyObject *v = NULL;
        if (f->type == 'l') {
            int64_t x;
            memcpy(&x, at, sizeof x);
            v = PyLong_FromLongLong((long long)x);
        } else if (f->type == 'u') {
            uint64_t x;
            memcpy(&x, at, sizeof x);
            v = PyLong_FromUnsignedLongLong((unsigned long long)x);
        } else if (f->type == 'd') {
            double x;
            memcpy(&x, at, sizeof x);
            v = PyFloat_FromDouble(x);
        } else if (f->type == 'S') {
            int64_t nd_, dims[MAAS_MAX_DIMS];
            memcpy(&nd_, at, sizeof nd_);
            memcpy(dims, at + sizeof nd_, sizeof dims);
            if (nd_ < 0 || nd_ > MAAS_MAX_DIMS)
                nd_ = 0;
            v = PyTuple_New((Py_ssize_t)nd_);
            for (int64_t i = 0; v && i < nd_; i++) {
                PyObject *e = PyLong_FromLongLong((long long)dims[i]);
                if (!e) {
                    Py_CLEAR(v);
                    break;
                }
                PyTuple_SET_ITEM(v, i, e);
            }
        } else {
            Py_INCREF(Py_None);
            v = Py_None;
        }
        if (!v || PyDict_SetItemString(d, f->name, v) < 0) {
            Py_XDECREF(v);
            Py_CLEAR(d);
            break;
        }
        Py_DECREF(v);
    }
    return d;
}

/* nodes() -> [(op_id, attributes, inputs, outputs)]: what the tape
 * recorded, oldest first (for exporters: tensors are new wrappers of the
 * recorded ones; compare them with core_ids). */
static PyObject *tape_nodes(TapeObject *self, PyObject *unused)
{
    if (check_live(self) < 0 || check_idle(self) < 0)
        return NULL;
    module_state *st = state_of_type(Py_TYPE(self));
    int64_t n = 0;
    const maas_node *nodes = maas_tape_nodes(self->tape, &n);
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (int64_t k = 0; list && k < n; k++) {
        const maas_node *nd = &nodes[k];
        PyObject *attrs = node_attrs(nd);
        PyObject *ins = attrs ? wrap_all(st, nd->nin, nd->in) : NULL;
        PyObject *outs = ins ? wrap_all(st, nd->nout, nd->out) : NULL;
        PyObject *item = outs ? Py_BuildValue("(iNNN)", nd->op, attrs, ins, outs) : NULL;
        if (!item) {
            Py_XDECREF(attrs);
            Py_XDECREF(ins);
            Py_XDECREF(outs);
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)k, item);
    }
    return list;
}

static PyObject *tape_release(TapeObject *self, PyObject *unused)
{
    if (check_idle(self) < 0)
        return NULL;
    maas_tape_free(self->tape);
    self->tape = NULL;
    Py_RETURN_NONE;
}

static Py_ssize_t tape_len(TapeObject *self)
{
    return self->tape ? (Py_ssize_t)maas_tape_size(self->tape) : 0;
}

static PyMethodDef tape_methods[] = {
    {"push", (PyCFunction)tape_push, METH_NOARGS, "Start recording on this thread."},
    {"pop", (PyCFunction)tape_pop, METH_NOARGS, "Stop recording on this thread."},
    {"pause", (PyCFunction)tape_pause, METH_O, "pause(flag): suspend or resume recording."},
    {"watch", (PyCFunction)tape_watch, METH_O, "watch(tensor): track a tensor."},
    {"gradient", (PyCFunction)tape_gradient, METH_VARARGS,
     "gradient(target, [sources]) -> [grad or None]"},
    {"release", (PyCFunction)tape_release, METH_NOARGS, "Free the recorded ops."},
    {"nodes", (PyCFunction)tape_nodes, METH_NOARGS,
     "nodes() -> [(op_id, attributes, inputs, outputs)], oldest first."},
    {NULL}};

static PyType_Slot tape_slots[] = {
    {Py_tp_doc, "Tape(): the C recorder behind maas.GradientTape."},
    {Py_tp_new, tape_new},
    {Py_tp_dealloc, tape_dealloc},
    {Py_tp_methods, tape_methods},
    {Py_sq_length, tape_len},
    {0, NULL}};

static PyType_Spec tape_spec = {
    .name = "maas._core.Tape",
    .basicsize = sizeof(TapeObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = tape_slots,
};

int tape_type_init(PyObject *module, module_state *st)
{
    st->tape_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &tape_spec, NULL);
    if (!st->tape_type)
        return -1;
    return PyModule_AddType(module, st->tape_type);
}
