/* ops/rnn.c -- SimpleRNN, LSTM and GRU over a whole sequence: one forward
 * call, one backward through time.
 *
 * Shapes (batch B, steps T, features F, units U, gates G = 1, 4, 3):
 *   x (B,T,F)  kernel W (F,G*U)  recurrent kernel R (U,G*U)
 *   bias (G*U), or (2,G*U) for GRU (reset_after: input bias, recurrent bias)
 *   (GRU with reset_before, Keras's reset_after=False: one (G*U) bias)
 *   mask (B,T) float32/bool (a step is kept where mask != 0), h0/c0 (B,U),
 *   rdrop (B,U) the recurrent dropout multipliers (0 or 1/(1-rate)).
 * Gate orders are Keras's: LSTM i,f,c,o; GRU z,r,h.
 *   SimpleRNN  h = act(x W + b + hr R)
 *   LSTM       i,f,o = ract(.), g = act(.), c = f c + i g, h = o act(c)
 *   GRU        inner = hr R + b_rec; z = ract(xz + inner_z), r = ract(xr + inner_r),
 *              hh = act(xh + r inner_h), h = z h + (1 - z) hh
 *   GRU, reset_before (Keras's reset_after=False, the v1 GRU; ONNX's
 *              linear_before_reset=0): z = ract(xz + hr R_z), r = ract(xr + hr R_r),
 *              hh = act(xh + (r hr) R_h), h = z h + (1 - z) hh; R_z, R_r, R_h the
 *              column blocks of R, so each step is two GEMMs, (B,U)x(U,2U) then
 *              (B,U)x(U,U) once r is known.
 * where hr = h_prev * rdrop (h_prev itself without recurrent dropout: the
 * dropout acts on the recurrent product only). A masked step carries every
 * state, and its output is the carried h (or 0 with zero_output, which
 * Bidirectional uses), as Keras's rnn loop does. go_backwards reads the
 * steps from T-1 down and writes the output sequence in that order (Keras),
 * or in the input's order with `unreverse` (Bidirectional's backward half).
 *
 * projected: the input projection is done by the caller (an int8 GEMM,
 * maas.quantization.recurrent): x is (B,T,G*U) = x W, the kernel input is
 * absent (inputs x, R, [bias], ...), the bias is added here as usual, and
 * the gradient of x is that of the gates' pre-activations.
 *
 * The input projection of all steps is one GEMM (B*T,F)x(F,G*U); each step
 * is one GEMM (B,U)x(U,G*U) and a pass over the gates. The backward runs
 * the steps in reverse and ends with three GEMMs (dx, dW, dR over all
 * steps). Every product goes through maas_sgemm, so results do not depend
 * on the thread count. Outputs: out[0] the sequence (B,T,U) or the last
 * output (B,U), out[1] the final h, out[2] the final c (LSTM). The forward
 * overwrites its outputs and saved tensors; the backward accumulates. */
#include "../opdef.h"
#include "vecmath.h"

#include <math.h>

enum { CELL_SIMPLE = 0, CELL_LSTM = 1, CELL_GRU = 2 };
enum { ACT_LINEAR = 0, ACT_TANH = 1, ACT_SIGMOID = 2, ACT_RELU = 3, ACT_HARD_SIGMOID = 4 };

typedef struct {
    int64_t cell, activation, recurrent_activation;
    int64_t return_sequences, go_backwards, zero_output;
    int64_t has_bias, has_mask, has_h0, has_c0, has_rdrop;
    int64_t unreverse; /* go_backwards: write the sequence in input order */
    int64_t reset_before; /* GRU: Keras's reset_after=False (0: reset_after=True) */
    int64_t projected;    /* x is already x W (B,T,G*U); no kernel input */
    /* derived by infer */
    int64_t B, T, F, U, G;
    int64_t i_bias, i_mask, i_h0, i_c0, i_rdrop;
} rnn_attr;

static const maas_attr_field rnn_fields[] = {
    {"cell", 'l', offsetof(rnn_attr, cell)},
    {"activation", 'l', offsetof(rnn_attr, activation)},
    {"recurrent_activation", 'l', offsetof(rnn_attr, recurrent_activation)},
    {"return_sequences", 'l', offsetof(rnn_attr, return_sequences)},
    {"go_backwards", 'l', offsetof(rnn_attr, go_backwards)},
    {"zero_output", 'l', offsetof(rnn_attr, zero_output)},
    {"has_bias", 'l', offsetof(rnn_attr, has_bias)},
    {"has_mask", 'l', offsetof(rnn_attr, has_mask)},
    {"has_h0", 'l', offsetof(rnn_attr, has_h0)},
    {"has_c0", 'l', offsetof(rnn_attr, has_c0)},
    {"has_rdrop", 'l', offsetof(rnn_attr, has_rdrop)},
    {"unreverse", 'l', offsetof(rnn_attr, unreverse)},
    {"reset_before", 'l', offsetof(rnn_attr, reset_before)},
    {"projected", 'l', offsetof(rnn_attr, projected)},
    {NULL, 0, 0}};

/* y = f(x) over n floats (y == x allowed): tanh and sigmoid through
 * vecmath's ISA-dispatched array functions. */
static void act_apply(int a, float *y, const float *x, int64_t n)
{
    switch (a) {
    case ACT_TANH:
        maas_vm_tanh(y, x, n);
        break;
    case ACT_SIGMOID:
        maas_vm_sigmoid(y, x, n);
        break;
    case ACT_RELU:
        for (int64_t j = 0; j < n; j++)
            y[j] = x[j] > 0.0f ? x[j] : 0.0f;
        break;
    case ACT_HARD_SIGMOID: /* Keras 3: relu6(x + 3) / 6 */
        for (int64_t j = 0; j < n; j++) {
            float v = (x[j] + 3.0f) / 6.0f;
            y[j] = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
        }
        break;
    default:
        if (y != x)
            memcpy(y, x, (size_t)n * sizeof(float));
    }
}

/* d = f'(.) from the activation's output y, over n floats. */
static void act_deriv(int a, float *d, const float *y, int64_t n)
{
    switch (a) {
    case ACT_TANH:
        for (int64_t j = 0; j < n; j++)
            d[j] = 1.0f - y[j] * y[j];
        break;
    case ACT_SIGMOID:
        for (int64_t j = 0; j < n; j++)
            d[j] = y[j] * (1.0f - y[j]);
        break;
    case ACT_RELU:
        for (int64_t j = 0; j < n; j++)
            d[j] = y[j] > 0.0f ? 1.0f : 0.0f;
        break;
    case ACT_HARD_SIGMOID:
        for (int64_t j = 0; j < n; j++)
            d[j] = y[j] > 0.0f && y[j] < 1.0f ? 1.0f / 6.0f : 0.0f;
        break;
    default:
        for (int64_t j = 0; j < n; j++)
            d[j] = 1.0f;
    }
}

typedef struct {
    int cell, act, ract, retseq, back, zero, unrev, rb;
    int64_t B, T, F, U, G;
    const float *x, *W, *R, *bias, *h0, *c0, *rdrop;
    const void *mask;
    int mask_bool;
} rnn_args;

static inline int step_on(const rnn_args *a, int64_t b, int64_t t)
{
    if (!a->mask)
        return 1;
    int64_t k = b * a->T + t;
    return a->mask_bool ? ((const unsigned char *)a->mask)[k] != 0
                        : ((const float *)a->mask)[k] != 0.0f;
}

static void rnn_unpack(const maas_node *nd, rnn_args *a)
{
    const rnn_attr *at = CATTR(rnn_attr, nd);
    a->cell = (int)at->cell;
    a->act = (int)at->activation;
    a->ract = (int)at->recurrent_activation;
    a->retseq = (int)at->return_sequences;
    a->back = (int)at->go_backwards;
    a->zero = (int)at->zero_output;
    a->unrev = (int)at->unreverse;
    a->rb = a->cell == CELL_GRU && at->reset_before;
    a->B = at->B, a->T = at->T, a->F = at->F, a->U = at->U, a->G = at->G;
    a->x = nd->in[0]->data;
    a->W = at->projected ? NULL : nd->in[1]->data;
    a->R = nd->in[at->projected ? 1 : 2]->data;
    a->bias = at->i_bias >= 0 ? nd->in[at->i_bias]->data : NULL;
    a->mask = at->i_mask >= 0 ? nd->in[at->i_mask]->ptr : NULL;
    a->mask_bool = at->i_mask >= 0 && nd->in[at->i_mask]->dtype != MAAS_F32;
    a->h0 = at->i_h0 >= 0 ? nd->in[at->i_h0]->data : NULL;
    a->c0 = at->i_c0 >= 0 ? nd->in[at->i_c0]->data : NULL;
    a->rdrop = at->i_rdrop >= 0 ? nd->in[at->i_rdrop]->data : NULL;
}

/* Forward. gates (B,T,GU) ends holding the activated gates of each kept
 * step; hr (T,B,U) the recurrent input of each step; st (T,B,U) the cell
 * state (LSTM) or h (GRU) after each step (NULL for SimpleRNN); rh (T,B,U)
 * GRU's inner_h (reset_after) or r * hr (reset_before). */
static maas_status rnn_run(const rnn_args *a, float *out0, float *hT, float *cT, float *gates,
                           float *hr, float *st, float *rh)
{
    const int64_t B = a->B, T = a->T, F = a->F, U = a->U, GU = a->G * a->U;
    maas_status s = MAAS_OK;
    if (a->W)
        s = maas_sgemm(MAAS_NO_TRANS, MAAS_NO_TRANS, B * T, GU, F, 1.0f, a->x, F, a->W, GU, 0.0f,
                       gates, GU);
    else /* projected: x is x W already */
        memcpy(gates, a->x, (size_t)(B * T * GU) * sizeof(float));
    if (s != MAAS_OK)
        return s;
    if (a->bias)
        for (int64_t r = 0; r < B * T; r++) {
            float *g = gates + r * GU;
            for (int64_t j = 0; j < GU; j++)
                g[j] += a->bias[j];
        }
    const float *brec = a->cell == CELL_GRU && !a->rb && a->bias ? a->bias + GU : NULL;
    float *rp = maas_alloc_floats(B * GU), *scratch = maas_alloc_floats(B * U);
    if (!rp || !scratch) {
        maas_free(rp);
        maas_free(scratch);
        return MAAS_ERR_NOMEM;
    }
    float *h = hT, *c = cT;
    for (int64_t k = 0; k < B * U; k++) {
        h[k] = a->h0 ? a->h0[k] : 0.0f;
        if (c)
            c[k] = a->c0 ? a->c0[k] : 0.0f;
    }
    for (int64_t sx = 0; sx < T && s == MAAS_OK; sx++) {
        int64_t t = a->back ? T - 1 - sx : sx;
        float *hrs = hr + sx * B * U;
        for (int64_t k = 0; k < B * U; k++)
            hrs[k] = a->rdrop ? h[k] * a->rdrop[k] : h[k];
        s = maas_sgemm(MAAS_NO_TRANS, MAAS_NO_TRANS, B, a->rb ? 2 * U : GU, U, 1.0f, hrs, U, a->R,
                       GU, 0.0f, rp, GU);
        if (s != MAAS_OK)
            break;
        int par = (double)B * (double)GU >= (double)MAAS_PAR_THRESHOLD && B > 1;
        if (a->rb) { /* z, r first; then (r hr) R_h */
            float *rhs = rh + sx * B * U;
#pragma omp parallel for schedule(static) num_threads(maas_get_num_threads()) if (par)
            for (int64_t b = 0; b < B; b++) {
                float *g = gates + (b * T + t) * GU, *p = rp + b * GU, *rhb = rhs + b * U;
                const float *hrb = hrs + b * U;
                if (!step_on(a, b, t)) {
                    memset(rhb, 0, (size_t)U * sizeof(float));
                    continue;
                }
                for (int64_t j = 0; j < 2 * U; j++)
                    g[j] += p[j];
                act_apply(a->ract, g, g, 2 * U); /* z, r */
                for (int64_t j = 0; j < U; j++)
                    rhb[j] = g[U + j] * hrb[j];
            }
            s = maas_sgemm(MAAS_NO_TRANS, MAAS_NO_TRANS, B, U, U, 1.0f, rhs, U, a->R + 2 * U, GU,
                           0.0f, rp + 2 * U, GU);
            if (s != MAAS_OK)
                break;
        }
#pragma omp parallel for schedule(static) num_threads(maas_get_num_threads()) if (par)
        for (int64_t b = 0; b < B; b++) {
            float *g = gates + (b * T + t) * GU, *p = rp + b * GU, *hb = h + b * U;
            float *tmp = scratch + b * U;
            int on = step_on(a, b, t);
            if (on) {
                if (a->cell == CELL_SIMPLE) {
                    for (int64_t j = 0; j < U; j++)
                        g[j] += p[j];
                    act_apply(a->act, g, g, U);
                    memcpy(hb, g, (size_t)U * sizeof(float));
                } else if (a->cell == CELL_LSTM) {
                    float *cb = c + b * U;
                    for (int64_t j = 0; j < GU; j++)
                        g[j] += p[j];
                    act_apply(a->ract, g, g, 2 * U);          /* i, f */
                    act_apply(a->act, g + 2 * U, g + 2 * U, U); /* c candidate */
                    act_apply(a->ract, g + 3 * U, g + 3 * U, U); /* o */
                    for (int64_t j = 0; j < U; j++)
                        cb[j] = g[U + j] * cb[j] + g[j] * g[2 * U + j];
                    act_apply(a->act, tmp, cb, U);
                    for (int64_t j = 0; j < U; j++)
                        hb[j] = g[3 * U + j] * tmp[j];
                } else if (a->rb) {
                    for (int64_t j = 0; j < U; j++)
                        g[2 * U + j] += p[2 * U + j];
                    act_apply(a->act, g + 2 * U, g + 2 * U, U); /* hh */
                    for (int64_t j = 0; j < U; j++)
                        hb[j] = g[j] * hb[j] + (1.0f - g[j]) * g[2 * U + j];
                } else {
                    float *rhb = rh + (sx * B + b) * U;
                    if (brec) {
                        for (int64_t j = 0; j < 2 * U; j++)
                            g[j] += p[j] + brec[j];
                        for (int64_t j = 0; j < U; j++)
                            rhb[j] = p[2 * U + j] + brec[2 * U + j];
                    } else {
                        for (int64_t j = 0; j < 2 * U; j++)
                            g[j] += p[j];
                        memcpy(rhb, p + 2 * U, (size_t)U * sizeof(float));
                    }
                    act_apply(a->ract, g, g, 2 * U); /* z, r */
                    for (int64_t j = 0; j < U; j++)
                        g[2 * U + j] += g[U + j] * rhb[j];
                    act_apply(a->act, g + 2 * U, g + 2 * U, U); /* hh */
                    for (int64_t j = 0; j < U; j++)
                        hb[j] = g[j] * hb[j] + (1.0f - g[j]) * g[2 * U + j];
                }
            } else if (a->cell == CELL_GRU) {
                memset(rh + (sx * B + b) * U, 0, (size_t)U * sizeof(float));
            }
            if (st)
                memcpy(st + (sx * B + b) * U, a->cell == CELL_LSTM ? c + b * U : hb,
                       (size_t)U * sizeof(float));
            if (a->retseq || sx == T - 1) {
                float *o = a->retseq ? out0 + (b * T + (a->unrev ? t : sx)) * U : out0 + b * U;
                if (!on && a->zero)
                    memset(o, 0, (size_t)U * sizeof(float));
                else
                    memcpy(o, hb, (size_t)U * sizeof(float));
            }
        }
    }
    maas_free(rp);
    maas_free(scratch);
    return s;
}

/* Backward through time; every gradient pointer may be NULL. */
static maas_status rnn_grad(const rnn_args *a, const float *g0, const float *ghT, const float *gcT,
                            const float *gates, const float *hr, const float *st, const float *rh,
                            float *gx, float *gW, float *gR, float *gb, float *gh0, float *gc0)
{
    const int64_t B = a->B, T = a->T, F = a->F, U = a->U, GU = a->G * a->U;
    int64_t nBTG = 0, nTBG = 0;
    if (maas_mul_size(B * T, GU, &nBTG) || maas_mul_size(T * B, GU, &nTBG))
        return maas_error(MAAS_ERR_VALUE, "rnn: sizes overflow");
    float *dG = maas_alloc_floats(nBTG), *dRP = maas_alloc_floats(nTBG);
    float *dh = maas_alloc_floats(B * U), *dc = maas_alloc_floats(B * U),
          *tmp = maas_alloc_floats(B * U), *drh = maas_alloc_floats(B * U), *work = NULL;
    int64_t nwork = 0;
    if (!maas_mul_size(B * U, 6, &nwork))
        work = maas_alloc_floats(nwork);
    maas_status s = MAAS_OK;
    if (!dG || !dRP || !dh || !dc || !tmp || !drh || !work) {
        s = MAAS_ERR_NOMEM;
        goto done;
    }
    memset(dG, 0, (size_t)nBTG * sizeof(float));
    memset(dRP, 0, (size_t)nTBG * sizeof(float));
    for (int64_t k = 0; k < B * U; k++) {
        dh[k] = ghT ? ghT[k] : 0.0f;
        dc[k] = gcT ? gcT[k] : 0.0f;
    }
    for (int64_t sx = T - 1; sx >= 0; sx--) {
        int64_t t = a->back ? T - 1 - sx : sx;
        float *drp = dRP + sx * B * GU;
        int par = (double)B * (double)GU >= (double)MAAS_PAR_THRESHOLD && B > 1;
#pragma omp parallel for schedule(static) num_threads(maas_get_num_threads()) if (par)
        for (int64_t b = 0; b < B; b++) {
            int on = step_on(a, b, t);
            float *dhb = dh + b * U;
            float *w1 = work + b * 6 * U; /* per-row scratch: derivatives, tanh(c) */
            if (g0 && (a->retseq || sx == T - 1) && (on || !a->zero)) {
                const float *o = a->retseq ? g0 + (b * T + (a->unrev ? t : sx)) * U : g0 + b * U;
                for (int64_t j = 0; j < U; j++)
                    dhb[j] += o[j];
            }
            if (!on)
                continue; /* the states carried: their gradients pass through */
            const float *g = gates + (b * T + t) * GU;
            float *dg = dG + (b * T + t) * GU, *dp = drp + b * GU;
            if (a->cell == CELL_SIMPLE) {
                act_deriv(a->act, w1, g, U);
                for (int64_t j = 0; j < U; j++) {
                    dg[j] = dhb[j] * w1[j];
                    dhb[j] = 0.0f;
                }
                memcpy(dp, dg, (size_t)U * sizeof(float));
            } else if (a->cell == CELL_LSTM) {
                const float *cs = st + (sx * B + b) * U;
                const float *cp = sx > 0 ? st + ((sx - 1) * B + b) * U : (a->c0 ? a->c0 + b * U : NULL);
                float *dcb = dc + b * U;
                float *tc = w1, *dtc = w1 + U, *dif = w1 + 2 * U, *dcc = w1 + 4 * U,
                      *dog = w1 + 5 * U;
                act_apply(a->act, tc, cs, U);
                act_deriv(a->act, dtc, tc, U);
                act_deriv(a->ract, dif, g, 2 * U);
                act_deriv(a->act, dcc, g + 2 * U, U);
                act_deriv(a->ract, dog, g + 3 * U, U);
                for (int64_t j = 0; j < U; j++) {
                    float ig = g[j], fg = g[U + j], cc = g[2 * U + j], og = g[3 * U + j];
                    float dn = dcb[j] + dhb[j] * og * dtc[j];
                    float cprev = cp ? cp[j] : 0.0f;
                    dg[j] = dn * cc * dif[j];
                    dg[U + j] = dn * cprev * dif[U + j];
                    dg[2 * U + j] = dn * ig * dcc[j];
                    dg[3 * U + j] = dhb[j] * tc[j] * dog[j];
                    dcb[j] = dn * fg;
                    dhb[j] = 0.0f;
                }
                memcpy(dp, dg, (size_t)GU * sizeof(float));
            } else {
                const float *hp = sx > 0 ? st + ((sx - 1) * B + b) * U : (a->h0 ? a->h0 + b * U : NULL);
                const float *rhb = rh + (sx * B + b) * U;
                float *dzr = w1, *dhh = w1 + 2 * U;
                act_deriv(a->ract, dzr, g, 2 * U);
                act_deriv(a->act, dhh, g + 2 * U, U);
                if (a->rb) { /* dr needs (dp_h R_h^T): after this pass */
                    for (int64_t j = 0; j < U; j++) {
                        float z = g[j], hh = g[2 * U + j];
                        float hprev = hp ? hp[j] : 0.0f;
                        float dph = dhb[j] * (1.0f - z) * dhh[j];
                        dg[j] = dp[j] = dhb[j] * (hprev - hh) * dzr[j];
                        dg[2 * U + j] = dp[2 * U + j] = dph;
                        dhb[j] *= z;
                    }
                    continue;
                }
                for (int64_t j = 0; j < U; j++) {
                    float z = g[j], r = g[U + j], hh = g[2 * U + j];
                    float hprev = hp ? hp[j] : 0.0f;
                    float dph = dhb[j] * (1.0f - z) * dhh[j];
                    dg[j] = dp[j] = dhb[j] * (hprev - hh) * dzr[j];
                    dg[U + j] = dp[U + j] = dph * rhb[j] * dzr[U + j];
                    dg[2 * U + j] = dph;
                    dp[2 * U + j] = dph * r;
                    dhb[j] *= z;
                }
            }
        }
        int64_t KR = GU; /* the columns of R the step's first product used */
        if (a->rb) {
            /* d(r hr) = dp_h R_h^T; dr = d(r hr) hr; d hr += d(r hr) r */
            KR = 2 * U;
            s = maas_sgemm(MAAS_NO_TRANS, MAAS_TRANS, B, U, U, 1.0f, drp + 2 * U, GU, a->R + 2 * U,
                           GU, 0.0f, drh, U);
            if (s != MAAS_OK)
                goto done;
#pragma omp parallel for schedule(static) num_threads(maas_get_num_threads()) if (par)
            for (int64_t b = 0; b < B; b++) {
                float *drb = drh + b * U;
                if (!step_on(a, b, t)) {
                    memset(drb, 0, (size_t)U * sizeof(float));
                    continue;
                }
                const float *g = gates + (b * T + t) * GU, *hrb = hr + (sx * B + b) * U;
                float *dg = dG + (b * T + t) * GU, *dp = drp + b * GU;
                float *dr = work + b * 6 * U;
                act_deriv(a->ract, dr, g + U, U);
                for (int64_t j = 0; j < U; j++) {
                    dg[U + j] = dp[U + j] = drb[j] * hrb[j] * dr[j];
                    drb[j] *= g[U + j];
                }
            }
        }
        /* dh_prev += (dRP_s R^T [+ d(r hr)]) * rdrop (masked rows of dRP are zero) */
        if (a->rdrop) {
            s = maas_sgemm(MAAS_NO_TRANS, MAAS_TRANS, B, U, KR, 1.0f, drp, GU, a->R, GU, 0.0f,
                           tmp, U);
            for (int64_t k = 0; k < B * U && s == MAAS_OK; k++)
                dh[k] += (a->rb ? tmp[k] + drh[k] : tmp[k]) * a->rdrop[k];
        } else {
            if (a->rb)
                for (int64_t k = 0; k < B * U; k++)
                    dh[k] += drh[k];
            s = maas_sgemm(MAAS_NO_TRANS, MAAS_TRANS, B, U, KR, 1.0f, drp, GU, a->R, GU, 1.0f, dh,
                           U);
        }
        if (s != MAAS_OK)
            goto done;
    }
    if (gh0)
        for (int64_t k = 0; k < B * U; k++)
            gh0[k] += dh[k];
    if (gc0)
        for (int64_t k = 0; k < B * U; k++)
            gc0[k] += dc[k];
    if (gx && !a->W)
        for (int64_t k = 0; k < nBTG; k++)
            gx[k] += dG[k];
    else if (gx && (s = maas_sgemm(MAAS_NO_TRANS, MAAS_TRANS, B * T, F, GU, 1.0f, dG, GU, a->W, GU,
                                   1.0f, gx, F)) != MAAS_OK)
        goto done;
    if (gW && a->W && (s = maas_sgemm(MAAS_TRANS, MAAS_NO_TRANS, F, GU, B * T, 1.0f, a->x, F, dG, GU, 1.0f,
                              gW, GU)) != MAAS_OK)
        goto done;
    if (gR && (s = maas_sgemm(MAAS_TRANS, MAAS_NO_TRANS, U, a->rb ? 2 * U : GU, T * B, 1.0f, hr, U,
                              dRP, GU, 1.0f, gR, GU)) != MAAS_OK)
        goto done;
    if (gR && a->rb && (s = maas_sgemm(MAAS_TRANS, MAAS_NO_TRANS, U, U, T * B, 1.0f, rh, U,
                                       dRP + 2 * U, GU, 1.0f, gR + 2 * U, GU)) != MAAS_OK)
        goto done;
    if (gb) {
        /* column sums in a fixed order (rows ascending) */
        for (int64_t r = 0; r < B * T; r++)
            for (int64_t j = 0; j < GU; j++)
                gb[j] += dG[r * GU + j];
        if (a->cell == CELL_GRU && !a->rb)
            for (int64_t r = 0; r < T * B; r++)
                for (int64_t j = 0; j < GU; j++)
                    gb[GU + j] += dRP[r * GU + j];
    }
done:
    maas_free(dG);
    maas_free(dRP);
    maas_free(dh);
    maas_free(dc);
    maas_free(tmp);
    maas_free(drh);
    maas_free(work);
    return s;
}

/* ------------------------------------------------------------ op entry */

static const char *cell_names[] = {"simple_rnn", "lstm", "gru"};

static maas_status need_shape2(const maas_tensor *t, const char *what, const char *op, int64_t d0,
                               int64_t d1)
{
    char b1[96];
    if (t->ndim != 2 || t->shape[0] != d0 || t->shape[1] != d1)
        return maas_error(MAAS_ERR_SHAPE, "%s: %s must have shape (%lld, %lld), received %s", op,
                          what, (long long)d0, (long long)d1, SHAPE(t, b1));
    return MAAS_OK;
}

static maas_status rnn_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    rnn_attr *a = ATTR(rnn_attr, nd);
    if (a->cell < 0 || a->cell > CELL_GRU)
        return maas_error(MAAS_ERR_VALUE, "rnn: unknown cell %lld", (long long)a->cell);
    const char *op = cell_names[a->cell];
    if (a->activation < 0 || a->activation > ACT_HARD_SIGMOID || a->recurrent_activation < 0 ||
        a->recurrent_activation > ACT_HARD_SIGMOID)
        return maas_error(MAAS_ERR_VALUE, "%s: unknown activation code", op);
    const int iR = a->projected ? 1 : 2;
    int n = iR + 1;
    a->i_bias = a->has_bias ? n++ : -1;
    a->i_mask = a->has_mask ? n++ : -1;
    a->i_h0 = a->has_h0 ? n++ : -1;
    a->i_c0 = a->has_c0 ? n++ : -1;
    a->i_rdrop = a->has_rdrop ? n++ : -1;
    if (nd->nin != n)
        return maas_error(MAAS_ERR_VALUE, "%s: the flags name %d inputs, received %d", op, n, nd->nin);
    if (a->reset_before && a->cell != CELL_GRU)
        return maas_error(MAAS_ERR_VALUE, "%s: reset_before applies to a GRU only", op);
    if (a->has_c0 && a->cell != CELL_LSTM)
        return maas_error(MAAS_ERR_VALUE, "%s: only an LSTM has a cell state", op);
    for (int i = 0; i < nd->nin; i++)
        if (i != a->i_mask) {
            maas_status s = need_f32(nd, i, op);
            if (s != MAAS_OK)
                return s;
        }
    const maas_tensor *x = nd->in[0], *W = a->projected ? NULL : nd->in[1], *R = nd->in[iR];
    char b1[96];
    if (x->ndim != 3)
        return maas_error(MAAS_ERR_SHAPE, "%s: expected an input of shape (batch, timesteps, "
                          "features), received %s", op, SHAPE(x, b1));
    a->G = a->cell == CELL_LSTM ? 4 : (a->cell == CELL_GRU ? 3 : 1);
    a->B = x->shape[0], a->T = x->shape[1], a->F = x->shape[2];
    if (R->ndim != 2)
        return maas_error(MAAS_ERR_SHAPE, "%s: the recurrent kernel must be 2-D, received %s", op,
                          SHAPE(R, b1));
    a->U = R->shape[0];
    if (a->T < 1)
        return maas_error(MAAS_ERR_VALUE, "%s: the input sequence must have at least one "
                          "timestep, received %s", op, SHAPE(x, b1));
    int64_t GU = 0, n1 = 0, n2 = 0;
    if (maas_mul_size(a->G, a->U, &GU) || maas_mul_size(a->B, a->T, &n1) ||
        maas_mul_size(n1, GU, &n2))
        return maas_error(MAAS_ERR_VALUE, "%s: sizes overflow", op);
    maas_status s = MAAS_OK;
    if (W)
        s = need_shape2(W, "the kernel", op, a->F, GU);
    else if (a->F != GU)
        s = maas_error(MAAS_ERR_SHAPE, "%s: a projected input must have %lld features (gates x "
                       "units), received %s", op, (long long)GU, SHAPE(x, b1));
    if (s == MAAS_OK)
        s = need_shape2(R, "the recurrent kernel", op, a->U, GU);
    if (s == MAAS_OK && a->has_bias) {
        const maas_tensor *b = nd->in[a->i_bias];
        if (a->cell == CELL_GRU && !a->reset_before)
            s = need_shape2(b, "the bias", op, 2, GU);
        else if (b->ndim != 1 || b->shape[0] != GU)
            s = maas_error(MAAS_ERR_SHAPE, "%s: the bias must have shape (%lld,), received %s", op,
                           (long long)GU, SHAPE(b, b1));
    }
    if (s == MAAS_OK && a->has_mask) {
        const maas_tensor *m = nd->in[a->i_mask];
        if (m->dtype != MAAS_F32 && m->dtype != MAAS_BOOL && m->dtype != MAAS_U8)
            return maas_error(MAAS_ERR_TYPE, "%s: the mask must be float32 or bool, received %s",
                              op, maas_dtype_name(m->dtype));
        s = need_shape2(m, "the mask", op, a->B, a->T);
    }
    if (s == MAAS_OK && a->has_h0)
        s = need_shape2(nd->in[a->i_h0], "the initial state h", op, a->B, a->U);
    if (s == MAAS_OK && a->has_c0)
        s = need_shape2(nd->in[a->i_c0], "the initial state c", op, a->B, a->U);
    if (s == MAAS_OK && a->has_rdrop)
        s = need_shape2(nd->in[a->i_rdrop], "the recurrent dropout mask", op, a->B, a->U);
    if (s != MAAS_OK)
        return s;
    if (a->has_mask)
        nd->nograd |= 1u << a->i_mask;
    if (a->has_rdrop)
        nd->nograd |= 1u << a->i_rdrop;
    nd->nout = a->cell == CELL_LSTM ? 3 : 2;
    for (int k = 0; k < nd->nout; k++) {
        outs[k].dtype = MAAS_F32;
        outs[k].ndim = 2;
        outs[k].shape[0] = a->B;
        outs[k].shape[1] = a->U;
    }
    if (a->return_sequences) {
        outs[0].ndim = 3;
        outs[0].shape[1] = a->T;
        outs[0].shape[2] = a->U;
    }
    /* gates (B,T,GU); hr (T,B,U); LSTM: c states, GRU: h states and inner_h */
    nd->nsaved = a->cell == CELL_SIMPLE ? 2 : (a->cell == CELL_LSTM ? 3 : 4);
    for (int k = 0; k < nd->nsaved; k++) {
        saved[k].dtype = MAAS_F32;
        saved[k].ndim = 3;
        saved[k].shape[0] = a->T;
        saved[k].shape[1] = a->B;
        saved[k].shape[2] = a->U;
    }
    saved[0].shape[0] = a->B;
    saved[0].shape[1] = a->T;
    saved[0].shape[2] = GU;
    return MAAS_OK;
}

static maas_status rnn_forward(maas_node *nd)
{
    rnn_args a;
    rnn_unpack(nd, &a);
    float *c = a.cell == CELL_LSTM ? nd->out[2]->data : NULL;
    return rnn_run(&a, nd->out[0]->data, nd->out[1]->data, c, nd->saved[0]->data,
                   nd->saved[1]->data, nd->nsaved > 2 ? nd->saved[2]->data : NULL,
                   nd->nsaved > 3 ? nd->saved[3]->data : NULL);
}

static maas_status rnn_backward(const maas_node *nd, const maas_tensor *const *gout,
                                maas_tensor *const *gin)
{
    rnn_args a;
    rnn_unpack(nd, &a);
    const rnn_attr *at = CATTR(rnn_attr, nd);
    return rnn_grad(&a, gout[0] ? gout[0]->data : NULL, gout[1] ? gout[1]->data : NULL,
                    a.cell == CELL_LSTM && gout[2] ? gout[2]->data : NULL, nd->saved[0]->data,
                    nd->saved[1]->data, nd->nsaved > 2 ? nd->saved[2]->data : NULL,
                    nd->nsaved > 3 ? nd->saved[3]->data : NULL, GDATA(0),
                    at->projected ? NULL : GDATA(1), GDATA(at->projected ? 1 : 2),
                    at->i_bias >= 0 ? GDATA(at->i_bias) : NULL,
                    at->i_h0 >= 0 ? GDATA(at->i_h0) : NULL, at->i_c0 >= 0 ? GDATA(at->i_c0) : NULL);
}

MAAS_OPDEF(maas_opdef_rnn, "rnn", 2, 8, rnn_attr, 0, rnn_fields, rnn);
