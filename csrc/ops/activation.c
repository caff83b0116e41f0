/* activation.c -- unary elementwise ops, softmax and log_softmax.
 *
 * maas_unary_forward(op, out, x, n, alpha)
 *     out[i] = f(x[i]) for n elements; overwrites out; out == x allowed.
 * maas_unary_backward(op, gx, gout, x, out, n, alpha)
 *     ACCUMULATES gx[i] += gout[i] * f'(x[i]); `out` is the forward output
 *     (used by sigmoid, tanh, exp, sqrt when non-NULL, else recomputed).
 * maas_softmax_forward(out, x, outer, n, inner, log)
 *     x viewed as (outer, n, inner), softmax over the middle axis,
 *     max-subtracted; overwrites out (out == x works too).
 * maas_softmax_backward(gx, gout, out, outer, n, inner, log)
 *     ACCUMULATES into gx; sums over the axis run serially per row, so the
 *     result does not depend on the thread count.
 *
 * The transcendentals (exp, expm1, log, log1p, tanh, sigmoid, erf) run
 * through vecmath.h on blocks of MAAS_VM_BLOCK elements held in a stack
 * scratch: AVX2+FMA polynomials when the CPU has them, libm otherwise (or
 * with MAAS_ISA=portable). The blocks are the unit of the OpenMP split, so
 * every element is computed by the same code whatever the thread count.
 */
#include "maas.h"
#include "vecmath.h"

#include <math.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define SQRT_2_OVER_PI 0.79788456080286535588
#define GELU_C 0.044715f

/* An elementwise loop over i in [0, n), threaded above the threshold. The
 * loop variable is `i`; `n`, `nthr` and `par` must be in scope. */
#define EW_LOOP _Pragma("omp parallel for simd num_threads(nthr) schedule(static) if (par)") \
    for (int64_t i = 0; i < n; i++)

#define VB MAAS_VM_BLOCK

/* Blocks [b, b + BLK_LEN) of [0, n), threaded above the threshold; `n`,
 * `nthr` and `par` must be in scope. */
#define BLOCK_LOOP _Pragma("omp parallel for num_threads(nthr) schedule(static) if (par)") \
    for (int64_t b = 0; b < n; b += VB)
#define BLK_LEN (n - b < VB ? n - b : VB)

/* Per block: t[k] = PRE (of v = x[b + k]); FN(t) in place; then POST for
 * each k, with v and tk = t[k] in scope. */
#define BLOCKED(PRE, FN, POST)                                                \
    BLOCK_LOOP {                                                              \
        const int64_t m = BLK_LEN;                                            \
        const float *xb = x + b;                                              \
        float t[VB];                                                          \
        _Pragma("omp simd")                                                   \
        for (int64_t k = 0; k < m; k++) {                                     \
            const float v = xb[k];                                            \
            t[k] = (PRE);                                                     \
        }                                                                     \
        FN(t, t, m);                                                          \
        _Pragma("omp simd")                                                   \
        for (int64_t k = 0; k < m; k++) {                                     \
            const float v = xb[k], tk = t[k];                                 \
            (void)v;                                                          \
            POST;                                                             \
        }                                                                     \
    }

/* Per block: t = FN(x) straight from x; then POST as in BLOCKED. */
#define BLOCKED_X(FN, POST)                                                   \
    BLOCK_LOOP {                                                              \
        const int64_t m = BLK_LEN;                                            \
        const float *xb = x + b;                                              \
        float t[VB];                                                          \
        FN(t, xb, m);                                                         \
        _Pragma("omp simd")                                                   \
        for (int64_t k = 0; k < m; k++) {                                     \
            const float v = xb[k], tk = t[k];                                 \
            (void)v;                                                          \
            POST;                                                             \
        }                                                                     \
    }

/* out[i] = FN(x[i]) block by block */
#define DIRECT(FN) BLOCK_LOOP { FN(out + b, x + b, BLK_LEN); }

maas_status maas_unary_forward(maas_unary_op op, float *out, const float *x,
                               int64_t n, float alpha)
{
    if ((unsigned)op >= (unsigned)MAAS_U_COUNT)
        return maas_error(MAAS_ERR_VALUE, "unknown unary op %d", (int)op);
    if (n < 0)
        return maas_error(MAAS_ERR_VALUE, "unary op: negative size %lld",
                          (long long)n);
    if (n == 0)
        return MAAS_OK;
    const int par = n > MAAS_PAR_THRESHOLD;
    const int nthr = par ? maas_get_num_threads() : 1;
    switch (op) {
    case MAAS_U_RELU:
        EW_LOOP { float v = x[i]; out[i] = v < 0.0f ? 0.0f : v; }
        break;
    case MAAS_U_LEAKY_RELU:
        EW_LOOP { float v = x[i]; out[i] = v < 0.0f ? alpha * v : v; }
        break;
    case MAAS_U_ELU:
        /* expm1 of min(v, 0) (NaN kept): the positive side is v itself */
        BLOCKED(v > 0.0f ? 0.0f : v, maas_vm_expm1,
                out[b + k] = v > 0.0f ? v : alpha * tk)
        break;
    case MAAS_U_GELU:
        DIRECT(maas_vm_gelu)
        break;
    case MAAS_U_GELU_TANH:
        BLOCKED((float)SQRT_2_OVER_PI * (v + GELU_C * v * v * v), maas_vm_tanh,
                out[b + k] = 0.5f * v * (1.0f + tk))
        break;
    case MAAS_U_SIGMOID:
        DIRECT(maas_vm_sigmoid)
        break;
    case MAAS_U_TANH:
        DIRECT(maas_vm_tanh)
        break;
    case MAAS_U_SOFTPLUS:
        /* max(v, 0) + log1p(exp(-|v|)) */
        BLOCK_LOOP {
            const int64_t m = BLK_LEN;
            const float *xb = x + b;
            float t[VB];
            for (int64_t k = 0; k < m; k++)
                t[k] = -fabsf(xb[k]);
            maas_vm_exp(t, t, m);
            maas_vm_log1p(t, t, m);
            for (int64_t k = 0; k < m; k++)
                out[b + k] = (xb[k] > 0.0f ? xb[k] : 0.0f) + t[k]; /* NaN: t */
        }
        break;
    case MAAS_U_SILU:
        BLOCKED_X(maas_vm_sigmoid, out[b + k] = v * tk)
        break;
    case MAAS_U_EXP:
        DIRECT(maas_vm_exp)
        break;
    case MAAS_U_LOG:
        DIRECT(maas_vm_log)
        break;
    case MAAS_U_SQRT:
        EW_LOOP { out[i] = sqrtf(x[i]); }
        break;
    case MAAS_U_NEG:
        EW_LOOP { out[i] = -x[i]; }
        break;
    case MAAS_U_ABS:
        EW_LOOP { out[i] = fabsf(x[i]); }
        break;
    case MAAS_U_SQUARE:
        EW_LOOP { float v = x[i]; out[i] = v * v; }
        break;
    case MAAS_U_POW_SCALAR:
        if (alpha == 2.0f) {
            EW_LOOP { float v = x[i]; out[i] = v * v; }
        } else if (alpha == 1.0f) {
            EW_LOOP { out[i] = x[i]; }
        } else {
            EW_LOOP { out[i] = powf(x[i], alpha); }
        }
        break;
    case MAAS_U_RELU6:
        EW_LOOP {
            float v = x[i];
            out[i] = v < 0.0f ? 0.0f : (v > 6.0f ? 6.0f : v);
        }
        break;
    default:
        return maas_error(MAAS_ERR_VALUE, "unknown unary op %d", (int)op);
    }
    return MAAS_OK;
}

maas_status maas_unary_backward(maas_unary_op op, float *restrict gx,
                                const float *restrict gout, const float *x,
                                const float *out, int64_t n, float alpha)
{
    if ((unsigned)op >= (unsigned)MAAS_U_COUNT)
        return maas_error(MAAS_ERR_VALUE, "unknown unary op %d", (int)op);
    if (n < 0)
        return maas_error(MAAS_ERR_VALUE, "unary op: negative size %lld",
                          (long long)n);
    if (n == 0 || gx == NULL)
        return MAAS_OK;
    const int par = n > MAAS_PAR_THRESHOLD;
    const int nthr = par ? maas_get_num_threads() : 1;
    switch (op) {
    case MAAS_U_RELU:
        EW_LOOP { gx[i] += x[i] > 0.0f ? gout[i] : 0.0f; }
        break;
    case MAAS_U_LEAKY_RELU:
        EW_LOOP { gx[i] += x[i] > 0.0f ? gout[i] : alpha * gout[i]; }
        break;
    case MAAS_U_ELU:
        BLOCKED(v > 0.0f ? 0.0f : v, maas_vm_exp,
                gx[b + k] += gout[b + k] * (v > 0.0f ? 1.0f : alpha * tk))
        break;
    case MAAS_U_GELU:
        /* cdf(v) + v pdf(v) */
        BLOCKED_X(maas_vm_gelu_grad, gx[b + k] += gout[b + k] * tk)
        break;
    case MAAS_U_GELU_TANH:
        BLOCKED((float)SQRT_2_OVER_PI * (v + GELU_C * v * v * v), maas_vm_tanh, {
            const float du = (float)SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_C * v * v);
            const float sech2 = 1.0f - tk * tk; /* 0 where du may be inf */
            gx[b + k] += gout[b + k] * (0.5f * (1.0f + tk) +
                                        (sech2 > 0.0f ? 0.5f * v * sech2 * du : 0.0f));
        })
        break;
    case MAAS_U_SIGMOID:
        if (out) {
            EW_LOOP { float s = out[i]; gx[i] += gout[i] * s * (1.0f - s); }
        } else {
            BLOCKED_X(maas_vm_sigmoid, gx[b + k] += gout[b + k] * tk * (1.0f - tk))
        }
        break;
    case MAAS_U_TANH:
        if (out) {
            EW_LOOP { float t = out[i]; gx[i] += gout[i] * (1.0f - t * t); }
        } else {
            BLOCKED_X(maas_vm_tanh, gx[b + k] += gout[b + k] * (1.0f - tk * tk))
        }
        break;
    case MAAS_U_SOFTPLUS:
        BLOCKED_X(maas_vm_sigmoid, gx[b + k] += gout[b + k] * tk)
        break;
    case MAAS_U_SILU:
        BLOCKED_X(maas_vm_sigmoid,
                gx[b + k] += gout[b + k] * (tk * (1.0f + v * (1.0f - tk))))
        break;
    case MAAS_U_EXP:
        if (out) {
            EW_LOOP { gx[i] += gout[i] * out[i]; }
        } else {
            BLOCKED_X(maas_vm_exp, gx[b + k] += gout[b + k] * tk)
        }
        break;
    case MAAS_U_LOG:
        EW_LOOP { gx[i] += gout[i] / x[i]; }
        break;
    case MAAS_U_SQRT:
        if (out) {
            EW_LOOP { gx[i] += 0.5f * gout[i] / out[i]; }
        } else {
            EW_LOOP { gx[i] += 0.5f * gout[i] / sqrtf(x[i]); }
        }
        break;
    case MAAS_U_NEG:
        EW_LOOP { gx[i] -= gout[i]; }
        break;
    case MAAS_U_ABS:
        EW_LOOP {
            float v = x[i];
            gx[i] += v > 0.0f ? gout[i] : (v < 0.0f ? -gout[i] : 0.0f);
        }
        break;
    case MAAS_U_SQUARE:
        EW_LOOP { gx[i] += 2.0f * x[i] * gout[i]; }
        break;
    case MAAS_U_POW_SCALAR:
        if (alpha == 0.0f) {
            /* d/dx x**0 = 0 everywhere (as PyTorch), not 0 * x**-1 */
        } else if (alpha == 1.0f) {
            EW_LOOP { gx[i] += gout[i]; }
        } else if (alpha == 2.0f) {
            EW_LOOP { gx[i] += 2.0f * x[i] * gout[i]; }
        } else {
            const float am1 = alpha - 1.0f;
            EW_LOOP { gx[i] += gout[i] * alpha * powf(x[i], am1); }
        }
        break;
    case MAAS_U_RELU6:
        EW_LOOP {
            float v = x[i];
            gx[i] += (v > 0.0f && v < 6.0f) ? gout[i] : 0.0f;
        }
        break;
    default:
        return maas_error(MAAS_ERR_VALUE, "unknown unary op %d", (int)op);
    }
    return MAAS_OK;
}

/* ------------------------------------------------------------- softmax */

static maas_status softmax_args(int64_t outer, int64_t n, int64_t inner,
                                int64_t *total)
{
    int64_t t;
    if (outer < 0 || n < 0 || inner < 0)
        return maas_error(MAAS_ERR_VALUE, "softmax: negative size");
    if (maas_mul_size(outer, n, &t) != 0 || maas_mul_size(t, inner, &t) != 0)
        return maas_error(MAAS_ERR_VALUE, "softmax: size overflows");
    *total = t;
    return MAAS_OK;
}

/* Per-thread scratch of `per` doubles each, for the inner > 1 paths. */
static double *alloc_scratch(int nthr, int64_t per)
{
    int64_t cnt;
    if (maas_mul_size(per, (int64_t)nthr, &cnt) != 0 ||
        maas_mul_size(cnt, 2, &cnt) != 0) {
        maas_error(MAAS_ERR_NOMEM, "softmax: scratch size overflows");
        return NULL;
    }
    return (double *)maas_alloc_floats(cnt); /* 2 floats per double */
}

static inline int thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

maas_status maas_softmax_forward(float *out, const float *x, int64_t outer,
                                 int64_t n, int64_t inner, int logsm)
{
    int64_t total = 0;
    maas_status st = softmax_args(outer, n, inner, &total);
    if (st != MAAS_OK)
        return st;
    if (total == 0)
        return MAAS_OK;
    const int par = total > MAAS_PAR_THRESHOLD && outer > 1;
    const int nthr = par ? maas_get_num_threads() : 1;

    if (inner == 1) {
#pragma omp parallel for num_threads(nthr) schedule(static) if (par)
        for (int64_t o = 0; o < outer; o++) {
            const float *xr = x + o * n;
            float *orow = out + o * n;
            float m = xr[0];
            for (int64_t k = 1; k < n; k++)
                m = xr[k] > m ? xr[k] : m;
            double acc[8] = {0};
            if (logsm) {
                float t[VB];
                for (int64_t kb = 0; kb < n; kb += VB) {
                    const int64_t len = n - kb < VB ? n - kb : VB;
                    for (int64_t k = 0; k < len; k++)
                        t[k] = xr[kb + k] - m;
                    maas_vm_exp(t, t, len);
                    maas_vm_sum8_f64(acc, t, len);
                }
                /* (x - m) - log s: x - (m + log s) would round m + log s
                 * to float at m's scale (an error of ulp(m) for big logits) */
                const float ls = (float)log(maas_vm_fold8_f64(acc));
                for (int64_t k = 0; k < n; k++)
                    orow[k] = (xr[k] - m) - ls;
            } else {
                /* orow may be xr: each element is read before it is written */
                for (int64_t k = 0; k < n; k++)
                    orow[k] = xr[k] - m;
                maas_vm_exp(orow, orow, n);
                maas_vm_sum8_f64(acc, orow, n);
                const float inv = (float)(1.0 / maas_vm_fold8_f64(acc));
                for (int64_t k = 0; k < n; k++)
                    orow[k] *= inv;
            }
        }
        return MAAS_OK;
    }

    double *scratch = alloc_scratch(nthr, 2 * inner);
    if (!scratch)
        return MAAS_ERR_NOMEM;
#pragma omp parallel for num_threads(nthr) schedule(static) if (par)
    for (int64_t o = 0; o < outer; o++) {
        double *sm = scratch + (int64_t)thread_id() * 2 * inner;
        float *mx = (float *)(sm + inner);
        const float *xo = x + o * n * inner;
        float *oo = out + o * n * inner;
        for (int64_t j = 0; j < inner; j++) {
            mx[j] = xo[j];
            sm[j] = 0.0;
        }
        for (int64_t k = 1; k < n; k++) {
            const float *xr = xo + k * inner;
            for (int64_t j = 0; j < inner; j++)
                mx[j] = xr[j] > mx[j] ? xr[j] : mx[j];
        }
        if (logsm) {
            float t[VB];
            for (int64_t k = 0; k < n; k++) {
                const float *xr = xo + k * inner;
                for (int64_t jb = 0; jb < inner; jb += VB) {
                    const int64_t len = inner - jb < VB ? inner - jb : VB;
                    for (int64_t j = 0; j < len; j++)
                        t[j] = xr[jb + j] - mx[jb + j];
                    maas_vm_exp(t, t, len);
                    for (int64_t j = 0; j < len; j++)
                        sm[jb + j] += t[j];
                }
            }
            float *ls = mx + inner; /* the scratch has room for 2 * inner floats here */
            for (int64_t j = 0; j < inner; j++)
                ls[j] = (float)log(sm[j]);
            for (int64_t k = 0; k < n; k++) {
                const float *xr = xo + k * inner;
                float *orow = oo + k * inner;
                for (int64_t j = 0; j < inner; j++)
                    orow[j] = (xr[j] - mx[j]) - ls[j];
            }
        } else {
            for (int64_t k = 0; k < n; k++) {
                const float *xr = xo + k * inner;
                float *orow = oo + k * inner;
                for (int64_t j = 0; j < inner; j++)
                    orow[j] = xr[j] - mx[j];
                maas_vm_exp(orow, orow, inner);
                for (int64_t j = 0; j < inner; j++)
                    sm[j] += orow[j];
            }
            for (int64_t j = 0; j < inner; j++)
                mx[j] = (float)(1.0 / sm[j]); /* reuse mx as 1/sum */
            for (int64_t k = 0; k < n; k++) {
                float *orow = oo + k * inner;
                for (int64_t j = 0; j < inner; j++)
                    orow[j] *= mx[j];
            }
        }
    }
    maas_free(scratch);
    return MAAS_OK;
}

maas_status maas_softmax_backward(float *restrict gx, const float *restrict gout,
                                  const float *restrict out, int64_t outer,
                                  int64_t n, int64_t inner, int logsm)
{
    int64_t total = 0;
    maas_status st = softmax_args(outer, n, inner, &total);
    if (st != MAAS_OK)
        return st;
    if (total == 0 || gx == NULL)
        return MAAS_OK;
    const int par = total > MAAS_PAR_THRESHOLD && outer > 1;
    const int nthr = par ? maas_get_num_threads() : 1;

    if (inner == 1) {
#pragma omp parallel for num_threads(nthr) schedule(static) if (par)
        for (int64_t o = 0; o < outer; o++) {
            const float *g = gout + o * n, *y = out + o * n;
            float *gr = gx + o * n;
            double s = 0.0;
            if (logsm) {
                for (int64_t k = 0; k < n; k++)
                    s += g[k];
                const float sf = (float)s;
                float t[VB];
                for (int64_t kb = 0; kb < n; kb += VB) {
                    const int64_t len = n - kb < VB ? n - kb : VB;
                    maas_vm_exp(t, y + kb, len);
                    for (int64_t k = 0; k < len; k++)
                        gr[kb + k] += g[kb + k] - t[k] * sf;
                }
            } else {
                for (int64_t k = 0; k < n; k++)
                    s += (double)g[k] * y[k];
                const float sf = (float)s;
                for (int64_t k = 0; k < n; k++)
                    gr[k] += y[k] * (g[k] - sf);
            }
        }
        return MAAS_OK;
    }

    double *scratch = alloc_scratch(nthr, 2 * inner);
    if (!scratch)
        return MAAS_ERR_NOMEM;
#pragma omp parallel for num_threads(nthr) schedule(static) if (par)
    for (int64_t o = 0; o < outer; o++) {
        double *sm = scratch + (int64_t)thread_id() * 2 * inner;
        float *sf = (float *)(sm + inner);
        const float *go = gout + o * n * inner, *yo = out + o * n * inner;
        float *gxo = gx + o * n * inner;
        for (int64_t j = 0; j < inner; j++)
            sm[j] = 0.0;
        for (int64_t k = 0; k < n; k++) {
            const float *g = go + k * inner, *y = yo + k * inner;
            if (logsm)
                for (int64_t j = 0; j < inner; j++)
                    sm[j] += g[j];
            else
                for (int64_t j = 0; j < inner; j++)
                    sm[j] += (double)g[j] * y[j];
        }
        for (int64_t j = 0; j < inner; j++)
            sf[j] = (float)sm[j];
        for (int64_t k = 0; k < n; k++) {
            const float *g = go + k * inner, *y = yo + k * inner;
            float *gr = gxo + k * inner;
            if (logsm)
                for (int64_t jb = 0; jb < inner; jb += VB) {
                    const int64_t len = inner - jb < VB ? inner - jb : VB;
                    float t[VB];
                    maas_vm_exp(t, y + jb, len);
                    for (int64_t j = 0; j < len; j++)
                        gr[jb + j] += g[jb + j] - t[j] * sf[jb + j];
                }
            else
                for (int64_t j = 0; j < inner; j++)
                    gr[j] += y[j] * (g[j] - sf[j]);
        }
    }
    maas_free(scratch);
    return MAAS_OK;
}
