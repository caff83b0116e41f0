/* ops/conv.c -- 2-D convolution (NHWC, Keras's kernel layout) and its
 * transpose, forward and backward, with their op-table entries.
 *
 * Shape contract (the "conv relation"; Conv1D is the H = 1 case):
 *   x (N, H, W, C), w (KH, KW, C/groups, OC), bias (OC) or none
 *   out (N, OH, OW, OC)[n, oh, ow, g*OCg + o] = bias[.] +
 *       sum_{kh, kw, c} x[n, oh*sh - pt + kh*dh, ow*sw - pl + kw*dw, g*Cg + c]
 *                       * w[kh, kw, c, g*OCg + o]
 *   (positions outside x read as zero). padding "same" is TF/Keras's:
 *   OH = ceil(H / sh), pad_total = max((OH-1)*sh + (KH-1)*dh + 1 - H, 0),
 *   pt = pad_total / 2 (the extra row at the bottom); "valid" pads nothing;
 *   "causal" pads (K-1)*d before only.
 *
 * Kernels, chosen in infer from the geometry alone:
 *   pointwise (1x1, stride 1, no padding): one GEMM over every pixel,
 *     x itself is the column matrix (no copy);
 *   depthwise (groups == C > 1): a direct loop vectorized over channels;
 *   general: im2col of a chunk of images into the saved column buffer
 *     (chunk * OH * OW, groups * KH*KW*Cg), one GEMM per group and chunk.
 *     The chunk size depends on the shapes only, so the buffer is
 *     allocated once by a plan (a saved tensor) and the sums run in the
 *     same order at any thread count.
 * Backward accumulates (+=) into gx, gw, gbias. The data gradient is a
 * GEMM into the second saved buffer and a col2im written as a gather (each
 * input element sums its own contributions in a fixed order, so it is
 * parallel over rows without races); the weight gradient is one GEMM per
 * group and chunk (beta = 1, chunks in order); the bias gradient sums rows
 * in order. Every GEMM goes through maas_sgemm (deterministic: split over
 * output tiles only).
 *
 * The transposed convolution is the adjoint of the conv relation: its input
 * plays the conv's `out`, its output the conv's `x` (weights (KH, KW,
 * Cout, Cin) as Keras stores them), so its forward is the conv's data
 * gradient and its backward the conv's forward and weight gradient. */
#include "../opdef.h"

#include <omp.h>
#include <stdint.h>
#include <string.h>

#define CONV_COL_CAP (1 << 18) /* floats per lane's column buffer (1 MB), at least one image */
#define CONV_MAX_LANES 4      /* chunks in flight at once (one per thread, up to 4) */
/* A training conv2d (its `keep_columns` attribute set) keeps the columns of
 * the whole batch when they are at most this many floats (128 MB): the
 * forward is one GEMM per group over every pixel, and the weight gradient
 * one GEMM per group over the batch from the same columns, without a second
 * im2col. Above it, the chunked lanes of CONV_COL_CAP. */
#define CONV_KEEP_CAP ((int64_t)1 << 25)

enum { CONV_GENERAL = 0, CONV_POINTWISE = 1, CONV_DEPTHWISE = 2 };
enum { PAD_VALID = 0, PAD_SAME = 1, PAD_CAUSAL = 2 };

typedef struct {
    int64_t N, H, W, C, OH, OW, OC;
    int64_t KH, KW, sh, sw, dh, dw, pt, pl, groups;
    int64_t Cg, OCg, K, chunk, kind;
    int64_t nchunks, lanes; /* chunks of `chunk` images; lanes: column buffers */
} conv_geom;

/* ----------------------------------------------------------- helpers */

/* Copies and sums run on one thread below 2^18 elements: a team costs
 * more than it saves there (and much more on a loaded machine). */
static int nthreads_for(double work)
{
    return work > (double)(1 << 18) ? maas_get_num_threads() : 1;
}

/* out rows (P, OC) = bias, or zeros */
static void fill_bias(float *out, const float *bias, int64_t P, int64_t OC, int par)
{
    if (!bias) {
        memset(out, 0, (size_t)(P * OC) * sizeof(float));
        return;
    }
    int nthr = par ? nthreads_for((double)P * OC) : 1;
#pragma omp parallel for num_threads(nthr) schedule(static) if (nthr > 1)
    for (int64_t r = 0; r < P; r++)
        memcpy(out + r * OC, bias, (size_t)OC * sizeof(float));
}

/* gbias (OC) += column sums of g (P, OC), rows in order; parallel over
 * channel blocks (each sum has one owner). */
static void bias_grad(float *gbias, const float *g, int64_t P, int64_t OC)
{
    const int64_t B = 64, nb = (OC + B - 1) / B;
    int nthr = nb > 1 ? nthreads_for((double)P * OC) : 1;
#pragma omp parallel for num_threads(nthr) schedule(static) if (nthr > 1)
    for (int64_t b = 0; b < nb; b++) {
        int64_t c0 = b * B, c1 = c0 + B < OC ? c0 + B : OC;
        float acc[64];
        for (int64_t c = c0; c < c1; c++)
            acc[c - c0] = 0.0f;
        for (int64_t r = 0; r < P; r++) {
            const float *gr = g + r * OC;
#pragma omp simd
            for (int64_t c = c0; c < c1; c++)
                acc[c - c0] += gr[c];
        }
        for (int64_t c = c0; c < c1; c++)
            gbias[c] += acc[c - c0];
    }
}

/* col (nb*OH*OW, groups*K) of images [n0, n0+nb) of x */
static void im2col(float *col, const float *x, const conv_geom *g, int64_t n0, int64_t nb, int par)
{
    const int64_t P = nb * g->OH * g->OW, row = g->groups * g->K, Cg = g->Cg;
    int nthr = par ? nthreads_for((double)P * row) : 1;
#pragma omp parallel for num_threads(nthr) schedule(static) if (nthr > 1)
    for (int64_t r = 0; r < P; r++) {
        int64_t n = n0 + r / (g->OH * g->OW), rem = r % (g->OH * g->OW);
        int64_t oh = rem / g->OW, ow = rem % g->OW;
        float *dst = col + r * row;
        const int64_t iw0 = ow * g->sw - g->pl;
        for (int64_t kh = 0; kh < g->KH; kh++) {
            int64_t ih = oh * g->sh - g->pt + kh * g->dh;
            if (g->groups == 1 && g->dw == 1 && ih >= 0 && ih < g->H && iw0 >= 0 &&
                iw0 + g->KW <= g->W) {
                /* the KW taps of one kernel row are KW*C contiguous floats of x
                 * and of the column row: one copy (a small C_in's 3-float
                 * copies were most of the first layer's im2col) */
                memcpy(dst + kh * g->KW * Cg, x + ((n * g->H + ih) * g->W + iw0) * g->C,
                       (size_t)(g->KW * Cg) * sizeof(float));
                continue;
            }
            for (int64_t kw = 0; kw < g->KW; kw++) {
                int64_t iw = ow * g->sw - g->pl + kw * g->dw;
                int inside = ih >= 0 && ih < g->H && iw >= 0 && iw < g->W;
                const float *src = x + ((n * g->H + ih) * g->W + iw) * g->C;
                for (int64_t gr = 0; gr < g->groups; gr++) {
                    float *d = dst + ((gr * g->KH + kh) * g->KW + kw) * Cg;
                    if (inside)
                        memcpy(d, src + gr * Cg, (size_t)Cg * sizeof(float));
                    else
                        memset(d, 0, (size_t)Cg * sizeof(float));
                }
            }
        }
    }
}

/* gx[images n0..n0+nb) += col2im(gcol), as a gather over input pixels */
static void col2im_add(float *gx, const float *gcol, const conv_geom *g, int64_t n0, int64_t nb,
                       int par)
{
    const int64_t row = g->groups * g->K, Cg = g->Cg;
    const int64_t rows = nb * g->H;
    int nthr = par ? nthreads_for((double)nb * g->OH * g->OW * row) : 1;
#pragma omp parallel for num_threads(nthr) schedule(static) if (nthr > 1)
    for (int64_t q = 0; q < rows; q++) {
        int64_t n = n0 + q / g->H, ih = q % g->H;
        for (int64_t kh = 0; kh < g->KH; kh++) {
            int64_t t = ih + g->pt - kh * g->dh;
            if (t < 0 || t % g->sh)
                continue;
            int64_t oh = t / g->sh;
            if (oh >= g->OH)
                continue;
            for (int64_t iw = 0; iw < g->W; iw++) {
                float *dst = gx + ((n * g->H + ih) * g->W + iw) * g->C;
                for (int64_t kw = 0; kw < g->KW; kw++) {
                    int64_t u = iw + g->pl - kw * g->dw;
                    if (u < 0 || u % g->sw)
                        continue;
                    int64_t ow = u / g->sw;
                    if (ow >= g->OW)
                        continue;
                    const float *src = gcol + (((n - n0) * g->OH + oh) * g->OW + ow) * row;
                    for (int64_t gr = 0; gr < g->groups; gr++) {
                        const float *s = src + ((gr * g->KH + kh) * g->KW + kw) * Cg;
                        float *d = dst + gr * Cg;
#pragma omp simd
                        for (int64_t c = 0; c < Cg; c++)
                            d[c] += s[c];
                    }
                }
            }
        }
    }
}

/* ------------------------------------------------------- depthwise */

/* out (N, OH, OW, OC) (+)= depthwise conv; oc = c*M + m, w (KH, KW, 1, OC) */
static void dw_forward(float *out, const float *x, const float *w, const float *bias,
                       const conv_geom *g, int accumulate)
{
    const int64_t C = g->C, OC = g->OC, M = OC / C;
    const int64_t rows = g->N * g->OH;
    int nthr = nthreads_for((double)rows * g->OW * OC * g->KH * g->KW);
#pragma omp parallel for num_threads(nthr) schedule(static) if (nthr > 1)
    for (int64_t q = 0; q < rows; q++) {
        int64_t n = q / g->OH, oh = q % g->OH;
        for (int64_t ow = 0; ow < g->OW; ow++) {
            float *o = out + ((n * g->OH + oh) * g->OW + ow) * OC;
            if (!accumulate) {
                if (bias)
                    memcpy(o, bias, (size_t)OC * sizeof(float));
                else
                    memset(o, 0, (size_t)OC * sizeof(float));
            }
            for (int64_t kh = 0; kh < g->KH; kh++) {
                int64_t ih = oh * g->sh - g->pt + kh * g->dh;
                if (ih < 0 || ih >= g->H)
                    continue;
                for (int64_t kw = 0; kw < g->KW; kw++) {
                    int64_t iw = ow * g->sw - g->pl + kw * g->dw;
                    if (iw < 0 || iw >= g->W)
                        continue;
                    const float *xp = x + ((n * g->H + ih) * g->W + iw) * C;
                    const float *wp = w + (kh * g->KW + kw) * OC;
                    if (M == 1) {
#pragma omp simd
                        for (int64_t c = 0; c < C; c++)
                            o[c] += xp[c] * wp[c];
                    } else {
                        for (int64_t c = 0; c < C; c++)
                            for (int64_t m = 0; m < M; m++)
                                o[c * M + m] += xp[c] * wp[c * M + m];
                    }
                }
            }
        }
    }
}

/* gx += depthwise data gradient (a gather over input pixels) */
static void dw_backward_data(float *gx, const float *gout, const float *w, const conv_geom *g)
{
    const int64_t C = g->C, OC = g->OC, M = OC / C;
    const int64_t rows = g->N * g->H;
    int nthr = nthreads_for((double)g->N * g->OH * g->OW * OC * g->KH * g->KW);
#pragma omp parallel for num_threads(nthr) schedule(static) if (nthr > 1)
    for (int64_t q = 0; q < rows; q++) {
        int64_t n = q / g->H, ih = q % g->H;
        for (int64_t kh = 0; kh < g->KH; kh++) {
            int64_t t = ih + g->pt - kh * g->dh;
            if (t < 0 || t % g->sh)
                continue;
            int64_t oh = t / g->sh;
            if (oh >= g->OH)
                continue;
            for (int64_t iw = 0; iw < g->W; iw++) {
                float *d = gx + ((n * g->H + ih) * g->W + iw) * C;
                for (int64_t kw = 0; kw < g->KW; kw++) {
                    int64_t u = iw + g->pl - kw * g->dw;
                    if (u < 0 || u % g->sw)
                        continue;
                    int64_t ow = u / g->sw;
                    if (ow >= g->OW)
                        continue;
                    const float *gp = gout + ((n * g->OH + oh) * g->OW + ow) * OC;
                    const float *wp = w + (kh * g->KW + kw) * OC;
                    if (M == 1) {
#pragma omp simd
                        for (int64_t c = 0; c < C; c++)
                            d[c] += gp[c] * wp[c];
                    } else {
                        for (int64_t c = 0; c < C; c++) {
                            float s = 0.0f;
                            for (int64_t m = 0; m < M; m++)
                                s += gp[c * M + m] * wp[c * M + m];
                            d[c] += s;
                        }
                    }
                }
            }
        }
    }
}

/* gw (KH, KW, 1, OC) += depthwise weight gradient; one owner per (tap,
 * channel block), pixels summed in order */
static void dw_backward_weight(float *gw, const float *x, const float *gout, const conv_geom *g)
{
    const int64_t C = g->C, OC = g->OC, M = OC / C, B = 64;
    const int64_t nblk = (OC + B - 1) / B, tasks = g->KH * g->KW * nblk;
    int nthr = nthreads_for((double)g->N * g->OH * g->OW * OC * g->KH * g->KW);
#pragma omp parallel for num_threads(nthr) schedule(static) if (nthr > 1)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t kk = t / nblk, b = t % nblk, kh = kk / g->KW, kw = kk % g->KW;
        int64_t o0 = b * B, o1 = o0 + B < OC ? o0 + B : OC;
        float acc[64];
        for (int64_t o = o0; o < o1; o++)
            acc[o - o0] = 0.0f;
        for (int64_t n = 0; n < g->N; n++)
            for (int64_t oh = 0; oh < g->OH; oh++) {
                int64_t ih = oh * g->sh - g->pt + kh * g->dh;
                if (ih < 0 || ih >= g->H)
                    continue;
                for (int64_t ow = 0; ow < g->OW; ow++) {
                    int64_t iw = ow * g->sw - g->pl + kw * g->dw;
                    if (iw < 0 || iw >= g->W)
                        continue;
                    const float *xp = x + ((n * g->H + ih) * g->W + iw) * C;
                    const float *gp = gout + ((n * g->OH + oh) * g->OW + ow) * OC;
                    if (M == 1) {
#pragma omp simd
                        for (int64_t o = o0; o < o1; o++)
                            acc[o - o0] += xp[o] * gp[o];
                    } else {
                        for (int64_t o = o0; o < o1; o++)
                            acc[o - o0] += xp[o / M] * gp[o];
                    }
                }
            }
        float *d = gw + kk * OC;
        for (int64_t o = o0; o < o1; o++)
            d[o] += acc[o - o0];
    }
}

/* ------------------------------------------------- the three passes
 *
 * The general kind runs its chunks in `lanes` column buffers. One lane: the
 * chunks in order, each GEMM split over the team (maas_sgemm). More lanes:
 * one OpenMP region, lane l takes chunks l, l + lanes, ... (on thread
 * l mod threads), its im2col and GEMMs single-threaded inside it; outputs
 * of different chunks are disjoint, and the weight gradient sums each lane
 * into its own partial and the partials in lane order. The assignment
 * depends on the shapes alone, so the bits do not depend on the threads. */

typedef struct {
    const conv_geom *g;
    float *out, *gx, *gw;
    const float *x, *w, *bias, *gout;
    float *col, *gcol, *partial;
    int accumulate, cached;
} conv_job;

static int64_t lane_floats(const conv_geom *g)
{
    return g->chunk * g->OH * g->OW * g->groups * g->K;
}

static maas_status fwd_chunk(const conv_job *j, int64_t c, float *col, int par)
{
    const conv_geom *g = j->g;
    const int64_t pix = g->OH * g->OW, row = g->groups * g->K, n0 = c * g->chunk;
    int64_t nb = g->N - n0 < g->chunk ? g->N - n0 : g->chunk, P = nb * pix;
    float *o = j->out + n0 * pix * g->OC;
    const float *A = col;
    maas_status s = MAAS_OK;
    if (g->kind == CONV_POINTWISE)
        A = j->x + n0 * g->H * g->W * g->C;
    else if (!j->cached)
        im2col(col, j->x, g, n0, nb, par);
    if (!j->accumulate)
        fill_bias(o, j->bias, P, g->OC, par);
    for (int64_t gr = 0; gr < g->groups && s == MAAS_OK; gr++)
        s = maas_sgemm(MAAS_NO_TRANS, MAAS_NO_TRANS, P, g->OCg, g->K, 1.0f, A + gr * g->K, row,
                       j->w + gr * g->OCg, g->OC, (j->bias || j->accumulate) ? 1.0f : 0.0f,
                       o + gr * g->OCg, g->OC);
    return s;
}

static maas_status data_chunk(const conv_job *j, int64_t c, float *gcol, int par)
{
    const conv_geom *g = j->g;
    const int64_t pix = g->OH * g->OW, row = g->groups * g->K, n0 = c * g->chunk;
    int64_t nb = g->N - n0 < g->chunk ? g->N - n0 : g->chunk, P = nb * pix;
    const float *go = j->gout + n0 * pix * g->OC;
    int pw = g->kind == CONV_POINTWISE;
    float *C = pw ? j->gx + n0 * g->H * g->W * g->C : gcol;
    maas_status s = MAAS_OK;
    for (int64_t gr = 0; gr < g->groups && s == MAAS_OK; gr++)
        s = maas_sgemm(MAAS_NO_TRANS, MAAS_TRANS, P, g->K, g->OCg, 1.0f, go + gr * g->OCg, g->OC,
                       j->w + gr * g->OCg, g->OC, pw ? 1.0f : 0.0f, C + gr * g->K, row);
    if (s == MAAS_OK && !pw)
        col2im_add(j->gx, gcol, g, n0, nb, par);
    return s;
}

static maas_status weight_chunk(const conv_job *j, int64_t c, float *col, float *gw, int par)
{
    const conv_geom *g = j->g;
    const int64_t pix = g->OH * g->OW, row = g->groups * g->K, n0 = c * g->chunk;
    int64_t nb = g->N - n0 < g->chunk ? g->N - n0 : g->chunk, P = nb * pix;
    const float *A = col;
    maas_status s = MAAS_OK;
    if (g->kind == CONV_POINTWISE)
        A = j->x + n0 * g->H * g->W * g->C;
    else if (!j->cached)
        im2col(col, j->x, g, n0, nb, par);
    const float *go = j->gout + n0 * pix * g->OC;
    for (int64_t gr = 0; gr < g->groups && s == MAAS_OK; gr++)
        s = maas_sgemm(MAAS_TRANS, MAAS_NO_TRANS, g->K, g->OCg, P, 1.0f, A + gr * g->K, row,
                       go + gr * g->OCg, g->OC, 1.0f, gw + gr * g->OCg, g->OC);
    return s;
}

enum { PASS_FWD = 0, PASS_DATA = 1, PASS_WEIGHT = 2 };

static maas_status run_pass(const conv_job *j, int pass)
{
    const conv_geom *g = j->g;
    const int64_t lf = lane_floats(g), wsize = g->KH * g->KW * g->Cg * g->OC;
    if (g->lanes <= 1 || g->kind == CONV_POINTWISE) {
        maas_status s = MAAS_OK;
        for (int64_t c = 0; c < g->nchunks && s == MAAS_OK; c++)
            s = pass == PASS_FWD    ? fwd_chunk(j, c, j->col, 1)
                : pass == PASS_DATA ? data_chunk(j, c, j->gcol, 1)
                                    : weight_chunk(j, c, j->col, j->gw, 1);
        return s;
    }
    int nthr = maas_get_num_threads();
    if (nthr > g->lanes)
        nthr = (int)g->lanes;
    if ((double)g->N * g->OH * g->OW * g->OC * g->K < (double)(1 << 18))
        nthr = 1;
    maas_status failed = MAAS_OK;
#pragma omp parallel for num_threads(nthr) schedule(static, 1) if (nthr > 1)
    for (int64_t l = 0; l < g->lanes; l++) {
        float *part = pass == PASS_WEIGHT ? j->partial + l * wsize : NULL;
        if (part)
            memset(part, 0, (size_t)wsize * sizeof(float));
        for (int64_t c = l; c < g->nchunks; c += g->lanes) {
            maas_status s = pass == PASS_FWD    ? fwd_chunk(j, c, j->col + c % g->lanes * lf, 0)
                            : pass == PASS_DATA ? data_chunk(j, c, j->gcol + l * lf, 0)
                                                : weight_chunk(j, c, j->col + l * lf, part, 0);
            if (s != MAAS_OK) {
#pragma omp critical(maas_conv_fail)
                failed = s;
                break;
            }
        }
    }
    if (failed != MAAS_OK)
        return maas_error(failed, "conv2d: a product of the convolution failed");
    if (pass == PASS_WEIGHT) {
        int nt2 = nthreads_for((double)wsize * g->lanes);
#pragma omp parallel for num_threads(nt2) schedule(static) if (nt2 > 1)
        for (int64_t i = 0; i < wsize; i++) {
            float acc = 0.0f;
            for (int64_t l = 0; l < g->lanes; l++)
                acc += j->partial[l * wsize + i];
            j->gw[i] += acc;
        }
    }
    return MAAS_OK;
}

/* out (N, OH, OW, OC) = conv(x, w) + bias, or += conv(x, w) when
 * accumulate (bias then ignored); col: the column buffers (general kind). */
static maas_status conv_fwd(float *out, const float *x, const float *w, const float *bias,
                            const conv_geom *g, float *col, int accumulate)
{
    if (g->kind == CONV_DEPTHWISE) {
        dw_forward(out, x, w, accumulate ? NULL : bias, g, accumulate);
        return MAAS_OK;
    }
    conv_job j = {.g = g, .out = out, .x = x, .w = w, .bias = accumulate ? NULL : bias,
                  .col = col, .accumulate = accumulate};
    return run_pass(&j, PASS_FWD);
}

/* gx (N, H, W, C) += data gradient of gout (N, OH, OW, OC); gcol: scratch */
static maas_status conv_bwd_data(float *gx, const float *gout, const float *w, const conv_geom *g,
                                 float *gcol)
{
    if (g->kind == CONV_DEPTHWISE) {
        dw_backward_data(gx, gout, w, g);
        return MAAS_OK;
    }
    conv_job j = {.g = g, .gx = gx, .gout = gout, .w = w, .gcol = gcol};
    return run_pass(&j, PASS_DATA);
}

/* gw (KH, KW, Cg, OC) += weight gradient; when col_valid the column buffers
 * hold im2col(x) of every chunk already (filled by the forward: possible
 * when every chunk has its own lane), else they are refilled. partial: the
 * lanes' partial sums (lanes > 1). */
static maas_status conv_bwd_weight(float *gw, const float *x, const float *gout,
                                   const conv_geom *g, float *col, float *partial, int col_valid)
{
    if (g->kind == CONV_DEPTHWISE) {
        dw_backward_weight(gw, x, gout, g);
        return MAAS_OK;
    }
    conv_job j = {.g = g, .gw = gw, .x = x, .gout = gout, .col = col, .partial = partial,
                  .cached = col_valid && g->nchunks <= g->lanes};
    return run_pass(&j, PASS_WEIGHT);
}

static void set_chunks(conv_geom *g, int whole);

/* Completes kind, chunk and the products; the sizes must be set. */
static maas_status geom_finish(conv_geom *g, const char *op)
{
    g->Cg = g->C / g->groups;
    g->OCg = g->OC / g->groups;
    int64_t kk, K, pix, per;
    if (maas_mul_size(g->KH, g->KW, &kk) || maas_mul_size(kk, g->Cg, &K) ||
        maas_mul_size(g->OH, g->OW, &pix) || maas_mul_size(pix, g->groups, &per) ||
        maas_mul_size(per, K, &per))
        return maas_error(MAAS_ERR_VALUE, "%s: sizes too large", op);
    g->K = K;
    if (g->KH == 1 && g->KW == 1 && g->sh == 1 && g->sw == 1 && g->pt == 0 && g->pl == 0 &&
        g->OH == g->H && g->OW == g->W)
        g->kind = CONV_POINTWISE;
    else if (g->groups > 1 && g->groups == g->C)
        g->kind = CONV_DEPTHWISE;
    else
        g->kind = CONV_GENERAL;
    set_chunks(g, 0);
    return MAAS_OK;
}

/* chunk, nchunks, lanes: the whole batch in one chunk when `whole` (or
 * pointwise), else as many images as fit CONV_COL_CAP floats (at least
 * one). Depends on the shapes alone. */
static void set_chunks(conv_geom *g, int whole)
{
    int64_t per = g->OH * g->OW * g->groups * g->K; /* checked by geom_finish */
    int64_t chunk = per > 0 ? CONV_COL_CAP / per : g->N;
    if (chunk < 1)
        chunk = 1;
    if (chunk > g->N || g->kind == CONV_POINTWISE || whole)
        chunk = g->N;
    g->chunk = chunk > 0 ? chunk : 1;
    g->nchunks = g->N > 0 ? (g->N + g->chunk - 1) / g->chunk : 0;
    g->lanes = g->nchunks < CONV_MAX_LANES ? g->nchunks : CONV_MAX_LANES;
    if (g->lanes < 1)
        g->lanes = 1;
}

/* The geometry of the data-gradient pass: always the chunked lanes (its
 * scratch is not the forward's columns, which a second backward of a
 * persistent tape still reads). */
static conv_geom data_geom(const conv_geom *g)
{
    conv_geom d = *g;
    set_chunks(&d, 0);
    return d;
}

/* The data gradient of a stride-1 convolution (groups 1) is itself a
 * convolution: of gout with the kernel flipped in space and its channel
 * axes swapped, padded (K-1)*d - pad before. That runs im2col + one GEMM of
 * the forward's shape instead of a GEMM into columns and a col2im; used
 * where the flipped columns are not much larger than the forward's. */
static int flip_ok(const conv_geom *g)
{
    return g->kind == CONV_GENERAL && g->groups == 1 && g->sh == 1 && g->sw == 1 &&
           g->OC <= 2 * g->C;
}

static conv_geom flip_geom(const conv_geom *g)
{
    conv_geom f = *g;
    f.H = g->OH;
    f.W = g->OW;
    f.C = g->OC;
    f.OH = g->H;
    f.OW = g->W;
    f.OC = g->C;
    f.pt = (g->KH - 1) * g->dh - g->pt;
    f.pl = (g->KW - 1) * g->dw - g->pl;
    f.Cg = g->OC;
    f.OCg = g->C;
    f.K = g->KH * g->KW * g->OC;
    return f;
}

static void col_specs(const conv_geom *g, maas_node *nd, maas_tensor_spec *saved, int flip)
{
    if (g->kind != CONV_GENERAL) {
        nd->nsaved = 0;
        return;
    }
    conv_geom d = data_geom(g);
    int64_t cols = lane_floats(&d), fcols = 0;
    if (flip) {
        conv_geom f = flip_geom(&d);
        fcols = lane_floats(&f);
    }
    for (int k = 0; k < 2; k++) { /* columns, column gradients (or flipped columns) */
        saved[k].dtype = MAAS_F32;
        saved[k].ndim = 2;
        saved[k].shape[0] = k == 0 ? g->lanes : d.lanes;
        saved[k].shape[1] = k == 0 ? lane_floats(g) : fcols > cols ? fcols : cols;
    }
    nd->nsaved = 2;
    if (g->lanes > 1 || flip) { /* the lanes' partial weight gradients */
        saved[2].dtype = MAAS_F32;
        saved[2].ndim = 2;
        saved[2].shape[0] = g->lanes;
        saved[2].shape[1] = g->KH * g->KW * g->Cg * g->OC;
        nd->nsaved = 3;
    }
    if (flip) { /* the flipped kernel (KH, KW, OC, C) */
        saved[3].dtype = MAAS_F32;
        saved[3].ndim = 1;
        saved[3].shape[0] = g->KH * g->KW * g->C * g->OC;
        nd->nsaved = 4;
    }
}

/* gx += data gradient by the flipped convolution; wf: (KH, KW, OC, C) scratch */
static maas_status conv_bwd_data_flip(float *gx, const float *gout, const float *w,
                                      const conv_geom *g, float *cols, float *wf)
{
    const int64_t KH = g->KH, KW = g->KW, C = g->C, OC = g->OC;
    for (int64_t kh = 0; kh < KH; kh++)
        for (int64_t kw = 0; kw < KW; kw++) {
            const float *src = w + ((KH - 1 - kh) * KW + (KW - 1 - kw)) * C * OC;
            float *dst = wf + (kh * KW + kw) * OC * C;
            for (int64_t c = 0; c < C; c++)
                for (int64_t o = 0; o < OC; o++)
                    dst[o * C + c] = src[c * OC + o];
        }
    conv_geom f = flip_geom(g);
    return conv_fwd(gx, gout, wf, NULL, &f, cols, 1);
}

static maas_status check_common(const maas_node *nd, const char *op, int64_t sh, int64_t sw,
                                int64_t dh, int64_t dw)
{
    char sx[160], sk[160];
    maas_status s = all_f32(nd, op);
    if (s != MAAS_OK)
        return s;
    const maas_tensor *x = nd->in[0], *w = nd->in[1];
    if (x->ndim != 4)
        return maas_error(MAAS_ERR_SHAPE, "%s: expected a 4-D input (batch, height, width, "
                          "channels), received shape %s", op, SHAPE(x, sx));
    if (w->ndim != 4)
        return maas_error(MAAS_ERR_SHAPE, "%s: expected a 4-D kernel (kernel_h, kernel_w, in, "
                          "out), received shape %s", op, SHAPE(w, sk));
    if (sh < 1 || sw < 1 || dh < 1 || dw < 1)
        return maas_error(MAAS_ERR_VALUE, "%s: strides and dilation_rate must be positive, "
                          "received strides=(%lld, %lld), dilation_rate=(%lld, %lld)", op,
                          (long long)sh, (long long)sw, (long long)dh, (long long)dw);
    if (w->shape[0] < 1 || w->shape[1] < 1)
        return maas_error(MAAS_ERR_SHAPE, "%s: empty kernel of shape %s", op, SHAPE(w, sk));
    return MAAS_OK;
}

static maas_status check_bias(const maas_node *nd, const char *op, int64_t n)
{
    char sb[160];
    if (nd->nin == 3 && !(nd->in[2]->ndim == 1 && nd->in[2]->shape[0] == n))
        return maas_error(MAAS_ERR_SHAPE, "%s: bias shape %s does not match %lld output channels",
                          op, SHAPE(nd->in[2], sb), (long long)n);
    return MAAS_OK;
}

/* -------------------------------------------------------------- conv2d */

typedef struct {
    int64_t sh, sw, dh, dw, padding, groups;
    int64_t keep; /* training: keep the whole batch's columns (CONV_KEEP_CAP) */
    conv_geom g;
} conv_attr;

static const maas_attr_field conv_fields[] = {
    {"stride_h", 'l', offsetof(conv_attr, sh)},   {"stride_w", 'l', offsetof(conv_attr, sw)},
    {"dilation_h", 'l', offsetof(conv_attr, dh)}, {"dilation_w", 'l', offsetof(conv_attr, dw)},
    {"padding", 'l', offsetof(conv_attr, padding)}, {"groups", 'l', offsetof(conv_attr, groups)},
    {"keep_columns", 'l', offsetof(conv_attr, keep)}, {NULL, 0, 0}};

/* one spatial axis: output length and the padding before */
static maas_status out_len(int64_t in, int64_t k, int64_t s, int64_t d, int64_t mode,
                           int64_t *out, int64_t *before)
{
    int64_t keff = (k - 1) * d + 1;
    if (mode == PAD_SAME) {
        *out = (in + s - 1) / s;
        int64_t total = (*out - 1) * s + keff - in;
        *before = total > 0 ? total / 2 : 0;
        return MAAS_OK;
    }
    int64_t pad = mode == PAD_CAUSAL ? keff - 1 : 0;
    *before = pad;
    if (in + pad < keff) {
        *out = -1;
        return MAAS_ERR_SHAPE;
    }
    *out = (in + pad - keff) / s + 1;
    return MAAS_OK;
}

static maas_status conv2d_infer(maas_node *nd, maas_tensor_spec *outs, maas_tensor_spec *saved)
{
    conv_attr *a = ATTR(conv_attr, nd);
    const char *op = "conv2d";
    char sx[160], sk[160];
    maas_status s = check_common(nd, op, a->sh, a->sw, a->dh, a->dw);
    if (s != MAAS_OK)
        return s;
    const maas_tensor *x = nd->in[0], *w = nd->in[1];
    if (a->padding < PAD_VALID || a->padding > PAD_CAUSAL)
        return maas_error(MAAS_ERR_VALUE, "%s: unknown padding code %lld", op, (long long)a->padding);
    if (a->groups < 1 || x->shape[3] % a->groups || w->shape[3] % a->groups)
        return maas_error(MAAS_ERR_VALUE, "%s: input channels (%lld) and filters (%lld) must both "
                          "be divisible by groups=%lld", op, (long long)x->shape[3],
                          (long long)w->shape[3], (long long)a->groups);
    if (w->shape[2] * a->groups != x->shape[3])
        return maas_error(MAAS_ERR_SHAPE, "%s: input shape %s and kernel shape %s do not fit: the "
                          "kernel's dim 2 (%lld) times groups (%lld) must equal the input "
                          "channels (%lld)", op, SHAPE(x, sx), SHAPE(w, sk),
                          (long long)w->shape[2], (long long)a->groups, (long long)x->shape[3]);
    conv_geom *g = &a->g;
    memset(g, 0, sizeof *g);
    g->N = x->shape[0];
    g->H = x->shape[1];
    g->W = x->shape[2];
    g->C = x->shape[3];
    g->KH = w->shape[0];
    g->KW = w->shape[1];
    g->OC = w->shape[3];
    g->sh = a->sh;
    g->sw = a->sw;
    g->dh = a->dh;
    g->dw = a->dw;
    g->groups = a->groups;
    if (out_len(g->H, g->KH, g->sh, g->dh, a->padding, &g->OH, &g->pt) != MAAS_OK ||
        out_len(g->W, g->KW, g->sw, g->dw, a->padding, &g->OW, &g->pl) != MAAS_OK)
        return maas_error(MAAS_ERR_SHAPE, "%s: the kernel %s (dilation (%lld, %lld)) is larger "
                          "than the input %s with padding=\"valid\": use padding=\"same\" or a "
                          "smaller kernel", op, SHAPE(w, sk), (long long)a->dh, (long long)a->dw,
                          SHAPE(x, sx));
    if ((s = check_bias(nd, op, g->OC)) != MAAS_OK || (s = geom_finish(g, op)) != MAAS_OK)
        return s;
    if (a->keep && g->kind == CONV_GENERAL && (double)g->N * g->OH * g->OW * g->groups * g->K <=
                                                  (double)CONV_KEEP_CAP)
        set_chunks(g, 1);
    outs[0].dtype = MAAS_F32;
    outs[0].ndim = 4;
    outs[0].shape[0] = g->N;
    outs[0].shape[1] = g->OH;
    outs[0].shape[2] = g->OW;
    outs[0].shape[3] = g->OC;
    col_specs(g, nd, saved, flip_ok(g));
    return MAAS_OK;
}

static float *saved_or_null(const maas_node *nd, int k)
{
    return nd->nsaved > k ? nd->saved[k]->data : NULL;
}

static maas_status conv2d_forward(maas_node *nd)
{
    const conv_attr *a = CATTR(conv_attr, nd);
    return conv_fwd(nd->out[0]->data, nd->in[0]->data, nd->in[1]->data,
                    nd->nin == 3 ? nd->in[2]->data : NULL, &a->g, saved_or_null(nd, 0), 0);
}

static maas_status conv2d_backward(const maas_node *nd, const maas_tensor *const *gout,
                                   maas_tensor *const *gin)
{
    const conv_geom *g = &CATTR(conv_attr, nd)->g;
    const float *go = gout[0]->data;
    maas_status s = MAAS_OK;
    if (gin[1])
        s = conv_bwd_weight(gin[1]->data, nd->in[0]->data, go, g, saved_or_null(nd, 0),
                            saved_or_null(nd, 2), 1);
    if (s == MAAS_OK && nd->nin == 3 && gin[2])
        bias_grad(gin[2]->data, go, g->N * g->OH * g->OW, g->OC);
    if (s == MAAS_OK && gin[0]) {
        conv_geom d = data_geom(g);
        s = flip_ok(g) ? conv_bwd_data_flip(gin[0]->data, go, nd->in[1]->data, &d,
                                            saved_or_null(nd, 1), saved_or_null(nd, 3))
                       : conv_bwd_data(gin[0]->data, go, nd->in[1]->data, &d, saved_or_null(nd, 1));
    }
    return s;
}

MAAS_OPDEF(maas_opdef_conv2d, "conv2d", 2, 3, conv_attr, 0, conv_fields, conv2d);

/* ---------------------------------------------------- conv2d_transpose */

typedef struct {
    int64_t sh, sw, dh, dw, pt, pl, out_h, out_w;
    conv_geom g;
} convt_attr;

static const maas_attr_field convt_fields[] = {
    {"stride_h", 'l', offsetof(convt_attr, sh)},   {"stride_w", 'l', offsetof(convt_attr, sw)},
    {"dilation_h", 'l', offsetof(convt_attr, dh)}, {"dilation_w", 'l', offsetof(convt_attr, dw)},
    {"pad_top", 'l', offsetof(convt_attr, pt)},    {"pad_left", 'l', offsetof(convt_attr, pl)},
    {"out_h", 'l', offsetof(convt_attr, out_h)},   {"out_w", 'l', offsetof(convt_attr, out_w)},
    {NULL, 0, 0}};

/* Inputs x (N, H, W, Cin), w (KH, KW, Cout, Cin), bias (Cout); output
 * (N, out_h, out_w, Cout)[n, i*sh - pt + kh*dh, ...] += x[n, i, ...] w[kh, ...]
 * (PyTorch's ConvTranspose2d with padding pt, pl; the caller gives the
 * output size, output_padding included). */
static maas_status conv2d_transpose_infer(maas_node *nd, maas_tensor_spec *outs,
                                          maas_tensor_spec *saved)
{
    convt_attr *a = ATTR(convt_attr, nd);
    const char *op = "conv2d_transpose";
    char sx[160], sk[160];
    maas_status s = check_common(nd, op, a->sh, a->sw, a->dh, a->dw);
    if (s != MAAS_OK)
        return s;
    const maas_tensor *x = nd->in[0], *w = nd->in[1];
    if (w->shape[3] != x->shape[3])
        return maas_error(MAAS_ERR_SHAPE, "%s: input shape %s and kernel shape %s do not fit: the "
                          "kernel's dim 3 (%lld) must equal the input channels (%lld)", op,
                          SHAPE(x, sx), SHAPE(w, sk), (long long)w->shape[3], (long long)x->shape[3]);
    if (a->pt < 0 || a->pl < 0 || a->out_h < 1 || a->out_w < 1)
        return maas_error(MAAS_ERR_VALUE, "%s: invalid padding (%lld, %lld) or output size (%lld, %lld)",
                          op, (long long)a->pt, (long long)a->pl, (long long)a->out_h,
                          (long long)a->out_w);
    conv_geom *g = &a->g;
    memset(g, 0, sizeof *g);
    /* the conv relation from the output (conv "x") to the input (conv "out") */
    g->N = x->shape[0];
    g->H = a->out_h;
    g->W = a->out_w;
    g->C = w->shape[2];
    g->OH = x->shape[1];
    g->OW = x->shape[2];
    g->OC = x->shape[3];
    g->KH = w->shape[0];
    g->KW = w->shape[1];
    g->sh = a->sh;
    g->sw = a->sw;
    g->dh = a->dh;
    g->dw = a->dw;
    g->pt = a->pt;
    g->pl = a->pl;
    g->groups = 1;
    if ((s = check_bias(nd, op, g->C)) != MAAS_OK || (s = geom_finish(g, op)) != MAAS_OK)
        return s;
    outs[0].dtype = MAAS_F32;
    outs[0].ndim = 4;
    outs[0].shape[0] = g->N;
    outs[0].shape[1] = g->H;
    outs[0].shape[2] = g->W;
    outs[0].shape[3] = g->C;
    col_specs(g, nd, saved, 0);
    return MAAS_OK;
}

static maas_status conv2d_transpose_forward(maas_node *nd)
{
    const conv_geom *g = &CATTR(convt_attr, nd)->g;
    float *y = nd->out[0]->data;
    fill_bias(y, nd->nin == 3 ? nd->in[2]->data : NULL, g->N * g->H * g->W, g->C, 1);
    return conv_bwd_data(y, nd->in[0]->data, nd->in[1]->data, g, saved_or_null(nd, 1));
}

static maas_status conv2d_transpose_backward(const maas_node *nd, const maas_tensor *const *gout,
                                             maas_tensor *const *gin)
{
    const conv_geom *g = &CATTR(convt_attr, nd)->g;
    const float *gy = gout[0]->data;
    float *col = saved_or_null(nd, 0);
    maas_status s = MAAS_OK;
    if (nd->nin == 3 && gin[2])
        bias_grad(gin[2]->data, gy, g->N * g->H * g->W, g->C);
    /* the weight gradient reuses the columns of g_y that the first product made */
    if (gin[0])
        s = conv_fwd(gin[0]->data, gy, nd->in[1]->data, NULL, g, col, 1);
    if (s == MAAS_OK && gin[1])
        s = conv_bwd_weight(gin[1]->data, gy, nd->in[0]->data, g, col, saved_or_null(nd, 2),
                            gin[0] != NULL);
    return s;
}

MAAS_OPDEF(maas_opdef_conv2d_transpose, "conv2d_transpose", 2, 3, convt_attr, 0, convt_fields,
           conv2d_transpose);

/* Multiply-adds of a conv node (the GIL-release threshold). */
double maas_conv_work(const maas_node *nd)
{
    const conv_geom *g = nd->op == MAAS_OP_CONV2D ? &CATTR(conv_attr, nd)->g
                                                  : &CATTR(convt_attr, nd)->g;
    return (double)g->N * (double)g->OH * (double)g->OW * (double)g->OC * (double)g->KH *
           (double)g->KW * (double)g->Cg;
}
