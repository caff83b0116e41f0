/* plan.c -- compiled execution plans: a chain of layer kernels over
 * (N, features) activations, run forward and backward with every buffer
 * allocated once, followed by regularization, clipping and the optimizer
 * update, in one call that touches no Python object. The kernels are the
 * eager path's own, so both paths give the same numbers. */
#include "maas.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    maas_tensor *t;
    float *grad;
    maas_tensor *slots[3];
    int trainable;
    float l1, l2;
    int decay;
} param;

typedef enum { ST_DENSE, ST_UNARY, ST_SOFTMAX, ST_DROPOUT, ST_MERGE } step_kind;

typedef struct {
    step_kind kind;
    int64_t in_w, out_w;
    int pw, pb;         /* dense: param indices (pb -1 without bias) */
    maas_unary_op op;   /* unary */
    float alpha;        /* unary */
    int log;            /* softmax */
    float rate;         /* dropout */
    maas_merge_op merge; /* merge */
    int in0, in1;       /* the steps whose outputs are the inputs; -1: x */
    int64_t in1_w;      /* merge: the second input's width */
    float *act, *gact, *mask; /* (cap_n, out_w) buffers */
    const float *in, *in1p; /* this step's inputs in the last forward */
} step;

static void merge_forward(step *s, int64_t n);
struct maas_plan {
    int64_t in_features, width;
    int cursor; /* the step whose output the next step reads; -1: x */
    step *steps;
    int nsteps, cap_steps;
    param *params;
    int nparams, cap_params;
    int has_loss, from_logits;
    maas_loss_op loss;
    int has_opt;
    maas_optim_config opt;
    int64_t cap_n, last_n;
    float *ploss, *gloss;
};

static step *new_step(maas_plan *p, step_kind kind);

maas_plan *maas_plan_new(int64_t in_features)
{
    if (in_features < 0) {
        maas_error(MAAS_ERR_VALUE, "plan: negative input width");
        return NULL;
    }
    maas_plan *p = calloc(1, sizeof *p);
    if (!p) {
        maas_error(MAAS_ERR_NOMEM, "out of memory creating a plan");
        return NULL;
    }
    p->in_features = p->width = in_features;
    p->cursor = -1;
    return p;
}

static void free_buffers(maas_plan *p)
{
    for (int i = 0; i < p->nsteps; i++) {
        maas_free(p->steps[i].act);
        maas_free(p->steps[i].gact);
        maas_free(p->steps[i].mask);
        p->steps[i].act = p->steps[i].gact = p->steps[i].mask = NULL;
    }
    maas_free(p->ploss);
    maas_free(p->gloss);
    p->ploss = p->gloss = NULL;
    p->cap_n = 0;
}

void maas_plan_free(maas_plan *p)
{
    if (!p)
        return;
    free_buffers(p);
    for (int i = 0; i < p->nparams; i++) {
        maas_tensor_decref(p->params[i].t);
        maas_free(p->params[i].grad);
        for (int k = 0; k < 3; k++)
            maas_tensor_decref(p->params[i].slots[k]);
    }
    free(p->params);
    free(p->steps);
    free(p);
}

int64_t maas_plan_out_features(const maas_plan *p) { return p->width; }

int maas_plan_cursor(const maas_plan *p) { return p->cursor; }

static int64_t width_of(const maas_plan *p, int id)
{
    return id < 0 ? p->in_features : p->steps[id].out_w;
}

maas_status maas_plan_set_input(maas_plan *p, int id)
{
    if (id < -1 || id >= p->nsteps)
        return maas_error(MAAS_ERR_VALUE, "plan: no step %d to read from", id);
    p->cursor = id;
    p->width = width_of(p, id);
    return MAAS_OK;
}

maas_status maas_plan_add_merge(maas_plan *p, maas_merge_op op, int a, int b)
{
    if (a < -1 || a >= p->nsteps || b < -1 || b >= p->nsteps)
        return maas_error(MAAS_ERR_VALUE, "plan: merge of steps %d and %d that do not exist", a, b);
    int64_t wa = width_of(p, a), wb = width_of(p, b);
    if (op != MAAS_MERGE_CONCAT && wa != wb)
        return maas_error(MAAS_ERR_SHAPE, "plan: merging widths %lld and %lld", (long long)wa,
                          (long long)wb);
    if (op < MAAS_MERGE_ADD || op > MAAS_MERGE_CONCAT)
        return maas_error(MAAS_ERR_VALUE, "plan: unknown merge %d", (int)op);
    maas_status st = maas_plan_set_input(p, a);
    if (st != MAAS_OK)
        return st;
    step *s = new_step(p, ST_MERGE);
    if (!s)
        return MAAS_ERR_NOMEM;
    s->merge = op;
    s->in1 = b;
    s->in_w = wa;
    s->in1_w = wb;
    s->out_w = op == MAAS_MERGE_CONCAT ? wa + wb : wa;
    p->width = s->out_w;
    return MAAS_OK;
}

static step *new_step(maas_plan *p, step_kind kind)
{
    if (p->nsteps == p->cap_steps) {
        int cap = p->cap_steps ? p->cap_steps * 2 : 8;
        step *ns = realloc(p->steps, (size_t)cap * sizeof *ns);
        if (!ns) {
            maas_error(MAAS_ERR_NOMEM, "out of memory growing a plan");
            return NULL;
        }
        p->steps = ns;
        p->cap_steps = cap;
    }
    free_buffers(p); /* widths changed: reallocate on the next run */
    step *s = &p->steps[p->nsteps++];
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->in_w = s->out_w = p->width;
    s->pw = s->pb = -1;
    s->in0 = p->cursor;
    s->in1 = -1;
    p->cursor = p->nsteps - 1;
    return s;
}

static int add_param(maas_plan *p, maas_tensor *t, int trainable, float l1, float l2,
                     maas_tensor *const slots[3], int decay)
{
    if (p->nparams == p->cap_params) {
        int cap = p->cap_params ? p->cap_params * 2 : 8;
        param *np_ = realloc(p->params, (size_t)cap * sizeof *np_);
        if (!np_) {
            maas_error(MAAS_ERR_NOMEM, "out of memory growing a plan");
            return -1;
        }
        p->params = np_;
        p->cap_params = cap;
    }
    param *q = &p->params[p->nparams];
    memset(q, 0, sizeof *q);
    if (trainable && !(q->grad = maas_alloc_floats(t->size)))
        return -1;
    q->t = t;
    maas_tensor_incref(t);
    for (int k = 0; k < 3; k++) {
        q->slots[k] = slots ? slots[k] : NULL;
        if (q->slots[k] && q->slots[k]->size != t->size) {
            maas_tensor_decref(t);
            maas_free(q->grad);
            maas_error(MAAS_ERR_SHAPE, "plan: optimizer slot of %lld elements for a "
                       "variable of %lld", (long long)q->slots[k]->size, (long long)t->size);
            return -1;
        }
        maas_tensor_incref(q->slots[k]);
    }
    q->trainable = trainable;
    q->l1 = l1;
    q->l2 = l2;
    q->decay = decay;
    return p->nparams++;
}

maas_status maas_plan_add_dense(maas_plan *p, maas_tensor *w, maas_tensor *b, int trainable,
                                const float reg[4], maas_tensor *const slots_w[3],
                                maas_tensor *const slots_b[3], const int decay[2])
{
    if (w->ndim != 2 || w->shape[0] != p->width)
        return maas_error(MAAS_ERR_SHAPE, "plan: dense kernel of %d dims with %lld rows after "
                          "a layer of width %lld", w->ndim, (long long)(w->ndim ? w->shape[0] : 0),
                          (long long)p->width);
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[1]))
        return maas_error(MAAS_ERR_SHAPE, "plan: dense bias does not match %lld units",
                          (long long)w->shape[1]);
    int pw = add_param(p, w, trainable, reg[0], reg[1], slots_w, decay[0]);
    if (pw < 0)
        return MAAS_ERR_NOMEM;
    int pb = -1;
    if (b && (pb = add_param(p, b, trainable, reg[2], reg[3], slots_b, decay[1])) < 0)
        return MAAS_ERR_NOMEM;
    step *s = new_step(p, ST_DENSE);
    if (!s)
        return MAAS_ERR_NOMEM;
    s->out_w = w->shape[1];
    s->pw = pw;
    s->pb = pb;
    p->width = s->out_w;
    return MAAS_OK;
}

maas_status maas_plan_add_unary(maas_plan *p, maas_unary_op op, float alpha)
{
    if (op < 0 || op >= MAAS_U_COUNT)
        return maas_error(MAAS_ERR_VALUE, "plan: unknown unary op %d", (int)op);
    step *s = new_step(p, ST_UNARY);
    if (!s)
        return MAAS_ERR_NOMEM;
    s->op = op;
    s->alpha = alpha;
    return MAAS_OK;
}

maas_status maas_plan_add_softmax(maas_plan *p, int log)
{
    step *s = new_step(p, ST_SOFTMAX);
    if (!s)
        return MAAS_ERR_NOMEM;
    s->log = log;
    return MAAS_OK;
}

maas_status maas_plan_add_dropout(maas_plan *p, float rate)
{
    if (!(rate >= 0.0f && rate < 1.0f))
        return maas_error(MAAS_ERR_VALUE, "plan: dropout rate must be in [0, 1), got %g", rate);
    step *s = new_step(p, ST_DROPOUT);
    if (!s)
        return MAAS_ERR_NOMEM;
    s->rate = rate;
    return MAAS_OK;
}

maas_status maas_plan_set_loss(maas_plan *p, maas_loss_op op, int from_logits)
{
    if (op < 0 || op >= MAAS_L_COUNT)
        return maas_error(MAAS_ERR_VALUE, "plan: unknown loss %d", (int)op);
    p->loss = op;
    p->from_logits = from_logits;
    p->has_loss = 1;
    return MAAS_OK;
}

maas_status maas_plan_set_optimizer(maas_plan *p, const maas_optim_config *cfg)
{
    for (int i = 0; i < p->nparams; i++) {
        param *q = &p->params[i];
        if (!q->trainable)
            continue;
        int need0 = cfg->kind != MAAS_OPT_SGD || cfg->momentum != 0.0f;
        int need1 = (cfg->kind == MAAS_OPT_ADAM) || (cfg->kind == MAAS_OPT_RMSPROP && cfg->centered);
        int need2 = (cfg->kind == MAAS_OPT_ADAM && cfg->amsgrad) ||
                    (cfg->kind == MAAS_OPT_RMSPROP && cfg->momentum > 0.0f);
        if ((need0 && !q->slots[0]) || (need1 && !q->slots[1]) || (need2 && !q->slots[2]))
            return maas_error(MAAS_ERR_VALUE, "plan: variable %d lacks an optimizer slot", i);
    }
    p->opt = *cfg;
    p->has_opt = 1;
    return MAAS_OK;
}

/* Buffers for at least n rows. */
static maas_status reserve(maas_plan *p, int64_t n)
{
    if (n <= p->cap_n)
        return MAAS_OK;
    free_buffers(p);
    for (int i = 0; i < p->nsteps; i++) {
        step *s = &p->steps[i];
        int64_t sz;
        if (maas_mul_size(n, s->out_w, &sz) != 0)
            return maas_error(MAAS_ERR_NOMEM, "plan: buffer size overflows");
        if (!(s->act = maas_alloc_floats(sz)) || !(s->gact = maas_alloc_floats(sz)) ||
            (s->kind == ST_DROPOUT && !(s->mask = maas_alloc_floats(sz)))) {
            free_buffers(p);
            return MAAS_ERR_NOMEM;
        }
    }
    if (!(p->ploss = maas_alloc_floats(n)) || !(p->gloss = maas_alloc_floats(n))) {
        free_buffers(p);
        return MAAS_ERR_NOMEM;
    }
    p->cap_n = n;
    return MAAS_OK;
}

/* Runs the steps on n rows of x; returns the output pointer. */
static maas_status forward(maas_plan *p, const float *x, int64_t n, int training, uint64_t seed,
                           uint64_t stream, const float **out)
{
    const float *cur = x;
    maas_status st = MAAS_OK;
    for (int i = 0; i < p->nsteps && st == MAAS_OK; i++) {
        step *s = &p->steps[i];
        cur = s->in0 < 0 ? x : p->steps[s->in0].act;
        s->in = cur;
        s->in1p = s->in1 < 0 ? (s->kind == ST_MERGE ? x : NULL) : p->steps[s->in1].act;
        int64_t cnt = n * s->out_w;
        switch (s->kind) {
        case ST_DENSE: {
            param *w = &p->params[s->pw];
            st = maas_dense_forward(s->act, cur, w->t->data, s->pb >= 0 ? p->params[s->pb].t->data : NULL,
                                    n, s->in_w, s->out_w);
            break;
        }
        case ST_UNARY:
            st = maas_unary_forward(s->op, s->act, cur, cnt, s->alpha);
            break;
        case ST_SOFTMAX:
            st = maas_softmax_forward(s->act, cur, n, s->out_w, 1, s->log);
            break;
        case ST_DROPOUT:
            if (!training) {
                memcpy(s->act, cur, (size_t)cnt * sizeof(float));
                break;
            }
            st = maas_dropout_forward(s->act, s->mask, cur, cnt, s->rate, seed,
                                      stream * 1024u + (uint64_t)i);
            break;
        case ST_MERGE:
            merge_forward(s, n);
            break;
        }
        cur = s->act;
    }
    *out = cur;
    return st;
}

static void merge_forward(step *s, int64_t n)
{
    const float *a = s->in, *b = s->in1p;
    float *o = s->act;
    int64_t cnt = n * s->out_w;
    switch (s->merge) {
    case MAAS_MERGE_ADD:
        for (int64_t j = 0; j < cnt; j++)
            o[j] = a[j] + b[j];
        break;
    case MAAS_MERGE_SUB:
        for (int64_t j = 0; j < cnt; j++)
            o[j] = a[j] - b[j];
        break;
    case MAAS_MERGE_MUL:
        for (int64_t j = 0; j < cnt; j++)
            o[j] = a[j] * b[j];
        break;
    case MAAS_MERGE_CONCAT:
        for (int64_t r = 0; r < n; r++) {
            memcpy(o + r * s->out_w, a + r * s->in_w, (size_t)s->in_w * sizeof(float));
            memcpy(o + r * s->out_w + s->in_w, b + r * s->in1_w, (size_t)s->in1_w * sizeof(float));
        }
        break;
    }
}

/* ga, gb (either NULL) += the merge's input gradients; accumulates. */
static void merge_backward(const step *s, float *ga, float *gb, int64_t n)
{
    const float *g = s->gact, *a = s->in, *b = s->in1p;
    int64_t cnt = n * s->out_w;
    switch (s->merge) {
    case MAAS_MERGE_ADD:
    case MAAS_MERGE_SUB:
        if (ga)
            maas_accumulate(ga, g, cnt);
        if (gb) {
            if (s->merge == MAAS_MERGE_ADD)
                maas_accumulate(gb, g, cnt);
            else
                for (int64_t j = 0; j < cnt; j++)
                    gb[j] -= g[j];
        }
        break;
    case MAAS_MERGE_MUL:
        for (int64_t j = 0; j < cnt; j++) {
            if (ga)
                ga[j] += g[j] * b[j];
            if (gb)
                gb[j] += g[j] * a[j];
        }
        break;
    case MAAS_MERGE_CONCAT:
        for (int64_t r = 0; r < n; r++) {
            const float *gr = g + r * s->out_w;
            if (ga)
                for (int64_t j = 0; j < s->in_w; j++)
                    ga[r * s->in_w + j] += gr[j];
            if (gb)
                for (int64_t j = 0; j < s->in1_w; j++)
                    gb[r * s->in1_w + j] += gr[s->in_w + j];
        }
        break;
    }
}

static double regularize(param *q)
{
    double pen = 0.0;
    const float *w = q->t->data;
    for (int64_t j = 0; j < q->t->size; j++) {
        if (q->l1 != 0.0f) {
            pen += (double)q->l1 * fabs((double)w[j]);
            q->grad[j] += q->l1 * (float)((w[j] > 0.0f) - (w[j] < 0.0f));
        }
        if (q->l2 != 0.0f) {
            pen += (double)q->l2 * (double)w[j] * (double)w[j];
            q->grad[j] += 2.0f * q->l2 * w[j];
        }
    }
    return pen;
}

static maas_status update(maas_plan *p, param *q, float lr, int64_t step_no)
{
    const maas_optim_config *o = &p->opt;
    float wd = q->decay ? o->weight_decay : 0.0f;
    float *s0 = q->slots[0] ? q->slots[0]->data : NULL;
    float *s1 = q->slots[1] ? q->slots[1]->data : NULL;
    float *s2 = q->slots[2] ? q->slots[2]->data : NULL;
    maas_status st;
    switch (o->kind) {
    case MAAS_OPT_SGD:
        st = maas_sgd_update(q->t->data, s0, q->grad, q->t->size, lr, o->momentum, o->nesterov, wd);
        break;
    case MAAS_OPT_ADAM:
        st = maas_adam_update(q->t->data, s0, s1, o->amsgrad ? s2 : NULL, q->grad, q->t->size, lr,
                              o->beta_1, o->beta_2, o->eps, step_no, wd);
        break;
    default:
        st = maas_rmsprop_update(q->t->data, s0, o->centered ? s1 : NULL,
                                 o->momentum > 0.0f ? s2 : NULL, q->grad, q->t->size, lr, o->rho,
                                 o->momentum, o->eps, o->centered, wd);
    }
    q->t->version++;
    return st;
}

maas_status maas_plan_train_step(maas_plan *p, const float *x, const float *y, const float *sw,
                                 int64_t n, float lr, int64_t step_no, uint64_t seed,
                                 uint64_t stream, double *loss)
{
    if (!p->has_loss || !p->has_opt)
        return maas_error(MAAS_ERR_STATE, "plan: set the loss and the optimizer first");
    if (n <= 0 || p->nsteps == 0)
        return maas_error(MAAS_ERR_VALUE, "plan: a training step needs at least one row and one layer");
    maas_status st = reserve(p, n);
    if (st != MAAS_OK)
        return st;
    const float *out;
    if ((st = forward(p, x, n, 1, seed, stream, &out)) != MAAS_OK)
        return st;
    int64_t C = p->width;
    if ((st = maas_loss_forward(p->loss, p->ploss, y, out, n, C, p->from_logits)) != MAAS_OK)
        return st;
    /* Keras's sum_over_batch_size: sum(loss * sw) / n */
    double total = 0.0;
    for (int64_t r = 0; r < n; r++) {
        double w = sw ? (double)sw[r] : 1.0;
        total += (double)p->ploss[r] * w;
        p->gloss[r] = (float)(w / (double)n);
    }
    total /= (double)n;
    p->last_n = n;

    /* backward: every step's output gradient starts at zero and each step
     * accumulates into its inputs' (a step read twice gets both parts) */
    for (int i = 0; i < p->nsteps; i++)
        memset(p->steps[i].gact, 0, (size_t)(n * p->steps[i].out_w) * sizeof(float));
    step *last = &p->steps[p->nsteps - 1];
    if ((st = maas_loss_backward(p->loss, last->gact, p->gloss, y, out, n, C, p->from_logits)) != MAAS_OK)
        return st;
    for (int i = 0; i < p->nparams; i++)
        if (p->params[i].trainable)
            memset(p->params[i].grad, 0, (size_t)p->params[i].t->size * sizeof(float));
    for (int i = p->nsteps - 1; i >= 0 && st == MAAS_OK; i--) {
        step *s = &p->steps[i];
        float *gin = s->in0 >= 0 ? p->steps[s->in0].gact : NULL;
        int64_t cnt = n * s->in_w;
        switch (s->kind) {
        case ST_DENSE: {
            param *w = &p->params[s->pw], *b = s->pb >= 0 ? &p->params[s->pb] : NULL;
            st = maas_dense_backward(gin, w->trainable ? w->grad : NULL,
                                     b && b->trainable ? b->grad : NULL, s->gact, s->in,
                                     w->t->data, n, s->in_w, s->out_w);
            break;
        }
        case ST_UNARY:
            if (gin)
                st = maas_unary_backward(s->op, gin, s->gact, s->in, s->act, cnt, s->alpha);
            break;
        case ST_SOFTMAX:
            if (gin)
                st = maas_softmax_backward(gin, s->gact, s->act, n, s->out_w, 1, s->log);
            break;
        case ST_DROPOUT:
            if (gin)
                st = maas_dropout_backward(gin, s->gact, s->mask, cnt);
            break;
        case ST_MERGE:
            merge_backward(s, gin, s->in1 >= 0 ? p->steps[s->in1].gact : NULL, n);
            break;
        }
    }
    if (st != MAAS_OK)
        return st;

    /* regularization (in the loss and the gradients), clipping, update */
    for (int i = 0; i < p->nparams; i++)
        if (p->params[i].trainable && (p->params[i].l1 != 0.0f || p->params[i].l2 != 0.0f))
            total += regularize(&p->params[i]);
    const maas_optim_config *o = &p->opt;
    if (o->global_clipnorm > 0.0f) {
        double ss = 0.0;
        for (int i = 0; i < p->nparams; i++)
            if (p->params[i].trainable)
                ss += maas_sum_squares(p->params[i].grad, p->params[i].t->size);
        double norm = sqrt(ss);
        if (norm > o->global_clipnorm)
            for (int i = 0; i < p->nparams; i++)
                if (p->params[i].trainable)
                    maas_scale_inplace(p->params[i].grad, p->params[i].t->size,
                                       (float)(o->global_clipnorm / norm));
    }
    for (int i = 0; i < p->nparams && st == MAAS_OK; i++) {
        param *q = &p->params[i];
        if (!q->trainable)
            continue;
        if (o->clipvalue > 0.0f)
            maas_clip_inplace(q->grad, q->t->size, -o->clipvalue, o->clipvalue);
        else if (o->clipnorm > 0.0f) {
            double norm = sqrt(maas_sum_squares(q->grad, q->t->size));
            if (norm > o->clipnorm)
                maas_scale_inplace(q->grad, q->t->size, (float)(o->clipnorm / norm));
        }
        st = update(p, q, lr, step_no);
    }
    *loss = total;
    return st;
}

maas_status maas_plan_predict(maas_plan *p, const float *x, int64_t n, int64_t chunk, float *out)
{
    if (chunk <= 0)
        chunk = 1024;
    maas_status st = reserve(p, n < chunk ? (n > 0 ? n : 1) : chunk);
    int64_t C = p->width;
    for (int64_t r = 0; r < n && st == MAAS_OK; r += chunk) {
        int64_t m = n - r < chunk ? n - r : chunk;
        const float *res;
        if ((st = forward(p, x + r * p->in_features, m, 0, 0, 0, &res)) == MAAS_OK)
            memcpy(out + r * C, res, (size_t)(m * C) * sizeof(float));
    }
    p->last_n = 0;
    return st;
}

const float *maas_plan_last_output(const maas_plan *p, int64_t *n)
{
    *n = p->last_n;
    return p->nsteps && p->last_n ? p->steps[p->nsteps - 1].act : NULL;
}
