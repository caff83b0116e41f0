/* plan.c -- compiled plans: a frozen trace replayed in one call.
 *
 * maas_plan_build takes the nodes a tape recorded during one step of a
 * model, keeps those the outputs and the loss depend on, and works out once
 * which values need a gradient. The tensors of the trace stay the buffers:
 * a replay refills the placeholders (the caller copies the next batch into
 * them), runs each node's forward kernel over the same memory, zeroes and
 * fills the gradient buffers in reverse node order with the backward
 * kernels, then clips and updates the parameters in place. Every kernel and
 * every accumulation runs in the order the eager tape runs them, so a plan
 * and the eager path give the same bits. */
#include "maas.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct maas_plan {
    maas_node *nodes;          /* kept nodes, each holding its references */
    int64_t nnodes;
    int32_t *in_val, *out_val; /* value index of node k's input i / output j */
    unsigned char *backward;   /* node k takes part in the backward pass */
    int64_t *random;           /* indices of the random nodes */
    int nrandom;

    maas_tensor **vals;        /* every tensor the plan names (borrowed) */
    maas_tensor **vgrad;       /* gradient buffer per value, or NULL (owned) */
    maas_tensor *gflat;        /* the parameters' gradients, end to end (owned) */
    int64_t nvals;

    maas_tensor **inputs, **outputs, *loss; /* references */
    int ninputs, noutputs;
    int32_t loss_val;
    maas_tensor **params;      /* unique, references */
    int32_t *param_val;
    int nparams;

    int has_opt;
    maas_optim_config opt;
    maas_tensor **slots;       /* 3 per parameter, references or NULL */
    int *decay;

    struct plan_fold *folds;   /* batch normalizations folded into their producer */
    int nfolds;
};

/* One inference BatchNormalization folded into the convolution or dense
 * node before it (maas_plan_fold_batchnorm): that node reads wf and bf,
 * recomputed from the sources whenever one of their versions changed. */
typedef struct plan_fold {
    maas_tensor *src[6];       /* kernel, bias or NULL, moving mean, moving var, gamma, beta */
    uint64_t ver[6];
    maas_tensor *wf, *bf;      /* the folded kernel and bias (owned) */
    double eps;
    int valid;
} plan_fold;

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (maas_tensor *const *)a, y = (uintptr_t) * (maas_tensor *const *)b;
    return x < y ? -1 : x > y;
}

static int32_t find_val(const maas_plan *p, const maas_tensor *t)
{
    int64_t lo = 0, hi = p->nvals - 1;
    while (lo <= hi) {
        int64_t mid = (lo + hi) / 2;
        if (p->vals[mid] == t)
            return (int32_t)mid;
        if ((uintptr_t)p->vals[mid] < (uintptr_t)t)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

void maas_plan_free(maas_plan *p)
{
    if (!p)
        return;
    for (int64_t k = 0; k < p->nnodes; k++) {
        maas_node *nd = &p->nodes[k];
        for (int i = 0; i < nd->nin; i++)
            maas_tensor_decref(nd->in[i]);
        maas_node_release_outputs(nd);
    }
    for (int64_t v = 0; p->vgrad && v < p->nvals; v++)
        maas_tensor_decref(p->vgrad[v]);
    maas_tensor_decref(p->gflat);
    for (int i = 0; p->inputs && i < p->ninputs; i++)
        maas_tensor_decref(p->inputs[i]);
    for (int i = 0; p->outputs && i < p->noutputs; i++)
        maas_tensor_decref(p->outputs[i]);
    maas_tensor_decref(p->loss);
    for (int i = 0; p->params && i < p->nparams; i++)
        maas_tensor_decref(p->params[i]);
    for (int i = 0; p->slots && i < 3 * p->nparams; i++)
        maas_tensor_decref(p->slots[i]);
    for (int f = 0; f < p->nfolds; f++) {
        for (int i = 0; i < 6; i++)
            maas_tensor_decref(p->folds[f].src[i]);
        maas_tensor_decref(p->folds[f].wf);
        maas_tensor_decref(p->folds[f].bf);
    }
    free(p->folds);
    free(p->nodes);
    free(p->in_val);
    free(p->out_val);
    free(p->backward);
    free(p->random);
    free(p->vals);
    free(p->vgrad);
    free(p->inputs);
    free(p->outputs);
    free(p->params);
    free(p->param_val);
    free(p->slots);
    free(p->decay);
    free(p);
}

/* Every distinct tensor named by the nodes and the arguments, sorted. */
static maas_status collect_values(maas_plan *p, int64_t nnodes, const maas_node *nodes,
                                  int ninputs, maas_tensor *const *inputs, int noutputs,
                                  maas_tensor *const *outputs, maas_tensor *loss, int nparams,
                                  maas_tensor *const *params)
{
    int64_t cap = ninputs + noutputs + 1 + nparams, n = 0, per;
    if (maas_mul_size(nnodes, MAAS_OP_MAX_IN + MAAS_OP_MAX_OUT, &per) != 0 ||
        (cap += per) < per)
        return maas_error(MAAS_ERR_NOMEM, "plan: too many nodes");
    maas_tensor **all = malloc((size_t)cap * sizeof *all);
    if (!all)
        return maas_error(MAAS_ERR_NOMEM, "out of memory building a plan");
    for (int64_t k = 0; k < nnodes; k++) {
        for (int i = 0; i < nodes[k].nin; i++)
            all[n++] = nodes[k].in[i];
        for (int j = 0; j < nodes[k].nout; j++)
            all[n++] = nodes[k].out[j];
    }
    for (int i = 0; i < ninputs; i++)
        all[n++] = inputs[i];
    for (int i = 0; i < noutputs; i++)
        all[n++] = outputs[i];
    if (loss)
        all[n++] = loss;
    for (int i = 0; i < nparams; i++)
        all[n++] = params[i];
    qsort(all, (size_t)n, sizeof *all, cmp_ptr);
    int64_t u = 0;
    for (int64_t i = 0; i < n; i++)
        if (!u || all[i] != all[u - 1])
            all[u++] = all[i];
    if (u > INT32_MAX) {
        free(all);
        return maas_error(MAAS_ERR_VALUE, "plan: too many tensors");
    }
    p->vals = all;
    p->nvals = u;
    return MAAS_OK;
}

static maas_tensor **copy_refs(int n, maas_tensor *const *ts)
{
    maas_tensor **r = calloc((size_t)n + 1, sizeof *r);
    if (r)
        for (int i = 0; i < n; i++) {
            r[i] = ts[i];
            maas_tensor_incref(r[i]);
        }
    return r;
}

maas_status maas_plan_build(maas_plan **out, int64_t nnodes, const maas_node *nodes,
                            int ninputs, maas_tensor *const *inputs,
                            int noutputs, maas_tensor *const *outputs,
                            maas_tensor *loss, int nparams,
                            maas_tensor *const *params)
{
    *out = NULL;
    if (nnodes < 0 || ninputs < 0 || noutputs < 0 || nparams < 0)
        return maas_error(MAAS_ERR_VALUE, "plan: negative count");
    if (loss && loss->size != 1)
        return maas_error(MAAS_ERR_VALUE, "plan: the loss must have one element, it has %lld",
                          (long long)loss->size);
    maas_plan *p = calloc(1, sizeof *p);
    if (!p)
        return maas_error(MAAS_ERR_NOMEM, "out of memory building a plan");
    maas_status s = collect_values(p, nnodes, nodes, ninputs, inputs, noutputs, outputs, loss,
                                   nparams, params);
    unsigned char *need = NULL, *keep = NULL, *rg = NULL, *reach = NULL;
    int32_t *producer = NULL;
    if (s != MAAS_OK)
        goto fail;
    int64_t nv = p->nvals;
    need = calloc((size_t)nv, 1);
    rg = calloc((size_t)nv, 1);
    reach = calloc((size_t)nv, 1);
    keep = calloc((size_t)nnodes + 1, 1);
    producer = malloc((size_t)nv * sizeof *producer);
    p->vgrad = calloc((size_t)nv, sizeof *p->vgrad);
    if (!need || !rg || !reach || !keep || !producer || !p->vgrad)
        goto nomem;
    for (int64_t v = 0; v < nv; v++)
        producer[v] = -1;
    for (int64_t k = 0; k < nnodes; k++)
        for (int j = 0; j < nodes[k].nout; j++) {
            int32_t v = find_val(p, nodes[k].out[j]);
            if (producer[v] >= 0) {
                s = maas_error(MAAS_ERR_VALUE, "plan: a tensor is the output of two nodes");
                goto fail;
            }
            producer[v] = (int32_t)k;
        }
    for (int i = 0; i < ninputs; i++)
        if (producer[find_val(p, inputs[i])] >= 0) {
            s = maas_error(MAAS_ERR_VALUE, "plan: input %d is computed by the trace; inputs must be placeholders", i);
            goto fail;
        }

    /* the nodes the outputs and the loss depend on */
    for (int i = 0; i < noutputs; i++)
        need[find_val(p, outputs[i])] = 1;
    if (loss)
        need[find_val(p, loss)] = 1;
    int64_t kept = 0;
    for (int64_t k = nnodes - 1; k >= 0; k--) {
        int any = 0;
        for (int j = 0; j < nodes[k].nout && !any; j++)
            any = need[find_val(p, nodes[k].out[j])];
        if (!any)
            continue;
        keep[k] = 1;
        kept++;
        for (int i = 0; i < nodes[k].nin; i++)
            need[find_val(p, nodes[k].in[i])] = 1;
    }
    p->nodes = calloc((size_t)kept + 1, sizeof *p->nodes);
    p->in_val = malloc(((size_t)kept + 1) * MAAS_OP_MAX_IN * sizeof *p->in_val);
    p->out_val = malloc(((size_t)kept + 1) * MAAS_OP_MAX_OUT * sizeof *p->out_val);
    p->backward = calloc((size_t)kept + 1, 1);
    p->random = malloc(((size_t)kept + 1) * sizeof *p->random);
    if (!p->nodes || !p->in_val || !p->out_val || !p->backward || !p->random)
        goto nomem;
    for (int64_t k = 0; k < nnodes; k++) {
        if (!keep[k])
            continue;
        maas_node *nd = &p->nodes[p->nnodes];
        *nd = nodes[k];
        for (int i = 0; i < nd->nin; i++) {
            maas_tensor_incref(nd->in[i]);
            p->in_val[p->nnodes * MAAS_OP_MAX_IN + i] = find_val(p, nd->in[i]);
        }
        for (int j = 0; j < nd->nout; j++) {
            maas_tensor_incref(nd->out[j]);
            p->out_val[p->nnodes * MAAS_OP_MAX_OUT + j] = find_val(p, nd->out[j]);
        }
        for (int j = 0; j < nd->nsaved; j++)
            maas_tensor_incref(nd->saved[j]);
        if (maas_op_get(nd->op)->flags & MAAS_OPF_RANDOM)
            p->random[p->nrandom++] = p->nnodes;
        p->nnodes++;
    }

    /* parameters, each once */
    p->params = calloc((size_t)nparams + 1, sizeof *p->params);
    p->param_val = calloc((size_t)nparams + 1, sizeof *p->param_val);
    if (!p->params || !p->param_val)
        goto nomem;
    for (int i = 0; i < nparams; i++) {
        int32_t v = find_val(p, params[i]);
        int dup = 0;
        for (int q = 0; q < p->nparams && !dup; q++)
            dup = p->param_val[q] == v;
        if (dup)
            continue;
        if (producer[v] >= 0) {
            s = maas_error(MAAS_ERR_VALUE, "plan: parameter %d is computed by the trace", i);
            goto fail;
        }
        p->params[p->nparams] = params[i];
        maas_tensor_incref(params[i]);
        p->param_val[p->nparams++] = v;
        rg[v] = 1;
    }

    /* which values need a gradient: forward from the parameters ... */
    for (int64_t k = 0; k < p->nnodes; k++) {
        const maas_node *nd = &p->nodes[k];
        int any = 0;
        for (int i = 0; i < nd->nin && maas_op_get(nd->op)->backward; i++)
            any |= !(nd->nograd >> i & 1u) && rg[p->in_val[k * MAAS_OP_MAX_IN + i]];
        for (int j = 0; any && j < nd->nout; j++)
            rg[p->out_val[k * MAAS_OP_MAX_OUT + j]] = 1;
    }
    /* ... and backward from the loss */
    if (loss) {
        p->loss_val = find_val(p, loss);
        reach[p->loss_val] = rg[p->loss_val];
        for (int64_t k = p->nnodes - 1; k >= 0; k--) {
            const maas_node *nd = &p->nodes[k];
            int any = 0;
            for (int j = 0; j < nd->nout && !any; j++)
                any = reach[p->out_val[k * MAAS_OP_MAX_OUT + j]];
            if (!any)
                continue;
            for (int i = 0; i < nd->nin; i++) {
                int32_t v = p->in_val[k * MAAS_OP_MAX_IN + i];
                if (!(nd->nograd >> i & 1u) && rg[v]) {
                    reach[v] = 1;
                    p->backward[k] = 1;
                }
            }
        }
        /* the parameters' gradients are views into one flat buffer, so
         * that a data-parallel step reduces them in one call */
        int64_t total = 0;
        for (int i = 0; i < p->nparams; i++) {
            int32_t v = p->param_val[i];
            if (!rg[v] || !reach[v])
                continue;
            if (p->vals[v]->size > INT64_MAX - total) {
                s = maas_error(MAAS_ERR_VALUE, "plan: the parameters have too many elements");
                goto fail;
            }
            total += p->vals[v]->size;
        }
        if (total > 0) {
            int64_t shape1[1] = {total};
            if (!(p->gflat = maas_tensor_new_typed(MAAS_F32, 1, shape1)))
                goto nomem;
            memset(p->gflat->data, 0, (size_t)total * sizeof(float));
            int64_t off = 0;
            for (int i = 0; i < p->nparams; i++) {
                int32_t v = p->param_val[i];
                if (!rg[v] || !reach[v])
                    continue;
                maas_tensor *t = p->vals[v];
                if (!(p->vgrad[v] = maas_tensor_view(p->gflat, off, t->ndim, t->shape)))
                    goto nomem;
                off += t->size;
            }
        }
        for (int64_t v = 0; v < nv; v++)
            if (rg[v] && reach[v] && !p->vgrad[v] && !(p->vgrad[v] = maas_tensor_zeros_like(p->vals[v])))
                goto nomem;
    }
    if (!(p->inputs = copy_refs(ninputs, inputs)) || !(p->outputs = copy_refs(noutputs, outputs)))
        goto nomem;
    p->ninputs = ninputs;
    p->noutputs = noutputs;
    p->loss = loss;
    maas_tensor_incref(loss);
    free(need);
    free(rg);
    free(reach);
    free(keep);
    free(producer);
    *out = p;
    return MAAS_OK;
nomem:
    s = maas_error(MAAS_ERR_NOMEM, "out of memory building a plan");
fail:
    free(need);
    free(rg);
    free(reach);
    free(keep);
    free(producer);
    maas_plan_free(p);
    return s;
}

int64_t maas_plan_num_nodes(const maas_plan *p) { return p->nnodes; }
int maas_plan_num_random(const maas_plan *p) { return p->nrandom; }
int maas_plan_num_inputs(const maas_plan *p) { return p->ninputs; }
int maas_plan_num_outputs(const maas_plan *p) { return p->noutputs; }
maas_tensor *maas_plan_input(const maas_plan *p, int i)
{
    return i >= 0 && i < p->ninputs ? p->inputs[i] : NULL;
}
maas_tensor *maas_plan_output(const maas_plan *p, int i)
{
    return i >= 0 && i < p->noutputs ? p->outputs[i] : NULL;
}
maas_tensor *maas_plan_loss(const maas_plan *p) { return p->loss; }

maas_tensor *maas_plan_grad(const maas_plan *p, int i)
{
    return i >= 0 && i < p->nparams ? p->vgrad[p->param_val[i]] : NULL;
}

maas_tensor *maas_plan_flat_grad(const maas_plan *p) { return p->gflat; }

maas_status maas_plan_set_optimizer(maas_plan *p, const maas_optim_config *cfg,
                                    maas_tensor *const *slots, const int *decay)
{
    maas_tensor **ns = calloc((size_t)(3 * p->nparams) + 1, sizeof *ns);
    int *nd = calloc((size_t)p->nparams + 1, sizeof *nd);
    if (!ns || !nd) {
        free(ns);
        free(nd);
        return maas_error(MAAS_ERR_NOMEM, "out of memory setting a plan's optimizer");
    }
    for (int i = 0; i < p->nparams; i++) {
        for (int k = 0; k < 3; k++) {
            maas_tensor *t = slots[3 * i + k];
            if (t && (!maas_same_shape(t, p->params[i]) || t->dtype != MAAS_F32)) {
                char a[160], b[160];
                free(ns);
                free(nd);
                return maas_error(MAAS_ERR_SHAPE, "plan: optimizer slot shape %s does not match parameter shape %s",
                                  maas_shape_str(t->ndim, t->shape, a, sizeof a),
                                  maas_shape_str(p->params[i]->ndim, p->params[i]->shape, b, sizeof b));
            }
        }
        nd[i] = decay[i];
    }
    /* only now, when nothing can fail, take the references */
    for (int i = 0; i < 3 * p->nparams; i++) {
        ns[i] = slots[i];
        maas_tensor_incref(ns[i]);
    }
    for (int i = 0; p->slots && i < 3 * p->nparams; i++)
        maas_tensor_decref(p->slots[i]);
    free(p->slots);
    free(p->decay);
    p->slots = ns;
    p->decay = nd;
    p->opt = *cfg;
    p->has_opt = 1;
    return MAAS_OK;
}

/* ------------------------------------------- batch normalization folding
 *
 * In a forward-only plan, an inference-mode batch normalization over the
 * last axis whose input is the output of a conv2d or dense node, and read
 * by nothing else, is folded into that node: per output channel c,
 *   s[c] = gamma[c] / sqrt(moving_var[c] + eps)
 *   wf[..., c] = w[..., c] * s[c]
 *   bf[c] = (b[c] - moving_mean[c]) * s[c] + beta[c]      (b = 0 without bias)
 * and the node writes the normalization's output itself; the normalization
 * node goes. The sources must be leaves of the plan (variables, not values a
 * node computes), so their versions say when they change: each forward
 * recomputes wf and bf first when any version moved (fit, assign,
 * load_weights, a training step's moving statistics). */

static void refold_one(plan_fold *f)
{
    const maas_tensor *w = f->src[0];
    const float *b = f->src[1] ? f->src[1]->data : NULL, *mm = f->src[2]->data,
                *mv = f->src[3]->data, *gamma = f->src[4] ? f->src[4]->data : NULL,
                *beta = f->src[5] ? f->src[5]->data : NULL;
    const int64_t C = f->bf->size, rows = C ? w->size / C : 0;
    float *scale = f->bf->data; /* s first, then overwritten by the bias */
    for (int64_t c = 0; c < C; c++)
        scale[c] = (float)((gamma ? (double)gamma[c] : 1.0) / sqrt((double)mv[c] + f->eps));
    const float *wsrc = w->data;
    float *wdst = f->wf->data;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < C; c++)
            wdst[r * C + c] = wsrc[r * C + c] * scale[c];
    for (int64_t c = 0; c < C; c++) {
        double shift = ((b ? (double)b[c] : 0.0) - (double)mm[c]) * (double)scale[c];
        scale[c] = (float)(shift + (beta ? (double)beta[c] : 0.0));
    }
    for (int i = 0; i < 6; i++)
        f->ver[i] = f->src[i] ? f->src[i]->version : 0;
    f->valid = 1;
}

static void refold(maas_plan *p)
{
    for (int k = 0; k < p->nfolds; k++) {
        plan_fold *f = &p->folds[k];
        int stale = !f->valid;
        for (int i = 0; i < 6 && !stale; i++)
            stale = f->src[i] && f->src[i]->version != f->ver[i];
        if (stale)
            refold_one(f);
    }
}

maas_status maas_plan_fold_batchnorm(maas_plan *p, int *nfolded)
{
    *nfolded = 0;
    if (p->loss || p->nnodes == 0 || p->nfolds)
        return MAAS_OK; /* training plans keep every node; a plan folds once */
    const int64_t nv = p->nvals;
    int32_t *producer = malloc((size_t)nv * sizeof *producer);
    int32_t *uses = calloc((size_t)nv, sizeof *uses);
    unsigned char *drop = calloc((size_t)p->nnodes, 1);
    plan_fold *folds = calloc((size_t)p->nnodes, sizeof *folds);
    int nf = 0;
    maas_status s = MAAS_OK;
    if (!producer || !uses || !drop || !folds) {
        s = maas_error(MAAS_ERR_NOMEM, "out of memory folding a plan");
        goto done;
    }
    for (int64_t v = 0; v < nv; v++)
        producer[v] = -1;
    for (int64_t k = 0; k < p->nnodes; k++) {
        for (int j = 0; j < p->nodes[k].nout; j++)
            producer[p->out_val[k * MAAS_OP_MAX_OUT + j]] = (int32_t)k;
        for (int i = 0; i < p->nodes[k].nin; i++)
            if (p->in_val[k * MAAS_OP_MAX_IN + i] >= 0)
                uses[p->in_val[k * MAAS_OP_MAX_IN + i]]++;
    }
    for (int i = 0; i < p->noutputs; i++)
        uses[find_val(p, p->outputs[i])]++;
    for (int i = 0; i < p->ninputs; i++)
        producer[find_val(p, p->inputs[i])] = -2; /* refilled by the caller: never a source */
    for (int64_t k = 0; k < p->nnodes; k++) {
        maas_node *bn = &p->nodes[k];
        double eps;
        int hg, hb;
        if (bn->op != MAAS_OP_BATCHNORM || !maas_batchnorm_foldable(bn, &eps, &hg, &hb))
            continue;
        int32_t xv = p->in_val[k * MAAS_OP_MAX_IN];
        int32_t j = producer[xv];
        if (j < 0 || uses[xv] != 1 || drop[j])
            continue;
        maas_node *pr = &p->nodes[j];
        if (!(pr->op == MAAS_OP_CONV2D || pr->op == MAAS_OP_DENSE) || pr->nout != 1)
            continue;
        maas_tensor *src[6] = {pr->in[1], pr->nin == 3 ? pr->in[2] : NULL, bn->in[1], bn->in[2],
                               hg ? bn->in[3] : NULL, hb ? bn->in[3 + hg] : NULL};
        const int64_t C = src[2]->size;
        int ok = src[0]->ndim >= 1 && src[0]->shape[src[0]->ndim - 1] == C &&
                 pr->out[0]->shape[pr->out[0]->ndim - 1] == C;
        for (int i = 0; i < 6 && ok; i++)
            ok = !src[i] || (src[i]->dtype == MAAS_F32 && producer[find_val(p, src[i])] == -1);
        if (!ok)
            continue;
        plan_fold *f = &folds[nf];
        int64_t shc[1] = {C};
        f->wf = maas_tensor_new_typed(MAAS_F32, src[0]->ndim, src[0]->shape);
        f->bf = maas_tensor_new_typed(MAAS_F32, 1, shc);
        if (!f->wf || !f->bf) { /* keep the folds made so far: the plan stays whole */
            maas_tensor_decref(f->wf);
            maas_tensor_decref(f->bf);
            f->wf = f->bf = NULL;
            s = maas_error(MAAS_ERR_NOMEM, "out of memory folding a plan");
            break;
        }
        for (int i = 0; i < 6; i++) {
            f->src[i] = src[i];
            maas_tensor_incref(src[i]);
        }
        f->eps = eps;
        nf++;
        /* the producer reads the folded kernel and bias ... */
        maas_tensor_incref(f->wf);
        maas_tensor_decref(pr->in[1]);
        pr->in[1] = f->wf;
        maas_tensor_incref(f->bf);
        if (pr->nin == 3)
            maas_tensor_decref(pr->in[2]);
        pr->in[2] = f->bf;
        pr->nin = 3;
        p->in_val[(int64_t)j * MAAS_OP_MAX_IN + 1] = -1; /* not values of the plan */
        p->in_val[(int64_t)j * MAAS_OP_MAX_IN + 2] = -1;
        /* ... and writes the normalization's output */
        maas_tensor_incref(bn->out[0]);
        maas_tensor_decref(pr->out[0]);
        pr->out[0] = bn->out[0];
        p->out_val[(int64_t)j * MAAS_OP_MAX_OUT] = p->out_val[k * MAAS_OP_MAX_OUT];
        drop[k] = 1;
    }
    if (nf == 0)
        goto done;
    /* the folded normalizations leave the node list */
    int64_t n = 0, r = 0;
    for (int64_t k = 0; k < p->nnodes; k++) {
        if (drop[k]) {
            maas_node *bn = &p->nodes[k];
            for (int i = 0; i < bn->nin; i++)
                maas_tensor_decref(bn->in[i]);
            maas_node_release_outputs(bn);
            continue;
        }
        if (n != k) {
            p->nodes[n] = p->nodes[k];
            memcpy(p->in_val + n * MAAS_OP_MAX_IN, p->in_val + k * MAAS_OP_MAX_IN,
                   MAAS_OP_MAX_IN * sizeof *p->in_val);
            memcpy(p->out_val + n * MAAS_OP_MAX_OUT, p->out_val + k * MAAS_OP_MAX_OUT,
                   MAAS_OP_MAX_OUT * sizeof *p->out_val);
            p->backward[n] = p->backward[k];
        }
        if (maas_op_get(p->nodes[n].op)->flags & MAAS_OPF_RANDOM)
            p->random[r++] = n;
        n++;
    }
    p->nnodes = n;
    p->nrandom = (int)r;
    p->folds = folds;
    p->nfolds = nf;
    folds = NULL;
    *nfolded = nf;
done:
    if (folds) { /* nothing was folded, or the first tables could not be allocated */
        for (int f = 0; f < nf; f++) {
            for (int i = 0; i < 6; i++)
                maas_tensor_decref(folds[f].src[i]);
            maas_tensor_decref(folds[f].wf);
            maas_tensor_decref(folds[f].bf);
        }
        free(folds);
    }
    free(producer);
    free(uses);
    free(drop);
    return s;
}

maas_status maas_plan_forward(maas_plan *p, const uint64_t *keys)
{
    refold(p);
    for (int r = 0; r < p->nrandom; r++) {
        uint64_t *key = (uint64_t *)(void *)p->nodes[p->random[r]].attr;
        key[0] = keys[2 * r];
        key[1] = keys[2 * r + 1];
    }
    for (int64_t k = 0; k < p->nnodes; k++) {
        maas_status s = maas_op_forward(&p->nodes[k]);
        if (s != MAAS_OK)
            return s;
    }
    return MAAS_OK;
}

maas_status maas_plan_backward(maas_plan *p)
{
    if (!p->loss)
        return maas_error(MAAS_ERR_STATE, "plan: this plan has no loss to differentiate");
    for (int64_t v = 0; v < p->nvals; v++)
        if (p->vgrad[v])
            memset(p->vgrad[v]->data, 0, (size_t)p->vgrad[v]->size * sizeof(float));
    maas_tensor *seed = p->vgrad[p->loss_val];
    if (!seed)
        return MAAS_OK; /* the loss depends on no parameter */
    seed->data[0] = 1.0f;
    for (int64_t k = p->nnodes - 1; k >= 0; k--) {
        if (!p->backward[k])
            continue;
        const maas_node *nd = &p->nodes[k];
        const maas_tensor *gout[MAAS_OP_MAX_OUT] = {NULL};
        maas_tensor *gin[MAAS_OP_MAX_IN] = {NULL};
        for (int j = 0; j < nd->nout; j++)
            gout[j] = p->vgrad[p->out_val[k * MAAS_OP_MAX_OUT + j]];
        for (int i = 0; i < nd->nin; i++)
            if (!(nd->nograd >> i & 1u))
                gin[i] = p->vgrad[p->in_val[k * MAAS_OP_MAX_IN + i]];
        maas_status s = maas_op_get(nd->op)->backward(nd, gout, gin);
        if (s != MAAS_OK)
            return s;
    }
    return MAAS_OK;
}

static maas_status update_one(maas_plan *p, int i, float lr, int64_t step_no)
{
    const maas_optim_config *o = &p->opt;
    maas_tensor *t = p->params[i], *g = p->vgrad[p->param_val[i]];
    float wd = p->decay[i] ? o->weight_decay : 0.0f;
    float *s0 = p->slots[3 * i] ? p->slots[3 * i]->data : NULL;
    float *s1 = p->slots[3 * i + 1] ? p->slots[3 * i + 1]->data : NULL;
    float *s2 = p->slots[3 * i + 2] ? p->slots[3 * i + 2]->data : NULL;
    maas_status st;
    switch (o->kind) {
    case MAAS_OPT_SGD:
        st = maas_sgd_update(t->data, s0, g->data, t->size, lr, o->momentum, o->nesterov, wd);
        break;
    case MAAS_OPT_ADAM:
        if (!s0 || !s1)
            return maas_error(MAAS_ERR_STATE, "plan: Adam needs its m and v slots");
        st = maas_adam_update(t->data, s0, s1, o->amsgrad ? s2 : NULL, g->data, t->size, lr,
                              o->beta_1, o->beta_2, o->eps, step_no, wd);
        break;
    case MAAS_OPT_RMSPROP:
        if (!s0)
            return maas_error(MAAS_ERR_STATE, "plan: RMSprop needs its velocity slot");
        st = maas_rmsprop_update(t->data, s0, o->centered ? s1 : NULL,
                                 o->momentum > 0.0f ? s2 : NULL, g->data, t->size, lr, o->rho,
                                 o->momentum, o->eps, o->centered, wd);
        break;
    default:
        return maas_error(MAAS_ERR_VALUE, "plan: unknown optimizer kind %d", (int)o->kind);
    }
    t->version++;
    return st;
}

/* Clipping as maas.optimizers.Optimizer._clip does it (the factors computed
 * in double, applied in float), then the update, parameter by parameter. */
maas_status maas_plan_update(maas_plan *p, float lr, int64_t step_no)
{
    if (!p->has_opt)
        return maas_error(MAAS_ERR_STATE, "plan: set the optimizer first");
    const maas_optim_config *o = &p->opt;
    if (o->clipvalue > 0.0) {
        for (int i = 0; i < p->nparams; i++) {
            maas_tensor *g = p->vgrad[p->param_val[i]];
            if (g)
                maas_clip_inplace(g->data, g->size, -(float)o->clipvalue, (float)o->clipvalue);
        }
    } else if (o->clipnorm > 0.0) {
        for (int i = 0; i < p->nparams; i++) {
            maas_tensor *g = p->vgrad[p->param_val[i]];
            if (!g)
                continue;
            double norm = sqrt(maas_sum_squares(g->data, g->size));
            if (norm > o->clipnorm)
                maas_scale_inplace(g->data, g->size, (float)(o->clipnorm / norm));
        }
    } else if (o->global_clipnorm > 0.0) {
        double ss = 0.0;
        for (int i = 0; i < p->nparams; i++) {
            maas_tensor *g = p->vgrad[p->param_val[i]];
            if (g)
                ss += maas_sum_squares(g->data, g->size);
        }
        double norm = sqrt(ss);
        if (norm > o->global_clipnorm)
            for (int i = 0; i < p->nparams; i++) {
                maas_tensor *g = p->vgrad[p->param_val[i]];
                if (g)
                    maas_scale_inplace(g->data, g->size, (float)(o->global_clipnorm / norm));
            }
    }
    for (int i = 0; i < p->nparams; i++) {
        if (!p->vgrad[p->param_val[i]])
            continue;
        maas_status s = update_one(p, i, lr, step_no);
        if (s != MAAS_OK)
            return s;
    }
    return MAAS_OK;
}
