/* ops/rnn.c -- SimpleRNN, LSTM and GRU over a whole sequence: one forward
 * call, one backward through time.
 *
 * Shapes (batch B, steps T, features F, units U, gates G = 1, 4, 3):
 *   x (B,T,F)  kernel W (F,G*U)  recurrent kernel R (U,G*U)
 *   bias (G*U), or (2,G*U) for GRU (reset_after: input bias, recurrent bias)
 *   mask (B,T) float32/bool (a step is kept where mask != 0), h0/c0 (B,U),
 *   rdrop (B,U) the recurrent dropout multipliers (0 or 1/(1-rate)).
 * Gate orders are Keras's: LSTM i,f,c,o; GRU z,r,h.
 *   SimpleRNN  h = act(x W + b + hr R)
 *   LSTM       i,f,o = ract(.), g = act(.), c = f c + i g, h = o act(c)
 *   GRU        inner = hr R + b_rec; z = ract(xz + inner_z), r = ract(xr + inner_r),
 *              hh = act(xh + r inner_h), h = z h + (1 - z) hh
 * where hr = h_prev * rdrop (h_prev itself without recurrent dropout: the
 * dropout acts on the recurrent product only). A masked step carries every
 * state, and its output is the carried h (or 0 with zero_output, which
 * Bidirectional uses), as Keras's rnn loop does. go_backwards reads the
 * steps from T-1 down and writes the output sequence in that order (Keras).
 *
 * The input projection of all steps is one GEMM (B*T,F)x(F,G*U); each step
 * is one GEMM (B,U)x(U,G*U) and a pass over the gates. The backward runs
 * the steps in reverse and ends with three GEMMs (dx, dW, dR over all
 * steps). Every product goes through maas_sgemm, so results do not depend
 * on the thread count. Outputs: out[0] the sequence (B,T,U) or the last
 * output (B,U), out[1] the final h, out[2] the final c (LSTM). The forward
 * overwrites its outputs and saved tensors; the backward accumulates. */
#include "../opdef.h"

#include <math.h>

enum { CELL_SIMPLE = 0, CELL_LSTM = 1, CELL_GRU = 2 };
enum { ACT_LINEAR = 0, ACT_TANH = 1, ACT_SIGMOID = 2, ACT_RELU = 3, ACT_HARD_SIGMOID = 4 };

typedef struct {
    int64_t cell, activation, recurrent_activation;
    int64_t return_sequences, go_backwards, zero_output;
    int64_t has_bias, has_mask, has_h0, has_c0, has_rdrop;
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
    {NULL, 0, 0}};

static inline float act_f(int a, float x)
{
    switch (a) {
    case ACT_TANH:
        return tanhf(x);
    case ACT_SIGMOID:
        return x >= 0.0f ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x));
    case ACT_RELU:
        return x > 0.0f ? x : 0.0f;
    case ACT_HARD_SIGMOID: { /* Keras 3: relu6(x + 3) / 6 */
        float y = (x + 3.0f) / 6.0f;
        return y < 0.0f ? 0.0f : (y > 1.0f ? 1.0f : y);
    }
    default:
        return x;
    }
}

/* The derivative from the activation's output y. */
static inline float act_d(int a, float y)
{
    switch (a) {
    case ACT_TANH:
        return 1.0f - y * y;
    case ACT_SIGMOID:
        return y * (1.0f - y);
    case ACT_RELU:
        return y > 0.0f ? 1.0f : 0.0f;
    case ACT_HARD_SIGMOID:
        return y > 0.0f && y < 1.0f ? 1.0f / 6.0f : 0.0f;
    default:
        return 1.0f;
    }
}

typedef struct {
    int cell, act, ract, retseq, back, zero;
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
    a->B = at->B, a->T = at->T, a->F = at->F, a->U = at->U, a->G = at->G;
    a->x = nd->in[0]->data;
    a->W = nd->in[1]->data;
    a->R = nd->in[2]->data;
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
 * GRU's inner_h. */
static maas_status rnn_run(const rnn_args *a, float *out0, float *hT, float *cT, float *gates,
                           float *hr, float *st, float *rh)
{
    const int64_t B = a->B, T = a->T, F = a->F, U = a->U, GU = a->G * a->U;
    maas_status s = maas_sgemm(MAAS_NO_TRANS, MAAS_NO_TRANS, B * T, GU, F, 1.0f, a->x, F, a->W,
                               GU, 0.0f, gates, GU);
    if (s != MAAS_OK)
        return s;
    if (a->bias)
        for (int64_t r = 0; r < B * T; r++) {
            float *g = gates + r * GU;
            for (int64_t j = 0; j < GU; j++)
                g[j] += a->bias[j];
        }
    const float *brec = a->cell == CELL_GRU && a->bias ? a->bias + GU : NULL;
    float *rp = maas_alloc_floats(B * GU);
    if (!rp)
        return MAAS_ERR_NOMEM;
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
        s = maas_sgemm(MAAS_NO_TRANS, MAAS_NO_TRANS, B, GU, U, 1.0f, hrs, U, a->R, GU, 0.0f, rp,
                       GU);
        if (s != MAAS_OK)
            break;
        for (int64_t b = 0; b < B; b++) {
            float *g = gates + (b * T + t) * GU, *p = rp + b * GU, *hb = h + b * U;
            int on = step_on(a, b, t);
            if (on) {
                if (a->cell == CELL_SIMPLE) {
                    for (int64_t j = 0; j < U; j++)
                        hb[j] = g[j] = act_f(a->act, g[j] + p[j]);
                } else if (a->cell == CELL_LSTM) {
                    float *cb = c + b * U;
                    for (int64_t j = 0; j < U; j++) {
                        float ig = act_f(a->ract, g[j] + p[j]);
                        float fg = act_f(a->ract, g[U + j] + p[U + j]);
                        float cc = act_f(a->act, g[2 * U + j] + p[2 * U + j]);
                        float og = act_f(a->ract, g[3 * U + j] + p[3 * U + j]);
                        g[j] = ig, g[U + j] = fg, g[2 * U + j] = cc, g[3 * U + j] = og;
                        cb[j] = fg * cb[j] + ig * cc;
                        hb[j] = og * act_f(a->act, cb[j]);
                    }
                } else {
                    float *rhb = rh + (sx * B + b) * U;
                    for (int64_t j = 0; j < U; j++) {
                        float iz = p[j] + (brec ? brec[j] : 0.0f);
                        float ir = p[U + j] + (brec ? brec[U + j] : 0.0f);
                        float ih = p[2 * U + j] + (brec ? brec[2 * U + j] : 0.0f);
                        float z = act_f(a->ract, g[j] + iz);
                        float r = act_f(a->ract, g[U + j] + ir);
                        float hh = act_f(a->act, g[2 * U + j] + r * ih);
                        g[j] = z, g[U + j] = r, g[2 * U + j] = hh;
                        rhb[j] = ih;
                        hb[j] = z * hb[j] + (1.0f - z) * hh;
                    }
                }
            } else if (a->cell == CELL_GRU) {
                memset(rh + (sx * B + b) * U, 0, (size_t)U * sizeof(float));
            }
            if (st)
                memcpy(st + (sx * B + b) * U, a->cell == CELL_LSTM ? c + b * U : hb,
                       (size_t)U * sizeof(float));
            if (a->retseq || sx == T - 1) {
                float *o = a->retseq ? out0 + (b * T + sx) * U : out0 + b * U;
                if (!on && a->zero)
                    memset(o, 0, (size_t)U * sizeof(float));
                else
                    memcpy(o, hb, (size_t)U * sizeof(float));
            }
        }
    }
    maas_free(rp);
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
          *tmp = maas_alloc_floats(B * U);
    maas_status s = MAAS_OK;
    if (!dG || !dRP || !dh || !dc || !tmp) {
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
        for (int64_t b = 0; b < B; b++) {
            int on = step_on(a, b, t);
            float *dhb = dh + b * U;
            if (g0 && (a->retseq || sx == T - 1) && (on || !a->zero)) {
                const float *o = a->retseq ? g0 + (b * T + sx) * U : g0 + b * U;
                for (int64_t j = 0; j < U; j++)
                    dhb[j] += o[j];
            }
            if (!on)
                continue; /* the states carried: their gradients pass through */
            const float *g = gates + (b * T + t) * GU;
            float *dg = dG + (b * T + t) * GU, *dp = drp + b * GU;
            if (a->cell == CELL_SIMPLE) {
                for (int64_t j = 0; j < U; j++) {
                    dg[j] = dp[j] = dhb[j] * act_d(a->act, g[j]);
                    dhb[j] = 0.0f;
                }
            } else if (a->cell == CELL_LSTM) {
                const float *cs = st + (sx * B + b) * U;
                const float *cp = sx > 0 ? st + ((sx - 1) * B + b) * U : (a->c0 ? a->c0 + b * U : NULL);
                float *dcb = dc + b * U;
                for (int64_t j = 0; j < U; j++) {
                    float ig = g[j], fg = g[U + j], cc = g[2 * U + j], og = g[3 * U + j];
                    float tc = act_f(a->act, cs[j]);
                    float dn = dcb[j] + dhb[j] * og * act_d(a->act, tc);
                    float cprev = cp ? cp[j] : 0.0f;
                    dg[j] = dp[j] = dn * cc * act_d(a->ract, ig);
                    dg[U + j] = dp[U + j] = dn * cprev * act_d(a->ract, fg);
                    dg[2 * U + j] = dp[2 * U + j] = dn * ig * act_d(a->act, cc);
                    dg[3 * U + j] = dp[3 * U + j] = dhb[j] * tc * act_d(a->ract, og);
                    dcb[j] = dn * fg;
                    dhb[j] = 0.0f;
                }
            } else {
                const float *hp = sx > 0 ? st + ((sx - 1) * B + b) * U : (a->h0 ? a->h0 + b * U : NULL);
                const float *rhb = rh + (sx * B + b) * U;
                for (int64_t j = 0; j < U; j++) {
                    float z = g[j], r = g[U + j], hh = g[2 * U + j];
                    float hprev = hp ? hp[j] : 0.0f;
                    float dph = dhb[j] * (1.0f - z) * act_d(a->act, hh);
                    dg[j] = dp[j] = dhb[j] * (hprev - hh) * act_d(a->ract, z);
                    dg[U + j] = dp[U + j] = dph * rhb[j] * act_d(a->ract, r);
                    dg[2 * U + j] = dph;
                    dp[2 * U + j] = dph * r;
                    dhb[j] *= z;
                }
            }
        }
        /* dh_prev += (dRP_s R^T) * rdrop (masked rows of dRP are zero) */
        if (a->rdrop) {
            s = maas_sgemm(MAAS_NO_TRANS, MAAS_TRANS, B, U, GU, 1.0f, drp, GU, a->R, GU, 0.0f,
                           tmp, U);
            for (int64_t k = 0; k < B * U && s == MAAS_OK; k++)
                dh[k] += tmp[k] * a->rdrop[k];
        } else {
            s = maas_sgemm(MAAS_NO_TRANS, MAAS_TRANS, B, U, GU, 1.0f, drp, GU, a->R, GU, 1.0f, dh,
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
    if (gx && (s = maas_sgemm(MAAS_NO_TRANS, MAAS_TRANS, B * T, F, GU, 1.0f, dG, GU, a->W, GU, 1.0f,
                              gx, F)) != MAAS_OK)
        goto done;
    if (gW && (s = maas_sgemm(MAAS_TRANS, MAAS_NO_TRANS, F, GU, B * T, 1.0f, a->x, F, dG, GU, 1.0f,
                              gW, GU)) != MAAS_OK)
        goto done;
    if (gR && (s = maas_sgemm(MAAS_TRANS, MAAS_NO_TRANS, U, GU, T * B, 1.0f, hr, U, dRP, GU, 1.0f,
                              gR, GU)) != MAAS_OK)
        goto done;
    if (gb) {
        /* column sums in a fixed order (rows ascending) */
        for (int64_t r = 0; r < B * T; r++)
            for (int64_t j = 0; j < GU; j++)
                gb[j] += dG[r * GU + j];
        if (a->cell == CELL_GRU)
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
    int n = 3;
    a->i_bias = a->has_bias ? n++ : -1;
    a->i_mask = a->has_mask ? n++ : -1;
    a->i_h0 = a->has_h0 ? n++ : -1;
    a->i_c0 = a->has_c0 ? n++ : -1;
    a->i_rdrop = a->has_rdrop ? n++ : -1;
    if (nd->nin != n)
        return maas_error(MAAS_ERR_VALUE, "%s: the flags name %d inputs, received %d", op, n, nd->nin);
    if (a->has_c0 && a->cell != CELL_LSTM)
        return maas_error(MAAS_ERR_VALUE, "%s: only an LSTM has a cell state", op);
    for (int i = 0; i < nd->nin; i++)
        if (i != a->i_mask) {
            maas_status s = need_f32(nd, i, op);
            if (s != MAAS_OK)
                return s;
        }
    const maas_tensor *x = nd->in[0], *W = nd->in[1], *R = nd->in[2];
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
    maas_status s = need_shape2(W, "the kernel", op, a->F, GU);
    if (s == MAAS_OK)
        s = need_shape2(R, "the recurrent kernel", op, a->U, GU);
    if (s == MAAS_OK && a->has_bias) {
        const maas_tensor *b = nd->in[a->i_bias];
        if (a->cell == CELL_GRU)
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
                    nd->nsaved > 3 ? nd->saved[3]->data : NULL, GDATA(0), GDATA(1), GDATA(2),
                    at->i_bias >= 0 ? GDATA(at->i_bias) : NULL,
                    at->i_h0 >= 0 ? GDATA(at->i_h0) : NULL, at->i_c0 >= 0 ? GDATA(at->i_c0) : NULL);
}

MAAS_OPDEF(maas_opdef_rnn, "rnn", 3, 8, rnn_attr, 0, rnn_fields, rnn);
