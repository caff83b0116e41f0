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
 *   adagrad  acc += g^2; p -= lr g / sqrt(acc + eps)  (eps inside the root).
 *   adadelta acc_g = rho acc_g + (1-rho) g^2;
 *            d = -sqrt(acc_d + eps) / sqrt(acc_g + eps) g;
 *            acc_d = rho acc_d + (1-rho) d^2; p += lr d.
 *   adamax   m = b1 m + (1-b1) g; u = max(b2 u, |g|);
 *            p -= lr / (1-b1^t) m / (u + eps).
 *   nadam    Keras's (Dozat's) schedule u_s = b1 (1 - 0.5 0.96^s), with
 *            u_product = prod_{s<=t} u_s kept by the caller:
 *            m, v as Adam; p -= lr (cm m + cg g) / (sqrt(v / (1-b2^t)) + eps),
 *            cm = u_{t+1} / (1 - u_product u_{t+1}), cg = (1-u_t) / (1-u_product).
 *   lion     p -= lr sign(b1 m + (1-b1) g); m = b2 m + (1-b2) g.
 *   ftrl     Keras's FTRL-proximal: with k = -lr_power,
 *            lin += g + 2 l2s p - (acc'^k - acc^k) / lr p, acc' = acc + g^2;
 *            p = (clip(lin, -l1, l1) - lin) / (acc'^k / lr + 2 (l2 + beta / (2 lr))).
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
    float c, d, e, f; /* more per-optimizer scalars (Nadam, Ftrl) */
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

/* -------------------------------------------------------------- Adagrad */

ALWAYS_INLINE void adagrad_body(const upd_args *A, int64_t lo, int64_t hi, const int decay)
{
    float *restrict p = A->p, *restrict acc = A->s0;
    const float *restrict g = A->g;
    const float lr = A->lr, eps = A->eps, lrwd = A->lrwd;
#pragma omp simd
    for (int64_t i = lo; i < hi; i++) {
        float pv = p[i];
        if (decay)
            pv -= pv * lrwd;
        const float gi = g[i];
        const float ai = acc[i] + gi * gi;
        acc[i] = ai;
        p[i] = pv - lr * gi / sqrtf(ai + eps);
    }
}

static void adagrad_0(const upd_args *A, int64_t lo, int64_t hi) { adagrad_body(A, lo, hi, 0); }
static void adagrad_1(const upd_args *A, int64_t lo, int64_t hi) { adagrad_body(A, lo, hi, 1); }

maas_status maas_adagrad_update(float *p, float *acc, const float *g, int64_t n, float lr,
                                float eps, float wd)
{
    maas_status st = check_common("adagrad_update", p, g, n, lr, wd);
    if (st != MAAS_OK)
        return st;
    if (!isfinite(eps))
        return maas_error(MAAS_ERR_VALUE, "adagrad_update: epsilon must be finite, got %g",
                          (double)eps);
    if (n > 0 && !acc)
        return maas_error(MAAS_ERR_VALUE, "adagrad_update: NULL accumulator buffer");
    if (n == 0)
        return MAAS_OK;
    const upd_args A = {.p = p, .s0 = acc, .g = g, .lr = lr, .eps = eps, .lrwd = lr * wd};
    run_chunks(wd != 0.0f ? adagrad_1 : adagrad_0, &A, n);
    return MAAS_OK;
}

/* ------------------------------------------------------------- Adadelta */

ALWAYS_INLINE void adadelta_body(const upd_args *A, int64_t lo, int64_t hi, const int decay)
{
    float *restrict p = A->p, *restrict ag = A->s0, *restrict ad = A->s1;
    const float *restrict g = A->g;
    const float lr = A->lr, rho = A->a, c = 1.0f - A->a, eps = A->eps, lrwd = A->lrwd;
#pragma omp simd
    for (int64_t i = lo; i < hi; i++) {
        float pv = p[i];
        if (decay)
            pv -= pv * lrwd;
        const float gi = g[i];
        const float agi = rho * ag[i] + c * gi * gi;
        ag[i] = agi;
        const float adi = ad[i];
        const float d = -sqrtf(adi + eps) / sqrtf(agi + eps) * gi;
        ad[i] = rho * adi + c * d * d;
        p[i] = pv + lr * d;
    }
}

static void adadelta_0(const upd_args *A, int64_t lo, int64_t hi) { adadelta_body(A, lo, hi, 0); }
static void adadelta_1(const upd_args *A, int64_t lo, int64_t hi) { adadelta_body(A, lo, hi, 1); }

maas_status maas_adadelta_update(float *p, float *acc_grad, float *acc_delta, const float *g,
                                 int64_t n, float lr, float rho, float eps, float wd)
{
    maas_status st = check_common("adadelta_update", p, g, n, lr, wd);
    if (st != MAAS_OK)
        return st;
    if (!isfinite(rho) || !isfinite(eps))
        return maas_error(MAAS_ERR_VALUE, "adadelta_update: rho and epsilon must be finite");
    if (n > 0 && (!acc_grad || !acc_delta))
        return maas_error(MAAS_ERR_VALUE, "adadelta_update: NULL accumulator buffer");
    if (n == 0)
        return MAAS_OK;
    const upd_args A = {.p = p, .s0 = acc_grad, .s1 = acc_delta, .g = g, .lr = lr, .a = rho,
                        .eps = eps, .lrwd = lr * wd};
    run_chunks(wd != 0.0f ? adadelta_1 : adadelta_0, &A, n);
    return MAAS_OK;
}

/* --------------------------------------------------------------- Adamax */

ALWAYS_INLINE void adamax_body(const upd_args *A, int64_t lo, int64_t hi, const int decay)
{
    float *restrict p = A->p, *restrict m = A->s0, *restrict u = A->s1;
    const float *restrict g = A->g;
    const float b1 = A->a, b2 = A->b, c1 = 1.0f - A->a;
    const float eps = A->eps, alpha = A->alpha, lrwd = A->lrwd;
#pragma omp simd
    for (int64_t i = lo; i < hi; i++) {
        float pv = p[i];
        if (decay)
            pv -= pv * lrwd;
        const float gi = g[i];
        const float mi = b1 * m[i] + c1 * gi;
        const float ub = b2 * u[i], ag = fabsf(gi);
        const float ui = ub > ag ? ub : ag;
        m[i] = mi;
        u[i] = ui;
        p[i] = pv - alpha * mi / (ui + eps);
    }
}

static void adamax_0(const upd_args *A, int64_t lo, int64_t hi) { adamax_body(A, lo, hi, 0); }
static void adamax_1(const upd_args *A, int64_t lo, int64_t hi) { adamax_body(A, lo, hi, 1); }

maas_status maas_adamax_update(float *p, float *m, float *u, const float *g, int64_t n,
                               float lr, float beta_1, float beta_2, float eps, int64_t step,
                               float wd)
{
    maas_status st = check_common("adamax_update", p, g, n, lr, wd);
    if (st != MAAS_OK)
        return st;
    if (step < 1)
        return maas_error(MAAS_ERR_VALUE, "adamax_update: step counts from 1, got %lld",
                          (long long)step);
    if (!isfinite(beta_1) || !isfinite(beta_2) || !isfinite(eps))
        return maas_error(MAAS_ERR_VALUE,
                          "adamax_update: beta_1, beta_2 and epsilon must be finite");
    if (beta_1 == 1.0f)
        return maas_error(MAAS_ERR_VALUE, "adamax_update: beta_1 must be below 1, got 1");
    if (n > 0 && (!m || !u))
        return maas_error(MAAS_ERR_VALUE, "adamax_update: NULL moment or norm buffer");
    if (n == 0)
        return MAAS_OK;
    const double b1p = pow((double)beta_1, (double)step);
    const upd_args A = {.p = p, .s0 = m, .s1 = u, .g = g, .lr = lr, .a = beta_1, .b = beta_2,
                        .eps = eps, .lrwd = lr * wd,
                        .alpha = (float)((double)lr / (1.0 - b1p))};
    run_chunks(wd != 0.0f ? adamax_1 : adamax_0, &A, n);
    return MAAS_OK;
}

/* ---------------------------------------------------------------- Nadam */

ALWAYS_INLINE void nadam_body(const upd_args *A, int64_t lo, int64_t hi, const int decay)
{
    float *restrict p = A->p, *restrict m = A->s0, *restrict v = A->s1;
    const float *restrict g = A->g;
    const float b1 = A->a, b2 = A->b, c1 = 1.0f - A->a, c2 = 1.0f - A->b;
    const float eps = A->eps, lrwd = A->lrwd;
    const float am = A->c, ag = A->d, inv_bc2 = A->e; /* lr cm, lr cg, 1 / (1 - b2^t) */
#pragma omp simd
    for (int64_t i = lo; i < hi; i++) {
        float pv = p[i];
        if (decay)
            pv -= pv * lrwd;
        const float gi = g[i];
        const float mi = b1 * m[i] + c1 * gi;
        const float vi = b2 * v[i] + c2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = pv - (am * mi + ag * gi) / (sqrtf(vi * inv_bc2) + eps);
    }
}

static void nadam_0(const upd_args *A, int64_t lo, int64_t hi) { nadam_body(A, lo, hi, 0); }
static void nadam_1(const upd_args *A, int64_t lo, int64_t hi) { nadam_body(A, lo, hi, 1); }

maas_status maas_nadam_update(float *p, float *m, float *v, const float *g, int64_t n,
                              float lr, float beta_1, float beta_2, float eps, int64_t step,
                              double u_product, float wd)
{
    maas_status st = check_common("nadam_update", p, g, n, lr, wd);
    if (st != MAAS_OK)
        return st;
    if (step < 1)
        return maas_error(MAAS_ERR_VALUE, "nadam_update: step counts from 1, got %lld",
                          (long long)step);
    if (!isfinite(beta_1) || !isfinite(beta_2) || !isfinite(eps))
        return maas_error(MAAS_ERR_VALUE,
                          "nadam_update: beta_1, beta_2 and epsilon must be finite");
    if (!isfinite(u_product) || u_product == 1.0)
        return maas_error(MAAS_ERR_VALUE,
                          "nadam_update: the momentum schedule product must be finite "
                          "and not 1, got %g", u_product);
    if (beta_2 == 1.0f)
        return maas_error(MAAS_ERR_VALUE, "nadam_update: beta_2 must be below 1, got 1");
    if (n > 0 && (!m || !v))
        return maas_error(MAAS_ERR_VALUE, "nadam_update: NULL moment buffer");
    if (n == 0)
        return MAAS_OK;
    const double b1 = beta_1, t = (double)step;
    const double u_t = b1 * (1.0 - 0.5 * pow(0.96, t));
    const double u_t1 = b1 * (1.0 - 0.5 * pow(0.96, t + 1.0));
    const double cm = u_t1 / (1.0 - u_product * u_t1);
    const double cg = (1.0 - u_t) / (1.0 - u_product);
    const upd_args A = {.p = p, .s0 = m, .s1 = v, .g = g, .lr = lr, .a = beta_1, .b = beta_2,
                        .eps = eps, .lrwd = lr * wd, .c = (float)(lr * cm),
                        .d = (float)(lr * cg),
                        .e = (float)(1.0 / (1.0 - pow((double)beta_2, t)))};
    run_chunks(wd != 0.0f ? nadam_1 : nadam_0, &A, n);
    return MAAS_OK;
}

/* ----------------------------------------------------------------- Lion */

ALWAYS_INLINE void lion_body(const upd_args *A, int64_t lo, int64_t hi, const int decay)
{
    float *restrict p = A->p, *restrict m = A->s0;
    const float *restrict g = A->g;
    const float lr = A->lr, b1 = A->a, c1 = 1.0f - A->a, b2 = A->b, c2 = 1.0f - A->b;
    const float lrwd = A->lrwd;
#pragma omp simd
    for (int64_t i = lo; i < hi; i++) {
        float pv = p[i];
        if (decay)
            pv -= pv * lrwd;
        const float gi = g[i], mi = m[i];
        const float c = b1 * mi + c1 * gi;
        const float sgn = (float)(c > 0.0f) - (float)(c < 0.0f);
        p[i] = pv - lr * sgn;
        m[i] = b2 * mi + c2 * gi;
    }
}

static void lion_0(const upd_args *A, int64_t lo, int64_t hi) { lion_body(A, lo, hi, 0); }
static void lion_1(const upd_args *A, int64_t lo, int64_t hi) { lion_body(A, lo, hi, 1); }

maas_status maas_lion_update(float *p, float *m, const float *g, int64_t n, float lr,
                             float beta_1, float beta_2, float wd)
{
    maas_status st = check_common("lion_update", p, g, n, lr, wd);
    if (st != MAAS_OK)
        return st;
    if (!isfinite(beta_1) || !isfinite(beta_2))
        return maas_error(MAAS_ERR_VALUE, "lion_update: beta_1 and beta_2 must be finite");
    if (n > 0 && !m)
        return maas_error(MAAS_ERR_VALUE, "lion_update: NULL momentum buffer");
    if (n == 0)
        return MAAS_OK;
    const upd_args A = {.p = p, .s0 = m, .g = g, .lr = lr, .a = beta_1, .b = beta_2,
                        .lrwd = lr * wd};
    run_chunks(wd != 0.0f ? lion_1 : lion_0, &A, n);
    return MAAS_OK;
}

/* ----------------------------------------------------------------- FTRL */

/* x^k for x >= 0 with k = -lr_power >= 0: pw 0 is k = 0.5 (sqrt), 1 is
 * k = 0 (1), 2 is any other k (powf). */
ALWAYS_INLINE float ftrl_pow(float x, float k, const int pw)
{
    if (pw == 0)
        return sqrtf(x);
    if (pw == 1)
        return 1.0f;
    return powf(x, k);
}

ALWAYS_INLINE void ftrl_body(const upd_args *A, int64_t lo, int64_t hi, const int decay,
                             const int pw)
{
    float *restrict p = A->p, *restrict acc = A->s0, *restrict lin = A->s1;
    const float *restrict g = A->g;
    const float inv_lr = A->alpha, k = A->a, l1 = A->b, two_l2 = A->c, two_l2s = A->d;
    const float lrwd = A->lrwd;
#pragma omp simd
    for (int64_t i = lo; i < hi; i++) {
        float pv = p[i];
        if (decay)
            pv -= pv * lrwd;
        const float gi = g[i], ai = acc[i];
        const float na = ai + gi * gi;
        const float pna = ftrl_pow(na, k, pw);
        const float li = lin[i] + (gi + two_l2s * pv) - (pna - ftrl_pow(ai, k, pw)) * inv_lr * pv;
        lin[i] = li;
        const float quad = pna * inv_lr + two_l2;
        const float lc = li < -l1 ? -l1 : (li > l1 ? l1 : li);
        p[i] = (lc - li) / quad;
        acc[i] = na;
    }
}

#define FTRL_VARIANT(name, dec, pw)                                            \
    static void name(const upd_args *A, int64_t lo, int64_t hi)                \
    {                                                                          \
        ftrl_body(A, lo, hi, dec, pw);                                         \
    }
FTRL_VARIANT(ftrl_00, 0, 0)
FTRL_VARIANT(ftrl_01, 0, 1)
FTRL_VARIANT(ftrl_02, 0, 2)
FTRL_VARIANT(ftrl_10, 1, 0)
FTRL_VARIANT(ftrl_11, 1, 1)
FTRL_VARIANT(ftrl_12, 1, 2)

maas_status maas_ftrl_update(float *p, float *acc, float *linear, const float *g, int64_t n,
                             float lr, float lr_power, float l1, float l2, float l2_shrinkage,
                             float beta, float wd)
{
    maas_status st = check_common("ftrl_update", p, g, n, lr, wd);
    if (st != MAAS_OK)
        return st;
    if (!(lr > 0.0f))
        return maas_error(MAAS_ERR_VALUE,
                          "ftrl_update: the learning rate must be positive (FTRL divides "
                          "by it), got %g", (double)lr);
    if (!(lr_power <= 0.0f) || !isfinite(lr_power))
        return maas_error(MAAS_ERR_VALUE,
                          "ftrl_update: learning_rate_power must be <= 0, got %g",
                          (double)lr_power);
    if (!(l1 >= 0.0f) || !(l2 >= 0.0f) || !(l2_shrinkage >= 0.0f) || !isfinite(l1) ||
        !isfinite(l2) || !isfinite(l2_shrinkage) || !isfinite(beta))
        return maas_error(MAAS_ERR_VALUE,
                          "ftrl_update: l1, l2 and l2 shrinkage strengths must be finite "
                          "and >= 0, and beta finite");
    if (n > 0 && (!acc || !linear))
        return maas_error(MAAS_ERR_VALUE, "ftrl_update: NULL accumulator or linear buffer");
    if (n == 0)
        return MAAS_OK;
    const double l2_total = (double)l2 + (double)beta / (2.0 * (double)lr);
    const upd_args A = {.p = p, .s0 = acc, .s1 = linear, .g = g, .lr = lr,
                        .a = -lr_power, .b = l1, .c = (float)(2.0 * l2_total),
                        .d = 2.0f * l2_shrinkage, .lrwd = lr * wd,
                        .alpha = (float)(1.0 / (double)lr)};
    const int pw = lr_power == -0.5f ? 0 : lr_power == 0.0f ? 1 : 2;
    static const chunk_fn table[2][3] = {{ftrl_00, ftrl_01, ftrl_02},
                                         {ftrl_10, ftrl_11, ftrl_12}};
    run_chunks(table[wd != 0.0f][pw], &A, n);
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
