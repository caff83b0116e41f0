/* ops/shape.c -- copy kernels behind reshape, slicing, transposes and
 * concatenation, and their gradients. */
#include "maas.h"

#include <string.h>

/* out (batch, cols, rows) = x (batch, rows, cols) transposed; overwrites.
 * Blocked 32x32 so both sides stay in cache. */
maas_status maas_transpose2d(float *out, const float *x, int64_t batch,
                             int64_t rows, int64_t cols)
{
    const int64_t B = 32;
    for (int64_t b = 0; b < batch; b++) {
        const float *xb = x + b * rows * cols;
        float *ob = out + b * rows * cols;
        for (int64_t r0 = 0; r0 < rows; r0 += B)
            for (int64_t c0 = 0; c0 < cols; c0 += B) {
                int64_t r1 = r0 + B < rows ? r0 + B : rows;
                int64_t c1 = c0 + B < cols ? c0 + B : cols;
                for (int64_t r = r0; r < r1; r++)
                    for (int64_t c = c0; c < c1; c++)
                        ob[c * rows + r] = xb[r * cols + c];
            }
    }
    return MAAS_OK;
}

/* dst[i] += src[i]; accumulates. */
maas_status maas_accumulate(float *restrict dst, const float *restrict src, int64_t n)
{
#pragma omp parallel for num_threads(maas_get_num_threads()) schedule(static) if (n > MAAS_PAR_THRESHOLD)
    for (int64_t i = 0; i < n; i++)
        dst[i] += src[i];
    return MAAS_OK;
}

/* out[r] = x[start + r*step] (rows of `row` floats); overwrites. */
maas_status maas_gather_rows(float *out, const float *x, int64_t start,
                             int64_t step, int64_t count, int64_t row)
{
    for (int64_t r = 0; r < count; r++)
        memcpy(out + r * row, x + (start + r * step) * row, (size_t)row * sizeof(float));
    return MAAS_OK;
}

/* gx[start + r*step] += gout[r]; accumulates (serially: rows may repeat). */
maas_status maas_scatter_add_rows(float *gx, const float *gout, int64_t start,
                                  int64_t step, int64_t count, int64_t row)
{
    for (int64_t r = 0; r < count; r++) {
        float *d = gx + (start + r * step) * row;
        const float *s = gout + r * row;
        for (int64_t i = 0; i < row; i++)
            d[i] += s[i];
    }
    return MAAS_OK;
}

/* out (outer, sum n_j, inner) = concat of xs[j] (outer, n_j, inner); overwrites. */
maas_status maas_concat_forward(float *out, const float *const *xs,
                                const int64_t *ns, int k, int64_t outer,
                                int64_t inner)
{
    int64_t total = 0;
    for (int j = 0; j < k; j++)
        total += ns[j];
    for (int64_t o = 0; o < outer; o++) {
        float *dst = out + o * total * inner;
        for (int j = 0; j < k; j++) {
            size_t len = (size_t)(ns[j] * inner);
            memcpy(dst, xs[j] + o * ns[j] * inner, len * sizeof(float));
            dst += len;
        }
    }
    return MAAS_OK;
}

/* gxs[j] += the slab of gout that xs[j] filled; NULL entries are skipped. */
maas_status maas_concat_backward(float *const *gxs, const float *gout,
                                 const int64_t *ns, int k, int64_t outer,
                                 int64_t inner)
{
    int64_t total = 0;
    for (int j = 0; j < k; j++)
        total += ns[j];
    for (int64_t o = 0; o < outer; o++) {
        const float *src = gout + o * total * inner;
        for (int j = 0; j < k; j++) {
            int64_t len = ns[j] * inner;
            if (gxs[j]) {
                float *d = gxs[j] + o * len;
                for (int64_t i = 0; i < len; i++)
                    d[i] += src[i];
            }
            src += len;
        }
    }
    return MAAS_OK;
}
