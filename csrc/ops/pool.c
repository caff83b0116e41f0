/* ops/pool.c -- 2-D max and average pooling over NHWC tensors (1-D pooling
 * is the same op on (N, 1, L, C)).
 *
 * pool2d  in: x (N, H, W, C). out (N, OH, OW, C):
 *           valid: OH = (H - ph) / sh + 1 (floor), no padding;
 *           same:  OH = ceil(H / sh), padding total max((OH-1)*sh + ph - H, 0),
 *                  the smaller half before (TensorFlow's, hence Keras's).
 *         max: the largest value of each window (padding never wins); the
 *         flat position h*W + w of the first maximum is saved (int32, one
 *         per output element) for the backward, which routes each gradient
 *         to it. avg: the mean over the window's positions inside the input
 *         (padding is not counted, as TensorFlow's "SAME" average).
 *
 * Forward overwrites out and the saved argmax; backward ACCUMULATES into
 * gx. Threads over the batch and output rows (forward) and over samples
 * (backward: each sample's scatter runs in a fixed order), so results are
 * the same bits at any thread count. */
#include "../opdef.h"

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <string.h>

typedef struct {
    int64_t kind; /* 0 max, 1 average */
    int64_t ph, pw, sh, sw, same;
    int64_t N, H, W, C, OH, OW, pt, pl; /* derived */
} pool_attr;

static const maas_attr_field pool_fields[] = {
    {"kind", 'l', offsetof(pool_attr, kind)}, {"pool_h", 'l', offsetof(pool_attr, ph)},
    {"pool_w", 'l', offsetof(pool_attr, pw)}, {"stride_h", 'l', offsetof(pool_attr, sh)},
    {"stride_w", 'l', offsetof(pool_attr, sw)}, {"same", 'l', offsetof(pool_attr, same)},
    {NULL, 0, 0}};

/* output size and padding before, along one axis */
static int pool_dim(int64_t in, int64_t k, int64_t s, int same, int64_t *out, int64_t *pad)
{
    if (same) {
        *out = (in + s - 1) / s;
        int64_t total = (*out - 1) * s + k - in;
        *pad = total > 0 ? total / 2 : 0;
        return 1;
    }
    if (k > in)
        return 0;
    *out = (in - k) / s + 1;
    *pad = 0;
    return 1;
}

static maas_status pool_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    pool_attr *a = ATTR(pool_attr, nd);
    const maas_tensor *x = nd->in[0];
    const char *op = a->kind ? "average_pool2d" : "max_pool2d";
    char sx[160];
    maas_status s = need_f32(nd, 0, op);
    if (s != MAAS_OK)
        return s;
    if (a->kind != 0 && a->kind != 1)
        return maas_error(MAAS_ERR_VALUE, "pool2d: unknown kind %lld", (long long)a->kind);
    if (x->ndim != 4)
        return maas_error(MAAS_ERR_SHAPE,
                          "%s: expected a 4-D input (batch, height, width, channels), received "
                          "shape %s", op, SHAPE(x, sx));
    if (a->ph < 1 || a->pw < 1 || a->sh < 1 || a->sw < 1)
        return maas_error(MAAS_ERR_VALUE,
                          "%s: pool size and strides must be positive, received pool (%lld, %lld), "
                          "strides (%lld, %lld)", op, (long long)a->ph, (long long)a->pw,
                          (long long)a->sh, (long long)a->sw);
    a->N = x->shape[0];
    a->H = x->shape[1];
    a->W = x->shape[2];
    a->C = x->shape[3];
    if (a->H * a->W > INT32_MAX)
        return maas_error(MAAS_ERR_VALUE, "%s: input of shape %s: more than 2^31 positions per image",
                          op, SHAPE(x, sx));
    if (!pool_dim(a->H, a->ph, a->sh, (int)a->same, &a->OH, &a->pt) ||
        !pool_dim(a->W, a->pw, a->sw, (int)a->same, &a->OW, &a->pl))
        return maas_error(MAAS_ERR_SHAPE,
                          "%s: pool size (%lld, %lld) is larger than the input (%lld, %lld) of "
                          "shape %s with padding \"valid\": use padding=\"same\" or a smaller "
                          "pool_size", op, (long long)a->ph, (long long)a->pw, (long long)a->H,
                          (long long)a->W, SHAPE(x, sx));
    outs[0].dtype = MAAS_F32;
    outs[0].ndim = 4;
    outs[0].shape[0] = a->N;
    outs[0].shape[1] = a->OH;
    outs[0].shape[2] = a->OW;
    outs[0].shape[3] = a->C;
    if (a->kind == 0) {
        saved[0] = outs[0];
        saved[0].dtype = MAAS_I32;
        nd->nsaved = 1;
    }
    return MAAS_OK;
}

static int nthreads_for(int64_t work)
{
    return work > MAAS_PAR_THRESHOLD ? maas_get_num_threads() : 1;
}

static maas_status pool_forward(maas_node *nd)
{
    const pool_attr *a = CATTR(pool_attr, nd);
    const int64_t H = a->H, W = a->W, C = a->C, OH = a->OH, OW = a->OW;
    const float *restrict x = nd->in[0]->data;
    float *restrict out = nd->out[0]->data;
    int32_t *restrict am = a->kind == 0 ? (int32_t *)nd->saved[0]->ptr : NULL;
    const int nt = nthreads_for(nd->in[0]->size + nd->out[0]->size * a->ph * a->pw / 4);
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t r = 0; r < a->N * OH; r++) {
        int64_t n = r / OH, oh = r % OH;
        int64_t h0 = oh * a->sh - a->pt, h1 = h0 + a->ph;
        if (h0 < 0)
            h0 = 0;
        if (h1 > H)
            h1 = H;
        const float *xn = x + n * H * W * C;
        for (int64_t ow = 0; ow < OW; ow++) {
            int64_t w0 = ow * a->sw - a->pl, w1 = w0 + a->pw;
            if (w0 < 0)
                w0 = 0;
            if (w1 > W)
                w1 = W;
            float *restrict o = out + ((n * OH + oh) * OW + ow) * C;
            if (am) {
                int32_t *restrict ai = am + ((n * OH + oh) * OW + ow) * C;
                for (int64_t c = 0; c < C; c++) {
                    o[c] = -INFINITY;
                    ai[c] = (int32_t)(h0 * W + w0);
                }
                for (int64_t h = h0; h < h1; h++)
                    for (int64_t w = w0; w < w1; w++) {
                        const float *restrict xp = xn + (h * W + w) * C;
                        const int32_t pos = (int32_t)(h * W + w);
                        for (int64_t c = 0; c < C; c++)
                            if (xp[c] > o[c]) {
                                o[c] = xp[c];
                                ai[c] = pos;
                            }
                    }
                /* a window of NaNs (or -inf): the first position's value */
                for (int64_t c = 0; c < C; c++)
                    if (o[c] == -INFINITY)
                        o[c] = xn[(int64_t)ai[c] * C + c];
            } else {
                for (int64_t c = 0; c < C; c++)
                    o[c] = 0.0f;
                for (int64_t h = h0; h < h1; h++)
                    for (int64_t w = w0; w < w1; w++) {
                        const float *restrict xp = xn + (h * W + w) * C;
                        for (int64_t c = 0; c < C; c++)
                            o[c] += xp[c];
                    }
                const float inv = 1.0f / (float)((h1 - h0) * (w1 - w0));
                for (int64_t c = 0; c < C; c++)
                    o[c] *= inv;
            }
        }
    }
    return MAAS_OK;
}

static maas_status pool_backward(const maas_node *nd, const maas_tensor *const *gout,
                                 maas_tensor *const *gin)
{
    const pool_attr *a = CATTR(pool_attr, nd);
    const int64_t H = a->H, W = a->W, C = a->C, OH = a->OH, OW = a->OW;
    float *gx = gin[0]->data;
    const float *restrict go = gout[0]->data;
    const int32_t *restrict am = a->kind == 0 ? (const int32_t *)nd->saved[0]->ptr : NULL;
    const int nt = nthreads_for(nd->in[0]->size + gout[0]->size * a->ph * a->pw / 4);
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t n = 0; n < a->N; n++) {
        float *restrict gn = gx + n * H * W * C;
        for (int64_t oh = 0; oh < OH; oh++) {
            int64_t h0 = oh * a->sh - a->pt, h1 = h0 + a->ph;
            if (h0 < 0)
                h0 = 0;
            if (h1 > H)
                h1 = H;
            for (int64_t ow = 0; ow < OW; ow++) {
                const int64_t e = ((n * OH + oh) * OW + ow) * C;
                const float *restrict g = go + e;
                if (am) {
                    const int32_t *restrict ai = am + e;
                    for (int64_t c = 0; c < C; c++)
                        gn[(int64_t)ai[c] * C + c] += g[c];
                    continue;
                }
                int64_t w0 = ow * a->sw - a->pl, w1 = w0 + a->pw;
                if (w0 < 0)
                    w0 = 0;
                if (w1 > W)
                    w1 = W;
                const float inv = 1.0f / (float)((h1 - h0) * (w1 - w0));
                for (int64_t h = h0; h < h1; h++)
                    for (int64_t w = w0; w < w1; w++) {
                        float *restrict gp = gn + (h * W + w) * C;
                        for (int64_t c = 0; c < C; c++)
                            gp[c] += g[c] * inv;
                    }
            }
        }
    }
    return MAAS_OK;
}

MAAS_OPDEF(maas_opdef_pool2d, "pool2d", 1, 1, pool_attr, 0, pool_fields, pool);
