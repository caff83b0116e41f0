/* bind_optim2.c -- maas._core bindings of the fused optimizer updates added
 * beside SGD/Adam/RMSprop: Adagrad, Adadelta, Adamax, Nadam, Lion, Ftrl.
 *
 * Each binding takes the variable and its slots as maas Tensors (written in
 * place), the gradient as any array-like, and the hyperparameters; checks
 * every slot's shape against the variable's with the GIL held; runs the
 * kernel (without the GIL above MAAS_NOGIL_WORK elements); bumps the
 * variable's version; and raises on a kernel status, with bind_ops.c's
 * helpers (inplace_arg, check_slots, finish_update). */
#include "common.h"

#define SHAPE2(t, buf) maas_shape_str((t)->ndim, (t)->shape, buf, sizeof buf)

/* finish_update with the variable and its (at most two) slots. */
static PyObject *update_done(maas_tensor *g, maas_tensor *p, maas_tensor *const *slots,
                             int nslots, int bad, maas_status s)
{
    maas_tensor *refs[3] = {p, nslots > 0 ? slots[0] : NULL, nslots > 1 ? slots[1] : NULL};
    return finish_update(g, refs, 3, bad, s);
}

/* Parses the variable, `nslots` slots and the gradient: all new references
 * (released by update_done). -1 with an exception set and nothing held. */
static int take_args(module_state *st, const char *op, PyObject *po, PyObject *go,
                     PyObject *const *so, const char *const *names, int nslots,
                     maas_tensor **p, maas_tensor **slots, maas_tensor **g)
{
    int got = 0;
    *g = NULL;
    if (!(*p = inplace_arg(st, po, op, "the variable")))
        return -1;
    for (; got < nslots; got++)
        if (!(slots[got] = inplace_arg(st, so[got], op, names[got])))
            goto fail;
    if (!(*g = as_tensor(st, go)))
        goto fail;
    if ((*g)->dtype != MAAS_F32) {
        PyErr_Format(PyExc_TypeError, "%s: the gradient must be float32, got %s", op,
                     maas_dtype_name((*g)->dtype));
        goto fail;
    }
    if (!maas_same_shape(*g, *p)) {
        char a[160], b[160];
        PyErr_Format(PyExc_ValueError, "%s: gradient shape %s does not match variable shape %s",
                     op, SHAPE2(*g, a), SHAPE2(*p, b));
        goto fail;
    }
    return 0;
fail:
    maas_tensor_decref(*g);
    *g = NULL;
    maas_tensor_decref(*p);
    for (int i = 0; i < got; i++)
        maas_tensor_decref(slots[i]);
    return -1;
}

static PyObject *py_adagrad_update(PyObject *m, PyObject *args)
{
    PyObject *po, *go, *ao;
    float lr, eps, wd;
    if (!PyArg_ParseTuple(args, "OOOfff:adagrad_update", &po, &go, &ao, &lr, &eps, &wd))
        return NULL;
    static const char *const names[] = {"accumulator"};
    maas_tensor *p, *s[1], *g;
    if (take_args(state_of_module(m), "adagrad", po, go, (PyObject *[]){ao}, names, 1, &p, s,
                  &g) < 0)
        return NULL;
    int bad = check_slots("adagrad", p, s, names, 1);
    maas_status st = MAAS_OK;
    if (!bad)
        MAAS_NOGIL_IF(p->size > MAAS_NOGIL_WORK,
                      st = maas_adagrad_update(p->data, s[0]->data, g->data, p->size, lr, eps,
                                               wd));
    return update_done(g, p, s, (int)(sizeof s / sizeof s[0]), bad, st);
}

static PyObject *py_adadelta_update(PyObject *m, PyObject *args)
{
    PyObject *po, *go, *ago, *ado;
    float lr, rho, eps, wd;
    if (!PyArg_ParseTuple(args, "OOOOffff:adadelta_update", &po, &go, &ago, &ado, &lr, &rho,
                          &eps, &wd))
        return NULL;
    static const char *const names[] = {"accumulated_grad", "accumulated_delta_var"};
    maas_tensor *p, *s[2], *g;
    if (take_args(state_of_module(m), "adadelta", po, go, (PyObject *[]){ago, ado}, names, 2,
                  &p, s, &g) < 0)
        return NULL;
    int bad = check_slots("adadelta", p, s, names, 2);
    maas_status st = MAAS_OK;
    if (!bad)
        MAAS_NOGIL_IF(p->size > MAAS_NOGIL_WORK,
                      st = maas_adadelta_update(p->data, s[0]->data, s[1]->data, g->data,
                                                p->size, lr, rho, eps, wd));
    return update_done(g, p, s, (int)(sizeof s / sizeof s[0]), bad, st);
}

static PyObject *py_adamax_update(PyObject *m, PyObject *args)
{
    PyObject *po, *go, *mo, *uo;
    float lr, b1, b2, eps, wd;
    long long step;
    if (!PyArg_ParseTuple(args, "OOOOffffLf:adamax_update", &po, &go, &mo, &uo, &lr, &b1, &b2,
                          &eps, &step, &wd))
        return NULL;
    static const char *const names[] = {"momentum", "norm"};
    maas_tensor *p, *s[2], *g;
    if (take_args(state_of_module(m), "adamax", po, go, (PyObject *[]){mo, uo}, names, 2, &p,
                  s, &g) < 0)
        return NULL;
    int bad = check_slots("adamax", p, s, names, 2);
    maas_status st = MAAS_OK;
    if (!bad)
        MAAS_NOGIL_IF(p->size > MAAS_NOGIL_WORK,
                      st = maas_adamax_update(p->data, s[0]->data, s[1]->data, g->data,
                                              p->size, lr, b1, b2, eps, step, wd));
    return update_done(g, p, s, (int)(sizeof s / sizeof s[0]), bad, st);
}

static PyObject *py_nadam_update(PyObject *m, PyObject *args)
{
    PyObject *po, *go, *mo, *vo;
    float lr, b1, b2, eps, wd;
    long long step;
    double u_product;
    if (!PyArg_ParseTuple(args, "OOOOffffLdf:nadam_update", &po, &go, &mo, &vo, &lr, &b1, &b2,
                          &eps, &step, &u_product, &wd))
        return NULL;
    static const char *const names[] = {"momentum", "velocity"};
    maas_tensor *p, *s[2], *g;
    if (take_args(state_of_module(m), "nadam", po, go, (PyObject *[]){mo, vo}, names, 2, &p, s,
                  &g) < 0)
        return NULL;
    int bad = check_slots("nadam", p, s, names, 2);
    maas_status st = MAAS_OK;
    if (!bad)
        MAAS_NOGIL_IF(p->size > MAAS_NOGIL_WORK,
                      st = maas_nadam_update(p->data, s[0]->data, s[1]->data, g->data,
                                             p->size, lr, b1, b2, eps, step, u_product, wd));
    return update_done(g, p, s, (int)(sizeof s / sizeof s[0]), bad, st);
}

static PyObject *py_lion_update(PyObject *m, PyObject *args)
{
    PyObject *po, *go, *mo;
    float lr, b1, b2, wd;
    if (!PyArg_ParseTuple(args, "OOOffff:lion_update", &po, &go, &mo, &lr, &b1, &b2, &wd))
        return NULL;
    static const char *const names[] = {"momentum"};
    maas_tensor *p, *s[1], *g;
    if (take_args(state_of_module(m), "lion", po, go, (PyObject *[]){mo}, names, 1, &p, s,
                  &g) < 0)
        return NULL;
    int bad = check_slots("lion", p, s, names, 1);
    maas_status st = MAAS_OK;
    if (!bad)
        MAAS_NOGIL_IF(p->size > MAAS_NOGIL_WORK,
                      st = maas_lion_update(p->data, s[0]->data, g->data, p->size, lr, b1, b2,
                                            wd));
    return update_done(g, p, s, (int)(sizeof s / sizeof s[0]), bad, st);
}

static PyObject *py_ftrl_update(PyObject *m, PyObject *args)
{
    PyObject *po, *go, *ao, *lo;
    float lr, lr_power, l1, l2, l2s, beta, wd;
    if (!PyArg_ParseTuple(args, "OOOOfffffff:ftrl_update", &po, &go, &ao, &lo, &lr, &lr_power,
                          &l1, &l2, &l2s, &beta, &wd))
        return NULL;
    static const char *const names[] = {"accumulator", "linear"};
    maas_tensor *p, *s[2], *g;
    if (take_args(state_of_module(m), "ftrl", po, go, (PyObject *[]){ao, lo}, names, 2, &p, s,
                  &g) < 0)
        return NULL;
    int bad = check_slots("ftrl", p, s, names, 2);
    maas_status st = MAAS_OK;
    if (!bad)
        MAAS_NOGIL_IF(p->size > MAAS_NOGIL_WORK,
                      st = maas_ftrl_update(p->data, s[0]->data, s[1]->data, g->data, p->size,
                                            lr, lr_power, l1, l2, l2s, beta, wd));
    return update_done(g, p, s, (int)(sizeof s / sizeof s[0]), bad, st);
}

PyMethodDef bind_optim2_methods[] = {
    {"adagrad_update", py_adagrad_update, METH_VARARGS,
     "adagrad_update(p, g, accumulator, lr, eps, wd)"},
    {"adadelta_update", py_adadelta_update, METH_VARARGS,
     "adadelta_update(p, g, accumulated_grad, accumulated_delta_var, lr, rho, eps, wd)"},
    {"adamax_update", py_adamax_update, METH_VARARGS,
     "adamax_update(p, g, m, u, lr, beta_1, beta_2, eps, step, wd)"},
    {"nadam_update", py_nadam_update, METH_VARARGS,
     "nadam_update(p, g, m, v, lr, beta_1, beta_2, eps, step, u_product, wd)"},
    {"lion_update", py_lion_update, METH_VARARGS,
     "lion_update(p, g, m, lr, beta_1, beta_2, wd)"},
    {"ftrl_update", py_ftrl_update, METH_VARARGS,
     "ftrl_update(p, g, accumulator, linear, lr, lr_power, l1, l2, l2_shrinkage, beta, wd)"},
    {NULL, NULL, 0, NULL},
};
