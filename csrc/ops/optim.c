/* ops/optim.c -- fused, in-place optimizer updates with Keras 3's formulas.
 *
 * Every update OVERWRITES p and its slot buffers in place, in one pass over
 * the n elements (nothing accumulates into a separate output). Decoupled
 * weight decay, when wd != 0, is applied first: p -= lr * wd * p.
 *
 *   sgd      v = momentum v - lr g; nesterov: p += momentum v - lr g,
 *            else p += v; momentum == 0: p -= lr g (velocity may be NULL).
 *   adam     m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 *            amsgrad (vhat != NULL): vhat = max(vhat, v), used for v;
 *            p -= alpha m / (sqrt(v) + eps), alpha = lr sqrt(1-b2^t)/(1-b1^t)
 *            (computed once per call, in double).
 *   rmsprop  v = rho v + (1-rho) g^2; centered: a = rho a + (1-rho) g,
 *            d = v - a^2 + eps, else d = v + eps; inc = lr g / sqrt(d);
 *            momentum > 0: mom = momentum mom + inc, p -= mom; else p -= inc.
 *   sum_squares  sum of x^2 in double over fixed blocks of 4096 elements,
 *            added in block order: independent of the thread count.
 *   scale_inplace x *= s; clip_inplace x = clip(x, lo, hi) (NaN stays NaN).
 * Elementwise loops use OpenMP above MAAS_PAR_THRESHOLD elements; each
 * element's result is independent of the thread count. */
#include "maas.h"

#include <math.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__GNUC__)
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE static inline
#endif

static maas_status check_common(const char *fn, const float *p, const float *g,
                                int64_t n, float lr, float wd)
{
    if (n < 0)
        return maas_error(MAAS_ERR_VALUE, "%s: negative size %lld", fn, (long long)n);
    if (!isfinite(lr))
        return maas_error(MAAS_ERR_VALUE, "%s: learning rate must be finite, got %g",
                          fn, (double)lr);
    if (!isfinite(wd))
        return maas_error(MAAS_ERR_VALUE, "%s: weight decay must be finite, got %g",
                          fn, (double)wd);
    if (n > 0 && (!p || !g))
        return maas_error(MAAS_ERR_VALUE, "%s: NULL parameter or gradient buffer", fn);
    return MAAS_OK;
}

/* ------------------------------------------------------ chunked loops */

/* The arguments of one update; slots s0..s2 are per-optimizer. */
typedef struct {
    float *p, *s0, *s1, *s2;
    const float *g;
    float lr, a, b, eps, lrwd, alpha;
} upd_args;

typedef void (*chunk_fn)(const upd_args *args, int64_t lo, int64_t hi);

/* Runs fn over [0, n): serially at or below MAAS_PAR_THRESHOLD, else split
 * into one contiguous (16-aligned) chunk per thread. The update of each
 * element does not depend on the split. The chunk functions are plain
 * functions with constant flags and an `omp simd` loop, so the compiler
 * specialises and vectorises each variant. */
static void run_chunks(chunk_fn fn, const upd_args *args, int64_t n)
{
    const int nt = maas_get_num_threads();
    if (n <= MAAS_PAR_THRESHOLD || nt <= 1) {
        fn(args, 0, n);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
    {
        const int T = omp_get_num_threads(), t = omp_get_thread_num();
        const int64_t per = ((n + T - 1) / T + 15) & ~(int64_t)15;
        const int64_t lo = per * t < n ? per * t : n;
        const int64_t hi = lo + per < n ? lo + per : n;
        if (lo < hi)
            fn(args, lo, hi);
    }
#else
    fn(args, 0, n);
#endif
}

/* ------------------------------------------------------------------ SGD */

ALWAYS_INLINE void sgd_body(const upd_args *A, int64_t lo, int64_t hi,
                            const int decay, const int mom, const int nesterov)
{
    float *restrict p = A->p, *restrict vel = A->s0;
    const float *restrict g = A->g;
    const float lr = A->lr, mu = A->a, lrwd = A->lrwd;
#pragma omp simd
    for (int64_t i = lo; i < hi; i++) {
        float pv = p[i];
        if (decay)
            pv -= pv * lrwd;
        const float gi = g[i];
        if (mom) {
            const float v = mu * vel[i] - lr * gi;
            vel[i] = v;
            pv += nesterov ? mu * v - lr * gi : v;
        } else {
            pv -= lr * gi;
        }
        p[i] = pv;
    }
}

#define SGD_VARIANT(name, dec, mom, nest)                                     \
    static void name(const upd_args *A, int64_t lo, int64_t hi)                \
    {                                                                          \
        sgd_body(A, lo, hi, dec, mom, nest);                                   \
    }
SGD_VARIANT(sgd_000, 0, 0, 0)
SGD_VARIANT(sgd_010, 0, 1, 0)
SGD_VARIANT(sgd_011, 0, 1, 1)
SGD_VARIANT(sgd_100, 1, 0, 0)
SGD_VARIANT(sgd_110, 1, 1, 0)
SGD_VARIANT(sgd_111, 1, 1, 1)

maas_status maas_sgd_update(float *p, float *velocity, const float *g, int64_t n,
                            float lr, float momentum, int nesterov, float wd)
{
    maas_status st = check_common("sgd_update", p, g, n, lr, wd);
    if (st != MAAS_OK)
        return st;
    if (!isfinite(momentum))
        return maas_error(MAAS_ERR_VALUE, "sgd_update: momentum must be finite, got %g",
                          (double)momentum);
    const int mom = momentum != 0.0f;
    if (mom && n > 0 && !velocity)
        return maas_error(MAAS_ERR_VALUE,
                          "sgd_update: momentum %g needs a velocity buffer",
                          (double)momentum);
    if (n == 0)
        return MAAS_OK;
    const upd_args A = {.p = p, .s0 = velocity, .g = g, .lr = lr, .a = momentum,
                        .lrwd = lr * wd};
    static const chunk_fn table[2][3] = {{sgd_000, sgd_010, sgd_011},
                                         {sgd_100, sgd_110, sgd_111}};
    run_chunks(table[wd != 0.0f][mom ? 1 + (nesterov != 0) : 0], &A, n);
    return MAAS_OK;
}

/* ----------------------------------------------------------------- Adam */

ALWAYS_INLINE void adam_body(const upd_args *A, int64_t lo, int64_t hi,
                             const int decay, const int ams)
{
    float *restrict p = A->p, *restrict m = A->s0, *restrict v = A->s1,
                    *restrict vhat = A->s2;
    const float *restrict g = A->g;
    const float b1 = A->a, b2 = A->b, c1 = 1.0f - A->a, c2 = 1.0f - A->b;
    const float eps = A->eps, alpha = A->alpha, lrwd = A->lrwd;
#pragma omp simd
    for (int64_t i = lo; i < hi; i++) {
        float pv = p[i];
        if (decay)
            pv -= pv * lrwd;
        const float gi = g[i];
        const float mi = b1 * m[i] + c1 * gi;
        float vi = b2 * v[i] + c2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        if (ams) {
            const float h = vhat[i];
            vi = h > vi ? h : vi;
            vhat[i] = vi;
        }
        p[i] = pv - alpha * mi / (sqrtf(vi) + eps);
    }
}

#define ADAM_VARIANT(name, dec, ams)                                           \
    static void name(const upd_args *A, int64_t lo, int64_t hi)                \
    {                                                                          \
        adam_body(A, lo, hi, dec, ams);                                        \
    }
ADAM_VARIANT(adam_00, 0, 0)
ADAM_VARIANT(adam_01, 0, 1)
ADAM_VARIANT(adam_10, 1, 0)
ADAM_VARIANT(adam_11, 1, 1)

maas_status maas_adam_update(float *p, float *m, float *v, float *vhat,
                             const float *g, int64_t n, float lr, float beta_1,
                             float beta_2, float eps, int64_t step, float wd)
{
    maas_status st = check_common("adam_update", p, g, n, lr, wd);
    if (st != MAAS_OK)
        return st;
    if (step < 1)
        return maas_error(MAAS_ERR_VALUE, "adam_update: step counts from 1, got %lld",
                          (long long)step);
    if (!isfinite(beta_1) || !isfinite(beta_2) || !isfinite(eps))
        return maas_error(MAAS_ERR_VALUE,
                          "adam_update: beta_1, beta_2 and epsilon must be finite");
    if (n > 0 && (!m || !v))
        return maas_error(MAAS_ERR_VALUE, "adam_update: NULL moment buffer");
    if (n == 0)
        return MAAS_OK;
    /* bias corrections, once per call */
    const double b1p = pow((double)beta_1, (double)step);
    const double b2p = pow((double)beta_2, (double)step);
    const upd_args A = {.p = p, .s0 = m, .s1 = v, .s2 = vhat, .g = g, .lr = lr,
                        .a = beta_1, .b = beta_2, .eps = eps, .lrwd = lr * wd,
                        .alpha = (float)((double)lr * sqrt(1.0 - b2p) / (1.0 - b1p))};
    static const chunk_fn table[2][2] = {{adam_00, adam_01}, {adam_10, adam_11}};
    run_chunks(table[wd != 0.0f][vhat != NULL], &A, n);
    return MAAS_OK;
}

/* -------------------------------------------------------------- RMSprop */

ALWAYS_INLINE void rmsprop_body(const upd_args *A, int64_t lo, int64_t hi,
                                const int decay, const int centered,
                                const int use_mom)
{
    float *restrict p = A->p, *restrict v = A->s0, *restrict avg = A->s1,
                    *restrict mom = A->s2;
    const float *restrict g = A->g;
    const float lr = A->lr, rho = A->a, c = 1.0f - A->a, mu = A->b;
    const float eps = A->eps, lrwd = A->lrwd;
#pragma omp simd
    for (int64_t i = lo; i < hi; i++) {
        float pv = p[i];
        if (decay)
            pv -= pv * lrwd;
        const float gi = g[i];
        const float vi = rho * v[i] + c * gi * gi;
        v[i] = vi;
        float d;
        if (centered) {
            const float a = rho * avg[i] + c * gi;
            avg[i] = a;
            d = vi - a * a + eps;
        } else {
            d = vi + eps;
        }
        const float inc = lr * gi / sqrtf(d);
        if (use_mom) {
            const float mo = mu * mom[i] + inc;
            mom[i] = mo;
            pv -= mo;
        } else {
            pv -= inc;
        }
        p[i] = pv;
    }
}

#define RMS_VARIANT(name, dec, cen, um)                                        \
    static void name(const upd_args *A, int64_t lo, int64_t hi)                \
    {                                                                          \
        rmsprop_body(A, lo, hi, dec, cen, um);                                 \
    }
RMS_VARIANT(rms_000, 0, 0, 0)
RMS_VARIANT(rms_001, 0, 0, 1)
RMS_VARIANT(rms_010, 0, 1, 0)
RMS_VARIANT(rms_011, 0, 1, 1)
RMS_VARIANT(rms_100, 1, 0, 0)
RMS_VARIANT(rms_101, 1, 0, 1)
RMS_VARIANT(rms_110, 1, 1, 0)
RMS_VARIANT(rms_111, 1, 1, 1)

maas_status maas_rmsprop_update(float *p, float *v, float *avg, float *mom,
                                const float *g, int64_t n, float lr, float rho,
                                float momentum, float eps, int centered, float wd)
{
    maas_status st = check_common("rmsprop_update", p, g, n, lr, wd);
    if (st != MAAS_OK)
        return st;
    if (!isfinite(rho) || !isfinite(momentum) || !isfinite(eps))
        return maas_error(MAAS_ERR_VALUE,
                          "rmsprop_update: rho, momentum and epsilon must be finite");
    const int use_mom = momentum > 0.0f;
    if (n > 0 && (!v || (centered && !avg) || (use_mom && !mom)))
        return maas_error(MAAS_ERR_VALUE,
                          "rmsprop_update: NULL %s buffer",
                          !v ? "velocity" : (centered && !avg) ? "average gradient"
                                                               : "momentum");
    if (n == 0)
        return MAAS_OK;
    const upd_args A = {.p = p, .s0 = v, .s1 = avg, .s2 = mom, .g = g, .lr = lr,
                        .a = rho, .b = momentum, .eps = eps, .lrwd = lr * wd};
    static const chunk_fn table[2][2][2] = {
        {{rms_000, rms_001}, {rms_010, rms_011}},
        {{rms_100, rms_101}, {rms_110, rms_111}}};
    run_chunks(table[wd != 0.0f][centered != 0][use_mom], &A, n);
    return MAAS_OK;
}

/* ------------------------------------------------------------- helpers */

#define SS_BLOCK 4096
#define SS_ROUND 1024 /* blocks per round: a fixed-size stack array */

/* The sum of squares of one block, with 8 lanes in a fixed pattern. */
static double block_sum_squares(const float *restrict x, int64_t len)
{
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= len; i += 8)
        for (int k = 0; k < 8; k++)
            lane[k] += (double)x[i + k] * (double)x[i + k];
    for (; i < len; i++)
        lane[0] += (double)x[i] * (double)x[i];
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) +
           ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

double maas_sum_squares(const float *x, int64_t n)
{
    if (!x || n <= 0)
        return 0.0;
    const int64_t nblocks = (n + SS_BLOCK - 1) / SS_BLOCK;
    const int nt = maas_get_num_threads();
    double part[SS_ROUND];
    double total = 0.0;
    for (int64_t b0 = 0; b0 < nblocks; b0 += SS_ROUND) {
        const int64_t nb = nblocks - b0 < SS_ROUND ? nblocks - b0 : SS_ROUND;
#pragma omp parallel for schedule(static) if (n > MAAS_PAR_THRESHOLD) num_threads(nt)
        for (int64_t b = 0; b < nb; b++) {
            const int64_t start = (b0 + b) * SS_BLOCK;
            const int64_t len = n - start < SS_BLOCK ? n - start : SS_BLOCK;
            part[b] = block_sum_squares(x + start, len);
        }
        for (int64_t b = 0; b < nb; b++)
            total += part[b];
    }
    return total;
}

maas_status maas_scale_inplace(float *x, int64_t n, float s)
{
    if (n < 0)
        return maas_error(MAAS_ERR_VALUE, "scale_inplace: negative size %lld",
                          (long long)n);
    if (n == 0)
        return MAAS_OK;
    if (!x)
        return maas_error(MAAS_ERR_VALUE, "scale_inplace: NULL buffer");
    float *restrict xx = x;
    const int nt = maas_get_num_threads();
#pragma omp parallel for schedule(static) if (n > MAAS_PAR_THRESHOLD) num_threads(nt)
    for (int64_t i = 0; i < n; i++)
        xx[i] *= s;
    return MAAS_OK;
}

maas_status maas_clip_inplace(float *x, int64_t n, float lo, float hi)
{
    if (n < 0)
        return maas_error(MAAS_ERR_VALUE, "clip_inplace: negative size %lld",
                          (long long)n);
    if (!(lo <= hi))
        return maas_error(MAAS_ERR_VALUE, "clip_inplace: need lo <= hi, got [%g, %g]",
                          (double)lo, (double)hi);
    if (n == 0)
        return MAAS_OK;
    if (!x)
        return maas_error(MAAS_ERR_VALUE, "clip_inplace: NULL buffer");
    float *restrict xx = x;
    const int nt = maas_get_num_threads();
#pragma omp parallel for schedule(static) if (n > MAAS_PAR_THRESHOLD) num_threads(nt)
    for (int64_t i = 0; i < n; i++) {
        const float t = xx[i];
        xx[i] = t < lo ? lo : (t > hi ? hi : t);
    }
    return MAAS_OK;
}
