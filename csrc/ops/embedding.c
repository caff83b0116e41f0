/* ops/embedding.c -- rows of a table gathered by integer indices (the
 * Embedding layer), with a per-row scatter-add backward.
 *
 *   out (*idx.shape, D) = table (V, D)[idx]        idx: int32, int64 or
 *                                                   float32 (any rank)
 *   gtable[idx[i]] += gout[i]                       (accumulates)
 *   mask (*idx.shape) = idx != 0 as 1.0/0.0         (mask_zero: a second
 *                                                   output, no gradient)
 *
 * Float indices are converted as Keras's cast to int does (toward zero);
 * NaN is refused. Every index is checked against [0, V) before anything is
 * written or read: out-of-range indices give MAAS_ERR_VALUE naming the index,
 * its position and input_dim. The backward never forms a one-hot matrix: it
 * adds each gradient row into its table row, serially in index order within
 * a column block (blocks of columns run in parallel above a size threshold),
 * so results do not depend on the thread count. */
#include "../opdef.h"

#include <math.h>

static maas_status index_at(const maas_tensor *idx, int64_t i, int64_t V, int64_t *out)
{
    int64_t k;
    if (idx->dtype == MAAS_I64) {
        k = ((const int64_t *)idx->ptr)[i];
    } else if (idx->dtype == MAAS_I32) {
        k = ((const int32_t *)idx->ptr)[i];
    } else {
        float f = ((const float *)idx->ptr)[i];
        if (!(f > -9.2e18f && f < 9.2e18f))
            return maas_error(MAAS_ERR_VALUE, "embedding: index %g (at flat position %lld) is not "
                              "a valid index for input_dim=%lld: indices must be integers in "
                              "[0, %lld)", (double)f, (long long)i, (long long)V, (long long)V);
        k = (int64_t)f;
    }
    if (k < 0 || k >= V)
        return maas_error(MAAS_ERR_VALUE, "embedding: index %lld (at flat position %lld) is out of "
                          "range for input_dim=%lld: indices must be in [0, %lld); raise "
                          "input_dim or fix the token ids", (long long)k, (long long)i,
                          (long long)V, (long long)V);
    *out = k;
    return MAAS_OK;
}

static maas_status maas_embedding_forward(float *out, const float *table, const maas_tensor *idx,
                                          int64_t V, int64_t D, int64_t *rows)
{
    int64_t n = idx->size;
    for (int64_t i = 0; i < n; i++) {
        maas_status s = index_at(idx, i, V, &rows[i]);
        if (s != MAAS_OK)
            return s;
    }
    for (int64_t i = 0; i < n; i++)
        memcpy(out + i * D, table + rows[i] * D, (size_t)D * sizeof(float));
    return MAAS_OK;
}

static maas_status maas_embedding_backward(float *gtable, const float *gout, const int64_t *rows,
                                           int64_t n, int64_t D)
{
    const int64_t CB = 64; /* column block: each block's rows are added in index order */
    int64_t nblk = (D + CB - 1) / CB;
    int par = (double)n * (double)D > (double)MAAS_PAR_THRESHOLD && nblk > 1;
#pragma omp parallel for schedule(static) num_threads(maas_get_num_threads()) if (par)
    for (int64_t b = 0; b < nblk; b++) {
        int64_t c0 = b * CB, c1 = c0 + CB < D ? c0 + CB : D;
        for (int64_t i = 0; i < n; i++) {
            float *d = gtable + rows[i] * D;
            const float *s = gout + i * D;
            for (int64_t c = c0; c < c1; c++)
                d[c] += s[c];
        }
    }
    return MAAS_OK;
}

/* ------------------------------------------------------------ op entry */

typedef struct {
    int64_t mask_zero; /* 1: a second output, the float32 mask idx != 0 */
    int64_t V, D;
} embedding_attr;

static const maas_attr_field embedding_fields[] = {
    {"mask_zero", 'l', offsetof(embedding_attr, mask_zero)}, {NULL, 0, 0}};

static maas_status embedding_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    const maas_tensor *w = nd->in[0], *idx = nd->in[1];
    maas_status s = need_f32(nd, 0, "embedding");
    if (s != MAAS_OK)
        return s;
    if (w->ndim != 2)
        return maas_error(MAAS_ERR_VALUE, "embedding: the table must be 2-D (input_dim, "
                          "output_dim), received %d dimensions", w->ndim);
    if (idx->dtype != MAAS_I32 && idx->dtype != MAAS_I64 && idx->dtype != MAAS_F32)
        return maas_error(MAAS_ERR_TYPE, "embedding: indices must be int32, int64 or float32 "
                          "holding integers, received %s", maas_dtype_name(idx->dtype));
    if (idx->ndim + 1 > MAAS_MAX_DIMS)
        return maas_error(MAAS_ERR_VALUE, "embedding: indices of %d dimensions give more than "
                          "%d output dimensions", idx->ndim, MAAS_MAX_DIMS);
    embedding_attr *a = ATTR(embedding_attr, nd);
    a->V = w->shape[0];
    a->D = w->shape[1];
    nd->nograd = 2u;
    outs[0].dtype = MAAS_F32;
    outs[0].ndim = idx->ndim + 1;
    memcpy(outs[0].shape, idx->shape, sizeof(int64_t) * (size_t)idx->ndim);
    outs[0].shape[idx->ndim] = a->D;
    if (a->mask_zero) {
        nd->nout = 2;
        spec_like(&outs[1], idx);
        outs[1].dtype = MAAS_F32;
    }
    /* the checked row of each index, kept for the backward */
    nd->nsaved = 1;
    saved[0].dtype = MAAS_I64;
    saved[0].ndim = 1;
    saved[0].shape[0] = idx->size;
    return MAAS_OK;
}

static maas_status embedding_forward(maas_node *nd)
{
    const embedding_attr *a = CATTR(embedding_attr, nd);
    int64_t *rows = (int64_t *)nd->saved[0]->ptr;
    maas_status s = maas_embedding_forward(nd->out[0]->data, nd->in[0]->data, nd->in[1], a->V,
                                           a->D, rows);
    if (s == MAAS_OK && a->mask_zero)
        for (int64_t i = 0; i < nd->in[1]->size; i++)
            nd->out[1]->data[i] = rows[i] != 0 ? 1.0f : 0.0f;
    return s;
}

static maas_status embedding_backward(const maas_node *nd, const maas_tensor *const *gout,
                                      maas_tensor *const *gin)
{
    const embedding_attr *a = CATTR(embedding_attr, nd);
    if (!gin[0] || !gout[0])
        return MAAS_OK;
    return maas_embedding_backward(gin[0]->data, gout[0]->data,
                                   (const int64_t *)nd->saved[0]->ptr, nd->in[1]->size, a->D);
}

MAAS_OPDEF(maas_opdef_embedding, "embedding", 2, 2, embedding_attr, 0, embedding_fields, embedding);
