/* ops/resample.c -- NHWC spatial padding / cropping, resizing (nearest and
 * bilinear), and a general axis permutation.
 *
 * pad2d    in: x (N, H, W, C). out (N, H+top+bottom, W+left+right, C): x
 *          shifted by (top, left), zeros around it; a negative amount crops
 *          that side (ZeroPadding2D and Cropping2D are this op).
 * resize2d in: x (N, H, W, C). out (N, OH, OW, C), sampled at half-pixel
 *          centres, src = (dst + 0.5) * H / OH - 0.5 (TensorFlow's resize
 *          and PyTorch's align_corners=False): nearest takes floor((dst +
 *          0.5) * H / OH) (an integer factor repeats each pixel, as Keras's
 *          UpSampling2D); bilinear interpolates the two neighbours on each
 *          axis, src clamped to [0, H - 1].
 * permute  in: x of any rank. out: x's axes in the order perm (NumPy's
 *          transpose(x, perm)).
 *
 * Forwards overwrite out; backwards ACCUMULATE into gx. Threads over rows
 * of the output (forward) and over samples (resize backward, whose scatter
 * runs in a fixed order within a sample): the same bits at any thread
 * count. */
#include "../opdef.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

static int nthreads_for(int64_t work)
{
    return work > MAAS_PAR_THRESHOLD ? maas_get_num_threads() : 1;
}

static maas_status need_nhwc(const maas_node *nd, const char *op)
{
    char sx[160];
    maas_status s = need_f32(nd, 0, op);
    if (s != MAAS_OK)
        return s;
    if (nd->in[0]->ndim != 4)
        return maas_error(MAAS_ERR_SHAPE,
                          "%s: expected a 4-D input (batch, height, width, channels), received "
                          "shape %s", op, SHAPE(nd->in[0], sx));
    return MAAS_OK;
}

/* ================================================================ pad2d */

typedef struct {
    int64_t top, bottom, left, right;
} pad2d_attr;

static const maas_attr_field pad2d_fields[] = {
    {"top", 'l', offsetof(pad2d_attr, top)}, {"bottom", 'l', offsetof(pad2d_attr, bottom)},
    {"left", 'l', offsetof(pad2d_attr, left)}, {"right", 'l', offsetof(pad2d_attr, right)},
    {NULL, 0, 0}};

static maas_status pad2d_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    const pad2d_attr *a = CATTR(pad2d_attr, nd);
    maas_status s = need_nhwc(nd, "pad2d");
    if (s != MAAS_OK)
        return s;
    const maas_tensor *x = nd->in[0];
    int64_t oh = x->shape[1] + a->top + a->bottom, ow = x->shape[2] + a->left + a->right;
    char sx[160];
    if (oh < 0 || ow < 0)
        return maas_error(MAAS_ERR_SHAPE,
                          "pad2d: cropping (%lld, %lld) rows and (%lld, %lld) columns is more than "
                          "the input of shape %s has", (long long)-a->top, (long long)-a->bottom,
                          (long long)-a->left, (long long)-a->right, SHAPE(x, sx));
    spec_like(&outs[0], x);
    outs[0].shape[1] = oh;
    outs[0].shape[2] = ow;
    return MAAS_OK;
}

/* The rows/cols of the output that come from the input: out index o,
 * input index o - top, over o in [o0, o1). */
static void overlap(int64_t in, int64_t out, int64_t before, int64_t *o0, int64_t *o1)
{
    *o0 = before > 0 ? before : 0;
    *o1 = before + in < out ? before + in : out;
    if (*o1 < *o0)
        *o1 = *o0;
}

static maas_status pad2d_forward(maas_node *nd)
{
    const pad2d_attr *a = CATTR(pad2d_attr, nd);
    const maas_tensor *x = nd->in[0];
    maas_tensor *o = nd->out[0];
    const int64_t N = x->shape[0], H = x->shape[1], W = x->shape[2], C = x->shape[3];
    const int64_t OH = o->shape[1], OW = o->shape[2];
    int64_t h0, h1, w0, w1;
    overlap(H, OH, a->top, &h0, &h1);
    overlap(W, OW, a->left, &w0, &w1);
    const float *xs = x->data;
    float *os = o->data;
    const int nt = nthreads_for(o->size);
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t r = 0; r < N * OH; r++) {
        int64_t n = r / OH, oh = r % OH;
        float *orow = os + r * OW * C;
        if (oh < h0 || oh >= h1) {
            memset(orow, 0, sizeof(float) * (size_t)(OW * C));
            continue;
        }
        memset(orow, 0, sizeof(float) * (size_t)(w0 * C));
        if (w1 > w0)
            memcpy(orow + w0 * C, xs + ((n * H + (oh - a->top)) * W + (w0 - a->left)) * C,
                   sizeof(float) * (size_t)((w1 - w0) * C));
        memset(orow + w1 * C, 0, sizeof(float) * (size_t)((OW - w1) * C));
    }
    return MAAS_OK;
}

static maas_status pad2d_backward(const maas_node *nd, const maas_tensor *const *gout,
                                  maas_tensor *const *gin)
{
    const pad2d_attr *a = CATTR(pad2d_attr, nd);
    const maas_tensor *x = nd->in[0];
    const int64_t N = x->shape[0], H = x->shape[1], W = x->shape[2], C = x->shape[3];
    const int64_t OH = gout[0]->shape[1], OW = gout[0]->shape[2];
    int64_t h0, h1, w0, w1;
    overlap(H, OH, a->top, &h0, &h1);
    overlap(W, OW, a->left, &w0, &w1);
    const float *g = gout[0]->data;
    float *gx = gin[0]->data;
    const int nt = nthreads_for(gout[0]->size);
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t r = 0; r < N * (h1 - h0); r++) {
        int64_t n = r / (h1 - h0), oh = h0 + r % (h1 - h0);
        const float *restrict src = g + ((n * OH + oh) * OW + w0) * C;
        float *restrict dst = gx + ((n * H + (oh - a->top)) * W + (w0 - a->left)) * C;
        for (int64_t k = 0; k < (w1 - w0) * C; k++)
            dst[k] += src[k];
    }
    return MAAS_OK;
}

MAAS_OPDEF(maas_opdef_pad2d, "pad2d", 1, 1, pad2d_attr, 0, pad2d_fields, pad2d);

/* ============================================================= resize2d */

typedef struct {
    int64_t out_h, out_w, bilinear;
} resize_attr;

static const maas_attr_field resize_fields[] = {
    {"out_h", 'l', offsetof(resize_attr, out_h)}, {"out_w", 'l', offsetof(resize_attr, out_w)},
    {"bilinear", 'l', offsetof(resize_attr, bilinear)}, {NULL, 0, 0}};

static maas_status resize_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    const resize_attr *a = CATTR(resize_attr, nd);
    maas_status s = need_nhwc(nd, "resize2d");
    if (s != MAAS_OK)
        return s;
    const maas_tensor *x = nd->in[0];
    char sx[160];
    if (a->out_h < 1 || a->out_w < 1)
        return maas_error(MAAS_ERR_VALUE, "resize2d: the output size must be positive, received "
                          "(%lld, %lld)", (long long)a->out_h, (long long)a->out_w);
    if ((x->shape[1] == 0 || x->shape[2] == 0) && x->shape[0] * x->shape[3] > 0)
        return maas_error(MAAS_ERR_SHAPE, "resize2d: cannot resize an empty image (input of shape %s)",
                          SHAPE(x, sx));
    spec_like(&outs[0], x);
    outs[0].shape[1] = a->out_h;
    outs[0].shape[2] = a->out_w;
    return MAAS_OK;
}

/* source index and weight of output position d along an axis */
typedef struct {
    int64_t i0, i1;
    float w1; /* weight of i1; i0 gets 1 - w1 */
} tap;

static tap tap_for(int64_t d, int64_t in, int64_t out, int bilinear)
{
    tap t;
    double scale = (double)in / (double)out;
    if (!bilinear) {
        int64_t i = (int64_t)floor(((double)d + 0.5) * scale);
        if (i > in - 1)
            i = in - 1;
        t.i0 = t.i1 = i;
        t.w1 = 0.0f;
        return t;
    }
    double src = ((double)d + 0.5) * scale - 0.5;
    if (src < 0.0)
        src = 0.0;
    int64_t i0 = (int64_t)floor(src);
    if (i0 > in - 1)
        i0 = in - 1;
    t.i0 = i0;
    t.i1 = i0 + 1 < in ? i0 + 1 : in - 1;
    t.w1 = (float)(src - (double)i0);
    return t;
}

static maas_status resize_forward(maas_node *nd)
{
    const resize_attr *a = CATTR(resize_attr, nd);
    const maas_tensor *x = nd->in[0];
    const int64_t N = x->shape[0], H = x->shape[1], W = x->shape[2], C = x->shape[3];
    const int64_t OH = a->out_h, OW = a->out_w;
    const int bl = (int)a->bilinear;
    const float *xs = x->data;
    float *os = nd->out[0]->data;
    if (nd->out[0]->size == 0)
        return MAAS_OK;
    const int nt = nthreads_for(nd->out[0]->size);
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t r = 0; r < N * OH; r++) {
        int64_t n = r / OH, oh = r % OH;
        tap th = tap_for(oh, H, OH, bl);
        const float *row0 = xs + (n * H + th.i0) * W * C, *row1 = xs + (n * H + th.i1) * W * C;
        for (int64_t ow = 0; ow < OW; ow++) {
            tap tw = tap_for(ow, W, OW, bl);
            float *restrict o = os + (r * OW + ow) * C;
            const float *restrict p00 = row0 + tw.i0 * C;
            if (!bl) {
                memcpy(o, p00, sizeof(float) * (size_t)C);
                continue;
            }
            const float *restrict p01 = row0 + tw.i1 * C, *restrict p10 = row1 + tw.i0 * C,
                                  *restrict p11 = row1 + tw.i1 * C;
            const float wy = th.w1, wx = tw.w1;
            for (int64_t c = 0; c < C; c++) {
                float top = p00[c] + (p01[c] - p00[c]) * wx;
                float bot = p10[c] + (p11[c] - p10[c]) * wx;
                o[c] = top + (bot - top) * wy;
            }
        }
    }
    return MAAS_OK;
}

static maas_status resize_backward(const maas_node *nd, const maas_tensor *const *gout,
                                   maas_tensor *const *gin)
{
    const resize_attr *a = CATTR(resize_attr, nd);
    const maas_tensor *x = nd->in[0];
    const int64_t N = x->shape[0], H = x->shape[1], W = x->shape[2], C = x->shape[3];
    const int64_t OH = a->out_h, OW = a->out_w;
    const int bl = (int)a->bilinear;
    const float *gs = gout[0]->data;
    float *gx = gin[0]->data;
    if (gout[0]->size == 0)
        return MAAS_OK;
    const int nt = nthreads_for(gout[0]->size);
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t n = 0; n < N; n++) {
        for (int64_t oh = 0; oh < OH; oh++) {
            tap th = tap_for(oh, H, OH, bl);
            float *row0 = gx + (n * H + th.i0) * W * C, *row1 = gx + (n * H + th.i1) * W * C;
            for (int64_t ow = 0; ow < OW; ow++) {
                tap tw = tap_for(ow, W, OW, bl);
                const float *restrict g = gs + ((n * OH + oh) * OW + ow) * C;
                float *p00 = row0 + tw.i0 * C;
                if (!bl) {
                    for (int64_t c = 0; c < C; c++)
                        p00[c] += g[c];
                    continue;
                }
                float *p01 = row0 + tw.i1 * C, *p10 = row1 + tw.i0 * C, *p11 = row1 + tw.i1 * C;
                const float wy = th.w1, wx = tw.w1;
                for (int64_t c = 0; c < C; c++) {
                    float gt = g[c] * (1.0f - wy), gb = g[c] * wy;
                    p00[c] += gt * (1.0f - wx);
                    p01[c] += gt * wx;
                    p10[c] += gb * (1.0f - wx);
                    p11[c] += gb * wx;
                }
            }
        }
    }
    return MAAS_OK;
}

MAAS_OPDEF(maas_opdef_resize2d, "resize2d", 1, 1, resize_attr, 0, resize_fields, resize);

/* ============================================================== permute */

typedef struct {
    int64_t ndim, perm[MAAS_MAX_DIMS]; /* 'S' field: a length, then the axes */
} permute_attr;

static const maas_attr_field permute_fields[] = {{"perm", 'S', offsetof(permute_attr, ndim)},
                                                 {NULL, 0, 0}};

static maas_status permute_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    const permute_attr *a = CATTR(permute_attr, nd);
    const maas_tensor *x = nd->in[0];
    char sx[160];
    if (x->dtype != MAAS_F32)
        return maas_error(MAAS_ERR_TYPE, "permute: expected a float32 tensor, received %s",
                          maas_dtype_name(x->dtype));
    if (a->ndim != x->ndim)
        return maas_error(MAAS_ERR_SHAPE, "permute: %lld axes given for an input of shape %s",
                          (long long)a->ndim, SHAPE(x, sx));
    int seen[MAAS_MAX_DIMS] = {0};
    for (int d = 0; d < x->ndim; d++) {
        int64_t p = a->perm[d];
        if (p < 0 || p >= x->ndim || seen[p]++)
            return maas_error(MAAS_ERR_VALUE,
                              "permute: the axes must be a permutation of 0..%d (input of shape "
                              "%s)", x->ndim - 1, SHAPE(x, sx));
    }
    spec_like(&outs[0], x);
    for (int d = 0; d < x->ndim; d++)
        outs[0].shape[d] = x->shape[a->perm[d]];
    return MAAS_OK;
}

/* out[idx] (+)= x[sum idx_d * stride_of_x(perm[d])]: a strided walk over
 * the output with the input's strides permuted; the last axis inner. */
static void permute_copy(float *out, float *x, const maas_tensor *xt, const int64_t *perm,
                         int accumulate_into_x)
{
    const int nd = xt->ndim;
    int64_t xstride[MAAS_MAX_DIMS], ostride_in_x[MAAS_MAX_DIMS], oshape[MAAS_MAX_DIMS];
    int64_t s = 1;
    for (int d = nd - 1; d >= 0; d--) {
        xstride[d] = s;
        s *= xt->shape[d];
    }
    for (int d = 0; d < nd; d++) {
        ostride_in_x[d] = xstride[perm[d]];
        oshape[d] = xt->shape[perm[d]];
    }
    const int64_t total = xt->size;
    if (total == 0)
        return;
    const int64_t last = nd ? oshape[nd - 1] : 1, ls = nd ? ostride_in_x[nd - 1] : 1;
    const int64_t rows = total / last;
    const int nt = nthreads_for(total);
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t r = 0; r < rows; r++) {
        int64_t rem = r, off = 0;
        for (int d = nd - 2; d >= 0; d--) {
            int64_t i = rem % oshape[d];
            rem /= oshape[d];
            off += i * ostride_in_x[d];
        }
        float *o = out + r * last;
        if (accumulate_into_x) {
            /* out is the gradient of the output, x the gradient of the input */
            for (int64_t j = 0; j < last; j++)
                x[off + j * ls] += o[j];
        } else {
            for (int64_t j = 0; j < last; j++)
                o[j] = x[off + j * ls];
        }
    }
}

static maas_status permute_forward(maas_node *nd)
{
    permute_copy(nd->out[0]->data, nd->in[0]->data, nd->in[0], CATTR(permute_attr, nd)->perm, 0);
    return MAAS_OK;
}

static maas_status permute_backward(const maas_node *nd, const maas_tensor *const *gout,
                                    maas_tensor *const *gin)
{
    /* each input element is one output element: the scatter has no
     * collisions, so any thread order gives the same bits */
    permute_copy(gout[0]->data, gin[0]->data, nd->in[0], CATTR(permute_attr, nd)->perm,
                 1);
    return MAAS_OK;
}

MAAS_OPDEF(maas_opdef_permute, "permute", 1, 1, permute_attr, 0, permute_fields, permute);
