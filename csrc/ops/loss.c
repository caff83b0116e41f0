/* ops/loss.c -- per-sample losses (Keras 3 definitions), reducing the last
 * axis C of y_pred (N, C).
 *
 * maas_loss_forward  OVERWRITES out (N).
 * maas_loss_backward ACCUMULATES gpred (N, C) += gout[n] * dloss[n]/dy_pred;
 *                    gpred == NULL means "not needed". No gradient to y_true.
 *
 *   mse    mean_c (y-p)^2                      grad 2(p-y)/C
 *   mae    mean_c |y-p|                        grad sign(p-y)/C (0 at y == p)
 *   bce    p clipped to [eps, 1-eps]; mean_c -(y log p + (1-y) log(1-p));
 *          the gradient is zero where the clip was active.
 *          logits: mean_c max(x,0) - x y + log1p(exp(-|x|)), grad
 *          (sigmoid(x)-y)/C.
 *   cce    q = p / sum_c p, clipped; -sum_c y log q; the gradient flows
 *          through the normalisation (zero through clipped entries).
 *          logits: sum(y) logsumexp(x) - sum y x, grad sum(y) softmax(x) - y.
 *   scce   y_true (N) holds integral class indices in [0, C) (checked before
 *          anything is written: MAAS_ERR_VALUE otherwise). probs: -log q[l]
 *          (normalised and clipped as cce); logits: logsumexp(x) - x[l].
 *   hinge  if every y in the batch is 0 or 1, y -> 2y - 1 (as Keras);
 *          mean_c max(1 - y p, 0), grad -y/C where 1 - y p > 0.
 * eps = 1e-7. Mean losses over C == 0 give NaN, sum losses give 0.
 * Rows are independent, so the OpenMP split over rows (above
 * MAAS_PAR_THRESHOLD elements) gives results independent of thread count.
 * Accumulation within a row is in double, in a fixed order. The exp / log
 * / log1p / sigmoid of a row run through vecmath.h (AVX2 or libm, chosen
 * at run time) on blocks of MAAS_VM_BLOCK held on the stack. */
#include "maas.h"
#include "vecmath.h"

#include <math.h>

#define VB MAAS_VM_BLOCK
#define BLEN(C, c0) ((C) - (c0) < VB ? (C) - (c0) : VB)

#define LOSS_EPS 1e-7f
#define LOSS_HI (1.0f - 1e-7f)

static const char *const loss_names[MAAS_L_COUNT] = {
    "mean_squared_error", "mean_absolute_error", "binary_crossentropy",
    "categorical_crossentropy", "sparse_categorical_crossentropy", "hinge"};

static maas_status check_args(const char *fn, maas_loss_op op, int64_t N,
                              int64_t C, int64_t *total)
{
    if ((int)op < 0 || op >= MAAS_L_COUNT)
        return maas_error(MAAS_ERR_VALUE, "%s: unknown loss op %d", fn, (int)op);
    if (N < 0 || C < 0)
        return maas_error(MAAS_ERR_VALUE, "%s: %s: negative size (N=%lld, C=%lld)",
                          fn, loss_names[op], (long long)N, (long long)C);
    if (maas_mul_size(N, C, total) != 0)
        return maas_error(MAAS_ERR_VALUE, "%s: %s: size N*C overflows", fn,
                          loss_names[op]);
    return MAAS_OK;
}

static maas_status check_labels(const float *y, int64_t N, int64_t C)
{
    for (int64_t n = 0; n < N; n++) {
        double l = (double)y[n];
        if (!(l >= 0.0 && l < (double)C && l == floor(l)))
            return maas_error(MAAS_ERR_VALUE,
                              "sparse_categorical_crossentropy: label %g at row "
                              "%lld is out of range [0, %lld)",
                              l, (long long)n, (long long)C);
    }
    return MAAS_OK;
}

/* 1 if every label is 0 or 1 (Keras then maps them to -1 / 1). */
static int hinge_binary(const float *restrict y, int64_t total, int nt)
{
    int64_t bad = 0;
#pragma omp parallel for schedule(static) reduction(+ : bad) \
    if (total > MAAS_PAR_THRESHOLD) num_threads(nt)
    for (int64_t i = 0; i < total; i++)
        bad += !(y[i] == 0.0f || y[i] == 1.0f);
    return bad == 0;
}

static inline float clipf(float v)
{
    return v < LOSS_EPS ? LOSS_EPS : (v > LOSS_HI ? LOSS_HI : v);
}

static inline int clipped(float v) { return v < LOSS_EPS || v > LOSS_HI; }

static inline double row_sum(const float *restrict p, int64_t C)
{
    double s = 0.0;
    for (int64_t c = 0; c < C; c++)
        s += p[c];
    return s;
}

/* max and log(sum exp(x - max)) of one row of logits */
static inline float row_lse(const float *restrict x, int64_t C, double *logz)
{
    float m = x[0];
    for (int64_t c = 1; c < C; c++)
        m = x[c] > m ? x[c] : m;
    double acc[8] = {0};
    float t[VB];
    for (int64_t c0 = 0; c0 < C; c0 += VB) {
        const int64_t len = BLEN(C, c0);
        for (int64_t c = 0; c < len; c++)
            t[c] = x[c0 + c] - m;
        maas_vm_exp(t, t, len);
        maas_vm_sum8_f64(acc, t, len);
    }
    *logz = log(maas_vm_fold8_f64(acc));
    return m;
}

/* The loss of one row. y is the label row (NULL for scce; `label` then). */
static double row_forward(maas_loss_op op, const float *restrict y,
                          const float *restrict p, int64_t C, int64_t label,
                          int logits, int hmap)
{
    double s = 0.0;
    switch (op) {
    case MAAS_L_MSE:
        for (int64_t c = 0; c < C; c++) {
            float d = p[c] - y[c];
            s += (double)d * d;
        }
        return s / (double)C;
    case MAAS_L_MAE:
        for (int64_t c = 0; c < C; c++)
            s += fabsf(p[c] - y[c]);
        return s / (double)C;
    case MAAS_L_BCE:
        for (int64_t c0 = 0; c0 < C; c0 += VB) {
            const int64_t len = BLEN(C, c0);
            const float *pb = p + c0, *yb = y + c0;
            float t[VB], u[VB];
            if (logits) {
                for (int64_t c = 0; c < len; c++)
                    t[c] = -fabsf(pb[c]);
                maas_vm_exp(t, t, len);
                maas_vm_log1p(t, t, len); /* log1p(exp(-|x|)) */
                for (int64_t c = 0; c < len; c++) {
                    float x = pb[c];
                    s += (double)((x > 0.0f ? x : 0.0f) - x * yb[c]) + (double)t[c];
                }
            } else {
                for (int64_t c = 0; c < len; c++) {
                    t[c] = clipf(pb[c]);
                    u[c] = -t[c];
                }
                maas_vm_log(t, t, len);   /* log q */
                maas_vm_log1p(u, u, len); /* log(1 - q) */
                for (int64_t c = 0; c < len; c++)
                    s -= (double)yb[c] * t[c] + (double)(1.0f - yb[c]) * u[c];
            }
        }
        return s / (double)C;
    case MAAS_L_CCE:
        if (C == 0)
            return 0.0;
        if (logits) {
            double logz;
            float m = row_lse(p, C, &logz);
            for (int64_t c = 0; c < C; c++)
                s += (double)y[c] * ((double)(m - p[c]) + logz);
        } else {
            float inv = (float)(1.0 / row_sum(p, C));
            float t[VB];
            for (int64_t c0 = 0; c0 < C; c0 += VB) {
                const int64_t len = BLEN(C, c0);
                for (int64_t c = 0; c < len; c++)
                    t[c] = clipf(p[c0 + c] * inv);
                maas_vm_log(t, t, len);
                for (int64_t c = 0; c < len; c++)
                    if (y[c0 + c] != 0.0f)
                        s -= (double)y[c0 + c] * t[c];
            }
        }
        return s;
    case MAAS_L_SCCE:
        if (logits) {
            double logz;
            float m = row_lse(p, C, &logz);
            return (double)(m - p[label]) + logz;
        } else {
            float inv = (float)(1.0 / row_sum(p, C));
            return -(double)logf(clipf(p[label] * inv));
        }
    case MAAS_L_HINGE:
        for (int64_t c = 0; c < C; c++) {
            float yy = hmap ? 2.0f * y[c] - 1.0f : y[c];
            float h = 1.0f - yy * p[c];
            s += h > 0.0f ? h : 0.0f;
        }
        return s / (double)C;
    default:
        return 0.0;
    }
}

/* g[c] += go * dloss/dp[c] for one row. */
static void row_backward(maas_loss_op op, float *restrict g,
                         const float *restrict y, const float *restrict p,
                         int64_t C, int64_t label, int logits, int hmap, float go)
{
    if (C == 0)
        return;
    const float goc = go / (float)C;
    switch (op) {
    case MAAS_L_MSE: {
        const float k = 2.0f * goc;
        for (int64_t c = 0; c < C; c++)
            g[c] += k * (p[c] - y[c]);
        return;
    }
    case MAAS_L_MAE:
        for (int64_t c = 0; c < C; c++) {
            float d = p[c] - y[c];
            g[c] += d > 0.0f ? goc : (d < 0.0f ? -goc : 0.0f);
        }
        return;
    case MAAS_L_BCE:
        if (logits) {
            float t[VB];
            for (int64_t c0 = 0; c0 < C; c0 += VB) {
                const int64_t len = BLEN(C, c0);
                maas_vm_sigmoid(t, p + c0, len);
                for (int64_t c = 0; c < len; c++)
                    g[c0 + c] += goc * (t[c] - y[c0 + c]);
            }
        } else {
            for (int64_t c = 0; c < C; c++) {
                float q = p[c];
                if (!clipped(q))
                    g[c] += goc * ((1.0f - y[c]) / (1.0f - q) - y[c] / q);
            }
        }
        return;
    case MAAS_L_CCE:
        if (logits) {
            double logz, sy = 0.0;
            float m = row_lse(p, C, &logz);
            for (int64_t c = 0; c < C; c++)
                sy += y[c];
            const float k = (float)(sy * exp(-logz)) * go;
            float t[VB];
            for (int64_t c0 = 0; c0 < C; c0 += VB) {
                const int64_t len = BLEN(C, c0);
                for (int64_t c = 0; c < len; c++)
                    t[c] = p[c0 + c] - m;
                maas_vm_exp(t, t, len);
                for (int64_t c = 0; c < len; c++)
                    g[c0 + c] += k * t[c] - go * y[c0 + c];
            }
        } else {
            /* q = p / S; dL/dp_j = (dL/dq_j + A) / S with dL/dq_j = -y_j/q_j
             * and A = sum of y over the unclipped entries. */
            const double S = row_sum(p, C);
            const float inv = (float)(1.0 / S);
            double A = 0.0;
            for (int64_t c = 0; c < C; c++)
                if (!clipped(p[c] * inv))
                    A += y[c];
            const float ginv = go * inv, gA = (float)(A / S) * go;
            for (int64_t c = 0; c < C; c++) {
                float q = p[c] * inv;
                float d = clipped(q) ? 0.0f : -y[c] / q;
                g[c] += ginv * d + gA;
            }
        }
        return;
    case MAAS_L_SCCE:
        if (logits) {
            double logz;
            float m = row_lse(p, C, &logz);
            const float k = (float)exp(-logz) * go;
            float t[VB];
            for (int64_t c0 = 0; c0 < C; c0 += VB) {
                const int64_t len = BLEN(C, c0);
                for (int64_t c = 0; c < len; c++)
                    t[c] = p[c0 + c] - m;
                maas_vm_exp(t, t, len);
                for (int64_t c = 0; c < len; c++)
                    g[c0 + c] += k * t[c];
            }
            g[label] -= go;
        } else {
            const double S = row_sum(p, C);
            const float inv = (float)(1.0 / S);
            float q = p[label] * inv;
            if (clipped(q))
                return;
            const float k = go * inv;
            for (int64_t c = 0; c < C; c++)
                g[c] += k;
            g[label] -= k / q;
        }
        return;
    case MAAS_L_HINGE:
        for (int64_t c = 0; c < C; c++) {
            float yy = hmap ? 2.0f * y[c] - 1.0f : y[c];
            if (1.0f - yy * p[c] > 0.0f)
                g[c] -= goc * yy;
        }
        return;
    default:
        return;
    }
}

maas_status maas_loss_forward(maas_loss_op op, float *out, const float *y_true,
                              const float *y_pred, int64_t N, int64_t C,
                              int from_logits)
{
    int64_t total;
    maas_status st = check_args("loss_forward", op, N, C, &total);
    if (st != MAAS_OK)
        return st;
    if (N == 0)
        return MAAS_OK;
    if (!out || !y_true || (!y_pred && total > 0))
        return maas_error(MAAS_ERR_VALUE, "loss_forward: %s: NULL buffer",
                          loss_names[op]);
    if (op == MAAS_L_SCCE && (st = check_labels(y_true, N, C)) != MAAS_OK)
        return st;
    const int nt = maas_get_num_threads();
    const int hmap = op == MAAS_L_HINGE ? hinge_binary(y_true, total, nt) : 0;
    const int logits = from_logits != 0;
    if (C == 0) {
        /* means over nothing are NaN, sums are 0 */
        const float v = (op == MAAS_L_CCE || op == MAAS_L_SCCE) ? 0.0f : NAN;
        for (int64_t n = 0; n < N; n++)
            out[n] = v;
        return MAAS_OK;
    }
#pragma omp parallel for schedule(static) if (total > MAAS_PAR_THRESHOLD) \
    num_threads(nt)
    for (int64_t n = 0; n < N; n++) {
        const float *y = op == MAAS_L_SCCE ? NULL : y_true + n * C;
        const int64_t label = op == MAAS_L_SCCE ? (int64_t)y_true[n] : 0;
        out[n] = (float)row_forward(op, y, y_pred + n * C, C, label, logits, hmap);
    }
    return MAAS_OK;
}

maas_status maas_loss_backward(maas_loss_op op, float *gpred, const float *gout,
                               const float *y_true, const float *y_pred,
                               int64_t N, int64_t C, int from_logits)
{
    int64_t total;
    maas_status st = check_args("loss_backward", op, N, C, &total);
    if (st != MAAS_OK)
        return st;
    if (!gpred || N == 0 || C == 0)
        return MAAS_OK;
    if (!gout || !y_true || !y_pred)
        return maas_error(MAAS_ERR_VALUE, "loss_backward: %s: NULL buffer",
                          loss_names[op]);
    if (op == MAAS_L_SCCE && (st = check_labels(y_true, N, C)) != MAAS_OK)
        return st;
    const int nt = maas_get_num_threads();
    const int hmap = op == MAAS_L_HINGE ? hinge_binary(y_true, total, nt) : 0;
    const int logits = from_logits != 0;
#pragma omp parallel for schedule(static) if (total > MAAS_PAR_THRESHOLD) \
    num_threads(nt)
    for (int64_t n = 0; n < N; n++) {
        const float *y = op == MAAS_L_SCCE ? NULL : y_true + n * C;
        const int64_t label = op == MAAS_L_SCCE ? (int64_t)y_true[n] : 0;
        row_backward(op, gpred + n * C, y, y_pred + n * C, C, label, logits,
                     hmap, gout[n]);
    }
    return MAAS_OK;
}

/* ---- sparse categorical crossentropy with integer labels (no float pass)
 * The same rows as maas_loss_forward/backward's MAAS_L_SCCE. */

static int64_t label_at(const void *labels, maas_dtype ldt, int64_t n)
{
    switch (ldt) {
    case MAAS_I32: return ((const int32_t *)labels)[n];
    case MAAS_I64: return ((const int64_t *)labels)[n];
    case MAAS_I8: return ((const int8_t *)labels)[n];
    case MAAS_U8: return ((const uint8_t *)labels)[n];
    default: return -1;
    }
}

static maas_status check_int_labels(const char *fn, const void *labels, maas_dtype ldt,
                                    int64_t N, int64_t C)
{
    if (ldt != MAAS_I32 && ldt != MAAS_I64 && ldt != MAAS_I8 && ldt != MAAS_U8)
        return maas_error(MAAS_ERR_TYPE,
                          "sparse_categorical_crossentropy: labels must be an integer tensor "
                          "(int32, int64, int8 or uint8), received %s",
                          maas_dtype_name(ldt));
    if (N < 0 || C < 0)
        return maas_error(MAAS_ERR_VALUE, "%s: negative size (N=%lld, C=%lld)", fn,
                          (long long)N, (long long)C);
    int64_t total;
    if (maas_mul_size(N, C, &total) != 0)
        return maas_error(MAAS_ERR_VALUE, "%s: size N*C overflows", fn);
    if (N > 0 && !labels)
        return maas_error(MAAS_ERR_VALUE, "%s: NULL buffer", fn);
    for (int64_t n = 0; n < N; n++) {
        int64_t l = label_at(labels, ldt, n);
        if (l < 0 || l >= C)
            return maas_error(MAAS_ERR_VALUE,
                              "sparse_categorical_crossentropy: label %lld at row %lld is out "
                              "of range [0, %lld)",
                              (long long)l, (long long)n, (long long)C);
    }
    return MAAS_OK;
}

maas_status maas_scce_forward_typed(float *out, const void *labels, maas_dtype ldt,
                                    const float *y_pred, int64_t N, int64_t C,
                                    int from_logits)
{
    maas_status st = check_int_labels("scce_forward", labels, ldt, N, C);
    if (st != MAAS_OK || N == 0)
        return st;
    if (!out || !y_pred)
        return maas_error(MAAS_ERR_VALUE, "scce_forward: NULL buffer");
    /* C == 0 cannot get here: no label lies in [0, 0) */
    const int nt = maas_get_num_threads();
    const int logits = from_logits != 0;
    const int64_t total = N * C;
#pragma omp parallel for schedule(static) if (total > MAAS_PAR_THRESHOLD) \
    num_threads(nt)
    for (int64_t n = 0; n < N; n++)
        out[n] = (float)row_forward(MAAS_L_SCCE, NULL, y_pred + n * C, C,
                                    label_at(labels, ldt, n), logits, 0);
    return MAAS_OK;
}

maas_status maas_scce_backward_typed(float *gpred, const float *gout, const void *labels,
                                     maas_dtype ldt, const float *y_pred, int64_t N,
                                     int64_t C, int from_logits)
{
    maas_status st = check_int_labels("scce_backward", labels, ldt, N, C);
    if (st != MAAS_OK || !gpred || N == 0)
        return st;
    if (!gout || !y_pred)
        return maas_error(MAAS_ERR_VALUE, "scce_backward: NULL buffer");
    const int nt = maas_get_num_threads();
    const int logits = from_logits != 0;
    const int64_t total = N * C;
#pragma omp parallel for schedule(static) if (total > MAAS_PAR_THRESHOLD) \
    num_threads(nt)
    for (int64_t n = 0; n < N; n++)
        row_backward(MAAS_L_SCCE, gpred + n * C, NULL, y_pred + n * C, C,
                     label_at(labels, ldt, n), logits, 0, gout[n]);
    return MAAS_OK;
}
