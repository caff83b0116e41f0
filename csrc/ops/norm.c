/* ops/norm.c -- layer, batch and group normalization (kernels and their op
 * table entries).
 *
 * layernorm  in: x, [gamma], [beta]. x is seen as (outer, n, inner): the
 *            normalized axes are a contiguous block of x's axes whose sizes
 *            multiply to n (Keras's LayerNormalization, axis=-1 by default,
 *            gives inner = 1). gamma and beta have n elements.
 *              out = (x - mean) * rstd * gamma + beta,
 *              rstd = 1 / sqrt(var + epsilon)   (var biased, over n)
 *            rms != 0: no centring, out = x * rstd * gamma (+ beta), with
 *            var = mean(x^2) (Keras's rms_scaling).
 *            saved: mean (outer*inner), rstd (outer*inner) [, scratch].
 * batchnorm  in: x, moving_mean, moving_var, [gamma], [beta]. x is seen as
 *            (outer, C, inner), C = x.shape[axis]; statistics per channel
 *            over outer*inner values. training: batch mean and biased
 *            variance, and the moving statistics (inputs 1 and 2, the
 *            variables' own memory: the op's state_in) are updated in place,
 *              moving = moving * momentum + batch * (1 - momentum)
 *            (Keras 3's BatchNormalization); inference: the moving
 *            statistics. saved: mean (C), rstd (C), scratch.
 * groupnorm  in: x, [gamma], [beta]. x is (N, S, C) with channels last,
 *            groups of C/G consecutive channels; statistics per (sample,
 *            group) over S*C/G values. saved: mean (N*G), rstd (N*G),
 *            scratch (for the deterministic gamma/beta gradients).
 *
 * Forward kernels overwrite out and the saved tensors; backward kernels
 * ACCUMULATE into the gradients they are given (NULL: not needed). The
 * backward of each op reads x once for its two reductions and once more to
 * write dx (one pass of reductions, one of output).
 *
 * Determinism: every sum runs in an order fixed by the shapes alone (rows
 * of a chunk in order, chunk partials in chunk order, in double), so the
 * results are the same bits at any thread count. Threads (OpenMP) over
 * rows, chunks or column blocks above MAAS_PAR_THRESHOLD elements. */
#include "../opdef.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#define LANES 16

/* sum of x[0..n) in LANES fixed partial sums (vectorizable, fixed order) */
static inline float sum_lanes(const float *restrict x, int64_t n)
{
    float acc[LANES] = {0};
    int64_t j = 0;
    for (; j + LANES <= n; j += LANES)
        for (int l = 0; l < LANES; l++)
            acc[l] += x[j + l];
    float s = 0.0f;
    for (; j < n; j++)
        acc[j % LANES] += x[j];
    for (int l = 0; l < LANES; l++)
        s += acc[l];
    return s;
}

/* sum of (x - m)^2 */
static inline float sumsq_lanes(const float *restrict x, float m, int64_t n)
{
    float acc[LANES] = {0};
    int64_t j = 0;
    for (; j + LANES <= n; j += LANES)
        for (int l = 0; l < LANES; l++) {
            float d = x[j + l] - m;
            acc[l] += d * d;
        }
    for (; j < n; j++) {
        float d = x[j] - m;
        acc[j % LANES] += d * d;
    }
    float s = 0.0f;
    for (int l = 0; l < LANES; l++)
        s += acc[l];
    return s;
}

static int nthreads_for(int64_t work)
{
    return work > MAAS_PAR_THRESHOLD ? maas_get_num_threads() : 1;
}

/* ============================================================ layernorm */

/* out (outer,n,inner) = normalize x over n; mean, rstd (outer*inner). */
static maas_status layernorm_forward_k(float *out, float *mean, float *rstd, const float *x,
                                       const float *gamma, const float *beta, int64_t outer,
                                       int64_t n, int64_t inner, float eps, int rms)
{
    const int nt = nthreads_for(outer * n * inner);
    const float inv_n = 1.0f / (float)n;
    if (inner == 1) {
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int64_t r = 0; r < outer; r++) {
            const float *restrict xr = x + r * n;
            float *restrict o = out + r * n;
            float m = rms ? 0.0f : sum_lanes(xr, n) * inv_n;
            float v = sumsq_lanes(xr, m, n) * inv_n;
            float rs = 1.0f / sqrtf(v + eps);
            mean[r] = m;
            rstd[r] = rs;
            if (gamma && beta)
                for (int64_t j = 0; j < n; j++)
                    o[j] = (xr[j] - m) * rs * gamma[j] + beta[j];
            else if (gamma)
                for (int64_t j = 0; j < n; j++)
                    o[j] = (xr[j] - m) * rs * gamma[j];
            else if (beta)
                for (int64_t j = 0; j < n; j++)
                    o[j] = (xr[j] - m) * rs + beta[j];
            else
                for (int64_t j = 0; j < n; j++)
                    o[j] = (xr[j] - m) * rs;
        }
        return MAAS_OK;
    }
    /* inner > 1: for each outer block, accumulate the inner statistics
     * side by side (rows j in order) in the mean / rstd buffers */
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t r = 0; r < outer; r++) {
        const float *xr = x + r * n * inner;
        float *restrict mr = mean + r * inner, *restrict sr = rstd + r * inner;
        float *o = out + r * n * inner;
        for (int64_t i = 0; i < inner; i++)
            mr[i] = sr[i] = 0.0f;
        if (!rms) {
            for (int64_t j = 0; j < n; j++)
                for (int64_t i = 0; i < inner; i++)
                    mr[i] += xr[j * inner + i];
            for (int64_t i = 0; i < inner; i++)
                mr[i] *= inv_n;
        }
        for (int64_t j = 0; j < n; j++)
            for (int64_t i = 0; i < inner; i++) {
                float d = xr[j * inner + i] - mr[i];
                sr[i] += d * d;
            }
        for (int64_t i = 0; i < inner; i++)
            sr[i] = 1.0f / sqrtf(sr[i] * inv_n + eps);
        for (int64_t j = 0; j < n; j++) {
            float g = gamma ? gamma[j] : 1.0f, b = beta ? beta[j] : 0.0f;
            for (int64_t i = 0; i < inner; i++)
                o[j * inner + i] = (xr[j * inner + i] - mr[i]) * sr[i] * g + b;
        }
    }
    return MAAS_OK;
}

/* gx += d/dx; ggamma += sum dy * xhat; gbeta += sum dy (over outer, inner).
 * scratch: 2 * outer * inner floats when inner > 1 (else unused). */
static maas_status layernorm_backward_k(float *gx, float *ggamma, float *gbeta, const float *gout,
                                        const float *x, const float *mean, const float *rstd,
                                        const float *gamma, float *scratch, int64_t outer,
                                        int64_t n, int64_t inner, int rms)
{
    const int nt = nthreads_for(outer * n * inner);
    const float inv_n = 1.0f / (float)n;
    if (inner == 1) {
        if (gx) {
#pragma omp parallel for schedule(static) num_threads(nt)
            for (int64_t r = 0; r < outer; r++) {
                const float *restrict xr = x + r * n, *restrict dy = gout + r * n;
                float *restrict g = gx + r * n;
                const float m = mean[r], rs = rstd[r];
                float aa[LANES] = {0}, bb[LANES] = {0};
                for (int64_t j = 0; j < n; j++) {
                    float gy = gamma ? dy[j] * gamma[j] : dy[j];
                    aa[j % LANES] += gy;
                    bb[j % LANES] += gy * (xr[j] - m) * rs;
                }
                float a = 0.0f, b = 0.0f;
                for (int l = 0; l < LANES; l++) {
                    a += aa[l];
                    b += bb[l];
                }
                a = rms ? 0.0f : a * inv_n;
                b *= inv_n;
                for (int64_t j = 0; j < n; j++) {
                    float gy = gamma ? dy[j] * gamma[j] : dy[j];
                    float xh = (xr[j] - m) * rs;
                    g[j] += rs * (gy - a - xh * b);
                }
            }
        }
        if (ggamma || gbeta) {
            /* column blocks, rows in order within each */
            const int64_t BLK = 64, nblk = (n + BLK - 1) / BLK;
#pragma omp parallel for schedule(static) num_threads(nt)
            for (int64_t bk = 0; bk < nblk; bk++) {
                int64_t j0 = bk * BLK, j1 = j0 + BLK < n ? j0 + BLK : n;
                float sg[64], sb[64];
                for (int64_t j = j0; j < j1; j++)
                    sg[j - j0] = sb[j - j0] = 0.0f;
                for (int64_t r = 0; r < outer; r++) {
                    const float *restrict xr = x + r * n, *restrict dy = gout + r * n;
                    const float m = mean[r], rs = rstd[r];
                    for (int64_t j = j0; j < j1; j++) {
                        sg[j - j0] += dy[j] * (xr[j] - m) * rs;
                        sb[j - j0] += dy[j];
                    }
                }
                for (int64_t j = j0; j < j1; j++) {
                    if (ggamma)
                        ggamma[j] += sg[j - j0];
                    if (gbeta)
                        gbeta[j] += sb[j - j0];
                }
            }
        }
        return MAAS_OK;
    }
    /* inner > 1: per-(outer, inner) sums a, b in scratch */
    float *sa = scratch, *sb2 = scratch + outer * inner;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t r = 0; r < outer; r++) {
        const float *xr = x + r * n * inner, *dy = gout + r * n * inner;
        const float *mr = mean + r * inner, *sr = rstd + r * inner;
        float *a = sa + r * inner, *b = sb2 + r * inner;
        for (int64_t i = 0; i < inner; i++)
            a[i] = b[i] = 0.0f;
        for (int64_t j = 0; j < n; j++) {
            float gm = gamma ? gamma[j] : 1.0f;
            for (int64_t i = 0; i < inner; i++) {
                float gy = dy[j * inner + i] * gm;
                a[i] += gy;
                b[i] += gy * (xr[j * inner + i] - mr[i]) * sr[i];
            }
        }
        for (int64_t i = 0; i < inner; i++) {
            a[i] = rms ? 0.0f : a[i] * inv_n;
            b[i] *= inv_n;
        }
        if (gx) {
            float *g = gx + r * n * inner;
            for (int64_t j = 0; j < n; j++) {
                float gm = gamma ? gamma[j] : 1.0f;
                for (int64_t i = 0; i < inner; i++) {
                    float gy = dy[j * inner + i] * gm;
                    float xh = (xr[j * inner + i] - mr[i]) * sr[i];
                    g[j * inner + i] += sr[i] * (gy - a[i] - xh * b[i]);
                }
            }
        }
    }
    if (ggamma || gbeta) {
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int64_t j = 0; j < n; j++) {
            float sg = 0.0f, sbt = 0.0f;
            for (int64_t r = 0; r < outer; r++)
                for (int64_t i = 0; i < inner; i++) {
                    int64_t e = (r * n + j) * inner + i;
                    sg += gout[e] * (x[e] - mean[r * inner + i]) * rstd[r * inner + i];
                    sbt += gout[e];
                }
            if (ggamma)
                ggamma[j] += sg;
            if (gbeta)
                gbeta[j] += sbt;
        }
    }
    return MAAS_OK;
}

typedef struct {
    int64_t axis, naxes;   /* the normalized axes: axis .. axis+naxes-1 */
    double epsilon;
    int64_t has_gamma, has_beta, rms;
    int64_t outer, n, inner; /* derived */
} layernorm_attr;

static const maas_attr_field layernorm_fields[] = {
    {"axis", 'l', offsetof(layernorm_attr, axis)},
    {"naxes", 'l', offsetof(layernorm_attr, naxes)},
    {"epsilon", 'd', offsetof(layernorm_attr, epsilon)},
    {"has_gamma", 'l', offsetof(layernorm_attr, has_gamma)},
    {"has_beta", 'l', offsetof(layernorm_attr, has_beta)},
    {"rms", 'l', offsetof(layernorm_attr, rms)},
    {NULL, 0, 0}};

/* Checks that input k is a float32 vector of n elements named `what`. */
static maas_status need_param(const maas_node *nd, int k, int64_t n, const char *op,
                              const char *what)
{
    char sx[160], sp[160];
    const maas_tensor *p = nd->in[k];
    if (p->dtype != MAAS_F32)
        return maas_error(MAAS_ERR_TYPE, "%s: %s must be float32, received %s", op, what,
                          maas_dtype_name(p->dtype));
    if (p->size != n)
        return maas_error(MAAS_ERR_SHAPE,
                          "%s: %s of shape %s does not fit input of shape %s: expected %lld "
                          "elements",
                          op, what, SHAPE(p, sp), SHAPE(nd->in[0], sx), (long long)n);
    return MAAS_OK;
}

static maas_status layernorm_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    layernorm_attr *a = ATTR(layernorm_attr, nd);
    const maas_tensor *x = nd->in[0];
    char sx[160];
    maas_status s = need_f32(nd, 0, "layer_normalization");
    if (s != MAAS_OK)
        return s;
    int want = 1 + (a->has_gamma != 0) + (a->has_beta != 0);
    if (nd->nin != want)
        return maas_error(MAAS_ERR_VALUE,
                          "layer_normalization: has_gamma=%lld, has_beta=%lld need %d inputs, got %d",
                          (long long)a->has_gamma, (long long)a->has_beta, want, nd->nin);
    if (x->ndim < 1)
        return maas_error(MAAS_ERR_SHAPE, "layer_normalization: input of shape %s: needs at least 1 dimension",
                          SHAPE(x, sx));
    int64_t ax = 0;
    if ((s = normalize_axis(a->axis, x->ndim, "layer_normalization", &ax)) != MAAS_OK)
        return s;
    if (a->naxes < 1 || ax + a->naxes > x->ndim)
        return maas_error(MAAS_ERR_VALUE,
                          "layer_normalization: %lld axes from axis %lld do not fit input of shape %s",
                          (long long)a->naxes, (long long)ax, SHAPE(x, sx));
    if (!(a->epsilon >= 0.0))
        return maas_error(MAAS_ERR_VALUE, "layer_normalization: epsilon must be >= 0, received %g",
                          a->epsilon);
    a->outer = a->n = a->inner = 1;
    for (int d = 0; d < x->ndim; d++) {
        if (d < ax)
            a->outer *= x->shape[d];
        else if (d < ax + a->naxes)
            a->n *= x->shape[d];
        else
            a->inner *= x->shape[d];
    }
    a->axis = ax;
    int k = 1;
    if (a->has_gamma && (s = need_param(nd, k++, a->n, "layer_normalization", "gamma")) != MAAS_OK)
        return s;
    if (a->has_beta && (s = need_param(nd, k++, a->n, "layer_normalization", "beta")) != MAAS_OK)
        return s;
    spec_like(&outs[0], x);
    int64_t stats = a->outer * a->inner;
    for (int j = 0; j < 2; j++) {
        saved[j].dtype = MAAS_F32;
        saved[j].ndim = 1;
        saved[j].shape[0] = stats;
    }
    nd->nsaved = 2;
    if (a->inner > 1) {
        saved[2].dtype = MAAS_F32;
        saved[2].ndim = 1;
        saved[2].shape[0] = 2 * stats;
        nd->nsaved = 3;
    }
    return MAAS_OK;
}

static maas_status layernorm_forward(maas_node *nd)
{
    const layernorm_attr *a = CATTR(layernorm_attr, nd);
    if (a->n == 0 || a->outer * a->inner == 0)
        return MAAS_OK;
    int k = 1;
    const float *gamma = a->has_gamma ? nd->in[k++]->data : NULL;
    const float *beta = a->has_beta ? nd->in[k++]->data : NULL;
    return layernorm_forward_k(nd->out[0]->data, nd->saved[0]->data, nd->saved[1]->data,
                               nd->in[0]->data, gamma, beta, a->outer, a->n, a->inner,
                               (float)a->epsilon, (int)a->rms);
}

static maas_status layernorm_backward(const maas_node *nd, const maas_tensor *const *gout,
                                      maas_tensor *const *gin)
{
    const layernorm_attr *a = CATTR(layernorm_attr, nd);
    if (a->n == 0 || a->outer * a->inner == 0)
        return MAAS_OK;
    int k = 1, kg = -1, kb = -1;
    if (a->has_gamma)
        kg = k++;
    if (a->has_beta)
        kb = k++;
    return layernorm_backward_k(GDATA(0), kg >= 0 ? GDATA(kg) : NULL, kb >= 0 ? GDATA(kb) : NULL,
                                gout[0]->data, nd->in[0]->data, nd->saved[0]->data,
                                nd->saved[1]->data, kg >= 0 ? nd->in[kg]->data : NULL,
                                nd->nsaved > 2 ? nd->saved[2]->data : NULL, a->outer, a->n,
                                a->inner, (int)a->rms);
}

MAAS_OPDEF(maas_opdef_layernorm, "layer_normalization", 1, 3, layernorm_attr, 0, layernorm_fields,
           layernorm);

/* ============================================================ batchnorm */

/* rows of `outer` per chunk of the chunked channel sums: fixed by the
 * shape (C * inner), never by the thread count */
static int64_t bn_chunk_rows(int64_t C, int64_t inner)
{
    int64_t per = C * inner;
    int64_t rows = per > 0 ? 16384 / per : 1;
    return rows < 1 ? 1 : rows;
}

/* part[kk*C + c] = sum over rows of chunk kk, all inner i, of f(x, c). The
 * chunk partials in float, their sum (returned in tot[c]) in double. */
#define BN_CHUNK_LOOP(EXPR)                                                                 \
    do {                                                                                    \
        _Pragma("omp parallel for schedule(static) num_threads(nt)")                        \
        for (int64_t kk = 0; kk < nchunks; kk++) {                                             \
            float *restrict p = part + kk * C;                                               \
            for (int64_t c = 0; c < C; c++)                                                 \
                p[c] = 0.0f;                                                                \
            int64_t o1 = (kk + 1) * rows < outer ? (kk + 1) * rows : outer;                   \
            for (int64_t o = kk * rows; o < o1; o++) {                                       \
                if (inner == 1) {                                                           \
                    const int64_t base = o * C;                                             \
                    for (int64_t c = 0; c < C; c++) {                                       \
                        const int64_t e = base + c;                                         \
                        p[c] += (EXPR);                                                     \
                    }                                                                       \
                } else {                                                                    \
                    for (int64_t c = 0; c < C; c++) {                                       \
                        float acc = 0.0f;                                                   \
                        for (int64_t i = 0; i < inner; i++) {                               \
                            const int64_t e = (o * C + c) * inner + i;                      \
                            acc += (EXPR);                                                  \
                        }                                                                   \
                        p[c] += acc;                                                        \
                    }                                                                       \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
    } while (0)

/* The backward's two sums in one pass: part[k*C + c] += dy and
 * part2[k*C + c] += dy * (x - mean[c]). */
static void bn_backward_sums(float *part, float *part2, const float *x, const float *dy,
                             const float *mean, int64_t outer, int64_t C, int64_t inner,
                             int64_t rows, int64_t nchunks, int nt)
{
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t k = 0; k < nchunks; k++) {
        float *restrict p = part + k * C, *restrict q = part2 + k * C;
        for (int64_t c = 0; c < C; c++)
            p[c] = q[c] = 0.0f;
        int64_t o1 = (k + 1) * rows < outer ? (k + 1) * rows : outer;
        for (int64_t o = k * rows; o < o1; o++) {
            if (inner == 1) {
                const float *restrict xr = x + o * C, *restrict d = dy + o * C;
                for (int64_t c = 0; c < C; c++) {
                    p[c] += d[c];
                    q[c] += d[c] * (xr[c] - mean[c]);
                }
            } else {
                for (int64_t c = 0; c < C; c++) {
                    const float *restrict xr = x + (o * C + c) * inner,
                                          *restrict d = dy + (o * C + c) * inner;
                    float a = 0.0f, b = 0.0f, m = mean[c];
                    for (int64_t i = 0; i < inner; i++) {
                        a += d[i];
                        b += d[i] * (xr[i] - m);
                    }
                    p[c] += a;
                    q[c] += b;
                }
            }
        }
    }
}

static void bn_total(double *tot, const float *part, int64_t nchunks, int64_t C)
{
    for (int64_t c = 0; c < C; c++)
        tot[c] = 0.0;
    for (int64_t k = 0; k < nchunks; k++)
        for (int64_t c = 0; c < C; c++)
            tot[c] += part[k * C + c];
}

typedef struct {
    int64_t training;
    double momentum, epsilon;
    int64_t has_gamma, has_beta, axis;
    int64_t outer, C, inner, rows, nchunks; /* derived */
} batchnorm_attr;

static const maas_attr_field batchnorm_fields[] = {
    {"training", 'l', offsetof(batchnorm_attr, training)},
    {"momentum", 'd', offsetof(batchnorm_attr, momentum)},
    {"epsilon", 'd', offsetof(batchnorm_attr, epsilon)},
    {"has_gamma", 'l', offsetof(batchnorm_attr, has_gamma)},
    {"has_beta", 'l', offsetof(batchnorm_attr, has_beta)},
    {"axis", 'l', offsetof(batchnorm_attr, axis)},
    {NULL, 0, 0}};

/* scratch layout (floats): part (nchunks*C, rounded up to even) | tot (C
 * doubles) | four per-channel float vectors (scale, a, b, sum dy). */
typedef struct {
    float *part;
    double *tot;
    float *v0, *v1, *v2, *v3;
} bn_scratch;

static int64_t bn_part_size(int64_t nchunks, int64_t C)
{
    int64_t n = 2 * nchunks * C; /* the backward's two sums */
    return n + (n & 1);
}

static int64_t bn_scratch_size(int64_t nchunks, int64_t C)
{
    return bn_part_size(nchunks, C) + 2 * C + 4 * C;
}

static bn_scratch bn_scratch_of(float *base, int64_t nchunks, int64_t C)
{
    bn_scratch b;
    int64_t off = bn_part_size(nchunks, C);
    b.part = base;
    b.tot = (double *)(void *)(base + off); /* base is 64-byte aligned, off even */
    b.v0 = base + off + 2 * C;
    b.v1 = b.v0 + C;
    b.v2 = b.v1 + C;
    b.v3 = b.v2 + C;
    return b;
}

static maas_status batchnorm_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    batchnorm_attr *a = ATTR(batchnorm_attr, nd);
    const maas_tensor *x = nd->in[0];
    char sx[160];
    const char *op = "batch_normalization";
    maas_status s = need_f32(nd, 0, op);
    if (s != MAAS_OK)
        return s;
    int want = 3 + (a->has_gamma != 0) + (a->has_beta != 0);
    if (nd->nin != want)
        return maas_error(MAAS_ERR_VALUE, "%s: has_gamma=%lld, has_beta=%lld need %d inputs, got %d",
                          op, (long long)a->has_gamma, (long long)a->has_beta, want, nd->nin);
    if (x->ndim < 1)
        return maas_error(MAAS_ERR_SHAPE, "%s: input of shape %s: needs at least 1 dimension", op,
                          SHAPE(x, sx));
    int64_t ax = 0;
    if ((s = normalize_axis(a->axis, x->ndim, op, &ax)) != MAAS_OK)
        return s;
    if (!(a->epsilon >= 0.0))
        return maas_error(MAAS_ERR_VALUE, "%s: epsilon must be >= 0, received %g", op, a->epsilon);
    if (!(a->momentum >= 0.0 && a->momentum <= 1.0))
        return maas_error(MAAS_ERR_VALUE, "%s: momentum must be in [0, 1], received %g", op,
                          a->momentum);
    a->axis = ax;
    split_axis(x, ax, &a->outer, &a->C, &a->inner);
    if ((s = need_param(nd, 1, a->C, op, "moving_mean")) != MAAS_OK ||
        (s = need_param(nd, 2, a->C, op, "moving_variance")) != MAAS_OK)
        return s;
    int k = 3;
    if (a->has_gamma && (s = need_param(nd, k++, a->C, op, "gamma")) != MAAS_OK)
        return s;
    if (a->has_beta && (s = need_param(nd, k++, a->C, op, "beta")) != MAAS_OK)
        return s;
    a->rows = bn_chunk_rows(a->C, a->inner);
    a->nchunks = a->outer ? (a->outer + a->rows - 1) / a->rows : 0;
    spec_like(&outs[0], x);
    for (int j = 0; j < 2; j++) {
        saved[j].dtype = MAAS_F32;
        saved[j].ndim = 1;
        saved[j].shape[0] = a->C;
    }
    saved[2].dtype = MAAS_F32;
    saved[2].ndim = 1;
    saved[2].shape[0] = bn_scratch_size(a->nchunks, a->C);
    nd->nsaved = 3;
    return MAAS_OK;
}

static maas_status batchnorm_forward(maas_node *nd)
{
    const batchnorm_attr *a = CATTR(batchnorm_attr, nd);
    const int64_t outer = a->outer, C = a->C, inner = a->inner, rows = a->rows,
                  nchunks = a->nchunks;
    const float *restrict x = nd->in[0]->data;
    float *restrict mm = nd->in[1]->data, *restrict mv = nd->in[2]->data;
    int k = 3;
    const float *gamma = a->has_gamma ? nd->in[k++]->data : NULL;
    const float *beta = a->has_beta ? nd->in[k++]->data : NULL;
    float *restrict mean = nd->saved[0]->data, *restrict rstd = nd->saved[1]->data;
    bn_scratch sc = bn_scratch_of(nd->saved[2]->data, nchunks, C);
    float *part = sc.part, *scale = sc.v0;
    double *tot = sc.tot;
    float *restrict out = nd->out[0]->data;
    const int64_t M = outer * inner, total = M * C;
    const float eps = (float)a->epsilon;
    const int nt = nthreads_for(total);
    if (C == 0)
        return MAAS_OK;
    if (a->training) {
        if (M == 0)
            return maas_error(MAAS_ERR_VALUE, "batch_normalization: training on an empty batch "
                              "(input of %lld elements) has no batch statistics",
                              (long long)total);
        BN_CHUNK_LOOP(x[e]);
        bn_total(tot, part, nchunks, C);
        for (int64_t c = 0; c < C; c++)
            mean[c] = (float)(tot[c] / (double)M);
        BN_CHUNK_LOOP((x[e] - mean[c]) * (x[e] - mean[c]));
        bn_total(tot, part, nchunks, C);
        const float mom = (float)a->momentum, om = (float)(1.0 - a->momentum);
        for (int64_t c = 0; c < C; c++) {
            float var = (float)(tot[c] / (double)M);
            rstd[c] = 1.0f / sqrtf(var + eps);
            mm[c] = mm[c] * mom + mean[c] * om;
            mv[c] = mv[c] * mom + var * om;
        }
        nd->in[1]->version++; /* written in place: a plan's folded copies are stale */
        nd->in[2]->version++;
    } else {
        for (int64_t c = 0; c < C; c++) {
            mean[c] = mm[c];
            rstd[c] = 1.0f / sqrtf(mv[c] + eps);
        }
    }
    for (int64_t c = 0; c < C; c++)
        scale[c] = gamma ? rstd[c] * gamma[c] : rstd[c];
    if (inner == 1) {
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int64_t o = 0; o < outer; o++) {
            const float *restrict xr = x + o * C;
            float *restrict orow = out + o * C;
            if (beta)
                for (int64_t c = 0; c < C; c++)
                    orow[c] = (xr[c] - mean[c]) * scale[c] + beta[c];
            else
                for (int64_t c = 0; c < C; c++)
                    orow[c] = (xr[c] - mean[c]) * scale[c];
        }
    } else {
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int64_t oc = 0; oc < outer * C; oc++) {
            int64_t c = oc % C;
            float m = mean[c], scl = scale[c], b = beta ? beta[c] : 0.0f;
            const float *restrict xr = x + oc * inner;
            float *restrict orow = out + oc * inner;
            for (int64_t i = 0; i < inner; i++)
                orow[i] = (xr[i] - m) * scl + b;
        }
    }
    return MAAS_OK;
}

static maas_status batchnorm_backward(const maas_node *nd, const maas_tensor *const *gout,
                                      maas_tensor *const *gin)
{
    const batchnorm_attr *a = CATTR(batchnorm_attr, nd);
    const int64_t outer = a->outer, C = a->C, inner = a->inner, rows = a->rows,
                  nchunks = a->nchunks;
    const int64_t M = outer * inner, total = M * C;
    if (C == 0 || M == 0)
        return MAAS_OK;
    const float *restrict x = nd->in[0]->data, *restrict dy = gout[0]->data;
    int k = 3, kg = -1, kb = -1;
    if (a->has_gamma)
        kg = k++;
    if (a->has_beta)
        kb = k++;
    const float *gamma = kg >= 0 ? nd->in[kg]->data : NULL;
    float *gx = GDATA(0), *ggamma = kg >= 0 ? GDATA(kg) : NULL, *gbeta = kb >= 0 ? GDATA(kb) : NULL;
    const float *restrict mean = nd->saved[0]->data, *restrict rstd = nd->saved[1]->data;
    bn_scratch sc = bn_scratch_of(nd->saved[2]->data, nchunks, C);
    float *part = sc.part, *cs = sc.v0, *ca = sc.v1, *cb = sc.v2, *sdy = sc.v3;
    double *tot = sc.tot;
    const int nt = nthreads_for(total);
    /* the reductions: sum dy and sum dy * (x - mean) per channel */
    bn_backward_sums(part, part + nchunks * C, x, dy, mean, outer, C, inner, rows, nchunks, nt);
    bn_total(tot, part, nchunks, C);
    for (int64_t c = 0; c < C; c++)
        sdy[c] = (float)tot[c];
    bn_total(tot, part + nchunks * C, nchunks, C);
    if (gbeta)
        for (int64_t c = 0; c < C; c++)
            gbeta[c] += sdy[c];
    if (ggamma)
        for (int64_t c = 0; c < C; c++)
            ggamma[c] += (float)tot[c] * rstd[c];
    if (!gx)
        return MAAS_OK;
    /* training: dx = g*rstd*(dy - sdy/M - (x-mean)*rstd^2*sum(dy*(x-mean))/M);
     * inference (moving statistics are constants): dx = g*rstd*dy */
    const float invM = 1.0f / (float)M;
    for (int64_t c = 0; c < C; c++) {
        float g = gamma ? gamma[c] : 1.0f;
        float s = g * rstd[c];
        cs[c] = s;
        if (a->training) {
            ca[c] = sdy[c] * invM;
            cb[c] = (float)tot[c] * invM * rstd[c] * rstd[c];
        } else {
            ca[c] = cb[c] = 0.0f;
        }
    }
    if (inner == 1) {
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int64_t o = 0; o < outer; o++) {
            const float *restrict xr = x + o * C, *restrict d = dy + o * C;
            float *restrict g = gx + o * C;
            for (int64_t c = 0; c < C; c++)
                g[c] += cs[c] * (d[c] - ca[c] - (xr[c] - mean[c]) * cb[c]);
        }
    } else {
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int64_t oc = 0; oc < outer * C; oc++) {
            int64_t c = oc % C;
            const float *restrict xr = x + oc * inner, *restrict d = dy + oc * inner;
            float *restrict g = gx + oc * inner;
            for (int64_t i = 0; i < inner; i++)
                g[i] += cs[c] * (d[i] - ca[c] - (xr[i] - mean[c]) * cb[c]);
        }
    }
    return MAAS_OK;
}

/* 1 when the node normalizes its input's last axis with the moving
 * statistics (inference), so a plan may fold it into the node before it;
 * gives epsilon and which of gamma (input 3) and beta (next) it has. */
int maas_batchnorm_foldable(const maas_node *nd, double *eps, int *has_gamma, int *has_beta)
{
    const batchnorm_attr *a = CATTR(batchnorm_attr, nd);
    if (a->training || a->inner != 1 || nd->in[0]->dtype != MAAS_F32)
        return 0;
    *eps = (double)(float)a->epsilon; /* the forward adds it as a float */
    *has_gamma = a->has_gamma != 0;
    *has_beta = a->has_beta != 0;
    return 1;
}

MAAS_OPDEF_STATE(maas_opdef_batchnorm, "batch_normalization", 3, 5, batchnorm_attr, 0,
                 batchnorm_fields, batchnorm, 6u);

/* ============================================================ groupnorm */

typedef struct {
    int64_t groups;
    double epsilon;
    int64_t has_gamma, has_beta;
    int64_t N, S, C; /* derived */
} groupnorm_attr;

static const maas_attr_field groupnorm_fields[] = {
    {"groups", 'l', offsetof(groupnorm_attr, groups)},
    {"epsilon", 'd', offsetof(groupnorm_attr, epsilon)},
    {"has_gamma", 'l', offsetof(groupnorm_attr, has_gamma)},
    {"has_beta", 'l', offsetof(groupnorm_attr, has_beta)},
    {NULL, 0, 0}};

static maas_status groupnorm_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    groupnorm_attr *a = ATTR(groupnorm_attr, nd);
    const maas_tensor *x = nd->in[0];
    const char *op = "group_normalization";
    char sx[160];
    maas_status s = need_f32(nd, 0, op);
    if (s != MAAS_OK)
        return s;
    int want = 1 + (a->has_gamma != 0) + (a->has_beta != 0);
    if (nd->nin != want)
        return maas_error(MAAS_ERR_VALUE, "%s: has_gamma=%lld, has_beta=%lld need %d inputs, got %d",
                          op, (long long)a->has_gamma, (long long)a->has_beta, want, nd->nin);
    if (x->ndim < 2)
        return maas_error(MAAS_ERR_SHAPE, "%s: input of shape %s: needs a batch and a channel axis",
                          op, SHAPE(x, sx));
    a->N = x->shape[0];
    a->C = x->shape[x->ndim - 1];
    a->S = 1;
    for (int d = 1; d < x->ndim - 1; d++)
        a->S *= x->shape[d];
    if (a->groups < 1 || a->C % a->groups != 0)
        return maas_error(MAAS_ERR_VALUE,
                          "%s: %lld channels (input of shape %s) cannot be split into groups=%lld: "
                          "the channel count must be a multiple of groups",
                          op, (long long)a->C, SHAPE(x, sx), (long long)a->groups);
    if (!(a->epsilon >= 0.0))
        return maas_error(MAAS_ERR_VALUE, "%s: epsilon must be >= 0, received %g", op, a->epsilon);
    int k = 1;
    if (a->has_gamma && (s = need_param(nd, k++, a->C, op, "gamma")) != MAAS_OK)
        return s;
    if (a->has_beta && (s = need_param(nd, k++, a->C, op, "beta")) != MAAS_OK)
        return s;
    spec_like(&outs[0], x);
    for (int j = 0; j < 3; j++) {
        saved[j].dtype = MAAS_F32;
        saved[j].ndim = 1;
    }
    saved[0].shape[0] = saved[1].shape[0] = a->N * a->groups;
    saved[2].shape[0] = 2 * a->N * a->C + 2 * a->N * a->groups; /* backward scratch */
    nd->nsaved = 3;
    return MAAS_OK;
}

static maas_status groupnorm_forward(maas_node *nd)
{
    const groupnorm_attr *a = CATTR(groupnorm_attr, nd);
    const int64_t N = a->N, S = a->S, C = a->C, G = a->groups, Cg = C / G;
    const float *restrict x = nd->in[0]->data;
    int k = 1;
    const float *gamma = a->has_gamma ? nd->in[k++]->data : NULL;
    const float *beta = a->has_beta ? nd->in[k++]->data : NULL;
    float *restrict mean = nd->saved[0]->data, *restrict rstd = nd->saved[1]->data;
    float *restrict out = nd->out[0]->data;
    const float eps = (float)a->epsilon;
    const double K = (double)S * (double)Cg;
    const int nt = nthreads_for(N * S * C);
    if (N * S * C == 0)
        return MAAS_OK;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t ng = 0; ng < N * G; ng++) {
        int64_t n = ng / G, g = ng % G;
        const float *xb = x + n * S * C + g * Cg;
        double sum = 0.0;
        for (int64_t s = 0; s < S; s++)
            sum += sum_lanes(xb + s * C, Cg);
        float m = (float)(sum / K);
        double sq = 0.0;
        for (int64_t s = 0; s < S; s++)
            sq += sumsq_lanes(xb + s * C, m, Cg);
        float rs = 1.0f / sqrtf((float)(sq / K) + eps);
        mean[ng] = m;
        rstd[ng] = rs;
        float *ob = out + n * S * C + g * Cg;
        for (int64_t s = 0; s < S; s++)
            for (int64_t c = 0; c < Cg; c++) {
                float v = (xb[s * C + c] - m) * rs;
                if (gamma)
                    v *= gamma[g * Cg + c];
                if (beta)
                    v += beta[g * Cg + c];
                ob[s * C + c] = v;
            }
    }
    return MAAS_OK;
}

static maas_status groupnorm_backward(const maas_node *nd, const maas_tensor *const *gout,
                                      maas_tensor *const *gin)
{
    const groupnorm_attr *a = CATTR(groupnorm_attr, nd);
    const int64_t N = a->N, S = a->S, C = a->C, G = a->groups, Cg = C / G;
    if (N * S * C == 0)
        return MAAS_OK;
    const float *restrict x = nd->in[0]->data, *restrict dy = gout[0]->data;
    int k = 1, kg = -1, kb = -1;
    if (a->has_gamma)
        kg = k++;
    if (a->has_beta)
        kb = k++;
    const float *gamma = kg >= 0 ? nd->in[kg]->data : NULL;
    float *gx = GDATA(0), *ggamma = kg >= 0 ? GDATA(kg) : NULL, *gbeta = kb >= 0 ? GDATA(kb) : NULL;
    const float *restrict mean = nd->saved[0]->data, *restrict rstd = nd->saved[1]->data;
    float *pg = nd->saved[2]->data, *pb = pg + N * C, *sa = pb + N * C, *sb = sa + N * G;
    const float invK = (float)(1.0 / ((double)S * (double)Cg));
    const int nt = nthreads_for(N * S * C);
    /* per sample: the channel sums (for gamma, beta) and the group sums */
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t n = 0; n < N; n++) {
        float *restrict P = pg + n * C, *restrict Q = pb + n * C;
        for (int64_t c = 0; c < C; c++)
            P[c] = Q[c] = 0.0f;
        const float *xn = x + n * S * C, *dn = dy + n * S * C;
        for (int64_t s = 0; s < S; s++)
            for (int64_t c = 0; c < C; c++) {
                int64_t ng = n * G + c / Cg;
                float xh = (xn[s * C + c] - mean[ng]) * rstd[ng];
                P[c] += dn[s * C + c] * xh;
                Q[c] += dn[s * C + c];
            }
        for (int64_t g = 0; g < G; g++) {
            float A = 0.0f, B = 0.0f;
            for (int64_t c = g * Cg; c < (g + 1) * Cg; c++) {
                float gm = gamma ? gamma[c] : 1.0f;
                A += Q[c] * gm;
                B += P[c] * gm;
            }
            sa[n * G + g] = A * invK;
            sb[n * G + g] = B * invK;
        }
        if (gx) {
            float *gn = gx + n * S * C;
            for (int64_t s = 0; s < S; s++)
                for (int64_t c = 0; c < C; c++) {
                    int64_t ng = n * G + c / Cg;
                    float gm = gamma ? gamma[c] : 1.0f;
                    float xh = (xn[s * C + c] - mean[ng]) * rstd[ng];
                    gn[s * C + c] += rstd[ng] * (dn[s * C + c] * gm - sa[ng] - xh * sb[ng]);
                }
        }
    }
    for (int64_t c = 0; c < C; c++) {
        float tg = 0.0f, tb = 0.0f;
        for (int64_t n = 0; n < N; n++) {
            tg += pg[n * C + c];
            tb += pb[n * C + c];
        }
        if (ggamma)
            ggamma[c] += tg;
        if (gbeta)
            gbeta[c] += tb;
    }
    return MAAS_OK;
}

MAAS_OPDEF(maas_opdef_groupnorm, "group_normalization", 1, 3, groupnorm_attr, 0, groupnorm_fields,
           groupnorm);
