/* ops/qconv.c -- int8 convolution (im2col + the int8 GEMM of qgemm.c) and
 * the int8 embedding lookup; the ops "qconv2d" and "qembedding".
 *
 * qconv2d, NHWC, Keras's conv relation (csrc/ops/conv.c) with the kernel
 * quantized (maas.quantization.conv):
 *   x (N, H, W, C) f32; packed (groups * blocks(OCg), row_bytes(K)) i8: for
 *   each group g the kernel (K = KH*KW*Cg, OCg) of columns g*OCg.. packed by
 *   maas_qgemm_pack, the groups back to back; kernel_scale (OC) f32;
 *   [bias (OC) f32]; [input_scale () f32 when static]
 *   out (N, OH, OW, OC)[n, oh, ow, g*OCg + o] =
 *       maas_qgemm_forward(col_g, packed_g, scale_g, bias_g)[row, o]
 *   where row = (n*OH + oh)*OW + ow and col_g (rows, K) is the im2col matrix
 *   of group g: col_g[row][(kh*KW + kw)*Cg + c] =
 *       x[n, oh*sh - pt + kh*dh, ow*sw - pl + kw*dw, g*Cg + c]  (0 outside x).
 * So each output pixel's receptive field (one im2col row) is quantized by
 * its own abs-max (dynamic) or by the calibrated scale (static), and the
 * kernels of qgemm.c (reference, AVX2, AVX512-VNNI) run unchanged: every
 * path equals the reference qgemm on the im2col matrix bit for bit. Rows
 * are processed in chunks (the column buffer stays near 1 MB); results do
 * not depend on the chunking or the thread count (each row is one row of
 * one GEMM). A 1x1 convolution with stride 1, no padding and one group
 * passes x itself as the matrix (no copy).
 *
 * Backward (the gradient through the dequantized kernel, as Keras's int8
 * layers do; the int8 kernel itself gets none):
 *   gx += col2im(gout_g @ (q_g / scale_g)^T)   gbias += column sums of gout
 * The col2im adds in a fixed order (serial), so it is deterministic.
 *
 * qembedding (Keras 3's int8 Embedding):
 *   table (V, D) i8, scale (V) f32, idx (any shape) int32/int64/float32
 *   out (*idx.shape, D) = (float)table[idx] / scale[idx]
 *   [mask (*idx.shape) = idx != 0 as 1.0/0.0 when mask_zero]
 * No gradient (the int8 table is not trained, as in Keras). */
#include "../opdef.h"

#include <math.h>
#include <stdlib.h>

enum { QC_PAD_VALID = 0, QC_PAD_SAME = 1, QC_PAD_CAUSAL = 2 };

#define QC_COL_FLOATS (1 << 18) /* target floats of one column buffer */

typedef struct {
    int64_t N, H, W, C, OH, OW, OC, KH, KW, sh, sw, dh, dw, pt, pl, groups, Cg, OCg, K;
} qconv_geom;

/* rows of the im2col matrix per chunk: a multiple of 64 (qgemm's row tile) */
static int64_t qc_chunk(const qconv_geom *g, int64_t M)
{
    int64_t r = QC_COL_FLOATS / (g->K > 0 ? g->K : 1);
    r = r < 64 ? 64 : r / 64 * 64;
    return r < M ? r : M;
}

static int qc_pointwise(const qconv_geom *g)
{
    return g->KH == 1 && g->KW == 1 && g->sh == 1 && g->sw == 1 && g->pt == 0 && g->pl == 0 &&
           g->groups == 1 && g->OH == g->H && g->OW == g->W;
}

/* col (r1 - r0, K): the im2col rows r0..r1 of group gi */
static void qc_im2col(float *col, const float *x, const qconv_geom *g, int64_t gi, int64_t r0,
                      int64_t r1)
{
    const int64_t K = g->K, Cg = g->Cg, C = g->C;
    int par = (double)(r1 - r0) * (double)K > (double)(1 << 18) && maas_get_num_threads() > 1;
#pragma omp parallel for schedule(static) num_threads(maas_get_num_threads()) if (par)
    for (int64_t r = r0; r < r1; r++) {
        int64_t n = r / (g->OH * g->OW), p = r % (g->OH * g->OW);
        int64_t oh = p / g->OW, ow = p % g->OW;
        float *dst = col + (r - r0) * K;
        for (int64_t kh = 0; kh < g->KH; kh++) {
            int64_t ih = oh * g->sh - g->pt + kh * g->dh;
            for (int64_t kw = 0; kw < g->KW; kw++) {
                int64_t iw = ow * g->sw - g->pl + kw * g->dw;
                float *d = dst + (kh * g->KW + kw) * Cg;
                if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W)
                    memset(d, 0, sizeof(float) * (size_t)Cg);
                else
                    memcpy(d, x + ((n * g->H + ih) * g->W + iw) * C + gi * Cg,
                           sizeof(float) * (size_t)Cg);
            }
        }
    }
}

/* gx += col2im(gcol) for rows r0..r1 of group gi (serial: a fixed order) */
static void qc_col2im(float *gx, const float *gcol, const qconv_geom *g, int64_t gi, int64_t r0,
                      int64_t r1)
{
    const int64_t K = g->K, Cg = g->Cg, C = g->C;
    for (int64_t r = r0; r < r1; r++) {
        int64_t n = r / (g->OH * g->OW), p = r % (g->OH * g->OW);
        int64_t oh = p / g->OW, ow = p % g->OW;
        const float *src = gcol + (r - r0) * K;
        for (int64_t kh = 0; kh < g->KH; kh++) {
            int64_t ih = oh * g->sh - g->pt + kh * g->dh;
            if (ih < 0 || ih >= g->H)
                continue;
            for (int64_t kw = 0; kw < g->KW; kw++) {
                int64_t iw = ow * g->sw - g->pl + kw * g->dw;
                if (iw < 0 || iw >= g->W)
                    continue;
                const float *s = src + (kh * g->KW + kw) * Cg;
                float *d = gx + ((n * g->H + ih) * g->W + iw) * C + gi * Cg;
                for (int64_t c = 0; c < Cg; c++)
                    d[c] += s[c];
            }
        }
    }
}

/* out (N, OH, OW, OC) = the int8 convolution (the contract at the top).
 * static_scale > 0 fixes the inputs' scale; 0 quantizes each im2col row by
 * its abs-max. Overwrites out. */
static maas_status qconv2d_fwd(float *out, const float *x, const int8_t *packed,
                               const float *sw, const float *bias, float static_scale,
                                 const qconv_geom *g, int isa)
{
    int64_t M = 0, gsz = 0;
    if (maas_mul_size(g->N, g->OH, &M) || maas_mul_size(M, g->OW, &M))
        return maas_error(MAAS_ERR_NOMEM, "qconv2d: output size overflows");
    if (M == 0 || g->OC == 0)
        return MAAS_OK;
    const int64_t G = g->groups, OCg = g->OCg, K = g->K;
    const int64_t pb = maas_qgemm_blocks(OCg) * maas_qgemm_row_bytes(K); /* bytes per group */
    if (qc_pointwise(g))
        return maas_qgemm_forward(out, x, packed, sw, bias, static_scale, M, K, OCg, isa);
    int64_t R = qc_chunk(g, M), ncol = 0, ntmp = 0;
    if (maas_mul_size(R, K, &ncol) || maas_mul_size(R, OCg, &ntmp) ||
        maas_mul_size(ncol, (int64_t)sizeof(float), &gsz))
        return maas_error(MAAS_ERR_NOMEM, "qconv2d: column buffer size overflows");
    float *col = malloc(sizeof(float) * (size_t)(ncol ? ncol : 1));
    float *tmp = G > 1 ? malloc(sizeof(float) * (size_t)(ntmp ? ntmp : 1)) : NULL;
    if (!col || (G > 1 && !tmp)) {
        free(col);
        free(tmp);
        return maas_error(MAAS_ERR_NOMEM, "qconv2d: out of memory for a (%lld, %lld) column "
                          "buffer", (long long)R, (long long)K);
    }
    maas_status s = MAAS_OK;
    for (int64_t r0 = 0; r0 < M && s == MAAS_OK; r0 += R) {
        int64_t r1 = r0 + R < M ? r0 + R : M, rows = r1 - r0;
        for (int64_t gi = 0; gi < G && s == MAAS_OK; gi++) {
            qc_im2col(col, x, g, gi, r0, r1);
            float *dst = G > 1 ? tmp : out + r0 * g->OC;
            s = maas_qgemm_forward(dst, col, packed + gi * pb, sw + gi * OCg,
                                   bias ? bias + gi * OCg : NULL, static_scale, rows, K, OCg, isa);
            if (s == MAAS_OK && G > 1)
                for (int64_t r = 0; r < rows; r++)
                    memcpy(out + (r0 + r) * g->OC + gi * OCg, tmp + r * OCg,
                           sizeof(float) * (size_t)OCg);
        }
    }
    free(col);
    free(tmp);
    return s;
}

/* gx (N, H, W, C) += the data gradient through the dequantized kernel;
 * gbias (OC) += column sums of gout (either NULL-able). */
static maas_status qconv2d_bwd(float *gx, float *gbias, const float *gout,
                                  const int8_t *packed, const float *sw, const qconv_geom *g)
{
    int64_t M = g->N * g->OH * g->OW;
    const int64_t OC = g->OC, G = g->groups, OCg = g->OCg, K = g->K;
    if (gbias)
        for (int64_t r = 0; r < M; r++)
            for (int64_t j = 0; j < OC; j++)
                gbias[j] += gout[r * OC + j];
    if (!gx || M == 0)
        return MAAS_OK;
    const int64_t pb = maas_qgemm_blocks(OCg) * maas_qgemm_row_bytes(K);
    int64_t nw = 0, R = qc_chunk(g, M), ncol = 0;
    if (maas_mul_size(K, OC, &nw) || maas_mul_size(R, K, &ncol))
        return maas_error(MAAS_ERR_NOMEM, "qconv2d: kernel size overflows");
    float *w = malloc(sizeof(float) * (size_t)(nw ? nw : 1));
    int8_t *q = malloc((size_t)(K * OCg > 0 ? K * OCg : 1));
    float *col = malloc(sizeof(float) * (size_t)(ncol ? ncol : 1));
    maas_status s = MAAS_OK;
    if (!w || !q || !col) {
        s = maas_error(MAAS_ERR_NOMEM, "qconv2d: out of memory for the dequantized kernel");
        goto done;
    }
    for (int64_t gi = 0; gi < G; gi++) {
        maas_qgemm_unpack(q, packed + gi * pb, K, OCg);
        for (int64_t k = 0; k < K; k++)
            for (int64_t j = 0; j < OCg; j++)
                w[k * OC + gi * OCg + j] = (float)q[k * OCg + j] / sw[gi * OCg + j];
    }
    for (int64_t r0 = 0; r0 < M && s == MAAS_OK; r0 += R) {
        int64_t r1 = r0 + R < M ? r0 + R : M;
        for (int64_t gi = 0; gi < G && s == MAAS_OK; gi++) {
            /* col (rows, K) = gout_g (rows, OCg) @ w_g (K, OCg)^T */
            s = maas_sgemm(MAAS_NO_TRANS, MAAS_TRANS, r1 - r0, K, OCg, 1.f,
                           gout + r0 * OC + gi * OCg, OC, w + gi * OCg, OC, 0.f, col, K);
            if (s == MAAS_OK)
                qc_col2im(gx, col, g, gi, r0, r1);
        }
    }
done:
    free(w);
    free(q);
    free(col);
    return s;
}

/* ------------------------------------------------------------ qconv2d op */

typedef struct {
    int64_t sh, sw, dh, dw, padding, groups, kh, kw, has_bias, is_static, isa;
    qconv_geom g;
} qconv_attr;

static const maas_attr_field qconv_fields[] = {
    {"stride_h", 'l', offsetof(qconv_attr, sh)},     {"stride_w", 'l', offsetof(qconv_attr, sw)},
    {"dilation_h", 'l', offsetof(qconv_attr, dh)},   {"dilation_w", 'l', offsetof(qconv_attr, dw)},
    {"padding", 'l', offsetof(qconv_attr, padding)}, {"groups", 'l', offsetof(qconv_attr, groups)},
    {"kernel_h", 'l', offsetof(qconv_attr, kh)},     {"kernel_w", 'l', offsetof(qconv_attr, kw)},
    {"has_bias", 'l', offsetof(qconv_attr, has_bias)},
    {"static", 'l', offsetof(qconv_attr, is_static)}, {"isa", 'l', offsetof(qconv_attr, isa)},
    {NULL, 0, 0}};

static int qc_len(int64_t in, int64_t k, int64_t s, int64_t d, int64_t mode, int64_t *out,
                  int64_t *before)
{
    int64_t keff = (k - 1) * d + 1;
    if (mode == QC_PAD_SAME) {
        *out = (in + s - 1) / s;
        int64_t total = (*out - 1) * s + keff - in;
        *before = total > 0 ? total / 2 : 0;
        return 0;
    }
    int64_t pad = mode == QC_PAD_CAUSAL ? keff - 1 : 0;
    *before = pad;
    if (in + pad < keff)
        return -1;
    *out = (in + pad - keff) / s + 1;
    return 0;
}

static maas_status qconv2d_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    qconv_attr *a = ATTR(qconv_attr, nd);
    const maas_tensor *x = nd->in[0], *p = nd->in[1], *sc = nd->in[2];
    char s1[160], s2[160];
    int want = 3 + (a->has_bias != 0) + (a->is_static != 0);
    if (nd->nin != want)
        return maas_error(MAAS_ERR_VALUE, "qconv2d: expected %d inputs (x, packed kernel, kernel "
                          "scale%s%s), received %d", want, a->has_bias ? ", bias" : "",
                          a->is_static ? ", input scale" : "", nd->nin);
    if (a->isa < 0 || a->isa >= MAAS_QISA_COUNT)
        return maas_error(MAAS_ERR_VALUE, "qconv2d: unknown isa %lld", (long long)a->isa);
    if (x->dtype != MAAS_F32 || sc->dtype != MAAS_F32)
        return maas_error(MAAS_ERR_TYPE, "qconv2d: x and the kernel scale must be float32, "
                          "received %s and %s", maas_dtype_name(x->dtype),
                          maas_dtype_name(sc->dtype));
    if (p->dtype != MAAS_I8)
        return maas_error(MAAS_ERR_TYPE, "qconv2d: the packed kernel must be int8, received %s",
                          maas_dtype_name(p->dtype));
    for (int i = 3; i < nd->nin; i++)
        if (nd->in[i]->dtype != MAAS_F32)
            return maas_error(MAAS_ERR_TYPE, "qconv2d: input %d must be float32, received %s", i,
                              maas_dtype_name(nd->in[i]->dtype));
    if (x->ndim != 4 || sc->ndim != 1)
        return maas_error(MAAS_ERR_SHAPE, "qconv2d: input shape %s and kernel scale shape %s: "
                          "expected a 4-D input (batch, height, width, channels) and a 1-D "
                          "scale (filters,)", SHAPE(x, s1), SHAPE(sc, s2));
    if (a->sh < 1 || a->sw < 1 || a->dh < 1 || a->dw < 1 || a->kh < 1 || a->kw < 1)
        return maas_error(MAAS_ERR_VALUE, "qconv2d: kernel size, strides and dilation_rate must "
                          "be positive, received kernel (%lld, %lld), strides (%lld, %lld), "
                          "dilation_rate (%lld, %lld)", (long long)a->kh, (long long)a->kw,
                          (long long)a->sh, (long long)a->sw, (long long)a->dh, (long long)a->dw);
    if (a->padding < QC_PAD_VALID || a->padding > QC_PAD_CAUSAL)
        return maas_error(MAAS_ERR_VALUE, "qconv2d: unknown padding code %lld",
                          (long long)a->padding);
    qconv_geom *g = &a->g;
    memset(g, 0, sizeof *g);
    g->N = x->shape[0], g->H = x->shape[1], g->W = x->shape[2], g->C = x->shape[3];
    g->OC = sc->shape[0], g->KH = a->kh, g->KW = a->kw;
    g->sh = a->sh, g->sw = a->sw, g->dh = a->dh, g->dw = a->dw, g->groups = a->groups;
    if (a->groups < 1 || g->C % a->groups || g->OC % a->groups)
        return maas_error(MAAS_ERR_VALUE, "qconv2d: input channels (%lld) and filters (%lld) "
                          "must both be divisible by groups=%lld", (long long)g->C,
                          (long long)g->OC, (long long)a->groups);
    g->Cg = g->C / a->groups, g->OCg = g->OC / a->groups;
    if (maas_mul_size(g->KH * g->KW, g->Cg, &g->K) || g->K > MAAS_QGEMM_MAX_K)
        return maas_error(MAAS_ERR_VALUE, "qconv2d: kernel_h * kernel_w * channels / groups "
                          "must be at most %d, received (%lld, %lld, %lld)", MAAS_QGEMM_MAX_K,
                          (long long)g->KH, (long long)g->KW, (long long)g->Cg);
    if (qc_len(g->H, g->KH, g->sh, g->dh, a->padding, &g->OH, &g->pt) ||
        qc_len(g->W, g->KW, g->sw, g->dw, a->padding, &g->OW, &g->pl))
        return maas_error(MAAS_ERR_SHAPE, "qconv2d: the kernel (%lld, %lld) (dilation (%lld, "
                          "%lld)) is larger than the input %s with padding=\"valid\": use "
                          "padding=\"same\" or a smaller kernel", (long long)g->KH,
                          (long long)g->KW, (long long)a->dh, (long long)a->dw, SHAPE(x, s1));
    int64_t rows = a->groups * maas_qgemm_blocks(g->OCg), rb = maas_qgemm_row_bytes(g->K);
    if (p->ndim != 2 || p->shape[0] != rows || p->shape[1] != rb)
        return maas_error(MAAS_ERR_SHAPE, "qconv2d: packed kernel shape %s does not fit input "
                          "shape %s, a (%lld, %lld) kernel, %lld filters and groups=%lld: "
                          "expected (%lld, %lld) (quantize the layer with "
                          "maas.quantization.conv.quantize_conv)", SHAPE(p, s1), SHAPE(x, s2),
                          (long long)g->KH, (long long)g->KW, (long long)g->OC,
                          (long long)a->groups, (long long)rows, (long long)rb);
    if (a->has_bias && !(nd->in[3]->ndim == 1 && nd->in[3]->shape[0] == g->OC))
        return maas_error(MAAS_ERR_SHAPE, "qconv2d: bias shape %s does not match %lld filters",
                          SHAPE(nd->in[3], s1), (long long)g->OC);
    if (a->is_static && nd->in[nd->nin - 1]->size != 1)
        return maas_error(MAAS_ERR_SHAPE, "qconv2d: the input scale must hold one value, got "
                          "shape %s", SHAPE(nd->in[nd->nin - 1], s1));
    nd->nograd = 2u | 4u | (a->is_static ? 1u << (nd->nin - 1) : 0u);
    outs[0].dtype = MAAS_F32;
    outs[0].ndim = 4;
    outs[0].shape[0] = g->N;
    outs[0].shape[1] = g->OH;
    outs[0].shape[2] = g->OW;
    outs[0].shape[3] = g->OC;
    return MAAS_OK;
}

static maas_status qconv2d_forward(maas_node *nd)
{
    const qconv_attr *a = CATTR(qconv_attr, nd);
    float fixed = 0.f;
    if (a->is_static) {
        fixed = nd->in[nd->nin - 1]->data[0];
        if (!(fixed > 0.f) || !isfinite(fixed))
            return maas_error(MAAS_ERR_VALUE, "qconv2d: the input scale must be positive and "
                              "finite, received %g", (double)fixed);
    }
    return qconv2d_fwd(nd->out[0]->data, nd->in[0]->data, nd->in[1]->ptr,
                                nd->in[2]->data, a->has_bias ? nd->in[3]->data : NULL, fixed,
                                &a->g, (int)a->isa);
}

static maas_status qconv2d_backward(const maas_node *nd, const maas_tensor *const *gout,
                                    maas_tensor *const *gin)
{
    const qconv_attr *a = CATTR(qconv_attr, nd);
    float *gb = a->has_bias ? GDATA(3) : NULL;
    if ((!gin[0] && !gb) || !gout[0])
        return MAAS_OK;
    return qconv2d_bwd(GDATA(0), gb, gout[0]->data, nd->in[1]->ptr, nd->in[2]->data,
                                 &a->g);
}

double maas_qconv_work(const maas_node *nd)
{
    const qconv_geom *g = &CATTR(qconv_attr, nd)->g;
    return (double)g->N * (double)g->OH * (double)g->OW * (double)g->K * (double)g->OC;
}

MAAS_OPDEF(maas_opdef_qconv2d, "qconv2d", 3, 5, qconv_attr, 0, qconv_fields, qconv2d);

/* --------------------------------------------------------- qembedding op */

typedef struct {
    int64_t mask_zero;
    int64_t V, D;
} qembedding_attr;

static const maas_attr_field qembedding_fields[] = {
    {"mask_zero", 'l', offsetof(qembedding_attr, mask_zero)}, {NULL, 0, 0}};

static maas_status qe_index(const maas_tensor *idx, int64_t i, int64_t V, int64_t *out)
{
    int64_t k;
    if (idx->dtype == MAAS_I64) {
        k = ((const int64_t *)idx->ptr)[i];
    } else if (idx->dtype == MAAS_I32) {
        k = ((const int32_t *)idx->ptr)[i];
    } else {
        float f = ((const float *)idx->ptr)[i];
        if (!(f > -9.2e18f && f < 9.2e18f))
            return maas_error(MAAS_ERR_VALUE, "qembedding: index %g (at flat position %lld) is "
                              "not a valid index for input_dim=%lld: indices must be integers "
                              "in [0, %lld)", (double)f, (long long)i, (long long)V, (long long)V);
        k = (int64_t)f;
    }
    if (k < 0 || k >= V)
        return maas_error(MAAS_ERR_VALUE, "qembedding: index %lld (at flat position %lld) is out "
                          "of range for input_dim=%lld: indices must be in [0, %lld); raise "
                          "input_dim or fix the token ids", (long long)k, (long long)i,
                          (long long)V, (long long)V);
    *out = k;
    return MAAS_OK;
}

static maas_status qembedding_infer(maas_node *nd, maas_tensor_spec *outs,
                                    maas_tensor_spec *saved)
{
    const maas_tensor *w = nd->in[0], *sc = nd->in[1], *idx = nd->in[2];
    char s1[160], s2[160];
    if (w->dtype != MAAS_I8 || sc->dtype != MAAS_F32)
        return maas_error(MAAS_ERR_TYPE, "qembedding: the table must be int8 and its scale "
                          "float32, received %s and %s", maas_dtype_name(w->dtype),
                          maas_dtype_name(sc->dtype));
    if (w->ndim != 2 || sc->ndim != 1 || sc->shape[0] != w->shape[0])
        return maas_error(MAAS_ERR_SHAPE, "qembedding: table shape %s and scale shape %s: "
                          "expected (input_dim, output_dim) and (input_dim,)", SHAPE(w, s1),
                          SHAPE(sc, s2));
    if (idx->dtype != MAAS_I32 && idx->dtype != MAAS_I64 && idx->dtype != MAAS_F32)
        return maas_error(MAAS_ERR_TYPE, "qembedding: indices must be int32, int64 or float32 "
                          "holding integers, received %s", maas_dtype_name(idx->dtype));
    if (idx->ndim + 1 > MAAS_MAX_DIMS)
        return maas_error(MAAS_ERR_VALUE, "qembedding: indices of %d dimensions give more than "
                          "%d output dimensions", idx->ndim, MAAS_MAX_DIMS);
    qembedding_attr *a = ATTR(qembedding_attr, nd);
    a->V = w->shape[0];
    a->D = w->shape[1];
    nd->nograd = ~0u;
    outs[0].dtype = MAAS_F32;
    outs[0].ndim = idx->ndim + 1;
    memcpy(outs[0].shape, idx->shape, sizeof(int64_t) * (size_t)idx->ndim);
    outs[0].shape[idx->ndim] = a->D;
    if (a->mask_zero) {
        nd->nout = 2;
        spec_like(&outs[1], idx);
        outs[1].dtype = MAAS_F32;
    }
    return MAAS_OK;
}

static maas_status qembedding_forward(maas_node *nd)
{
    const qembedding_attr *a = CATTR(qembedding_attr, nd);
    const maas_tensor *idx = nd->in[2];
    const int8_t *t = nd->in[0]->ptr;
    const float *sc = nd->in[1]->data;
    float *out = nd->out[0]->data;
    for (int64_t i = 0; i < idx->size; i++) {
        int64_t k = 0;
        maas_status s = qe_index(idx, i, a->V, &k);
        if (s != MAAS_OK)
            return s;
        const int8_t *row = t + k * a->D;
        float d = sc[k];
        for (int64_t j = 0; j < a->D; j++)
            out[i * a->D + j] = (float)row[j] / d;
        if (a->mask_zero)
            nd->out[1]->data[i] = k != 0 ? 1.0f : 0.0f;
    }
    return MAAS_OK;
}

/* No gradient reaches the int8 table or the ids (nograd is all ones, so
 * this never runs); it exists because ops without a backward are not
 * recorded on a tape, and a trace (a compiled plan, the ONNX exporter)
 * must record the lookup, or the layers after it would see its output as
 * a constant. */
static maas_status qembedding_backward(const maas_node *nd, const maas_tensor *const *gout,
                                       maas_tensor *const *gin)
{
    return MAAS_OK;
}

MAAS_OPDEF(maas_opdef_qembedding, "qembedding", 3, 3, qembedding_attr, 0, qembedding_fields,
           qembedding);
