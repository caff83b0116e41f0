/* ops/attention.c -- fused scaled-dot-product attention and its table
 * entries ("attention", "attention_dropout").
 *
 * Shapes (layout 0, PyTorch's and the brief's): q (B,H,Lq,D), k (B,H,Lk,D),
 * v (B,H,Lk,Dv), out (B,H,Lq,Dv). Layout 1 (Keras's EinsumDense layout,
 * keras.ops.dot_product_attention's): q (B,Lq,H,D), k (B,Lk,H,D),
 * v (B,Lk,H,Dv), out (B,Lq,H,Dv); the GEMMs then read the heads with a row
 * stride of H*D, so no transpose is ever copied.
 *
 *   S = scale * Q K^T + mask        (per batch and head; scale <= 0: 1/sqrt(D))
 *   P = softmax(S) over the keys    (masked keys: exactly 0; a row with every
 *                                    key masked: all 0, so its output is 0)
 *   out = dropout(P) V
 *
 * mask (optional 4th input, right-aligned broadcast to (B,H,Lq,Lk), each
 * dimension 1 or full): float32 is added to S; bool/uint8 keeps a key where
 * nonzero (Keras's attention_mask, PyTorch's boolean attn_mask). causal:
 * query i sees keys j <= i (top-left aligned, as Keras and PyTorch). The
 * mask gets no gradient.
 *
 * maas_attention_forward OVERWRITES out and P (B,H,Lq,Lk), the probabilities
 * before dropout (what backward needs and what return_attention_scores
 * gives). Dropout keeps P[idx] with probability 1 - rate (scaled by
 * 1/(1-rate)) where idx = ((b*H + h)*Lq + i)*Lk + j is drawn from the
 * counter-based generator keyed by (seed, stream): backward regenerates the
 * same mask, nothing is stored.
 * maas_attention_backward ACCUMULATES gq, gk, gv (NULL: not needed):
 *   dPd = gout V^T, gV += Pd^T gout, dP = dPd * keep / (1-rate) (+ gP),
 *   dS = P (dP - rowsum(dP P)), gQ += scale dS K, gK += scale dS^T Q.
 *
 * The GEMMs go through maas_sgemm. Work is split over (batch, head) pairs
 * (each pair's rows by one thread, every reduction in a fixed order), so the
 * bits do not depend on the thread count; row sums run in double. */
#include "opdef.h"
#include "vecmath.h"

#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct {
    int64_t B, H, Lq, Lk, D, Dv;
    int layout;
    float scale;          /* already resolved */
    int causal;
    float rate;           /* dropout, 0 = none */
    uint64_t seed, stream;
    int mtype;            /* 0 none, 1 additive float32, 2 keep (nonzero) bytes */
    const void *mask;
    int64_t ms[4];        /* mask strides over (b, h, i, j); 0 where broadcast */
} attn_geom;

/* Element strides of q/k/v/out for (b, h) and their row stride. */
static inline void strides(const attn_geom *g, int64_t L, int64_t E, int64_t *sb, int64_t *sh,
                           int64_t *ld)
{
    if (g->layout == 0) {
        *sb = g->H * L * E;
        *sh = L * E;
        *ld = E;
    } else {
        *sb = L * g->H * E;
        *sh = E;
        *ld = g->H * E;
    }
}

static inline int64_t pair_off(const attn_geom *g, int64_t bh, int64_t L, int64_t E, int64_t *ld)
{
    int64_t sb, sh;
    strides(g, L, E, &sb, &sh, ld);
    return (bh / g->H) * sb + (bh % g->H) * sh;
}

/* The rows of one pair: S (Lq, Lk) already holds scale * Q K^T; masks,
 * softmax in place. */
static void softmax_rows(const attn_geom *g, int64_t bh, float *S)
{
    const int64_t Lq = g->Lq, Lk = g->Lk, b = bh / g->H, h = bh % g->H;
    for (int64_t i = 0; i < Lq; i++) {
        float *row = S + i * Lk;
        int64_t n = g->causal ? (i + 1 < Lk ? i + 1 : Lk) : Lk; /* keys past n: masked */
        if (g->mtype) {
            int64_t base = b * g->ms[0] + h * g->ms[1] + i * g->ms[2];
            if (g->mtype == 1) {
                const float *m = (const float *)g->mask + base;
                for (int64_t j = 0; j < n; j++)
                    row[j] += m[j * g->ms[3]];
            } else {
                const unsigned char *m = (const unsigned char *)g->mask + base;
                for (int64_t j = 0; j < n; j++)
                    if (!m[j * g->ms[3]])
                        row[j] = -INFINITY;
            }
        }
        float mx = -INFINITY;
        for (int64_t j = 0; j < n; j++)
            mx = row[j] > mx ? row[j] : mx;
        if (mx == -INFINITY || isnan(mx)) { /* nothing to attend to (or NaN input) */
            float fill = isnan(mx) ? NAN : 0.0f;
            for (int64_t j = 0; j < Lk; j++)
                row[j] = j < n ? fill : 0.0f;
            continue;
        }
        for (int64_t j = 0; j < n; j++)
            row[j] -= mx;
        maas_vm_exp(row, row, n);
        double acc[8] = {0};
        maas_vm_sum8_f64(acc, row, n);
        float inv = (float)(1.0 / maas_vm_fold8_f64(acc));
        for (int64_t j = 0; j < n; j++)
            row[j] *= inv;
        for (int64_t j = n; j < Lk; j++)
            row[j] = 0.0f;
    }
}

/* dst = P with dropout applied (the kept entries scaled by 1/(1-rate)), or
 * when grad: dst *= the same keep mask and scale. */
static void apply_dropout(const attn_geom *g, int64_t bh, float *dst, const float *src)
{
    const int64_t n = g->Lq * g->Lk;
    const uint64_t base = (uint64_t)bh * (uint64_t)n;
    const float sc = 1.0f / (1.0f - g->rate);
    for (int64_t t = 0; t < n; t++)
        dst[t] = maas_rng_uniform(g->seed, g->stream, base + (uint64_t)t) >= g->rate ? src[t] * sc
                                                                                     : 0.0f;
}

static int team_size(const attn_geom *g)
{
    int nt = maas_get_num_threads();
    int64_t pairs = g->B * g->H;
    double work = (double)pairs * (double)g->Lq * (double)g->Lk * (double)(g->D + g->Dv);
    /* the pairs are the unit of the split; OpenBLAS threads a lone product
     * itself outside deterministic mode */
    if (nt < 1 || pairs < 2 || work < (double)MAAS_PAR_THRESHOLD)
        return 1;
    return nt < pairs ? nt : (int)pairs;
}

static int thread_num(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* probs_only: P only (out unused). */
static maas_status sdpa_forward(const attn_geom *g, float *out, float *P, const float *q,
                                     const float *k, const float *v, int probs_only)
{
    const int64_t pairs = g->B * g->H, LL = g->Lq * g->Lk;
    const int nt = team_size(g);
    float *scratch = NULL;
    if (g->rate > 0.0f && !probs_only) {
        int64_t cnt;
        if (maas_mul_size(LL, nt, &cnt) != 0)
            return maas_error(MAAS_ERR_NOMEM, "attention: scratch size overflows");
        if (!(scratch = maas_alloc_floats(cnt)))
            return MAAS_ERR_NOMEM;
    }
    int failed = 0;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t bh = 0; bh < pairs; bh++) {
        int64_t ldq, ldk, ldv, ldo;
        const float *qp = q + pair_off(g, bh, g->Lq, g->D, &ldq);
        const float *kp = k + pair_off(g, bh, g->Lk, g->D, &ldk);
        float *S = P + bh * LL;
        if (maas_sgemm(MAAS_NO_TRANS, MAAS_TRANS, g->Lq, g->Lk, g->D, g->scale, qp, ldq, kp, ldk,
                       0.0f, S, g->Lk) != MAAS_OK) {
#pragma omp atomic write
            failed = 1;
            continue;
        }
        softmax_rows(g, bh, S);
        if (probs_only)
            continue;
        const float *src = S;
        if (scratch) {
            float *d = scratch + (int64_t)thread_num() * LL;
            apply_dropout(g, bh, d, S);
            src = d;
        }
        const float *vp = v + pair_off(g, bh, g->Lk, g->Dv, &ldv);
        float *op = out + pair_off(g, bh, g->Lq, g->Dv, &ldo);
        if (maas_sgemm(MAAS_NO_TRANS, MAAS_NO_TRANS, g->Lq, g->Dv, g->Lk, 1.0f, src, g->Lk, vp,
                       ldv, 0.0f, op, ldo) != MAAS_OK) {
#pragma omp atomic write
            failed = 1;
        }
    }
    maas_free(scratch);
    if (failed)
        return maas_error(MAAS_ERR_VALUE, "attention: a product failed (sizes too large for BLAS)");
    return MAAS_OK;
}

/* gout: out's gradient (NULL in probs mode), gP: P's gradient (probs mode,
 * or NULL). */
static maas_status sdpa_backward(const attn_geom *g, float *gq, float *gk, float *gv,
                                      const float *gout, const float *gP, const float *P,
                                      const float *q, const float *k, const float *v)
{
    const int64_t pairs = g->B * g->H, LL = g->Lq * g->Lk;
    const int nt = team_size(g);
    const int drop = g->rate > 0.0f && gout;
    int64_t cnt;
    if (maas_mul_size(LL, (int64_t)nt * (drop ? 2 : 1), &cnt) != 0)
        return maas_error(MAAS_ERR_NOMEM, "attention: scratch size overflows");
    float *scratch = maas_alloc_floats(cnt);
    if (!scratch)
        return MAAS_ERR_NOMEM;
    int failed = 0;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t bh = 0; bh < pairs; bh++) {
        float *dS = scratch + (int64_t)thread_num() * LL * (drop ? 2 : 1);
        float *Pd = drop ? dS + LL : NULL;
        const float *Pb = P + bh * LL;
        int64_t ldq, ldk, ldv, ldo;
        int64_t oq = pair_off(g, bh, g->Lq, g->D, &ldq), ok = pair_off(g, bh, g->Lk, g->D, &ldk);
        int64_t ov = pair_off(g, bh, g->Lk, g->Dv, &ldv), oo = pair_off(g, bh, g->Lq, g->Dv, &ldo);
        maas_status s = MAAS_OK;
        if (gout) {
            /* dPd = gout V^T */
            s = maas_sgemm(MAAS_NO_TRANS, MAAS_TRANS, g->Lq, g->Lk, g->Dv, 1.0f, gout + oo, ldo,
                           v + ov, ldv, 0.0f, dS, g->Lk);
            if (s == MAAS_OK && gv) {
                const float *src = Pb;
                if (drop) {
                    apply_dropout(g, bh, Pd, Pb);
                    src = Pd;
                }
                s = maas_sgemm(MAAS_TRANS, MAAS_NO_TRANS, g->Lk, g->Dv, g->Lq, 1.0f, src, g->Lk,
                               gout + oo, ldo, 1.0f, gv + ov, ldv);
            }
            if (drop)
                apply_dropout(g, bh, dS, dS);
            if (gP)
                for (int64_t t = 0; t < LL; t++)
                    dS[t] += gP[bh * LL + t];
        } else {
            memcpy(dS, gP + bh * LL, (size_t)LL * sizeof(float));
        }
        if (s == MAAS_OK && (gq || gk)) {
            for (int64_t i = 0; i < g->Lq; i++) {
                float *d = dS + i * g->Lk;
                const float *p = Pb + i * g->Lk;
                double dot = 0.0;
                for (int64_t j = 0; j < g->Lk; j++)
                    dot += (double)d[j] * (double)p[j];
                float fd = (float)dot;
                for (int64_t j = 0; j < g->Lk; j++)
                    d[j] = p[j] * (d[j] - fd);
            }
            if (gq)
                s = maas_sgemm(MAAS_NO_TRANS, MAAS_NO_TRANS, g->Lq, g->D, g->Lk, g->scale, dS,
                               g->Lk, k + ok, ldk, 1.0f, gq + oq, ldq);
            if (s == MAAS_OK && gk)
                s = maas_sgemm(MAAS_TRANS, MAAS_NO_TRANS, g->Lk, g->D, g->Lq, g->scale, dS, g->Lk,
                               q + oq, ldq, 1.0f, gk + ok, ldk);
        }
        if (s != MAAS_OK) {
#pragma omp atomic write
            failed = 1;
        }
    }
    maas_free(scratch);
    if (failed)
        return maas_error(MAAS_ERR_VALUE, "attention: a product failed (sizes too large for BLAS)");
    return MAAS_OK;
}

/* ---------------------------------------------------------- table entry */

typedef struct {
    uint64_t seed, stream; /* MAAS_OPF_RANDOM: first */
    double scale;          /* <= 0: 1 / sqrt(D) */
    double rate;           /* attention_dropout only */
    int64_t causal, layout, mode; /* mode 1: the output is P */
    /* derived by infer */
    int64_t B, H, Lq, Lk, D, Dv;
    int64_t mtype, ms[4];
} attn_attr;

static const maas_attr_field attn_fields[] = {
    {"seed", 'u', offsetof(attn_attr, seed)},     {"stream", 'u', offsetof(attn_attr, stream)},
    {"scale", 'd', offsetof(attn_attr, scale)},   {"rate", 'd', offsetof(attn_attr, rate)},
    {"causal", 'l', offsetof(attn_attr, causal)}, {"layout", 'l', offsetof(attn_attr, layout)},
    {"mode", 'l', offsetof(attn_attr, mode)},     {NULL, 0, 0}};

static maas_status attn_infer_common(maas_node *nd, maas_tensor_spec *outs,
                                     maas_tensor_spec *saved, int random)
{
    attn_attr *a = ATTR(attn_attr, nd);
    const char *name = random ? "attention_dropout" : "attention";
    const maas_tensor *q = nd->in[0], *k = nd->in[1], *v = nd->in[2];
    char s0[160], s1[160], s2[160];
    for (int i = 0; i < 3; i++) {
        maas_status s = need_f32(nd, i, name);
        if (s != MAAS_OK)
            return s;
    }
    if (a->layout != 0 && a->layout != 1)
        return maas_error(MAAS_ERR_VALUE, "%s: layout must be 0 (batch, heads, seq, dim) or 1 "
                          "(batch, seq, heads, dim), received %lld", name, (long long)a->layout);
    if (a->mode != 0 && a->mode != 1)
        return maas_error(MAAS_ERR_VALUE, "%s: mode must be 0 or 1, received %lld", name,
                          (long long)a->mode);
    if (!random)
        a->rate = 0.0;
    if (!(a->rate >= 0.0 && a->rate < 1.0))
        return maas_error(MAAS_ERR_VALUE, "%s: dropout rate must be in [0, 1), received %g", name,
                          a->rate);
    if (!isfinite(a->scale))
        return maas_error(MAAS_ERR_VALUE, "%s: scale must be finite, received %g", name, a->scale);
    if (q->ndim != 4 || k->ndim != 4 || v->ndim != 4)
        return maas_error(MAAS_ERR_SHAPE, "%s: query, key and value must be 4-D %s, received shapes "
                          "%s, %s and %s", name,
                          a->layout ? "(batch, seq, heads, dim)" : "(batch, heads, seq, dim)",
                          SHAPE(q, s0), SHAPE(k, s1), SHAPE(v, s2));
    int ax_l = a->layout ? 1 : 2, ax_h = a->layout ? 2 : 1;
    int64_t B = q->shape[0], H = q->shape[ax_h], Lq = q->shape[ax_l], D = q->shape[3];
    int64_t Lk = k->shape[ax_l], Dv = v->shape[3];
    if (k->shape[0] != B || v->shape[0] != B || k->shape[ax_h] != H || v->shape[ax_h] != H ||
        k->shape[3] != D || v->shape[ax_l] != Lk)
        return maas_error(MAAS_ERR_SHAPE, "%s: query %s, key %s and value %s do not fit: batch and "
                          "heads must agree, key must have the query's dim, value the key's "
                          "sequence length", name, SHAPE(q, s0), SHAPE(k, s1), SHAPE(v, s2));
    a->B = B;
    a->H = H;
    a->Lq = Lq;
    a->Lk = Lk;
    a->D = D;
    a->Dv = Dv;
    a->mtype = 0;
    memset(a->ms, 0, sizeof a->ms);
    if (nd->nin == 4) {
        const maas_tensor *m = nd->in[3];
        if (m->dtype == MAAS_F32)
            a->mtype = 1;
        else if (m->dtype == MAAS_BOOL || m->dtype == MAAS_U8)
            a->mtype = 2;
        else
            return maas_error(MAAS_ERR_TYPE, "%s: the mask must be float32 (added to the scores) or "
                              "bool (True: attend), received %s", name, maas_dtype_name(m->dtype));
        const int64_t full[4] = {B, H, Lq, Lk};
        if (m->ndim > 4)
            return maas_error(MAAS_ERR_SHAPE, "%s: mask shape %s has more than 4 dimensions", name,
                              SHAPE(m, s0));
        int64_t stride = 1;
        for (int d = 3, md = m->ndim - 1; d >= 0; d--, md--) {
            int64_t n = md >= 0 ? m->shape[md] : 1;
            if (n != 1 && n != full[d])
                return maas_error(MAAS_ERR_SHAPE, "%s: mask shape %s does not broadcast to the "
                                  "scores' shape %s (batch, heads, query seq, key seq)", name,
                                  SHAPE(m, s0), maas_shape_str(4, full, s1, sizeof s1));
            a->ms[d] = n == 1 ? 0 : stride;
            stride *= n;
        }
        nd->nograd |= 8u;
    }
    int64_t tot;
    const int64_t pshape[4] = {B, H, Lq, Lk};
    if (maas_shape_size(4, pshape, &tot) != 0)
        return maas_error(MAAS_ERR_VALUE, "%s: the scores' size overflows", name);
    if (a->mode == 1) {
        outs[0].dtype = MAAS_F32;
        outs[0].ndim = 4;
        memcpy(outs[0].shape, pshape, sizeof pshape);
        nd->nograd |= 4u; /* v does not enter P */
        return MAAS_OK;
    }
    spec_like(&outs[0], q);
    outs[0].shape[3] = Dv;
    saved[0].dtype = MAAS_F32;
    saved[0].ndim = 4;
    memcpy(saved[0].shape, pshape, sizeof pshape);
    nd->nsaved = 1;
    return MAAS_OK;
}

static maas_status attention_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    return attn_infer_common(nd, outs, saved, 0);
}

static maas_status attention_dropout_infer(maas_node *nd, maas_tensor_spec *outs,
                                           maas_tensor_spec *saved)
{
    return attn_infer_common(nd, outs, saved, 1);
}

static attn_geom geom_of(const maas_node *nd)
{
    const attn_attr *a = CATTR(attn_attr, nd);
    attn_geom g;
    memset(&g, 0, sizeof g);
    g.B = a->B;
    g.H = a->H;
    g.Lq = a->Lq;
    g.Lk = a->Lk;
    g.D = a->D;
    g.Dv = a->Dv;
    g.layout = (int)a->layout;
    g.scale = a->scale > 0.0 ? (float)a->scale : (a->D > 0 ? (float)(1.0 / sqrt((double)a->D)) : 1.0f);
    g.causal = a->causal != 0;
    g.rate = a->mode == 1 ? 0.0f : (float)a->rate;
    g.seed = a->seed;
    g.stream = a->stream;
    g.mtype = (int)a->mtype;
    g.mask = nd->nin == 4 ? nd->in[3]->ptr : NULL;
    memcpy(g.ms, a->ms, sizeof g.ms);
    return g;
}

static maas_status attention_forward(maas_node *nd)
{
    const attn_geom g = geom_of(nd);
    if (CATTR(attn_attr, nd)->mode == 1)
        return sdpa_forward(&g, NULL, nd->out[0]->data, nd->in[0]->data, nd->in[1]->data,
                                 nd->in[2]->data, 1);
    return sdpa_forward(&g, nd->out[0]->data, nd->saved[0]->data, nd->in[0]->data,
                             nd->in[1]->data, nd->in[2]->data, 0);
}

static maas_status attention_backward(const maas_node *nd, const maas_tensor *const *gout,
                                           maas_tensor *const *gin)
{
    const attn_geom g = geom_of(nd);
    if (!gout[0])
        return MAAS_OK;
    if (CATTR(attn_attr, nd)->mode == 1)
        return sdpa_backward(&g, GDATA(0), GDATA(1), NULL, NULL, gout[0]->data,
                                  nd->out[0]->data, nd->in[0]->data, nd->in[1]->data,
                                  nd->in[2]->data);
    return sdpa_backward(&g, GDATA(0), GDATA(1), GDATA(2), gout[0]->data, NULL,
                              nd->saved[0]->data, nd->in[0]->data, nd->in[1]->data,
                              nd->in[2]->data);
}

#define attention_dropout_forward attention_forward
#define attention_dropout_backward attention_backward

MAAS_OPDEF(maas_opdef_attention, "attention", 3, 4, attn_attr, 0, attn_fields, attention);
MAAS_OPDEF(maas_opdef_attention_dropout, "attention_dropout", 3, 4, attn_attr, MAAS_OPF_RANDOM,
           attn_fields, attention_dropout);

double maas_attention_work(const maas_node *nd)
{
    const attn_attr *a = CATTR(attn_attr, nd);
    return (double)a->B * (double)a->H * (double)a->Lq * (double)a->Lk *
           (double)(a->D + a->Dv + 4);
}
