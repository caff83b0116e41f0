/* reduce.c -- sum / mean / max / min over the middle axis.
 *
 * maas_reduce_forward(op, out, x, outer, n, inner)
 *     x (outer, n, inner) -> out (outer, inner). Overwrites out.
 *     Sums run in double in a fixed order (blocks of REDUCE_BLOCK along the
 *     axis, combined left to right) that depends only on the shape, never on
 *     the thread count. n == 0: sum -> 0, mean -> NaN, max/min ->
 *     MAAS_ERR_VALUE. max/min propagate NaN.
 * maas_reduce_backward(op, gx, gout, x, out, outer, n, inner)
 *     ACCUMULATES into gx (outer, n, inner): gout broadcast (sum), / n
 *     (mean), or only into the FIRST position where x equals out (max/min).
 */
#include "maas.h"

#include <math.h>
#include <stdint.h>

#define REDUCE_BLOCK 4096  /* fixed block length for long sums */
#define TILE 256           /* columns per tile when inner > 1 */

static maas_status reduce_args(maas_reduce_op op, int64_t outer, int64_t n,
                               int64_t inner, int64_t *total)
{
    int64_t t;
    if ((unsigned)op > (unsigned)MAAS_R_MIN)
        return maas_error(MAAS_ERR_VALUE, "unknown reduce op %d", (int)op);
    if (outer < 0 || n < 0 || inner < 0)
        return maas_error(MAAS_ERR_VALUE, "reduce: negative size");
    if (maas_mul_size(outer, n, &t) != 0 || maas_mul_size(t, inner, &t) != 0)
        return maas_error(MAAS_ERR_VALUE, "reduce: size overflows");
    *total = t;
    return MAAS_OK;
}

__attribute__((noinline)) static double block_sum(const float *restrict x, int64_t n)
{
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t k = 0; k < n; k++)
        s += x[k];
    return s;
}

/* Sum of a contiguous row, in blocks of REDUCE_BLOCK combined in order. */
static double row_sum(const float *x, int64_t n)
{
    double s = 0.0;
    for (int64_t k = 0; k < n; k += REDUCE_BLOCK)
        s += block_sum(x + k, n - k < REDUCE_BLOCK ? n - k : REDUCE_BLOCK);
    return s;
}

static inline int better(maas_reduce_op op, float v, float m)
{
    /* v replaces the running max/min m; a NaN sticks */
    return op == MAAS_R_MAX ? (v > m || v != v) : (v < m || v != v);
}

maas_status maas_reduce_forward(maas_reduce_op op, float *out, const float *x,
                                int64_t outer, int64_t n, int64_t inner)
{
    int64_t total = 0;
    maas_status st = reduce_args(op, outer, n, inner, &total);
    if (st != MAAS_OK)
        return st;
    const int64_t nout = outer * inner;
    if (n == 0) {
        if (op == MAAS_R_MAX || op == MAAS_R_MIN)
            return maas_error(MAAS_ERR_VALUE, "%s of an empty axis has no "
                              "identity", op == MAAS_R_MAX ? "max" : "min");
        const float v = op == MAAS_R_SUM ? 0.0f : NAN;
        for (int64_t i = 0; i < nout; i++)
            out[i] = v;
        return MAAS_OK;
    }
    if (nout == 0)
        return MAAS_OK;
    const int is_sum = op == MAAS_R_SUM || op == MAAS_R_MEAN;
    const double scale = op == MAAS_R_MEAN ? 1.0 / (double)n : 1.0;
    const int par = total > MAAS_PAR_THRESHOLD;
    const int nthr = par ? maas_get_num_threads() : 1;

    if (inner == 1) {
        if (is_sum && outer < nthr && n > REDUCE_BLOCK) {
            /* few long rows: parallel over the fixed blocks of each row */
            const int64_t nb = (n + REDUCE_BLOCK - 1) / REDUCE_BLOCK;
            int64_t cnt;
            if (maas_mul_size(nb, 2, &cnt) != 0)
                return maas_error(MAAS_ERR_NOMEM, "reduce: size overflows");
            double *part = (double *)maas_alloc_floats(cnt);
            if (!part)
                return MAAS_ERR_NOMEM;
            for (int64_t o = 0; o < outer; o++) {
                const float *xr = x + o * n;
#pragma omp parallel for num_threads(nthr) schedule(static) if (par)
                for (int64_t bi = 0; bi < nb; bi++) {
                    int64_t k = bi * REDUCE_BLOCK;
                    part[bi] = block_sum(xr + k, n - k < REDUCE_BLOCK ? n - k
                                                                      : REDUCE_BLOCK);
                }
                double s = 0.0;
                for (int64_t bi = 0; bi < nb; bi++)
                    s += part[bi];
                out[o] = (float)(s * scale);
            }
            maas_free(part);
            return MAAS_OK;
        }
#pragma omp parallel for num_threads(nthr) schedule(static) if (par)
        for (int64_t o = 0; o < outer; o++) {
            const float *xr = x + o * n;
            if (is_sum) {
                out[o] = (float)(row_sum(xr, n) * scale);
            } else {
                float m = xr[0];
                for (int64_t k = 1; k < n; k++)
                    if (better(op, xr[k], m))
                        m = xr[k];
                out[o] = m;
            }
        }
        return MAAS_OK;
    }

    /* inner > 1: tiles of up to TILE columns, each summed down the axis
     * (vectorized across columns, serial along the axis). */
    const int64_t tpr = (inner + TILE - 1) / TILE;
    const int64_t ntiles = outer * tpr;
#pragma omp parallel for num_threads(nthr) schedule(static) if (par)
    for (int64_t t = 0; t < ntiles; t++) {
        const int64_t o = t / tpr, j0 = (t % tpr) * TILE;
        const int64_t w = inner - j0 < TILE ? inner - j0 : TILE;
        const float *xo = x + o * n * inner + j0;
        float *oo = out + o * inner + j0;
        if (is_sum) {
            double acc[TILE];
            for (int64_t j = 0; j < w; j++)
                acc[j] = 0.0;
            for (int64_t k = 0; k < n; k++) {
                const float *xr = xo + k * inner;
#pragma omp simd
                for (int64_t j = 0; j < w; j++)
                    acc[j] += xr[j];
            }
            for (int64_t j = 0; j < w; j++)
                oo[j] = (float)(acc[j] * scale);
        } else {
            float m[TILE];
            for (int64_t j = 0; j < w; j++)
                m[j] = xo[j];
            for (int64_t k = 1; k < n; k++) {
                const float *xr = xo + k * inner;
                if (op == MAAS_R_MAX) {
#pragma omp simd
                    for (int64_t j = 0; j < w; j++)
                        m[j] = (xr[j] > m[j] || xr[j] != xr[j]) ? xr[j] : m[j];
                } else {
#pragma omp simd
                    for (int64_t j = 0; j < w; j++)
                        m[j] = (xr[j] < m[j] || xr[j] != xr[j]) ? xr[j] : m[j];
                }
            }
            for (int64_t j = 0; j < w; j++)
                oo[j] = m[j];
        }
    }
    return MAAS_OK;
}

static inline int matches(float v, float m)
{
    return v == m || (v != v && m != m);
}

maas_status maas_reduce_backward(maas_reduce_op op, float *restrict gx,
                                 const float *restrict gout, const float *x,
                                 const float *out, int64_t outer, int64_t n,
                                 int64_t inner)
{
    int64_t total = 0;
    maas_status st = reduce_args(op, outer, n, inner, &total);
    if (st != MAAS_OK)
        return st;
    if (total == 0 || gx == NULL)
        return MAAS_OK;
    const int par = total > MAAS_PAR_THRESHOLD;
    const int nthr = par ? maas_get_num_threads() : 1;

    if (op == MAAS_R_SUM || op == MAAS_R_MEAN) {
        const float scale = op == MAAS_R_MEAN ? (float)(1.0 / (double)n) : 1.0f;
        const int64_t rows = outer * n;
        if (inner == 1) {
#pragma omp parallel for simd num_threads(nthr) schedule(static) if (par)
            for (int64_t r = 0; r < rows; r++)
                gx[r] += gout[r / n] * scale;
        } else {
#pragma omp parallel for num_threads(nthr) schedule(static) if (par)
            for (int64_t r = 0; r < rows; r++) {
                const float *g = gout + (r / n) * inner;
                float *gr = gx + r * inner;
#pragma omp simd
                for (int64_t j = 0; j < inner; j++)
                    gr[j] += g[j] * scale;
            }
        }
        return MAAS_OK;
    }

    /* max / min: the first position along the axis where x equals out */
    if (inner == 1) {
#pragma omp parallel for num_threads(nthr) schedule(static) if (par)
        for (int64_t o = 0; o < outer; o++) {
            const float *xr = x + o * n;
            const float m = out[o];
            for (int64_t k = 0; k < n; k++)
                if (matches(xr[k], m)) {
                    gx[o * n + k] += gout[o];
                    break;
                }
        }
        return MAAS_OK;
    }
    const int64_t tpr = (inner + TILE - 1) / TILE;
    const int64_t ntiles = outer * tpr;
#pragma omp parallel for num_threads(nthr) schedule(static) if (par)
    for (int64_t t = 0; t < ntiles; t++) {
        const int64_t o = t / tpr, j0 = (t % tpr) * TILE;
        const int64_t w = inner - j0 < TILE ? inner - j0 : TILE;
        const float *xo = x + o * n * inner + j0;
        const float *mo = out + o * inner + j0, *go = gout + o * inner + j0;
        float *gxo = gx + o * n * inner + j0;
        unsigned char done[TILE];
        int64_t left = w;
        for (int64_t j = 0; j < w; j++)
            done[j] = 0;
        for (int64_t k = 0; k < n && left > 0; k++) {
            const float *xr = xo + k * inner;
            for (int64_t j = 0; j < w; j++)
                if (!done[j] && matches(xr[j], mo[j])) {
                    gxo[k * inner + j] += go[j];
                    done[j] = 1;
                    left--;
                }
        }
    }
    return MAAS_OK;
}
