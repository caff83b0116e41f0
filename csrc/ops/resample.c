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

/* ========================================================== transform2d
 *
 * in: x (N, H, W, C), params (N or 1, K). out (N, OH, OW, C). Each output
 * pixel (ox, oy) samples x at (ix, iy) = ((a0 ox + a1 oy + a2) / k,
 * (b0 ox + b1 oy + b2) / k), k = c0 ox + c1 oy + 1, with the sample's
 * matrix [a0 a1 a2 b0 b1 b2 c0 c1] (TensorFlow's / Keras's projective
 * transform, mapping output to input coordinates), made from params by
 * `kind`:
 *   0 matrix       params (., 8): the matrix itself
 *   1 rotation     params (., 1): the angle in radians about the centre
 *                  (Keras's RandomRotation matrix)
 *   2 translation  params (., 2): (dx, dy) in pixels; the content moves by
 *                  +dx, +dy
 *   3 flip         params (., 2): (u_h, u_v) in [0, 1); flips horizontally
 *                  when flags & 1 and u_h < 0.5, vertically when flags & 2
 *                  and u_v < 0.5
 *   4 crop         params (., 2): (u_y, u_x) in [0, 1): the window of
 *                  OH x OW starting at floor(u * (H - OH + 1))
 * Coordinates outside the image follow fill_mode (0 constant: fill_value,
 * 1 reflect (d c b a | a b c d | d c b a), 2 wrap, 3 nearest, 4 mirror
 * (d c b | a b c d | c b a)), as TensorFlow's ImageProjectiveTransformV3;
 * interpolation 0 nearest (rounded), 1 bilinear. The backward scatters the
 * gradient to the sampled pixels (per sample, in a fixed order); params
 * get none. */

typedef struct {
    int64_t kind, out_h, out_w, interpolation, fill_mode;
    double fill_value;
    int64_t flags;
} transform_attr;

static const maas_attr_field transform_fields[] = {
    {"kind", 'l', offsetof(transform_attr, kind)},
    {"out_h", 'l', offsetof(transform_attr, out_h)},
    {"out_w", 'l', offsetof(transform_attr, out_w)},
    {"interpolation", 'l', offsetof(transform_attr, interpolation)},
    {"fill_mode", 'l', offsetof(transform_attr, fill_mode)},
    {"fill_value", 'd', offsetof(transform_attr, fill_value)},
    {"flags", 'l', offsetof(transform_attr, flags)},
    {NULL, 0, 0}};

static const int64_t transform_k[] = {8, 1, 2, 2, 2};

static maas_status transform_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    const transform_attr *a = CATTR(transform_attr, nd);
    const char *op = "transform2d";
    maas_status s = need_nhwc(nd, op);
    if (s != MAAS_OK)
        return s;
    const maas_tensor *x = nd->in[0], *p = nd->in[1];
    char sx[160], sp[160];
    if (a->kind < 0 || a->kind > 4)
        return maas_error(MAAS_ERR_VALUE, "%s: unknown kind %lld", op, (long long)a->kind);
    if (a->fill_mode < 0 || a->fill_mode > 4 || a->interpolation < 0 || a->interpolation > 1)
        return maas_error(MAAS_ERR_VALUE, "%s: unknown fill_mode %lld or interpolation %lld", op,
                          (long long)a->fill_mode, (long long)a->interpolation);
    if (p->dtype != MAAS_F32 || p->ndim != 2 || p->shape[1] != transform_k[a->kind] ||
        (p->shape[0] != x->shape[0] && p->shape[0] != 1))
        return maas_error(MAAS_ERR_SHAPE,
                          "%s: parameters of shape %s do not fit input of shape %s: expected "
                          "float32 (%lld or 1, %lld)", op, SHAPE(p, sp), SHAPE(x, sx),
                          (long long)x->shape[0], (long long)transform_k[a->kind]);
    if (a->out_h < 1 || a->out_w < 1)
        return maas_error(MAAS_ERR_VALUE, "%s: the output size must be positive, received (%lld, %lld)",
                          op, (long long)a->out_h, (long long)a->out_w);
    if (a->kind == 4 && (a->out_h > x->shape[1] || a->out_w > x->shape[2]))
        return maas_error(MAAS_ERR_SHAPE, "%s: a crop of (%lld, %lld) does not fit input of shape %s",
                          op, (long long)a->out_h, (long long)a->out_w, SHAPE(x, sx));
    if ((x->shape[1] == 0 || x->shape[2] == 0) && x->shape[0] * x->shape[3] > 0)
        return maas_error(MAAS_ERR_SHAPE, "%s: empty images (input of shape %s)", op, SHAPE(x, sx));
    nd->nograd = 2u;
    spec_like(&outs[0], x);
    outs[0].shape[1] = a->out_h;
    outs[0].shape[2] = a->out_w;
    return MAAS_OK;
}

static void transform_matrix(float *m, const transform_attr *a, const float *p, int64_t H, int64_t W)
{
    for (int k = 0; k < 8; k++)
        m[k] = 0.0f;
    m[0] = m[4] = 1.0f;
    switch (a->kind) {
    case 0:
        for (int k = 0; k < 8; k++)
            m[k] = p[k];
        break;
    case 1: {
        float c = cosf(p[0]), s = sinf(p[0]);
        float w1 = (float)(W - 1), h1 = (float)(H - 1);
        m[0] = c;
        m[1] = -s;
        m[2] = (w1 - (c * w1 - s * h1)) / 2.0f;
        m[3] = s;
        m[4] = c;
        m[5] = (h1 - (s * w1 + c * h1)) / 2.0f;
        break;
    }
    case 2:
        m[2] = -p[0];
        m[5] = -p[1];
        break;
    case 3:
        if ((a->flags & 1) && p[0] < 0.5f) {
            m[0] = -1.0f;
            m[2] = (float)(W - 1);
        }
        if ((a->flags & 2) && p[1] < 0.5f) {
            m[4] = -1.0f;
            m[5] = (float)(H - 1);
        }
        break;
    default: { /* crop */
        int64_t ry = H - a->out_h + 1, rx = W - a->out_w + 1;
        int64_t sy = (int64_t)floorf(p[0] * (float)ry), sx = (int64_t)floorf(p[1] * (float)rx);
        if (sy > ry - 1)
            sy = ry - 1;
        if (sx > rx - 1)
            sx = rx - 1;
        if (sy < 0)
            sy = 0;
        if (sx < 0)
            sx = 0;
        m[2] = (float)sx;
        m[5] = (float)sy;
        break;
    }
    }
}

/* TensorFlow's map_coordinate for one axis of length len */
static float map_coord(float v, int64_t len, int mode)
{
    const float fl = (float)len;
    if (mode == 1) { /* reflect */
        if (v < 0.0f) {
            if (len <= 1) {
                v = 0.0f;
            } else {
                const float sz2 = 2.0f * fl;
                if (v < sz2)
                    v = sz2 * (float)(int64_t)(-v / sz2) + v;
                v = v < -fl ? v + sz2 : -v - 1.0f;
            }
        } else if (v > fl - 1.0f) {
            if (len <= 1) {
                v = 0.0f;
            } else {
                const float sz2 = 2.0f * fl;
                v -= sz2 * (float)(int64_t)(v / sz2);
                if (v >= fl)
                    v = sz2 - v - 1.0f;
            }
        }
    } else if (mode == 2) { /* wrap */
        if (v < 0.0f) {
            if (len <= 1) {
                v = 0.0f;
            } else {
                const float sz = fl - 1.0f;
                v += fl * ((float)(int64_t)(-v / sz) + 1.0f);
            }
        } else if (v > fl - 1.0f) {
            if (len <= 1) {
                v = 0.0f;
            } else {
                const float sz = fl - 1.0f;
                v -= fl * (float)(int64_t)(v / sz);
            }
        }
    } else if (mode == 4) { /* mirror */
        if (v < 0.0f) {
            if (len <= 1) {
                v = 0.0f;
            } else {
                const float sz2 = 2.0f * fl - 2.0f;
                v = -v;
                v -= sz2 * (float)(int64_t)(v / sz2);
                if (v > fl - 1.0f)
                    v = sz2 - v;
            }
        } else if (v > fl - 1.0f) {
            if (len <= 1) {
                v = 0.0f;
            } else {
                const float sz2 = 2.0f * fl - 2.0f;
                v -= sz2 * (float)(int64_t)(v / sz2);
                if (v > fl - 1.0f)
                    v = sz2 - v;
            }
        }
    } else if (mode == 3) { /* nearest */
        return v < 0.0f ? 0.0f : (v > fl - 1.0f ? fl - 1.0f : v);
    } else {
        return v; /* constant: reads outside give fill_value */
    }
    return v < 0.0f ? 0.0f : (v > fl - 1.0f ? fl - 1.0f : v);
}

/* the (up to 4) pixels and weights output pixel (ox, oy) reads */
typedef struct {
    int64_t idx[4]; /* h * W + w, or -1: outside (fill_value) */
    float w[4];     /* the weight of each (products of the axis weights) */
    float wx0, wx1, wy0, wy1;
    int n;
} sample4;

static sample4 sample_at(const float *m, int64_t ox, int64_t oy, int64_t H, int64_t W,
                         const transform_attr *a)
{
    sample4 s;
    const float fx = (float)ox, fy = (float)oy;
    const float k = m[6] * fx + m[7] * fy + 1.0f;
    float ix = (m[0] * fx + m[1] * fy + m[2]) / k;
    float iy = (m[3] * fx + m[4] * fy + m[5]) / k;
    const int mode = (int)a->fill_mode;
    ix = map_coord(ix, W, mode);
    iy = map_coord(iy, H, mode);
    if (a->interpolation == 0) {
        int64_t x0 = (int64_t)roundf(ix), y0 = (int64_t)roundf(iy);
        s.wx0 = s.wy0 = 1.0f;
        s.wx1 = s.wy1 = 0.0f;
        s.n = 1;
        s.w[0] = 1.0f;
        s.idx[0] = (x0 >= 0 && x0 < W && y0 >= 0 && y0 < H) ? y0 * W + x0 : -1;
        return s;
    }
    const float xf = floorf(ix), yf = floorf(iy);
    const int64_t x0 = (int64_t)xf, y0 = (int64_t)yf, x1 = x0 + 1, y1 = y0 + 1;
    const float wx1 = ix - xf, wx0 = (xf + 1.0f) - ix, wy1 = iy - yf, wy0 = (yf + 1.0f) - iy;
    const int64_t xs[2] = {x0, x1}, ys[2] = {y0, y1};
    const float wxs[2] = {wx0, wx1}, wys[2] = {wy0, wy1};
    s.wx0 = wx0;
    s.wx1 = wx1;
    s.wy0 = wy0;
    s.wy1 = wy1;
    s.n = 4;
    for (int j = 0; j < 2; j++)
        for (int i = 0; i < 2; i++) {
            int q = j * 2 + i;
            int inside = xs[i] >= 0 && xs[i] < W && ys[j] >= 0 && ys[j] < H;
            s.idx[q] = inside ? ys[j] * W + xs[i] : -1;
            s.w[q] = wys[j] * wxs[i];
        }
    return s;
}

static maas_status transform_forward(maas_node *nd)
{
    const transform_attr *a = CATTR(transform_attr, nd);
    const maas_tensor *x = nd->in[0], *p = nd->in[1];
    const int64_t N = x->shape[0], H = x->shape[1], W = x->shape[2], C = x->shape[3];
    const int64_t OH = a->out_h, OW = a->out_w, K = p->shape[1];
    const float fill = (float)a->fill_value;
    const float *xs = x->data;
    float *os = nd->out[0]->data;
    if (nd->out[0]->size == 0)
        return MAAS_OK;
    const int nt = nthreads_for(nd->out[0]->size * 4);
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t r = 0; r < N * OH; r++) {
        int64_t n = r / OH, oy = r % OH;
        float m[8];
        transform_matrix(m, a, p->data + (p->shape[0] == 1 ? 0 : n) * K, H, W);
        const float *xn = xs + n * H * W * C;
        for (int64_t ox = 0; ox < OW; ox++) {
            sample4 s = sample_at(m, ox, oy, H, W, a);
            float *restrict o = os + (r * OW + ox) * C;
            if (s.n == 1) {
                if (s.idx[0] >= 0)
                    memcpy(o, xn + s.idx[0] * C, sizeof(float) * (size_t)C);
                else
                    for (int64_t c = 0; c < C; c++)
                        o[c] = fill;
                continue;
            }
            /* TensorFlow's order: along x within each row, then along y */
            const float *p00 = s.idx[0] >= 0 ? xn + s.idx[0] * C : NULL;
            const float *p01 = s.idx[1] >= 0 ? xn + s.idx[1] * C : NULL;
            const float *p10 = s.idx[2] >= 0 ? xn + s.idx[2] * C : NULL;
            const float *p11 = s.idx[3] >= 0 ? xn + s.idx[3] * C : NULL;
            for (int64_t c = 0; c < C; c++) {
                float top = s.wx0 * (p00 ? p00[c] : fill) + s.wx1 * (p01 ? p01[c] : fill);
                float bot = s.wx0 * (p10 ? p10[c] : fill) + s.wx1 * (p11 ? p11[c] : fill);
                o[c] = s.wy0 * top + s.wy1 * bot;
            }
        }
    }
    return MAAS_OK;
}

static maas_status transform_backward(const maas_node *nd, const maas_tensor *const *gout,
                                      maas_tensor *const *gin)
{
    const transform_attr *a = CATTR(transform_attr, nd);
    const maas_tensor *x = nd->in[0], *p = nd->in[1];
    const int64_t N = x->shape[0], H = x->shape[1], W = x->shape[2], C = x->shape[3];
    const int64_t OH = a->out_h, OW = a->out_w, K = p->shape[1];
    const float *gs = gout[0]->data;
    float *gx = gin[0]->data;
    if (gout[0]->size == 0)
        return MAAS_OK;
    const int nt = nthreads_for(gout[0]->size * 4);
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t n = 0; n < N; n++) {
        float m[8];
        transform_matrix(m, a, p->data + (p->shape[0] == 1 ? 0 : n) * K, H, W);
        float *gn = gx + n * H * W * C;
        for (int64_t oy = 0; oy < OH; oy++)
            for (int64_t ox = 0; ox < OW; ox++) {
                sample4 s = sample_at(m, ox, oy, H, W, a);
                const float *restrict g = gs + ((n * OH + oy) * OW + ox) * C;
                for (int q = 0; q < s.n; q++) {
                    if (s.idx[q] < 0 || s.w[q] == 0.0f)
                        continue;
                    float *restrict d = gn + s.idx[q] * C;
                    const float w = s.w[q];
                    for (int64_t c = 0; c < C; c++)
                        d[c] += g[c] * w;
                }
            }
    }
    return MAAS_OK;
}

MAAS_OPDEF(maas_opdef_transform2d, "transform2d", 2, 2, transform_attr, 0, transform_fields,
           transform);
