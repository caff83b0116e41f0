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

/* ------------------------------------------------------------------ SGD */

ALWAYS_INLINE void sgd_loop(float *restrict p, float *restrict vel,
                            const float *restrict g, int64_t n, float lr,
                            float mu, float lrwd, const int decay,
                            const int mom, const int nesterov, int nt)
{
#pragma omp parallel for schedule(static) if (n > MAAS_PAR_THRESHOLD) num_threads(nt)
    for (int64_t i = 0; i < n; i++) {
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
    const int nt = maas_get_num_threads();
    const float lrwd = lr * wd;
    const int decay = wd != 0.0f;
    /* constant flags: each call below is specialised by inlining */
    if (decay) {
        if (!mom)
            sgd_loop(p, velocity, g, n, lr, momentum, lrwd, 1, 0, 0, nt);
        else if (nesterov)
            sgd_loop(p, velocity, g, n, lr, momentum, lrwd, 1, 1, 1, nt);
        else
            sgd_loop(p, velocity, g, n, lr, momentum, lrwd, 1, 1, 0, nt);
    } else {
        if (!mom)
            sgd_loop(p, velocity, g, n, lr, momentum, lrwd, 0, 0, 0, nt);
        else if (nesterov)
            sgd_loop(p, velocity, g, n, lr, momentum, lrwd, 0, 1, 1, nt);
        else
            sgd_loop(p, velocity, g, n, lr, momentum, lrwd, 0, 1, 0, nt);
    }
    return MAAS_OK;
}

/* ----------------------------------------------------------------- Adam */

ALWAYS_INLINE void adam_loop(float *restrict p, float *restrict m,
                             float *restrict v, float *restrict vhat,
                             const float *restrict g, int64_t n, float alpha,
                             float b1, float b2, float eps, float lrwd,
                             const int decay, const int ams, int nt)
{
    const float c1 = 1.0f - b1, c2 = 1.0f - b2;
#pragma omp parallel for schedule(static) if (n > MAAS_PAR_THRESHOLD) num_threads(nt)
    for (int64_t i = 0; i < n; i++) {
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
    const double b1p = pow((double)beta_1, (double)step);
    const double b2p = pow((double)beta_2, (double)step);
    const float alpha = (float)((double)lr * sqrt(1.0 - b2p) / (1.0 - b1p));
    const float lrwd = lr * wd;
    const int nt = maas_get_num_threads();
    if (wd != 0.0f) {
        if (vhat)
            adam_loop(p, m, v, vhat, g, n, alpha, beta_1, beta_2, eps, lrwd, 1, 1, nt);
        else
            adam_loop(p, m, v, vhat, g, n, alpha, beta_1, beta_2, eps, lrwd, 1, 0, nt);
    } else {
        if (vhat)
            adam_loop(p, m, v, vhat, g, n, alpha, beta_1, beta_2, eps, lrwd, 0, 1, nt);
        else
            adam_loop(p, m, v, vhat, g, n, alpha, beta_1, beta_2, eps, lrwd, 0, 0, nt);
    }
    return MAAS_OK;
}

/* -------------------------------------------------------------- RMSprop */

ALWAYS_INLINE void rmsprop_loop(float *restrict p, float *restrict v,
                                float *restrict avg, float *restrict mom,
                                const float *restrict g, int64_t n, float lr,
                                float rho, float mu, float eps, float lrwd,
                                const int decay, const int centered,
                                const int use_mom, int nt)
{
    const float c = 1.0f - rho;
#pragma omp parallel for schedule(static) if (n > MAAS_PAR_THRESHOLD) num_threads(nt)
    for (int64_t i = 0; i < n; i++) {
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

#define RMS_CALL(dec, cen, um)                                                 \
    rmsprop_loop(p, v, avg, mom, g, n, lr, rho, momentum, eps, lrwd, dec, cen, \
                 um, nt)

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
    const float lrwd = lr * wd;
    const int nt = maas_get_num_threads();
    const int decay = wd != 0.0f, cen = centered != 0;
    /* eight specialisations through constant flags */
    if (decay) {
        if (cen) {
            if (use_mom) RMS_CALL(1, 1, 1); else RMS_CALL(1, 1, 0);
        } else {
            if (use_mom) RMS_CALL(1, 0, 1); else RMS_CALL(1, 0, 0);
        }
    } else {
        if (cen) {
            if (use_mom) RMS_CALL(0, 1, 1); else RMS_CALL(0, 1, 0);
        } else {
            if (use_mom) RMS_CALL(0, 0, 1); else RMS_CALL(0, 0, 0);
        }
    }
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
